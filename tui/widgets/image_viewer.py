"""One image, as large as the terminal allows, with its parameters."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import Label, Static

from engines.store import StoredImage
from tui.screens.base import AppModal
from tui.text import shown, visible
from tui.widgets.footer import AppFooter
from tui.widgets.picture import Picture, Renderer

if TYPE_CHECKING:
    from PIL import Image


def open_image(path: Path) -> Image.Image:
    """The image at ``path``, read whole (the file is closed when this returns)."""
    from PIL import Image

    with Image.open(path) as im:
        im.load()
        return im.copy()


class ImageViewer(AppModal[None]):
    """One image, as large as the terminal allows, with its parameters."""

    BINDINGS = [
        Binding("escape,enter,q", "dismiss", "Close", tooltip="Close the image"),
        Binding(
            "a",
            "ask",
            "Ask about it",
            tooltip="Ask about this image: a new chat with it attached (for a vision model)",
            id="viewer.ask",
        ),
    ]

    def __init__(self, image: StoredImage, renderer: Renderer) -> None:
        super().__init__(classes="dialog")
        self.image = image
        self.renderer: Renderer = renderer

    def compose(self) -> ComposeResult:
        with Vertical(classes="viewer-box"):
            yield Picture(self.renderer, "", id="viewer-picture")
            yield Static(
                Text(visible(self.image.parameters.to_text()), style="dim"), id="viewer-text"
            )
            yield Label(shown(str(self.image.path)), classes="dialog-hint")
        yield AppFooter()

    def on_mount(self) -> None:
        self.load_picture()

    def action_ask(self) -> None:
        """A new chat about the image, with the vision model (issue 14)."""
        from tui.screens.chat_extras import ask_about

        self.dismiss()
        ask_about(self.app, self.image.path)

    @work(thread=True, exit_on_error=False)
    def load_picture(self) -> None:
        try:
            picture = open_image(self.image.path)
        except OSError as exc:
            self.app.call_from_thread(
                self.notify,
                f"Cannot open {visible(str(self.image.path))}: {exc}",
                severity="error",
                markup=False,
            )
            return
        self.app.call_from_thread(self.query_one(Picture).show, picture)
