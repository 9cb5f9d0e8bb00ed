"""The terminal going away (an ssh link dropped, the window closed) ends the app, also
where SIGHUP is ignored (``nohup``): Textual's input thread then read an empty input over
and over, a CPU's worth, for as long as the machine ran. A reply streaming meanwhile is
kept, marked interrupted, as a quit keeps it."""

from __future__ import annotations

import contextlib
import os
import pty
import signal
import sys
from pathlib import Path

from ollama_server import FakeOllama
from waiting import read_until, wait_until

from engines.config import load_settings
from engines.store import Store

REPO = Path(__file__).resolve().parent.parent


def test_a_hung_up_terminal_ends_the_app_and_keeps_its_streaming_reply_interrupted(
    ollama_server: FakeOllama, config_file: Path
) -> None:
    ollama_server.reply = "word " * 5000
    ollama_server.rate = 50
    env = {**os.environ, "PYTHONPATH": str(REPO), "TERM": "xterm-256color"}
    argv = [sys.executable, "-m", "tui.cli", "--config", str(config_file)]
    pid, fd = pty.fork()
    if pid == 0:  # the child: the app on the pty, deaf to SIGHUP as under nohup
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        os.execve(argv[0], argv, env)
    exited: list[int] = []

    def gone() -> bool:
        if not exited:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                exited.append(status)
        return bool(exited)

    try:
        assert b"\x1b[?1036h" in read_until(fd, b"\x1b[?1036h", 60), "the app started"
        os.write(fd, b"are you there?\r")
        wait_until(lambda: ollama_server.sent_tokens >= 5, timeout=60, what="the reply streaming")
        os.close(fd)  # the terminal hangs up
        fd = -1
        wait_until(gone, timeout=30, what="the app gone with its terminal")
    finally:
        if fd >= 0:
            os.close(fd)
        if not exited:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    store = Store.open(load_settings(config_file, env={}).paths.database)
    try:
        [conversation] = store.conversations()
        last = store.messages(conversation.id)[-1]
    finally:
        store.close()
    assert (last.role, last.status) == ("assistant", "interrupted")
    assert last.content.startswith("word word"), "what had come is kept"
