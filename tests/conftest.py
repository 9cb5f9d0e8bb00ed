"""Shared fixtures: a fake Ollama server, a config file for it, and the CLI as a subprocess.

- ``ollama_server``: a started :class:`FakeOllama` (see ``tests/ollama_server.py``), stopped
  after the test. Steer it through its attributes (``reply``, ``rate``, ``drop_after``...).
- ``make_config(**sections)``: writes ``tmp_path/config.toml`` whose ``[paths]`` point at
  ``tmp_path`` subfolders and whose ``[ollama] host`` is the fake server; keyword arguments
  are sections of extra keys, e.g. ``make_config(chat={"temperature": 0.1})``.
- ``config_file``: ``make_config()`` with nothing extra.
- ``cli``: runs ``python -m tui.cli ...`` in ``tmp_path`` (so ``./config.toml`` is the one
  ``make_config`` wrote) with an environment free of the outer ``OLLAMA_HOST``,
  ``LLM_PESSOAL_CONFIG``, ``LOG_LEVEL`` and ``DEBUG``, and with ``HOME`` and the XDG folders
  inside ``tmp_path``.

Every test also runs without those four variables in ``os.environ`` (autouse fixture), so
in-process code that reads the environment sees the test's setup, not the developer's shell.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

# The suite starts Python hundreds of times (the CLI, the app in tmux, the pytest-xdist
# workers): where the environment forbids bytecode files (PYTHONDONTWRITEBYTECODE, as in some
# containers), each of them compiled the app's modules again and pytest re-rewrote every test
# module. Let them be cached (in the git-ignored __pycache__ folders), here and in children.
sys.dont_write_bytecode = False
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
# A pytest-xdist worker's environment says COLUMNS=80 and LINES=24: the app started in a real
# terminal (tmux, kitty, xterm) would believe them over the terminal's own size.
if "PYTEST_XDIST_WORKER" in os.environ:
    os.environ.pop("COLUMNS", None)
    os.environ.pop("LINES", None)

if TYPE_CHECKING:
    from ollama_server import FakeOllama
else:
    try:  # tests/ is not a package: pytest puts tests/ itself on sys.path
        from ollama_server import FakeOllama
    except ImportError:  # ... unless someone makes it one
        from tests.ollama_server import FakeOllama

REPO = Path(__file__).resolve().parent.parent
LEAKY_ENV = ("OLLAMA_HOST", "LLM_PESSOAL_CONFIG", "LOG_LEVEL", "DEBUG", "HF_HOME")

MakeConfig = Callable[..., Path]


def pytest_configure(config: pytest.Config) -> None:
    """A suite started in the background (``nohup``, ``&`` in a script) has Ctrl+C
    ignored, and the apps it starts would inherit that: the tests that press Ctrl+C in
    them would then see them finish instead of stop. Python's own handler is put back,
    which a started program does not inherit (it gets the default)."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True)
def _no_leaky_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in LEAKY_ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def ollama_server() -> Iterator[FakeOllama]:
    """A fake Ollama on 127.0.0.1 (a free port), stopped after the test."""
    fake = FakeOllama().start()
    try:
        yield fake
    finally:
        fake.stop()


def toml_value(value: Any) -> str:
    """A Python scalar as TOML (JSON's strings and numbers are TOML's, but not its bools)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Path):
        value = str(value)
    if isinstance(value, str | int | float):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML for {value!r}")


def write_toml(path: Path, sections: Mapping[str, Mapping[str, Any]]) -> Path:
    lines: list[str] = []
    for section, keys in sections.items():
        lines.append(f"[{section}]")
        lines += [f"{key} = {toml_value(value)}" for key, value in keys.items()]
        lines.append("")
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


@pytest.fixture
def make_config(tmp_path: Path, ollama_server: FakeOllama) -> MakeConfig:
    """Write ``tmp_path/config.toml`` for the fake server; keyword args add keys per section."""

    def make(**sections: Mapping[str, Any]) -> Path:
        base: dict[str, dict[str, Any]] = {
            "ollama": {"host": ollama_server.url, "timeout": 10, "retry_interval": 0.5},
            "paths": {
                "outputs": tmp_path / "outputs",
                "logs": tmp_path / "logs",
                "database": tmp_path / "data" / "llm-pessoal.db",
                "exports": tmp_path / "exports",
                "cache": tmp_path / "cache",
            },
        }
        for section, keys in sections.items():
            base.setdefault(section, {}).update(keys)
        return write_toml(tmp_path / "config.toml", base)

    return make


@pytest.fixture
def config_file(make_config: MakeConfig) -> Path:
    """``tmp_path/config.toml`` pointing at the fake server and at ``tmp_path`` folders."""
    return make_config()


@dataclass
class Cli:
    """Runs ``python -m tui.cli`` as a real subprocess in ``cwd`` with a clean environment."""

    cwd: Path
    env: dict[str, str] = field(default_factory=dict)

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "tui.cli", *args]

    def environment(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        return {**self.env, **(extra or {})}

    def run(
        self,
        *args: str,
        input: str | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float = 120,  # a generous deadline: starting torch on two busy cores is slow
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.command(*args),
            cwd=self.cwd,
            env=self.environment(env),
            input=input if input is not None else "",
            capture_output=True,
            text=True,
            encoding="utf-8",
            timeout=timeout,
            check=False,
        )

    def popen(self, *args: str, env: Mapping[str, str] | None = None) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self.command(*args),
            cwd=self.cwd,
            env=self.environment(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
        )


def clean_env(tmp_path: Path) -> dict[str, str]:
    """The outer environment less what would steer the app, with HOME and XDG in tmp_path."""
    env = {k: v for k, v in os.environ.items() if k not in LEAKY_ENV and not k.startswith("XDG_")}
    env.update(
        HOME=str(tmp_path / "home"),
        XDG_CONFIG_HOME=str(tmp_path / "home" / ".config"),
        XDG_DATA_HOME=str(tmp_path / "home" / ".local" / "share"),
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        PYTHONUTF8="1",
        COLUMNS="120",
    )
    env.pop("OLLAMA_API_KEY", None)
    return env


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return Cli(cwd=tmp_path, env=clean_env(tmp_path))


# --- tiny Stable Diffusion pipelines (tests/sd_fixtures.py) ---
# Built once a session from random weights (fixed seed), about 1.5 s on two cores; torch and
# diffusers are imported only when a test asks for one. Appended here as one block (other
# fixtures above), hence imports below the top of the file; sd_fixtures itself imports only
# the standard library at import time.
#
# - ``tiny_sd_folder``: a diffusers folder (``model_index.json``, ``unet/``, ``vae/``,
#   ``text_encoder/``, ``tokenizer/``, ``scheduler/``), for ``from_pretrained(folder,
#   local_files_only=True)``.
# - ``tiny_sd_single_file``: a :class:`TinySingleFile` ``(checkpoint, config)``: the same
#   weights as one LDM-layout ``.safetensors`` file, and the weightless folder to load it
#   with: ``from_single_file(checkpoint, config=config, local_files_only=True)``.
# Both are shared by the whole session: treat them as read-only.

if TYPE_CHECKING:
    from sd_fixtures import (
        SINGLE_FILE_NAME,
        TinySingleFile,
        build_single_file_config,
        build_tiny_pipeline_folder,
        build_tiny_single_file,
    )
else:
    try:  # as for ollama_server above: tests/ is on sys.path, unless it becomes a package
        from sd_fixtures import (
            SINGLE_FILE_NAME,
            TinySingleFile,
            build_single_file_config,
            build_tiny_pipeline_folder,
            build_tiny_single_file,
        )
    except ImportError:
        from tests.sd_fixtures import (
            SINGLE_FILE_NAME,
            TinySingleFile,
            build_single_file_config,
            build_tiny_pipeline_folder,
            build_tiny_single_file,
        )


@pytest.fixture(scope="session")
def tiny_sd_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny SD 1.x pipeline saved as a diffusers folder (built once a session)."""
    return build_tiny_pipeline_folder(tmp_path_factory.mktemp("tiny-sd") / "tiny-sd15")


@pytest.fixture(scope="session")
def tiny_sd_single_file(
    tmp_path_factory: pytest.TempPathFactory, tiny_sd_folder: Path
) -> TinySingleFile:
    """The same pipeline as one LDM checkpoint and its config folder (built once a session)."""
    root = tmp_path_factory.mktemp("tiny-sd-single-file")
    return TinySingleFile(
        checkpoint=build_tiny_single_file(tiny_sd_folder, root / SINGLE_FILE_NAME),
        config=build_single_file_config(tiny_sd_folder, root / "config"),
    )


# --- end of tiny Stable Diffusion pipelines ---


@pytest.fixture
def steady_cursor(monkeypatch: pytest.MonkeyPatch) -> None:
    """Text cursors that do not blink, so a snapshot does not depend on when it is taken."""
    from textual.widgets import Input, TextArea

    monkeypatch.setattr(TextArea, "_toggle_cursor_blink_visible", lambda self: None)
    monkeypatch.setattr(Input, "_toggle_cursor", lambda self: None)


# -- several Ollama servers (the CLI's and the TUI's tests of [ollama] hosts) -------------


@pytest.fixture
def laptop() -> Iterator[FakeOllama]:
    """A second server with llama3.2 and gemma3, whose replies say where they come from."""
    from ollama_server import FakeModel

    server = FakeOllama(models=[FakeModel("llama3.2:latest"), FakeModel("gemma3:1b")]).start()
    server.reply = "from the laptop"
    yield server
    server.stop()


@pytest.fixture
def frozen() -> Iterator[FakeOllama]:
    """A server that accepts connections and never answers."""
    from ollama_server import FakeModel

    server = FakeOllama(models=[FakeModel("llama3.2:latest")]).start()
    server.unresponsive = True
    yield server
    server.stop()
