"""One search over everything (F6 on every screen): type, and the best matches among
conversations, messages (every version and branch), images and presets show as you type;
Enter opens one where it lives.

The query runs in a thread worker (engines/search.py), the newest text only: a text
typed since makes an older answer stale, and it is dropped. Every string from the
database is shown through the display function, the match marked by style alone.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import Input, Label, OptionList
from textual.widgets.option_list import Option

from engines.search import COUNT_CAP, KINDS, Hit, Results, SearchError, Snippet, search
from engines.store import Store, StoreError
from tui.screens.base import AppModal
from tui.text import visible
from tui.widgets.footer import AppFooter

if TYPE_CHECKING:
    from tui.app import LlmPessoalApp

PAGE = 30
"""Results read at a time; the next page is read when the cursor reaches the last."""
LEAD = 40
"""Characters of a snippet kept before its first match (the match stays in sight)."""
LABELS = {"conversation": "Chat", "message": "Message", "image": "Image", "preset": "Preset"}
HINT = "Type to search every conversation, message, image and preset."


@dataclass
class SearchAnswered(Message):
    """A query's answer (from the worker thread)."""

    generation: int
    offset: int
    results: Results
    error: str = ""


def result_text(hit: Hit) -> Text:
    """Two lines: what and where, then the snippet with its matches marked."""
    text = Text(no_wrap=True, overflow="ellipsis", end="")
    text.append(f"{LABELS[hit.kind]:<8}", style="bold")
    if hit.kind == "conversation":
        for piece, match in hit.snippet.parts():
            text.append(visible(piece), style="reverse bold" if match else "bold")
    else:
        text.append(visible(" ".join(hit.title.split())), style="bold")
        if hit.detail:
            text.append(f" · {visible(hit.detail)}", style="dim")
    if not hit.current:
        text.append(" · older version or other branch", style="italic")
    text.append("\n" + " " * 8)
    if hit.kind == "conversation":  # the title is the match: the second line says more
        text.append(visible(hit.detail), style="dim")
        return text
    for piece, match in trimmed(hit.snippet, LEAD).parts():
        text.append(visible(piece), style="reverse bold" if match else "")
    return text


def trimmed(snippet: Snippet, lead: int) -> Snippet:
    """``snippet`` with what comes more than ``lead`` characters before its first match
    cut (and an ellipsis for it)."""
    if not snippet.marks or snippet.marks[0][0] <= lead:
        return snippet
    cut = snippet.marks[0][0] - lead + 1
    return Snippet(
        "…" + snippet.text[cut:], tuple((a - cut + 1, b - cut + 1) for a, b in snippet.marks)
    )


class SearchDialog(AppModal[Hit | None]):
    """Search everything; Enter opens the highlighted result."""

    BINDINGS = [
        Binding("escape", "dismiss(None)", "Close", tooltip="Close the search", id="search.close"),
        Binding(
            "enter",
            "open",
            "Open",
            tooltip="Open the result: a message in its conversation, an image in the viewer, "
            "a preset in a new conversation",
            id="search.open",
        ),
        Binding("down", "move(1)", "Next", show=False, tooltip="The next result", id="search.next"),
        Binding(
            "up", "move(-1)", "Previous", show=False, tooltip="The result before", id="search.up"
        ),
    ]

    def __init__(self, text: str = "") -> None:
        super().__init__(classes="dialog")
        self.text = text
        self.hits: list[Hit] = []
        self.more = False
        self._generation = 0
        self._cancel = threading.Event()
        self._reading_more = False
        self.answered: str | None = None
        """The text whose results are shown (None until the first answer)."""
        self._store: Store | None = None
        self._store_lock = threading.Lock()

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog-box search-box"):
            yield Label("Search everything", classes="dialog-title")
            yield Input(
                self.text,
                placeholder="words to find: in titles, messages, prompts, presets",
                id="search-text",
            )
            yield OptionList(id="search-results")
            yield Label(HINT, id="search-status")
        yield AppFooter()

    def on_mount(self) -> None:
        self.query_one("#search-text", Input).focus()
        if self.text:
            self._ask(self.text)

    def on_unmount(self) -> None:
        self._cancel.set()
        with self._store_lock:
            own, self._store = self._store, self.lp.store  # a late worker uses the app's
        if own is not None and own is not self.lp.store:
            own.close()  # (waits for a query still running in a worker)

    def reader(self) -> Store:
        """The dialog's own connection to the database, opened on first use (in a worker):
        in WAL mode it reads while the app writes, and the app never waits on a search.
        The app's own store when that has no file (a throw-away database)."""
        with self._store_lock:
            if self._store is None:
                path = self.lp.store.path
                try:
                    self._store = Store.open(path, recover=False) if path else self.lp.store
                except StoreError:
                    self._store = self.lp.store
            return self._store

    # -- the query ------------------------------------------------------------------------

    @on(Input.Changed, "#search-text")
    def _changed(self, event: Input.Changed) -> None:
        self._ask(event.value)

    def _ask(self, text: str, offset: int = 0) -> None:
        self._cancel.set()  # the query before this one stops where it is
        self._cancel = threading.Event()
        if offset == 0:
            self._generation += 1
            self.text = text
            self._reading_more = False
        if not text.strip():
            self.hits, self.more = [], False
            self.query_one(OptionList).clear_options()
            self._status(HINT)
            self.answered = text
            return
        self.run_query(self._generation, text, offset, self._cancel)

    @work(thread=True, exclusive=True, group="search", exit_on_error=False)
    def run_query(self, generation: int, text: str, offset: int, cancel: threading.Event) -> None:
        try:
            results = search(self.reader(), text, limit=PAGE, offset=offset, cancel=cancel)
        except (SearchError, StoreError) as exc:
            self.post_message(SearchAnswered(generation, offset, Results(text, []), str(exc)))
            return
        if not cancel.is_set():
            self.post_message(SearchAnswered(generation, offset, results))

    @on(SearchAnswered)
    def _answered(self, event: SearchAnswered) -> None:
        if event.generation != self._generation:
            return  # the text changed since: a newer answer is on its way
        listing = self.query_one(OptionList)
        self.answered = event.results.query
        if event.error:
            self._status(event.error, error=True)
            return
        results = event.results
        if event.offset == 0:
            self.hits = list(results.hits)
            listing.clear_options()
        else:
            self._reading_more = False
            self.hits += results.hits
        self.more = results.more
        listing.add_options(Option(result_text(h)) for h in results.hits)
        if event.offset == 0 and self.hits:
            listing.highlighted = 0
        self._status(self._summary(results))

    def _summary(self, results: Results) -> str:
        if not self.hits:
            return f"Nothing found for “{visible(self.text)}”."
        parts = [
            f"{n}{'+' if n >= COUNT_CAP else ''} {LABELS[k].lower()}{'' if n == 1 else 's'}"
            for k, n in results.counts.items()
            if n and k in KINDS
        ]
        more = " · more below" if self.more else ""
        return f"{len(self.hits)} shown, best first · {', '.join(parts)}{more}"

    def _status(self, text: str, *, error: bool = False) -> None:
        label = self.query_one("#search-status", Label)
        label.update(Text(visible(text), style="bold red" if error else ""))

    # -- moving and opening ---------------------------------------------------------------

    def action_move(self, step: int) -> None:
        listing = self.query_one(OptionList)
        if not self.hits:
            return
        at = (listing.highlighted or 0) + step if listing.highlighted is not None else 0
        listing.highlighted = max(0, min(len(self.hits) - 1, at))

    @on(OptionList.OptionHighlighted, "#search-results")
    def _highlighted(self, event: OptionList.OptionHighlighted) -> None:
        if event.option_index >= len(self.hits) - 1 and self.more and not self._reading_more:
            self._reading_more = True
            self._ask(self.text, offset=len(self.hits))

    @on(Input.Submitted, "#search-text")
    def action_open(self) -> None:
        at = self.query_one(OptionList).highlighted
        if at is not None and 0 <= at < len(self.hits):
            self.dismiss(self.hits[at])

    @on(OptionList.OptionSelected, "#search-results")
    def _picked(self, event: OptionList.OptionSelected) -> None:
        if 0 <= event.option_index < len(self.hits):
            self.dismiss(self.hits[event.option_index])


async def open_hit(app: LlmPessoalApp, hit: Hit) -> None:
    """Open a result where it lives: a message in its conversation on the Chat screen,
    scrolled to it (its version or branch made the current one); a conversation; an image
    in the Image screen's viewer; a preset in a new conversation."""
    from tui.screens.chat import ChatScreen

    if hit.kind == "image":
        from engines import gallery
        from tui.widgets.image_viewer import ImageViewer

        try:
            found = gallery.by_ids(app.store, {hit.id})
        except StoreError as exc:
            app.notify(str(exc), title="Search", severity="error")
            return
        if not found:
            app.notify(
                "That image is no longer in the gallery.", title="Search", severity="warning"
            )
            return
        await app.switch_mode("image")
        await app.push_screen(ImageViewer(found[0], app.image_renderer))
        return
    await app.switch_mode("chat")
    while not isinstance(app.screen, ChatScreen) and len(app.screen_stack) > 1:
        await app.pop_screen()  # a dialog left open on the Chat screen gives way
    chat = app.screen
    if not isinstance(chat, ChatScreen):
        return
    if hit.kind == "preset":
        from engines.chat_options import defaults_from_settings
        from engines.presets import Presets

        presets = Presets(app.store, defaults_from_settings(app.settings))
        preset = next((p for p in presets.all() if p.id == hit.id), None)
        if preset is None:
            app.notify("That preset was deleted.", title="Search", severity="warning")
            return
        chat.use_preset(preset)
        return
    conversation = hit.conversation_id if hit.conversation_id is not None else hit.id
    message = hit.id if hit.kind == "message" else None
    if not chat.open_at_message(conversation, message):
        app.notify("That conversation was deleted.", title="Search", severity="warning")
