"""Every generation option a conversation can set, named once.

One table (:data:`SPECS`) says for each option its name (as Ollama, the CLI's
``--option key=value`` and a preset's TOML write it), the :class:`ChatOptions` field that
holds it, its label and its rule (a :class:`~engines.limits.Limit`, or a kind of text).
The Options dialog, the CLI, presets and ``config.toml`` all read values through
:func:`parse_option`, so one bad value gets the same message everywhere; nothing here
imports Textual.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from engines.chat_types import THINK_CHOICES, ChatOptions
from engines.limits import (
    CHAT_CONTEXT_LENGTH,
    CHAT_MAX_TOKENS,
    CHAT_MIN_P,
    CHAT_REPEAT_LAST_N,
    CHAT_REPEAT_PENALTY,
    CHAT_SEED,
    CHAT_STOP_COUNT,
    CHAT_TEMPERATURE,
    CHAT_TOP_K,
    CHAT_TOP_P,
    Limit,
)

if TYPE_CHECKING:
    from engines.config import Settings

Kind = Literal["float", "int", "stop", "duration", "think", "format", "text"]
SCHEMA_MAX_BYTES = 256_000
GO_DURATION = re.compile(r"[-+]?0|[-+]?((\d+(\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h))+")


class OptionError(ValueError):
    """A value an option does not take; ``str()`` names the option and what it allows."""


@dataclass(frozen=True)
class OptionSpec:
    key: str
    """The name Ollama, ``--option``, presets and the docs use."""
    field: str
    """The :class:`ChatOptions` field that holds it."""
    label: str
    kind: Kind
    help: str
    limit: Limit | None = None
    optional: bool = False
    """Empty means "the model's own" (nothing is sent)."""

    def allowed(self) -> str:
        """What the option takes, for an error or ``--help``."""
        if self.limit is not None:
            text = self.limit.describe()
            return f"{text}, or empty for the model's own" if self.optional else text
        return {
            "stop": f"up to {int(CHAT_STOP_COUNT.hi)} stop sequences, none of them empty",
            "duration": "a duration like 5m, 1h30m or 0 (negative: forever), or empty",
            "think": "on, off, low, medium or high, or empty for the model's own",
            "format": "empty, json, or the path of a JSON schema file",
            "text": "any text",
        }[self.kind]


SPECS: tuple[OptionSpec, ...] = (
    OptionSpec(
        "temperature", "temperature", "Temperature", "float", "Randomness.", CHAT_TEMPERATURE
    ),
    OptionSpec("top_p", "top_p", "Top p", "float", "Nucleus sampling.", CHAT_TOP_P, optional=True),
    OptionSpec(
        "top_k", "top_k", "Top k", "int", "Sample from the k likeliest.", CHAT_TOP_K, optional=True
    ),
    OptionSpec(
        "min_p", "min_p", "Min p", "float", "Drop unlikely tokens.", CHAT_MIN_P, optional=True
    ),
    OptionSpec(
        "repeat_penalty",
        "repeat_penalty",
        "Repeat penalty",
        "float",
        "Penalise repeats (1: off).",
        CHAT_REPEAT_PENALTY,
        optional=True,
    ),
    OptionSpec(
        "repeat_last_n",
        "repeat_last_n",
        "Repeat window",
        "int",
        "Tokens the penalty looks back.",
        CHAT_REPEAT_LAST_N,
        optional=True,
    ),
    OptionSpec(
        "num_ctx",
        "context_length",
        "Context",
        "int",
        "Context window in tokens; 0: the model's own.",
        CHAT_CONTEXT_LENGTH,
    ),
    OptionSpec(
        "num_predict",
        "max_tokens",
        "Max tokens",
        "int",
        "Most tokens one reply may have.",
        CHAT_MAX_TOKENS,
    ),
    OptionSpec("seed", "seed", "Seed", "int", "-1: a new one every reply.", CHAT_SEED),
    OptionSpec("stop", "stop", "Stop sequences", "stop", "One per line; the reply ends there."),
    OptionSpec(
        "keep_alive",
        "keep_alive",
        "Keep alive",
        "duration",
        "How long the model stays loaded; empty: [ollama] keep_alive.",
    ),
    OptionSpec("think", "think", "Think", "think", "Reasoning models: on, off or a level."),
    OptionSpec(
        "format", "format", "Format", "format", "json, or a JSON schema file the reply follows."
    ),
    OptionSpec("system", "system_prompt", "System prompt", "text", "The system prompt."),
    OptionSpec(
        "image_instruction",
        "image_instruction",
        "Image instruction",
        "text",
        "What the model is told when it writes an image prompt from the chat; "
        "empty: [chat] image_instruction.",
    ),
)
BY_KEY: dict[str, OptionSpec] = {s.key: s for s in SPECS}


def spec_for(key: str) -> OptionSpec:
    """The option called ``key`` (its Ollama name, or its field's name)."""
    spec = BY_KEY.get(key) or next((s for s in SPECS if s.field == key), None)
    if spec is None:
        import difflib

        hint = difflib.get_close_matches(key, list(BY_KEY), n=1)
        maybe = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise OptionError(f"unknown option {key!r}{maybe}; the options are: {', '.join(BY_KEY)}")
    return spec


def split_stop(raw: str) -> list[str]:
    """Stop sequences written one a line: blank lines at the ends are ignored."""
    lines = raw.split("\n")
    while lines and lines[-1] == "":
        lines.pop()
    while lines and lines[0] == "":
        lines.pop(0)
    return lines


def read_schema(raw: str, base: Path | None = None) -> tuple[str, str]:
    """(schema text, file name) from the path of a JSON schema file."""
    from engines.attachments import AttachmentError, check_path

    try:
        path = check_path(raw, base)
    except AttachmentError as exc:
        raise OptionError(f"format: {exc}") from None
    try:
        size = path.stat().st_size
        if size > SCHEMA_MAX_BYTES:
            raise OptionError(
                f"format: {raw!r} is {size:,} bytes; a schema file may have at most "
                f"{SCHEMA_MAX_BYTES:,}"
            )
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise OptionError(f"format: {raw!r} is not text: a schema is a JSON file") from None
    except OSError as exc:
        raise OptionError(f"format: cannot read {raw!r}: {exc.strerror or exc}") from None
    try:
        schema = json.loads(text)
    except ValueError as exc:
        raise OptionError(
            f"format: {raw!r} is not JSON ({exc}); give json, or a JSON schema file"
        ) from None
    if not isinstance(schema, dict):
        raise OptionError(f"format: {raw!r} holds JSON but not an object: a schema is an object")
    return json.dumps(schema, ensure_ascii=False, separators=(",", ":")), str(path)


def parse_option(key: str, raw: str, *, base: Path | None = None) -> Any:
    """The value of option ``key`` written as ``raw`` (as typed in the dialog or after
    ``--option key=``), checked; relative schema paths resolve against ``base``."""
    spec = spec_for(key)
    text = raw.strip() if spec.kind not in ("stop", "text") else raw
    if spec.kind in ("float", "int"):
        assert spec.limit is not None
        if not text and spec.optional:
            return None
        try:
            value: float = int(text) if spec.kind == "int" else float(text)
        except ValueError:
            value = float("nan")
        if not spec.limit.allows(value):
            shown = repr(text) if text else "empty"
            raise OptionError(f"{spec.key}: {shown} is not allowed; use {spec.allowed()}")
        return value
    if spec.kind == "stop":
        stops = split_stop(raw)
        for n, stop in enumerate(stops, start=1):
            if stop == "":
                which = f"stop sequence {n}" if len(stops) > 1 else "the stop sequence"
                raise OptionError(
                    f"stop: {which} is empty; an empty stop sequence would end every reply "
                    "at once: write the sequence, or remove the empty line"
                )
        if len(stops) > CHAT_STOP_COUNT.hi:
            raise OptionError(f"stop: {len(stops)} sequences; use {spec.allowed()}")
        return tuple(stops)
    if spec.kind == "duration":
        if text and not GO_DURATION.fullmatch(text):
            raise OptionError(f"keep_alive: {text!r} is not allowed; use {spec.allowed()}")
        return text
    if spec.kind == "think":
        word = {"true": "on", "false": "off", "yes": "on", "no": "off"}.get(text.lower(), text)
        if word.lower() not in THINK_CHOICES:
            raise OptionError(f"think: {text!r} is not allowed; use {spec.allowed()}")
        return word.lower()
    if spec.kind == "format":
        if text.lower() in ("", "json"):
            return text.lower()
        return read_schema(text, base)
    return raw


def apply(
    options: ChatOptions, values: Mapping[str, str], *, base: Path | None = None
) -> ChatOptions:
    """``options`` with each ``key: raw`` of ``values`` parsed and set (the first bad one
    raises :class:`OptionError`)."""
    changes: dict[str, Any] = {}
    for key, raw in values.items():
        spec = spec_for(key)
        value = parse_option(key, raw, base=base)
        if spec.kind == "format":
            if isinstance(value, tuple):
                changes["format"], changes["format_file"] = value
            else:
                changes["format"], changes["format_file"] = value, ""
        else:
            changes[spec.field] = value
    return replace(options, **changes)


def parse_assignments(items: Iterable[str], *, base: Path | None = None) -> dict[str, str]:
    """``key=value`` strings (``--option``) as a mapping; ``stop`` may repeat (each adds a
    sequence), any other key given twice keeps its last value."""
    values: dict[str, str] = {}
    stops: list[str] = []
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise OptionError(f"{item!r} is not key=value (for example temperature=0.2)")
        spec_for(key)
        if key == "stop":
            if raw == "":
                raise OptionError(
                    "stop: the stop sequence is empty; an empty stop sequence would end every "
                    "reply at once"
                )
            stops.append(raw)
        else:
            values[key] = raw
    if stops:
        values["stop"] = "\n".join(stops)
    return values


def option_text(options: ChatOptions, spec: OptionSpec) -> str:
    """The option as the dialog's field shows it."""
    if spec.kind == "format":
        return options.format_file if options.format_file else options.format
    value = getattr(options, spec.field)
    if value is None:
        return ""
    if spec.kind == "stop":
        return "\n".join(value)
    return str(value)


def set_options(options: ChatOptions) -> dict[str, Any]:
    """The options that differ from "the default" (for a preset's TOML, the CLI's JSON)."""
    out: dict[str, Any] = {}
    for spec in SPECS:
        value = getattr(options, spec.field)
        if spec.kind == "format":
            value = options.format_value() or ""
            if isinstance(value, dict):
                out["format"] = value
                continue
        if value is None or value == "" or value == ():
            continue
        out[spec.key] = list(value) if isinstance(value, tuple) else value
    return out


def from_set_options(data: Mapping[str, Any], defaults: ChatOptions, where: str) -> ChatOptions:
    """The reverse of :func:`set_options` (a preset's TOML): every value checked by the
    same rules as the dialog; ``where`` names the source in errors."""
    values: dict[str, str] = {}
    changes: dict[str, Any] = {}
    for key, value in data.items():
        try:
            spec = spec_for(key)
        except OptionError as exc:
            raise OptionError(f"{where}: {exc}") from None
        if spec.kind == "format" and isinstance(value, dict):
            changes["format"] = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
            changes["format_file"] = ""
            continue
        if spec.kind == "stop":
            if isinstance(value, str):
                value = [value]
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise OptionError(f"{where}: stop must be a list of strings")
            if any(v == "" for v in value):
                raise OptionError(f"{where}: stop: a stop sequence is empty")
            values[key] = "\n".join(value)
            continue
        if isinstance(value, bool) and spec.kind == "think":
            value = "on" if value else "off"
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise OptionError(f"{where}: {key} = {value!r}: expected {spec.allowed()}")
        values[key] = str(value)
    try:
        return replace(apply(defaults, values), **changes)
    except OptionError as exc:
        raise OptionError(f"{where}: {exc}") from None


# -- defaults ---------------------------------------------------------------------------


def defaults_from_settings(settings: Settings) -> ChatOptions:
    """The options of a new conversation: ``[chat]`` and ``[ollama]`` of config.toml."""
    chat = settings.chat
    options = ChatOptions(
        system_prompt=chat.system_prompt,
        temperature=chat.temperature,
        context_length=chat.context_length,
        max_tokens=settings.ollama.max_tokens,
        seed=chat.seed,
        top_p=None if chat.top_p < 0 else chat.top_p,
        top_k=None if chat.top_k < 0 else chat.top_k,
        min_p=None if chat.min_p < 0 else chat.min_p,
        repeat_penalty=None if chat.repeat_penalty < 0 else chat.repeat_penalty,
        repeat_last_n=None if chat.repeat_last_n < 0 else chat.repeat_last_n,
        stop=tuple(chat.stop),
        think=chat.think,
    )
    if chat.format:
        base = settings.source.parent if settings.source else None
        options = apply(options, {"format": chat.format}, base=base)
    return options


def model_parameters(parameters: str) -> dict[str, str]:
    """A model's own parameters (``/api/show``'s ``parameters``, its Modelfile's PARAMETER
    lines) by option name, as the dialog shows them: ``{"temperature": "0.6",
    "stop": "<|eot_id|>\\n<|end_header_id|>"}``."""
    found: dict[str, list[str]] = {}
    for line in parameters.splitlines():
        parts = line.strip().split(None, 1)
        if len(parts) != 2:
            continue
        name, value = parts
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            try:
                value = json.loads(value)
            except ValueError:
                value = value[1:-1]
        found.setdefault(name, []).append(value)
    return {name: "\n".join(values) for name, values in found.items()}
