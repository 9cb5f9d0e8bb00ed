"""The list of saved conversations, with a search box.

The list holds a page of conversations at a time (DESIGN decision 12): the newest
``PAGE`` first, and the next page when the highlight or the scroll comes near the end of
what is loaded, so a history of 10,000 conversations opens as fast as one of ten."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import datetime

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import Input, OptionList
from textual.widgets.option_list import Option, OptionDoesNotExist

from engines.store import Conversation
from tui.text import visible

PAGE = 50
"""Conversations loaded at a time."""
NEAR_END = 10
"""The next page is asked for when the highlight comes this close to the end of what is
loaded, or the scroll this many rows (of two lines) from its bottom."""


class ConversationList(OptionList):
    """Saved conversations, newest first."""

    BINDINGS = [
        Binding(
            "r",
            "rename",
            "Rename",
            tooltip="Rename the highlighted conversation",
            id="conversations.rename",
        ),
        Binding(
            "d,delete",
            "delete",
            "Delete",
            tooltip="Delete the highlighted conversation",
            id="conversations.delete",
        ),
        Binding(
            "s",
            "stop",
            "Stop",
            tooltip="Stop the reply being written in the highlighted conversation",
            id="conversations.stop",
        ),
    ]

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._shown: dict[int, Conversation] = {}
        self.replies: dict[int, str] = {}
        """By conversation: "streaming" or "waiting" (a reply not finished yet)."""
        self.unseen: set[int] = set()
        """Conversations with a finished reply not yet seen."""
        self.search = ""
        """The search the list shows the conversations of ("" for all)."""
        self.more = False
        """More conversations than those loaded match the search."""
        self._asked = False

    @dataclass
    class MoreWanted(Message):
        """The list's end is near and more conversations exist: the next page is wanted,
        the one after ``after`` (the last loaded) for the search ``search``."""

        after: Conversation
        search: str

    @dataclass
    class RenameRequested(Message):
        conversation_id: int

    @dataclass
    class DeleteRequested(Message):
        conversation_id: int

    @dataclass
    class StopRequested(Message):
        conversation_id: int

    @property
    def loaded(self) -> int:
        """How many conversations are loaded (the pages asked for so far)."""
        return len(self._shown)

    @property
    def last(self) -> Conversation | None:
        """The last conversation loaded (the next page starts after it)."""
        return next(reversed(self._shown.values()), None)

    def show(
        self,
        conversations: list[Conversation],
        current: int | None,
        *,
        search: str = "",
        more: bool = False,
    ) -> None:
        """Show the first pages of the conversations ``search`` finds, the highlight on
        ``current``; ``more`` when others follow them."""
        self.search, self.more, self._asked = search, more, False
        self.clear_options()
        self._shown = {c.id: c for c in conversations}
        self.add_options(Option(self._label(c), id=str(c.id)) for c in conversations)
        index = 0 if self.option_count else None
        if current is not None:
            with contextlib.suppress(OptionDoesNotExist):  # filtered out by a search
                index = self.get_option_index(str(current))
        self.highlighted = index
        self._want_more()

    def extend(self, conversations: list[Conversation], *, more: bool) -> None:
        """Add the next page below the loaded ones; the highlight and the scroll stay."""
        self.more, self._asked = more, False
        new = [c for c in conversations if c.id not in self._shown]
        self._shown.update((c.id, c) for c in new)
        self.add_options(Option(self._label(c), id=str(c.id)) for c in new)
        self._want_more()

    def _want_more(self) -> None:
        """Ask for the next page when the highlight or the scroll nears the end."""
        if not self.more or self._asked or not self._shown:
            return
        near = self.highlighted is not None and self.highlighted >= self.option_count - NEAR_END
        if not near and self.size.height:  # laid out: the scroll can say
            left = self.max_scroll_y - self.scroll_y
            near = left <= 2 * NEAR_END or self.virtual_size.height <= self.size.height
        last = self.last
        if near and last is not None:
            self._asked = True
            self.post_message(self.MoreWanted(last, self.search))

    def watch_highlighted(self, highlighted: int | None) -> None:
        super().watch_highlighted(highlighted)
        self._want_more()

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        self._want_more()

    def on_resize(self) -> None:
        self._want_more()

    def mark(self, replies: dict[int, str], unseen: set[int]) -> None:
        """Mark the conversations whose reply streams or waits, and those with a finished
        reply not yet seen, keeping the list and its highlight as they are."""
        changed = (replies.keys() | unseen | self.replies.keys() | self.unseen) & self._shown.keys()
        self.replies, self.unseen = dict(replies), set(unseen)
        for cid in changed:
            with contextlib.suppress(OptionDoesNotExist):
                self.replace_option_prompt(str(cid), self._label(self._shown[cid]))

    def _label(self, c: Conversation) -> Text:
        when = datetime.fromtimestamp(c.updated_at).strftime("%d %b %H:%M")
        label = Text(no_wrap=True, overflow="ellipsis")
        state = self.replies.get(c.id)
        if state == "streaming":
            label.append("● ", style="bold green")
        elif state == "waiting":
            label.append("◌ ", style="yellow")
        elif c.id in self.unseen:
            label.append("✦ ", style="bold cyan")
        label.append(visible(c.title))
        note = {"streaming": "writing…", "waiting": "waiting"}.get(state or "", "")
        if not note and c.id in self.unseen:
            note = "new reply"
        label.append(f"\n{when} · {note or visible(c.model)}", style="dim")
        return label

    def _highlighted_id(self) -> int | None:
        if self.highlighted is None:
            return None
        option_id = self.get_option_at_index(self.highlighted).id
        return int(option_id) if option_id else None

    def action_rename(self) -> None:
        if (cid := self._highlighted_id()) is not None:
            self.post_message(self.RenameRequested(cid))

    def action_delete(self) -> None:
        if (cid := self._highlighted_id()) is not None:
            self.post_message(self.DeleteRequested(cid))

    def action_stop(self) -> None:
        if (cid := self._highlighted_id()) is not None:
            self.post_message(self.StopRequested(cid))


class Sidebar(Vertical):
    """Search box above the conversation list; Down goes from the box to the list."""

    BINDINGS = [
        Binding(
            "down",
            "to_list",
            "To the list",
            show=False,
            tooltip="From the search box down to the conversations found",
            id="conversations.to_list",
        )
    ]

    def compose(self) -> ComposeResult:
        yield Input(placeholder="Search conversations", id="search")
        yield ConversationList(id="conversations")

    def action_to_list(self) -> None:
        self.query_one(ConversationList).focus()
