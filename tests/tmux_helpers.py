"""The real app in tmux, on a socket of its own: one helper for every test that reads a
real terminal's screen."""

from __future__ import annotations

import subprocess
import time


class Tmux:
    """``tmux -L socket``: run a command, read the pane named ``app``, wait for text."""

    def __init__(self, socket: str) -> None:
        self.socket = socket

    def __call__(self, *args: str) -> str:
        result = subprocess.run(
            ["tmux", "-L", self.socket, *args], capture_output=True, text=True, check=True
        )
        return result.stdout

    def alive(self) -> bool:
        check = ["tmux", "-L", self.socket, "has-session", "-t", "app"]
        return subprocess.run(check, capture_output=True).returncode == 0

    def screen(self) -> str:
        return self("capture-pane", "-p", "-t", "app")

    def wait_for(self, text: str, timeout: float = 30.0) -> str:
        """The screen, once ``text`` is on it (a state, however slow the machine is)."""
        deadline = time.monotonic() + timeout
        screen = ""
        while time.monotonic() < deadline:
            screen = self.screen()
            if text in screen:
                return screen
            time.sleep(0.1)
        raise AssertionError(f"{text!r} never appeared; the screen was:\n{screen}")

    def keys(self, *keys: str) -> None:
        self("send-keys", "-t", "app", *keys)

    def kill(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True)
