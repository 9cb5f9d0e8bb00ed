"""Typing works from the first frame, and a key pressed during start-up is never lost.

The real app starts in a real terminal (tmux); from the moment it is spawned, a letter is
typed every few tens of milliseconds (through the pty, as a person typing would) until a
moment after its first frame. Every letter must end up in the chat prompt, in order.
"""

from __future__ import annotations

import os
import shutil
import string
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from tmux_helpers import Tmux

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed"),
]

REPO = Path(__file__).resolve().parent.parent
RUN_APP = "import sys; from tui.cli import main; sys.exit(main())"
FIRST_FRAME = "Ollama"  # the status line, drawn with the first frame of the chat screen


@pytest.fixture
def tmux() -> Iterator[Tmux]:
    t = Tmux(f"llm-pessoal-keys-{uuid.uuid4().hex[:8]}")
    yield t
    t.kill()


def prompt_text(screen: str) -> str:
    """What the chat prompt holds: the text between the borders of its box's lines."""
    lines = screen.splitlines()
    out = []
    for i, line in enumerate(lines):
        if "╭" in line and i + 1 < len(lines):
            for inner in lines[i + 1 :]:
                if "╰" in inner:
                    break
                body = inner[inner.find("│") + 1 : inner.rfind("│")]
                out.append(body.strip())
    return "".join(out)


def test_keys_typed_while_the_app_starts_all_reach_the_prompt(
    tmux: Tmux, config_file: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("OLLAMA_HOST", "LLM_PESSOAL_CONFIG")}
    command = f"exec {sys.executable} -c '{RUN_APP}' --config {config_file}"
    # tmux starts the command at once: the letters below are typed while Python starts,
    # while the app imports, composes and draws, and just after its first frame
    tmux(
        "new-session", "-d", "-s", "app", "-x", "120", "-y", "40",
        *[a for k in ("PATH", "HOME", "LANG") if k in env for a in ("-e", f"{k}={env[k]}")],
        "-e", f"PYTHONPATH={REPO}", "-e", "TERM=xterm-256color",
        command,
    )  # fmt: skip
    letters = (string.ascii_lowercase + string.ascii_uppercase)[:48]
    typed: list[str] = []
    first_frame_at: list[float] = []
    stop = threading.Event()

    def type_letters() -> None:
        for ch in letters:
            tmux("send-keys", "-t", "app", "-l", ch)
            typed.append(ch)
            if first_frame_at and time.monotonic() > first_frame_at[0] + 0.5:
                return
            if stop.wait(0.04):
                return

    typist = threading.Thread(target=type_letters, daemon=True)
    typist.start()
    deadline = time.monotonic() + 60
    while not first_frame_at and time.monotonic() < deadline:
        if FIRST_FRAME in tmux.screen():
            first_frame_at.append(time.monotonic())
        time.sleep(0.02)
    typist.join(30)
    stop.set()
    assert first_frame_at, f"no first frame in 60 s:\n{tmux.screen()}"
    expected = "".join(typed)
    assert len(expected) >= 3, "the app started before any key was typed"
    # wait for the state: every letter in the prompt (or give up after 15 s)
    got = ""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        got = prompt_text(tmux.screen())
        if got == expected:
            break
        time.sleep(0.1)
    assert got == expected, (
        f"typed {expected!r} from the spawn on, the prompt holds {got!r}:\n{tmux.screen()}"
    )
