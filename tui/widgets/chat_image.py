"""An image in the conversation (issue 14): one the chat asked for, drawn as the Image
screen draws pictures. Enter opens the viewer; ``a`` asks about it in a new chat."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import Label

from engines.chat_types import ToolUse
from engines.store import StoredImage
from tui.screens.base import ReportsWorkerFailures
from tui.text import shorten, visible
from tui.widgets.picture import Picture, Renderer

INLINE_SIDE = 384
"""Pixels of the longest side of the copy drawn in the conversation (the file is kept)."""


class ChatImage(ReportsWorkerFailures, Vertical, can_focus=True):
    """An image of the conversation; it posts what the user asks of it."""

    DEFAULT_CSS = """
    ChatImage {
        height: auto;
        width: 1fr;
        margin: 1 0 0 0;
    }
    ChatImage > Picture {
        height: 12;
        width: 1fr;
    }
    ChatImage > .chat-image-caption {
        color: $text-muted;
        width: 1fr;
    }
    ChatImage:focus > .chat-image-caption {
        color: $text;
        text-style: bold;
    }
    """

    BINDINGS = [
        Binding("enter", "open", "View", tooltip="View the image larger", id="chat_image.view"),
        Binding(
            "a",
            "ask",
            "Ask about it",
            tooltip="Ask about this image: a new chat with it attached (for a vision model)",
            id="chat_image.ask",
        ),
    ]

    @dataclass
    class Opened(Message):
        image: StoredImage

    @dataclass
    class AskedAbout(Message):
        image: StoredImage

    def __init__(self, image: StoredImage, renderer: Renderer) -> None:
        super().__init__(classes="chat-image")
        self.image = image
        self.renderer: Renderer = renderer

    def compose(self) -> ComposeResult:
        yield Picture(self.renderer, "loading the image…")
        p = self.image.parameters
        caption = (
            f"🖼 {p.width}×{p.height} · seed {p.seed} · Enter views it, a asks about it · "
            f"{self.image.path.name}"
        )
        yield Label(Text(visible(caption)), classes="chat-image-caption")

    def on_mount(self) -> None:
        self.load()

    @work(thread=True, exit_on_error=False, group="chat-image")
    def load(self) -> None:
        from PIL import Image

        try:
            with Image.open(self.image.path) as im:
                im.thumbnail((INLINE_SIDE, INLINE_SIDE))
                picture = im.convert("RGB")
        except OSError as exc:
            self.app.call_from_thread(self._missing, str(exc))
            return
        self.app.call_from_thread(self.query_one(Picture).show, picture)

    def _missing(self, why: str) -> None:
        self.query_one(Picture).display = False
        self.query_one(Label).update(
            Text(visible(f"🖼 {self.image.path}: cannot be read ({why})"), style="red")
        )

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # one image's keys at a time: the focused one's (the palette lists those only)
        if action in ("open", "ask"):
            return self.screen.focused is self
        return True

    def action_open(self) -> None:
        self.post_message(self.Opened(self.image))

    def action_ask(self) -> None:
        self.post_message(self.AskedAbout(self.image))

    def on_click(self) -> None:
        self.focus()


def tool_text(uses: tuple[ToolUse, ...]) -> Text:
    """A reply's tool calls and what came of them, as the conversation shows them: every
    word from the model or the tool through the display function."""
    text = Text()
    for n, use in enumerate(uses):
        if n:
            text.append("\n")
        text.append("⚙ ", style="bold")
        text.append(visible(use.name), style="bold")
        prompt = use.arguments.get("prompt")
        if isinstance(prompt, str) and prompt:
            text.append(f" “{visible(shorten(prompt, 200))}”", style="italic")
        others = [
            f"{k} {v}" for k, v in use.arguments.items() if k != "prompt" and v not in ("", None)
        ]
        if others:
            text.append(visible(" · " + ", ".join(others)), style="dim")
        text.append("\n  ")
        if use.state == "running":
            text.append("… working: asked for, queued or being made", style="dim italic")
        elif use.state == "done":
            seed = _seed_of(use.result)
            made = Path(use.image).name + (f" (seed {seed})" if seed is not None else "")
            text.append("→ made ", style="green")
            text.append(visible(made), style="green")
        else:
            style = "yellow" if use.state == "refused" else "bold red"
            text.append(f"→ {use.state}: ", style=style)
            text.append(visible(shorten(_why(use.result), 500)), style=style)
    return text


def _seed_of(result: str) -> int | None:
    try:
        data = json.loads(result)
    except ValueError:
        return None
    seed = data.get("seed") if isinstance(data, dict) else None
    return seed if isinstance(seed, int) else None


def _why(result: str) -> str:
    for prefix in ("refused: ", "error: "):
        if result.startswith(prefix):
            return result[len(prefix) :]
    return result
