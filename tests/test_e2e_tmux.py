"""End to end: the real app in a real terminal (tmux), against the test Ollama server."""

from __future__ import annotations

import os
import shutil
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from ollama_server import FakeOllama
from tmux_helpers import Tmux

from engines.config import load_settings
from engines.store import Store

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed"),
]

APP = Path(sys.executable).with_name("llm-pessoal")


@pytest.fixture
def tmux() -> Iterator[Tmux]:
    t = Tmux(f"llm-pessoal-test-{uuid.uuid4().hex[:8]}")
    yield t
    t.kill()


def test_chat_in_a_real_terminal(tmux: Tmux, ollama_server: FakeOllama, config_file: Path) -> None:
    ollama_server.reply = "The answer is **forty-two**, end of line."
    env = {k: v for k, v in os.environ.items() if k not in ("OLLAMA_HOST", "LLM_PESSOAL_CONFIG")}
    # tmux may resize a new detached pane just after spawning it; start once it is settled.
    command = f"sleep 0.3; exec {APP} --config {config_file}"
    tmux(
        "new-session",
        "-d",
        "-s",
        "app",
        "-x",
        "120",
        "-y",
        "40",
        *[a for k in ("PATH", "HOME", "LANG") if k in env for a in ("-e", f"{k}={env[k]}")],
        "-e",
        "TERM=xterm-256color",
        command,
    )
    tmux.wait_for("Ollama 0.12.6")
    tmux("send-keys", "-t", "app", "-l", "What is the answer?")
    tmux("send-keys", "-t", "app", "Enter")
    screen = tmux.wait_for("end of line.")
    assert "The answer is forty-two, end of line." in screen
    assert "What is the answer?" in screen
    tmux.wait_for("tok/s")
    tmux("send-keys", "-t", "app", "C-q")
    deadline = time.monotonic() + 10
    while tmux.alive():
        assert time.monotonic() < deadline, "Ctrl+Q did not quit the app"
        time.sleep(0.1)
    store = Store.open(load_settings(config_file, env={}).paths.database)
    [conversation] = store.conversations()
    assert [m.content for m in store.messages(conversation.id)] == [
        "What is the answer?",
        ollama_server.reply,
    ]
