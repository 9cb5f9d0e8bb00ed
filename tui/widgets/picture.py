"""Pictures in the terminal: half-block characters everywhere, real pixels through
textual-image where the terminal speaks Kitty's graphics protocol or Sixel."""

from __future__ import annotations

import contextlib
import logging
import os
from collections import OrderedDict
from collections.abc import Mapping
from typing import TYPE_CHECKING, Literal

from rich.color import Color
from rich.segment import Segment
from rich.style import Style
from textual.app import App, ComposeResult
from textual.containers import Container
from textual.geometry import Region
from textual.strip import Strip
from textual.widget import Widget

if TYPE_CHECKING:
    from PIL import Image
    from textual.timer import Timer

    from tui.graphics import Choice

Renderer = Literal["halfblock", "kitty", "sixel", "off"]

log = logging.getLogger(__name__)

_KITTY_TERMINALS = ("kitty", "ghostty", "WezTerm")


def choose_renderer(setting: str, env: Mapping[str, str] | None = None) -> Renderer:
    """The way to draw images: the setting, or for ``auto`` what the environment says
    the terminal speaks (no terminal query: those cost time at every start)."""
    env = os.environ if env is None else env
    if setting in ("halfblock", "kitty", "sixel", "off"):
        return setting  # type: ignore[return-value]
    term = env.get("TERM", "")
    program = env.get("TERM_PROGRAM", "")
    if env.get("TMUX") or term.startswith(("screen", "tmux")):
        return "halfblock"  # graphics do not pass through tmux or screen
    if env.get("KITTY_WINDOW_ID") or term == "xterm-kitty" or program in _KITTY_TERMINALS:
        return "kitty"
    if "sixel" in term:
        return "sixel"
    return "halfblock"


def prepare_renderer(renderer: Renderer) -> Renderer:
    """Import textual-image for graphics before the app starts (it asks the terminal
    what it supports at import, which is impossible once Textual runs). Falls back to
    half blocks when that fails."""
    if renderer not in ("kitty", "sixel"):
        return renderer
    try:
        import textual_image.widget  # noqa: F401
    except Exception as exc:
        log.warning("pictures: half-blocks: textual-image failed to load (%s)", exc)
        return "halfblock"
    return renderer


def renderer_for(choice: Choice) -> tuple[Renderer, str]:
    """The renderer ``choice`` picked (``tui/graphics.py``), ready to use, and the keys
    typed while the terminal was asked (for the app to replay); the log says what was
    chosen and why."""
    log.info("pictures: %s (%s)", choice.renderer, choice.reason)
    return prepare_renderer(choice.renderer), choice.typed


def cell_aspect() -> float:
    """A cell's height over its width, from the terminal's size in pixels (TIOCGWINSZ);
    2.0 (the usual shape) where the terminal does not say."""
    cached: float | None = getattr(cell_aspect, "_value", None)
    if cached is not None:
        return cached
    value = 2.0
    try:
        import fcntl
        import struct
        import sys
        import termios

        stream = sys.__stdout__
        if stream is not None and stream.isatty():
            rows, cols, xpix, ypix = struct.unpack(
                "HHHH", fcntl.ioctl(stream.fileno(), termios.TIOCGWINSZ, b"\0" * 8)
            )
            if rows and cols and xpix and ypix:
                value = min(4.0, max(1.0, (ypix / rows) / (xpix / cols)))
    except (OSError, ImportError, ValueError):
        pass
    cell_aspect._value = value  # type: ignore[attr-defined]
    return value


def dithered(image: Image.Image, color_system: str | None) -> Image.Image:
    """``image`` in the colours of a 16- or 256-colour terminal, Floyd-Steinberg dithered
    (Rich would otherwise round each pixel to its nearest colour: flat, posterised
    patches); unchanged in true colour."""
    from PIL import Image as PILImage
    from rich._palettes import EIGHT_BIT_PALETTE, STANDARD_PALETTE

    palette = {"standard": STANDARD_PALETTE, "256": EIGHT_BIT_PALETTE}.get(color_system or "")
    if palette is None:
        return image
    colours = [channel for i in range(len(palette._colors)) for channel in palette[i]]
    target = PILImage.new("P", (1, 1))
    target.putpalette(colours + colours[:3] * (256 - len(colours) // 3))
    quantized = image.quantize(palette=target, dither=PILImage.Dither.FLOYDSTEINBERG)
    return quantized.convert("RGB")


STRIPS_KEPT = 256
"""Small pictures (thumbnails) whose strips are kept across widgets, by picture and size:
a gallery page turned back is drawn without making them again."""
STRIPS_KEPT_PIXELS = 160 * 160
"""Only pictures this small are kept (a step preview is never shown twice)."""
_kept_rows: OrderedDict[tuple[object, ...], tuple[Image.Image, list[list[Segment]]]] = OrderedDict()
_styles: dict[tuple[int, int], Style] = {}
"""Half-block styles by (top, bottom) colour, shared by every picture."""


def _style(top: int, bottom: int) -> Style:
    key = (top, bottom)
    style = _styles.get(key)
    if style is None:
        if len(_styles) > 50_000:
            _styles.clear()
        style = Style(
            color=Color.from_rgb(top >> 16, (top >> 8) & 255, top & 255),
            bgcolor=Color.from_rgb(bottom >> 16, (bottom >> 8) & 255, bottom & 255),
        )
        _styles[key] = style
    return style


def halfblock_rows(
    image: Image.Image, width: int, height: int, base: Style, color_system: str | None
) -> list[list[Segment]]:
    """``image`` fitted and centred in ``width`` x ``height`` cells of half blocks (two
    pixels a cell): ``height`` rows of segments, each ``width`` cells (``base`` around
    the picture); ``color_system`` None where no terminal's palette is to be fitted
    (headless). Rows of small pictures (thumbnails) are kept, by picture and size,
    across widgets. Pure: a worker may make them ahead of the drawing."""
    small = image.width * image.height <= STRIPS_KEPT_PIXELS
    key = (id(image), width, height, base, color_system, cell_aspect())
    kept = _kept_rows.get(key) if small else None
    if kept is not None and kept[0] is image:
        with contextlib.suppress(KeyError):  # another thread may have dropped it
            _kept_rows.move_to_end(key)
        return kept[1]
    rows = _make_rows(image, width, height, base, color_system)
    if small:
        _kept_rows[key] = (image, rows)
        while len(_kept_rows) > STRIPS_KEPT:
            with contextlib.suppress(KeyError):
                _kept_rows.popitem(last=False)
    return rows


def _make_rows(
    image: Image.Image, width: int, height: int, base: Style, color_system: str | None
) -> list[list[Segment]]:
    from PIL import Image as PILImage

    # a half cell is square only where cells are twice as tall as wide: stretch the
    # rows by the real shape of the cells, where the terminal tells it
    squash = 2.0 / cell_aspect()
    scale = min(width / image.width, (height * 2) / (image.height * squash))
    w = max(1, int(image.width * scale))
    h = max(2, int(image.height * scale * squash) // 2 * 2)
    resample = PILImage.Resampling.NEAREST if scale > 2 else PILImage.Resampling.BILINEAR
    # 5 bits a channel: invisible in half blocks, and far fewer distinct styles
    small = image.convert("RGB").resize((w, h), resample).point(lambda v: v & 0xF8)
    if color_system is not None:  # no terminal, no palette to fit (tests, exports)
        small = dithered(small, color_system)
    data = small.tobytes()
    left = (width - w) // 2
    right = width - w - left
    # the space around the picture is the theme's background, not the terminal's
    pad = Segment(" " * left, base) if left > 0 else None
    pad_right = Segment(" " * right, base) if right > 0 else None
    blank = [Segment(" " * width, base)]
    top_pad = (height - h // 2) // 2
    rows = [blank] * top_pad
    row_bytes = w * 3
    for y in range(0, h, 2):
        upper = data[y * row_bytes : (y + 1) * row_bytes]
        lower = data[(y + 1) * row_bytes : (y + 2) * row_bytes]
        segments = [pad] if pad else []
        for x in range(0, row_bytes, 3):
            top = (upper[x] << 16) | (upper[x + 1] << 8) | upper[x + 2]
            bottom = (lower[x] << 16) | (lower[x + 1] << 8) | lower[x + 2]
            segments.append(Segment("▀", _style(top, bottom)))
        if pad_right:
            segments.append(pad_right)
        rows.append(list(Segment.simplify(segments)))
    rows += [blank] * (height - len(rows))
    return rows[:height]


class HalfBlocks(Widget):
    """A picture in half-block characters (two pixels a cell), fitted and centred.

    Drawn line by line from strips made once per image and size (and, for small pictures,
    kept across widgets); styles are cached across frames, so a stream of step previews
    costs a few milliseconds each."""

    DEFAULT_CSS = """
    HalfBlocks {
        width: 1fr;
        height: 1fr;
    }
    """

    def __init__(self, placeholder: str = "", *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.placeholder = placeholder
        self._image: Image.Image | None = None
        self._strips: list[Strip] = []
        self._made_for: tuple[int, int, Style] | None = None
        self._blank = Strip.blank(0)
        self._base = Style()

    def show(self, image: Image.Image | None) -> None:
        self._image = image
        self._made_for = None
        self.refresh()

    def _make(self, width: int, height: int, base: Style) -> None:
        self._made_for = (width, height, base)
        self._strips = []
        self._blank = Strip.blank(width, base)
        image = self._image
        if image is None or width < 1 or height < 1:
            return
        rows = halfblock_rows(image, width, height, base, palette_of(self.app))
        self._strips = [Strip(row, width) for row in rows]

    def render_lines(self, crop: Region) -> list[Strip]:
        # the background once a frame, not once a line (it walks the ancestors' styles)
        self._base = Style(bgcolor=self.rich_style.bgcolor)
        return super().render_lines(crop)

    def render_line(self, y: int) -> Strip:
        width, height = self.content_size
        base = self._base
        if self._made_for != (width, height, base):
            self._make(width, height, base)
        if self._image is None:
            if y == height // 2 and self.placeholder:
                text = self.placeholder[:width].center(width)
                return Strip([Segment(text, base + Style(dim=True))], width)
            return self._blank
        if 0 <= y < len(self._strips):
            return self._strips[y]
        return self._blank


PREVIEW_BACKLOG = 4096
"""Step previews wait while more than this many characters of the app's output wait for
the terminal (about a quarter of a half-block preview frame at 120x40)."""
DRAIN_CHECK_S = 0.02
"""How often a held preview looks whether the output has drained."""


def palette_of(app: App[object]) -> str | None:
    """The colour system pictures are fitted to: None in a headless app (tests)."""
    return None if app.is_headless else app.console.color_system


class Picture(Container):
    """Shows a PIL image with the renderer chosen at start-up."""

    DEFAULT_CSS = """
    Picture {
        width: 1fr;
        height: 1fr;
        align: center middle;
    }
    Picture > HalfBlocks {
        width: 1fr;
        height: 1fr;
    }
    Picture > .pixels {
        /* as large as fits, its aspect ratio kept (textual-image sizes it) */
        width: auto;
        height: auto;
    }
    """

    def __init__(self, renderer: Renderer, placeholder: str = "", *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.renderer = renderer
        self.placeholder = placeholder
        self.image: Image.Image | None = None
        self.held: Image.Image | None = None
        """The newest step preview, waiting for the terminal to take the frames before it."""
        self.previews_drawn = 0
        """Step previews drawn (``show_preview``)."""
        self.previews_held = 0
        """Step previews never drawn: a newer one came while the terminal was behind."""
        self._drain_timer: Timer | None = None

    def compose(self) -> ComposeResult:
        if self.renderer == "kitty":
            from textual_image.widget import TGPImage

            yield TGPImage(self.image, classes="pixels")
        elif self.renderer == "sixel":
            from textual_image.widget import SixelImage

            yield SixelImage(self.image, classes="pixels")
        else:
            blocks = HalfBlocks(self.placeholder)
            blocks._image = self.image
            yield blocks

    def show_preview(self, image: Image.Image) -> None:
        """A step preview: drawn now where the terminal keeps up; while it is still taking
        earlier frames (a thin link: more than ``PREVIEW_BACKLOG`` characters not written
        yet), only the newest is held, and drawn once the output has drained. Frames are
        dropped, never queued: the picture on screen is never more than one frame behind
        the link."""
        from tui.output import output_backlog

        if output_backlog(self.app) <= PREVIEW_BACKLOG and self.held is None:
            self.show(image)
            self.previews_drawn += 1
            return
        if self.held is not None:
            self.previews_held += 1
        self.held = image
        if self._drain_timer is None:
            self._drain_timer = self.set_interval(DRAIN_CHECK_S, self._drain)

    def _drain(self) -> None:
        from tui.output import output_backlog

        if self.held is not None and output_backlog(self.app) > PREVIEW_BACKLOG:
            return
        held = self.held
        self._stop_holding()
        if held is not None:
            self.show(held)
            self.previews_drawn += 1

    def _stop_holding(self) -> None:
        self.held = None
        if self._drain_timer is not None:
            self._drain_timer.stop()
            self._drain_timer = None

    def show(self, image: Image.Image | None) -> None:
        """Draw ``image`` now (a final picture, a gallery's): a preview held is dropped."""
        if self.held is not None:
            self.previews_held += 1
        self._stop_holding()
        self.image = image
        if self.renderer == "off":
            return
        child = self.children[0] if self.children else None
        if isinstance(child, HalfBlocks):
            child.show(image)
        elif child is not None:
            child.image = image  # type: ignore[attr-defined]
