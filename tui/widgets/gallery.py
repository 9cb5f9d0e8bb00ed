"""The gallery's grid: one page of thumbnails (or of list rows) at a time.

The grid knows the total and a cursor over it; it holds only the tiles on screen. When
the cursor leaves the page it asks for another (``PageWanted``); the screen reads it in
a worker and gives it back (``show_page``, with the thumbnails it has at hand), then the
others as they are read (``show_thumbnail``). Pictures are drawn by :class:`~tui.widgets.picture.Picture`
(Kitty, Sixel or half-blocks, as the terminal allows)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING, Protocol

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.geometry import Region
from textual.message import Message
from textual.strip import Strip
from textual.widget import Widget
from textual.widgets import Static

from engines.gallery import FileState
from engines.store import StoredImage
from tui.text import visible
from tui.widgets.picture import Picture, Renderer, halfblock_rows, palette_of

if TYPE_CHECKING:
    from PIL import Image

TILE_WIDTH = 20
TILE_HEIGHT = 9
"""A thumbnail tile in cells: its border, the picture, a caption line."""
PAINTED: tuple[Renderer, ...] = ("halfblock", "off")
"""Renderers whose page of thumbnails is one widget (:class:`TilePage`), drawn line by
line; Kitty and Sixel pictures are widgets of their own (:class:`Tile`)."""


def caption(image: StoredImage, width: int) -> Text:
    p = image.parameters
    prompt = visible(p.prompt.splitlines()[0] if p.prompt else "")
    text = Text(prompt[: width + 1], no_wrap=True, overflow="ellipsis")
    text.truncate(width, overflow="ellipsis")  # a cut prompt ends in "…"
    return text


class Flags(Protocol):
    state: FileState
    marked: bool


def flagged(text: Text, item: Flags) -> Text:
    """A tile's or row's text after its marks: ✓ selected, ⚠ missing or changed."""
    if item.state != "ok":
        text = Text.assemble((f"⚠ {item.state} ", "bold red"), text)
    if item.marked:
        text = Text.assemble(("✓ ", "bold green"), text)
    return text


def list_row(image: StoredImage) -> Text:
    p = image.parameters
    when = datetime.fromtimestamp(image.created_at).strftime("%Y-%m-%d %H:%M")
    row = Text(no_wrap=True, overflow="ellipsis")
    row.append(f"{when} · {p.width}×{p.height} · seed {p.seed} · ", style="dim")
    row.append(visible(p.model) + " · ", style="dim")
    row.append(visible(p.prompt.splitlines()[0] if p.prompt else ""))
    return row


class Tile(Picture):
    """One image of the page as a thumbnail, its caption in the border (two widgets a
    tile: a page mounts fast)."""

    def __init__(self, renderer: Renderer, index: int) -> None:
        super().__init__(renderer, "…")
        self.add_class("tile")
        self.index = index
        self.stored: StoredImage | None = None
        self.state: FileState = "ok"
        self.marked = False

    def set_image(self, image: StoredImage | None, *, marked: bool) -> None:
        self.stored = image
        self.state = "ok"
        if self.display != (image is not None):
            self.display = image is not None
        self.show(None)
        self.marked = marked
        self.set_class(marked, "-marked")
        self.update_caption()

    def update_caption(self) -> None:
        if self.stored is None:
            return
        self.border_subtitle = flagged(caption(self.stored, TILE_WIDTH - 4), self)


class ListRow(Static):
    """One image of the page as a line of text (the list view)."""

    def __init__(self, renderer: Renderer, index: int) -> None:
        super().__init__("", classes="tile")
        self.index = index
        self.stored: StoredImage | None = None
        self.state: FileState = "ok"
        self.marked = False

    def set_image(self, image: StoredImage | None, *, marked: bool) -> None:
        self.stored = image
        self.state = "ok"
        if self.display != (image is not None):
            self.display = image is not None
        self.marked = marked
        self.update_caption()

    def show(self, image: Image.Image | None) -> None:
        """Rows have no picture."""

    def update_caption(self) -> None:
        if self.stored is None:
            return
        self.update(flagged(list_row(self.stored), self))


class PaintedTile:
    """One image of a :class:`TilePage`: what a :class:`Tile` knows, drawn by the page."""

    def __init__(self, page: TilePage, index: int) -> None:
        self.page = page
        self.index = index
        self.stored: StoredImage | None = None
        self.state: FileState = "ok"
        self.marked = False
        self.image: Image.Image | None = None
        self.classes: set[str] = set()
        self.caption = Text()

    def set_image(self, image: StoredImage | None, *, marked: bool) -> None:
        self.stored = image
        self.state = "ok"
        self.image = None
        self.marked = marked
        self.set_class(marked, "-marked")
        self.update_caption()

    def show(self, image: Image.Image | None) -> None:
        self.image = image
        self.page.repaint(self.index)

    def has_class(self, name: str) -> bool:
        return name in self.classes

    def set_class(self, add: bool, name: str) -> None:
        if (name in self.classes) != add:
            self.classes.symmetric_difference_update({name})
            self.page.repaint(self.index)

    def update_caption(self) -> None:
        stored = self.stored
        self.caption = Text() if stored is None else flagged(caption(stored, TILE_WIDTH - 4), self)
        self.page.repaint(self.index)


class TilePage(Widget):
    """A page of half-block thumbnails as one widget: each tile's lines (its border, its
    picture, its caption in the border) are made once and kept until the tile changes,
    and a page turn, a cursor move or a thumbnail read repaints only the tiles it
    changed (no widgets to mount, lay out or restyle: 18 tiles were 36 widgets)."""

    COMPONENT_CLASSES = {
        "tile-page--border",
        "tile-page--cursor",
        "tile-page--marked",
        "tile-page--caption",
    }

    def __init__(self, renderer: Renderer, count: int, per_row: int) -> None:
        super().__init__()
        self.renderer = renderer
        self.per_row = per_row
        self.tiles = [PaintedTile(self, i) for i in range(count)]
        self._lines: dict[int, tuple[tuple[object, ...], list[list[Segment]]]] = {}
        self._look: tuple[Style, Style, Style, Style, Style, bool] | None = None

    def repaint(self, index: int) -> None:
        """Draw tile ``index`` again."""
        self._lines.pop(index, None)
        if self.is_mounted:
            row, column = divmod(index, max(1, self.per_row))
            self.refresh(Region(column * TILE_WIDTH, row * TILE_HEIGHT, TILE_WIDTH, TILE_HEIGHT))

    def render_lines(self, crop: Region) -> list[Strip]:
        # the theme's colours once a frame, not once a line
        parent = self.parent
        if not isinstance(parent, Widget) or not self.is_attached:  # removed (list view)
            return [Strip.blank(crop.width)] * crop.height
        self._look = (
            Style(bgcolor=self.rich_style.bgcolor),
            self.get_component_rich_style("tile-page--border"),
            self.get_component_rich_style("tile-page--cursor"),
            self.get_component_rich_style("tile-page--marked"),
            self.get_component_rich_style("tile-page--caption"),
            parent.has_focus,
        )
        return super().render_lines(crop)

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        look = self._look
        assert look is not None
        base = look[0]
        row, line = divmod(y, TILE_HEIGHT)
        segments: list[Segment] = []
        used = 0
        for column in range(self.per_row):
            index = row * self.per_row + column
            tile = self.tiles[index] if index < len(self.tiles) else None
            if tile is None or tile.stored is None:  # past the last image
                segments.append(Segment(" " * TILE_WIDTH, base))
            else:
                segments += self._tile_lines(tile, look)[line]
            used += TILE_WIDTH
        if width > used:
            segments.append(Segment(" " * (width - used), base))
        return Strip(segments, max(width, used))

    def _tile_lines(
        self, tile: PaintedTile, look: tuple[Style, Style, Style, Style, Style, bool]
    ) -> list[list[Segment]]:
        """The tile's lines, as segments (a line of the page is one strip of them)."""
        base, border, cursor, marked, caption_style, focused = look
        on = tile.has_class("-cursor")
        key = (id(tile.image), tile.caption, on, tile.marked, look)
        kept = self._lines.get(tile.index)
        if kept is not None and kept[0] == key:
            return kept[1]
        # as the styles had it: the focused cursor heavy, a selection green, the cursor
        if on and focused:
            style, box = base + cursor, "┏━┓┃┗┛"
        elif tile.marked:
            style, box = base + marked, "╭─╮│╰╯"
        elif on:
            style, box = base + cursor, "╭─╮│╰╯"
        else:
            style, box = base + border, "╭─╮│╰╯"
        inner = TILE_WIDTH - 2
        height = TILE_HEIGHT - 2
        if tile.image is not None and self.renderer != "off":
            picture = halfblock_rows(tile.image, inner, height, base, palette_of(self.app))
        else:
            blank = [Segment(" " * inner, base)]
            dots = [Segment("…".center(inner), base + Style(dim=True))]
            picture = [dots if y == height // 2 else blank for y in range(height)]
        side = Segment(box[3], style)
        # the caption in the bottom edge, as a border subtitle is drawn: "╰─ text ──╯"
        label = tile.caption.copy()
        if label.cell_len:
            label.truncate(inner - 2, overflow="ellipsis")
            label.pad_left(1)
            label.pad_right(1)
        label.stylize_before(base + caption_style)
        space = inner - label.cell_len
        bottom = [Segment(box[4] + (box[1] if space else ""), style)]
        bottom += label.render(self.app.console)
        bottom.append(Segment(box[1] * max(0, space - 1) + box[5], style))
        lines = [
            [Segment(box[0] + box[1] * inner + box[2], style)],
            *([side, *picture[y], side] for y in range(height)),
            bottom,
        ]
        self._lines[tile.index] = (key, lines)
        return lines

    @property
    def base(self) -> Style | None:
        """The background the tiles were last drawn on (None before the first frame)."""
        return self._look[0] if self._look is not None else None


class ThumbnailGrid(Widget, can_focus=True):
    """A page of the gallery; arrows, PageUp/PageDown, Home/End move the cursor."""

    BINDINGS = [
        Binding("up", "move('-row')", "Up", show=False, tooltip="The image above", id="grid.up"),
        Binding(
            "down", "move('row')", "Down", show=False, tooltip="The image below", id="grid.down"
        ),
        Binding(
            "left", "move('-1')", "Left", show=False, tooltip="The image before", id="grid.left"
        ),
        Binding(
            "right", "move('1')", "Right", show=False, tooltip="The image after", id="grid.right"
        ),
        Binding(
            "pageup",
            "move('-page')",
            "Page up",
            show=False,
            tooltip="The page before",
            id="grid.page_up",
        ),
        Binding(
            "pagedown",
            "move('page')",
            "Page down",
            show=False,
            tooltip="The next page",
            id="grid.page_down",
        ),
        Binding(
            "home", "move('-all')", "First", show=False, tooltip="The newest image", id="grid.first"
        ),
        Binding(
            "end", "move('all')", "Last", show=False, tooltip="The oldest image", id="grid.last"
        ),
    ]

    @dataclass
    class PageWanted(Message):
        offset: int
        limit: int

    @dataclass
    class CursorMoved(Message):
        image: StoredImage | None
        index: int

    def __init__(self, renderer: Renderer, *, id: str | None = None, chrome_rows: int = 0) -> None:
        super().__init__(id=id)
        self.renderer: Renderer = renderer
        self.chrome_rows = chrome_rows
        """Rows of the screen that are not the grid's (for the first page's size)."""
        self.total = 0
        self.counting = True
        """The total is a lower bound: the filter's images are still being counted."""
        self.first = 0
        """The index of the first tile's image among all the filter's images."""
        self.cursor = 0
        self.images: list[StoredImage] = []
        self.list_mode = False
        self.marked: set[int] = set()
        self.per_row = 1
        self.rows = 1

    @property
    def page_size(self) -> int:
        return self.per_row * self.rows

    @property
    def painted(self) -> bool:
        """Thumbnails drawn by one :class:`TilePage` (not a widget a tile)."""
        return not self.list_mode and self.renderer in PAINTED

    def compose(self) -> ComposeResult:
        """The tiles of a page the size the screen leaves the grid, made with the screen
        (the first page is asked for at once, not after a second layout)."""
        width, height = self.app.size
        self.per_row, self.rows = self._layout(width, height - self.chrome_rows)
        self.styles.grid_size_columns = self.per_row
        self.set_class(self.painted, "-painted")
        if self.painted:
            yield TilePage(self.renderer, self.page_size, self.per_row)
            return
        for i in range(self.page_size):
            yield Tile(self.renderer, i)

    def on_mount(self) -> None:
        self.post_message(self.PageWanted(self.first, self.page_size))

    def _layout(self, width: int, height: int) -> tuple[int, int]:
        if self.list_mode:
            return 1, max(1, height)
        return max(1, width // TILE_WIDTH), max(1, height // TILE_HEIGHT)

    async def on_resize(self) -> None:
        if self._layout(*self.size) != (self.per_row, self.rows):
            await self.relayout()

    async def relayout(self) -> None:
        per_row, rows = self._layout(*self.size)
        self.set_class(self.list_mode, "-list")
        self.set_class(self.painted, "-painted")
        self.styles.grid_size_columns = per_row
        if self.painted:
            page = self.children[0] if len(self.children) == 1 else None
            if not isinstance(page, TilePage) or (per_row, rows) != (self.per_row, self.rows):
                self.per_row, self.rows = per_row, rows
                await self.remove_children()
                await self.mount(TilePage(self.renderer, per_row * rows, per_row))
        else:
            wanted = ListRow if self.list_mode else Tile
            if (
                (per_row, rows) != (self.per_row, self.rows)
                or len(self.children) != per_row * rows
                or any(type(child) is not wanted for child in self.children)
            ):
                self.per_row, self.rows = per_row, rows
                await self.remove_children()
                await self.mount_all(wanted(self.renderer, i) for i in range(per_row * rows))
        self.first = self.cursor // self.page_size * self.page_size if self.page_size else 0
        self.post_message(self.PageWanted(self.first, self.page_size))

    def on_focus(self) -> None:
        self._repaint_cursor()

    def on_blur(self) -> None:
        self._repaint_cursor()

    def _repaint_cursor(self) -> None:
        """The cursor's tile is drawn heavier while the grid has the focus."""
        for tile in self.tiles():
            if isinstance(tile, PaintedTile) and tile.has_class("-cursor"):
                tile.page.repaint(tile.index)

    def reset(self, total: int) -> None:
        """A new filter: ``total`` images, the cursor on the first."""
        self.total = total
        self.counting = True
        self.cursor = 0
        self.first = 0
        self.images = []

    def set_total(self, total: int) -> None:
        """The filter's images, counted."""
        self.total = total
        self.counting = False
        self.cursor = min(self.cursor, max(0, total - 1))

    def current(self) -> StoredImage | None:
        i = self.cursor - self.first
        return self.images[i] if 0 <= i < len(self.images) else None

    def preparer(self) -> Callable[[Image.Image], object] | None:
        """What draws a thumbnail's half blocks ahead of the page that shows it, for a
        worker to call (the page turn then only joins lines); None where tiles are
        widgets or nothing is drawn yet."""
        children = self.children
        page = children[0] if len(children) == 1 else None
        if not isinstance(page, TilePage) or page.renderer != "halfblock" or page.base is None:
            return None
        return partial(
            halfblock_rows,
            width=TILE_WIDTH - 2,
            height=TILE_HEIGHT - 2,
            base=page.base,
            color_system=palette_of(self.app),
        )

    def tiles(self) -> list[Tile | ListRow | PaintedTile]:
        children = self.children
        if len(children) == 1 and isinstance(children[0], TilePage):
            return list(children[0].tiles)
        return [c for c in children if isinstance(c, Tile | ListRow)]

    def show_page(
        self,
        offset: int,
        images: list[StoredImage],
        total: int | None,
        thumbs: Mapping[int, tuple[int, Image.Image | None, FileState, str]] | None = None,
    ) -> None:
        """The page at ``offset``; ``total`` None while it is counted (the page is then
        full: at least ``offset`` and its images); the pictures of ``thumbs`` at once."""
        if offset != self.first:
            return  # an older request: the cursor has moved on
        if total is None:
            self.total = max(self.total, offset + len(images)) if self.counting else self.total
        else:
            self.total, self.counting = total, False
        self.images = images
        self.cursor = min(self.cursor, max(0, self.total - 1))
        thumbs = thumbs or {}
        for i, tile in enumerate(self.tiles()):
            image = images[i] if i < len(images) else None
            tile.set_image(image, marked=image is not None and image.id in self.marked)
            thumb = thumbs.get(image.id) if image is not None else None
            if thumb is not None:
                tile.state = thumb[2]
                if thumb[1] is not None:
                    tile.show(thumb[1])
                tile.update_caption()
        self._highlight()

    def show_thumbnail(self, image_id: int, picture: Image.Image | None, state: FileState) -> None:
        for tile in self.tiles():
            if tile.stored is not None and tile.stored.id == image_id:
                tile.state = state
                if picture is not None:
                    tile.show(picture)
                tile.update_caption()

    def state_of(self, image_id: int) -> FileState:
        for tile in self.tiles():
            if tile.stored is not None and tile.stored.id == image_id:
                return tile.state
        return "ok"

    def _highlight(self) -> None:
        for i, tile in enumerate(self.tiles()):
            on = self.first + i == self.cursor
            if tile.has_class("-cursor") != on:
                tile.set_class(on, "-cursor")
        self.post_message(self.CursorMoved(self.current(), self.cursor))

    def toggle_mark(self) -> None:
        image = self.current()
        if image is None:
            return
        self.marked.symmetric_difference_update({image.id})
        for tile in self.tiles():
            if tile.stored is image:
                tile.marked = image.id in self.marked
                tile.set_class(tile.marked, "-marked")
                tile.update_caption()

    def action_move(self, how: str) -> None:
        if not self.total:
            return
        name = how.lstrip("-")
        steps = {"1": 1, "row": self.per_row, "page": self.page_size, "all": self.total}
        delta = (-1 if how.startswith("-") else 1) * steps[name]
        if name == "page":
            # a page turn moves the page and the cursor together
            last_page = (self.total - 1) // self.page_size * self.page_size
            offset = max(0, min(last_page, self.first + delta))
            self.cursor = max(0, min(self.total - 1, self.cursor + (offset - self.first)))
        else:
            self.cursor = max(0, min(self.total - 1, self.cursor + delta))
            offset = self.cursor // self.page_size * self.page_size
        if offset != self.first:
            self.first = offset
            self.post_message(self.PageWanted(offset, self.page_size))
        else:
            self._highlight()
