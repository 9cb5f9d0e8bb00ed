"""The conversation: prompts shown literally, replies as streamed Markdown."""

from __future__ import annotations

import asyncio
import contextlib
import time

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.widgets import Label, Static

from engines.chat_types import ReplyStats
from engines.store import Status, StoredMessage
from tui.text import shorten, shown, visible
from tui.widgets.markdown_text import MarkdownText

PROMPT_SHOWN = 20_000
"""Characters of a prompt drawn on screen; the whole prompt is stored and sent."""


class ReplyWriter:
    """Feeds a streaming reply to its Markdown widget at most every ``interval`` seconds.

    A reply comes a token at a time, far faster than anyone reads; every update of the
    widget costs a parse, a layout and a redraw of the followed view. So tokens are
    gathered and written together: the first one at once, the rest at most
    ``interval`` later, and whatever is left as soon as the reply ends."""

    def __init__(self, markdown: MarkdownText, interval: float = 0.1) -> None:
        self.markdown = markdown
        self.interval = interval
        self._pending: list[str] = []
        self._wake = asyncio.Event()
        self._closing = asyncio.Event()
        self._last = 0.0
        self._task = asyncio.create_task(self._run())

    def write(self, text: str) -> None:
        if text:
            self._pending.append(text)
            self._wake.set()

    async def _flush(self) -> None:
        text = "".join(self._pending)
        self._pending.clear()
        if text:
            self.markdown.append(text)
            await asyncio.sleep(0)  # let the screen draw it
        self._last = time.monotonic()

    async def _run(self) -> None:
        # never cancelled: an append cut in the middle would leave the widget half-updated
        while not self._closing.is_set():
            await self._wake.wait()
            wait = self._last + self.interval - time.monotonic()
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closing.wait(), wait)
            self._wake.clear()
            await self._flush()

    async def close(self) -> None:
        """Write what is left now, and stop."""
        self._closing.set()
        self._wake.set()
        await asyncio.shield(self._task)
        await self._flush()


class PromptTurn(Vertical):
    """Something the user said."""

    def __init__(self, content: str) -> None:
        super().__init__(classes="turn prompt-turn")
        self.content = content

    def compose(self) -> ComposeResult:
        yield Label("You", classes="who")
        yield Static(Text(visible(shorten(self.content, PROMPT_SHOWN))), classes="body")


class ReplyTurn(Vertical):
    """A reply from the model: Markdown that can grow while it streams."""

    def __init__(
        self,
        model: str,
        content: str = "",
        *,
        status: Status = "streaming",
        stats: ReplyStats | None = None,
        error: str | None = None,
    ) -> None:
        super().__init__(classes="turn reply-turn")
        self.model = model
        self.content = content
        self._status: Status = status
        self._stats = stats
        self._error = error

    def compose(self) -> ComposeResult:
        yield Label(shown(self.model), classes="who")
        yield MarkdownText(visible(self.content), classes="body")
        yield Static(self._meta(), classes="meta")

    def on_mount(self) -> None:
        self.set_class(self._status in ("interrupted", "error"), "-failed")

    def thinking(self, characters: int, *, done: bool = False) -> None:
        """Show that the model is thinking (or has thought) before it answers."""
        text = (
            f"thought {characters:,} characters · writing…"
            if done
            else (f"thinking… ({characters:,} characters)")
        )
        self.query_one(".meta", Static).update(Text(text, style="dim italic"))

    def writer(self, interval: float = 0.2) -> ReplyWriter:
        return ReplyWriter(self.query_one(MarkdownText), interval)

    def _meta(self) -> Text:
        if self._status == "streaming":
            return Text("…", style="dim")
        parts = Text()
        if self._stats:
            parts.append(self._stats.summary(), style="dim")
        if self._status == "interrupted":
            parts.append(("  " if parts else "") + "interrupted", style="bold yellow")
        if self._error:
            parts.append(("\n" if parts else "") + visible(self._error), style="bold red")
        return parts

    def finish(
        self, content: str, status: Status, stats: ReplyStats | None, error: str | None
    ) -> None:
        self.content = content
        self._status, self._stats, self._error = status, stats, error
        if status in ("interrupted", "error"):  # a class change restyles every block: only then
            self.add_class("-failed")
        self.query_one(".meta", Static).update(self._meta())


class ConversationView(VerticalScroll):
    """The turns of one conversation, following the newest text as it arrives."""

    def show_messages(self, messages: list[StoredMessage], *, hint: str = "") -> None:
        """Show these turns; with none, a hint (``hint`` first, when given)."""
        self.remove_children()
        turns: list[PromptTurn | ReplyTurn] = []
        for m in messages:
            if m.role == "user":
                turns.append(PromptTurn(m.content))
            elif m.role == "assistant":
                turns.append(
                    ReplyTurn(
                        m.model or "assistant",
                        m.content,
                        status=m.status,
                        stats=m.stats,
                        error=m.error,
                    )
                )
        if turns:
            self.mount_all(turns)
        else:
            text = f"{hint}\n{self.EMPTY_HINT}" if hint else self.EMPTY_HINT
            self.mount(Static(Text(text), classes="empty-hint"))
        self.anchor()

    EMPTY_HINT = "Write a message below and press Enter. F1 lists every key."

    def add_prompt(self, content: str) -> PromptTurn:
        for hint in self.query(".empty-hint"):
            hint.remove()
        turn = PromptTurn(content)
        self.mount(turn)
        self.anchor()
        return turn

    def add_reply(self, model: str) -> ReplyTurn:
        turn = ReplyTurn(model)
        self.mount(turn)
        self.anchor()
        return turn

    def last_reply(self) -> ReplyTurn | None:
        replies = self.query(ReplyTurn)
        return replies.last() if replies else None
