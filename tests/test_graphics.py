"""How pictures are drawn (tui/graphics.py): asked of the terminal, with the environment
(tmux, screen, SSH) and the ``preview`` setting; the answers are those of the terminals
seen under Xvfb (kitty 0.26.5 and 0.41.1, xterm -ti vt340, plain xterm, tmux)."""

from __future__ import annotations

import os
import select
import termios
import threading

import pytest
from waiting import wait_until

from tui.graphics import QUERY, Answers, Asking, Picking, decide, parse_answers, query_terminal

KITTY_OK = "\x1b_Gi=31;OK\x1b\\"
DA1_VT340 = "\x1b[?63;1;2;4;6;9;15;22c"
DA1_XTERM = "\x1b[?64;1;2;6;9;15;16;17;18;21;22;28c"
DA1_KITTY = "\x1b[?62;c"
DA1_TMUX = "\x1b[?1;2c"
DA1_TMUX_SIXEL = "\x1b[?1;2;4c"


def xtversion(name: str) -> str:
    return f"\x1bP>|{name}\x1b\\"


ANSWERS = {
    "kitty 0.41.1": KITTY_OK + xtversion("kitty(0.41.1)") + DA1_KITTY,
    "kitty 0.26.5": KITTY_OK + xtversion("kitty(0.26.5)") + DA1_KITTY,
    "xterm -ti vt340": xtversion("XTerm(379)") + DA1_VT340,
    "xterm": xtversion("XTerm(379)") + DA1_XTERM,
    "mlterm": DA1_VT340,
    "wezterm": KITTY_OK + xtversion("WezTerm 20240203") + DA1_VT340,
    "tmux": xtversion("tmux 3.3a") + DA1_TMUX,
    "tmux with sixel": xtversion("tmux 3.4") + DA1_TMUX_SIXEL,
}


def choose(terminal: str, setting: str = "auto", **env: str) -> str:
    return decide(setting, {"TERM": "xterm-256color", **env}, parse_answers(ANSWERS[terminal]))


@pytest.mark.parametrize(
    ("terminal", "env", "expected"),
    [
        ("kitty 0.41.1", {"TERM": "xterm-kitty"}, "kitty"),
        ("kitty 0.26.5", {"TERM": "xterm-kitty"}, "halfblock"),
        ("xterm -ti vt340", {}, "sixel"),
        ("mlterm", {"TERM": "mlterm"}, "sixel"),
        ("xterm", {}, "halfblock"),
        ("wezterm", {}, "sixel"),
        ("tmux", {"TMUX": "/tmp/tmux-0/default,1,0", "TERM": "tmux-256color"}, "halfblock"),
        ("tmux with sixel", {"TMUX": "/tmp/t,1,0", "TERM": "tmux-256color"}, "sixel"),
        ("kitty 0.41.1", {"TMUX": "/tmp/t,1,0"}, "halfblock"),
        ("tmux", {"STY": "1234.pts-0", "TERM": "screen"}, "halfblock"),
        ("kitty 0.41.1", {"TERM": "xterm-kitty", "SSH_CONNECTION": "1 2 3 4"}, "kitty"),
        ("xterm -ti vt340", {"SSH_TTY": "/dev/pts/3"}, "sixel"),
    ],
)
def test_auto_asks_the_terminal(terminal: str, env: dict[str, str], expected: str) -> None:
    choice = decide("auto", {"TERM": "xterm-256color", **env}, parse_answers(ANSWERS[terminal]))
    assert choice.renderer == expected, choice.reason
    assert choice.reason


def test_the_reason_says_why() -> None:
    old = decide("auto", {"TERM": "xterm-kitty"}, parse_answers(ANSWERS["kitty 0.26.5"]))
    assert "kitty(0.26.5)" in old.reason and "placeholders" in old.reason
    tmux = decide("auto", {"TMUX": "x", "TERM": "tmux"}, parse_answers(ANSWERS["tmux"]))
    assert "inside tmux" in tmux.reason
    ssh = decide("auto", {"SSH_TTY": "x"}, parse_answers(ANSWERS["xterm -ti vt340"]))
    assert "over SSH" in ssh.reason


def test_no_answer_or_no_terminal_is_half_blocks() -> None:
    assert decide("auto", {}, None).renderer == "halfblock"
    assert decide("auto", {"TERM": "xterm-kitty"}, Answers(None, False, "")).renderer == (
        "halfblock"
    )


def test_the_setting_overrides_the_terminal() -> None:
    assert choose("xterm", "sixel").renderer == "sixel"
    assert choose("kitty 0.41.1", "halfblock").renderer == "halfblock"
    assert choose("kitty 0.41.1", "off").renderer == "off"
    picking = Picking("kitty", {})
    assert picking.asking is None, "an explicit setting asks nothing"
    assert picking.choice().renderer == "kitty"


class FakeTerminal:
    """The far end of a real pty: reads what the app asks and answers like a terminal."""

    def __init__(self, answer: str | None) -> None:
        self.master, self.slave = os.openpty()
        self.asked = b""
        self.answer = answer
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while QUERY.encode() not in self.asked:
            try:
                self.asked += os.read(self.master, 1024)
            except OSError:
                return
        if self.answer is not None:
            os.write(self.master, self.answer.encode())

    def close(self) -> None:
        os.close(self.slave)
        os.close(self.master)


@pytest.mark.parametrize("terminal", ["kitty 0.26.5", "xterm -ti vt340", "tmux"])
def test_the_query_over_a_real_pty(terminal: str) -> None:
    fake = FakeTerminal(ANSWERS[terminal])
    try:
        before = termios.tcgetattr(fake.slave)
        answers = query_terminal(fake.slave, 5.0)
        assert termios.tcgetattr(fake.slave) == before, "the terminal's settings are restored"
    finally:
        fake.close()
    assert answers == parse_answers(ANSWERS[terminal])
    assert answers is not None and answers.da1 is not None


def test_keys_typed_while_the_terminal_is_asked_are_kept_for_the_app() -> None:
    """The user types as the app starts: those keys arrive mixed with the answers, and
    come back as ``typed`` (the app replays them) instead of being thrown away."""
    answer = ANSWERS["xterm -ti vt340"]
    fake = FakeTerminal("hel" + answer + "lo\x1b[A")
    try:
        answers = query_terminal(fake.slave, 5.0)
    finally:
        fake.close()
    assert answers is not None and answers.sixel
    assert answers.typed.startswith("hel")
    # what came after DA1's answer is left for Textual to read, so only "hel" may be here
    assert answers.typed in ("hel", "hello\x1b[A")


def test_a_silent_terminal_is_waited_for_briefly() -> None:
    fake = FakeTerminal(None)
    try:
        answers = query_terminal(fake.slave, 0.2)
    finally:
        fake.close()
    assert answers == Answers(None, False, "")


def test_not_a_terminal(tmp_path: object) -> None:
    r, w = os.pipe()
    try:
        assert query_terminal(r, 0.1) is None
    finally:
        os.close(r)
        os.close(w)


def test_the_questions_go_out_first_and_the_answers_are_read_later() -> None:
    """The app asks as its start begins and reads the answers once its code is loaded:
    the terminal answers meanwhile, with echo off; reading restores its settings."""
    fake = FakeTerminal(ANSWERS["kitty 0.41.1"])
    try:
        before = termios.tcgetattr(fake.slave)
        asking = Asking(fake.slave, 5.0)
        wait_until(lambda: QUERY.encode() in fake.asked, what="the questions reach the terminal")
        assert not termios.tcgetattr(fake.slave)[3] & termios.ECHO, "keys typed meanwhile"
        answers = asking.answers()
        assert termios.tcgetattr(fake.slave) == before
    finally:
        fake.close()
    assert answers == parse_answers(ANSWERS["kitty 0.41.1"])


def test_a_start_that_stops_early_reads_the_answers_and_gives_the_terminal_back() -> None:
    """A bad keymap ends the start before the choice is made: the answers are read all
    the same (left unread, they would be typed into the user's shell) and the
    terminal's settings restored (echo on for the message and the shell)."""
    fake = FakeTerminal(ANSWERS["xterm -ti vt340"])
    try:
        before = termios.tcgetattr(fake.slave)
        picking = Picking("halfblock", {})  # asks nothing of the test's own terminal
        picking.asking = Asking(fake.slave, 5.0)  # as "auto" would ask, of this pty
        picking.close()
        picking.close()
        assert termios.tcgetattr(fake.slave) == before
        assert not select.select([fake.slave], [], [], 0.1)[0], "an answer was left unread"
    finally:
        fake.close()
