"""Recent images, newest first: browse, view larger, copy the path, delete, reuse,
make variations, start the next image from one."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from rich.text import Text
from textual.binding import Binding
from textual.message import Message
from textual.widgets import OptionList
from textual.widgets.option_list import Option

from engines.store import StoredImage
from tui.text import visible

Action = Literal["view", "copy", "delete", "reuse", "variations", "init", "ask"]


class Gallery(OptionList):
    """The image index as a list; the highlighted image is shown beside it."""

    BINDINGS = [
        Binding("enter", "act('view')", "View", tooltip="View the image larger", id="gallery.view"),
        Binding(
            "c", "act('copy')", "Copy path", tooltip="Copy the image's file path", id="gallery.copy"
        ),
        Binding(
            "u",
            "act('reuse')",
            "Reuse",
            tooltip="Fill the form from the image's settings",
            id="gallery.reuse",
        ),
        Binding(
            "v",
            "act('variations')",
            "Variations",
            tooltip="Variations: the same prompt from this image, new seeds, low strength",
            id="gallery.variations",
        ),
        Binding(
            "i",
            "act('init')",
            "Start from",
            tooltip="Start the next image from this one (img2img)",
            id="gallery.init",
        ),
        Binding(
            "a",
            "act('ask')",
            "Ask about it",
            show=False,
            tooltip="Ask about this image: a new chat with it attached (for a vision model)",
            id="gallery.ask",
        ),
        Binding(
            "d,delete",
            "act('delete')",
            "Delete",
            tooltip="Delete the image (asks first)",
            id="gallery.delete",
        ),
    ]

    @dataclass
    class Acted(Message):
        action: Action
        image: StoredImage

    @dataclass
    class Highlighted(Message):
        image: StoredImage

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.items: list[StoredImage] = []

    def show(self, images: list[StoredImage]) -> None:
        current = self.current()
        self.items = images
        self.clear_options()
        self.add_options(Option(self._label(i), id=str(i.id)) for i in images)
        if images:
            ids = [i.id for i in images]
            self.highlighted = ids.index(current.id) if current and current.id in ids else 0

    @staticmethod
    def _label(image: StoredImage) -> Text:
        p = image.parameters
        when = datetime.fromtimestamp(image.created_at).strftime("%d %b %H:%M")
        label = Text(
            visible(p.prompt.splitlines()[0] if p.prompt else ""), no_wrap=True, overflow="ellipsis"
        )
        label.append(f"\n{when} · {p.width}×{p.height} · seed {p.seed}", style="dim")
        return label

    def current(self) -> StoredImage | None:
        if self.highlighted is None or not 0 <= self.highlighted < len(self.items):
            return None
        return self.items[self.highlighted]

    def action_act(self, action: Action) -> None:
        if (image := self.current()) is not None:
            self.post_message(self.Acted(action, image))

    def _on_option_list_option_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        event.stop()
        if (image := self.current()) is not None:
            self.post_message(self.Highlighted(image))

    def _on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        self.action_act("view")
