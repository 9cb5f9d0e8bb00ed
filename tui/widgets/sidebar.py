"""The list of saved conversations, with a search box."""

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
    ]

    @dataclass
    class RenameRequested(Message):
        conversation_id: int

    @dataclass
    class DeleteRequested(Message):
        conversation_id: int

    def show(self, conversations: list[Conversation], current: int | None) -> None:
        self.clear_options()
        self.add_options(Option(self._label(c), id=str(c.id)) for c in conversations)
        index = 0 if self.option_count else None
        if current is not None:
            with contextlib.suppress(OptionDoesNotExist):  # filtered out by a search
                index = self.get_option_index(str(current))
        self.highlighted = index

    @staticmethod
    def _label(c: Conversation) -> Text:
        when = datetime.fromtimestamp(c.updated_at).strftime("%d %b %H:%M")
        label = Text(visible(c.title), no_wrap=True, overflow="ellipsis")
        label.append(f"\n{when} · {visible(c.model)}", style="dim")
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
