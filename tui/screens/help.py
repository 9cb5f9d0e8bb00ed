"""Every key of the app, read from the bindings themselves so it is never out of date:
those of the screen (or dialog) it opens over first (``LlmPessoalApp.help_groups``)."""

from __future__ import annotations

from rich.table import Table
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widgets import Label, Static

from tui.screens.base import AppModal
from tui.widgets.footer import AppFooter


class HelpScreen(AppModal[None]):
    BINDINGS = [Binding("escape,f1,q", "dismiss", "Close", tooltip="Close the help")]

    def __init__(self, groups: list[tuple[str, list[tuple[str, str]]]]) -> None:
        super().__init__(classes="dialog")
        self.groups = groups

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="dialog-box help-box"):
            yield Label("Keys", classes="dialog-title")
            for group, rows in self.groups:
                yield Label(group, classes="help-group")
                table = Table.grid(padding=(0, 2), expand=False)
                table.add_column(style="bold", no_wrap=True, min_width=14)
                table.add_column()
                for key, description in rows:
                    table.add_row(key, description)
                yield Static(table, classes="help-keys")
            yield Label("Esc closes this help.", classes="dialog-hint")
        yield AppFooter()
