"""Small modal dialogs: confirm, ask for a line of text, pick one of many, chat options."""

from __future__ import annotations

from dataclasses import fields

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, OptionList, TextArea
from textual.widgets.button import ButtonVariant
from textual.widgets.option_list import Option

from engines.chat_types import ChatOptions
from engines.limits import CHAT_CONTEXT_LENGTH, CHAT_MAX_TOKENS, CHAT_SEED, CHAT_TEMPERATURE
from tui.text import shown, visible


class ConfirmDialog(ModalScreen[bool]):
    """Yes or no."""

    BINDINGS = [
        Binding("escape", "dismiss(False)", "Cancel"),
        Binding("y", "dismiss(True)", "Yes", show=False),
        Binding("n", "dismiss(False)", "No", show=False),
    ]

    def __init__(
        self, question: str, yes: str = "Delete", variant: ButtonVariant = "error"
    ) -> None:
        super().__init__(classes="dialog")
        self.question = question
        self.yes = yes
        self.variant: ButtonVariant = variant

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog-box"):
            yield Label(shown(self.question), classes="dialog-title")
            with Horizontal(classes="dialog-buttons"):
                yield Button(self.yes, variant=self.variant, id="yes")
                yield Button("Cancel", id="no")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")


class TextDialog(ModalScreen[str | None]):
    """Ask for one line of text (a new title, say); empty text is refused."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel")]

    def __init__(self, title: str, value: str = "") -> None:
        super().__init__(classes="dialog")
        self.title_text = title
        self.value = value

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog-box"):
            yield Label(self.title_text, classes="dialog-title")
            yield Input(visible(self.value), id="text")
            yield Label("", id="dialog-error", classes="dialog-error")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        text = event.value.strip()
        if not text:
            self.query_one("#dialog-error", Label).update("It cannot be empty.")
            return
        self.dismiss(text)


class PickDialog(ModalScreen[int | None]):
    """Choose one of several items; returns its index."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel")]

    def __init__(self, title: str, items: list[str]) -> None:
        super().__init__(classes="dialog")
        self.title_text = title
        self.items = items

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog-box"):
            yield Label(self.title_text, classes="dialog-title")
            yield OptionList(*(Option(shown(i)) for i in self.items), id="pick")

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option_index)


class OptionsDialog(ModalScreen[ChatOptions | None]):
    """The conversation's options. Bad values are named with what is allowed, and the
    dialog stays open with everything as typed."""

    BINDINGS = [
        Binding("escape", "dismiss(None)", "Cancel"),
        Binding("ctrl+s", "save", "Save"),
    ]

    LIMITS = {
        "temperature": (float, CHAT_TEMPERATURE),
        "context_length": (int, CHAT_CONTEXT_LENGTH),
        "max_tokens": (int, CHAT_MAX_TOKENS),
        "seed": (int, CHAT_SEED),
    }
    HINTS = {
        "temperature": f"Temperature ({CHAT_TEMPERATURE.span('–')})",
        "context_length": "Context length in tokens (0: the model's own)",
        "max_tokens": f"Max tokens per reply ({CHAT_MAX_TOKENS.span('–')})",
        "seed": "Seed (-1: random each reply)",
    }

    def __init__(self, options: ChatOptions) -> None:
        super().__init__(classes="dialog")
        self.options = options

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog-box options-box"):
            yield Label("Conversation options", classes="dialog-title")
            yield Label("System prompt")
            yield TextArea(visible(self.options.system_prompt), id="system_prompt", soft_wrap=True)
            with Grid(id="option-grid"):
                for name in self.LIMITS:
                    yield Label(self.HINTS[name])
                    yield Input(str(getattr(self.options, name)), id=name)
            yield Label("", id="dialog-error", classes="dialog-error")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Save", variant="primary", id="save")
                yield Button("Cancel", id="cancel")
            yield Label(
                "Ctrl+S saves · Esc cancels · Tab moves between fields", classes="dialog-hint"
            )

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "save":
            self.action_save()
        else:
            self.dismiss(None)

    def on_input_submitted(self) -> None:
        self.action_save()

    def action_save(self) -> None:
        values: dict[str, object] = {
            "system_prompt": self.query_one("#system_prompt", TextArea).text
        }
        for name, (kind, limit) in self.LIMITS.items():
            raw = self.query_one(f"#{name}", Input).value.strip()
            try:
                value = kind(raw)
            except ValueError:
                value = None
            if value is None or not limit.allows(value):
                self.query_one("#dialog-error", Label).update(
                    shown(
                        f"{self.HINTS[name].split(' (')[0]}: {raw!r} is not allowed; "
                        f"use {limit.describe()}."
                    )
                )
                self.query_one(f"#{name}", Input).focus()
                return
            values[name] = value
        assert set(values) == {f.name for f in fields(ChatOptions)}
        self.dismiss(ChatOptions(**values))  # type: ignore[arg-type]
