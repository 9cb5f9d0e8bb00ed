"""The image prompt a model wrote from the chat, shown to edit before it is queued (issue
14); it fits an 80x24 terminal."""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Input, Label, TextArea

from engines.image_requests import IMAGE_PROMPT_MAX
from tui.screens.base import AppModal
from tui.text import shown, visible
from tui.widgets.footer import AppFooter


@dataclass(frozen=True)
class EditedPrompt:
    prompt: str
    negative_prompt: str


class ImagePromptDialog(AppModal[EditedPrompt | None]):
    """The prompt (and a negative prompt) to edit; Ctrl+S does what the dialog is for
    (queue the image, or put the prompt in the form), Esc leaves everything as it was."""

    BINDINGS = [
        Binding(
            "ctrl+s",
            "accept",
            "OK",
            tooltip="Use the prompt as it is now",
            id="image_prompt.accept",
        ),
        Binding("escape", "dismiss(None)", "Cancel", tooltip="Close: nothing is queued"),
    ]

    def __init__(
        self,
        prompt: str,
        *,
        title: str = "Image prompt",
        note: str = "",
        negative: str = "",
        accept: str = "Queue",
    ) -> None:
        super().__init__(classes="dialog")
        self.prompt = prompt
        self.title_text = title
        self.note = note
        self.negative = negative
        self.accept = accept

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog-box image-prompt-box"):
            yield Label(shown(self.title_text), classes="dialog-title")
            if self.note:
                yield Label(Text(visible(self.note), style="italic"), id="image-prompt-note")
            yield TextArea(visible(self.prompt), id="image-prompt-text", soft_wrap=True)
            yield Label("Negative prompt (optional)")
            yield Input(visible(self.negative), id="image-prompt-negative", compact=True)
            yield Label("", id="dialog-error", classes="dialog-error")
            with Horizontal(classes="dialog-buttons"):
                yield Button(f"{self.accept} (^s)", variant="primary", id="accept", compact=True)
                yield Button("Cancel (esc)", id="cancel", compact=True)
        yield AppFooter()

    def on_mount(self) -> None:
        area = self.query_one(TextArea)
        area.focus()
        area.move_cursor(area.document.end)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "accept":
            self.action_accept()
        else:
            self.dismiss(None)

    def on_input_submitted(self) -> None:
        self.action_accept()

    def action_accept(self) -> None:
        prompt = " ".join(self.query_one(TextArea).text.split())
        error = self.query_one("#dialog-error", Label)
        if not prompt:
            error.update("The prompt is empty: describe the image, or press Esc.")
            return
        if len(prompt) > IMAGE_PROMPT_MAX:
            error.update(
                f"The prompt has {len(prompt):,} characters; an image prompt may have "
                f"{IMAGE_PROMPT_MAX:,} at most: shorten it."
            )
            return
        negative = " ".join(self.query_one(Input).value.split())
        self.dismiss(EditedPrompt(prompt, negative))
