"""The gallery: every indexed image as thumbnails (or a list), a page at a time, with
filters by text, model and date, and the actions on an image.

Actions are bindings to ``act('name')``, each run by a ``do_name`` method: a new action
is one binding and one method. Those that need the Image screen's form (reuse, start
from, variations) close the gallery with the action as its result.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.message import Message
from textual.widget import Widget
from textual.widgets import Input, Select
from textual.worker import Worker

from engines import gallery
from engines.gallery import FileState, Filter, GalleryError, Thumbnails
from engines.image_links import origin_of
from engines.store import StoredImage, StoreError
from tui.screens.base import AppScreen, styles
from tui.text import visible
from tui.widgets.dialogs import ConfirmDialog, TextDialog
from tui.widgets.footer import AppFooter
from tui.widgets.gallery import ThumbnailGrid
from tui.widgets.image_viewer import ImageViewer

if TYPE_CHECKING:
    from PIL import Image

FOR_THE_FORM = ("reuse", "init", "variations", "improve")
"""Actions the Image screen does: the gallery closes with them."""


Thumb = tuple[int, "Image.Image | None", FileState, str]
"""A thumbnail read: the image's id, its picture (None when missing), its state and why."""

PAGES_KEPT = 16
"""Pages of rows the screen keeps (for a page turned back or forth, drawn at once)."""
THUMBS_KEPT = 8
"""Pages of thumbnails it keeps in memory, in pages."""
BATCH_S = 0.05
"""Thumbnails read are sent to the screen at most this often (one redraw each batch)."""


@dataclass
class PageLoaded(Message):
    generation: int
    offset: int
    images: list[StoredImage]
    total: int | None
    """None while the filter's images are being counted (a full page came)."""


@dataclass
class TotalCounted(Message):
    generation: int
    total: int


@dataclass
class ThumbnailsLoaded(Message):
    thumbs: list[Thumb]


@dataclass
class PagePrefetched(Message):
    """A page beside the one shown, read ahead with its thumbnails."""

    generation: int
    offset: int
    images: list[StoredImage]
    thumbs: list[Thumb]


@dataclass
class ModelsLoaded(Message):
    models: list[str]


class Line(Widget):
    """Text in a place of fixed size: a new text repaints it and lays nothing out again
    (a Static asks for a layout of the whole screen at each update)."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.text: Text | str = ""

    def update(self, text: Text | str) -> None:
        self.text = text
        self.refresh()

    def render(self) -> Text | str:
        return self.text


class GalleryScreen(AppScreen[tuple[str, StoredImage] | None]):
    """Browse, filter and act on the images."""

    CSS_PATH = styles("gallery.tcss")

    BINDINGS = [
        Binding("escape", "close", "Close", tooltip="Back to the Image screen", id="gallery.close"),
        Binding(
            "slash",
            "filter",
            "Filter",
            tooltip="To the filters: text, model, date",
            id="gallery.filter",
        ),
        Binding("enter", "act('open')", "Open", tooltip="View the image larger", id="gallery.view"),
        Binding(
            "c", "act('copy')", "Copy path", tooltip="Copy the image's file path", id="gallery.copy"
        ),
        Binding(
            "u",
            "act('reuse')",
            "Reuse",
            tooltip="Fill the form from the image's settings",
            id="gallery.reuse",
        ),
        Binding(
            "i",
            "act('init')",
            "Start from",
            tooltip="Start the next image from this one (img2img)",
            id="gallery.init",
        ),
        Binding(
            "v",
            "act('variations')",
            "Variations",
            tooltip="Variations: the same prompt from this image, new seeds, low strength",
            id="gallery.variations",
        ),
        Binding(
            "a",
            "act('ask')",
            "Ask about it",
            show=False,
            tooltip="Ask about this image: a new chat with it attached (for a vision model)",
            id="gallery.ask",
        ),
        Binding(
            "p",
            "act('improve')",
            "Improve prompt",
            show=False,
            tooltip="Improve this prompt: a chat model rewrites it (seeing the image, if it is "
            "a vision model); you edit it, it goes into the form",
            id="gallery.improve",
        ),
        Binding(
            "o",
            "act('conversation')",
            "Its chat",
            show=False,
            tooltip="Open the conversation the image was asked for in",
            id="gallery.conversation",
        ),
        Binding(
            "space",
            "mark",
            "Select",
            tooltip="Select or unselect the image (for export)",
            id="gallery.mark",
        ),
        Binding(
            "e",
            "act('export')",
            "Export",
            tooltip="Copy the selected images (or this one) into a folder",
            id="gallery.export",
        ),
        Binding(
            "d,delete",
            "act('delete')",
            "Delete",
            tooltip="Move the image to the trash (restorable until `clean --trash`)",
            id="gallery.delete",
        ),
        Binding(
            "f",
            "act('forget')",
            "Forget",
            show=False,
            tooltip="Forget the image (its index entry; a file is left as it is)",
            id="gallery.forget",
        ),
        Binding(
            "t",
            "trash",
            "Trash",
            tooltip="Show the trash, or the gallery again",
            id="gallery.trash",
        ),
        Binding(
            "r",
            "act('restore')",
            "Restore",
            show=False,
            tooltip="Put a trashed image back where it was",
            id="gallery.restore",
        ),
        Binding(
            "l",
            "list_mode",
            "List/thumbs",
            show=False,
            tooltip="Show the images as a list, or as thumbnails",
            id="gallery.list",
        ),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.filter = Filter()
        self._generation = itertools.count(1)
        self.generation = 0
        self.pages: OrderedDict[int, list[StoredImage]] = OrderedDict()
        """Rows read (the page shown, the ones beside it), by offset, for this generation."""
        self.thumbs: OrderedDict[int, Thumb] = OrderedDict()
        """Thumbnails read, by image id (the latest pages')."""
        self._query: Worker[None] | None = None
        self._pending = False
        self.thumbnails: Thumbnails | None = None
        self.problem: str = ""
        self._opened = False
        """Why the image under the cursor is not as indexed (deleted, changed)."""

    def compose(self) -> ComposeResult:
        with Horizontal(id="gallery-filters"):
            yield Input(placeholder="Filter: prompt, negative, model, seed (/)", id="gallery-text")
            yield Select[str]([], prompt="All models", id="gallery-model", allow_blank=True)
            yield Input(placeholder="Date: 2026-11, 7d, A..B", id="gallery-date")
        yield Line(id="gallery-status")
        # filters, status, details (2) and footer: the rest is the grid's
        yield ThumbnailGrid(self.lp.image_renderer, id="gallery-grid", chrome_rows=5)
        yield Line(id="gallery-detail")
        yield AppFooter()

    def on_mount(self) -> None:
        database = self.lp.settings.paths.database
        self.thumbnails = Thumbnails(gallery.thumbnail_folder(database))
        self.query_one(ThumbnailGrid).focus()
        self.load_models()

    def on_screen_resume(self) -> None:
        """Opened again (the screen is kept, with its filters and place): the page and
        the models as they are now (images were made or deleted meanwhile)."""
        if self._opened:
            self._reload()
            self.load_models()
        self._opened = True

    # -- loading --------------------------------------------------------------------

    @on(ThumbnailGrid.PageWanted)
    def _page_wanted(self, event: ThumbnailGrid.PageWanted) -> None:
        self.request_page(event.offset)

    def request_page(self, offset: int) -> None:
        """Show the page at ``offset``: at once (with the thumbnails at hand) where it was
        read ahead, else from a worker."""
        grid = self.query_one(ThumbnailGrid)
        images = self.pages.get(offset)
        if images is not None and not grid.counting:
            self.pages.move_to_end(offset)
            self._show_page(offset, images, grid.total)
            return
        self._pending = False
        self._query = self.load_page(self.generation, self.filter, offset, grid.page_size)

    @work(thread=True, exclusive=True, group="gallery-page", exit_on_error=False)
    def load_page(self, generation: int, f: Filter, offset: int, limit: int) -> None:
        """The rows of a page; counted here only where the page tells the total (fewer
        rows than asked for): else the thumbnails' worker counts them after."""
        try:
            images = gallery.page(self.lp.store, f, offset, limit)
        except StoreError as exc:
            self.app.call_from_thread(self.notify, str(exc), title="Gallery", severity="error")
            return
        exact = offset + len(images) if len(images) < limit and (images or not offset) else None
        self.post_message(PageLoaded(generation, offset, images, exact))

    @work(thread=True, exclusive=True, group="gallery-thumbnails", exit_on_error=False)
    def load_thumbnails(
        self,
        generation: int,
        f: Filter,
        images: list[StoredImage],
        have: frozenset[int],
        count: bool,
        ahead: list[int],
        limit: int,
        prepare: Callable[[Image.Image], object] | None = None,
    ) -> None:
        """The page's thumbnails not in ``have`` (sent in batches), the filter's total
        where ``count``, then the pages at the offsets ``ahead``, rows and thumbnails
        (their half blocks drawn here with ``prepare``, so the turn to them is quick)."""
        from textual.worker import get_current_worker

        worker = get_current_worker()
        batch: list[Thumb] = []
        sent = time.monotonic()
        for image in images:
            if worker.is_cancelled:
                return
            if image.id in have:
                continue
            batch.append(self._thumb(image, prepare))
            if time.monotonic() - sent >= BATCH_S:
                self.post_message(ThumbnailsLoaded(batch))
                batch, sent = [], time.monotonic()
        if batch:
            self.post_message(ThumbnailsLoaded(batch))
        self._warn_cache()
        try:
            if count:
                self.post_message(TotalCounted(generation, gallery.count(self.lp.store, f)))
            for offset in ahead:
                if worker.is_cancelled:
                    return
                rows = gallery.page(self.lp.store, f, offset, limit)
                thumbs = []
                for image in rows:
                    if worker.is_cancelled:
                        return
                    if image.id not in have:
                        thumbs.append(self._thumb(image, prepare))
                self.post_message(PagePrefetched(generation, offset, rows, thumbs))
        except StoreError as exc:
            self.app.call_from_thread(self.notify, str(exc), title="Gallery", severity="error")

    def _thumb(
        self, image: StoredImage, prepare: Callable[[Image.Image], object] | None = None
    ) -> Thumb:
        """The thumbnail of ``image`` and the state of its file (in a worker)."""
        thumbnails = self.thumbnails
        assert thumbnails is not None
        state, why = gallery.check_file(image)
        picture = None
        if state != "missing":
            try:
                picture = thumbnails.get(image.path)
            except OSError as exc:
                state, why = "changed", f"this PNG cannot be read now: {exc}"
        if picture is not None and prepare is not None:
            prepare(picture)
        return image.id, picture, state, why

    def _warn_cache(self) -> None:
        thumbnails = self.thumbnails
        if thumbnails is not None and thumbnails.problem and not self.problem.startswith("cache"):
            self.app.call_from_thread(
                self.notify, thumbnails.problem, title="Thumbnails", severity="warning"
            )
            self.problem = "cache"

    @work(thread=True, exclusive=True, group="gallery-models", exit_on_error=False)
    def load_models(self) -> None:
        try:
            names = gallery.models(self.lp.store)
        except StoreError:
            return
        self.post_message(ModelsLoaded(names))

    @on(ModelsLoaded)
    def _models_loaded(self, event: ModelsLoaded) -> None:
        select = self.query_one("#gallery-model", Select)
        select.set_options((visible(name), name) for name in event.models)

    @on(PageLoaded)
    def _page_loaded(self, event: PageLoaded) -> None:
        if event.generation != self.generation:
            return
        self.pages[event.offset] = event.images
        while len(self.pages) > PAGES_KEPT:
            self.pages.popitem(last=False)
        self._show_page(event.offset, event.images, event.total)

    def _show_page(self, offset: int, images: list[StoredImage], total: int | None) -> None:
        """The page on the grid with the thumbnails at hand, in one redraw; a worker reads
        the others, counts the images if needed, and reads the next pages ahead."""
        grid = self.query_one(ThumbnailGrid)
        if offset != grid.first:
            return  # an older request: the cursor has moved on
        grid.show_page(offset, images, total, self.thumbs)
        self._show_status()
        current = grid.current()
        if current is not None and current.id in self.thumbs:
            self._show_detail(current, self.thumbs[current.id][3])
        for image in images:
            if image.id in self.thumbs:
                self.thumbs.move_to_end(image.id)
        size = grid.page_size
        typing = isinstance(self.focused, Input)  # no read-ahead while a filter is typed
        ahead = [
            o
            for o in (offset + size, offset - size)
            if not typing and o >= 0 and (grid.counting or o < grid.total) and o not in self.pages
        ]
        missing = [i for i in images if i.id not in self.thumbs]
        if missing or ahead or grid.counting:
            self.load_thumbnails(
                self.generation,
                self.filter,
                images,
                frozenset(self.thumbs),
                grid.counting,
                ahead,
                size,
                grid.preparer(),
            )

    def _keep_thumbs(self, thumbs: list[Thumb]) -> None:
        for thumb in thumbs:
            self.thumbs[thumb[0]] = thumb
            self.thumbs.move_to_end(thumb[0])
        grid = self.query_one(ThumbnailGrid)
        while len(self.thumbs) > THUMBS_KEPT * max(1, grid.page_size):
            self.thumbs.popitem(last=False)

    @on(ThumbnailsLoaded)
    def _thumbnails_loaded(self, event: ThumbnailsLoaded) -> None:
        self._keep_thumbs(event.thumbs)
        grid = self.query_one(ThumbnailGrid)
        current = grid.current()
        for image_id, picture, state, why in event.thumbs:
            grid.show_thumbnail(image_id, picture, state)
            if current is not None and current.id == image_id:
                self._show_detail(current, why)

    @on(TotalCounted)
    def _total_counted(self, event: TotalCounted) -> None:
        if event.generation != self.generation:
            return
        self.query_one(ThumbnailGrid).set_total(event.total)
        self._show_status()

    @on(PagePrefetched)
    def _page_prefetched(self, event: PagePrefetched) -> None:
        if event.generation != self.generation:
            return
        self.pages[event.offset] = event.images
        while len(self.pages) > PAGES_KEPT:
            self.pages.popitem(last=False)
        self._keep_thumbs(event.thumbs)

    @on(Worker.StateChanged)
    def _query_done(self, event: Worker.StateChanged) -> None:
        """A filter typed while the last one was read is read when that is done, with
        what the filters say then (keystrokes in between are not read at all)."""
        if event.worker is self._query and event.worker.is_finished:
            self._query = None
            if self._pending:
                self._start_filter()

    def _show_status(self) -> None:
        grid = self.query_one(ThumbnailGrid)
        where = "In the trash" if self.filter.trash else "Images"
        if not grid.total:
            text = f"{where}: none" + (" match the filters" if self.filter.active else "")
        else:
            page = grid.first // max(1, grid.page_size) + 1
            pages = (grid.total - 1) // max(1, grid.page_size) + 1
            text = f"{where}: {grid.total:,} · {grid.cursor + 1:,} · page {page:,} of {pages:,}"
            if grid.counting:
                text = f"{where}: {grid.total:,}+ · {grid.cursor + 1:,} · page {page:,}"
            if grid.marked:
                text += f" · {len(grid.marked)} selected"
            if self.filter.active:
                text += " · filtered"
        self.query_one("#gallery-status", Line).update(text)

    @on(ThumbnailGrid.CursorMoved)
    def _cursor_moved(self, event: ThumbnailGrid.CursorMoved) -> None:
        self._show_status()
        if event.image is not None:
            state = self.query_one(ThumbnailGrid).state_of(event.image.id)
            why = ""
            if state == "missing":
                why = "this PNG was deleted or moved outside the app"
            elif state == "changed":
                why = "this PNG was changed outside the app"
            self._show_detail(event.image, why)
        else:
            self.query_one("#gallery-detail", Line).update("")

    def _show_detail(self, image: StoredImage, why: str) -> None:
        p = image.parameters
        when = datetime.fromtimestamp(image.created_at).strftime("%Y-%m-%d %H:%M")
        text = Text(no_wrap=True, overflow="ellipsis")
        if why:
            text.append(f"⚠ {visible(why)}: f forgets it", style="bold red")
        else:
            text.append(
                f"{when} · {p.width}×{p.height} · seed {p.seed} · {p.steps} steps · ", style="dim"
            )
            text.append(visible(p.model), style="dim")
        outputs = self.lp.settings.paths.outputs
        where = image.path.relative_to(outputs) if image.path.is_relative_to(outputs) else None
        shown_path = f"{outputs.name}/{where}" if where is not None else str(image.path)
        text.append("\n" + visible(shown_path), style="dim")
        with contextlib.suppress(StoreError):  # the chat it came from (issue 14)
            origin = origin_of(self.lp.store, image.id)
            if origin is not None:
                text.append(f" · from the chat “{visible(origin.title)}” (o opens it)")
        self.query_one("#gallery-detail", Line).update(text)
        self.problem = why

    # -- filters --------------------------------------------------------------------

    def apply_filter(self, f: Filter) -> None:
        """Show the images ``f`` lets through, from the first. While the last filter is
        still being read, only the newest one waits (typing does not pile up queries)."""
        self.filter = f
        if self._query is not None and not self._query.is_finished:
            self._pending = True
            return
        self._start_filter()

    def _start_filter(self) -> None:
        # the last filter's count and read-ahead would hold the index while this one waits
        self.workers.cancel_group(self, "gallery-thumbnails")
        self._new_generation()
        grid = self.query_one(ThumbnailGrid)
        grid.reset(0)
        self.request_page(0)

    def _new_generation(self) -> None:
        """What was read before is no longer what the index or the filters give."""
        self.generation = next(self._generation)
        self.pages.clear()
        self._pending = False

    @on(Input.Changed, "#gallery-text")
    def _text_changed(self, event: Input.Changed) -> None:
        from dataclasses import replace

        self.apply_filter(replace(self.filter, text=event.value))

    @on(Input.Changed, "#gallery-date")
    def _date_changed(self, event: Input.Changed) -> None:
        from dataclasses import replace

        try:
            since, until = gallery.parse_date(event.value)
        except ValueError as exc:
            self.query_one("#gallery-status", Line).update(Text(str(exc), style="red"))
            return
        self.apply_filter(replace(self.filter, since=since, until=until))

    @on(Select.Changed, "#gallery-model")
    def _model_changed(self, event: Select.Changed) -> None:
        from dataclasses import replace

        model = event.value if isinstance(event.value, str) else ""
        self.apply_filter(replace(self.filter, model=model))

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        self.query_one(ThumbnailGrid).focus()

    def action_filter(self) -> None:
        self.query_one("#gallery-text", Input).focus()

    def action_close(self) -> None:
        if isinstance(self.focused, Input | Select):
            self.query_one(ThumbnailGrid).focus()
            return
        self.dismiss(None)

    def action_trash(self) -> None:
        from dataclasses import replace

        self.apply_filter(replace(self.filter, trash=not self.filter.trash))
        state = (
            "the trash: r restores, `clean --trash` empties it"
            if self.filter.trash
            else "the gallery"
        )
        self.notify(f"Showing {state}.", title="Gallery")

    async def action_list_mode(self) -> None:
        grid = self.query_one(ThumbnailGrid)
        grid.list_mode = not grid.list_mode
        await grid.relayout()

    def action_mark(self) -> None:
        self.query_one(ThumbnailGrid).toggle_mark()
        self._show_status()

    # -- actions ----------------------------------------------------------------------

    def action_act(self, name: str) -> None:
        grid = self.query_one(ThumbnailGrid)
        image = grid.current()
        if image is None and name != "export":
            return
        if name in FOR_THE_FORM:
            assert image is not None
            if self.filter.trash:
                self.notify("The image is in the trash: r restores it first.", title="Gallery")
                return
            self.dismiss((name, image))
            return
        handler = getattr(self, f"do_{name}", None)
        if handler is not None:
            handler(image)

    def _reload(self) -> None:
        """The page again, as the index and the files are now."""
        self._new_generation()
        self.thumbs.clear()
        grid = self.query_one(ThumbnailGrid)
        grid.counting = True
        self.request_page(grid.first)

    def do_open(self, image: StoredImage) -> None:
        self.app.push_screen(ImageViewer(image, self.lp.image_renderer))

    def do_ask(self, image: StoredImage) -> None:
        """A new chat with the image attached, on the Chat screen."""
        from tui.screens.chat_extras import ask_about

        if self.filter.trash:
            self.notify("The image is in the trash: r restores it first.", title="Gallery")
            return
        self.dismiss(None)
        ask_about(self.app, image.path)

    def do_conversation(self, image: StoredImage) -> None:
        """The conversation the image was asked for in, at the turn it came from."""
        from tui.screens.chat_images import open_in_chat

        try:
            origin = origin_of(self.lp.store, image.id)
        except StoreError as exc:
            self.notify(str(exc), severity="error")
            return
        if origin is None:
            self.notify("This image was not asked for in a chat.", title="Gallery")
            return
        self.dismiss(None)
        open_in_chat(self.app, origin.conversation_id, origin.message_id)

    def do_copy(self, image: StoredImage) -> None:
        self.app.copy_to_clipboard(str(image.path))
        self.notify(f"Copied {image.path}")

    def do_delete(self, image: StoredImage) -> None:
        if self.filter.trash:
            self.notify(
                "Already in the trash: `llm-pessoal clean --trash` empties it.", title="Gallery"
            )
            return
        outputs = self.lp.settings.paths.outputs

        def confirmed(yes: bool | None) -> None:
            if not yes:
                return
            try:
                gallery.trash(self.lp.store, outputs, image)
            except (GalleryError, StoreError) as exc:
                self.notify(f"Not deleted: {exc}", severity="error")
                return
            self.query_one(ThumbnailGrid).marked.discard(image.id)
            self.notify(
                f"{image.path.name} is in the trash (t shows it, r restores).", title="Gallery"
            )
            self._reload()

        self.app.push_screen(
            ConfirmDialog(f"Move {image.path} to the trash?", yes="Trash"), confirmed
        )

    def do_restore(self, image: StoredImage) -> None:
        if not self.filter.trash:
            self.notify("r restores from the trash: t shows it.", title="Gallery")
            return
        try:
            path = gallery.restore(self.lp.store, self.lp.settings.paths.outputs, image)
        except (GalleryError, StoreError) as exc:
            self.notify(f"Not restored: {exc}", severity="error")
            return
        self.notify(f"Restored {path}.", title="Gallery")
        self._reload()

    def do_forget(self, image: StoredImage) -> None:
        def confirmed(yes: bool | None) -> None:
            if not yes:
                return
            try:
                self.lp.store.forget_image(image.id)
            except StoreError as exc:
                self.notify(f"Not forgotten: {exc}", severity="error")
                return
            self.notify(f"Forgot {image.path.name}.", title="Gallery")
            self._reload()

        what = f"{image.path.name}: {self.problem}" if self.problem else f"{image.path} is indexed"
        self.app.push_screen(
            ConfirmDialog(f"{what}. Forget it? A file there is left as it is.", yes="Forget"),
            confirmed,
        )

    def do_export(self, image: StoredImage | None) -> None:
        grid = self.query_one(ThumbnailGrid)
        ids = set(grid.marked)
        default = self.lp.settings.paths.exports / f"gallery-{datetime.now():%Y%m%d-%H%M%S}"

        def chosen(folder: str | None) -> None:
            if folder:
                self.export_images(ids, image, Path(folder).expanduser())

        count = len(ids) or (1 if image else 0)
        if not count:
            return
        self.app.push_screen(
            TextDialog(
                f"Export {count} image{'s' if count > 1 else ''} to the folder", str(default)
            ),
            chosen,
        )

    @work(thread=True, exclusive=True, group="gallery-export", exit_on_error=False)
    def export_images(self, ids: set[int], current: StoredImage | None, folder: Path) -> None:
        try:
            images = gallery.by_ids(self.lp.store, ids) if ids else [current] if current else []
            copied = gallery.export([i for i in images if i is not None], folder)
        except (GalleryError, StoreError) as exc:
            self.app.call_from_thread(self.notify, f"Export: {exc}", severity="error")
            return
        self.app.call_from_thread(
            self.notify, f"Exported {len(copied)} image(s) to {folder}.", title="Gallery"
        )

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "act" and parameters:
            name = parameters[0]
            if name == "restore":
                return self.filter.trash
            if name in ("reuse", "init", "variations", "delete", "improve"):
                return not self.filter.trash
        return True
