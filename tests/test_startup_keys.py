"""Typing works from the first frame, and a key pressed during start-up is never lost.

The real app starts in a real terminal (tmux); from the moment it is spawned, a letter is
typed every few tens of milliseconds (through the pty, as a person typing would) until a
moment after its first frame. Every letter must end up in the chat prompt, in order:
with an empty database, with a long history (the sidebar pages it), and with a database
another program holds locked (the app starts on a throw-away one and says so).
"""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import string
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import closing
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


LOCKED = "locked by another"
HISTORY = 600
"""Conversations in the "long history" case: twelve pages of the sidebar."""


@pytest.fixture(params=["empty", "long-history", "locked-database"])
def database(request: pytest.FixtureRequest, config_file: Path) -> Iterator[str]:
    """The database the app starts with, and what its screen says about it."""
    from engines.chat_types import ChatOptions
    from engines.config import load_settings
    from engines.store import Store

    path = load_settings(config_file, env={}).paths.database
    if request.param == "empty":
        yield "Ollama"
        return
    store = Store.open(path)
    try:
        for i in range(HISTORY if request.param == "long-history" else 1):
            c = store.create_conversation("llama3.2:latest", ChatOptions(), f"Talk {i}")
            store.add_message(c.id, "user", f"question {i}")
    finally:
        store.close()
    if request.param == "long-history":
        yield f"Talk {HISTORY - 1}"  # the newest, open and first in the list
        return
    with closing(sqlite3.connect(path, isolation_level=None)) as holder:
        holder.execute("PRAGMA locking_mode = EXCLUSIVE")
        holder.execute("BEGIN EXCLUSIVE")
        holder.execute("UPDATE conversations SET title = title")
        yield LOCKED
        holder.execute("ROLLBACK")


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
                # up to the box's right side, or the left side of a notice over it
                body = re.split("[│▌]", inner[inner.find("│") + 1 :])[0]
                out.append(body.strip())
    return "".join(out)


def readable(screen: str) -> str:
    """The screen's text, and the text of the notices on it (right of their "▌" side),
    each as one line."""
    notices = " ".join(line.split("▌", 1)[1].strip() for line in screen.splitlines() if "▌" in line)
    return screen + "\n" + " ".join(notices.split())


def test_keys_typed_while_the_app_starts_all_reach_the_prompt(
    tmux: Tmux, config_file: Path, database: str
) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("OLLAMA_HOST", "LLM_PESSOAL_CONFIG")}
    # (the snapshot plugin sets COLUMNS=80 and LINES=24 in the test process, and the tmux
    # server passes them on: the app would draw 80x24 whatever the pane's size)
    command = f"exec env -u COLUMNS -u LINES {sys.executable} -c '{RUN_APP}' --config {config_file}"
    # the notice of a locked database stands at the bottom right for 30 s, over the
    # prompt's right end: wide enough, the letters are left of it
    width = "200" if database == LOCKED else "120"
    # tmux starts the command at once: the letters below are typed while Python starts,
    # while the app imports, composes and draws, and just after its first frame
    tmux(
        "new-session", "-d", "-s", "app", "-x", width, "-y", "40",
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
    # and the screen says what it started with (a notice, wrapped in its box, for a lock)
    deadline = time.monotonic() + 15
    while database not in readable(tmux.screen()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert database in readable(tmux.screen()), tmux.screen()
