"""Settings: ``config.toml``, validated, with environment overrides.

Every key has a default, a one-line description and a rule. A bad file stops
with one :class:`ConfigError` whose message names the file, the key and what
is allowed. Paths in the file resolve relative to the file itself.
"""

from __future__ import annotations

import contextlib
import difflib
import os
import re
import tomllib
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from engines.limits import (
    CHAT_CONTEXT_LENGTH,
    CHAT_CONTEXT_WARN,
    CHAT_FILE_KB,
    CHAT_IMAGE_MB,
    CHAT_IMAGE_SIDE,
    CHAT_MAX_TOKENS,
    CHAT_MIN_P,
    CHAT_REPEAT_LAST_N,
    CHAT_REPEAT_PENALTY,
    CHAT_SEED,
    CHAT_TEMPERATURE,
    CHAT_TOP_K,
    CHAT_TOP_P,
    IMAGE_GUIDANCE,
    IMAGE_SIDE,
    IMAGE_STEPS,
    OLLAMA_TIMEOUT,
    Limit,
)

ENV_CONFIG = "LLM_PESSOAL_CONFIG"
DEFAULT_IMAGE_INSTRUCTION = (
    "Write one prompt for a Stable Diffusion image of what the text below shows or means: "
    "a comma-separated list of the subject, its setting, style, lighting and composition, "
    "at most 60 words. Answer with the prompt alone: no quotes, no explanation."
)
DEFAULT_OLLAMA_PORT = 11434
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
SCREENS = ("chat", "image", "monitor")
# What Ollama takes as keep_alive: a Go duration ("5m", "1h30m", "-1m") or a bare 0.
_HOSTNAME = re.compile(r"[A-Za-z0-9._-]+")
GO_DURATION = re.compile(r"[-+]?0|[-+]?((\d+(\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h))+")


class ConfigError(Exception):
    """The configuration cannot be used; the message says why and what is allowed."""


def _spec(
    doc: str,
    *,
    lo: float | None = None,
    hi: float | None = None,
    choices: tuple[str, ...] | None = None,
    path: bool = False,
    multiple_of: int | None = None,
    duration: bool = False,
    limit: Limit | None = None,
    required: bool = False,
    strings: bool = False,
) -> dict[str, Any]:
    if limit is not None:
        lo, hi, multiple_of = limit.lo, limit.hi, limit.multiple_of
    return {
        "required": required,
        "limit": limit,
        "doc": doc,
        "lo": lo,
        "hi": hi,
        "choices": choices,
        "path": path,
        "multiple_of": multiple_of,
        "duration": duration,
        "strings": strings,
    }


@dataclass(frozen=True)
class OllamaSettings:
    """How to reach the Ollama server."""

    host: str = field(
        default="http://localhost:11434",
        metadata=_spec("Ollama server address; the OLLAMA_HOST environment variable overrides it."),
    )
    timeout: float = field(
        default=300.0,
        metadata=_spec("Seconds to wait for the server before giving up.", lo=1, hi=3600),
    )
    default_model: str = field(
        default="llama3.2:latest",
        metadata=_spec("Model a new conversation starts with.", required=True),
    )
    max_tokens: int = field(
        default=2048,
        metadata=_spec(
            "Most tokens one reply may have (Ollama's num_predict).", limit=CHAT_MAX_TOKENS
        ),
    )
    keep_alive: str = field(
        default="5m",
        metadata=_spec(
            "How long Ollama keeps a model loaded after a reply (e.g. 5m, 1h, 0).", duration=True
        ),
    )
    retry_interval: float = field(
        default=5.0,
        metadata=_spec("Seconds between reachability checks while Ollama is down.", lo=0.5, hi=600),
    )


@dataclass(frozen=True)
class ChatSettings:
    """Defaults for new conversations."""

    system_prompt: str = field(
        default="", metadata=_spec("System prompt of new conversations (empty: none).")
    )
    temperature: float = field(
        default=0.8,
        metadata=_spec("Sampling temperature of new conversations.", limit=CHAT_TEMPERATURE),
    )
    context_length: int = field(
        default=0,
        metadata=_spec(
            "Context window in tokens (num_ctx); 0 keeps the model's own.",
            limit=CHAT_CONTEXT_LENGTH,
        ),
    )
    seed: int = field(
        default=-1,
        metadata=_spec("Sampling seed; -1 picks a new one for every reply.", limit=CHAT_SEED),
    )
    save_interval: float = field(
        default=1.0,
        metadata=_spec("Seconds between saves of a reply while it streams.", lo=0.1, hi=10),
    )
    max_parallel: int = field(
        default=2,
        metadata=_spec(
            "Replies that may stream at once (in different conversations); more wait in line.",
            lo=1,
            hi=16,
        ),
    )
    # -- generation options of new conversations (issue 11); -1: the model's own --------
    top_p: float = field(
        default=-1.0,
        metadata=_spec(
            f"Nucleus sampling, {CHAT_TOP_P.span()}; -1 keeps the model's own.",
            lo=-1,
            hi=CHAT_TOP_P.hi,
        ),
    )
    top_k: int = field(
        default=-1,
        metadata=_spec(
            f"Sample from the k likeliest tokens, {CHAT_TOP_K.span()}; -1 keeps the model's own.",
            lo=-1,
            hi=CHAT_TOP_K.hi,
        ),
    )
    min_p: float = field(
        default=-1.0,
        metadata=_spec(
            f"Drop tokens less likely than this, {CHAT_MIN_P.span()}; -1 keeps the model's own.",
            lo=-1,
            hi=CHAT_MIN_P.hi,
        ),
    )
    repeat_penalty: float = field(
        default=-1.0,
        metadata=_spec(
            f"Repeat penalty, {CHAT_REPEAT_PENALTY.span()}; -1 keeps the model's own.",
            lo=-1,
            hi=CHAT_REPEAT_PENALTY.hi,
        ),
    )
    repeat_last_n: int = field(
        default=-1,
        metadata=_spec(
            f"Tokens the repeat penalty looks back, {CHAT_REPEAT_LAST_N.span()}; "
            "-1 keeps the model's own.",
            lo=-1,
            hi=CHAT_REPEAT_LAST_N.hi,
        ),
    )
    stop: tuple[str, ...] = field(
        default=(), metadata=_spec("Stop sequences (a list of non-empty strings).", strings=True)
    )
    think: str = field(
        default="",
        metadata=_spec(
            "Reasoning models: on, off, low, medium or high; empty keeps the model's own.",
            choices=("", "on", "off", "low", "medium", "high"),
        ),
    )
    format: str = field(
        default="",
        metadata=_spec("Reply format: empty (free text), json, or the path of a JSON schema file."),
    )
    file_max_kb: int = field(
        default=512,
        metadata=_spec("Largest text file attached as context, in KB.", limit=CHAT_FILE_KB),
    )
    image_max_mb: int = field(
        default=50,
        metadata=_spec("Largest image file attached, in MB.", limit=CHAT_IMAGE_MB),
    )
    image_max_side: int = field(
        default=1024,
        metadata=_spec(
            "Longest side in pixels of an image sent to a vision model (larger ones are "
            "scaled down; the original is kept).",
            limit=CHAT_IMAGE_SIDE,
        ),
    )
    context_warn: int = field(
        default=85,
        metadata=_spec(
            "Percent of the context window at which the Chat screen warns that Ollama will "
            "drop the oldest messages.",
            limit=CHAT_CONTEXT_WARN,
        ),
    )
    # -- chat and images (issue 14) -------------------------------------------------------
    image_instruction: str = field(
        default=DEFAULT_IMAGE_INSTRUCTION,
        metadata=_spec(
            "What the chat model is told when it writes an image prompt from the chat "
            "(Alt+I, /image); a preset may set its own.",
            required=True,
        ),
    )
    image_queue_at_once: bool = field(
        default=False,
        metadata=_spec(
            "Queue an image asked for from the chat at once, without showing its prompt first."
        ),
    )
    image_tool: bool = field(
        default=True,
        metadata=_spec(
            "Offer models with the tools capability a generate_image tool (the image engine)."
        ),
    )
    image_tool_ask: bool = field(
        default=True,
        metadata=_spec("Ask before queuing an image a model asks for through its tool."),
    )
    vision_model: str = field(
        default="",
        metadata=_spec(
            'Model for "Ask about this image" and "Improve this prompt" (empty: the first '
            "installed model that can see images)."
        ),
    )


@dataclass(frozen=True)
class DiffusionSettings:
    """The in-process Stable Diffusion pipeline."""

    model: str = field(
        default="stable-diffusion-v1-5/stable-diffusion-v1-5",
        metadata=_spec(
            "Hub id, local diffusers folder, or a .safetensors/.ckpt file.", required=True
        ),
    )
    single_file_config: str = field(
        default="",
        metadata=_spec(
            "For a single-file model: a diffusers folder or hub id with its configs "
            "(empty: read them from the hub)."
        ),
    )
    device: str = field(
        default="auto",
        metadata=_spec(
            "Where to run: auto tries cuda, then mps, then cpu.",
            choices=("auto", "cuda", "mps", "cpu"),
        ),
    )
    dtype: str = field(
        default="auto",
        metadata=_spec(
            "Weights precision: auto is float16 on CUDA and float32 elsewhere.",
            choices=("auto", "float16", "bfloat16", "float32"),
        ),
    )
    memory_efficient_attention: bool = field(
        default=True, metadata=_spec("Use memory-efficient (SDPA/xformers) attention.")
    )
    attention_slicing: bool = field(
        default=False, metadata=_spec("Compute attention in slices: less memory, a little slower.")
    )
    vae_slicing: bool = field(default=True, metadata=_spec("Decode images one at a time."))
    vae_tiling: bool = field(default=False, metadata=_spec("Decode large images in tiles."))
    cpu_offload: str = field(
        default="none",
        metadata=_spec(
            "Move idle parts of the pipeline to the CPU: none, model or sequential (least memory).",
            choices=("none", "model", "sequential"),
        ),
    )
    fast: bool = field(
        default=False,
        metadata=_spec(
            "CUDA only: channels-last, fused QKV and a compiled UNet (slow first image)."
        ),
    )
    preload: bool = field(
        default=False, metadata=_spec("Load the pipeline in the background when the app starts.")
    )
    unload_ollama_models: bool = field(
        default=True,
        metadata=_spec("On CUDA, ask Ollama to unload its models when the GPU lacks memory."),
    )
    width: int = field(
        default=512,
        metadata=_spec("Default image width in pixels.", limit=IMAGE_SIDE),
    )
    height: int = field(
        default=512,
        metadata=_spec("Default image height in pixels.", limit=IMAGE_SIDE),
    )
    steps: int = field(
        default=20, metadata=_spec("Default number of denoising steps.", limit=IMAGE_STEPS)
    )
    guidance: float = field(
        default=7.5, metadata=_spec("Default guidance (CFG) scale.", limit=IMAGE_GUIDANCE)
    )
    scheduler: str = field(
        default="Euler a",
        metadata=_spec(
            "Default sampler.",
            choices=(
                "Euler",
                "Euler a",
                "DPM++ 2M",
                "DPM++ 2M Karras",
                "DDIM",
                "UniPC",
                "LMS",
                "Heun",
            ),
        ),
    )
    negative_prompt: str = field(default="", metadata=_spec("Default negative prompt."))
    preview: str = field(
        default="auto",
        metadata=_spec(
            "How images are drawn: auto picks kitty or sixel where the terminal speaks it, "
            "else halfblock.",
            choices=("auto", "halfblock", "kitty", "sixel", "off"),
        ),
    )


@dataclass(frozen=True)
class PathSettings:
    """Where files go; relative paths resolve against the config file's folder."""

    outputs: Path = field(default=Path("outputs"), metadata=_spec("Generated images.", path=True))
    logs: Path = field(default=Path("logs"), metadata=_spec("JSON-lines logs.", path=True))
    database: Path = field(
        default=Path("data/llm-pessoal.db"),
        metadata=_spec("SQLite file with conversations and the image index.", path=True),
    )
    exports: Path = field(
        default=Path("exports"), metadata=_spec("Conversations exported to Markdown.", path=True)
    )
    cache: Path = field(default=Path("cache"), metadata=_spec("Model cache (HF_HOME).", path=True))
    loras: Path = field(
        default=Path("models/loras"),
        metadata=_spec("LoRA files, used in a prompt as <lora:name:weight>.", path=True),
    )
    embeddings: Path = field(
        default=Path("models/embeddings"),
        metadata=_spec("Textual-inversion embeddings, used in a prompt by name.", path=True),
    )

    models: Path = field(
        default=Path("models"),
        metadata=_spec(
            "Local image models: diffusers folders, .safetensors/.ckpt files.", path=True
        ),
    )
    attachments: Path = field(
        default=Path("data/attachments"),
        metadata=_spec("Copies of the images attached to chat messages.", path=True),
    )
    presets: Path = field(
        default=Path("presets"),
        metadata=_spec("Chat presets exported and imported as TOML files.", path=True),
    )


@dataclass(frozen=True)
class BackupSettings:
    """Backup and restore."""

    restore_max_mb: int = field(
        default=100_000,
        metadata=_spec(
            "Most megabytes a restore may write (the archive's files together); "
            "a larger archive is refused.",
            lo=1,
            hi=1_000_000_000,
        ),
    )


@dataclass(frozen=True)
class LoggingSettings:
    """The JSON-lines log."""

    level: str = field(
        default="INFO",
        metadata=_spec(
            "Lowest level written; LOG_LEVEL or DEBUG=true override it.", choices=LOG_LEVELS
        ),
    )


@dataclass(frozen=True)
class UiSettings:
    """The terminal interface."""

    screen: str = field(default="chat", metadata=_spec("Screen shown at start.", choices=SCREENS))
    theme: str = field(
        default="textual-dark",
        metadata=_spec(
            "Textual theme at the first start; one chosen in the palette is remembered."
        ),
    )
    bell: bool = field(
        default=False,
        metadata=_spec("Ring the terminal bell when a reply or image finishes on another screen."),
    )


@dataclass(frozen=True)
class Settings:
    """Every setting of the app, built once in ``main()`` and passed in."""

    ollama: OllamaSettings = field(default_factory=OllamaSettings)
    chat: ChatSettings = field(default_factory=ChatSettings)
    diffusion: DiffusionSettings = field(default_factory=DiffusionSettings)
    paths: PathSettings = field(default_factory=PathSettings)
    backup: BackupSettings = field(default_factory=BackupSettings)
    logging: LoggingSettings = field(default_factory=LoggingSettings)
    ui: UiSettings = field(default_factory=UiSettings)
    hosts: tuple[HostSpec, ...] = ()
    """``[ollama] hosts``: the Ollama servers by name, in order (empty: ``[ollama] host``
    alone); :func:`ollama_hosts` gives the list to use either way."""
    keys: Mapping[str, str] = field(default_factory=dict)
    """``[keys]``: binding id -> keys (e.g. ``"chat.new" = "f9"``); the TUI checks the ids."""
    source: Path | None = None
    """The file these settings came from, or None for the built-in defaults."""


SECTIONS: dict[str, type[Any]] = {
    "ollama": OllamaSettings,
    "chat": ChatSettings,
    "diffusion": DiffusionSettings,
    "paths": PathSettings,
    "backup": BackupSettings,
    "logging": LoggingSettings,
    "ui": UiSettings,
}
_PY_TYPES: dict[str, type[Any]] = {
    "str": str,
    "int": int,
    "float": float,
    "bool": bool,
    "Path": Path,
    "tuple[str, ...]": tuple,
}


def normalize_host(host: str) -> str:
    """The address the official ollama client reaches for ``host``, in full.

    As with ``OLLAMA_HOST``: no scheme means http on port 11434, ``http://`` without a port
    means 80 and ``https://`` 443; a missing host name is this machine. ``0.0.0.0`` (the
    server's "every address") is read as this machine too.
    """
    host = host.strip()
    if not host:
        raise ValueError("empty")
    port = DEFAULT_OLLAMA_PORT
    scheme, sep, hostport = host.partition("://")
    if not sep:
        scheme, hostport = "http", host
    elif scheme in ("http", "https"):
        port = 80 if scheme == "http" else 443
    else:
        raise ValueError(f"scheme {scheme!r} is not http or https")
    if not hostport.strip("/"):
        raise ValueError("no host name")
    try:
        split = urllib.parse.urlsplit(f"{scheme}://{hostport}")
        name = split.hostname or "127.0.0.1"
        port = split.port or port
    except ValueError as exc:  # a port that is not a number, an unclosed "[", ...
        raise ValueError(str(exc)) from None
    if ":" not in name and not _HOSTNAME.fullmatch(name):
        raise ValueError(f"{name!r} is not a host name (letters, digits, '.', '-' and '_' only)")
    if any(c.isspace() for c in hostport):
        raise ValueError("an address has no spaces")
    if name == "0.0.0.0":
        name = "127.0.0.1"
    if ":" in name:  # IPv6 literal
        name = f"[{name}]"
    path = split.path.strip("/")
    return f"{scheme}://{name}:{port}" + (f"/{path}" if path else "")


def _allowed(name: str, meta: Mapping[str, Any], kind: type[Any]) -> str:
    if meta["choices"]:
        return "one of " + ", ".join(repr(c) for c in meta["choices"])
    if meta["duration"]:
        return "a duration like '5m', '1h30m' or '0' (negative: forever)"
    if meta.get("strings"):
        return 'a list of non-empty strings, like ["###", "</answer>"]'
    if meta["required"]:
        return "a non-empty string"
    if meta["limit"] is not None:
        return str(meta["limit"].describe())
    word = {bool: "true or false", str: "a string", Path: "a path (a string)"}.get(kind)
    if word:
        return word
    noun = "a whole number" if kind is int else "a number"
    lo, hi = meta["lo"], meta["hi"]
    if lo is not None and hi is not None:

        def fmt(v: float) -> str:
            return f"{v:g}" if kind is float else str(int(v))

        noun = f"{noun} from {fmt(lo)} to {fmt(hi)}"
    if meta["multiple_of"]:
        noun += f", a multiple of {meta['multiple_of']}"
    return noun


def _check(where: str, name: str, value: Any, kind: type[Any], meta: Mapping[str, Any]) -> Any:
    def bad() -> ConfigError:
        shown = repr(value)
        if len(shown) > 60:
            shown = shown[:57] + "..."
        return ConfigError(f"{where} {name} = {shown}: expected {_allowed(name, meta, kind)}")

    if kind is bool:
        if not isinstance(value, bool):
            raise bad()
        return value
    if kind is tuple:
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise bad()
        return tuple(value)
    if kind in (int, float):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise bad()
        if kind is int and not isinstance(value, int):
            raise bad()
        if value != value or (meta["lo"] is not None and value < meta["lo"]):  # NaN or too low
            raise bad()
        if meta["hi"] is not None and value > meta["hi"]:
            raise bad()
        if meta["multiple_of"] and value % meta["multiple_of"]:
            raise bad()
        return kind(value)
    if not isinstance(value, str):
        raise bad()
    if "\x00" in value:
        raise bad()
    if meta["choices"]:
        matched = _match_choice(value, meta["choices"])
        if matched is None:
            raise bad()
        return matched
    if meta["duration"] and not GO_DURATION.fullmatch(value.strip()):
        raise bad()
    if meta["required"] and not value.strip():
        raise bad()
    if kind is Path:
        if not value.strip():
            raise bad()
        try:
            return Path(value).expanduser()
        except RuntimeError:  # "~someone" where there is no such user
            raise bad() from None
    return value.strip() if meta["duration"] else value


def _match_choice(value: str, choices: tuple[str, ...]) -> str | None:
    for choice in choices:
        if value == choice or value.casefold() == choice.casefold():
            return choice
    return None


def _unknown(where: str, key: str, allowed: list[str], what: str = "key") -> ConfigError:
    hint = difflib.get_close_matches(key, allowed, n=1)
    maybe = f" (did you mean {hint[0]!r}?)" if hint else ""
    return ConfigError(
        f"{where} unknown {what} {key!r}{maybe}; allowed {what}s: {', '.join(allowed)}"
    )


_KEY = re.compile(r"^[a-z0-9_+\-]+(,[a-z0-9_+\-]+)*$")


def _check_keys(label: str, value: Any) -> dict[str, str]:
    """``[keys]``: each entry a binding id and its keys, like ``"ctrl+k"`` or ``"f5,ctrl+r"``."""
    if not isinstance(value, dict):
        raise ConfigError(f"{label}: [keys] must be a table of binding ids, not {value!r}")
    out: dict[str, str] = {}
    for binding, keys in value.items():
        if isinstance(keys, dict):  # written as chat.new = "..." without quotes: a table
            for sub, inner in _check_keys(label, keys).items():
                out[f"{binding}.{sub}"] = inner
            continue
        if not isinstance(keys, str) or not _KEY.match(keys.replace(" ", "").lower()):
            raise ConfigError(
                f"{label}: [keys] {binding} = {keys!r}: expected keys like 'ctrl+k', 'f5' "
                "or 'ctrl+k,f5' (names as Textual writes them)"
            )
        out[binding] = keys.replace(" ", "").lower()
    return out


def settings_from_mapping(
    data: Mapping[str, Any], *, source: Path | None = None, label: str = "config"
) -> Settings:
    """Validate a parsed TOML document into :class:`Settings`."""
    built: dict[str, Any] = {}
    for section, value in data.items():
        if section == "keys":
            built["keys"] = _check_keys(label, value)
            continue
        if section not in SECTIONS:
            raise _unknown(f"{label}:", f"[{section}]", [f"[{s}]" for s in SECTIONS], "section")
        if not isinstance(value, dict):
            raise ConfigError(f"{label}: [{section}] must be a table of keys, not {value!r}")
        cls = SECTIONS[section]
        known = {f.name: f for f in fields(cls)}
        where = f"{label}: [{section}]"
        kwargs: dict[str, Any] = {}
        if section == "ollama" and "hosts" in value:
            value = dict(value)
            built["hosts"] = value.pop("hosts")  # checked below, against [ollama] timeout
        for key, raw in value.items():
            if key not in known:
                raise _unknown(where, key, list(known))
            f = known[key]
            kind = _PY_TYPES[str(f.type)]
            kwargs[key] = _check(where, key, raw, kind, f.metadata)
        built[section] = cls(**kwargs)
    raw_hosts = built.pop("hosts", None)
    settings = Settings(**built, source=source)
    if raw_hosts is not None:
        settings = replace(settings, hosts=check_hosts(label, raw_hosts, settings.ollama.timeout))
    try:
        normalize_host(settings.ollama.host)
    except ValueError as exc:
        raise ConfigError(
            f"{label}: [ollama] host = {settings.ollama.host!r}: {exc}; "
            "expected an address like 'http://localhost:11434'"
        ) from None
    return settings


# -- [ollama] hosts: several Ollama servers ------------------------------------------------

HOST_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,31}")
HOST_KEYS = ("name", "url", "timeout")
HOSTS_EXAMPLE = (
    'hosts = [{ name = "gpu-box", url = "http://gpu-box:11434", timeout = 30 }, '
    '{ name = "laptop", url = "http://localhost:11434" }]'
)


@dataclass(frozen=True)
class HostSpec:
    """One Ollama server of ``[ollama] hosts``: its name (shown beside its models), its
    address, and how long to wait for it."""

    name: str
    url: str
    timeout: float


def check_hosts(label: str, raw: Any, default_timeout: float) -> tuple[HostSpec, ...]:
    """``[ollama] hosts`` validated: a non-empty list of tables with a unique ``name``, a
    ``url`` and an optional ``timeout`` (default ``[ollama] timeout``)."""
    where = f"{label}: [ollama] hosts"
    if not isinstance(raw, list) or not raw:
        shown = "an empty list" if raw == [] else repr(raw)[:60]
        raise ConfigError(
            f"{where} is {shown}: expected a list of servers, each with a name and a url, "
            f"like {HOSTS_EXAMPLE}; or leave the key out to use [ollama] host alone"
        )
    specs: list[HostSpec] = []
    for index, entry in enumerate(raw, 1):
        at = f"{where} entry {index}"
        if not isinstance(entry, dict):
            raise ConfigError(
                f"{at} = {entry!r:.60}: expected a table like "
                '{ name = "gpu-box", url = "http://gpu-box:11434" }'
            )
        for key in entry:
            if key not in HOST_KEYS:
                raise _unknown(f"{at}:", str(key), list(HOST_KEYS))
        name = entry.get("name")
        if not isinstance(name, str) or not HOST_NAME.fullmatch(name):
            raise ConfigError(
                f"{at}: name = {name!r:.60}: expected a name of 1 to 32 letters, digits, "
                "'.', '-' or '_' (starting with a letter or digit), like 'gpu-box'"
            )
        if any(s.name == name for s in specs):
            raise ConfigError(
                f"{at}: name {name!r} is used twice: each server needs a name of its own "
                f"(the names so far: {', '.join(s.name for s in specs)})"
            )
        url = entry.get("url")
        try:
            if not isinstance(url, str):
                raise ValueError("missing" if url is None else "not a string")
            normalize_host(url)
        except ValueError as exc:
            raise ConfigError(
                f"{at} ({name}): url = {url!r:.60}: {exc}; expected an address like "
                "'http://gpu-box:11434'"
            ) from None
        timeout = entry.get("timeout", default_timeout)
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, int | float)
            or not OLLAMA_TIMEOUT.allows(timeout)  # NaN fails this too
        ):
            raise ConfigError(
                f"{at} ({name}): timeout = {timeout!r:.60}: expected seconds, "
                f"{OLLAMA_TIMEOUT.describe()} (leave it out for [ollama] timeout)"
            )
        specs.append(HostSpec(name, url, float(timeout)))
    return tuple(specs)


def ollama_hosts(settings: Settings) -> tuple[HostSpec, ...]:
    """The Ollama servers to use: ``[ollama] hosts`` when it is set, else the one server of
    ``[ollama] host`` (or ``OLLAMA_HOST``), named after its host name."""
    if settings.hosts:
        return settings.hosts
    host = settings.ollama.host
    name = urllib.parse.urlsplit(normalize_host(host)).hostname or "ollama"
    if not HOST_NAME.fullmatch(name):
        name = "ollama"
    return (HostSpec(name, host, settings.ollama.timeout),)


def ignored_host_variable(settings: Settings, env: Mapping[str, str]) -> str | None:
    """A line saying that ``OLLAMA_HOST`` is not used, when ``[ollama] hosts`` lists the
    servers and the variable is set (a user who set it expects it to count); else None."""
    if settings.hosts and env.get("OLLAMA_HOST"):
        return (
            f"OLLAMA_HOST={env['OLLAMA_HOST']!r} is not used: [ollama] hosts in "
            f"{settings.source or 'config.toml'} lists the servers "
            f"({', '.join(h.name for h in settings.hosts)})"
        )
    return None


def find_config(explicit: str | os.PathLike[str] | None, env: Mapping[str, str]) -> Path | None:
    """The config file to read: --config, then $LLM_PESSOAL_CONFIG, then ./config.toml,
    then the user's config folder. None when there is none (built-in defaults apply)."""
    for given, by in ((explicit, "with --config"), (env.get(ENV_CONFIG), f"by {ENV_CONFIG}")):
        if given:
            path = Path(given)
            with contextlib.suppress(RuntimeError):  # "~someone" where there is no such user
                path = path.expanduser()
            if not path.is_file():
                raise ConfigError(f"{path}: config file not found (given {by})")
            return path
    local = Path.cwd() / "config.toml"
    if local.is_file():
        return local
    xdg = Path(env.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    user = xdg / "llm-pessoal" / "config.toml"
    return user if user.is_file() else None


def _default_base(env: Mapping[str, str]) -> Path:
    xdg = Path(env.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return xdg / "llm-pessoal"


def _apply_env(settings: Settings, env: Mapping[str, str]) -> Settings:
    if env.get("OLLAMA_HOST"):
        host = env["OLLAMA_HOST"]
        try:
            normalize_host(host)
        except ValueError as exc:
            raise ConfigError(
                f"OLLAMA_HOST={host!r}: {exc}; expected an address like 'http://localhost:11434'"
            ) from None
        settings = replace(settings, ollama=replace(settings.ollama, host=host))
    level = settings.logging.level
    if env.get("LOG_LEVEL"):
        matched = _match_choice(env["LOG_LEVEL"].strip(), LOG_LEVELS)
        if matched is None:
            raise ConfigError(
                f"LOG_LEVEL={env['LOG_LEVEL']!r}: expected one of {', '.join(LOG_LEVELS)}"
            )
        level = matched
    if env.get("DEBUG", "").strip().lower() in ("1", "true", "yes", "on"):
        level = "DEBUG"
    if level != settings.logging.level:
        settings = replace(settings, logging=LoggingSettings(level=level))
    return settings


def _resolve_paths(settings: Settings, base: Path) -> Settings:
    resolved = {
        f.name: (base / getattr(settings.paths, f.name)).resolve() for f in fields(PathSettings)
    }
    return replace(settings, paths=PathSettings(**resolved))


def load_settings(
    explicit: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
) -> Settings:
    """Find, read and validate the configuration, then apply the environment."""
    env = os.environ if env is None else env
    path = find_config(explicit, env)
    if path is None:
        settings = Settings()
        base = _default_base(env)
    else:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read the config file: {exc}") from None
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
        settings = settings_from_mapping(data, source=path.resolve(), label=str(path))
        base = path.resolve().parent
    settings = _resolve_paths(_apply_env(settings, env), base)
    _check_chat_format(settings, str(path or "config"))
    return settings


def _check_chat_format(settings: Settings, label: str) -> None:
    """``[chat] format``: a schema file that is missing or not JSON stops here."""
    if settings.chat.format.strip().lower() in ("", "json"):
        return
    from engines.chat_options import OptionError, defaults_from_settings

    try:
        defaults_from_settings(settings)
    except OptionError as exc:
        raise ConfigError(f"{label}: [chat] {exc}") from None


def describe_settings() -> list[tuple[str, str, Any, str]]:
    """(section, key, default, description) for every setting: the README and tests use it."""
    rows: list[tuple[str, str, Any, str]] = []
    for section, cls in SECTIONS.items():
        for f in fields(cls):
            default = f.default
            rows.append((section, f.name, default, f.metadata["doc"]))
    return rows
