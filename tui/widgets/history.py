"""Ctrl+R in the prompt: search the earlier prompts, as in a shell."""

from __future__ import annotations

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label, OptionList
from textual.widgets.option_list import Option

from tui.screens.base import styles
from tui.text import visible

SHOWN = 200
"""Matches listed at once (the newest)."""


def first_line(text: str, width: int = 200) -> str:
    line = " ".join(text.split())
    return line if len(line) <= width else line[: width - 1] + "…"


class HistoryDialog(ModalScreen[str | None]):
    """Type to narrow the earlier prompts (newest first); Enter puts one in the prompt."""

    CSS_PATH = styles("dialogs.tcss")

    BINDINGS = [
        Binding(
            "escape",
            "dismiss(None)",
            "Cancel",
            tooltip="Close, prompt unchanged",
            id="history.cancel",
        ),
        Binding(
            "down,ctrl+r",
            "move(1)",
            "Older",
            show=False,
            tooltip="The next older match (Ctrl+R again, as in a shell)",
            id="history.older",
        ),
        Binding(
            "up",
            "move(-1)",
            "Newer",
            show=False,
            tooltip="The next newer match",
            id="history.newer",
        ),
    ]

    def __init__(self, prompts: list[str]) -> None:
        super().__init__(classes="dialog")
        self.prompts = prompts
        self._matches: list[str] = []

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog-box history-box"):
            yield Label("Earlier prompts (type to search, Enter to use)", classes="dialog-title")
            yield Input(placeholder="search", id="history-search")
            yield OptionList(id="history-list")
            yield Label("", id="history-count", classes="dim")

    def on_mount(self) -> None:
        self._filter("")

    @on(Input.Changed, "#history-search")
    def _changed(self, event: Input.Changed) -> None:
        self._filter(event.value)

    def _filter(self, query: str) -> None:
        words = query.casefold().split()
        matches = [p for p in self.prompts if all(w in p.casefold() for w in words)]
        self._matches = matches[:SHOWN]
        listing = self.query_one(OptionList)
        listing.clear_options()
        listing.add_options(
            Option(Text(visible(first_line(p)), no_wrap=True, overflow="ellipsis"))
            for p in self._matches
        )
        listing.highlighted = 0 if self._matches else None
        more = f" (the newest {SHOWN} shown)" if len(matches) > SHOWN else ""
        self.query_one("#history-count", Label).update(
            f"{len(matches)} of {len(self.prompts)} prompts{more}"
        )

    def action_move(self, step: int) -> None:
        listing = self.query_one(OptionList)
        if not self._matches:
            return
        at = (listing.highlighted or 0) + step
        listing.highlighted = max(0, min(len(self._matches) - 1, at))

    @on(Input.Submitted, "#history-search")
    def _submitted(self) -> None:
        at = self.query_one(OptionList).highlighted
        if at is not None and self._matches:
            self.dismiss(self._matches[at])

    @on(OptionList.OptionSelected, "#history-list")
    def _picked(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(self._matches[event.option_index])
