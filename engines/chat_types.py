"""What a chat with Ollama is made of: messages, options, replies and their figures, the
models and the server's state, and the errors, whose ``str()`` is the user-facing message."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, Literal

from engines.units import human_bytes

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
    host: str = ""
    """The name of the Ollama server that has it (``[ollama] hosts``)."""

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
    host: str = ""
    """The name of the Ollama server it is loaded on."""


@dataclass(frozen=True)
class ServerStatus:
    online: bool
    host: str
    version: str = ""
    error: str = ""
