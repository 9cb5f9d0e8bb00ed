"""Waiting for a state, never for a passing frame or a fixed time: the one place tests wait.

CI machines are shared and have 2 cores, so every wait has a generous deadline and polls a
condition; a test that needs a mid-way state holds its server there (the fake Ollama's
``hold_*`` gates) instead of hoping to catch it.
"""

from __future__ import annotations

import asyncio
import os
import select
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

TIMEOUT_S = 15.0


class Pauses(Protocol):
    """A Textual Pilot, or anything else whose ``pause`` lets an app run."""

    def pause(self, delay: float | None = None) -> Awaitable[None]: ...


async def wait_for(
    pilot: Pauses | None,
    predicate: Callable[[], object],
    timeout: float = TIMEOUT_S,
    what: str = "",
) -> None:
    """Let the app (``pilot``), or the event loop (``None``), run until ``predicate()``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")
        await (pilot.pause(0.05) if pilot is not None else asyncio.sleep(0.01))
    if pilot is not None:
        await pilot.pause()


def wait_until(predicate: Callable[[], object], timeout: float = TIMEOUT_S, what: str = "") -> None:
    """The same for code outside an event loop (subprocesses, threads, files)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")
        time.sleep(0.02)


def read_until(fd: int, needle: bytes, timeout: float) -> bytes:
    """What a terminal (the leader side of a pty, ``fd``) receives, until ``needle`` is in
    it, the other side closes, or ``timeout`` seconds pass."""
    data = b""
    deadline = time.monotonic() + timeout
    while needle not in data and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            data += chunk
    return data
