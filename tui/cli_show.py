"""``llm-pessoal show PATH``: a saved image drawn in half blocks (rich-pixels) on a terminal,
then the parameters stored in it. ``image --show`` draws what it made the same way.

The picture is drawn only when standard output is a terminal; the parameters are outside
text (a PNG anyone may have written) and are shown through the display function.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from tui.cli_base import EXIT_OK, EXIT_USAGE, err, say
from tui.cli_completion import FILE

if TYPE_CHECKING:
    from PIL.Image import Image

MAX_COLUMNS = 80
"""The widest a picture is drawn, in columns (one column is one pixel, a row two)."""


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    show = sub.add_parser(
        "show",
        help="draw a saved image in the terminal and print its parameters",
        description="Draw each image in half blocks when standard output is a terminal, "
        "then print the generation parameters stored in it (prompt, seed, sampler...).",
    )
    paths = show.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="a PNG")
    paths.complete = FILE  # type: ignore[attr-defined]
    show.add_argument(
        "--no-picture", action="store_true", help="print the parameters only, even on a terminal"
    )


def fit(size: tuple[int, int], columns: int, rows: int) -> tuple[int, int]:
    """The image's size in half-block pixels (a column is one pixel, a row two) that fits
    ``columns`` x ``rows`` cells and keeps its proportions."""
    width, height = size
    scale = min(columns / width, 2 * rows / height)
    w = max(1, round(width * scale))
    h = max(2, round(height * scale / 2) * 2)
    return w, h


def draw(image: Image, *, out: object | None = None) -> None:
    """``image`` in half blocks on standard output (a terminal), fitted to it."""
    from rich.console import Console
    from rich_pixels import Pixels

    size = shutil.get_terminal_size((MAX_COLUMNS, 24))
    columns = min(size.columns, MAX_COLUMNS)
    rows = max(4, size.lines - 6)  # room for the parameters under it
    picture = Pixels.from_image(image.convert("RGB"), resize=fit(image.size, columns, rows))
    Console(file=out or sys.stdout, highlight=False).print(picture)  # type: ignore[arg-type]


def draw_path(path: Path) -> None:
    from PIL import Image as PILImage

    with PILImage.open(path) as image:
        image.load()
        draw(image)


def run_show(args: argparse.Namespace) -> int:
    from PIL import Image as PILImage
    from PIL import UnidentifiedImageError

    from engines.images import read_parameters

    picture = sys.stdout.isatty() and not args.no_picture
    code = EXIT_OK
    for index, path in enumerate(args.paths):
        if index:
            say()
        try:
            with PILImage.open(path) as image:
                image.load()
                if picture:
                    draw(image)
        except FileNotFoundError:
            err(f"{path}: no such file")
            code = EXIT_USAGE
            continue
        except (OSError, UnidentifiedImageError) as exc:
            err(f"{path}: not an image that can be read ({exc})")
            code = EXIT_USAGE
            continue
        say(str(path))
        try:
            parameters = read_parameters(path)
        except (OSError, ValueError):
            say("  (no generation parameters stored in it)")
            continue
        for line in parameters.to_text().splitlines():
            say(f"  {line}")
    return code
