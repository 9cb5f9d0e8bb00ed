"""Chat with Ollama models through the official ``ollama`` AsyncClient.

The client (and httpx, pydantic behind it) is imported on first use, not at
start-up. Every failure comes out as one of this module's exceptions, whose
message says what happened and, where there is one, the command that fixes it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from engines.config import normalize_host

if TYPE_CHECKING:
    import ollama

log = logging.getLogger(__name__)

Role = Literal["system", "user", "assistant"]


class ChatError(Exception):
    """Something went wrong talking to Ollama; ``str()`` is the user-facing message."""


class OllamaUnavailable(ChatError):
    """The server cannot be reached (refused, unresolvable, or timed out)."""


class ModelNotFound(ChatError):
    """The server does not have the model asked for."""

    def __init__(self, model: str, message: str | None = None) -> None:
        super().__init__(
            message or f"model {model!r} is not installed; get it with: ollama pull {model}"
        )
        self.model = model


class ModelNotOnRegistry(ModelNotFound):
    """A pull asked the registry for a model (or tag) it does not have."""

    def __init__(self, model: str, detail: str = "") -> None:
        super().__init__(
            model,
            f"model {model!r} was not found on the registry: check the name and the tag "
            f"(the library is at https://ollama.com/library)"
            + (f"; Ollama said: {detail}" if detail else ""),
        )


class StreamBroken(ChatError):
    """The connection was lost in the middle of a reply."""


@dataclass(frozen=True)
class ChatMessage:
    role: Role
    content: str


@dataclass(frozen=True)
class ChatOptions:
    """Per-conversation options; 0/-1/empty mean "the default"."""

    system_prompt: str = ""
    temperature: float = 0.8
    context_length: int = 0
    max_tokens: int = 2048
    seed: int = -1

    def to_ollama(self) -> dict[str, Any]:
        opts: dict[str, Any] = {"temperature": self.temperature, "num_predict": self.max_tokens}
        if self.context_length > 0:
            opts["num_ctx"] = self.context_length
        if self.seed >= 0:
            opts["seed"] = self.seed
        return opts

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], defaults: ChatOptions | None = None) -> ChatOptions:
        base = asdict(defaults or cls())
        for key, default in base.items():
            value = data.get(key)
            if isinstance(default, float) and isinstance(value, int | float):
                base[key] = float(value)
            elif type(value) is type(default):
                base[key] = value
        return cls(**base)


@dataclass(frozen=True)
class ReplyStats:
    """Figures for one reply. Ollama's durations are nanoseconds; these are seconds."""

    model: str
    prompt_tokens: int = 0
    eval_tokens: int = 0
    tokens_per_s: float = 0.0
    first_token_s: float | None = None
    total_s: float = 0.0
    load_s: float = 0.0
    done_reason: str = ""

    def summary(self) -> str:
        parts = [self.model, f"{self.eval_tokens} tokens"]
        if self.tokens_per_s:
            parts.append(f"{self.tokens_per_s:.1f} tok/s")
        if self.first_token_s is not None:
            parts.append(f"first token {self.first_token_s:.2f} s")
        parts.append(f"prompt {self.prompt_tokens} tokens")
        if self.done_reason == "length":
            parts.append("stopped at max tokens")
        return " · ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ReplyStats:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


@dataclass(frozen=True)
class ReplyChunk:
    """A piece of a streamed reply; the last one carries the stats. A reasoning
    model's thinking comes first, in ``thinking``, with empty ``text``."""

    text: str
    stats: ReplyStats | None = None
    thinking: str = ""


@dataclass(frozen=True)
class ModelInfo:
    name: str
    size: int = 0
    family: str = ""
    parameter_size: str = ""
    quantization: str = ""
    modified_at: datetime | None = None

    def label(self) -> str:
        bits = [b for b in (self.parameter_size, self.quantization, self.family) if b]
        if self.size:
            bits.append(human_bytes(self.size))
        return f"{self.name}  ({', '.join(bits)})" if bits else self.name


@dataclass(frozen=True)
class ModelDetails:
    name: str
    family: str = ""
    parameter_size: str = ""
    quantization: str = ""
    context_length: int | None = None
    capabilities: tuple[str, ...] = ()
    parameters: str = ""
    template: str = ""
    license: str = ""


@dataclass(frozen=True)
class LoadedModel:
    name: str
    size: int = 0
    size_vram: int = 0
    expires_at: datetime | None = None
    context_length: int | None = None


@dataclass(frozen=True)
class ServerStatus:
    online: bool
    host: str
    version: str = ""
    error: str = ""


@dataclass(frozen=True)
class PullProgress:
    """One line of a pull, as Ollama reported it, with the figures worked out from it.

    ``digest``, ``total`` and ``completed`` are Ollama's, for the layer the line is about
    (empty and 0 on the lines between layers: "pulling manifest", "verifying sha256
    digest", "writing manifest", "success"). ``rate`` (bytes/s, over the last few
    seconds) and ``eta_s`` are this layer's; the ``overall_`` figures add up the layers
    announced so far (Ollama announces each when it starts on it). A rate or ETA is None
    until there is enough to tell."""

    model: str
    status: str
    digest: str = ""
    total: int = 0
    completed: int = 0
    rate: float | None = None
    eta_s: float | None = None
    overall_total: int = 0
    overall_completed: int = 0
    overall_rate: float | None = None
    overall_eta_s: float | None = None
    layers: int = 0
    done: bool = False

    @property
    def layer(self) -> str:
        """The layer's short id, as Ollama's own progress shows it (12 hex digits)."""
        return self.digest.removeprefix("sha256:")[:12]

    @property
    def fraction(self) -> float | None:
        return min(self.completed / self.total, 1.0) if self.total > 0 else None

    @property
    def overall_fraction(self) -> float | None:
        if self.overall_total <= 0:
            return None
        return min(self.overall_completed / self.overall_total, 1.0)

    def figures(self) -> str:
        """This layer's bytes, rate and ETA: ``1.2 GB / 2.0 GB · 35.2 MB/s · ETA 0:23``."""
        return _figures(self.completed, self.total, self.rate, self.eta_s)

    def overall_figures(self) -> str:
        return _figures(
            self.overall_completed, self.overall_total, self.overall_rate, self.overall_eta_s
        )


def _figures(completed: int, total: int, rate: float | None, eta_s: float | None) -> str:
    parts = [f"{human_bytes(completed)} / {human_bytes(total)}"]
    if rate is not None and completed < total:
        parts.append(f"{human_bytes(rate)}/s")
    if eta_s is not None and completed < total:
        parts.append(f"ETA {duration_text(eta_s)}")
    return " · ".join(parts)


def duration_text(seconds: float) -> str:
    """``0:07``, ``12:34``, ``1:02:03``: seconds as a clock shows them."""
    whole = max(0, round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class RateMeter:
    """Units per second over the last ``window`` seconds of samples."""

    def __init__(self, window: float = 5.0) -> None:
        self.window = window
        self._samples: deque[tuple[float, float]] = deque()

    def add(self, t: float, value: float) -> float | None:
        """Add a sample (a time and a running total); the rate, or None while unknown."""
        samples = self._samples
        samples.append((t, value))
        while len(samples) > 2 and t - samples[1][0] >= self.window:
            samples.popleft()
        t0, v0 = samples[0]
        if t - t0 < 1e-3:
            return None
        return max(value - v0, 0.0) / (t - t0)


@dataclass
class _Layer:
    total: int
    completed: int
    start: int
    meter: RateMeter
    rate: float | None = None


class PullTracker:
    """Turns Ollama's pull lines into :class:`PullProgress`: per layer and overall, with
    rates and ETAs. Bytes a layer had before this pull (a resumed download, a cached
    layer) count as done but not as speed."""

    def __init__(
        self, model: str, clock: Callable[[], float] = time.monotonic, window: float = 5.0
    ) -> None:
        self.model = model
        self.clock = clock
        self.window = window
        self._layers: dict[str, _Layer] = {}
        self._overall = RateMeter(window)
        self._overall_rate: float | None = None

    def update(
        self, status: str, digest: str = "", total: int = 0, completed: int = 0
    ) -> PullProgress:
        now = self.clock()
        layer = None
        if digest:
            layer = self._layers.get(digest)
            if layer is None:
                layer = _Layer(total, completed, completed, RateMeter(self.window))
                self._layers[digest] = layer
            layer.total = max(total, layer.total)
            layer.completed = max(completed, layer.completed)
            layer.rate = layer.meter.add(now, layer.completed)
            moved = sum(x.completed - x.start for x in self._layers.values())
            self._overall_rate = self._overall.add(now, moved)
        done = status == "success"
        overall_total = sum(x.total for x in self._layers.values())
        overall_completed = sum(min(x.completed, x.total) for x in self._layers.values())
        if done:  # whatever was said on the way, it is all here now
            overall_completed = overall_total
        return PullProgress(
            model=self.model,
            status=status,
            digest=digest,
            total=layer.total if layer else 0,
            completed=layer.completed if layer else 0,
            rate=layer.rate if layer else None,
            eta_s=_eta(layer.total, layer.completed, layer.rate) if layer else None,
            overall_total=overall_total,
            overall_completed=overall_completed,
            overall_rate=self._overall_rate,
            overall_eta_s=_eta(overall_total, overall_completed, self._overall_rate),
            layers=len(self._layers),
            done=done,
        )


def _eta(total: int, completed: int, rate: float | None) -> float | None:
    if total > 0 and completed >= total:
        return 0.0
    if rate is None or rate <= 0:
        return None
    return (total - completed) / rate


@dataclass
class _Timer:
    start: float = field(default_factory=time.perf_counter)
    first: float | None = None


async def _close(stream: Any) -> None:
    """Close a client stream (and so its HTTP response), if there is one."""
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        await aclose()


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"  # pragma: no cover


class ChatEngine:
    """Ollama, as the app needs it: models, what is loaded, and streamed replies."""

    def __init__(self, host: str, timeout: float = 300.0, keep_alive: str = "5m") -> None:
        self.host = normalize_host(host)
        self.timeout = timeout
        self.keep_alive = keep_alive
        self._client: ollama.AsyncClient | None = None

    @property
    def client(self) -> ollama.AsyncClient:
        if self._client is None:
            import ollama

            self._client = ollama.AsyncClient(host=self.host, timeout=self.timeout)
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client._client.aclose()
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
                f"cannot reach Ollama at {self.host}: is it running? (start it with: ollama serve)"
            )
        if isinstance(exc, httpx.TimeoutException):
            return OllamaUnavailable(
                f"Ollama at {self.host} did not answer within {self.timeout:g} s "
                "([ollama] timeout in config.toml)"
            )
        if isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError | httpx.WriteError):
            return StreamBroken(f"the connection to Ollama at {self.host} was lost ({exc})")
        if isinstance(exc, httpx.HTTPError):
            return ChatError(f"talking to Ollama at {self.host} failed: {exc}")
        if isinstance(exc, ValueError):  # malformed JSON from the server
            return ChatError(f"Ollama at {self.host} sent something unreadable: {exc}")
        return ChatError(f"{type(exc).__name__}: {exc}")

    # -- queries ------------------------------------------------------------

    async def status(self) -> ServerStatus:
        try:
            version = await self.version()
        except ChatError as exc:
            return ServerStatus(online=False, host=self.host, error=str(exc))
        return ServerStatus(online=True, host=self.host, version=version)

    async def version(self) -> str:
        try:
            response = await self.client._request_raw(  # type: ignore[no-untyped-call]
                "GET", "/api/version"
            )
            data = response.json()
        except Exception as exc:
            raise self._translate(exc) from exc
        return str(data.get("version", ""))

    async def list_models(self) -> list[ModelInfo]:
        try:
            response = await self.client.list()
        except Exception as exc:
            raise self._translate(exc) from exc
        models = []
        for m in response.models:
            d = m.details
            models.append(
                ModelInfo(
                    name=m.model or "",
                    size=int(m.size or 0),
                    family=(d.family or "") if d else "",
                    parameter_size=(d.parameter_size or "") if d else "",
                    quantization=(d.quantization_level or "") if d else "",
                    modified_at=m.modified_at,
                )
            )
        return sorted(models, key=lambda m: m.name)

    async def show(self, model: str) -> ModelDetails:
        try:
            r = await self.client.show(model)
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
        tracker = PullTracker(model)
        inner: AsyncIterator[Any] | None = None
        log.info("pull", extra={"model": model})
        try:
            inner = await self.client.pull(model, stream=True)
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
        try:
            await self.client.delete(model)
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
            r = await self.client.ps()
        except Exception as exc:
            raise self._translate(exc) from exc
        return [
            LoadedModel(
                name=m.model or "",
                size=int(m.size or 0),
                size_vram=int(m.size_vram or 0),
                expires_at=m.expires_at,
                context_length=getattr(m, "context_length", None),
            )
            for m in r.models
        ]

    async def unload(self, model: str) -> None:
        """Ask Ollama to free a loaded model now (keep_alive=0)."""
        try:
            await self.client.generate(model=model, keep_alive=0)
        except Exception as exc:
            raise self._translate(exc, model) from exc

    # -- chat ---------------------------------------------------------------

    @staticmethod
    def build_messages(
        history: Sequence[ChatMessage], options: ChatOptions
    ) -> list[dict[str, str]]:
        messages = [{"role": m.role, "content": m.content} for m in history if m.role != "system"]
        if options.system_prompt:
            messages.insert(0, {"role": "system", "content": options.system_prompt})
        return messages

    async def stream(
        self, model: str, history: Sequence[ChatMessage], options: ChatOptions
    ) -> AsyncGenerator[ReplyChunk, None]:
        """Stream the reply to ``history``. Closing the iterator (or cancelling the task
        that reads it) closes the HTTP stream, which makes Ollama stop generating."""
        timer = _Timer()
        inner: AsyncIterator[Any] | None = None
        log.info("chat request", extra={"model": model, "messages": len(history)})
        try:
            inner = await self.client.chat(
                model=model,
                messages=self.build_messages(history, options),
                stream=True,
                options=options.to_ollama(),
                keep_alive=self.keep_alive,
            )
            async for part in inner:
                text = part.message.content or ""
                if text and timer.first is None:
                    timer.first = time.perf_counter()
                if part.done:
                    yield ReplyChunk(text, self._stats(model, part, timer))
                    return
                thinking = getattr(part.message, "thinking", None) or ""
                if text or thinking:
                    yield ReplyChunk(text, thinking=thinking)
        except (asyncio.CancelledError, GeneratorExit):
            raise
        except Exception as exc:
            raise self._translate(exc, model) from exc
        finally:
            await _close(inner)
        raise StreamBroken(f"Ollama at {self.host} ended the reply without finishing it")

    async def reply(
        self, model: str, history: Sequence[ChatMessage], options: ChatOptions
    ) -> tuple[str, ReplyStats]:
        """The whole reply at once (stream=False)."""
        timer = _Timer()
        try:
            r = await self.client.chat(
                model=model,
                messages=self.build_messages(history, options),
                stream=False,
                options=options.to_ollama(),
                keep_alive=self.keep_alive,
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
