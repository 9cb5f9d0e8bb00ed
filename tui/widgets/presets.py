"""The presets dialog: pick one for a new conversation, save the current conversation as
one, edit, rename or delete one, export them all to TOML files or import a folder of them."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import Label, OptionList
from textual.widgets.option_list import Option

from engines.chat_options import defaults_from_settings
from engines.chat_types import ChatOptions
from engines.presets import Preset, PresetError, Presets
from engines.store import StoreError
from tui.screens.base import AppModal
from tui.text import visible
from tui.widgets.dialogs import ConfirmDialog, OptionsDialog, TextDialog
from tui.widgets.footer import AppFooter


class PresetsDialog(AppModal[Preset | None]):
    """The presets; Enter starts a new conversation with the highlighted one."""

    BINDINGS = [
        Binding("enter", "use", "New chat", tooltip="Start a new conversation with the preset"),
        Binding(
            "s",
            "save_current",
            "Save current",
            tooltip="Save the current conversation's model, system prompt and options as a preset",
            id="presets.save",
        ),
        Binding("e", "edit", "Edit", tooltip="Edit the preset's options", id="presets.edit"),
        Binding("r", "rename", "Rename", tooltip="Rename the preset", id="presets.rename"),
        Binding("d,delete", "delete", "Delete", tooltip="Delete the preset", id="presets.delete"),
        Binding(
            "x",
            "export",
            "Export",
            tooltip="Write every preset to a TOML file in [paths] presets",
            id="presets.export",
        ),
        Binding(
            "i",
            "import_folder",
            "Import",
            tooltip="Read the TOML files of [paths] presets (same names are replaced)",
            id="presets.import",
        ),
        Binding("escape", "dismiss(None)", "Close", tooltip="Close without a change"),
    ]

    def __init__(self, current: tuple[ChatOptions, str] | None = None) -> None:
        super().__init__(classes="dialog")
        self.current = current
        self.items: list[Preset] = []

    @property
    def presets(self) -> Presets:
        return Presets(self.lp.store, defaults_from_settings(self.lp.settings))

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog-box"):
            yield Label("Presets", classes="dialog-title")
            yield OptionList(id="preset-list")
            yield Label(
                "Enter starts a new chat with it; its other keys are below.", classes="dialog-hint"
            )
        yield AppFooter()

    def on_mount(self) -> None:
        self._refresh()
        self.query_one(OptionList).focus()

    def _refresh(self, select: str | None = None) -> None:
        try:
            self.items = self.presets.all()
        except StoreError as exc:
            self.notify(str(exc), title="Presets", severity="error")
            self.items = []
        listing = self.query_one(OptionList)
        listing.clear_options()
        for preset in self.items:
            label = Text(visible(preset.name), style="bold", no_wrap=True, overflow="ellipsis")
            if preset.model:
                label.append(f"  {visible(preset.model)}", style="dim")
            first = (preset.options.system_prompt.splitlines() or [""])[0]
            label.append(f"\n{visible(first)[:66]}", style="dim")
            listing.add_option(Option(label))
        if self.items:
            names = [p.name for p in self.items]
            listing.highlighted = names.index(select) if select in names else 0

    def _highlighted(self) -> Preset | None:
        index = self.query_one(OptionList).highlighted
        if index is None or not 0 <= index < len(self.items):
            self.notify("There is no preset yet: s saves this conversation as one.")
            return None
        return self.items[index]

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        self.action_use()

    def action_use(self) -> None:
        preset = self._highlighted()
        if preset is not None:
            self.dismiss(preset)

    def _fail(self, exc: Exception, what: str) -> None:
        self.notify(visible(str(exc)), title=f"Not {what}", severity="error", markup=False)

    def action_save_current(self) -> None:
        if self.current is None:
            self.notify("Open a conversation first.", severity="warning")
            return
        options, model = self.current

        def named(name: str | None) -> None:
            if name is None:
                return
            try:
                saved = self.presets.save(name, options, model)
            except (PresetError, StoreError) as exc:
                self._fail(exc, "saved")
                return
            self._refresh(saved.name)
            self.notify(f"Saved the preset “{visible(saved.name)}”.", markup=False)

        self.app.push_screen(TextDialog("Name of the new preset"), named)

    def action_edit(self) -> None:
        preset = self._highlighted()
        if preset is None:
            return

        def edited(options: ChatOptions | None) -> None:
            if options is None:
                return
            try:
                self.presets.save(preset.name, options, preset.model)
            except (PresetError, StoreError) as exc:
                self._fail(exc, "saved")
                return
            self._refresh(preset.name)
            self.notify(f"Saved the preset “{visible(preset.name)}”.", markup=False)

        dialog = OptionsDialog(preset.options, preset.model, title=f"Preset {preset.name}")
        self.app.push_screen(dialog, edited)

    def action_rename(self) -> None:
        preset = self._highlighted()
        if preset is None:
            return

        def renamed(name: str | None) -> None:
            if name is None:
                return
            try:
                done = self.presets.rename(preset.name, name)
            except (PresetError, StoreError) as exc:
                self._fail(exc, "renamed")
                return
            self._refresh(done.name)

        self.app.push_screen(TextDialog("Rename preset", preset.name), renamed)

    def action_delete(self) -> None:
        preset = self._highlighted()
        if preset is None:
            return

        def confirmed(yes: bool | None) -> None:
            if not yes:
                return
            try:
                self.presets.delete(preset.name)
            except (PresetError, StoreError) as exc:
                self._fail(exc, "deleted")
                return
            self._refresh()
            self.notify(f"Deleted the preset “{visible(preset.name)}”.", markup=False)

        self.app.push_screen(ConfirmDialog(f"Delete the preset “{preset.name}”?"), confirmed)

    def action_export(self) -> None:
        folder = self.lp.settings.paths.presets
        try:
            written = self.presets.export(folder)
        except (OSError, StoreError) as exc:
            self._fail(exc, "exported")
            return
        self.notify(f"Exported {len(written)} presets to {visible(str(folder))}.", markup=False)

    def action_import_folder(self) -> None:
        folder = self.lp.settings.paths.presets
        try:
            names, refused = self.presets.import_folder(folder)
        except (PresetError, OSError, StoreError) as exc:
            self._fail(exc, "imported")
            return
        self._refresh()
        message = f"Imported {len(names)} presets from {folder}."
        if refused:
            message += " Refused: " + "; ".join(refused)
        self.notify(
            visible(message),
            title="Imported",
            severity="warning" if refused else "information",
            markup=False,
            timeout=12 if refused else 5,
        )
