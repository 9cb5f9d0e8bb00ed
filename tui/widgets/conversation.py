"""The conversation: prompts shown literally, replies as streamed Markdown."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.geometry import Region
from textual.scrollbar import ScrollBar
from textual.strip import Strip
from textual.widget import AwaitMount, Widget
from textual.widgets import Static

from engines.chat_types import ReplyStats, ToolUse
from engines.store import Status, StoredMessage
from tui.compositor import draw_soon
from tui.text import shorten, visible
from tui.widgets.one_layout import OneLayout, OwnHeights
from tui.widgets.steady_scrollbar import steady_vertical_scrollbar

if TYPE_CHECKING:  # imported with the first reply drawn (Markdown is not needed before)
    from tui.widgets.markdown_text import MarkdownText

PROMPT_SHOWN = 20_000
"""Characters of a prompt drawn on screen; the whole prompt is stored and sent."""
FIRST_TURNS = 12
"""A conversation opens with its last turns; those above are mounted after that first
frame (a conversation of 50 turns drew its first frame in 0.77 s; DESIGN decision 12)."""
JUMP_SHARE = 2 / 3
"""The share of the view a followed reply moves it by at once (``ConversationView.jump_rows``)."""
OPENING_HOLD_S = 0.1
"""The longest frames wait for a conversation just shown to be drawn to its end (see
``ConversationView.awaiting``)."""
READY_AFTER_S = 0.5
"""How long after a conversation is drawn its view makes the turns of the next send ready
(``ConversationView.make_ready``): once it has settled (at start, made 0.2 s after the
show, they held the first frame back by 0.1 s, and the server's status as long)."""


def warm_up_markdown(give_way: Callable[[], bool] | None = None) -> None:
    """Load Markdown and the highlighters of common code languages (in a thread), so the
    first reply or conversation drawn does not wait for them (see ``markdown_text``).
    The app starts it on the user's first key or click, not at start: an app left open
    and untouched does not hold the highlighters (Markdown's module is loaded at start
    by the turns made ready for the first send, ``ConversationView.make_ready``). The
    image tool's schema, offered with
    the first reply's request, is loaded too (imported then, it held the request back
    some 8 ms while the new turns were being laid out). ``give_way``: see ``warm_up``."""
    import engines.image_requests  # noqa: F401
    from tui.widgets.markdown_text import warm_up

    warm_up(give_way)


class ReplyWriter:
    """Feeds a streaming reply to its Markdown widget at most every ``interval`` seconds.

    A reply comes a token at a time, far faster than anyone reads; every update of the
    widget costs a parse, a layout and a redraw of the followed view. So tokens are
    gathered and written together: the first one at once, the next ones sooner (so
    that the first words are read at once, not a token of them), then at most every
    ``interval``, and whatever is left as soon as the reply ends.

    Where a drawing costs more (a slow or busy machine, a large terminal), they are
    spaced further, so that drawing the reply keeps within ``BUDGET`` of a CPU: each
    write is timed, from the append to the frame that shows it (the event loop's CPU),
    and the next one waits that long divided by ``BUDGET``.

    Text that comes in a burst (the server sends faster than the reply is read, see
    ``ReplyText.more``) is drawn once the burst is read, or ``SLOWEST`` after the last
    write: at full speed a 2,000-token reply is read in some 30 ms of CPU, and each frame
    drawn meanwhile held the reading, and so the last words, back by as long."""

    RAMP = (0.02, 0.05, 0.1)
    """The waits before the second, third and fourth writes (then ``interval``)."""
    BUDGET = 0.06
    """The share of a CPU that drawing a streaming reply may take (see above)."""
    SLOWEST = 0.25
    """The longest wait between two writes, however costly a drawing: a reply that moves
    four times a second still reads as streaming."""
    HOLD_UNREADABLE = 0.02
    """The longest the first write waits while what has come shows no word yet: a reply's
    first token is often a heading's or a list's mark alone (``#``), which draws nothing
    that reads, and its frame (a layout of the whole screen) held the words that followed
    it back by as long (Enter to the first words 0.10-0.11 s, instead of about 0.08)."""
    LONG_BURST = 100
    """Characters a burst has brought before a write waits for its end."""
    RESERVE = 4
    """The fewest rows the reply's text is rounded up to while it streams (see
    ``markdown_text.Reserved``); in a view, ``ConversationView.jump_rows``."""
    BURST = 2000
    """Characters pending at once (a screenful, or more) that end the quicker first
    writes: a reply that comes this fast is not read as it comes, and drawing it every
    few milliseconds would only slow the reading of the rest."""

    def __init__(
        self,
        markdown: MarkdownText,
        interval: float = 0.1,
        *,
        view: ConversationView | None = None,
    ) -> None:
        self.markdown = markdown
        self.interval = interval
        self._pending: list[str] = []
        self._pending_chars = 0
        self._first_at: float | None = None  # when the first text came
        self._wake = asyncio.Event()
        self._closing = asyncio.Event()
        self._last = 0.0  # when the last write was drawn (or let go of the loop)
        self._written_at = 0.0  # when the last write was made
        self._writes = 0
        self._burst_chars = 0  # pending text that came in a burst, with more read already
        self._cost = 0.0  # the CPU seconds of a drawing (smoothed)
        self._abandoned = False
        self.on_spacing: Callable[[float], None] | None = None
        """Told the wait between two writes (``spacing``) as it changes: the reply's
        reader need not hand its text over more often (``Reply.drawn_every``)."""
        self._task = asyncio.create_task(self._run())
        self._view = view
        """The view that shows the text, if any: asked before each write how many rows
        the text is kept a multiple of (``reserve_rows``), and told the rows it loses as
        it ends (``keep_end``)."""
        markdown.reserve(self._reserve_rows())

    def _reserve_rows(self) -> int:
        view_rows = self._view.reserve_rows() if self._view is not None else 0
        return max(self.RESERVE, view_rows)

    def write(self, text: str, *, more: bool = False) -> None:
        """Add ``text`` to what is drawn next. ``more``: more of the reply has come
        already (a burst): the next write waits for it (see ``_wait``). No ``text``, and
        not ``more``: the burst is over, what waits for it is written."""
        if not text:
            if self._burst_chars and not more:
                self._burst_chars = 0
                self._wake.set()
            return
        if self._first_at is None:
            self._first_at = time.monotonic()
        self._burst_chars = self._burst_chars + len(text) if more else 0
        self._pending.append(text)
        self._pending_chars += len(text)
        if (
            not self._writes
            and not self._held_for_burst()
            and not self._closing.is_set()
            and self._readable()
        ):
            # the first words, written now: woken, the writer's task ran after what
            # the loop had queued meanwhile (a frame of the new turns, 5-15 ms)
            self._write_pending()
            self._last = time.monotonic()
            return
        self._wake.set()

    def _write_pending(self) -> bool:
        """Write what is pending to the Markdown; False if there was nothing to write."""
        text = "".join(self._pending)
        self._pending.clear()
        self._pending_chars = self._burst_chars = 0
        if not text or self._abandoned:
            return False
        started = time.thread_time()
        self._written_at = time.monotonic()
        self.markdown.reserve(self._reserve_rows())
        self.markdown.append(text)
        if self._writes < len(self.RAMP):
            draw_soon(self.markdown)  # the first words: someone is waiting for them
        self.markdown.call_after_refresh(self._drawn, started)
        self._writes += 1
        return True

    async def _flush(self) -> None:
        if self._write_pending():
            await asyncio.sleep(0)  # let the screen draw it
        self._last = time.monotonic()

    def _drawn(self, started: float) -> None:
        cost = time.thread_time() - started
        self._cost = cost if not self._cost else (self._cost + cost) / 2
        if self.on_spacing is not None:
            self.on_spacing(self.spacing())

    def spacing(self) -> float:
        """The wait between two writes once the first ones are done (see the class)."""
        return max(self.interval, min(self.SLOWEST, self._cost / self.BUDGET))

    def _wait(self) -> float:
        """How long the next write waits yet (asked again once waited: a burst that
        came meanwhile ends the quicker first writes)."""
        if not self._writes and self._first_at is not None and not self._readable():
            return self._first_at + self.HOLD_UNREADABLE - time.monotonic()
        if self._held_for_burst():
            # a burst: what is drawn now is stale by the next frame, and the frame keeps
            # the rest from being read (both want the one CPU the GIL gives). Drawn once
            # it is read, at the latest ``SLOWEST`` after the last write (or the first words)
            since = self._last if self._writes else self._first_at or time.monotonic()
            return since + self.SLOWEST - time.monotonic()
        ramp = self.RAMP[self._writes - 1] if 0 < self._writes <= len(self.RAMP) else 1e9
        if self._pending_chars >= self.BURST:
            ramp = 1e9
        # the first writes are spaced from when they were made: spaced from when the
        # first one had been drawn (with the new turns: a 15-20 ms frame), the second,
        # with the words after the first one or two, came that much later
        return min(self._last + self.spacing(), self._written_at + ramp) - time.monotonic()

    def _held_for_burst(self) -> bool:
        """Whether the next write waits for the end of a burst (see the class): one that
        has brought a line or so (``LONG_BURST``). Tokens also come two or three at once
        where the reading thread waited for the interpreter (while the new turns, or a
        write, were drawn): they are drawn as any."""
        return self._burst_chars >= self.LONG_BURST

    def _readable(self) -> bool:
        """Whether what is pending holds a word (a letter or a digit) to read."""
        return any(c.isalnum() for text in self._pending for c in text)

    async def _run(self) -> None:
        # never cancelled: an append cut in the middle would leave the widget half-updated
        while not self._closing.is_set():
            await self._wake.wait()
            while (wait := self._wait()) > 0 and not self._closing.is_set():
                self._wake.clear()  # a write meanwhile asks again (words end a hold)
                with contextlib.suppress(TimeoutError):  # close() and abandon() wake it too
                    await asyncio.wait_for(self._wake.wait(), wait)
            self._wake.clear()
            await self._flush()

    def flush(self) -> None:
        """Write what is pending now, not at the next turn (the reply has ended: its last
        words wait for nothing)."""
        text = "".join(self._pending)
        self._pending.clear()
        self._pending_chars = 0
        if not self._abandoned:
            lost = self.markdown.end_reserve(text)  # drawn once, without the blank rows
            draw_soon(self.markdown)  # the last words: the reply is waited for
            if self._view is not None:
                self._view.keep_end(self.markdown, lost)

    async def close(self) -> None:
        """Write what is left now, and stop."""
        self._closing.set()
        self._wake.set()
        await asyncio.shield(self._task)
        self.flush()

    def abandon(self) -> None:
        """Stop writing at once (the turn is leaving the screen): what is pending is dropped."""
        self._abandoned = True
        self._pending.clear()
        self._pending_chars = 0
        self._closing.set()
        self._wake.set()


class Turn(Vertical, OneLayout, OwnHeights):
    """A turn of the conversation: one message of the current path, and which of its
    versions it is (``version`` of ``versions``, when it was redone).

    Its header (who speaks, the version) is its border's title, over its parts: not a
    widget of its own. Each widget a send mounts is composed, styled, mounted and laid
    out a message at a time before the first frame that shows the reply: the header's
    two labels and an empty tools block were a third of them (Enter to that frame, 3 ms
    of CPU of 34)."""

    def __init__(self, content: str, *, classes: str, message_id: int | None = None) -> None:
        super().__init__(classes=f"turn {classes}")
        self.content = content
        self.message_id = message_id
        self.version = 1
        self.versions = 1
        self.soon = False
        """Drawn as soon as it is mounted (see ``draw_soon``), not at the frame timer's
        next tick (up to 17 ms on): a turn someone waits to see (``await_turn``). The
        reply's turn of a message just sent is mounted a few milliseconds before the
        server's first tokens come, and a frame of it started by the timer then held them
        back."""

    def on_mount(self) -> None:  # (Textual calls this, then a subclass's own)
        if self.soon:
            draw_soon(self)

    def who(self) -> str:
        raise NotImplementedError

    def header(self) -> Text:
        text = Text(visible(self.who()))
        if self.versions > 1:
            text.append(f"  ‹ {self.version}/{self.versions} ›", style="dim")
        return text

    def set_versions(self, version: int, versions: int) -> None:
        self.version, self.versions = version, versions
        self.border_title = self.header()


class PromptTurn(Turn):
    """Something the user said."""

    def __init__(
        self, content: str, message_id: int | None = None, images: tuple[str, ...] = ()
    ) -> None:
        super().__init__(content, classes="prompt-turn", message_id=message_id)
        self.images = images

    def who(self) -> str:
        return "You"

    def fill(self, content: str, message_id: int | None) -> None:
        """A turn made ready (``ConversationView.make_ready``) becomes this prompt, shown."""
        self.content, self.message_id = content, message_id
        self.query_one(".body", Static).update(Text(visible(shorten(content, PROMPT_SHOWN))))
        self.display = True

    def compose(self) -> ComposeResult:
        self.border_title = self.header()
        if self.images:
            from tui.widgets.attachments import ImagePreviews

            yield ImagePreviews(self.images)
        yield Static(Text(visible(shorten(self.content, PROMPT_SHOWN))), classes="body")


class ReplyTurn(Turn):
    """A reply from the model: Markdown that can grow while it streams."""

    def __init__(
        self,
        model: str,
        content: str = "",
        *,
        status: Status = "streaming",
        stats: ReplyStats | None = None,
        error: str | None = None,
        message_id: int | None = None,
        tools: tuple[ToolUse, ...] = (),
    ) -> None:
        super().__init__(content, classes="reply-turn", message_id=message_id)
        self.model = model
        self.tools = tools
        """The tools it called, with what came of each (issue 14)."""
        self.status: Status = status
        self._stats = stats
        self._error = error
        from tui.widgets.markdown_text import MarkdownText

        self.body = MarkdownText(visible(content), classes="body")
        self._noted: Text | None = None  # what the reply is doing (waiting, thinking)

    def who(self) -> str:
        return visible(self.model)

    def fill(self, model: str, message_id: int | None) -> None:
        """A turn made ready (``ConversationView.make_ready``) becomes the reply of
        ``model`` about to stream, shown."""
        self.model, self.message_id = model, message_id
        self.border_title = self.header()
        self.display = True

    @property
    def stats(self) -> ReplyStats | None:
        return self._stats

    @property
    def can_continue(self) -> bool:
        """Interrupted, or cut at the length limit: the model can go on with it."""
        cut = self._stats is not None and self._stats.done_reason == "length"
        return self.status == "interrupted" or (self.status == "done" and cut)

    def compose(self) -> ComposeResult:
        self.border_title = self.header()
        if self.tools:
            yield Static(self._tool_text(), classes="tools")
        yield self.body
        yield Static(self._meta(), classes="meta")

    def _tool_text(self) -> Text:
        from tui.widgets.chat_image import tool_text

        return tool_text(self.tools)

    def show_tools(self, tools: tuple[ToolUse, ...]) -> None:
        """The tools called so far, as they are now."""
        self.tools = tools
        blocks = self.query(".tools").results(Static)
        if block := next(blocks, None):
            block.update(self._tool_text())
            block.display = bool(tools)
        elif tools and self.is_mounted:  # else it is composed with them, or mounted with them
            self._mount_tools()

    def _mount_tools(self) -> None:
        self.mount(Static(self._tool_text(), classes="tools"), before=self.body)

    def on_mount(self) -> None:
        self.set_class(self.status in ("interrupted", "error"), "-failed")
        if self.tools and not self.query(".tools"):  # they came as its parts were composed
            self._mount_tools()

    def _note(self, text: str) -> None:
        self._noted = Text(text, style="dim italic")
        for meta in self.query(".meta").results(Static):  # none before it is composed
            meta.update(self._noted)

    def thinking(self, characters: int, *, done: bool = False) -> None:
        """Show that the model is thinking (or has thought) before it answers."""
        self._note(
            f"thought {characters:,} characters · writing…"
            if done
            else f"thinking… ({characters:,} characters)"
        )

    def waiting(self, position: int) -> None:
        """Every slot streams another reply: this one waits its turn."""
        self._note(f"waiting: {ordinal(position)} in line (other replies are being written)")

    def started(self) -> None:
        self._note("…")

    def writer(self, interval: float = 0.2) -> ReplyWriter:
        view = self.parent
        if isinstance(view, ConversationView):
            view.release_end()  # a reply continued: it keeps the rows it needs itself
            return ReplyWriter(self.body, interval, view=view)
        return ReplyWriter(self.body, interval)

    def _meta(self) -> Text:
        if self.status == "streaming":
            return self._noted or Text("…", style="dim")
        parts = Text()
        if self._stats:
            parts.append(self._stats.summary(), style="dim")
        if self.status == "interrupted":
            parts.append(("  " if parts else "") + "interrupted", style="bold yellow")
        elif self.can_continue:
            parts.append(("  " if parts else "") + "cut at the length limit", style="bold yellow")
        if self._error:
            parts.append(("\n" if parts else "") + visible(self._error), style="bold red")
        return parts

    def finish(
        self, content: str, status: Status, stats: ReplyStats | None, error: str | None
    ) -> None:
        self.content = content
        self.status, self._stats, self._error = status, stats, error
        self._noted = None
        if status in ("interrupted", "error"):  # a class change restyles every block: only then
            self.add_class("-failed")
        for meta in self.query(".meta").results(Static):
            meta.update(self._meta())


def ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


T = TypeVar("T", bound=Turn)

Versions = dict[int, tuple[int, int]]
"""By message id: which version of its turn it is, and how many there are."""


class ConversationView(VerticalScroll, OneLayout):
    """The turns of one conversation, following the newest text as it arrives. A turn
    can be selected (the turn cursor) to act on it."""

    EMPTY_HINT = "Write a message below and press Enter. F1 lists every key."

    selected: Turn | None = None

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._turns: list[Turn] = []  # in order; not those still being removed
        self._shown_generation = 0  # one more each time a conversation is shown
        self._awaited: Turn | None = None  # frames wait for its mounting (await_turn)
        self._awaited_until = 0.0
        self._kept_end: Turn | None = None  # its bottom margin keeps the view's end (keep_end)
        self._ready: list[Turn] = []  # hidden at the end, for the next send (make_ready)

    @property
    def vertical_scrollbar(self) -> ScrollBar:
        return steady_vertical_scrollbar(self)

    def render_lines(self, crop: Region) -> list[Strip]:
        """The view's own rows (under its turns): its background and its padding, the same
        on every row where it has no border or outline. One is drawn, and given for each:
        every frame that scrolls the view (each write of a streaming reply that follows
        its end) drew each of its rows again, for the cell of padding either side of the
        turns (some 30 rows a frame, 1,200 per 2,000-token reply)."""
        styles = self.styles
        if crop.height <= 1 or styles.gutter != styles.padding or styles.outline:
            return super().render_lines(crop)
        return super().render_lines(crop._replace(height=1)) * crop.height

    def jump_rows(self) -> int:
        """How far the view moves at once as it follows a streaming reply: the reply's
        text is kept a multiple of this many rows high (``ReplyWriter``), blank below
        its last words, so the view moves once the text has filled them, by this much,
        and not at each row: what is being read stays still between two moves, and the
        frames in between draw only the rows that changed (a 2,000-token reply at 120x40:
        53 KB written to the terminal instead of 132 KB, 11 % less CPU). Two thirds of the
        view: after a move, the text read last stays in sight above the new rows."""
        return int(self.scrollable_content_region.height * JUMP_SHARE)

    def reserve_rows(self) -> int:
        """The rows a reply's text is kept a multiple of as it streams: ``jump_rows`` once
        the view has more than it shows (it scrolls to follow), else none (a text that
        fits moves nothing: it is not padded out of sight with blank rows)."""
        return self.jump_rows() if self.max_scroll_y > 0 else 0

    def keep_end(self, text: Widget, rows: int) -> None:
        """A reply's ``text`` just lost ``rows`` rows on screen (the blank rows it kept while
        it streamed, see ``jump_rows``): its turn keeps their place under it, so that a
        view followed to its end does not move the reply down as it ends. Given back when
        a turn is added (``release_end``) or the conversation shown anew."""
        if rows <= 0:
            return
        self.release_end()
        turn = text.parent
        if not isinstance(turn, Turn) or turn not in self._turns or not turn.is_attached:
            return
        margin = turn.styles.margin
        turn.styles.margin = (margin.top, margin.right, margin.bottom + rows, margin.left)
        self._kept_end = turn

    def release_end(self) -> None:
        """The rows ``keep_end`` kept go (a turn follows the reply)."""
        turn, self._kept_end = self._kept_end, None
        if turn is not None and turn.styles.clear_rule("margin"):
            turn.refresh(layout=True)

    def show_messages(
        self,
        messages: list[StoredMessage],
        versions: Versions | None = None,
        *,
        hint: str = "",
        at_once: bool = False,
        after_frame: bool = False,
    ) -> None:
        """Show these turns (each with its version, "2/3"); with none, a hint (``hint``
        first, when given). A long conversation shows its last turns first and the rest
        after that frame, unless ``at_once`` (a turn above them is to be scrolled to).
        ``after_frame``: the turns are mounted once the app's next frame is drawn (the
        conversation open at start: the first frame goes without its Markdown)."""
        # the turns made ready stay, for a send in this conversation too
        self.remove_children([child for child in self.children if child not in self._ready])
        self.selected = None
        self._kept_end = None
        self._shown_generation += 1
        if not self._ready:  # from the app's queue: at start, once the first frame is drawn
            self.app.call_after_refresh(self.set_timer, READY_AFTER_S, self.make_ready)
        if messages and after_frame:
            # the app's queue, not this widget's: at start it runs once the first frame is
            # drawn (this widget's runs before, while the app holds its frames back)
            self._turns = []
            self.app.call_after_refresh(
                self._show_later, messages, versions or {}, self._shown_generation, hint
            )
            self.anchor()
            return
        turns = self._make_turns(messages, versions or {})
        self._turns = turns
        self._awaited = None
        if turns:
            self.await_turn(turns[-1], OPENING_HOLD_S)
            self._mount_turns(turns, self._shown_generation, at_once=at_once)
        else:
            text = f"{hint}\n{self.EMPTY_HINT}" if hint else self.EMPTY_HINT
            self.add(Static(Text(text), classes="empty-hint"))
        self.anchor()

    def await_turn(self, turn: Turn, within: float) -> None:
        """Have the screen's frames wait while ``turn`` is mounted, ``within`` seconds at
        most, and draw it as soon as it is (``awaiting``, ``Turn.soon``). A turn mounted
        already (made ready) is drawn once what the event loop has queued has run: a
        reply's turn, once the reply's worker has taken its first step, which sends the
        request (drawn first, in the same turn of the loop as the send, its frame held the
        request back by 10-15 ms: the worker waited for it)."""
        if turn.is_mounted:
            asyncio.get_running_loop().call_soon(draw_soon, turn)
            return
        turn.soon = True
        self._awaited, self._awaited_until = turn, time.monotonic() + within

    def awaiting(self) -> bool:
        """Whether frames wait for the turn given to ``await_turn``: the last turn of a
        conversation just shown, or the reply's turn of a message just sent. A frame
        drawn meanwhile showed the list's new choice over an empty view, or the prompt's
        turn without the reply's, and the frame of the turn waited for it (opening a
        20,000-token reply: 15-20 ms of 90-150). A turn is mounted once its own parts
        are (Textual lays out only mounted widgets: a frame drawn before left it out)."""
        turn = self._awaited
        if turn is None:
            return False
        if turn.is_mounted or not turn.is_attached or time.monotonic() > self._awaited_until:
            self._awaited = None
            return False
        return True

    @staticmethod
    def _make_turns(messages: list[StoredMessage], versions: Versions) -> list[Turn]:
        turns: list[Turn] = []
        for m in messages:
            turn: Turn
            if m.role == "user":
                turn = PromptTurn(m.content, m.id, m.images)
            elif m.role == "assistant":
                turn = ReplyTurn(
                    m.model or "assistant",
                    m.content,
                    status=m.status,
                    stats=m.stats,
                    error=m.error,
                    message_id=m.id,
                    tools=m.tools,
                )
            else:
                continue
            turn.version, turn.versions = versions.get(m.id, (1, 1))
            turns.append(turn)
        return turns

    async def _show_later(
        self, messages: list[StoredMessage], versions: Versions, generation: int, hint: str
    ) -> None:
        """The turns of ``show_messages(after_frame=True)``, made and mounted now (unless
        another conversation has been shown since), above any turn added meanwhile (a
        prompt sent before they were drawn). Awaited: the app's work queued after it (at
        start, the collector turned back on, Ollama's client imported in a thread) waits
        until they are mounted; with it, a full collection took 50 ms of their drawing."""
        if generation != self._shown_generation or not self.is_attached:
            return
        turns = self._make_turns(messages, versions)
        self._turns = turns + self._turns
        if turns:
            below = self.children[0] if self.children else None
            await self._mount_turns(turns, generation, below=below)
        elif all(child in self._ready for child in self.children):
            text = f"{hint}\n{self.EMPTY_HINT}" if hint else self.EMPTY_HINT
            self.add(Static(Text(text), classes="empty-hint"))

    def _mount_turns(
        self,
        turns: list[Turn],
        generation: int,
        *,
        at_once: bool = False,
        below: Widget | None = None,
    ) -> AwaitMount:
        below = below or self._below()
        if len(turns) > FIRST_TURNS and not at_once:  # the last ones first, the rest after
            earlier, last = turns[:-FIRST_TURNS], turns[-FIRST_TURNS:]
            mounted = self.mount_all(last, before=below)
            self.call_after_refresh(self._mount_earlier, earlier, last[0], generation)
        else:
            mounted = self.mount_all(turns, before=below)
        if self.selected is None:
            self.anchor()
        return mounted

    async def _mount_earlier(self, earlier: list[Turn], first: Turn, generation: int) -> None:
        """The turns above the last ones, mounted once those are on screen (unless another
        conversation has been shown since); the view stays at the end."""
        if generation != self._shown_generation or first.parent is not self:
            return
        await self.mount_all(earlier, before=first)
        if self.selected is None:
            self.anchor()

    def make_ready(self) -> None:
        """Make the turns of the next send ahead: a prompt's and a reply's, mounted hidden
        at the end, filled and shown by ``add_prompt`` and ``add_reply``. Each widget a
        send mounts is composed, styled and mounted a message at a time, and the first
        frame of the send waited for them all (Enter to that frame: 33 ms of CPU, 16 with
        the turns made ready). Made once a conversation is shown (``READY_AFTER_S``; they
        stay while others are shown), by the screen after a reply, and as a prompt is
        written if none are ready. At start
        they load Markdown's module (50 ms, 3.4 MiB here): made on the first key instead,
        they were not ready for an Enter that follows a pasted prompt, and the first send
        loaded it then (its first words waited for it)."""
        if self._ready or not self.is_attached:
            return
        self._ready = [PromptTurn(""), ReplyTurn("")]
        for turn in self._ready:
            turn.display = False
        self.mount_all(self._ready)

    def has_ready(self) -> bool:
        """Whether the turns of the next send are made (``make_ready``)."""
        return bool(self._ready)

    def _take_ready(self, kind: type[T]) -> T | None:
        """The turn of ``kind`` made ready, if it is mounted (its parts in place)."""
        for turn in self._ready:
            if isinstance(turn, kind) and turn.is_mounted:
                self._ready.remove(turn)
                return turn
        return None

    def _below(self) -> Widget | None:
        """What a widget added at the end goes above: the turns made ready, if any."""
        return self._ready[0] if self._ready else None

    def add(self, widget: Widget) -> AwaitMount:
        """Mount ``widget`` at the end of the conversation (above the turns made ready)."""
        return self.mount(widget, before=self._below())

    def add_prompt(
        self, content: str, message_id: int | None = None, images: tuple[str, ...] = ()
    ) -> PromptTurn:
        for hint in self.query(".empty-hint"):
            hint.remove()
        self.release_end()
        turn = None if images else self._take_ready(PromptTurn)
        if turn is not None:
            turn.fill(content, message_id)
        else:
            turn = PromptTurn(content, message_id, images)
            self.add(turn)
        self._turns.append(turn)
        self.anchor()
        return turn

    def add_reply(self, model: str, message_id: int | None = None, content: str = "") -> ReplyTurn:
        self.release_end()
        turn = None if content else self._take_ready(ReplyTurn)
        if turn is not None:
            turn.fill(model, message_id)
        else:
            turn = ReplyTurn(model, content, message_id=message_id)
            self.add(turn)
        self._turns.append(turn)
        self.anchor()
        return turn

    def turns(self) -> list[Turn]:
        return list(self._turns)

    def turn(self, message_id: int) -> Turn | None:
        return next((t for t in self.turns() if t.message_id == message_id), None)

    def last_reply(self) -> ReplyTurn | None:
        replies = [t for t in self._turns if isinstance(t, ReplyTurn)]
        return replies[-1] if replies else None

    def select(self, turn: Turn | None) -> None:
        """Put the turn cursor on ``turn`` (None: no turn is selected)."""
        if self.selected is not None:
            self.selected.remove_class("-selected")
        self.selected = turn
        if turn is not None:
            turn.add_class("-selected")
            self.release_anchor()
            self.scroll_to_widget(
                turn, animate=False, top=turn.outer_size.height > self.size.height
            )

    def move_selection(self, step: int) -> Turn | None:
        """Move the turn cursor ``step`` turns (from the end when none is selected)."""
        turns = self.turns()
        if not turns:
            return None
        if self.selected is None or self.selected not in turns:
            index = len(turns) - 1 if step < 0 else 0
        else:
            index = max(0, min(len(turns) - 1, turns.index(self.selected) + step))
        self.select(turns[index])
        return turns[index]
