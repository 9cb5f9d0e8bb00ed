"""Which way the terminal can draw pictures, asked of the terminal itself.

``preview = "auto"`` asks once, before Textual starts (its input thread would take the
answers), three questions in one write:

- Kitty's graphics query (``ESC _G a=q … ESC \\``): answered ``OK`` by a terminal that
  speaks Kitty graphics;
- XTVERSION (``CSI > 0 q``): the terminal's name and version, e.g. ``kitty(0.26.5)``;
  textual-image draws Kitty pictures with Unicode placeholders, which need kitty >= 0.28
  (older kitty shows a grid of empty boxes) or ghostty; WezTerm and Konsole answer the
  graphics query but do not draw the placeholders;
- DA1 (``CSI c``): every terminal answers it, so its answer ends the wait; attribute 4 means
  Sixel.

The rules, in order (the reason goes to the log in one line):

1. ``preview`` set to anything but ``auto`` is used as it is.
2. Not a terminal, or no answer within the wait (0.2 s; 0.6 s over SSH, a round trip
   away): half-blocks.
3. Inside tmux or GNU screen: never Kitty graphics (textual-image does not wrap them for
   tmux's passthrough, so they would land in the pane title); Sixel when the multiplexer
   itself answers DA1 with 4 (tmux >= 3.4 built with Sixel draws them itself); else
   half-blocks.
4. Kitty graphics with placeholders (kitty >= 0.28, ghostty; kitty whose version is
   unknown when TERM says kitty): kitty.
5. DA1 attribute 4: Sixel.
6. Otherwise half-blocks.

Over SSH the same rules apply: the questions travel to the user's terminal and back.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import termios
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Literal

Renderer = Literal["halfblock", "kitty", "sixel", "off"]

QUERY = "\x1b_Gi=31,s=1,v=1,a=q,t=d,f=24;AAAA\x1b\\" + "\x1b[>0q" + "\x1b[c"
"""Kitty's graphics query, XTVERSION, then DA1 (whose answer ends the wait)."""

WAIT_S = 0.2
WAIT_SSH_S = 0.6
PLACEHOLDERS_SINCE = (0, 28)
"""The kitty version that draws Unicode placeholders (textual-image's way)."""

_DA1 = re.compile(r"\x1b\[\?([0-9;]*)c")
_KITTY = re.compile(r"\x1b_G([^\x1b]*)\x1b\\")
_VERSION = re.compile(r"\x1bP>\|([^\x1b]*)\x1b\\")


@dataclass(frozen=True)
class Answers:
    """What the terminal said."""

    da1: tuple[str, ...] | None
    """DA1's attributes; None when it did not answer."""
    kitty_graphics: bool
    version: str
    """XTVERSION's answer, e.g. ``kitty(0.26.5)``, ``XTerm(379)``; "" when none."""
    typed: str = ""
    """What else was read while waiting for the answers: keys the user typed as the app
    started, which the app replays once it runs (a key typed at start is never lost)."""

    @property
    def sixel(self) -> bool:
        return self.da1 is not None and "4" in self.da1


def parse_answers(data: str) -> Answers:
    da1 = _DA1.search(data)
    kitty = _KITTY.search(data)
    version = _VERSION.search(data)
    typed = data
    for answer in (_DA1, _KITTY, _VERSION):
        typed = answer.sub("", typed, count=1)
    return Answers(
        da1=tuple(da1.group(1).split(";")) if da1 else None,
        kitty_graphics=bool(kitty and kitty.group(1).rsplit(";", 1)[-1] == "OK"),
        version=version.group(1).strip() if version else "",
        typed=typed,
    )


class Asking:
    """The questions on their way: sent now, the answers read later by :meth:`answers`.

    The app sends them as its start begins and reads the answers once its code is
    loaded, so the terminal's round trip (tens of milliseconds over SSH) passes during
    the imports instead of after them. Echo and line editing are off meanwhile (a key
    typed then is kept, not echoed); the terminal's settings are restored when the
    answers are read, or by :meth:`close`."""

    def __init__(self, fd: int, timeout: float, *, close_fd: bool = False) -> None:
        self.fd = fd
        self._close_fd = close_fd
        self._saved = termios.tcgetattr(fd)
        self._done = False
        raw = termios.tcgetattr(fd)
        raw[3] &= ~(termios.ECHO | termios.ICANON)
        raw[6][termios.VMIN] = 0
        raw[6][termios.VTIME] = 0
        try:
            termios.tcsetattr(fd, termios.TCSANOW, raw)
            os.write(fd, QUERY.encode())
        except BaseException:
            self.close()
            raise
        self.timeout = timeout

    def answers(self) -> Answers:
        """Read until DA1's answer, then restore the terminal. A terminal that answers
        has done so by now, most often; one that does not is waited for ``timeout``
        from here (not from the questions: a slow start must not cut a slow link's
        wait short)."""
        if self._done:
            return Answers(None, False, "")
        data = b""
        deadline = time.monotonic() + self.timeout
        try:
            while not _DA1.search(data.decode("utf-8", "replace")):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                ready, _, _ = select.select([self.fd], [], [], left)
                if ready:
                    chunk = os.read(self.fd, 1024)
                    if not chunk:
                        break
                    data += chunk
        finally:
            self.close()
        return parse_answers(data.decode("utf-8", "replace"))

    def close(self) -> None:
        """Restore the terminal's settings (once; the answers are no longer read)."""
        if self._done:
            return
        self._done = True
        try:
            termios.tcsetattr(self.fd, termios.TCSANOW, self._saved)
        finally:
            if self._close_fd:
                os.close(self.fd)


def query_terminal(fd: int, timeout: float) -> Answers | None:
    """Ask the terminal on ``fd`` (read and write) and wait for the answers; None when
    it is not a terminal."""
    if not os.isatty(fd):
        return None
    return Asking(fd, timeout).answers()


def _version(text: str, name: str) -> tuple[int, ...] | None:
    match = re.match(rf"{name}\(([0-9.]+)\)", text, re.IGNORECASE)
    if not match:
        return None
    return tuple(int(p) for p in match.group(1).split(".") if p.isdigit())


@dataclass(frozen=True)
class Choice:
    renderer: Renderer
    reason: str
    typed: str = ""
    """Keys read with the terminal's answers (:attr:`Answers.typed`), for the app."""


def in_multiplexer(env: Mapping[str, str]) -> str | None:
    term = env.get("TERM", "")
    if env.get("TMUX") or term.startswith("tmux"):
        return "tmux"
    if env.get("STY") or term.startswith("screen"):
        return "screen"
    return None


def decide(setting: str, env: Mapping[str, str], answers: Answers | None) -> Choice:
    """The renderer for ``setting`` given the environment and the terminal's answers."""
    if setting in ("halfblock", "kitty", "sixel", "off"):
        return Choice(setting, f'preview = "{setting}" in the config')  # type: ignore[arg-type]
    over = " over SSH" if env.get("SSH_CONNECTION") or env.get("SSH_TTY") else ""
    if answers is None:
        return Choice("halfblock", "not a terminal: half-blocks")
    if answers.da1 is None:
        return Choice("halfblock", f"the terminal did not answer{over}: half-blocks")
    mux = in_multiplexer(env)
    if mux:
        if answers.sixel:
            return Choice("sixel", f"inside {mux}, which answers that it draws Sixel")
        return Choice(
            "halfblock",
            f"inside {mux}: Kitty graphics do not pass through and it does not draw "
            "Sixel: half-blocks",
        )
    who = answers.version or env.get("TERM", "the terminal")
    if answers.kitty_graphics:
        kitty = _version(answers.version, "kitty")
        if kitty is not None and kitty >= PLACEHOLDERS_SINCE:
            return Choice("kitty", f"{who} speaks Kitty graphics with placeholders{over}")
        if answers.version.lower().startswith("ghostty"):
            return Choice("kitty", f"{who} speaks Kitty graphics with placeholders{over}")
        if not answers.version and env.get("TERM") == "xterm-kitty":
            return Choice("kitty", f"kitty (version not given) speaks Kitty graphics{over}")
        why = (
            f"{who} has no Unicode placeholders (kitty >= 0.28 has)"
            if kitty is not None
            else f"{who} speaks Kitty graphics but does not draw its Unicode placeholders"
        )
        if answers.sixel:
            return Choice("sixel", f"{why}; it draws Sixel{over}")
        return Choice("halfblock", f"{why}: half-blocks")
    if answers.sixel:
        return Choice("sixel", f"{who} draws Sixel (DA1 attribute 4){over}")
    return Choice("halfblock", f"{who} speaks neither Kitty graphics nor Sixel: half-blocks")


class Picking:
    """The renderer for ``setting``, picked in two steps: made, it asks the controlling
    terminal (for ``auto``); :meth:`choice` reads the answers and decides. Between the
    two, the app loads its code (see :class:`Asking`)."""

    def __init__(self, setting: str, env: Mapping[str, str] | None = None) -> None:
        self.setting = setting
        self.env = os.environ if env is None else env
        self.asking: Asking | None = None
        if setting != "auto":
            return
        ssh = self.env.get("SSH_CONNECTION") or self.env.get("SSH_TTY")
        with contextlib.suppress(OSError, termios.error):
            fd = os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY)
            try:
                self.asking = Asking(fd, WAIT_SSH_S if ssh else WAIT_S, close_fd=True)
            except BaseException:
                os.close(fd)
                raise

    def choice(self) -> Choice:
        answers: Answers | None = None
        if self.asking is not None:
            with contextlib.suppress(OSError, termios.error):
                answers = self.asking.answers()
        choice = decide(self.setting, self.env, answers)
        if answers is not None and answers.typed:
            choice = replace(choice, typed=answers.typed)
        return choice

    def close(self) -> None:
        """Read the answers still on their way (they would land in the shell's input)
        and give the terminal back as it was, if :meth:`choice` did not."""
        if self.asking is not None:
            with contextlib.suppress(OSError, termios.error):
                self.asking.answers()
