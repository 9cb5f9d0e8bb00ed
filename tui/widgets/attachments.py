"""What a prompt carries besides its text, on screen: the files waiting to be sent (a line
above the prompt), the dialog that picks one (a path field with completion), and the
previews of a prompt's images in the conversation, drawn the way the Image screen draws
its pictures."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.suggester import Suggester
from textual.widgets import Input, Label, Static

from engines.attachments import Attachment, complete_path
from tui.screens.base import AppModal, app_of
from tui.text import shown, visible
from tui.widgets.footer import AppFooter
from tui.widgets.picture import Picture

PREVIEW_ROWS = 8
PREVIEW_COLUMNS = 24


class PathSuggester(Suggester):
    """Completes a path as it is typed (→ or End accepts): the first file or folder that
    starts with what is typed."""

    def __init__(self, base: Path | None = None) -> None:
        super().__init__(use_cache=False, case_sensitive=True)
        self.base = base

    async def get_suggestion(self, value: str) -> str | None:
        found = complete_path(value, self.base, limit=1)
        return found[0] if found else None


class AttachDialog(AppModal[str | None]):
    """Ask for the path of an image (for a vision model) or a text file (as context).
    Completion shows as grey text (→ accepts it); the matches are listed below. The path
    is checked by the screen: a refused one comes back here with why, as typed."""

    BINDINGS = [
        Binding("enter", "attach", "Attach", tooltip="Attach the file", id="attach.attach"),
        Binding("escape", "dismiss(None)", "Cancel", tooltip="Close without attaching"),
    ]

    def __init__(self, value: str = "", error: str = "") -> None:
        super().__init__(classes="dialog")
        self.value = value
        self.error = error

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog-box"):
            yield Label("Attach an image or a text file", classes="dialog-title")
            yield Input(
                visible(self.value),
                id="path",
                placeholder="path of the file (→ completes)",
                suggester=PathSuggester(Path.cwd()),
            )
            yield Static("", id="matches", classes="dialog-hint")
            yield Label(shown(self.error), id="dialog-error", classes="dialog-error")
            yield Label("Enter attaches · → completes · Esc cancels", classes="dialog-hint")
            yield Label(
                "Images go to vision models; text files go in as context.",
                classes="dialog-hint",
            )
        yield AppFooter()

    def on_mount(self) -> None:
        self.query_one("#path", Input).focus()
        self._list(self.value)

    def on_input_changed(self, event: Input.Changed) -> None:
        self._list(event.value)

    def _list(self, value: str) -> None:
        found = complete_path(value, Path.cwd(), limit=9)
        text = "  ".join(visible(f) for f in found[:8]) + ("  …" if len(found) > 8 else "")
        self.query_one("#matches", Static).update(Text(text or " ", no_wrap=True))

    def on_input_submitted(self) -> None:
        self.action_attach()

    def action_attach(self) -> None:
        value = self.query_one("#path", Input).value
        if not value.strip():
            self.query_one("#dialog-error", Label).update("Type the path of a file.")
            return
        self.dismiss(value)


class PendingAttachments(Static):
    """The files that go with the next message, above the prompt (hidden when none)."""

    DEFAULT_CSS = """
    PendingAttachments {
        height: auto;
        padding: 0 1;
        color: $text-accent;
    }
    """

    @dataclass
    class Changed(Message):
        attachments: list[Attachment]

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__("", id=id)
        self.items: list[Attachment] = []

    def on_mount(self) -> None:
        self.display = False

    def add(self, attachment: Attachment) -> None:
        if any(a.path == attachment.path and a.kind == attachment.kind for a in self.items):
            return
        self.items.append(attachment)
        self._show()

    def clear(self) -> None:
        self.items.clear()
        self._show()

    @property
    def images(self) -> list[Attachment]:
        return [a for a in self.items if a.kind == "image"]

    @property
    def files(self) -> list[Attachment]:
        return [a for a in self.items if a.kind == "file"]

    def _show(self) -> None:
        self.display = bool(self.items)
        text = Text("📎 ", style="bold")
        for n, item in enumerate(self.items):
            if n:
                text.append(" · ", style="dim")
            text.append(visible(item.label()))
        text.append("   Alt+X removes them", style="dim")
        self.update(text)
        self.post_message(self.Changed(list(self.items)))


class ImagePreviews(Horizontal):
    """A prompt's images, side by side, each fitted in a small box; loaded in a thread."""

    DEFAULT_CSS = f"""
    ImagePreviews {{
        height: {PREVIEW_ROWS};
        width: 1fr;
    }}
    ImagePreviews > Picture {{
        width: {PREVIEW_COLUMNS};
        height: {PREVIEW_ROWS};
        margin-right: 1;
    }}
    """

    def __init__(self, images: tuple[str, ...]) -> None:
        super().__init__(classes="image-previews")
        self.images = images

    def compose(self) -> ComposeResult:
        renderer = app_of(self).image_renderer if hasattr(self.app, "image_renderer") else "off"
        for image in self.images:
            picture = Picture(renderer, placeholder=Path(image).name)
            picture.tooltip = visible(image)
            yield picture

    def on_mount(self) -> None:
        self.load()

    @work(thread=True, exclusive=True, exit_on_error=False)
    def load(self) -> None:
        from PIL import Image

        pictures = list(self.query(Picture).results(Picture))
        for picture, path in zip(pictures, self.images, strict=False):
            try:
                with Image.open(path) as opened:
                    opened.thumbnail((PREVIEW_COLUMNS * 8, PREVIEW_ROWS * 16))
                    small = opened.convert("RGB")
            except OSError:
                continue  # the placeholder (its name) stays
            self.app.call_from_thread(picture.show, small)
