"""Small modal dialogs: confirm, ask for a line of text, pick one of many, chat options.

Each shows its own keys in its own footer (not those of the screen below), and each
fits an 80x24 terminal."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal, Vertical, VerticalScroll
from textual.widgets import Button, Input, Label, OptionList, TextArea
from textual.widgets.button import ButtonVariant
from textual.widgets.option_list import Option

from engines.chat_options import (
    BY_KEY,
    SPECS,
    OptionError,
    OptionSpec,
    apply,
    model_parameters,
    option_text,
)
from engines.chat_types import ChatOptions
from tui.screens.base import AppModal
from tui.text import shown, visible
from tui.widgets.footer import AppFooter

if TYPE_CHECKING:
    from engines.ollama_client import ChatEngine


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
    """The conversation's options: every generation option Ollama takes, checked by the
    rules of :mod:`engines.chat_options` (the CLI's ``--option`` uses the same). An empty
    field keeps the model's own value, shown beside it once ``/api/show`` answers. Bad
    values are named with what is allowed, and the dialog stays open with everything as
    typed. It scrolls where the terminal is short; Ctrl+S saves from any field."""

    BINDINGS = [
        Binding("ctrl+s", "save", "Save", tooltip="Save the options", id="options.save"),
        Binding("escape", "dismiss(None)", "Cancel", tooltip="Close without a change"),
    ]

    def __init__(
        self,
        options: ChatOptions,
        model: str = "",
        *,
        title: str = "Conversation options",
        engine: ChatEngine | None = None,
    ) -> None:
        super().__init__(classes="dialog")
        self.options = options
        self.model = model
        self.engine = engine
        """Whom to ask for the model's own values (its server's engine); the app's first."""
        self.title_text = title
        self.model_defaults: dict[str, str] = {}

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog-box options-box"):
            title = self.title_text + (f" · {self.model}" if self.model else "")
            yield Label(shown(title), classes="dialog-title")
            yield from self._fields()
            yield Label("", id="dialog-error", classes="dialog-error")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Save (^s)", variant="primary", id="save")
                yield Button("Cancel (esc)", id="cancel")
            yield Label(
                "Ctrl+S saves · Esc cancels · Tab moves · empty: the model's own",
                classes="dialog-hint",
            )
        yield AppFooter()

    def _fields(self) -> ComposeResult:
        """The fields, in a part that scrolls: the error and the buttons stay in sight."""
        with VerticalScroll(id="options-fields"):
            yield Label("System prompt")
            yield TextArea(visible(self.options.system_prompt), id="system_prompt", soft_wrap=True)
            with Grid(id="option-grid"):
                for spec in SPECS:
                    if spec.kind in ("stop", "text"):
                        continue
                    yield Label(self._hint(spec), id=f"label-{spec.key}")
                    yield Input(
                        visible(option_text(self.options, spec)),
                        id=spec.key,
                        placeholder=self._placeholder(spec),
                    )
            yield Label(self._hint(BY_KEY["stop"]), id="label-stop")
            yield TextArea(
                visible(option_text(self.options, BY_KEY["stop"])), id="stop", soft_wrap=False
            )

    def _placeholder(self, spec: OptionSpec) -> str:
        """What an empty field means."""
        if spec.kind == "duration":
            return f"{self.lp.settings.ollama.keep_alive} (config)"
        if spec.kind == "format":
            return "free text"
        return "model's" if spec.optional or spec.kind == "think" else ""

    def on_mount(self) -> None:
        if self.model:
            self.read_model_defaults()

    @work(exclusive=True, group="model-defaults", exit_on_error=False)
    async def read_model_defaults(self) -> None:
        """The model's own parameters (its Modelfile), shown beside each option."""
        from engines.chat_types import ChatError

        try:
            details = await (self.engine or self.lp.chat).show(self.model)
        except ChatError:
            return
        self.model_defaults = model_parameters(details.parameters)
        if details.context_length:
            self.model_defaults.setdefault("num_ctx", f"{details.context_length} max")
        for spec in SPECS:
            for label in self.query(f"#label-{spec.key}").results(Label):
                label.update(self._hint(spec))

    def _hint(self, spec: OptionSpec) -> Text:
        # one line, whatever the model's values: the layout never moves when they come
        text = Text(spec.label, no_wrap=True, overflow="ellipsis")
        if spec.limit is not None:
            text.append(f" ({spec.limit.span('–')})", style="dim")
        elif spec.kind == "stop":
            text.append(" one a line", style="dim")
        elif spec.kind == "think":
            text.append(" on/off/low/medium/high", style="dim")
        elif spec.kind == "format":
            text.append(" json or a schema file", style="dim")
        elif spec.kind == "duration":
            text.append(" 5m, 1h, 0", style="dim")
        own = self.model_defaults.get(spec.key)
        if own:
            own = own.replace("\n", " · ")
            text.append(f"  model: {visible(own)[:40]}", style="italic dim")
        return text

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "save":
            self.action_save()
        else:
            self.dismiss(None)

    def on_input_submitted(self) -> None:
        self.action_save()

    def action_save(self) -> None:
        values: dict[str, str] = {"system": self.query_one("#system_prompt", TextArea).text}
        values["stop"] = self.query_one("#stop", TextArea).text
        for spec in SPECS:
            if spec.kind not in ("stop", "text"):
                values[spec.key] = self.query_one(f"#{spec.key}", Input).value
        if values["format"].strip() == self.options.format_file and self.options.format_file:
            values.pop("format")  # the schema read before: kept as it was read
        base = self.lp.settings.source.parent if self.lp.settings.source else None
        try:
            options = apply(self.options, values, base=base)
        except OptionError as exc:
            key, _, why = str(exc).partition(": ")
            named = BY_KEY.get(key)
            label = named.label if named else key
            self.query_one("#dialog-error", Label).update(shown(f"{label}: {why}."))
            with contextlib.suppress(Exception):
                self.query_one(f"#{'system_prompt' if key == 'system' else key}").focus()
            return
        self.dismiss(options)
