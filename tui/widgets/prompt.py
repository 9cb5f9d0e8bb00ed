"""The multi-line prompt: Enter sends, Ctrl+J (or Shift+Enter) starts a new line."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from textual import events
from textual.binding import Binding
from textual.message import Message
from textual.widgets import TextArea
from textual.widgets.text_area import EditResult


class PromptInput(TextArea):
    """Where the user writes. Sending does not clear it: the screen does, once the
    message is accepted, so a refused message stays where it was."""

    # Enter is handled in ``_on_key``, in order with the typed characters: as a
    # (priority) binding it could overtake characters still queued for the widget,
    # and send a message without its last letters. The binding is here for the footer.
    BINDINGS = [
        Binding("enter", "submit", "Send", tooltip="Send the message", id="prompt.send"),
        Binding(
            "ctrl+j,shift+enter",
            "newline",
            "Newline",
            key_display="^j",
            tooltip="New line in the message (Shift+Enter where the terminal tells it apart)",
            id="prompt.newline",
        ),
        Binding(
            "up",
            "history(1)",
            "Earlier prompt",
            show=False,
            tooltip="In an empty prompt: the earlier prompts, this conversation's first",
            id="prompt.history_back",
        ),
        Binding(
            "down",
            "history(-1)",
            "Later prompt",
            show=False,
            tooltip="While walking the earlier prompts: back towards the newest",
            id="prompt.history_forward",
        ),
        Binding(
            "tab",
            "complete_path",
            "Complete @path",
            show=False,
            tooltip="After @ and part of a path: complete it (the file goes with the message)",
            id="prompt.complete_path",
        ),
        Binding(
            "ctrl+r",
            "search_history",
            "Search prompts",
            show=False,
            tooltip="Search the earlier prompts, as in a shell",
            id="prompt.history_search",
        ),
    ]

    @dataclass
    class SearchRequested(Message):
        """Ctrl+R: the screen offers the earlier prompts to search."""

    @dataclass
    class Submitted(Message):
        prompt: PromptInput
        text: str

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(
            id=id,
            soft_wrap=True,
            show_line_numbers=False,
            tab_behavior="focus",
            highlight_cursor_line=False,
            placeholder="Message (Enter to send, Ctrl+J for a new line, ↑ earlier prompts)",
        )
        self.recall: Callable[[], list[str]] | None = None
        """Earlier prompts, newest first (set by the screen)."""
        self._walk: list[str] = []
        self._walk_at = -1  # -1: not walking; else the index of the prompt shown

    def action_history(self, step: int) -> None:
        """Up and Down: in an empty prompt (or one showing a recalled prompt unchanged),
        walk the earlier prompts; elsewhere, move the cursor as usual."""
        walking = self._walk_at >= 0 and self.text == self._walk[self._walk_at]
        if not walking and (self.text or step < 0):
            (self.action_cursor_up if step > 0 else self.action_cursor_down)()
            return
        if not walking:
            self._walk = self.recall() if self.recall else []
            self._walk_at = -1
        at = self._walk_at + step
        if at >= len(self._walk):
            return  # the oldest: stay there
        self._walk_at = at
        self.text = self._walk[at] if at >= 0 else ""
        self.move_cursor(self.document.end)

    def action_complete_path(self) -> None:
        """Tab after ``@part``: the longest completion the files allow; elsewhere Tab
        moves the focus on, as usual."""
        from os.path import commonprefix

        from textual.actions import SkipAction

        from engines.attachments import complete_path

        row, column = self.cursor_location
        before = self.document.get_line(row)[:column]
        word = before.rsplit(None, 1)[-1] if before.strip() else ""
        if not word.startswith("@") or before.endswith(" "):
            raise SkipAction
        found = complete_path(word[1:])
        if not found:
            self.app.bell()
            return
        common = commonprefix(found)  # noqa: RUF071 - what the names share, as typed
        if len(common) > len(word) - 1:
            self.insert(common[len(word) - 1 :])
        elif len(found) > 1:
            self.notify("  ".join(found[:12]), title="@ completions", markup=False)

    def action_search_history(self) -> None:
        self.post_message(self.SearchRequested())

    def clear(self) -> EditResult:
        self._walk_at = -1
        return super().clear()

    async def _on_key(self, event: events.Key) -> None:
        keymap: dict[str, str] = getattr(self.app, "keymap", {})
        send = keymap.get("prompt.send", "enter").split(",")
        if event.key == "enter" and "enter" in send:
            event.stop()
            event.prevent_default()
            self.action_submit()
            return
        if event.key.startswith("alt+"):
            # a terminal sends Alt+R as ESC r: the key has a character, which a text area
            # would type; it is the screen's binding (regenerate, edit...) instead
            event.prevent_default()
            return
        await super()._on_key(event)

    def action_submit(self) -> None:
        self.post_message(self.Submitted(self, self.text))

    def action_newline(self) -> None:
        self.insert("\n")
