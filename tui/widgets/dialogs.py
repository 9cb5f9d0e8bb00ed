"""Small modal dialogs: confirm, ask for a line of text, pick one of many, chat options.

Each shows its own keys in its own footer (not those of the screen below), and each
fits an 80x24 terminal."""

from __future__ import annotations

from dataclasses import fields

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal, Vertical, VerticalScroll
from textual.widgets import Button, Input, Label, OptionList, TextArea
from textual.widgets.button import ButtonVariant
from textual.widgets.option_list import Option

from engines.chat_types import ChatOptions
from engines.limits import CHAT_CONTEXT_LENGTH, CHAT_MAX_TOKENS, CHAT_SEED, CHAT_TEMPERATURE
from tui.screens.base import AppModal
from tui.text import shown, visible
from tui.widgets.footer import AppFooter


class ConfirmDialog(AppModal[bool]):
    """Yes or no. Cancel has the focus, so a stray Enter changes nothing; Y and N
    answer from anywhere, and a cancel says what was kept."""

    BINDINGS = [
        Binding("y", "answer(True)", "Yes", tooltip="Answer yes"),
        Binding("n", "answer(False)", "No", tooltip="Answer no: nothing changes"),
        Binding("escape", "answer(False)", "Cancel", tooltip="Cancel: nothing changes"),
    ]

    def __init__(
        self,
        question: str,
        yes: str = "Delete",
        variant: ButtonVariant = "error",
        *,
        kept: str = "Cancelled: nothing was changed.",
    ) -> None:
        super().__init__(classes="dialog")
        self.question = question
        self.yes = yes
        self.variant: ButtonVariant = variant
        self.kept = kept

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog-box"):
            yield Label(shown(self.question), classes="dialog-title")
            with Horizontal(classes="dialog-buttons"):
                yield Button(f"{self.yes} (y)", variant=self.variant, id="yes")
                yield Button("Cancel (n)", id="no")
        yield AppFooter()

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.action_answer(event.button.id == "yes")

    def action_answer(self, yes: bool) -> None:
        if not yes and self.kept:
            self.app.notify(self.kept, title="Cancelled", markup=False)
        self.dismiss(yes)


class TextDialog(AppModal[str | None]):
    """Ask for one line of text (a new title, say); empty text is refused."""

    BINDINGS = [
        Binding("enter", "save", "Save", tooltip="Save the text"),
        Binding("escape", "dismiss(None)", "Cancel", tooltip="Close without a change"),
    ]

    def __init__(self, title: str, value: str = "") -> None:
        super().__init__(classes="dialog")
        self.title_text = title
        self.value = value

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog-box"):
            yield Label(self.title_text, classes="dialog-title")
            yield Input(visible(self.value), id="text")
            yield Label("", id="dialog-error", classes="dialog-error")
            yield Label("Enter saves · Esc cancels", classes="dialog-hint")
        yield AppFooter()

    def on_input_submitted(self) -> None:
        self.action_save()

    def action_save(self) -> None:
        text = self.query_one("#text", Input).value.strip()
        if not text:
            self.query_one("#dialog-error", Label).update("It cannot be empty.")
            return
        self.dismiss(text)


class PickDialog(AppModal[int | None]):
    """Choose one of several items; returns its index. The first nine are numbered, and
    their numbers pick them."""

    BINDINGS = [
        Binding("escape", "dismiss(None)", "Cancel", tooltip="Close without picking"),
        *(
            Binding(str(n), f"pick({n - 1})", f"Pick {n}", show=False, tooltip=f"Pick item {n}")
            for n in range(1, 10)
        ),
    ]

    def __init__(self, title: str, items: list[str]) -> None:
        super().__init__(classes="dialog")
        self.title_text = title
        self.items = items

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog-box"):
            yield Label(shown(self.title_text), classes="dialog-title")
            yield OptionList(
                *(
                    Option(shown(f"{n}. {item}" if n < 10 else f"   {item}"))
                    for n, item in enumerate(self.items, start=1)
                ),
                id="pick",
            )
            yield Label("Its number or Enter picks an item · Esc cancels", classes="dialog-hint")
        yield AppFooter()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "pick" and parameters:
            index = parameters[0]
            return isinstance(index, int) and index < len(self.items)
        return True

    def action_pick(self, index: int) -> None:
        if 0 <= index < len(self.items):
            self.dismiss(index)

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option_index)


class OptionsDialog(AppModal[ChatOptions | None]):
    """The conversation's options. Bad values are named with what is allowed, and the
    dialog stays open with everything as typed. It scrolls where the terminal is short;
    Ctrl+S saves from any field."""

    BINDINGS = [
        Binding("ctrl+s", "save", "Save", tooltip="Save the options", id="options.save"),
        Binding("escape", "dismiss(None)", "Cancel", tooltip="Close without a change"),
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
        with VerticalScroll(classes="dialog-box options-box"):
            yield Label("Conversation options", classes="dialog-title")
            yield Label("System prompt")
            yield TextArea(visible(self.options.system_prompt), id="system_prompt", soft_wrap=True)
            with Grid(id="option-grid"):
                for name in self.LIMITS:
                    yield Label(self.HINTS[name])
                    yield Input(str(getattr(self.options, name)), id=name)
            yield Label("", id="dialog-error", classes="dialog-error")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Save (^s)", variant="primary", id="save")
                yield Button("Cancel (esc)", id="cancel")
            yield Label(
                "Ctrl+S saves · Esc cancels · Tab moves between fields", classes="dialog-hint"
            )
        yield AppFooter()

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
