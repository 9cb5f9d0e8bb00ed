"""A real HTTP server that speaks Ollama's API, for tests and benchmarks.

No Ollama is needed: :class:`FakeOllama` listens on 127.0.0.1 (a free port by default) and
answers the endpoints the app uses with the same JSON shapes as Ollama 0.12: ``/api/version``,
``/api/tags``, ``/api/show``, ``/api/ps``, ``/api/chat``, ``/api/generate``, ``/api/pull``,
``/api/delete`` and ``/api/copy``. Streams are NDJSON over HTTP/1.1 chunked transfer encoding,
exactly as Ollama (Go ``net/http``) sends them, so the official ``ollama`` client (httpx) parses
them - and reports a connection that vanishes mid-reply as an incomplete chunked body.

Behaviour is steered by plain attributes that tests may set at any time (``reply``, ``rate``,
``drop_after``, ``error_after``, ``hang``, ``unresponsive``, ...); what happened is recorded in ``requests``,
``sent_tokens``, ``cancelled``, ``sent_last_token_at`` and friends.

Standalone::

    python tests/ollama_server.py --port 11435 [--rate 200] [--reply-file F]
        [--models llama3.2:latest,gemma3:1b] [--loaded gemma3:1b] [--unresponsive]

prints ``listening on http://127.0.0.1:PORT`` once ready and serves until killed. A process
that is not the test itself can steer and observe it over HTTP: ``GET /__fake/state``,
``POST /__fake/config`` (a JSON object of attributes to set) and ``POST /__fake/reset``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import re
import select
import signal
import socket
import ssl
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType, TracebackType
from typing import Any, Literal, NamedTuple, cast
from urllib.parse import urlsplit

JSONObj = dict[str, Any]


@dataclass(frozen=True)
class ToolCallReply:
    """A scripted reply that calls tools, as a model with the ``tools`` capability does:
    ``text`` streams first (often empty), then one chunk carries ``message.tool_calls``
    (each a tool's name and its arguments), then the final chunk. Put it in ``replies``
    (or return it from a ``replies`` callable); the tool's answer comes back in the next
    request as a ``{"role": "tool", ...}`` message (see :func:`tool_messages`)."""

    calls: tuple[tuple[str, JSONObj], ...]
    text: str = ""

    def tool_calls(self) -> list[JSONObj]:
        return [{"function": {"name": n, "arguments": a}} for n, a in self.calls]


Reply = str | ToolCallReply
RepliesFn = Callable[[list[JSONObj], str], Reply]


def tool_messages(request: JSONObj) -> list[JSONObj]:
    """The tools' answers a chat request carries (``role: tool`` messages)."""
    return [m for m in request.get("messages") or [] if m.get("role") == "tool"]


DEFAULT_VERSION = "0.12.6"
DEFAULT_REPLY = (
    "Sure! Here is a **short** answer.\n"
    "\n"
    "- first point\n"
    "- second point\n"
    "\n"
    "```python\n"
    'print("hello")\n'
    "```\n"
)
DEFAULT_ERROR_MESSAGE = "llama runner process has terminated: exit status 2"
DEFAULT_KEEP_ALIVE_S = 300.0
DEFAULT_NUM_CTX = 4096
FOREVER_S = 100 * 365 * 24 * 3600.0

_TOKEN_RE = re.compile(r"\s*\S+|\s+")
_DURATION_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_POLL_S = 0.02


def tokenize(text: str) -> list[str]:
    """Split text into word-ish tokens that keep their whitespace: ``"".join(...) == text``."""
    return cast(list[str], _TOKEN_RE.findall(text))


def rfc3339(ts: float | None = None) -> str:
    """An RFC 3339 timestamp in UTC with nanosecond digits, as Go's time.RFC3339Nano writes."""
    ns = time.time_ns() if ts is None else int(ts * 1e9)
    seconds, frac = divmod(ns, 1_000_000_000)
    stamp = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    digits = f"{frac:09d}".rstrip("0")
    return f"{stamp}.{digits}Z" if digits else f"{stamp}Z"


def parse_keep_alive(value: Any) -> float:
    """Seconds a model stays loaded: a number of seconds or a Go duration ("5m", "1h30m").

    Negative means forever (returned as ``FOREVER_S``); ``None`` means Ollama's default, 5m.
    """
    if value is None or value == "":
        return DEFAULT_KEEP_ALIVE_S
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        text = str(value).strip()
        try:
            seconds = float(text)
        except ValueError:
            sign = -1.0 if text.startswith("-") else 1.0
            parts = _DURATION_RE.findall(text.lstrip("+-"))
            if not parts:
                return DEFAULT_KEEP_ALIVE_S
            seconds = sign * sum(float(n) * _DURATION_UNITS[u] for n, u in parts)
    return FOREVER_S if seconds < 0 else seconds


def _parameter_count(parameter_size: str) -> int:
    match = re.fullmatch(r"([\d.]+)([KMBT]?)", parameter_size.strip().upper())
    if not match:
        return 0
    scale = {"": 1, "K": 10**3, "M": 10**6, "B": 10**9, "T": 10**12}[match.group(2)]
    return int(float(match.group(1)) * scale)


@dataclass
class FakeModel:
    """One installed model, as ``/api/tags`` and ``/api/show`` describe it."""

    name: str
    family: str = "llama"
    parameter_size: str = "3.2B"
    quantization_level: str = "Q4_K_M"
    size: int = 2019393189
    digest: str = ""
    context_length: int = 131072
    embedding_length: int = 3072
    block_count: int = 28
    capabilities: list[str] = field(default_factory=lambda: ["completion", "tools"])
    families: list[str] | None = None
    modified_at: str = "2025-10-01T09:30:12.512738129Z"
    template: str = (
        "{{- range .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n"
        "{{ .Content }}<|eot_id|>{{ end }}<|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    parameters: str = (
        'stop                           "<|start_header_id|>"\n'
        'stop                           "<|end_header_id|>"\n'
        'stop                           "<|eot_id|>"'
    )
    license: str = "LICENSE AGREEMENT (fake)"

    def __post_init__(self) -> None:
        if ":" not in self.name:
            self.name = f"{self.name}:latest"
        if not self.digest:
            self.digest = hashlib.sha256(self.name.encode()).hexdigest()
        if self.families is None:
            self.families = [self.family]

    @property
    def blob_digest(self) -> str:
        return "sha256:" + hashlib.sha256(b"blob:" + self.name.encode()).hexdigest()

    def details(self) -> JSONObj:
        return {
            "parent_model": "",
            "format": "gguf",
            "family": self.family,
            "families": list(self.families or [self.family]),
            "parameter_size": self.parameter_size,
            "quantization_level": self.quantization_level,
        }

    def tag_entry(self) -> JSONObj:
        return {
            "name": self.name,
            "model": self.name,
            "modified_at": self.modified_at,
            "size": self.size,
            "digest": self.digest,
            "details": self.details(),
        }

    def show_entry(self) -> JSONObj:
        arch = self.family
        modelfile = (
            '# Modelfile generated by "ollama show"\n'
            "# To build a new Modelfile based on this, replace FROM with:\n"
            f"# FROM {self.name}\n\n"
            f"FROM /usr/share/ollama/.ollama/models/blobs/{self.blob_digest.replace(':', '-')}\n"
            f'TEMPLATE """{self.template}"""\n'
            + "".join(
                "PARAMETER " + " ".join(line.split(None, 1)) + "\n"
                for line in self.parameters.splitlines()
                if line.strip()
            )
            + f'LICENSE """{self.license}"""\n'
        )
        return {
            "license": self.license,
            "modelfile": modelfile,
            "parameters": self.parameters,
            "template": self.template,
            "details": self.details(),
            "model_info": {
                "general.architecture": arch,
                "general.basename": self.name.split(":", 1)[0],
                "general.file_type": 15,
                "general.parameter_count": _parameter_count(self.parameter_size),
                "general.quantization_version": 2,
                f"{arch}.block_count": self.block_count,
                f"{arch}.context_length": self.context_length,
                f"{arch}.embedding_length": self.embedding_length,
                "tokenizer.ggml.model": "gpt2",
            },
            "capabilities": list(self.capabilities),
            "modified_at": self.modified_at,
        }


def vision_model(name: str = "llava:7b") -> FakeModel:
    """A model with Ollama's ``vision`` capability (and a Modelfile with its parameters)."""
    return FakeModel(
        name=name,
        family="llama",
        parameter_size="7B",
        context_length=4096,
        capabilities=["completion", "vision"],
        parameters="temperature                    0.6\n"
        "top_p                          0.9\n"
        'stop                           "</s>"\n'
        'stop                           "USER:"',
    )


def default_models() -> list[FakeModel]:
    return [
        FakeModel(
            name="llama3.2:latest",
            digest="a80c4f17acd55265feec403c7aef86be0c25983ab279d83f3bcd3abbcb5b8b72",
        ),
        FakeModel(
            name="qwen2.5-coder:7b",
            family="qwen2",
            parameter_size="7.6B",
            size=4683087332,
            digest="dae161e27b0e90dd1856c8bb3209201fd6736d8eb66298e75ed87571486f4364",
            context_length=32768,
            embedding_length=3584,
            capabilities=["completion", "tools", "insert"],
            modified_at="2025-09-12T18:04:55.081203772Z",
            template=(
                "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n"
                "{{ end }}<|im_start|>assistant\n"
            ),
            parameters='stop                           "<|im_start|>"\n'
            'stop                           "<|im_end|>"',
        ),
    ]


class RecordedRequest(NamedTuple):
    """One request as received: ``method, path, body = rec`` (body: parsed JSON or None)."""

    method: str
    path: str
    body: Any


@dataclass
class LoadedModel:
    """A model listed by ``/api/ps``."""

    expires_at: float  # time.time() seconds
    context_length: int = DEFAULT_NUM_CTX


@dataclass(frozen=True)
class _Behaviour:
    rate: float | None
    first_token_delay: float
    drop_after: int | None
    drop_with_reset: bool
    error_after: int | None
    error_message: str
    end_after: int | None
    malformed: bool
    malformed_after: int
    hang: bool
    last_with_end: bool
    stall_after: int | None
    stall_s: float


class _Cancelled(Exception):
    """The client went away (or the server is stopping) while we were answering."""


class FakeOllama:
    """A fake Ollama HTTP server. See the module docstring."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        models: Iterable[FakeModel] | None = None,
        reply: str = DEFAULT_REPLY,
        rate: float | None = None,
        first_token_delay: float = 0.0,
        version: str = DEFAULT_VERSION,
        verbose: bool = False,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.tls = tls
        """A server-side context: the server speaks HTTPS (``url`` says https://)."""
        self.verbose = verbose
        self.version = version
        self.models: dict[str, FakeModel] = {
            m.name: m for m in (default_models() if models is None else models)
        }
        self.loaded: dict[str, LoadedModel] = {}
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()
        self._set_default_behaviour(reply=reply, rate=rate, first_token_delay=first_token_delay)
        self.reset_counters()

    # ------------------------------------------------------------------ behaviour & counters

    def _set_default_behaviour(
        self, *, reply: str = DEFAULT_REPLY, rate: float | None = None, first_token_delay: float = 0
    ) -> None:
        self.reply: str = reply
        self.thinking: str = ""
        """Text a reasoning model streams in ``message.thinking`` before its reply (chat)."""
        # A callable (messages, model) -> text, or a list of texts consumed one per reply
        # (falling back to ``reply`` when empty). Takes precedence over ``reply``.
        self.replies: RepliesFn | list[Reply] | None = None
        self.rate: float | None = rate
        self.first_token_delay: float = first_token_delay
        self.drop_after: int | None = None
        self.drop_with_reset: bool = False  # RST (SO_LINGER 0) instead of FIN
        self.error_after: int | None = None
        self.error_message: str = DEFAULT_ERROR_MESSAGE
        # End the stream cleanly (chunked terminator) after N tokens but with no done chunk.
        self.end_after: int | None = None
        self.malformed: bool = False
        self.malformed_after: int = 1
        self.hang: bool = False
        # The last token, the final line and the stream's end in one write (one TCP
        # segment): a client reads them all at once, as it does from a busy server, or
        # when it reads late.
        self.last_with_end: bool = False
        # After this many tokens, wait ``stall_s`` before the next (a model that stops to
        # think, or a server busy elsewhere), whatever the rate.
        self.stall_after: int | None = None
        self.stall_s: float = 1.0
        # Every request (even /api/version) is read and never answered, as a server whose
        # machine froze: the client's timeout is all that ends it (or the client leaving).
        self.unresponsive: bool = False
        self.status_override: tuple[int, str | JSONObj] | None = None
        self.status_override_path: str | None = None  # None: every path
        self.status_override_times: int | None = None  # None: until cleared
        # /api/pull: a message that fails the pull after "pulling manifest" (as the registry's
        # "pull model manifest: file does not exist" for an unknown name), the seconds between
        # two progress lines, the layers' sizes in bytes (None: a model blob of the model's
        # size and its template, license and params, as Ollama's library models have), the
        # progress lines per layer after its first (which, as Ollama's, has no "completed"),
        # the layers already on disk (a cache hit: completed == total at once), and a drop of
        # the connection after that many lines.
        self.pull_error: str | None = None
        self.pull_delay: float = 0.0
        # The durations a reply's final chunk reports (ns): None for the real ones; fixed
        # ones (prompt_eval, eval) keep figures on screen the same in every run (snapshots).
        self.reported_durations: tuple[int, int] | None = None
        self.pull_layers: list[int] | None = None
        self.pull_steps: int = 4
        self.pull_cached: int = 0
        self.pull_drop_after: int | None = None
        # Hold a pull after each of these counts of progress lines until ``release_pulls()``:
        # a test that needs a mid-download state holds it there instead of hoping to catch a
        # passing frame. ``pull_held`` is the count it waits at (0: not held).
        self.pull_holds: tuple[int, ...] = ()
        self.pull_held: int = 0
        self.pull_release = threading.Event()

    def reset(self) -> None:
        """Back to the default behaviour, with counters and records cleared."""
        with self._lock:
            self._set_default_behaviour()
            self.reset_counters()

    def reset_counters(self) -> None:
        with self._lock:
            self.requests: list[RecordedRequest] = []
            self.request_connections: list[int] = []  # the connection of each request
            self.connections_opened: int = 0  # connections accepted (numbered from 1)
            self.sent_tokens: int = 0  # content tokens written, all streams together
            self.last_stream_tokens: int = 0  # content tokens written by the latest reply
            self.last_stream_length: int = 0  # content tokens the latest reply has in all
            self.streams: int = 0  # chat/generate replies started
            self.completed: int = 0  # replies that reached their final done chunk
            self.cancelled: int = 0  # replies cut short because the client closed the socket
            self.pulls: int = 0  # /api/pull requests that started streaming
            self.pulls_completed: int = 0  # pulls that reached "success"
            self.pulls_cancelled: int = 0  # pulls cut short because the client closed the socket
            self.pull_lines: int = 0  # progress lines written, all pulls together
            self.sent_first_token_at: float | None = None  # monotonic, latest reply
            self.sent_first_token_at_wall: float | None = None  # time.time()
            self.sent_last_token_at: float | None = None  # monotonic, latest token written
            self.sent_last_token_at_wall: float | None = None  # time.time()

    def fail(
        self,
        code: int,
        body: str | JSONObj,
        *,
        path: str | None = None,
        times: int | None = None,
    ) -> None:
        """Answer requests (to ``path``, or all) with ``code``/``body``; ``times=None``: forever."""
        with self._lock:
            self.status_override = (code, body)
            self.status_override_path = path
            self.status_override_times = times

    def release_pulls(self) -> None:
        """Let a pull held at one of ``pull_holds`` go on (to the next hold, or the end)."""
        self.pull_release.set()

    def set_loaded(self, names: Iterable[str], *, expires_in: float = DEFAULT_KEEP_ALIVE_S) -> None:
        """Set what ``/api/ps`` lists, replacing the models loaded so far."""
        with self._lock:
            self.loaded = {
                _normalize(n): LoadedModel(expires_at=time.time() + expires_in) for n in names
            }

    def chat_requests(self) -> list[JSONObj]:
        """The bodies of the ``/api/chat`` requests received, oldest first: what was really
        sent (options, think, format, keep_alive, each message's base64 ``images``)."""
        with self._lock:
            return [
                r.body
                for r in self.requests
                if r.path == "/api/chat" and isinstance(r.body, dict) and r.body.get("messages")
            ]

    def add_model(self, model: FakeModel | str) -> FakeModel:
        m = FakeModel(name=model) if isinstance(model, str) else model
        with self._lock:
            self.models[m.name] = m
        return m

    def remove_model(self, name: str) -> bool:
        with self._lock:
            self.loaded.pop(_normalize(name), None)
            return self.models.pop(_normalize(name), None) is not None

    def state(self) -> JSONObj:
        """Counters and timings as JSON (what ``GET /__fake/state`` answers)."""
        with self._lock:
            return {
                "sent_tokens": self.sent_tokens,
                "last_stream_tokens": self.last_stream_tokens,
                "streams": self.streams,
                "completed": self.completed,
                "cancelled": self.cancelled,
                "pulls": self.pulls,
                "pulls_completed": self.pulls_completed,
                "pulls_cancelled": self.pulls_cancelled,
                "sent_first_token_at_wall": self.sent_first_token_at_wall,
                "sent_last_token_at_wall": self.sent_last_token_at_wall,
                "requests": [list(r) for r in self.requests],
                "loaded": sorted(self.loaded),
            }

    # ------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    def start(self) -> FakeOllama:
        if self._server is not None:
            return self
        self._stopping.clear()
        server = _Server((self.host, self.port), _Handler)
        server.fake = self
        if self.tls is not None:  # each connection's handshake happens as it is accepted
            server.socket = self.tls.wrap_socket(server.socket, server_side=True)
        self._server = server
        self.port = int(server.server_address[1])
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"fake-ollama:{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop promptly, also cutting hanging and streaming requests and idle keep-alives."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        self.close_connections()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=2)
            self._thread = None

    def serve_forever(self) -> None:
        """Start (if needed) and block until stop() is called from elsewhere."""
        self.start()
        self._stopping.wait()

    def __enter__(self) -> FakeOllama:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ------------------------------------------------------------------ helpers for the handler

    def _behaviour(self) -> _Behaviour:
        with self._lock:
            return _Behaviour(
                rate=self.rate,
                first_token_delay=self.first_token_delay,
                drop_after=self.drop_after,
                drop_with_reset=self.drop_with_reset,
                error_after=self.error_after,
                error_message=self.error_message,
                end_after=self.end_after,
                malformed=self.malformed,
                malformed_after=self.malformed_after,
                hang=self.hang,
                last_with_end=self.last_with_end,
                stall_after=self.stall_after,
                stall_s=self.stall_s,
            )

    def _record(self, method: str, path: str, body: Any, connection: int = 0) -> None:
        with self._lock:
            self.requests.append(RecordedRequest(method, path, body))
            self.request_connections.append(connection)

    def _opened(self) -> int:
        with self._lock:
            self.connections_opened += 1
            return self.connections_opened

    def connection_of(self, path: str) -> list[int]:
        """The connections the requests to ``path`` came on, oldest first (numbered in
        the order they were opened, from 1)."""
        with self._lock:
            return [
                n
                for r, n in zip(self.requests, self.request_connections, strict=True)
                if r.path == path
            ]

    def close_connections(self) -> None:
        """Close every connection (as a server does with those kept idle too long)."""
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def _take_override(self, path: str) -> tuple[int, str | JSONObj] | None:
        with self._lock:
            override = self.status_override
            if override is None:
                return None
            if self.status_override_path is not None and self.status_override_path != path:
                return None
            if self.status_override_times is not None:
                self.status_override_times -= 1
                if self.status_override_times <= 0:
                    self.status_override = None
                    self.status_override_times = None
            return override

    def _find(self, name: str) -> FakeModel | None:
        with self._lock:
            return self.models.get(_normalize(name))

    def _next_reply(self, messages: list[JSONObj], model: str) -> Reply:
        with self._lock:
            replies = self.replies
            if isinstance(replies, list):
                return replies.pop(0) if replies else self.reply
            reply = self.reply
        return replies(messages, model) if replies is not None else reply

    def _touch_loaded(self, model: FakeModel, keep_alive: Any, num_ctx: int | None) -> bool:
        """Mark a model as used; False when it was not loaded yet (a cold load)."""
        seconds = parse_keep_alive(keep_alive)
        now = time.time()
        with self._lock:
            self._expire_loaded(now)
            was_loaded = model.name in self.loaded
            if seconds == 0:
                self.loaded.pop(model.name, None)
            else:
                ctx = num_ctx or (self.loaded[model.name].context_length if was_loaded else 0)
                self.loaded[model.name] = LoadedModel(now + seconds, ctx or DEFAULT_NUM_CTX)
            return was_loaded

    def _expire_loaded(self, now: float) -> None:
        for name in [n for n, m in self.loaded.items() if m.expires_at <= now]:
            del self.loaded[name]

    def _ps(self) -> JSONObj:
        with self._lock:
            self._expire_loaded(time.time())
            entries = sorted(self.loaded.items(), key=lambda kv: -kv[1].expires_at)
            models = []
            for name, loaded in entries:
                m = self.models.get(name) or FakeModel(name=name)
                in_memory = int(m.size * 1.25) + loaded.context_length * 64 * 1024
                models.append(
                    {
                        "name": m.name,
                        "model": m.name,
                        "size": in_memory,
                        "digest": m.digest,
                        "details": m.details(),
                        "expires_at": rfc3339(loaded.expires_at),
                        "size_vram": in_memory,
                        "context_length": loaded.context_length,
                    }
                )
            return {"models": models}

    def _token_written(self, first: bool) -> None:
        mono, wall = time.monotonic(), time.time()
        with self._lock:
            self.sent_tokens += 1
            self.last_stream_tokens += 1
            if first:
                self.sent_first_token_at, self.sent_first_token_at_wall = mono, wall
            self.sent_last_token_at, self.sent_last_token_at_wall = mono, wall

    def reply_written(self) -> bool:
        """Every token of the latest reply has been written (the final line may not)."""
        with self._lock:
            return 0 < self.last_stream_length <= self.last_stream_tokens

    def _count(
        self,
        what: Literal[
            "streams", "completed", "cancelled", "pulls", "pulls_completed", "pulls_cancelled"
        ],
        delta: int = 1,
    ) -> None:
        with self._lock:
            setattr(self, what, getattr(self, what) + delta)
            if what == "streams":
                self.last_stream_tokens = 0

    def _configure(self, settings: JSONObj) -> None:
        """Set behaviour attributes from JSON (``POST /__fake/config``)."""
        allowed = {
            "reply",
            "replies",
            "rate",
            "first_token_delay",
            "drop_after",
            "drop_with_reset",
            "error_after",
            "error_message",
            "end_after",
            "malformed",
            "malformed_after",
            "hang",
            "last_with_end",
            "stall_after",
            "stall_s",
            "unresponsive",
            "status_override_path",
            "status_override_times",
            "pull_error",
            "pull_delay",
            "pull_layers",
            "pull_steps",
            "pull_cached",
            "pull_drop_after",
            "pull_holds",
            "version",
        }
        with self._lock:
            for key, value in settings.items():
                if key == "status_override":
                    self.status_override = None if value is None else (int(value[0]), value[1])
                elif key == "loaded":
                    self.set_loaded(value)
                elif key == "replies" and isinstance(value, list):
                    # {"tool_calls": [[name, {arguments}], ...], "text": "..."} calls tools
                    self.replies = [
                        ToolCallReply(
                            tuple((str(n), dict(a)) for n, a in v["tool_calls"]),
                            str(v.get("text", "")),
                        )
                        if isinstance(v, dict)
                        else str(v)
                        for v in value
                    ]
                elif key in allowed:
                    setattr(self, key, value)
                else:
                    raise KeyError(key)


def _normalize(name: str) -> str:
    return name if ":" in name else f"{name}:latest"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 128
    fake: FakeOllama

    def handle_error(self, request: object, client_address: object) -> None:
        """A client that went away (a reply stopped, an app closed) is what a real server
        sees too, no error worth a traceback in the test output."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)  # type: ignore[arg-type]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FakeOllama"
    sys_version = ""
    disable_nagle_algorithm = True  # every token goes out at once, as from Go

    # ------------------------------------------------------------------ plumbing

    @property
    def fake(self) -> FakeOllama:
        return cast(_Server, self.server).fake

    def setup(self) -> None:
        super().setup()
        self.serial = self.fake._opened()
        with self.fake._lock:
            self.fake._connections.add(self.connection)

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            super().finish()
        with self.fake._lock:
            self.fake._connections.discard(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        if self.fake.verbose:
            super().log_message(format, *args)

    def do_GET(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _send(self, code: int, data: bytes, content_type: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD" and data:
            self.wfile.write(data)

    def _send_json(self, code: int, obj: Any) -> None:
        self._send(code, _dumps(obj), "application/json; charset=utf-8")

    def _send_error(self, code: int, message: str) -> None:
        self._send_json(code, {"error": message})

    def _send_text(self, code: int, text: str) -> None:
        self._send(code, text.encode(), "text/plain; charset=utf-8")

    def _start_stream(self) -> None:
        if getattr(self, "_stream_started", False):
            return
        self._stream_started = True
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def _write_line(self, obj: Any) -> None:
        self._write_chunk(_dumps(obj) + b"\n")

    _held: list[bytes] | None = None

    def _write_chunk(self, data: bytes) -> None:
        chunk = b"%x\r\n%s\r\n" % (len(data), data)
        held = self._held
        if held is not None:  # ``last_with_end``: written with the stream's end
            held.append(chunk)
        else:
            self.wfile.write(chunk)

    def _end_stream(self) -> None:
        held, self._held = self._held, None
        self.wfile.write(b"".join(held or ()) + b"0\r\n\r\n")

    def _client_gone(self) -> bool:
        """True when the client closed its end (or the server is stopping)."""
        if self.fake._stopping.is_set():
            return True
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            if not readable:
                return False
            return bool(self.connection.recv(1, socket.MSG_PEEK) == b"")
        except (OSError, ValueError):
            return True

    def _wait(self, seconds: float | None) -> None:
        """Sleep (None: until stopped), raising _Cancelled if the client leaves meanwhile."""
        deadline = None if seconds is None else time.monotonic() + seconds
        while True:
            if self._client_gone():
                raise _Cancelled
            left = _POLL_S if deadline is None else min(_POLL_S, deadline - time.monotonic())
            if left <= 0:
                return
            self.fake._stopping.wait(left)

    def _drop(self, reset: bool) -> None:
        """Vanish: close the TCP connection without finishing the HTTP response."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            if reset:
                self.connection.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
                self.rfile.close()
                self.connection.close()
            else:
                self.connection.shutdown(socket.SHUT_RDWR)

    # ------------------------------------------------------------------ routing

    def _dispatch(self) -> None:
        fake = self.fake
        path = urlsplit(self.path).path
        raw = self._read_body()
        body: Any = None
        bad_json: str | None = None
        if raw.strip():
            try:
                body = json.loads(raw)
            except ValueError as exc:
                body, bad_json = raw.decode(errors="replace"), str(exc)
        fake._record(self.command, path, body, self.serial)
        if fake.unresponsive and not path.startswith("/__fake/"):
            try:
                self._wait(None)
            except _Cancelled:
                self.close_connection = True
            return

        override = fake._take_override(path)
        if override is not None:
            code, payload = override
            if isinstance(payload, str):
                self._send_text(code, payload)
            else:
                self._send_json(code, payload)
            return

        if path.startswith("/__fake/"):
            self._control(path, body)
            return
        route = _ROUTES.get((self.command if self.command != "HEAD" else "GET", path))
        if route is None:
            self._send_text(404, "404 page not found")
            return
        if bad_json is not None or (raw.strip() and not isinstance(body, dict)):
            self._send_error(400, f"invalid request body: {bad_json or 'not an object'}")
            return
        try:
            route(self, body if isinstance(body, dict) else {})
        except _Cancelled:
            self.close_connection = True
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            self.close_connection = True

    def _control(self, path: str, body: Any) -> None:
        fake = self.fake
        if path == "/__fake/state":
            self._send_json(200, fake.state())
        elif path == "/__fake/reset" and self.command == "POST":
            fake.reset()
            self._send_json(200, fake.state())
        elif path == "/__fake/config" and self.command == "POST" and isinstance(body, dict):
            try:
                fake._configure(body)
            except (KeyError, TypeError, ValueError, IndexError) as exc:
                self._send_error(400, f"bad setting: {exc}")
                return
            self._send_json(200, fake.state())
        else:
            self._send_text(404, "404 page not found")

    def _root(self, body: JSONObj) -> None:
        self._send_text(200, "Ollama is running")

    def _version(self, body: JSONObj) -> None:
        self._send_json(200, {"version": self.fake.version})

    def _tags(self, body: JSONObj) -> None:
        with self.fake._lock:
            models = [m.tag_entry() for m in self.fake.models.values()]
        self._send_json(200, {"models": models})

    def _ps_route(self, body: JSONObj) -> None:
        self._send_json(200, self.fake._ps())

    def _show(self, body: JSONObj) -> None:
        name = str(body.get("model") or body.get("name") or "")
        if not name:
            self._send_error(400, "model is required")
            return
        model = self.fake._find(name)
        if model is None:
            self._send_error(404, f"model '{name}' not found")
            return
        self._send_json(200, model.show_entry())

    def _delete(self, body: JSONObj) -> None:
        name = str(body.get("model") or body.get("name") or "")
        if not name:
            self._send_error(400, "model is required")
            return
        if not self.fake.remove_model(name):
            self._send_error(404, f"model '{name}' not found")
            return
        self._send(200, b"", "application/json; charset=utf-8")

    def _copy(self, body: JSONObj) -> None:
        source, destination = str(body.get("source") or ""), str(body.get("destination") or "")
        model = self.fake._find(source)
        if not source or not destination:
            self._send_error(400, "source and destination are required")
            return
        if model is None:
            self._send_error(404, f"model '{source}' not found")
            return
        copied = FakeModel(**{**model.__dict__, "name": _normalize(destination), "digest": ""})
        self.fake.add_model(copied)
        self._send(200, b"", "application/json; charset=utf-8")

    def _pull(self, body: JSONObj) -> None:
        fake = self.fake
        name = str(body.get("model") or body.get("name") or "")
        if not name:
            self._send_error(400, "model is required")
            return
        stream = body.get("stream") is not False
        with fake._lock:
            error, delay, drop_after = fake.pull_error, fake.pull_delay, fake.pull_drop_after
            sizes, steps, cached = fake.pull_layers, max(1, fake.pull_steps), fake.pull_cached
            holds = tuple(fake.pull_holds)
        model = fake._find(name) or FakeModel(name=name)
        lines = _pull_lines(model, error, sizes, steps, cached)
        if not stream:
            self._wait(delay * len(lines))
            if error is None:
                fake.add_model(model)
                self._send_json(200, {"status": "success"})
            else:
                self._send_error(500, error)
            return
        fake._count("pulls")
        try:
            self._start_stream()
            for i, line in enumerate(lines):
                self._wait(delay)
                if drop_after is not None and i == drop_after:
                    self._drop(False)
                    return
                if line.get("status") == "success":
                    fake.add_model(model)
                    fake._count("pulls_completed")
                self._write_line(line)
                with fake._lock:
                    fake.pull_lines += 1
                if i + 1 in holds:
                    fake.pull_held = i + 1
                    while not fake.pull_release.wait(0.05):
                        if fake._stopping.is_set() or self._client_gone():
                            raise _Cancelled
                    fake.pull_release.clear()
                    fake.pull_held = 0
            self._end_stream()
        except (_Cancelled, BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            if not fake._stopping.is_set():
                fake._count("pulls_cancelled")
            raise

    def _chat(self, body: JSONObj) -> None:
        messages = body.get("messages") or []
        if not isinstance(messages, list):
            self._send_error(400, "messages must be a list")
            return
        self._complete("chat", body, [m for m in messages if isinstance(m, dict)])

    def _generate(self, body: JSONObj) -> None:
        prompt = body.get("prompt") or ""
        messages: list[JSONObj] = []
        if body.get("system"):
            messages.append({"role": "system", "content": str(body["system"])})
        if prompt:
            messages.append({"role": "user", "content": str(prompt)})
        self._complete("generate", body, messages)

    # ------------------------------------------------------------------ chat & generate

    def _complete(
        self, kind: Literal["chat", "generate"], body: JSONObj, messages: list[JSONObj]
    ) -> None:
        fake = self.fake
        self._stream_started = False
        t0 = time.monotonic_ns()
        name = str(body.get("model") or "")
        if not name:
            self._send_error(400, "model is required")
            return
        model = fake._find(name)
        if model is None:
            self._send_error(404, f'model "{name}" not found, try pulling it first')
            return
        images = kind == "chat" and any(m.get("images") for m in messages)
        if images and "vision" not in model.capabilities:  # as Ollama answers a text model
            self._send_error(500, "this model is missing data required for image input")
            return
        raw_options = body.get("options")
        options: JSONObj = raw_options if isinstance(raw_options, dict) else {}
        num_ctx = options.get("num_ctx")
        keep_alive = body.get("keep_alive")
        was_loaded = fake._touch_loaded(model, keep_alive, num_ctx if num_ctx else None)

        def frame(content: str, done: bool) -> JSONObj:
            obj: JSONObj = {"model": name, "created_at": rfc3339()}
            if kind == "chat":
                obj["message"] = {"role": "assistant", "content": content}
            else:
                obj["response"] = content
            obj["done"] = done
            return obj

        if not messages:  # Ollama's load / unload request: one JSON object, no stream
            reply = frame("", True)
            reply["done_reason"] = "unload" if parse_keep_alive(keep_alive) == 0 else "load"
            self._send_json(200, reply)
            return

        behaviour = fake._behaviour()
        scripted = fake._next_reply(messages, name)
        calls = scripted.tool_calls() if isinstance(scripted, ToolCallReply) else []
        text = scripted.text if isinstance(scripted, ToolCallReply) else scripted
        tokens, done_reason = _limit(tokenize(text), options)
        prompt_tokens = sum(len(tokenize(str(m.get("content") or ""))) for m in messages)
        prompt_eval_count = prompt_tokens + 4 * len(messages) + 1
        stream = body.get("stream") is not False
        fake._count("streams")

        def final_stats(t_first: int, t_last: int) -> JSONObj:
            load = 1_000_000 if was_loaded else 250_000_000  # reported only, never slept
            stats: JSONObj = {"done_reason": done_reason}
            if kind == "generate":
                stats["context"] = list(range(1, prompt_eval_count + len(tokens) + 1))
            prompt_ns, eval_ns = fake.reported_durations or (
                max(t_first - t0, 1),
                max(t_last - t_first, 1),
            )
            total = prompt_ns + eval_ns if fake.reported_durations else time.monotonic_ns() - t0
            stats.update(
                total_duration=max(total, 1) + load,
                load_duration=load,
                prompt_eval_count=prompt_eval_count,
                prompt_eval_duration=prompt_ns,
                eval_count=len(tokens),
                eval_duration=eval_ns,
            )
            return stats

        try:
            if behaviour.hang:
                self._wait(None)  # returns only by raising _Cancelled
            if behaviour.first_token_delay > 0:
                self._wait(behaviour.first_token_delay)
            if stream:
                thinking = fake.thinking if kind == "chat" else ""
                if thinking:  # a reasoning model thinks first, in message.thinking
                    self._start_stream()
                    for piece in tokenize(thinking):
                        if behaviour.rate:
                            self._wait(1 / behaviour.rate)
                        think = frame("", False)
                        think["message"]["thinking"] = piece
                        self._write_line(think)
                t_first = self._stream_tokens(tokens, behaviour, frame)
                if self._fault_at(len(tokens), behaviour, frame, headers_sent=len(tokens) > 0):
                    return
                t_last = time.monotonic_ns()
                if self._client_gone():
                    raise _Cancelled
                if not tokens:
                    self._start_stream()
                if calls and kind == "chat":  # as Ollama: the calls in a chunk of their own
                    called = frame("", False)
                    called["message"]["tool_calls"] = calls
                    self._write_line(called)
                fake._count("completed")  # before the write, so clients never see it lag
                try:
                    self._write_line({**frame("", True), **final_stats(t_first, t_last)})
                except OSError:
                    fake._count("completed", -1)
                    raise
                self._end_stream()
            else:
                t_first = time.monotonic_ns()
                if behaviour.rate:
                    self._wait(len(tokens) / behaviour.rate)
                fault = _first_fault(len(tokens), behaviour)
                if fault is not None:
                    self._nonstream_fault(fault, behaviour, frame, tokens)
                    return
                t_last = time.monotonic_ns()
                reply = {**frame("".join(tokens), True), **final_stats(t_first, t_last)}
                if calls and kind == "chat":
                    reply["message"]["tool_calls"] = calls
                for i in range(len(tokens)):  # counted first, so clients never see it lag
                    fake._token_written(first=i == 0)
                fake._count("completed")
                self._send_json(200, reply)
        except _Stop:
            self.close_connection = True
        except (_Cancelled, BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            self.close_connection = True
            if not fake._stopping.is_set():
                fake._count("cancelled")
        finally:
            if parse_keep_alive(keep_alive) == 0:
                with fake._lock:
                    fake.loaded.pop(model.name, None)

    def _stream_tokens(
        self, tokens: Sequence[str], b: _Behaviour, frame: Callable[[str, bool], JSONObj]
    ) -> int:
        """Write one chunk per token, paced by ``b.rate``; return when the first went out."""
        start = time.monotonic()
        t_first = time.monotonic_ns()
        self._held = None
        with self.fake._lock:
            self.fake.last_stream_length = len(tokens)
        for i, token in enumerate(tokens):
            if self._fault_at(i, b, frame, headers_sent=i > 0):
                raise _Stop
            if b.stall_after is not None and i == b.stall_after:
                self._wait(b.stall_s)
                start += b.stall_s
            if b.rate:
                self._wait(start + i / b.rate - time.monotonic())
            if self._client_gone():
                raise _Cancelled
            if i == 0:
                self._start_stream()
                t_first = time.monotonic_ns()
            if b.last_with_end and i == len(tokens) - 1:
                self._held = []
            self._write_line(frame(token, False))
            self.fake._token_written(first=i == 0)
        return t_first

    def _fault_at(
        self, sent: int, b: _Behaviour, frame: Callable[[str, bool], JSONObj], *, headers_sent: bool
    ) -> bool:
        """Inject the configured fault once ``sent`` tokens are out; True if one was."""
        fault = _first_fault(sent, b)
        if fault is None or fault[1] != sent:
            return False
        what = fault[0]
        if what == "drop":
            self._drop(b.drop_with_reset)
            return True
        if not headers_sent:
            self._start_stream()
        if what == "error":
            self._write_line({"error": b.error_message})
        elif what == "malformed":
            line = _dumps(frame("never finished", False))
            self._write_chunk(line[: len(line) // 2] + b"\n")
        self._end_stream()
        return True

    def _nonstream_fault(
        self,
        fault: tuple[str, int],
        b: _Behaviour,
        frame: Callable[[str, bool], JSONObj],
        tokens: Sequence[str],
    ) -> None:
        what = fault[0]
        if what == "drop":
            self._drop(b.drop_with_reset)
        elif what == "error":
            self._send_error(500, b.error_message)
        elif what == "end":  # a reply that is not done: content so far, no stats
            self._send_json(200, frame("".join(tokens[: fault[1]]), False))
        else:
            data = _dumps(frame("never finished", True))
            self._send(200, data[: len(data) // 2], "application/json; charset=utf-8")


class _Stop(_Cancelled):
    """A fault was injected; the reply ends here (not a client cancellation)."""


def _first_fault(n_tokens: int, b: _Behaviour) -> tuple[str, int] | None:
    """The earliest configured fault that fires within a reply of ``n_tokens`` tokens."""
    faults = [
        (what, after)
        for what, after in (
            ("drop", b.drop_after),
            ("error", b.error_after),
            ("end", b.end_after),
            ("malformed", b.malformed_after if b.malformed else None),
        )
        if after is not None and 0 <= after <= n_tokens
    ]
    return min(faults, key=lambda f: f[1]) if faults else None


def _pull_lines(
    model: FakeModel, error: str | None, sizes: list[int] | None, steps: int, cached: int
) -> list[JSONObj]:
    """The NDJSON lines of one pull, as Ollama streams them: the manifest, then each layer
    in turn (its first line without "completed", as Go's omitempty drops a zero), then the
    digest check, the manifest and "success"; or, with ``error``, the registry's error."""
    lines: list[JSONObj] = [{"status": "pulling manifest"}]
    if error is not None:
        return [*lines, {"error": error}]
    if sizes is None:  # the model blob, then its template, license and params
        sizes = [max(model.size - 16384, 1), 1429, 7711, 96]
    for index, total in enumerate(sizes):
        digest = "sha256:" + hashlib.sha256(f"{model.name}:{index}".encode()).hexdigest()
        status = f"pulling {digest[7:19]}"
        if index < cached:
            lines.append({"status": status, "digest": digest, "total": total, "completed": total})
            continue
        lines.append({"status": status, "digest": digest, "total": total})
        lines += [
            {"status": status, "digest": digest, "total": total, "completed": total * s // steps}
            for s in range(1, steps + 1)
        ]
    lines += [{"status": "verifying sha256 digest"}, {"status": "writing manifest"}]
    lines.append({"status": "success"})
    return lines


def _limit(tokens: list[str], options: JSONObj) -> tuple[list[str], str]:
    """Apply ``options.stop`` and ``options.num_predict``; return tokens and done_reason."""
    stops = options.get("stop") or []
    if isinstance(stops, str):
        stops = [stops]
    text = "".join(tokens)
    cut = min((i for s in stops if s and (i := text.find(str(s))) >= 0), default=-1)
    if cut >= 0:
        tokens = tokenize(text[:cut])
    num_predict = options.get("num_predict")
    if isinstance(num_predict, int) and num_predict >= 0 and len(tokens) > num_predict:
        return tokens[:num_predict], "length"
    return tokens, "stop"


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


_Route = Callable[[_Handler, JSONObj], None]
_ROUTES: dict[tuple[str, str], _Route] = {
    ("GET", "/"): _Handler._root,
    ("GET", "/api/version"): _Handler._version,
    ("GET", "/api/tags"): _Handler._tags,
    ("GET", "/api/ps"): _Handler._ps_route,
    ("POST", "/api/show"): _Handler._show,
    ("POST", "/api/chat"): _Handler._chat,
    ("POST", "/api/generate"): _Handler._generate,
    ("POST", "/api/pull"): _Handler._pull,
    ("POST", "/api/copy"): _Handler._copy,
    ("DELETE", "/api/delete"): _Handler._delete,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A fake Ollama server for tests and benchmarks.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=11435, help="0 picks a free port")
    parser.add_argument("--rate", type=float, default=None, help="tokens per second")
    parser.add_argument("--reply-file", default=None, help="file whose text is every reply")
    parser.add_argument("--first-token-delay", type=float, default=0.0, help="seconds")
    parser.add_argument("--version", dest="version", default=DEFAULT_VERSION)
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    parser.add_argument(
        "--models",
        default=None,
        help="comma-separated model names it has (default: llama3.2:latest,qwen2.5-coder:7b)",
    )
    parser.add_argument("--loaded", default="", help="comma-separated models loaded at start")
    parser.add_argument(
        "--unresponsive", action="store_true", help="accept connections, never answer"
    )
    args = parser.parse_args(argv)

    reply = DEFAULT_REPLY
    if args.reply_file:
        with open(args.reply_file, encoding="utf-8") as f:
            reply = f.read()
    fake = FakeOllama(
        host=args.host,
        port=args.port,
        reply=reply,
        rate=args.rate,
        first_token_delay=args.first_token_delay,
        version=args.version,
        verbose=args.verbose,
        models=(
            None
            if args.models is None
            else [FakeModel(name.strip()) for name in args.models.split(",") if name.strip()]
        ),
    )
    fake.unresponsive = args.unresponsive
    if args.loaded:
        fake.set_loaded(name.strip() for name in args.loaded.split(",") if name.strip())

    def on_signal(signum: int, frame: FrameType | None) -> None:
        fake._stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    fake.start()
    print(f"listening on {fake.url}", flush=True)
    try:
        while not fake._stopping.wait(0.5):
            pass
    finally:
        fake.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
