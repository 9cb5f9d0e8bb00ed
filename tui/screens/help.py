"""Every key of the app, read from the bindings themselves so it is never out of date."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Label, Static

from rich.table import Table


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,f1,q", "dismiss", "Close")]

    def __init__(self, groups: list[tuple[str, list[tuple[str, str]]]]) -> None:
        super().__init__(classes="dialog")
        self.groups = groups

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="dialog-box help-box"):
            yield Label("Keys", classes="dialog-title")
            table = Table.grid(padding=(0, 2), expand=False)
            table.add_column(style="bold cyan", no_wrap=True)
            table.add_column()
            for group, rows in self.groups:
                table.add_row(f"[u]{group}[/u]", "")
                for key, description in rows:
                    table.add_row(key, description)
                table.add_row("", "")
            yield Static(table)
            yield Label("Esc closes this help.", classes="dim")
