"""The framework's floor: a minimal Textual app, started beside the real one by
``bench/startup.py --floor`` (same Python, same Textual, same terminal).

A Header, a Static holding the marker the bench waits for, a TextArea that has the focus
(as the chat prompt has), and a Footer. Ctrl+Q quits, as in the app.

    .venv/bin/python bench/minimal_app.py
"""

from __future__ import annotations

from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.widgets import Footer, Header, Static, TextArea

MARKER = "minimal-app-first-frame"


class MinimalApp(App[None]):
    BINDINGS = [Binding("ctrl+q", "quit", "Quit", priority=True)]

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(f"llama3.2:latest  {MARKER}")
        yield TextArea(id="prompt")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(TextArea).focus()


if __name__ == "__main__":
    MinimalApp().run()
