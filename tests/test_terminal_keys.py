"""Keys as real terminals send them: Shift+Enter from kitty (its keyboard protocol, which
Textual turns on), Ctrl+J from any terminal, Alt+key from xterm (which the app asks to send
ESC-prefixed keys, DECSET 1036, instead of 8-bit characters)."""

from __future__ import annotations

import contextlib
import os
import pty
import sys
import time
from pathlib import Path

from textual._xterm_parser import XTermParser
from tui_helpers import make_app
from waiting import read_until

from tui.widgets.prompt import PromptInput

REPO = Path(__file__).resolve().parent.parent

KITTY_SHIFT_ENTER = "\x1b[13;2u"  # kitty keyboard protocol, "disambiguate" and up
CTRL_J = "\n"  # every terminal
XTERM_ALT_C = "\x1bc"  # xterm with metaSendsEscape (what the app asks for)


def keys_of(data: str) -> list[str]:
    """The keys Textual's parser makes of ``data`` (a lone ESC prefix is resolved on the
    parser's tick, once its short wait for more bytes is over)."""
    parser = XTermParser()
    events = list(parser.feed(data))
    deadline = time.monotonic() + 5
    while not events and time.monotonic() < deadline:
        time.sleep(0.02)
        events = list(parser.tick())
    return [event.key for event in events if hasattr(event, "key")]


def test_the_bytes_terminals_send_are_the_keys_the_app_binds() -> None:
    assert keys_of(KITTY_SHIFT_ENTER) == ["shift+enter"]
    assert keys_of(CTRL_J) == ["ctrl+j"]
    assert keys_of(XTERM_ALT_C) == ["alt+c"]
    assert keys_of("\x1b[99;3u") == ["alt+c"], "kitty's Alt+c"


async def test_shift_enter_from_kitty_and_ctrl_j_break_the_line(config_file: Path) -> None:
    app = make_app(config_file)
    async with app.run_test(size=(100, 30)) as pilot:
        prompt = app.screen.query_one(PromptInput)
        await pilot.press("a", *keys_of(KITTY_SHIFT_ENTER), "b", *keys_of(CTRL_J), "c")
        assert prompt.text == "a\nb\nc"


async def test_pasted_controls_are_shown_never_sent_to_the_terminal(config_file: Path) -> None:
    """Text copied from a web page can hide controls: a bell, backspaces that redraw what the
    user sees, an 8-bit CSI (U+009B) or a bidi override. Pasted into the prompt they are
    drawn as text, and the paste's line ends are kept as new lines."""
    pasted = "rm -rf /\x08\x08\x08\x08\x08\x08\x08\x08ls\x07 \x9b2J\r\nnext \u202eevil"
    events = list(XTermParser().feed(f"\x1b[200~{pasted}\x1b[201~"))
    assert [type(e).__name__ for e in events] == ["Paste"], "a terminal's bracketed paste"
    app = make_app(config_file)
    async with app.run_test(size=(100, 30)) as pilot:
        prompt = app.screen.query_one(PromptInput)
        for event in events:
            event.set_sender(app)
            app.post_message(event)
        await pilot.pause()
        assert prompt.text == "rm -rf /" + "\u2408" * 8 + "ls\u2407 \\x9b2J\nnext \\u202eevil"
        assert not any((ord(c) < 0x20 and c != "\n") or 0x7F <= ord(c) < 0xA0 for c in prompt.text)


def test_the_app_asks_xterm_for_escape_prefixed_alt_keys(config_file: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "TERM": "xterm-256color"}
    argv = [sys.executable, "-m", "tui.cli", "--config", str(config_file)]
    pid, fd = pty.fork()
    if pid == 0:  # the child: the app on the pty
        os.execve(argv[0], argv, env)
    try:
        start = read_until(fd, b"\x1b[?1036h", 60)
        assert b"\x1b[?1036h" in start, "metaSendsEscape on at start"
        assert b"\x1b[>25u" in start, "the kitty keyboard protocol on (Textual)"
        os.write(fd, b"\x11")  # ctrl+q (the input thread runs before 1036 is asked)
        end = read_until(fd, b"\x1b[?1036l", 30)
        assert b"\x1b[?1036l" in end, "and off again at exit"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 9)
        os.waitpid(pid, 0)
        os.close(fd)
