"""Several Ollama servers in one app: each with its own :class:`ChatEngine`, its own state,
and its own retries; one model list labelled by server; and the rule that picks the
server for a model.

The servers come from ``[ollama] hosts`` (or the one ``[ollama] host``). Each is checked on
its own (:meth:`HostRegistry.watch`, one task per server): a server that hangs is marked
unreachable when its timeout runs out, and never delays the others. Routing
(:meth:`HostRegistry.route`): an explicit choice wins; else the first server in the list
that has the model loaded, else the first that has it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from engines.chat_types import (
    ChatError,
    LoadedModel,
    ModelInfo,
    ModelNotFound,
    OllamaUnavailable,
    ServerStatus,
    StreamBroken,
)
from engines.config import HostSpec, Settings, normalize_host, ollama_hosts
from engines.ollama_client import ChatEngine

log = logging.getLogger(__name__)

ONLINE_RECHECK_S = 15.0
"""How often a reachable server is checked again (its loaded models change)."""
KEY_SEPARATOR = "\x1f"
"""Between a server's name and a model's in a :func:`model_key` (in neither name)."""


class HostUnknown(ChatError):
    """A server name that ``[ollama] hosts`` does not have."""


@dataclass(frozen=True)
class HostState:
    """What is known of one server: reachable or not (None: not asked yet), its version,
    its models and those loaded (with their VRAM)."""

    name: str
    url: str
    online: bool | None = None
    version: str = ""
    error: str = ""
    models: tuple[ModelInfo, ...] = ()
    loaded: tuple[LoadedModel, ...] = ()
    checked_at: float = 0.0

    @property
    def status(self) -> ServerStatus:
        return ServerStatus(bool(self.online), self.url, self.version, self.error)

    def has(self, model: str) -> bool:
        return any(same_model(m.name, model) for m in self.models)

    def has_loaded(self, model: str) -> bool:
        return any(same_model(m.name, model) for m in self.loaded)

    def to_dict(self) -> dict[str, object]:
        """The server for ``status --json``."""
        return {
            "name": self.name,
            "host": self.url,
            "status": "unknown" if self.online is None else "online" if self.online else "offline",
            "version": self.version,
            "error": self.error,
            "models": len(self.models),
            "loaded_models": [
                {
                    "name": m.name,
                    "size": m.size,
                    "size_vram": m.size_vram,
                    "expires_at": m.expires_at.isoformat() if m.expires_at else None,
                }
                for m in self.loaded
            ],
        }


def same_model(a: str, b: str) -> bool:
    """``llama3.2`` is ``llama3.2:latest``, as Ollama reads it."""
    return a == b or (":" not in a and f"{a}:latest" == b) or (":" not in b and f"{b}:latest" == a)


def model_key(host: str, model: str) -> str:
    """One entry of the model list across servers (an option's id, a picker's value)."""
    return f"{host}{KEY_SEPARATOR}{model}" if host else model


def split_key(key: str) -> tuple[str, str]:
    """(server, model) of a :func:`model_key`; the server is empty for a bare model name."""
    host, sep, model = key.partition(KEY_SEPARATOR)
    return (host, model) if sep else ("", key)


@dataclass
class Host:
    """One server: its settings, its engine, what is known of it."""

    spec: HostSpec
    engine: ChatEngine
    state: HostState
    wake: asyncio.Event | None = None
    checking: asyncio.Lock | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.spec.name


Listener = Callable[[HostState], None]


class HostRegistry:
    """Every Ollama server of the app; see the module's docstring."""

    def __init__(
        self,
        specs: Sequence[HostSpec],
        *,
        keep_alive: str = "5m",
        retry_interval: float = 5.0,
        image_max_side: int = 1024,
        online_recheck: float = ONLINE_RECHECK_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not specs:
            raise ValueError("at least one Ollama server is needed")
        self.multi = len(specs) > 1
        """More than one server: models are labelled with theirs."""
        self.hosts: list[Host] = [
            Host(
                spec,
                # one server: its errors read as before, with no name
                ChatEngine(
                    spec.url, spec.timeout, keep_alive, name=spec.name if self.multi else ""
                ),
                HostState(spec.name, normalize_host(spec.url)),
            )
            for spec in specs
        ]
        for host in self.hosts:
            host.engine.image_max_side = image_max_side
        self.retry_interval = retry_interval
        self.online_recheck = online_recheck
        self.clock = clock
        self._listeners: list[Listener] = []

    @classmethod
    def from_settings(cls, settings: Settings) -> HostRegistry:
        return cls(
            ollama_hosts(settings),
            keep_alive=settings.ollama.keep_alive,
            retry_interval=settings.ollama.retry_interval,
            image_max_side=settings.chat.image_max_side,
        )

    # -- the servers --------------------------------------------------------------------

    @property
    def names(self) -> list[str]:
        return [h.name for h in self.hosts]

    @property
    def first(self) -> Host:
        return self.hosts[0]

    def get(self, name: str) -> Host:
        for host in self.hosts:
            if host.name == name:
                return host
        raise HostUnknown(
            f"there is no Ollama server named {name!r}; the servers are: "
            f"{', '.join(self.names)} ([ollama] hosts in config.toml)"
        )

    def find(self, name: str) -> Host | None:
        return next((h for h in self.hosts if h.name == name), None)

    @property
    def states(self) -> tuple[HostState, ...]:
        return tuple(h.state for h in self.hosts)

    def summary(self) -> ServerStatus | None:
        """One status for all the servers: online when any is, else the first's error;
        None while none has answered yet. With one server, that server's status."""
        states = self.states
        if not self.multi:
            return None if states[0].online is None else states[0].status
        online = [s for s in states if s.online]
        if online:
            return replace(online[0].status, host=", ".join(s.name for s in online))
        if all(s.online is None for s in states):
            return None
        errors = "; ".join(f"{s.name}: {s.error}" for s in states if s.error)
        return ServerStatus(False, ", ".join(self.names), "", errors or "no server answers")

    def catalog(self) -> list[ModelInfo]:
        """Every reachable server's models, each labelled with its server, in the order of
        the servers, then by name."""
        return [m for s in self.states if s.online for m in s.models]

    def loaded(self) -> list[LoadedModel]:
        return [m for s in self.states if s.online for m in s.loaded]

    async def loaded_now(self) -> list[LoadedModel]:
        """What every reachable server has loaded now, each asked within its timeout (one
        that fails adds nothing; its watcher will say why)."""

        async def one(host: Host) -> list[LoadedModel]:
            try:
                async with asyncio.timeout(host.spec.timeout):
                    return [replace(m, host=host.name) for m in await host.engine.loaded()]
            except (TimeoutError, ChatError):
                self.wake(host.name)
                return []

        online = [h for h in self.hosts if h.state.online]
        found = await asyncio.gather(*(one(h) for h in online))
        return [m for models in found for m in models]

    def local_engines(self) -> list[ChatEngine]:
        """The engines of the servers on this machine (they share its GPU); with one
        server, that one, wherever it is (it may be this machine by another name)."""
        if not self.multi:
            return [self.first.engine]
        local = ("127.0.0.1", "localhost", "::1")
        return [
            h.engine for h in self.hosts if urllib.parse.urlsplit(h.engine.host).hostname in local
        ]

    def with_model(self, model: str) -> list[Host]:
        """The reachable servers that have ``model``, in the list's order."""
        return [h for h in self.hosts if h.state.online and h.state.has(model)]

    # -- routing -------------------------------------------------------------------------

    def route(self, model: str, host: str | None = None) -> Host:
        """The server a reply with ``model`` goes to: ``host`` when one is chosen; else the
        first reachable server with the model loaded, else the first that has it. With no
        server known to have it, the first that has not answered yet is asked (its answer
        says what is wrong); when every one has answered, :class:`ModelNotFound` names
        them, or :class:`OllamaUnavailable` when none is reachable."""
        if host:
            chosen = self.get(host)
            if chosen.state.online is False:
                others = [h.name for h in self.with_model(model) if h is not chosen]
                hint = (
                    f"; resend to {' or '.join(others)}, which ha{'ve' if len(others) > 1 else 's'}"
                    f" {model}"
                    if others
                    else ""
                )
                raise OllamaUnavailable(
                    f"{chosen.name} is unreachable ({chosen.state.error or 'not answering'})" + hint
                )
            return chosen
        if not self.multi:
            return self.first
        having = self.with_model(model)
        for candidate in having:
            if candidate.state.has_loaded(model):
                return candidate
        if having:
            return having[0]
        unknown = [h for h in self.hosts if h.state.online is None]
        if unknown:  # not every server has answered yet: ask the first of those
            return unknown[0]
        online = [h.name for h in self.hosts if h.state.online]
        if online:
            down = [h.name for h in self.hosts if h.state.online is False]
            raise ModelNotFound(
                model,
                f"model {model!r} is on none of the servers that answer ({', '.join(online)})"
                + (f"; {', '.join(down)} cannot be reached" if down else "")
                + f"; pull it onto one (Models dialog, or: llm-pessoal models pull {model} "
                f"--host {online[0]})",
            )
        raise OllamaUnavailable(
            "no Ollama server answers: "
            + "; ".join(f"{h.name}: {h.state.error or 'unreachable'}" for h in self.hosts)
        )

    def choice(self, model: str, host: str = "") -> str:
        """The server :meth:`route` would pick now, by name; empty when none can be told."""
        try:
            return self.route(model, host or None).name
        except ChatError:
            return host

    # -- watching ------------------------------------------------------------------------

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener`` with a server's state whenever it changes."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def _set(self, host: Host, state: HostState) -> None:
        old, host.state = host.state, state
        if old.online != state.online:
            log.info(
                "ollama %s",
                "online" if state.online else "offline",
                extra={"host": state.url, "server": state.name},
            )
        if replace(old, checked_at=0.0) != replace(state, checked_at=0.0):
            for listener in list(self._listeners):
                try:
                    listener(state)
                except Exception:  # one broken listener must not stop the watching
                    log.exception("a host listener failed")

    async def check(self, host: Host, *, warm_stream: bool = False) -> HostState:
        """Ask one server for its version, models and loaded models, within its timeout.
        ``warm_stream`` (the app's watch): once it answers, have the client that streams
        replies ready, with a connection open (``ChatEngine.warm_stream``); a command that
        only lists servers does not need it."""
        if host.checking is None:
            host.checking = asyncio.Lock()
        async with host.checking:
            engine = host.engine
            state = host.state
            try:
                async with asyncio.timeout(host.spec.timeout):
                    version = await engine.version()
                    models, loaded = await asyncio.gather(
                        engine.list_models(), engine.loaded(), return_exceptions=True
                    )
                    if isinstance(models, BaseException):
                        raise models
                    if isinstance(loaded, BaseException):  # answers the rest: still online
                        log.warning("%s: reading its loaded models failed: %s", host.name, loaded)
                        loaded = []
            except TimeoutError:
                error = f"Ollama at {engine.where} did not answer within {host.spec.timeout:g} s"
                new = replace(state, online=False, error=error, checked_at=self.clock())
            except ChatError as exc:
                new = replace(state, online=False, error=str(exc), checked_at=self.clock())
            else:
                new = HostState(
                    host.name,
                    state.url,
                    True,
                    version,
                    "",
                    tuple(replace(m, host=host.name) for m in models),
                    tuple(replace(m, host=host.name) for m in loaded),
                    self.clock(),
                )
            self._set(host, new)
        # the stream client, made before the first reply (out of the lock: its connection
        # may take as long as the server does, and a check asked meanwhile need not wait)
        if new.online and warm_stream:
            try:
                await host.engine.warm_stream()
            except Exception as exc:
                log.warning("%s: preparing the stream client failed: %s", host.name, exc)
        return new

    async def check_all(self) -> tuple[HostState, ...]:
        """Every server at once; the slowest takes its own timeout, no more."""
        await asyncio.gather(*(self.check(h) for h in self.hosts))
        return self.states

    async def watch(self, host: Host) -> None:
        """Check ``host`` now and then, forever (run one per server): faster while it is
        down, so it comes back on its own; at once when :meth:`wake` is called."""
        if host.wake is None:
            host.wake = asyncio.Event()
        while True:
            host.wake.clear()
            state = await self.check(host, warm_stream=True)
            wait = self.online_recheck if state.online else self.retry_interval
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(host.wake.wait(), timeout=wait)

    def wake(self, name: str | None = None) -> None:
        """Check a server (by default every one) again now, e.g. after a failed request."""
        for host in self.hosts:
            if name in (None, host.name) and host.wake is not None:
                host.wake.set()

    def failed(self, name: str, error: ChatError) -> None:
        """A request to ``name`` found it gone: mark it unreachable now, and check again."""
        host = self.find(name)
        if host is None:
            return
        if isinstance(error, OllamaUnavailable | StreamBroken):
            self._set(host, replace(host.state, online=False, error=str(error)))
        self.wake(name)

    async def aclose(self) -> None:
        for host in self.hosts:
            await host.engine.aclose()
