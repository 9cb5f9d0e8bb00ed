"""The multi-line prompt: Enter sends, Ctrl+J (or Shift+Enter) starts a new line."""

from __future__ import annotations

from dataclasses import dataclass

from textual import events
from textual.binding import Binding
from textual.message import Message
from textual.widgets import TextArea


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
    ]

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
            placeholder="Message (Enter to send, Ctrl+J for a new line)",
        )

    async def _on_key(self, event: events.Key) -> None:
        keymap: dict[str, str] = getattr(self.app, "keymap", {})
        send = keymap.get("prompt.send", "enter").split(",")
        if event.key == "enter" and "enter" in send:
            event.stop()
            event.prevent_default()
            self.action_submit()
            return
        await super()._on_key(event)

    def action_submit(self) -> None:
        self.post_message(self.Submitted(self, self.text))

    def action_newline(self) -> None:
        self.insert("\n")
