"""Batch grids: a batch's images side by side, each with its seed written under it, as
AUTOMATIC1111's "grid" is; saved as one contact-sheet PNG."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from engines.files import atomic_write_bytes
from engines.images import read_parameters

if TYPE_CHECKING:
    from PIL import Image

GRID_FOLDER = "grids"
"""Where contact sheets go, under ``[paths] outputs`` (they are not gallery images)."""
CAPTION_PX = 22
GAP_PX = 4
MAX_CELL_PX = 512
"""A picture in a sheet is at most this wide: a batch of large images stays a sane file."""


@dataclass(frozen=True)
class Cell:
    image: Image.Image
    caption: str


def columns_for(count: int) -> int:
    """AUTOMATIC1111's choice: as square as the batch allows."""
    return max(1, math.ceil(math.sqrt(count)))


def cells_of(paths: list[Path]) -> list[Cell]:
    """Each image and its seed ("seed ?" when its PNG says nothing); unreadable files are
    left out."""
    from PIL import Image

    cells = []
    for path in paths:
        try:
            with Image.open(path) as im:
                image = im.convert("RGB")
        except OSError:
            continue
        try:
            caption = f"seed {read_parameters(path).seed}"
        except (OSError, ValueError):
            caption = "seed ?"
        cells.append(Cell(image, caption))
    return cells


def contact_sheet(cells: list[Cell], columns: int | None = None) -> Image.Image:
    """One picture of the cells in a grid, each captioned under it (black on white)."""
    from PIL import Image, ImageDraw, ImageFont

    if not cells:
        raise ValueError("no pictures to put in a grid")
    columns = columns or columns_for(len(cells))
    rows = math.ceil(len(cells) / columns)
    width = min(MAX_CELL_PX, max(c.image.width for c in cells))
    height = max(round(c.image.height * width / c.image.width) for c in cells)
    sheet = Image.new(
        "RGB",
        (
            columns * width + (columns + 1) * GAP_PX,
            rows * (height + CAPTION_PX) + (rows + 1) * GAP_PX,
        ),
        "white",
    )
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for i, cell in enumerate(cells):
        x = GAP_PX + (i % columns) * (width + GAP_PX)
        y = GAP_PX + (i // columns) * (height + CAPTION_PX + GAP_PX)
        picture = cell.image
        if picture.width != width:
            picture = picture.resize((width, round(picture.height * width / picture.width)))
        sheet.paste(picture, (x, y))
        text_width = draw.textlength(cell.caption, font=font)
        draw.text(
            (x + (width - text_width) / 2, y + height + 4), cell.caption, fill="black", font=font
        )
    return sheet


def save_grid(sheet: Image.Image, outputs: Path, name: str, when: datetime | None = None) -> Path:
    """Write the sheet atomically under ``outputs``/grids; returns its path."""
    import io

    when = when or datetime.now()
    buffer = io.BytesIO()
    sheet.save(buffer, format="PNG")
    folder = outputs / GRID_FOLDER
    stem = f"grid-{when:%Y%m%d-%H%M%S}-{name}"
    path = folder / f"{stem}.png"
    n = 1
    while True:
        try:
            return atomic_write_bytes(path, buffer.getvalue(), exclusive=True)
        except FileExistsError:
            n += 1
            path = folder / f"{stem}-{n}.png"
