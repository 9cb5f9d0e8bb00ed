"""The life of a chat reply, from the request to its final status, with no Textual.

:class:`ConversationService` owns every reply: it adds the turns to the message tree,
builds the history sent to the model (the current path, with the system prompt and the
options), streams through :class:`~engines.ollama_client.ChatEngine`, saves the reply as
it grows, finishes it as done, interrupted or error (with the reason and the figures),
and publishes what happens to any number of listeners. The Chat screen is one listener
(it draws); the CLI is another (it prints).

A reply is prepared (its rows written) by :meth:`ConversationService.send`,
:meth:`~ConversationService.regenerate`, :meth:`~ConversationService.edit` or
:meth:`~ConversationService.continue_reply`, then run by awaiting
:meth:`ConversationService.run` in whatever task the caller owns (a Textual worker, or
``asyncio.run`` in the CLI): cancelling that task stops the reply, which is kept, marked
interrupted. At most ``max_parallel`` replies stream at once; the others wait in order,
and say so.

A model that can call tools is offered the service's :class:`Tools` (the image engine's
``generate_image``, ``engines/image_tool.py``). A call is kept with the reply (its text up
to the call, the call, the tool's answer), published (:class:`ReplyToolUsed`), run, and
its answer sent back as a ``tool`` message; the model then goes on in the same reply. The
history sent later replays the calls and answers (``StoredMessage.as_chats``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from engines.attachments import Attachment
from engines.chat_types import (
    ChatError,
    ChatMessage,
    ChatOptions,
    ModelNotFound,
    OllamaUnavailable,
    Pause,
    ReplyStats,
    StreamBroken,
    ToolCall,
    ToolUse,
)
from engines.ollama_client import ChatEngine
from engines.store import Conversation, Status, Store, StoredMessage, StoreError, title_from

if TYPE_CHECKING:
    from engines.hosts import HostRegistry

log = logging.getLogger(__name__)

Kind = Literal["send", "regenerate", "edit", "continue"]

IN_SIGHT_PAUSE_S = 0.1
"""Once the reader of a reply has caught up with the server, it waits this long at least
before it reads again (and then reads what came meanwhile at once): at 200 tokens/s that
is a read for 20 tokens instead of one each, and the app draws a reply at most every
0.1 s anyway. Where it is drawn less often, it waits as long (``Reply.drawn_every``): a
small machine draws a reply 4 times a second, and a read per drawing, not 2.5, took
0.06 s less CPU per 2,000-token reply (1.10 -> 1.04 s). The reply's last line ends the
wait (``reply_stream._watch``): its last words are not held back by it. (Unwatched, at
0.02 s, the reader took 0.25-0.3 s of CPU for a 2,000-token reply at 200 tokens/s;
watched, at 0.1 s, some 0.15 s.)"""
OUT_OF_SIGHT_PAUSE_S = 0.5
"""The pause of a reader whose reply is out of sight (another conversation is shown):
its tokens are read some 100 at a time, at 200 tokens/s, and handed to the event loop
twice a second. Brought into sight, it reads at once (``Reply.sighted``)."""
FIGURES_EVERY_S = 0.5
"""A reply's rate (``ReplyFigures``) is published at most this often, not with every token."""


class ConversationError(Exception):
    """A reply cannot be prepared; ``str()`` says why and what to do instead."""


# -- events ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReplyEvent:
    conversation_id: int
    reply_id: int


@dataclass(frozen=True)
class ReplyWaiting(ReplyEvent):
    """Every slot streams another reply: this one waits; ``position`` 1 goes next."""

    position: int


@dataclass(frozen=True)
class ReplyStarted(ReplyEvent):
    model: str
    host: str = ""
    """The Ollama server it streams from (``[ollama] hosts``), when there are several."""


@dataclass(frozen=True)
class ReplyThinking(ReplyEvent):
    """A reasoning model thinks: ``chars`` so far; ``done`` when its answer begins."""

    chars: int
    done: bool = False


@dataclass(frozen=True)
class ReplyText(ReplyEvent):
    """A piece of the reply, as it came. Empty where a burst is over (the text before it
    said ``more``, and no more came: what waits for it is drawn now)."""

    text: str
    more: bool = False
    """More had come already (see ``ReplyChunk.more``): a burst, drawn once it is read."""


@dataclass(frozen=True)
class ReplyFigures(ReplyEvent):
    tokens_per_s: float


@dataclass(frozen=True)
class ReplySaveFailed(ReplyEvent):
    message: str


Failure = Literal["unreachable", "model-missing", "lost", "failed"]


@dataclass(frozen=True)
class ReplyFinished(ReplyEvent):
    status: Status
    content: str
    stats: ReplyStats | None
    error: str | None
    title: str
    failure: Failure | None = None
    """Why it failed: the server could not be reached, it lacks the model, the connection
    was lost in the middle, or else."""
    host: str = ""
    """The Ollama server it came from (``[ollama] hosts``), when there are several."""


@dataclass(frozen=True)
class ReplyToolUsed(ReplyEvent):
    """The model called a tool, or a tool answered: ``uses`` is every call of the reply so
    far, with what came of each."""

    uses: tuple[ToolUse, ...]


Listener = Callable[[ReplyEvent], None]

MAX_TOOL_ROUNDS = 4
"""Times one reply may call tools; past that, a call is refused (a model that calls a tool
over and over would otherwise never finish)."""


# -- tools ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ToolRequest:
    """A model's call of a tool, in a reply."""

    conversation_id: int
    reply_id: int
    model: str
    call: ToolCall


@dataclass(frozen=True)
class ToolAnswer:
    """What a tool answers: ``result`` goes back to the model as the tool's message."""

    result: str
    state: Literal["done", "refused", "failed"] = "done"
    image: str = ""


class Tools(Protocol):
    """The tools offered to the models (engines/image_tool.py): which ones a model gets,
    and running a call."""

    async def offer(self, engine: ChatEngine, model: str) -> list[dict[str, Any]]: ...

    async def call(self, request: ToolRequest) -> ToolAnswer: ...


def chat_history(messages: Sequence[StoredMessage]) -> list[ChatMessage]:
    """What the model is sent of these turns: prompts and finished replies, each reply
    with the tools it called and their answers."""
    return [
        chat for m in messages if m.role == "user" or m.status == "done" for chat in m.as_chats()
    ]


# -- replies --------------------------------------------------------------------------------


@dataclass
class Reply:
    """A reply prepared in the store, waiting to run or running."""

    conversation: Conversation
    reply_id: int
    history: list[ChatMessage]
    kind: Kind
    prefix: str = ""
    """What the reply already holds (a continued reply); new text is added after it."""
    parts: list[str] = field(default_factory=list)
    status: Literal["waiting", "streaming", "finished"] = "waiting"
    host: str = ""
    """The Ollama server it goes to, once chosen (several servers only)."""
    tools: list[ToolUse] = field(default_factory=list)
    """The tools it called, with their answers (kept with the reply)."""
    sighted: threading.Event = field(default_factory=threading.Event, repr=False)
    """Set as the reply comes into sight: its reader's pause ends (see ``in_sight``)."""
    bursting: threading.Event = field(default_factory=threading.Event, repr=False)
    """Set while its reader is behind the server (a burst: the server sends faster than
    the reply is read): the screen showing it waits to draw meanwhile, since each frame
    would hold the reading back, and so the last words (``tui.compositor.DrawsSoon``)."""
    drawn_every: float = 0.0
    """How often whoever shows it draws it (seconds; 0: as it comes), told by them: its
    reader, once caught up with the server, pauses as long (``IN_SIGHT_PAUSE_S`` at
    least, ``OUT_OF_SIGHT_PAUSE_S`` at most). Text read more often than it is drawn only
    waits for the next drawing, and each read costs a wake-up of the reader and the loop."""
    _in_sight: bool = field(default=True, repr=False)

    @property
    def in_sight(self) -> bool:
        """Someone watches it come (the CLI, the Chat screen showing its conversation):
        its tokens are read as they come. One out of sight is read in batches (see
        ``ConversationService._pause``), which costs a fraction of the CPU; brought into
        sight, what came meanwhile is read at once."""
        return self._in_sight

    @in_sight.setter
    def in_sight(self, value: bool) -> None:
        if value and not self._in_sight:
            self.sighted.set()
        self._in_sight = value

    @property
    def conversation_id(self) -> int:
        return self.conversation.id

    @property
    def text(self) -> str:
        return self.prefix + "".join(self.parts)


class ConversationService:
    """Every chat reply of the app; see the module's docstring."""

    def __init__(
        self,
        store: Store,
        engine: ChatEngine,
        *,
        save_interval: float = 1.0,
        max_parallel: int = 2,
        clock: Callable[[], float] = time.monotonic,
        hosts: HostRegistry | None = None,
        tools: Tools | None = None,
    ) -> None:
        if max_parallel < 1:
            raise ValueError("max_parallel must be at least 1")
        self.store = store
        self.engine = engine
        self.hosts = hosts
        """Several Ollama servers: each reply goes to its conversation's (see :meth:`route`)."""
        self.tools = tools
        """The tools offered to models that can call them (None: none)."""
        self.save_interval = save_interval
        self.max_parallel = max_parallel
        self.clock = clock
        self._listeners: list[Listener] = []
        self._replies: dict[int, Reply] = {}  # by conversation: one reply at a time in each
        self._slots: asyncio.Semaphore | None = None
        self._queue: list[int] = []  # conversation ids waiting for a slot, in order

    # -- listeners --------------------------------------------------------------------------

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener`` with every event from now on; returns the unsubscribe."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def _publish(self, event: ReplyEvent) -> None:
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:  # one broken listener must not stop the reply or the others
                log.exception("a reply listener failed")

    # -- state ------------------------------------------------------------------------------

    def reply_in(self, conversation_id: int) -> Reply | None:
        """The reply that streams or waits in this conversation, if any."""
        return self._replies.get(conversation_id)

    def position(self, conversation_id: int) -> int | None:
        """Where this conversation's reply waits in line (1 goes next); None if it is not
        waiting for a slot."""
        if conversation_id in self._queue and self._slots is not None and self._slots.locked():
            return self._queue.index(conversation_id) + 1
        return None

    @property
    def busy(self) -> dict[int, Reply]:
        """Every reply that streams or waits, by conversation."""
        return dict(self._replies)

    # -- preparing --------------------------------------------------------------------------

    def _free(self, conversation_id: int) -> None:
        if conversation_id in self._replies:
            raise ConversationError(
                "a reply is still being written in this conversation: wait for it, or stop "
                "it (Esc) first"
            )

    def new_conversation(
        self, model: str, options: ChatOptions, first_prompt: str = "", host: str = ""
    ) -> Conversation:
        return self.store.create_conversation(model, options, title_from(first_prompt), host)

    def send(
        self, conversation: Conversation, text: str, images: Sequence[Attachment] = ()
    ) -> Reply:
        """Add ``text`` as the next prompt on the current path (with ``images``, copies
        in the data folder), and its reply."""
        if not text.strip():
            raise ConversationError("the message is empty: type something to send")
        self._free(conversation.id)
        self.store.add_message(
            conversation.id,
            "user",
            text,
            images=[(a.name, a.path, a.size) for a in images if a.kind == "image"],
        )
        return self._prepare(conversation, "send")

    def regenerate(self, conversation: Conversation, reply_id: int | None = None) -> Reply:
        """A new version of a reply (by default the last one on the current path), beside
        the earlier ones; the history is what came before it."""
        self._free(conversation.id)
        path = self.store.messages(conversation.id)
        target = next(
            (m for m in reversed(path) if m.role == "assistant" and reply_id in (None, m.id)),
            None,
        )
        if target is None:
            raise ConversationError("there is no reply to regenerate here yet: send a message")
        return self._prepare(conversation, "regenerate", parent_id=target.parent_id)

    def edit(self, conversation: Conversation, prompt_id: int, text: str) -> Reply:
        """Send ``text`` in place of an earlier prompt: a new branch from the turn before
        it; what followed the old prompt is kept as the other branch."""
        if not text.strip():
            raise ConversationError(
                "the edited prompt is empty: type the new text (the old one is kept)"
            )
        self._free(conversation.id)
        old = self.store.message(prompt_id)
        if old is None or old.conversation_id != conversation.id or old.role != "user":
            raise ConversationError("only a prompt of this conversation can be edited")
        names = self.store.image_names(old.id) if old.images else {}
        images = [(names.get(p, Path(p).name), Path(p), 0) for p in old.images]
        self.store.add_message(
            conversation.id, "user", text, parent_id=old.parent_id, images=images
        )  # the edited prompt keeps the old one's images
        return self._prepare(conversation, "edit")

    def continue_reply(self, conversation: Conversation, reply_id: int | None = None) -> Reply:
        """Go on with a reply that was interrupted or cut by the length limit: the model
        gets the partial reply as the assistant's last turn and writes what follows."""
        self._free(conversation.id)
        path = self.store.messages(conversation.id)
        target = next(
            (m for m in reversed(path) if m.role == "assistant" and reply_id in (None, m.id)),
            None,
        )
        if target is None:
            raise ConversationError("there is no reply to continue here yet")
        cut = target.stats is not None and target.stats.done_reason == "length"
        if target.status == "done" and not cut:
            raise ConversationError(
                "that reply is complete: only an interrupted reply, or one cut at the length "
                "limit, can be continued"
            )
        if target.id != path[-1].id:
            raise ConversationError("only the last reply of the conversation can be continued")
        history = chat_history(path[:-1])
        history += target.as_chats() if target.tools else [ChatMessage("assistant", target.content)]
        self.store.update_message(target.id, target.content, status="streaming")
        reply = Reply(conversation, target.id, history, "continue", prefix=target.content)
        reply.tools = list(target.tools)
        self._replies[conversation.id] = reply
        return reply

    def _prepare(
        self,
        conversation: Conversation,
        kind: Kind,
        *,
        parent_id: int | Literal["current"] | None = "current",
    ) -> Reply:
        history_path = self.store.messages(conversation.id)
        if kind == "regenerate":
            # the history ends at the reply's parent: the prompt it answers
            ids = [m.id for m in history_path]
            end = ids.index(parent_id) + 1 if parent_id in ids else len(history_path)
            history_path = history_path[:end]
        history = chat_history(history_path)
        reply_id = self.store.add_message(
            conversation.id,
            "assistant",
            "",
            status="streaming",
            model=conversation.model,
            parent_id=parent_id,
        )
        reply = Reply(conversation, reply_id, history, kind)
        self._replies[conversation.id] = reply
        return reply

    def abandon(self, reply: Reply) -> None:
        """Forget a reply whose task was cancelled before :meth:`run` began (so it never
        ran): it is kept, marked interrupted. Nothing happens to a reply that ran."""
        if self._replies.get(reply.conversation_id) is reply and reply.status == "waiting":
            self._replies.pop(reply.conversation_id)
            with contextlib.suppress(ValueError):
                self._queue.remove(reply.conversation_id)
            self._finish(reply, "interrupted", None, "stopped before it began")

    # -- running ----------------------------------------------------------------------------

    async def run(self, reply: Reply) -> ReplyFinished:
        """Stream ``reply`` to its end and finish it. Cancelling the task that awaits this
        stops it: the reply is kept, marked interrupted, and the cancel goes on."""
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.max_parallel)
        cid = reply.conversation_id
        self._queue.append(cid)
        try:
            if self._slots.locked():
                position = self._queue.index(cid) + 1
                self._publish(ReplyWaiting(cid, reply.reply_id, position=position))
            async with self._slots:
                self._queue.remove(cid)
                return await self._stream(reply)
        except asyncio.CancelledError:
            if reply.status == "waiting":  # stopped before it began: nothing was said
                with contextlib.suppress(ValueError):
                    self._queue.remove(cid)
                self._finish(reply, "interrupted", None, "stopped before it began")
            raise
        finally:
            self._replies.pop(cid, None)

    def route(self, reply: Reply) -> ChatEngine:
        """The engine of the server ``reply`` goes to: the conversation's server when it
        has one (and it is still configured), else the one the registry's rule picks, which
        the conversation remembers from now on."""
        if self.hosts is None:
            return self.engine
        conversation = reply.conversation
        remembered = conversation.host if self.hosts.find(conversation.host) else None
        reply.host = remembered or ""  # named in the failure, should it be unreachable
        host = self.hosts.route(conversation.model, remembered)
        reply.host = host.name
        if conversation.host != host.name:
            with contextlib.suppress(StoreError):  # a reply is worth more than the note
                self.store.set_host(conversation.id, host.name)
            reply.conversation = replace(conversation, host=host.name)
        return host.engine

    def _host_failed(self, reply: Reply, exc: ChatError) -> str:
        """The error as the user reads it (naming the server), after telling the registry
        that the server failed."""
        message = str(exc)
        if self.hosts is None or not reply.host:
            return message
        self.hosts.failed(reply.host, exc)
        return message if reply.host in message else f"{reply.host}: {message}"

    def _unrouted(self, reply: Reply, exc: ChatError) -> ReplyFinished:
        """No server can take the reply (the chosen one is down, none has the model)."""
        failure: Failure = "model-missing" if isinstance(exc, ModelNotFound) else "unreachable"
        status: Status = "interrupted" if reply.prefix else "error"
        return self._finish(reply, status, None, str(exc), failure)

    async def _stream(self, reply: Reply) -> ReplyFinished:
        cid, rid = reply.conversation_id, reply.reply_id
        try:
            engine = self.route(reply)
        except ChatError as exc:
            return self._unrouted(reply, exc)
        conversation = reply.conversation
        reply.status = "streaming"
        self._publish(ReplyStarted(cid, rid, conversation.model, reply.host))
        status: Status = "interrupted"
        stats: ReplyStats | None = None
        error: str | None = None
        failure: Failure | None = None
        saved_at = self.clock()
        save_failed = False
        thought = 0
        first_at: float | None = None
        history = list(reply.history)
        rounds = 0
        figures_at = 0.0
        pieces = 0  # the server's chunks of text since the first one
        try:
            offered = await self._offer(engine, conversation.model)
            while True:
                calls: list[ToolCall] = []
                round_start = len(reply.text)
                extra: dict[str, Any] = {"tools": offered} if offered else {}
                stream = engine.stream(
                    conversation.model,
                    history,
                    conversation.options,
                    pause=self._pause(reply),
                    woken=reply.sighted,
                    burst=reply.bursting,
                    joined=True,  # a batch of tokens at a time: published once, drawn once
                    **extra,
                )
                async with contextlib.aclosing(stream):
                    async for chunk in stream:
                        if chunk.thinking and not reply.parts:
                            thought += len(chunk.thinking)
                            self._publish(ReplyThinking(cid, rid, thought))
                        if chunk.text:
                            if not reply.parts and thought:
                                self._publish(ReplyThinking(cid, rid, thought, done=True))
                            reply.parts.append(chunk.text)
                            self._publish(ReplyText(cid, rid, chunk.text, more=chunk.more))
                            now = self.clock()
                            if first_at is None:
                                first_at = figures_at = now
                                pieces = chunk.pieces - 1  # counted from the first token
                            else:
                                pieces += chunk.pieces
                            if now - figures_at >= FIGURES_EVERY_S:
                                figures_at = now
                                rate = pieces / (now - first_at)
                                self._publish(ReplyFigures(cid, rid, rate))
                        elif not chunk.pieces:  # a burst told as more is over: draw it
                            self._publish(ReplyText(cid, rid, "", more=False))
                        calls.extend(chunk.tool_calls)
                        if chunk.stats is not None:
                            stats = chunk.stats
                        now = self.clock()
                        if now - saved_at >= self.save_interval and not save_failed:
                            saved_at = now
                            try:
                                self.store.update_message(rid, reply.text, status="streaming")
                            except StoreError as exc:
                                save_failed = True
                                self._publish(ReplySaveFailed(cid, rid, str(exc)))
                if not calls or self.tools is None:
                    break
                rounds += 1
                history.append(
                    ChatMessage("assistant", reply.text[round_start:], tool_calls=tuple(calls))
                )
                for call in calls:
                    history.append(await self._use_tool(reply, call, rounds <= MAX_TOOL_ROUNDS))
                if rounds > MAX_TOOL_ROUNDS:
                    offered = []  # the model answers in words now
            status = "done"
        except ChatError as exc:
            status = "interrupted" if reply.parts or reply.prefix or reply.tools else "error"
            error = self._host_failed(reply, exc)
            failure = (
                "unreachable"
                if isinstance(exc, OllamaUnavailable)
                else "model-missing"
                if isinstance(exc, ModelNotFound)
                else "lost"
                if isinstance(exc, StreamBroken)
                else "failed"
            )
        except asyncio.CancelledError:
            self._finish(reply, "interrupted", stats, None)
            raise
        return self._finish(reply, status, stats, error, failure)

    async def _offer(self, engine: ChatEngine, model: str) -> list[dict[str, Any]]:
        """The tools ``model`` is offered (none when it cannot call tools)."""
        if self.tools is None:
            return []
        try:
            return await self.tools.offer(engine, model)
        except ChatError as exc:  # the reply itself will say what is wrong, if anything
            log.warning("no tools offered: %s", exc)
            return []

    def _tools_changed(self, reply: Reply) -> None:
        uses = tuple(reply.tools)
        try:
            self.store.update_message(reply.reply_id, reply.text, status="streaming", tools=uses)
        except StoreError as exc:
            self._publish(ReplySaveFailed(reply.conversation_id, reply.reply_id, str(exc)))
        self._publish(ReplyToolUsed(reply.conversation_id, reply.reply_id, uses))

    async def _use_tool(self, reply: Reply, call: ToolCall, allowed: bool) -> ChatMessage:
        """Run one tool call of ``reply`` (kept and published before and after); its
        answer, as the model gets it. A tool that fails answers with why: the model (and
        the user) read it, and the reply goes on."""
        use = ToolUse(call.name, dict(call.arguments), at=len(reply.text))
        reply.tools.append(use)
        index = len(reply.tools) - 1
        self._tools_changed(reply)
        tools = self.tools
        try:
            if not allowed or tools is None:
                answer = ToolAnswer(
                    f"refused: a reply may call tools {MAX_TOOL_ROUNDS} times at most; "
                    "answer the user with what you have",
                    "refused",
                )
            else:
                request = ToolRequest(
                    reply.conversation_id, reply.reply_id, reply.conversation.model, call
                )
                answer = await tools.call(request)
        except asyncio.CancelledError:
            reply.tools[index] = replace(
                use, result="stopped before the tool answered", state="failed"
            )
            raise
        except Exception as exc:  # a tool's bug must not end the reply: the model is told
            log.exception("tool %s failed", call.name)
            answer = ToolAnswer(f"error: the tool failed: {type(exc).__name__}: {exc}", "failed")
        reply.tools[index] = replace(
            use, result=answer.result, state=answer.state, image=answer.image
        )
        self._tools_changed(reply)
        return ChatMessage("tool", answer.result, tool_name=call.name)

    def _pause(self, reply: Reply) -> Callable[[], Pause]:
        """A reply out of sight is not watched for its last line: nobody waits for its
        last words, and a watch wakes its thread every two tokens or so. It pauses
        longer, but no longer than the save interval: what it is saved as stays as fresh."""
        out_of_sight = (min(OUT_OF_SIGHT_PAUSE_S, self.save_interval), False)

        def pause() -> Pause:
            if not reply.in_sight:
                return out_of_sight
            drawn_every = min(reply.drawn_every, out_of_sight[0])
            return (max(IN_SIGHT_PAUSE_S, drawn_every), True)

        return pause

    def _finish(
        self,
        reply: Reply,
        status: Status,
        stats: ReplyStats | None,
        error: str | None,
        failure: Failure | None = None,
    ) -> ReplyFinished:
        reply.status = "finished"
        content = reply.text
        try:
            self.store.update_message(
                reply.reply_id,
                content,
                status=status,
                stats=stats,
                error=error,
                tools=tuple(reply.tools) or None,
            )
        except StoreError as exc:
            self._publish(ReplySaveFailed(reply.conversation_id, reply.reply_id, str(exc)))
        latest = self.store.conversation(reply.conversation_id)
        title = latest.title if latest else reply.conversation.title
        event = ReplyFinished(
            reply.conversation_id,
            reply.reply_id,
            status,
            content,
            stats,
            error,
            title,
            failure,
            reply.host,
        )
        log.info(
            "reply finished",
            extra={"status": status, "kind": reply.kind, "chars": len(content)},
        )
        self._publish(event)
        return event
