"""Keys from config.toml, the remembered theme, notices from other screens."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from ollama_server import FakeOllama
from tui_helpers import make_app, screen_text, shown_turns, type_text, wait_for

from tui.screens.chat import ChatScreen
from tui.widgets.conversation import ReplyTurn


async def test_keys_remapped_in_config_work_and_show(
    ollama_server: FakeOllama, make_config: Callable[..., Path]
) -> None:
    config = make_config(keys={"chat.new": "f8", "prompt.send": "ctrl+s", "app.help": "f9"})
    app = make_app(config)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: app.models, what="models")
        assert "f8 New" in screen_text(app), "the footer shows the new key"
        await type_text(pilot, "first line")
        await pilot.press("enter")  # no longer sends: a new line
        assert app.screen.query_one("#prompt").text == "first line\n"
        await pilot.press("ctrl+s")
        screen = app.screen
        assert isinstance(screen, ChatScreen)
        await wait_for(pilot, lambda: not screen.streaming and shown_turns(screen, ReplyTurn))
        await pilot.press("f8")
        await pilot.pause()
        assert screen.conversation is None, "F8 started a new conversation"
        await pilot.press("f9")
        await wait_for(
            pilot, lambda: "Start a new conversation" in screen_text(app), what="the help"
        )
        assert "f8              Start a new conversation" in screen_text(app)
        rows = [row for _, group in app.help_groups() for row in group]  # every page of it
        assert any(keys == "f9" and "every key" in what for keys, what in rows), rows


def test_unknown_key_binding_stops_with_the_ids(cli, make_config: Callable[..., Path]) -> None:  # type: ignore[no-untyped-def]
    config = make_config(keys={"chat.nwe": "ctrl+k"})
    result = subprocess.run(
        [sys.executable, "-m", "tui.cli", "--config", str(config)],
        capture_output=True, text=True, timeout=60, cwd=config.parent,
    )  # fmt: skip
    assert result.returncode == 2
    assert "unknown binding 'chat.nwe' (did you mean 'chat.new'?)" in result.stderr
    assert "Traceback" not in result.stderr


async def test_theme_chosen_is_remembered(ollama_server: FakeOllama, config_file: Path) -> None:
    app = make_app(config_file)
    async with app.run_test(size=(100, 30)) as pilot:
        app.theme = "nord"
        await pilot.pause()
    again = make_app(config_file)
    async with again.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        assert again.theme == "nord"


async def test_reply_finishing_on_another_screen_is_announced(
    ollama_server: FakeOllama, config_file: Path
) -> None:
    ollama_server.reply = " ".join(f"w{i}" for i in range(40))
    ollama_server.rate = 40
    app = make_app(config_file)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: app.models, what="models")
        chat = app.screen
        assert isinstance(chat, ChatScreen)
        await type_text(pilot, "tell me")
        app.screen.query_one("#prompt").action_submit()
        await wait_for(pilot, lambda: chat.streaming, what="streaming")
        await pilot.press("f4")
        await wait_for(pilot, lambda: not chat.streaming, timeout=15, what="reply done")
        assert any("Reply ready" in n.message for n in app.notices)


def test_bash_completion_knows_commands_and_options(tmp_path: Path) -> None:
    import re
    import shutil

    out = subprocess.run(
        [sys.executable, "-m", "tui.cli", "completion", "bash"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    registered = re.search(r"^complete .*-F (\S+) llm-pessoal$", out, re.MULTILINE)
    assert registered, out[-500:]
    function = registered.group(1)
    if shutil.which("bash") is None:  # pragma: no cover
        return
    probe = (
        f"{out}\n"
        f'COMP_WORDS=(llm-pessoal image --ste); COMP_CWORD=2; {function}; echo "${{COMPREPLY[@]}}"\n'
        f'COMP_WORDS=(llm-pessoal st); COMP_CWORD=1; {function}; echo "${{COMPREPLY[@]}}"\n'
    )
    lines = subprocess.run(
        ["bash", "-c", probe], capture_output=True, text=True, timeout=30
    ).stdout.split("\n")
    assert lines[0] == "--steps"
    assert lines[1] == "status"
