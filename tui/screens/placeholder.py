"""Screens whose capability is still to come."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Center, Middle
from textual.screen import Screen
from textual.widgets import Footer, Static


class ComingScreen(Screen[None]):
    """A screen that says plainly what is not there yet."""

    def __init__(self, title: str, text: str) -> None:
        super().__init__()
        self.title_text = title
        self.text = text

    def compose(self) -> ComposeResult:
        with Middle(), Center():
            yield Static(f"[b]{self.title_text}[/b]\n\n{self.text}", classes="coming")
        yield Footer()


def image_screen() -> ComingScreen:
    return ComingScreen(
        "Image",
        "Stable Diffusion generation is not in this version yet.\nF2 goes back to Chat.",
    )


def monitor_screen() -> ComingScreen:
    return ComingScreen(
        "Monitor",
        "The system monitor is not in this version yet;\n"
        "`llm-pessoal status` prints the machine's figures.\nF2 goes back to Chat.",
    )
