"""What a chat with Ollama is made of: messages, options, replies and their figures, the
models and the server's state, and the errors, whose ``str()`` is the user-facing message."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from datetime import datetime
from typing import Any, Literal

from engines.units import human_bytes

Role = Literal["system", "user", "assistant", "tool"]

Pause = tuple[float, bool]
"""How long the reader of a reply that has caught up with the server waits before it
reads again, and whether it watches for the reply's last line meanwhile (a reply read as
someone watches: its last words end the wait; see ``reply_stream``)."""


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
    images: tuple[str, ...] = ()
    """Files of the images attached to a prompt (copies in the data folder)."""
    tool_calls: tuple[ToolCall, ...] = ()
    """An assistant turn's calls of tools (issue 14)."""
    tool_name: str = ""
    """A ``tool`` turn: the tool whose answer it is."""


@dataclass(frozen=True)
class ToolCall:
    """A model's call of a tool: its name and its arguments, as the model wrote them."""

    name: str
    arguments: Mapping[str, Any]


@dataclass(frozen=True)
class ToolUse:
    """A tool call in a reply, and what came of it, as stored with the reply."""

    name: str
    arguments: Mapping[str, Any]
    result: str = ""
    """The tool's answer, as the model got it (empty while the tool works)."""
    state: Literal["running", "done", "refused", "failed"] = "running"
    at: int = 0
    """Where in the reply's text the call came (the characters written before it)."""
    image: str = ""
    """The image the call made, if any."""

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "arguments": dict(self.arguments)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ToolUse | None:
        """A stored use; None when it is not one (another version's, or damaged)."""
        name, arguments = data.get("name"), data.get("arguments")
        if not isinstance(name, str) or not isinstance(arguments, Mapping):
            return None
        state = data.get("state")
        at = data.get("at")
        return cls(
            name,
            dict(arguments),
            str(data.get("result") or ""),
            state if state in ("running", "done", "refused", "failed") else "failed",
            at if isinstance(at, int) and not isinstance(at, bool) and at >= 0 else 0,
            str(data.get("image") or ""),
        )


def tool_uses_to_json(uses: tuple[ToolUse, ...] | list[ToolUse]) -> str:
    return json.dumps([u.to_dict() for u in uses], ensure_ascii=False)


def tool_uses_from_json(text: str | None) -> tuple[ToolUse, ...]:
    if not text:
        return ()
    try:
        data = json.loads(text)
    except ValueError:
        return ()
    if not isinstance(data, list):
        return ()
    uses = (ToolUse.from_dict(d) for d in data if isinstance(d, Mapping))
    return tuple(u for u in uses if u is not None)


Think = Literal["", "on", "off", "low", "medium", "high"]
THINK_CHOICES: tuple[str, ...] = ("", "on", "off", "low", "medium", "high")


@dataclass(frozen=True)
class ChatOptions:
    """Per-conversation options. 0/-1/empty/None mean "the default": the model's own
    (its Modelfile's parameters), or Ollama's."""

    system_prompt: str = ""
    temperature: float = 0.8
    context_length: int = 0
    max_tokens: int = 2048
    seed: int = -1
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    repeat_penalty: float | None = None
    repeat_last_n: int | None = None
    stop: tuple[str, ...] = ()
    keep_alive: str = ""
    """How long Ollama keeps the model loaded after a reply (empty: [ollama] keep_alive)."""
    think: str = ""
    """For reasoning models: on, off, or a level (low, medium, high); empty: the model's own."""
    format: str = ""
    """Empty (free text), ``json``, or a JSON schema (its text) the reply must follow."""
    format_file: str = ""
    """The file the schema was read from, to name it (the schema itself is kept here)."""
    image_instruction: str = ""
    """What the model is told when it writes an image prompt from the chat (empty:
    ``[chat] image_instruction``); a preset can set its own."""

    def to_ollama(self) -> dict[str, Any]:
        opts: dict[str, Any] = {"temperature": self.temperature, "num_predict": self.max_tokens}
        if self.context_length > 0:
            opts["num_ctx"] = self.context_length
        if self.seed >= 0:
            opts["seed"] = self.seed
        for name in ("top_p", "top_k", "min_p", "repeat_penalty", "repeat_last_n"):
            value = getattr(self, name)
            if value is not None:
                opts[name] = value
        if self.stop:
            opts["stop"] = list(self.stop)
        return opts

    def think_value(self) -> bool | str | None:
        """``think`` as Ollama takes it: true, false, a level, or None (not sent)."""
        return {"": None, "on": True, "off": False}.get(self.think, self.think)

    def format_value(self) -> str | dict[str, Any] | None:
        """``format`` as Ollama takes it: "json", a schema, or None (not sent)."""
        if not self.format:
            return None
        if self.format == "json":
            return "json"
        try:
            schema = json.loads(self.format)
        except ValueError:
            return None
        return schema if isinstance(schema, dict) else None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["stop"] = list(self.stop)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], defaults: ChatOptions | None = None) -> ChatOptions:
        """Options from stored JSON: what is missing or of the wrong type keeps its default."""
        base = asdict(defaults or cls())
        for f in fields(cls):
            if f.name not in data:
                continue
            value = data[f.name]
            kind = _KINDS.get(f.name, str)
            if value is None and f.name in _OPTIONAL:
                base[f.name] = None
            elif kind is float and isinstance(value, int | float) and not isinstance(value, bool):
                base[f.name] = float(value)
            elif kind is int and isinstance(value, int) and not isinstance(value, bool):
                base[f.name] = value
            elif kind is tuple and isinstance(value, list | tuple):
                base[f.name] = tuple(str(v) for v in value if isinstance(v, str) and v)
            elif kind is str and isinstance(value, str):
                base[f.name] = value
        base["stop"] = tuple(base["stop"])
        return cls(**base)


_KINDS: dict[str, type] = {
    "temperature": float,
    "top_p": float,
    "min_p": float,
    "repeat_penalty": float,
    "context_length": int,
    "max_tokens": int,
    "seed": int,
    "top_k": int,
    "repeat_last_n": int,
    "stop": tuple,
}
_OPTIONAL = frozenset({"top_p", "top_k", "min_p", "repeat_penalty", "repeat_last_n"})


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
    tool_calls: tuple[ToolCall, ...] = ()
    """The tools the model calls (it then waits for their answers)."""
    pieces: int = 1
    """How many of the server's chunks it holds (several when joined, see
    ``ChatEngine.stream``): the reply's rate counts these."""
    more: bool = False
    """More of the reply had come already when this was handed over (the server sends
    faster than the reply is read): what draws it may wait for the rest (joined, a chunk
    with no text and ``pieces`` 0 says when the rest is read: ``ChatEngine.stream``)."""


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
