"""The gallery's grid: one page of thumbnails (or of list rows) at a time.

The grid knows the total and a cursor over it; it holds only the tiles on screen. When
the cursor leaves the page it asks for another (``PageWanted``); the screen reads it in
a worker and gives it back (``show_page``), then the thumbnails one by one
(``show_thumbnail``). Pictures are drawn by :class:`~tui.widgets.picture.Picture`
(Kitty, Sixel or half-blocks, as the terminal allows)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message
from textual.widget import Widget
from textual.widgets import Label

from engines.gallery import FileState
from engines.store import StoredImage
from tui.text import visible
from tui.widgets.picture import Picture, Renderer

if TYPE_CHECKING:
    from PIL import Image

TILE_WIDTH = 20
TILE_HEIGHT = 9
"""A thumbnail tile in cells: its border, the picture, a caption line."""


def caption(image: StoredImage, width: int) -> Text:
    p = image.parameters
    prompt = visible(p.prompt.splitlines()[0] if p.prompt else "")
    return Text(prompt[:width], no_wrap=True, overflow="ellipsis")


def list_row(image: StoredImage) -> Text:
    p = image.parameters
    when = datetime.fromtimestamp(image.created_at).strftime("%Y-%m-%d %H:%M")
    row = Text(no_wrap=True, overflow="ellipsis")
    row.append(f"{when} · {p.width}×{p.height} · seed {p.seed} · ", style="dim")
    row.append(visible(p.model) + " · ", style="dim")
    row.append(visible(p.prompt.splitlines()[0] if p.prompt else ""))
    return row


class Tile(Vertical):
    """One image of the page: its thumbnail and caption (or a list row)."""

    def __init__(self, renderer: Renderer, index: int) -> None:
        super().__init__(classes="tile")
        self.renderer: Renderer = renderer
        self.index = index
        self.image: StoredImage | None = None
        self.state: FileState = "ok"

    def compose(self) -> ComposeResult:
        yield Picture(self.renderer, "…", id=f"tile-picture-{self.index}")
        yield Label("", classes="tile-caption")

    def set_image(self, image: StoredImage | None, *, list_mode: bool, marked: bool) -> None:
        self.image = image
        self.state = "ok"
        self.display = image is not None
        picture = self.query_one(Picture)
        picture.display = not list_mode
        picture.show(None)
        self.set_class(marked, "-marked")
        self.update_caption(list_mode, marked)

    def update_caption(self, list_mode: bool, marked: bool) -> None:
        if self.image is None:
            return
        text = (
            list_row(self.image) if list_mode else caption(self.image, max(1, self.size.width - 2))
        )
        if self.state != "ok":
            text = Text.assemble((f"⚠ {self.state} ", "bold red"), text)
        if marked:
            text = Text.assemble(("✓ ", "bold green"), text)
        self.query_one(".tile-caption", Label).update(text)


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

    def __init__(self, renderer: Renderer, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.renderer: Renderer = renderer
        self.total = 0
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

    def compose(self) -> ComposeResult:
        return iter(())

    def _layout(self) -> tuple[int, int]:
        width, height = self.size
        if self.list_mode:
            return 1, max(1, height)
        return max(1, width // TILE_WIDTH), max(1, height // TILE_HEIGHT)

    async def on_resize(self) -> None:
        await self.relayout()

    async def relayout(self) -> None:
        per_row, rows = self._layout()
        self.set_class(self.list_mode, "-list")
        self.styles.grid_size_columns = per_row
        if (per_row, rows) != (self.per_row, self.rows) or len(self.children) != per_row * rows:
            self.per_row, self.rows = per_row, rows
            await self.remove_children()
            await self.mount_all(Tile(self.renderer, i) for i in range(per_row * rows))
        self.first = self.cursor // self.page_size * self.page_size if self.page_size else 0
        self.post_message(self.PageWanted(self.first, self.page_size))

    def reset(self, total: int) -> None:
        """A new filter: ``total`` images, the cursor on the first."""
        self.total = total
        self.cursor = 0
        self.first = 0
        self.images = []

    def current(self) -> StoredImage | None:
        i = self.cursor - self.first
        return self.images[i] if 0 <= i < len(self.images) else None

    def tiles(self) -> list[Tile]:
        return list(self.query(Tile))

    def show_page(self, offset: int, images: list[StoredImage], total: int) -> None:
        if offset != self.first:
            return  # an older request: the cursor has moved on
        self.total = total
        self.images = images
        self.cursor = min(self.cursor, max(0, total - 1))
        for i, tile in enumerate(self.tiles()):
            image = images[i] if i < len(images) else None
            tile.set_image(
                image,
                list_mode=self.list_mode,
                marked=image is not None and image.id in self.marked,
            )
        self._highlight()

    def show_thumbnail(self, image_id: int, picture: Image.Image | None, state: FileState) -> None:
        for tile in self.tiles():
            if tile.image is not None and tile.image.id == image_id:
                tile.state = state
                if picture is not None and not self.list_mode:
                    tile.query_one(Picture).show(picture)
                tile.update_caption(self.list_mode, image_id in self.marked)

    def state_of(self, image_id: int) -> FileState:
        for tile in self.tiles():
            if tile.image is not None and tile.image.id == image_id:
                return tile.state
        return "ok"

    def _highlight(self) -> None:
        for i, tile in enumerate(self.tiles()):
            tile.set_class(self.first + i == self.cursor, "-cursor")
        self.post_message(self.CursorMoved(self.current(), self.cursor))

    def toggle_mark(self) -> None:
        image = self.current()
        if image is None:
            return
        self.marked.symmetric_difference_update({image.id})
        for tile in self.tiles():
            if tile.image is image:
                tile.set_class(image.id in self.marked, "-marked")
                tile.update_caption(self.list_mode, image.id in self.marked)

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
