"""Ollama through the official ``ollama`` AsyncClient: models, what is loaded, pulls,
and streamed replies.

The client (and httpx, pydantic behind it) is imported on first use, not at
start-up. Every failure comes out as one of the :mod:`engines.chat_types` errors, whose
message says what happened and, where there is one, the command that fixes it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engines.chat_types import (
    ChatError,
    ChatMessage,
    ChatOptions,
    LoadedModel,
    ModelDetails,
    ModelInfo,
    ModelNotFound,
    ModelNotOnRegistry,
    OllamaUnavailable,
    Pause,
    ReplyChunk,
    ReplyStats,
    ServerStatus,
    StreamBroken,
    ToolCall,
)
from engines.config import normalize_host
from engines.tls import client_tls

if TYPE_CHECKING:
    import ollama

    from engines.progress import PullProgress  # loaded with the first pull

log = logging.getLogger(__name__)

URGENT_UNTIL_WORD = 8
"""A reply's first tokens wake the event loop at once, each, until one holds a word (a
letter or a digit), and at most this many: a reply of symbols alone is then batched."""
CONNECTION_CHECK_S = 1.0
"""``keep_connection`` looks at the stream client's connections at most this often."""
CONNECT_TIMEOUT_S = 10.0
"""The longest a connection opened ahead of a reply (``keep_connection``) is waited for
(the configured timeout, when shorter)."""
SHOW_FRESH_S = 120.0
"""How long a model's details from ``show`` are used again (they change only when the
model is pulled or deleted, which forget them)."""


def lean_client_imports() -> None:
    """Make the official client's import bring only what the client uses (about 2.6 MiB
    and 40 modules fewer for as long as the process lives). Call it once at the start,
    before any thread:

    - httpx imports its command-line tool (click, pygments, rich.progress) when they are
      installed, to offer ``httpx.main``; nothing here runs it, so ``httpx._main`` is
      marked absent (httpx then defines a ``main`` that says it is not installed);
    - pydantic looks for plugins by reading the metadata of every installed package when
      the first model is built (ollama's types, as it is imported); none is used here, so
      plugins are off unless ``PYDANTIC_DISABLE_PLUGINS`` is set already (pydantic's own
      switch, read at that moment).
    """
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    if "httpx" not in sys.modules:
        sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]


@dataclass
class _Timer:
    start: float = field(default_factory=time.perf_counter)
    first: float | None = None


async def _close(stream: Any) -> None:
    """Close a client stream (and so its HTTP response), if there is one."""
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        await aclose()


def _once_each(models: Sequence[Any]) -> list[Any]:
    """``models`` (Ollama's list of its models, or of those loaded) with each name once: a
    server may list one twice (a proxy that merges two, or a hostile one), and the lists
    on screen key their rows by name (a duplicate ended the app)."""
    named: dict[str, Any] = {}
    for m in models:
        named.setdefault(m.model or "", m)
    return list(named.values())


def _joined(batch: list[object]) -> list[object]:
    """``batch`` with each run of plain text chunks (no stats, thinking or tool calls)
    made one chunk, in order."""
    out: list[object] = []
    run: list[ReplyChunk] = []

    def close_run() -> None:
        if len(run) == 1:
            out.append(run[0])
        elif run:
            pieces = sum(c.pieces for c in run)
            out.append(ReplyChunk("".join(c.text for c in run), pieces=pieces))
        run.clear()

    for item in batch:
        if (
            isinstance(item, ReplyChunk)
            and item.stats is None
            and not item.thinking
            and not item.tool_calls
        ):
            run.append(item)
            continue
        close_run()
        out.append(item)
    close_run()
    return out


class ChatEngine:
    """Ollama, as the app needs it: models, what is loaded, and streamed replies."""

    def __init__(
        self, host: str, timeout: float = 300.0, keep_alive: str = "5m", name: str = ""
    ) -> None:
        self.host = normalize_host(host)
        self.timeout = timeout
        self.keep_alive = keep_alive
        self.name = name
        """The server's name in ``[ollama] hosts`` (empty: the one server)."""
        self._client: ollama.AsyncClient | None = None
        self._sync: ollama.Client | None = None  # streams replies, in threads
        self._sync_lock = threading.Lock()
        self._connecting = False  # a thread is opening a connection (``keep_connection``)
        self._connection_checked = -CONNECTION_CHECK_S
        self._shown: dict[str, tuple[float, ModelDetails]] = {}
        self._showing: dict[str, asyncio.Future[ModelDetails]] = {}
        """What ``show`` last said of each model, and when (see :data:`SHOW_FRESH_S`)."""

    @property
    def where(self) -> str:
        """The server as error messages name it: ``gpu-box (http://gpu:11434)``."""
        return f"{self.name} ({self.host})" if self.name else self.host

    @property
    def client(self) -> ollama.AsyncClient:
        if self._client is None:
            self._client = self._make_client()
        return self._client

    def _make_client(self) -> ollama.AsyncClient:
        import ollama

        tls = client_tls()
        if self.host.startswith("https:"):
            tls.load_authorities()  # here (in a thread), not at the first request
        return ollama.AsyncClient(host=self.host, timeout=self.timeout, verify=tls)

    async def _aclient(self) -> ollama.AsyncClient:
        """The client, made in a thread the first time: importing it (httpx, pydantic)
        and its SSL context take most of a second on a small machine, which the event
        loop must not wait for (the first frame, or keys, would)."""
        if self._client is None:
            client = await asyncio.to_thread(self._make_client)
            if self._client is None:
                self._client = client
        return self._client

    def _sync_client(self) -> ollama.Client:
        """The client that streams replies (in threads). Making it costs tens of
        milliseconds (httpx builds an SSL context): it is made in a thread, once the
        server has answered (see ``status``), not when the first reply starts."""
        with self._sync_lock:
            if self._sync is None:
                from engines.reply_stream import sync_client

                self._sync = sync_client(self.host, self.timeout)
            return self._sync

    async def aclose(self) -> None:
        if self._sync is not None:
            self._sync.close()  # type: ignore[no-untyped-call]  # ollama leaves it untyped
            self._sync = None
        if self._client is not None:
            await self._client.close()  # type: ignore[no-untyped-call]  # ollama leaves it untyped
            self._client = None

    # -- errors -------------------------------------------------------------

    def _translate(self, exc: BaseException, model: str | None = None) -> ChatError:
        import httpx
        import ollama

        if isinstance(exc, ChatError):
            return exc
        if isinstance(exc, ollama.ResponseError):
            code = exc.status_code
            text = str(exc.error).strip() or (f"HTTP {code}" if code > 0 else "an error")
            if code == 404 and model and "not found" in text:
                return ModelNotFound(model)
            if code <= 0:  # an {"error": ...} line in the middle of a stream: no HTTP status
                return ChatError(f"Ollama answered: {text}")
            return ChatError(f"Ollama answered: {text} (HTTP {code})")
        if isinstance(exc, ConnectionError | httpx.ConnectError):
            return OllamaUnavailable(
                f"cannot reach Ollama at {self.where}: is it running? (start it with: ollama serve)"
            )
        if isinstance(exc, httpx.TimeoutException):
            return OllamaUnavailable(
                f"Ollama at {self.where} did not answer within {self.timeout:g} s "
                "([ollama] timeout in config.toml)"
            )
        if isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError | httpx.WriteError):
            return StreamBroken(f"the connection to Ollama at {self.where} was lost ({exc})")
        if isinstance(exc, httpx.HTTPError):
            return ChatError(f"talking to Ollama at {self.where} failed: {exc}")
        if isinstance(exc, ValueError):  # malformed JSON from the server
            return ChatError(f"Ollama at {self.where} sent something unreadable: {exc}")
        return ChatError(f"{type(exc).__name__}: {exc}")

    # -- queries ------------------------------------------------------------

    async def warm_stream(self) -> None:
        """Make the client that streams replies now, in a thread (see ``_sync_client``),
        with a connection open to the server, so the first reply waits for neither."""
        if self._sync is None:
            await asyncio.to_thread(self._open_connection)

    def keep_connection(self) -> None:
        """While a prompt is written: see that the client that streams replies has a
        connection open to the server, so the reply does not wait for a new one (a round
        trip, two or three with TLS; on this machine, the server on it, 6-10 ms of the
        40-50 from Enter to the first token). One kept from an earlier request is closed
        after :data:`~engines.reply_stream.IDLE_KEEP_S`, or by the server.

        Returns at once: a thread opens it, with a request for the server's version.
        Looks at most every ``CONNECTION_CHECK_S``, and not before the server has
        answered once (``warm_stream``)."""
        from engines.reply_stream import needs_connection

        now = time.monotonic()
        if self._sync is None or self._connecting:
            return
        if now - self._connection_checked < CONNECTION_CHECK_S:
            return
        self._connection_checked = now
        if not needs_connection(self._sync):
            return
        self._connecting = True
        threading.Thread(target=self._open_connection, name="ollama-connect", daemon=True).start()

    def _open_connection(self) -> None:
        """In a thread: the stream client, with a connection open to the server."""
        from engines.reply_stream import needs_connection

        self._connecting = True
        try:
            client = self._sync_client()
            if needs_connection(client):
                client._client.get("/api/version", timeout=min(self.timeout, CONNECT_TIMEOUT_S))
        except Exception as exc:  # the reply that follows says what is wrong, if anything is
            log.debug("opening a connection to %s failed: %s", self.where, exc)
        finally:
            self._connecting = False

    async def status(self, *, warm_stream: bool = False) -> ServerStatus:
        """Whether the server answers, and its version. ``warm_stream``: once it does,
        make the client that streams replies now (see ``_sync_client``)."""
        try:
            version = await self.version()
        except ChatError as exc:
            return ServerStatus(online=False, host=self.host, error=str(exc))
        if warm_stream:
            await self.warm_stream()
        return ServerStatus(online=True, host=self.host, version=version)

    async def version(self) -> str:
        try:
            response = await (await self._aclient())._request_raw(  # type: ignore[no-untyped-call]
                "GET", "/api/version"
            )
            data = response.json()
        except Exception as exc:
            raise self._translate(exc) from exc
        return str(data.get("version", ""))

    async def list_models(self) -> list[ModelInfo]:
        try:
            response = await (await self._aclient()).list()
        except Exception as exc:
            raise self._translate(exc) from exc
        models = []
        for m in _once_each(response.models):
            d = m.details
            models.append(
                ModelInfo(
                    name=m.model or "",
                    size=int(m.size or 0),
                    family=(d.family or "") if d else "",
                    parameter_size=(d.parameter_size or "") if d else "",
                    quantization=(d.quantization_level or "") if d else "",
                    modified_at=m.modified_at,
                    host=self.name,
                )
            )
        return sorted(models, key=lambda m: m.name)

    def known(self, model: str) -> ModelDetails | None:
        """What ``show`` said of ``model`` less than :data:`SHOW_FRESH_S` ago, or None:
        without a turn of the event loop (the first reply's request waits on none)."""
        known = self._shown.get(model)
        if known is not None and time.monotonic() - known[0] < SHOW_FRESH_S:
            return known[1]
        return None

    async def show(self, model: str, *, fresh: bool = False) -> ModelDetails:
        """A model's details and capabilities. The header, the context meter, the tools
        offered and the vision check all ask this of the same model within a moment: an
        answer younger than :data:`SHOW_FRESH_S` is used again (unless ``fresh``), so the
        first reply does not wait on a question already answered. Pulling or deleting
        the model forgets it."""
        known = self._shown.get(model)
        if known is not None and not fresh and time.monotonic() - known[0] < SHOW_FRESH_S:
            return known[1]
        asking = self._showing.get(model)
        if asking is None or fresh:  # one question at a time for all who wait on it
            asking = asyncio.ensure_future(self._show(model))
            self._showing[model] = asking
            asking.add_done_callback(lambda _: self._showing.pop(model, None))
        details = await asyncio.shield(asking)
        self._shown[model] = (time.monotonic(), details)
        return details

    async def _show(self, model: str) -> ModelDetails:
        try:
            r = await (await self._aclient()).show(model)
        except Exception as exc:
            raise self._translate(exc, model) from exc
        info: Mapping[str, Any] = r.modelinfo or {}
        context = next(
            (
                int(v)
                for k, v in info.items()
                if k.endswith(".context_length") and isinstance(v, int)
            ),
            None,
        )
        d = r.details
        return ModelDetails(
            name=model,
            family=(d.family or "") if d else "",
            parameter_size=(d.parameter_size or "") if d else "",
            quantization=(d.quantization_level or "") if d else "",
            context_length=context,
            capabilities=tuple(r.capabilities or ()),
            parameters=r.parameters or "",
            template=r.template or "",
            license=r.license or "",
        )

    async def pull(self, model: str) -> AsyncGenerator[PullProgress, None]:
        """Download ``model`` from its registry, yielding progress as Ollama reports it,
        until the last line ("success"). Closing the iterator (or cancelling the task
        that reads it) closes the HTTP stream: Ollama stops the download and keeps what
        it has, so pulling again resumes it."""
        from engines.progress import PullTracker

        tracker = PullTracker(model)
        inner: AsyncIterator[Any] | None = None
        self._shown.pop(model, None)
        log.info("pull", extra={"model": model})
        try:
            inner = await (await self._aclient()).pull(model, stream=True)
            async for part in inner:
                progress = tracker.update(
                    str(part.status or ""),
                    str(part.digest or ""),
                    int(part.total or 0),
                    int(part.completed or 0),
                )
                yield progress
                if progress.done:
                    log.info("pulled", extra={"model": model})
                    return
        except (asyncio.CancelledError, GeneratorExit):
            raise
        except Exception as exc:
            raise self._translate_pull(exc, model) from exc
        finally:
            await _close(inner)
        raise StreamBroken(f"Ollama at {self.host} ended the pull of {model!r} before it finished")

    def _translate_pull(self, exc: BaseException, model: str) -> ChatError:
        import ollama

        if isinstance(exc, ollama.ResponseError):
            text = str(exc.error).strip()
            if "file does not exist" in text or (exc.status_code == 404 and "manifest" in text):
                return ModelNotOnRegistry(model, text)
        return self._translate(exc)

    async def delete(self, model: str) -> None:
        """Remove ``model`` from the server (its files too, unless another model shares them)."""
        self._shown.pop(model, None)
        try:
            await (await self._aclient()).delete(model)
        except Exception as exc:
            import ollama

            if isinstance(exc, ollama.ResponseError) and exc.status_code == 404:
                raise ModelNotFound(
                    model, f"model {model!r} is not installed, so there is nothing to delete"
                ) from exc
            raise self._translate(exc, model) from exc
        log.info("deleted model", extra={"model": model})

    async def loaded(self) -> list[LoadedModel]:
        try:
            r = await (await self._aclient()).ps()
        except Exception as exc:
            raise self._translate(exc) from exc
        return [
            LoadedModel(
                name=m.model or "",
                size=int(m.size or 0),
                size_vram=int(m.size_vram or 0),
                expires_at=m.expires_at,
                context_length=getattr(m, "context_length", None),
                host=self.name,
            )
            for m in _once_each(r.models)
        ]

    async def unload(self, model: str) -> None:
        """Ask Ollama to free a loaded model now (keep_alive=0)."""
        try:
            await (await self._aclient()).generate(model=model, keep_alive=0)
        except Exception as exc:
            raise self._translate(exc, model) from exc

    # -- chat ---------------------------------------------------------------

    image_max_side: int = 1024
    """Longest side of an image sent to a model ([chat] image_max_side); larger ones are
    scaled down for the request (the stored copy is the original)."""

    def build_messages(
        self, history: Sequence[ChatMessage], options: ChatOptions
    ) -> list[dict[str, Any]]:
        from engines.attachments import image_for_model

        messages: list[dict[str, Any]] = []
        for m in history:
            if m.role == "system":
                continue
            message: dict[str, Any] = {"role": m.role, "content": m.content}
            if m.tool_calls:
                message["tool_calls"] = [
                    {"function": {"name": c.name, "arguments": dict(c.arguments)}}
                    for c in m.tool_calls
                ]
            if m.tool_name:
                message["tool_name"] = m.tool_name
            if m.images:
                try:
                    message["images"] = [
                        image_for_model(Path(p), self.image_max_side) for p in m.images
                    ]
                except OSError as exc:
                    raise ChatError(
                        f"an image of this conversation cannot be read ({exc}): it may have "
                        "been removed from the data folder"
                    ) from None
            messages.append(message)
        if options.system_prompt:
            messages.insert(0, {"role": "system", "content": options.system_prompt})
        return messages

    async def _messages(
        self, history: Sequence[ChatMessage], options: ChatOptions
    ) -> list[dict[str, Any]]:
        """The messages of a request; images are read and scaled in a thread."""
        if any(m.images for m in history):
            return await asyncio.to_thread(self.build_messages, history, options)
        return self.build_messages(history, options)

    def _request(self, options: ChatOptions) -> dict[str, Any]:
        """What the options add to a chat request besides its messages."""
        extra: dict[str, Any] = {
            "options": options.to_ollama(),
            "keep_alive": options.keep_alive or self.keep_alive,
        }
        if (think := options.think_value()) is not None:
            extra["think"] = think
        if (form := options.format_value()) is not None:
            extra["format"] = form
        return extra

    async def stream(
        self,
        model: str,
        history: Sequence[ChatMessage],
        options: ChatOptions,
        *,
        pause: Callable[[], Pause] | None = None,
        woken: threading.Event | None = None,
        burst: threading.Event | None = None,
        tools: Sequence[Mapping[str, Any]] = (),
        joined: bool = False,
    ) -> AsyncGenerator[ReplyChunk, None]:
        """Stream the reply to ``history``. Closing the iterator (or cancelling the task
        that reads it) closes the HTTP stream, which makes Ollama stop generating.

        The reply is read in a thread by the sync client (see :mod:`engines.reply_stream`:
        half the CPU of the async client, off the event loop). ``pause()``: the seconds
        the reader waits once it has caught up with the server, so that it then reads
        several tokens at once, and whether the reply's last line ends the wait
        (``Pause``); ``woken``, set, ends a pause that is not watched; ``burst`` is set while
        the reader is behind the server (``reply_stream.Reading.behind``). ``tools``: the tools offered
        (JSON schemas, as Ollama takes them); a call comes as a chunk's ``tool_calls``.
        ``joined``: the tokens read since the last wake-up of the loop come as one chunk
        (``pieces`` says how many), not one chunk each: what reads the reply then does its
        work per batch, not per token. A chunk handed over as followed by more
        (``ReplyChunk.more``) when none came after all is then followed, once the reader
        waits for the server again, by a chunk with no text and ``pieces`` 0."""
        from engines import reply_stream

        timer = _Timer()
        log.info("chat request", extra={"model": model, "messages": len(history)})
        client = (
            self._sync if self._sync is not None else await asyncio.to_thread(self._sync_client)
        )
        messages = await self._messages(history, options)

        def parts() -> Iterator[Any]:
            return client.chat(
                model=model,
                messages=messages,
                stream=True,
                tools=[dict(t) for t in tools] or None,
                **self._request(options),
            )

        urgent = [URGENT_UNTIL_WORD]  # tokens still sent at once: 0 once a word has come

        def convert(part: Any) -> reply_stream.Converted:
            text = part.message.content or ""
            calls = getattr(part.message, "tool_calls", None)
            if calls:
                found = tuple(
                    ToolCall(str(c.function.name), dict(c.function.arguments or {})) for c in calls
                )
                if part.done:
                    stats = self._stats(model, part, timer)
                    return ReplyChunk(text, stats, tool_calls=found), True, True
                return ReplyChunk(text, tool_calls=found), True, False
            if text and timer.first is None:
                timer.first = time.perf_counter()
            if part.done:
                return ReplyChunk(text, self._stats(model, part, timer)), True, True
            thinking = getattr(part.message, "thinking", None) or ""
            if text and urgent[0]:
                # the first tokens, up to the first word, at once: batched, the words after
                # a lone "#" came 20 ms after it, and the "#" was drawn alone meanwhile
                urgent[0] = 0 if any(c.isalnum() for c in text) else urgent[0] - 1
                return ReplyChunk(text, thinking=thinking), True, False
            if text or thinking:
                return ReplyChunk(text, thinking=thinking), False, False
            return None

        feed = reply_stream.Feed(asyncio.get_running_loop())
        reading = reply_stream.Reading(woken, burst)
        reply_stream.read_in_thread(parts, convert, feed, reading, pause)
        told_more = False  # the last chunk handed over said more had come already
        try:
            while True:
                batch = await feed.get()
                if any(item is reply_stream.BURST_OVER for item in batch):
                    batch = [item for item in batch if item is not reply_stream.BURST_OVER]
                    if not batch:
                        if told_more and joined:
                            told_more = False
                            yield ReplyChunk("", pieces=0)  # no more after all: draw what came
                        continue
                items = _joined(batch) if joined else batch
                last = items[-1] if items else None
                if reading.behind and isinstance(last, ReplyChunk) and last.stats is None:
                    items[-1] = replace(last, more=True)  # the rest is being read already
                if items:
                    told_more = isinstance(items[-1], ReplyChunk) and items[-1].more
                for item in items:
                    if item is reply_stream.END:
                        raise StreamBroken(
                            f"Ollama at {self.where} ended the reply without finishing it"
                        )
                    if isinstance(item, BaseException):
                        raise self._translate(item, model) from item
                    assert isinstance(item, ReplyChunk)
                    yield item
                    if item.stats is not None:
                        return
        finally:
            reading.stop()

    async def reply(
        self, model: str, history: Sequence[ChatMessage], options: ChatOptions
    ) -> tuple[str, ReplyStats]:
        """The whole reply at once (stream=False)."""
        timer = _Timer()
        try:
            r = await (await self._aclient()).chat(
                model=model,
                messages=await self._messages(history, options),
                stream=False,
                **self._request(options),
            )
        except Exception as exc:
            raise self._translate(exc, model) from exc
        return r.message.content or "", self._stats(model, r, timer)

    @staticmethod
    def _stats(model: str, part: Any, timer: _Timer) -> ReplyStats:
        eval_count = int(part.eval_count or 0)
        eval_ns = int(part.eval_duration or 0)
        now = time.perf_counter()
        return ReplyStats(
            model=model,
            prompt_tokens=int(part.prompt_eval_count or 0),
            eval_tokens=eval_count,
            tokens_per_s=eval_count / (eval_ns / 1e9) if eval_ns > 0 else 0.0,
            first_token_s=(timer.first - timer.start) if timer.first is not None else None,
            total_s=(int(part.total_duration or 0) / 1e9) or (now - timer.start),
            load_s=int(part.load_duration or 0) / 1e9,
            done_reason=str(part.done_reason or ""),
        )
