"""How to launch and drive each client the benchmarks measure: the app, its CLI (the
harness's sanity check), and peer chat TUIs installed in their own venvs under /tmp/peers.

Each client says how to start it against the fake server (its config written under a
temp dir, never the user's), what on screen means "first frame", what means "ready to
chat" (connected, model chosen), and how to send a message. A peer that cannot be driven
says why in ``unsupported``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from common import (
    APP,
    MODEL,
    ROOT,
    SERVER_VERSION,
    VENV_BIN,
    Terminal,
    app_config,
    clean_env,
    click_text,
    log,
)

PEERS_DIR = Path(os.environ.get("BENCH_PEERS_DIR", "/tmp/peers"))
PROMPT = "Write the benchmark reply"


@dataclass
class Launch:
    argv: list[str]
    env: dict[str, str]
    cwd: str | None = None


@dataclass
class Client:
    name: str
    setup: Callable[[Path, str, str], Launch]
    """(workdir, server url, prompt) -> how to start it."""
    first_frame: list[str] = field(default_factory=list)
    """Any of these on screen: the first frame is drawn."""
    ready: Callable[[Terminal], None] | None = None
    """Block until it can send (connected, model chosen); raise on failure."""
    send: Callable[[Terminal, str], None] | None = None
    """Type the prompt and send it; None: the client sends on its own when started."""
    first_run: Callable[[Terminal], None] | None = None
    """One-time dialogs on a fresh data dir, done in an untimed warm-up launch."""
    quit_keys: str = "\x11"
    venv: Path | None = None
    version: Callable[[], str | None] = lambda: None
    stream_unsupported: str | None = None
    """Why its streaming cannot be measured against the fake server, if it cannot."""

    def available(self) -> str | None:
        """None if it can run here, else why not."""
        if self.venv is not None and not (self.venv / "bin" / "python").exists():
            return (
                f"not installed: python3.12 -m venv {self.venv} && "
                f"{self.venv}/bin/pip install {self.name_on_pypi()}"
            )
        return None

    def name_on_pypi(self) -> str:
        return {"elia": "elia-chat"}.get(self.name, self.name)


def _wait(term: Terminal, needles: list[str], timeout: float, what: str) -> None:
    if term.wait_visible(needles, timeout) is None:
        raise RuntimeError(f"{what}: {needles!r} not on screen after {timeout:.0f} s")


def _dist_version(venv: Path, dist: str) -> Callable[[], str | None]:
    def version() -> str | None:
        for site in venv.glob("lib/python3*/site-packages"):
            for info in site.glob(f"{dist.replace('-', '_')}-*.dist-info"):
                return info.name[len(dist) + 1 : -len(".dist-info")]
        return None

    return version


# ---------------------------------------------------------------------------- the app


def _app_setup(workdir: Path, url: str, prompt: str) -> Launch:
    cfg = app_config(workdir, url)
    # PYTHONPATH: the code of this checkout, not whichever one the shared venv points at
    return Launch([str(APP), "--config", str(cfg)], clean_env(PYTHONPATH=str(ROOT)))


def _app_ready(term: Terminal) -> None:
    _wait(term, [f"Ollama {SERVER_VERSION}"], 30, "app online")
    # The model picker got the server's list (its label shows the size); not fatal if the
    # label changes: the default model is the one the server has.
    if term.wait_visible(["2.0 GB"], 5) is None:
        log("llm-pessoal: model list not seen on screen; sending anyway")


def _app_send(term: Terminal, prompt: str) -> None:
    term.type(prompt)
    _wait(term, [prompt], 5, "app prompt typed")
    term.enter_at = time.time()  # type: ignore[attr-defined]  # send_to_first_words_s
    term.write("\r")


APP_CLIENT = Client(
    name="llm-pessoal",
    setup=_app_setup,
    first_frame=["Message (Enter to send"],
    ready=_app_ready,
    send=_app_send,
    version=_dist_version(APP.parent.parent, "llm_pessoal"),
)


def _cli_setup(workdir: Path, url: str, prompt: str) -> Launch:
    cfg = app_config(workdir, url)
    return Launch([str(APP), "--config", str(cfg), "chat", prompt], clean_env(PYTHONPATH=str(ROOT)))


RAW_CLIENT_CODE = """
import json, sys, urllib.request
body = {"model": sys.argv[2], "messages": [{"role": "user", "content": sys.argv[3]}]}
req = urllib.request.Request(sys.argv[1] + "/api/chat", json.dumps(body).encode())
with urllib.request.urlopen(req) as r:
    for line in r:
        sys.stdout.write(json.loads(line).get("message", {}).get("content", ""))
        sys.stdout.flush()
"""


def _raw_setup(workdir: Path, url: str, prompt: str) -> Launch:
    argv = [str(VENV_BIN / "python"), "-c", RAW_CLIENT_CODE, url, MODEL, prompt]
    return Launch(argv, clean_env())


RAW_CLIENT = Client(
    name="raw-line-printer",
    setup=_raw_setup,
    send=None,  # stdlib only: reads the NDJSON stream and writes each token as it comes
    quit_keys="",
)
"""The harness's own floor: no TUI, no ollama client, a token on screen as soon as read."""

CLI_CLIENT = Client(
    name="llm-pessoal-chat-cli",
    setup=_cli_setup,
    send=None,  # `llm-pessoal chat PROMPT` sends as it starts and prints each token
    quit_keys="",
)


# ---------------------------------------------------------------------------- elia


def _elia_setup(workdir: Path, url: str, prompt: str) -> Launch:
    cfg = workdir / "xdg-config" / "elia"
    cfg.mkdir(parents=True, exist_ok=True)
    (workdir / "xdg-data").mkdir(exist_ok=True)
    (workdir / "home").mkdir(exist_ok=True)
    # litellm's ollama_chat provider talks to /api/chat, as Ollama's own clients do.
    (cfg / "config.toml").write_text(
        'default_model = "bench-ollama"\n'
        "[[models]]\n"
        'id = "bench-ollama"\n'
        f'name = "ollama_chat/{MODEL}"\n'
        f'api_base = "{url}"\n'
    )
    env = clean_env(
        XDG_CONFIG_HOME=str(workdir / "xdg-config"),
        XDG_DATA_HOME=str(workdir / "xdg-data"),
        HOME=str(workdir / "home"),
    )
    return Launch([str(PEERS_DIR / "elia-chat" / "bin" / "elia")], env)


def _elia_ready(term: Terminal) -> None:
    _wait(term, ["Send message", f"ollama_chat/{MODEL}"], 30, "elia ready")


def _elia_send(term: Terminal, prompt: str) -> None:
    term.type(prompt)
    _wait(term, [prompt], 5, "elia prompt typed")
    term.write("\n")  # ctrl+j sends; Enter is a new line in elia


ELIA = Client(
    name="elia",
    setup=_elia_setup,
    first_frame=["Send message"],
    ready=_elia_ready,
    send=_elia_send,
    first_run=lambda term: _wait(term, ["Send message"], 60, "elia first run"),
    quit_keys="\x1b",
    venv=PEERS_DIR / "elia-chat",
    version=_dist_version(PEERS_DIR / "elia-chat", "elia_chat"),
)


# ---------------------------------------------------------------------------- parllama


def _parllama_setup(workdir: Path, url: str, prompt: str) -> Launch:
    (workdir / "home").mkdir(parents=True, exist_ok=True)
    argv = [
        str(PEERS_DIR / "parllama" / "bin" / "parllama"),
        "--data-dir", str(workdir / "parllama"),
        "--ollama-url", url,
        "--starting-tab", "chat",
        "--use-last-tab-on-startup", "0",
        "--auto-name-session", "0",
        "--ps-poll", "0",
    ]  # fmt: skip
    env = clean_env(HOME=str(workdir / "home"), XDG_DATA_HOME=str(workdir / "xdg-data"))
    return Launch(argv, env)


def _parllama_first_run(term: Terminal) -> None:
    _wait(term, ["Welcome"], 60, "parllama welcome dialog")
    if not click_text(term, " OK "):
        raise RuntimeError("parllama: no OK button on the welcome dialog")
    time.sleep(1.0)


def _parllama_ready(term: Terminal) -> None:
    _wait(term, ["Type a message", "Select"], 30, "parllama chat tab")
    time.sleep(1.0)  # the model list loads after the first frame
    if not click_text(term, "Select"):
        raise RuntimeError("parllama: no model picker")
    if not click_text(term, MODEL):
        raise RuntimeError(f"parllama: {MODEL} not offered")
    _wait(term, [f"Ollama : {MODEL}"], 10, "parllama model chosen")


def _parllama_send(term: Terminal, prompt: str) -> None:
    click_text(term, "Type a message")
    term.type(prompt)
    _wait(term, [prompt], 5, "parllama prompt typed")
    term.write("\r")


PARLLAMA = Client(
    name="parllama",
    setup=_parllama_setup,
    first_frame=["Type a message"],
    ready=_parllama_ready,
    send=_parllama_send,
    first_run=_parllama_first_run,
    venv=PEERS_DIR / "parllama",
    version=_dist_version(PEERS_DIR / "parllama", "parllama"),
)


# ---------------------------------------------------------------------------- oterm


def _oterm_setup(workdir: Path, url: str, prompt: str) -> Launch:
    data = workdir / "oterm-data"
    data.mkdir(parents=True, exist_ok=True)
    (workdir / "home").mkdir(exist_ok=True)
    # No splash animation, so the first frame is the app itself.
    (data / "config.json").write_text('{"theme": "textual-dark", "splash-screen": false}')
    env = clean_env(OLLAMA_URL=url, OTERM_DATA_DIR=str(data), HOME=str(workdir / "home"))
    return Launch([str(PEERS_DIR / "oterm" / "bin" / "oterm")], env)


OTERM = Client(
    name="oterm",
    setup=_oterm_setup,
    first_frame=["^n new chat"],
    venv=PEERS_DIR / "oterm",
    version=_dist_version(PEERS_DIR / "oterm", "oterm"),
    stream_unsupported=(
        f"oterm {_dist_version(PEERS_DIR / 'oterm', 'oterm')()} chats through pydantic-ai's OpenAI-compatible endpoint "
        "(POST /v1/chat/completions, SSE); tests/ollama_server.py speaks only Ollama's "
        "native /api/* and answers 404, so oterm shows 'status_code: 404' and never streams. "
        "Its start-up is timed; its stream is not."
    ),
)

PEERS: dict[str, Client] = {c.name: c for c in (ELIA, PARLLAMA, OTERM)}
PEER_ALIASES = {"elia-chat": "elia", "par_llama": "parllama"}


def peers_from_flag(flag: str) -> list[Client]:
    out = []
    for raw in (p.strip() for p in flag.split(",")):
        if not raw:
            continue
        name = PEER_ALIASES.get(raw, raw)
        if name not in PEERS:
            raise SystemExit(f"unknown peer {raw!r}; known: {', '.join(PEERS)}")
        out.append(PEERS[name])
    return out
