"""Ollama through the official ``ollama`` AsyncClient: models, what is loaded, pulls,
and streamed replies.

The client (and httpx, pydantic behind it) is imported on first use, not at
start-up; the version, the models and what is loaded, which the app asks for from the
start and every few seconds, are asked through :mod:`engines.ollama_http` (the standard
library), so an app that only looks at its conversations never imports the client. Every failure comes out as one of the :mod:`engines.chat_types` errors, whose
message says what happened and, where there is one, the command that fixes it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from engines import ollama_http
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
    ReplyChunk,
    ReplyStats,
    ServerStatus,
    StreamBroken,
)
from engines.config import normalize_host
from engines.progress import PullProgress, PullTracker

if TYPE_CHECKING:
    import ollama

log = logging.getLogger(__name__)


@dataclass
class _Timer:
    start: float = field(default_factory=time.perf_counter)
    first: float | None = None


def _when(value: object) -> datetime | None:
    """An ISO 8601 time as Ollama writes it (nanoseconds, an offset or Z), or None."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


async def _close(stream: Any) -> None:
    """Close a client stream (and so its HTTP response), if there is one."""
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        await aclose()


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
            await self._client.close()  # type: ignore[no-untyped-call]  # ollama leaves it untyped
            self._client = None

    # -- errors -------------------------------------------------------------

    def _translate(self, exc: BaseException, model: str | None = None) -> ChatError:
        if isinstance(exc, ChatError):
            return exc
        light = self._translate_light(exc, model)
        if light is not None:
            return light
        import httpx
        import ollama

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

    def _translate_light(self, exc: BaseException, model: str | None) -> ChatError | None:
        """The errors of :mod:`engines.ollama_http`, as the client's same errors read."""
        import http.client  # imported already by the request that failed

        if isinstance(exc, ollama_http.HttpError):
            code, text = exc.status_code, exc.error.strip() or f"HTTP {exc.status_code}"
            if code == 404 and model and "not found" in text:
                return ModelNotFound(model)
            return ChatError(f"Ollama answered: {text} (HTTP {code})")
        if isinstance(exc, ollama_http.Unreachable):
            return OllamaUnavailable(
                f"cannot reach Ollama at {self.host}: is it running? (start it with: ollama serve)"
            )
        if isinstance(exc, TimeoutError):
            return OllamaUnavailable(
                f"Ollama at {self.host} did not answer within {self.timeout:g} s "
                "([ollama] timeout in config.toml)"
            )
        if isinstance(exc, http.client.HTTPException):
            return StreamBroken(f"the connection to Ollama at {self.host} was lost ({exc})")
        return None

    # -- queries ------------------------------------------------------------

    async def status(self) -> ServerStatus:
        try:
            version = await self.version()
        except ChatError as exc:
            return ServerStatus(online=False, host=self.host, error=str(exc))
        return ServerStatus(online=True, host=self.host, version=version)

    async def version(self) -> str:
        try:
            data = await ollama_http.get(self.host, "/api/version", self.timeout)
        except Exception as exc:
            raise self._translate(exc) from exc
        return str(data.get("version", ""))

    async def list_models(self) -> list[ModelInfo]:
        try:
            data = await ollama_http.get(self.host, "/api/tags", self.timeout)
            models = []
            for m in data.get("models") or []:
                d = m.get("details") or {}
                models.append(
                    ModelInfo(
                        name=str(m.get("model") or m.get("name") or ""),
                        size=int(m.get("size") or 0),
                        family=str(d.get("family") or ""),
                        parameter_size=str(d.get("parameter_size") or ""),
                        quantization=str(d.get("quantization_level") or ""),
                        modified_at=_when(m.get("modified_at")),
                    )
                )
        except Exception as exc:
            raise self._translate(exc) from exc
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
            data = await ollama_http.get(self.host, "/api/ps", self.timeout)
            return [
                LoadedModel(
                    name=str(m.get("model") or m.get("name") or ""),
                    size=int(m.get("size") or 0),
                    size_vram=int(m.get("size_vram") or 0),
                    expires_at=_when(m.get("expires_at")),
                    context_length=(
                        int(m["context_length"]) if m.get("context_length") is not None else None
                    ),
                )
                for m in data.get("models") or []
            ]
        except Exception as exc:
            raise self._translate(exc) from exc

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
