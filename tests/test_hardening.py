"""Faults, hostile input and the app's own hygiene: it survives, shows what happened,
and keeps what it saved."""

from __future__ import annotations

import ast
import os
import re
import resource
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ollama_server import FakeOllama
from tui_helpers import make_app, screen_text, shown_turns, type_text, wait_for

from engines.config import load_settings
from engines.store import Store
from tui.screens.chat import ChatScreen
from tui.text import visible
from tui.widgets.conversation import ReplyTurn
from tui.widgets.footer import AppFooter

ROOT = Path(__file__).resolve().parent.parent
SIZE = (120, 40)


def chat(app: object) -> ChatScreen:
    screen = app.screen  # type: ignore[attr-defined]
    assert isinstance(screen, ChatScreen)
    return screen


async def send(pilot: object, app: object, text: str) -> None:
    """Send without waiting for the app to go idle (Pilot.press would wait for the reply)."""
    before = len(shown_turns(chat(app), ReplyTurn))
    await type_text(pilot, text)  # type: ignore[arg-type]
    chat(app).query_one("#prompt").action_submit()  # type: ignore[attr-defined]
    await wait_for(
        pilot,
        lambda: len(shown_turns(chat(app), ReplyTurn)) > before,  # type: ignore[arg-type]
        what="the reply started",
    )


async def reply_done(pilot: object, app: object, timeout: float = 20) -> ReplyTurn:
    await wait_for(
        pilot,
        lambda: not chat(app).streaming,
        timeout=timeout,  # type: ignore[arg-type]
        what="reply over",
    )
    return shown_turns(chat(app), ReplyTurn)[-1]


def db_rows(config: Path) -> list[tuple[str, str, str]]:
    store = Store.open(load_settings(config, env={}).paths.database)
    try:
        assert store.integrity_ok()
        return [
            (m.role, m.content, m.status)
            for c in store.conversations()
            for m in store.messages(c.id)
        ]
    finally:
        store.close()


# -- Ollama faults ----------------------------------------------------------------------


async def test_server_that_never_answers_times_out(
    ollama_server: FakeOllama, make_config: Callable[..., Path]
) -> None:
    config = make_config(ollama={"timeout": 1})
    app = make_app(config)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.models, what="models")
        ollama_server.hang = True
        await send(pilot, app, "hello?")
        reply = await reply_done(pilot, app, timeout=15)
        assert "did not answer within 1 s" in screen_text(app)
        assert reply.content == ""
        ollama_server.hang = False
        await send(pilot, app, "again")
        assert (await reply_done(pilot, app)).content == ollama_server.reply
    rows = db_rows(config)
    assert rows[0] == ("user", "hello?", "done") and rows[1][2] == "error"


async def test_server_that_never_answers_can_be_cancelled(
    ollama_server: FakeOllama, config_file: Path
) -> None:
    app = make_app(config_file)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.models, what="models")
        ollama_server.hang = True
        await send(pilot, app, "hello?")
        await pilot.pause(0.3)
        started = time.monotonic()
        await pilot.press("escape")
        await reply_done(pilot, app)
        assert time.monotonic() - started < 2, "Esc stops at once"
        await wait_for(pilot, lambda: ollama_server.cancelled >= 1, what="the server saw it")


@pytest.mark.parametrize(
    ("fault", "shown"),
    [
        (
            {"status": (500, {"error": "llama runner process has terminated"})},
            "llama runner process has terminated",
        ),
        ({"malformed": True}, "unreadable"),
        ({"error_after": 3, "error_message": "out of memory"}, "out of memory"),
    ],
)
async def test_server_errors_are_shown_and_the_app_goes_on(
    ollama_server: FakeOllama, config_file: Path, fault: dict[str, object], shown: str
) -> None:
    app = make_app(config_file)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.models, what="models")
        if "status" in fault:
            code, body = fault["status"]  # type: ignore[misc]
            ollama_server.fail(code, body, path="/api/chat", times=1)
        else:
            for key, value in fault.items():
                setattr(ollama_server, key, value)
        await send(pilot, app, "first")
        await reply_done(pilot, app)
        assert shown in screen_text(app)
        ollama_server.reset()
        await send(pilot, app, "second")
        assert (await reply_done(pilot, app)).content == ollama_server.reply
    rows = db_rows(config_file)
    assert [r[1] for r in rows if r[0] == "user"] == ["first", "second"]


async def test_server_restarting_mid_conversation(
    ollama_server: FakeOllama, config_file: Path
) -> None:
    app = make_app(config_file)
    port = int(ollama_server.url.rsplit(":", 1)[1])
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.models, what="models")
        await send(pilot, app, "before")
        await reply_done(pilot, app)
        ollama_server.stop()
        app.check_ollama_soon()
        await wait_for(
            pilot, lambda: app.ollama is not None and not app.ollama.online, what="seen down"
        )
        again = FakeOllama(port=port).start()
        try:
            await wait_for(pilot, lambda: app.ollama.online, timeout=10, what="seen up")  # type: ignore[union-attr]
            await send(pilot, app, "after")
            assert (await reply_done(pilot, app)).content == again.reply
            body = again.chat_requests()[-1]
            assert [m["content"] for m in body["messages"] if m["role"] == "user"] == [
                "before",
                "after",
            ]
        finally:
            again.stop()


# -- killed -----------------------------------------------------------------------------


def test_sigkill_while_a_reply_streams_keeps_everything_saved(
    ollama_server: FakeOllama, make_config: Callable[..., Path], tmp_path: Path
) -> None:
    import shutil

    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed")
    config = make_config(chat={"save_interval": 0.2})
    ollama_server.replies = [
        "The first answer, complete.",
        " ".join(f"part{i}" for i in range(400)),
    ]
    ollama_server.rate = 40
    sock = f"kill-{os.getpid()}"
    app = Path(sys.executable).with_name("llm-pessoal")

    def tmux(*args: str) -> str:
        return subprocess.run(["tmux", "-L", sock, *args], capture_output=True, text=True).stdout

    tmux(
        "new-session",
        "-d",
        "-s",
        "app",
        "-x",
        "120",
        "-y",
        "40",
        f"sleep 0.3; exec {app} --config {config}",
    )
    try:
        deadline = time.monotonic() + 15
        while "Ollama 0.12.6" not in tmux("capture-pane", "-p", "-t", "app"):
            assert time.monotonic() < deadline, "the app never came up"
            time.sleep(0.1)
        ollama_server.rate = None
        tmux("send-keys", "-t", "app", "-l", "first question")
        tmux("send-keys", "-t", "app", "Enter")
        while "complete." not in tmux("capture-pane", "-p", "-t", "app"):
            assert time.monotonic() < deadline + 15
            time.sleep(0.1)
        ollama_server.rate = 40
        tmux("send-keys", "-t", "app", "-l", "second question")
        tmux("send-keys", "-t", "app", "Enter")
        while ollama_server.sent_tokens < 40:
            time.sleep(0.05)
        time.sleep(0.5)  # past a save or two
        pid = int(tmux("display-message", "-p", "-t", "app", "#{pane_pid}").strip())
        os.kill(pid, signal.SIGKILL)
    finally:
        subprocess.run(["tmux", "-L", sock, "kill-server"], capture_output=True)
    # the kernel lets go of a killed process's files (its reply's lock) once it is gone
    gone_by = time.monotonic() + 10
    while Path(f"/proc/{pid}").exists() and time.monotonic() < gone_by:
        time.sleep(0.05)
    rows = db_rows(config)  # opening it, as the app does at its next start
    assert rows[:3] == [
        ("user", "first question", "done"),
        ("assistant", "The first answer, complete.", "done"),
        ("user", "second question", "done"),
    ]
    role, partial, status = rows[3]
    assert role == "assistant" and status == "interrupted"
    assert partial.startswith("part0 part1") and len(partial.split()) >= 20


def test_sigkill_while_images_are_written_leaves_no_partial_file(
    make_config: Callable[..., Path], tiny_sd_folder: Path, tmp_path: Path
) -> None:
    config = make_config(
        diffusion={
            "model": str(tiny_sd_folder),
            "device": "cpu",
            "width": 64,
            "height": 64,
            "steps": 1,
        }
    )
    outputs = load_settings(config, env={}).paths.outputs
    for round_ in range(3):
        proc = subprocess.Popen(
            [sys.executable, "-m", "tui.cli", "--config", str(config), "image", "a", "--count", "16"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        assert proc.stdout is not None
        proc.stdout.readline()  # one image is out: the others are being written
        time.sleep(0.05 * round_)
        proc.kill()
        proc.wait()
    from PIL import Image

    from engines.config import DiffusionSettings
    from engines.diffusion import DiffusionEngine
    from engines.images import read_parameters

    for leftover in outputs.glob(".tmp-*"):  # what a kill can leave, aged past the guard
        os.utime(leftover, (time.time() - 3600, time.time() - 3600))
    DiffusionEngine(DiffusionSettings(model=str(tiny_sd_folder)), outputs)  # the next start
    assert not list(outputs.glob(".tmp-*")), "no temporary file survives a restart"
    pngs = list(outputs.glob("*.png"))
    assert pngs
    for png in pngs:
        with Image.open(png) as im:
            im.load()
        assert read_parameters(png).prompt == "a"


# -- the disk ---------------------------------------------------------------------------


def _limit_file_size() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))


def test_disk_full_when_saving_an_image(
    make_config: Callable[..., Path], tiny_sd_folder: Path
) -> None:
    config = make_config(diffusion={"model": str(tiny_sd_folder), "device": "cpu", "steps": 1})
    outputs = load_settings(config, env={}).paths.outputs
    result = subprocess.run(
        [sys.executable, "-m", "tui.cli", "--config", str(config), "image", "a big one",
         "--width", "256", "--height", "256"],
        capture_output=True, text=True, timeout=240, preexec_fn=_limit_file_size,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert "cannot save the image" in result.stderr and "Traceback" not in result.stderr
    assert not list(outputs.glob("*")) if outputs.exists() else True


async def test_outputs_not_writable_in_the_app(
    make_config: Callable[..., Path], tiny_sd_folder: Path, tmp_path: Path
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the outputs folder should be")
    config = make_config(
        diffusion={
            "model": str(tiny_sd_folder),
            "device": "cpu",
            "width": 64,
            "height": 64,
            "steps": 2,
        },
        paths={"outputs": blocker / "outputs"},
    )
    app = make_app(config, start_screen="image")
    async with app.run_test(size=SIZE) as pilot:
        from tui.screens.image import ImageScreen

        screen = app.screen
        assert isinstance(screen, ImageScreen)
        await type_text(pilot, "no room")
        screen.action_generate()
        await wait_for(pilot, lambda: not screen.generating, timeout=60, what="ended")
        assert "cannot save the image" in screen_text(app)
        await pilot.press("f2")
        assert isinstance(app.screen, ChatScreen), "the app goes on"


# -- the terminal -----------------------------------------------------------------------


async def test_resized_while_streaming(ollama_server: FakeOllama, config_file: Path) -> None:
    ollama_server.reply = " ".join(f"w{i}" for i in range(120))
    ollama_server.rate = 100
    app = make_app(config_file)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.models, what="models")
        await send(pilot, app, "go")
        for size in ((40, 12), (300, 100), (80, 24), (40, 12), (120, 40)):
            await pilot.resize_terminal(*size)
            await pilot.pause(0.15)
        reply = await reply_done(pilot, app)
        assert reply.content == ollama_server.reply
        assert "w119" in screen_text(app)


async def test_resized_while_generating(
    make_config: Callable[..., Path], tiny_sd_folder: Path
) -> None:
    config = make_config(
        diffusion={
            "model": str(tiny_sd_folder),
            "device": "cpu",
            "width": 64,
            "height": 64,
            "steps": 30,
        }
    )
    app = make_app(config, start_screen="image")
    async with app.run_test(size=SIZE) as pilot:
        from tui.screens.image import ImageScreen

        screen = app.screen
        assert isinstance(screen, ImageScreen)
        await type_text(pilot, "resize me")
        screen.action_generate()
        for size in ((40, 12), (300, 100), (80, 24), (120, 40)):
            await pilot.resize_terminal(*size)
            await pilot.pause(0.2)
        await wait_for(pilot, lambda: not screen.generating, timeout=60, what="done")
        assert list(app.settings.paths.outputs.glob("*.png"))


# -- hostile text ------------------------------------------------------------------------

CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_visible_text_holds_no_control_character(text: str) -> None:
    shown = visible(text)
    assert not CONTROL.search(shown)
    assert shown.count("\n") == text.count("\n")


HOSTILE = [
    "[bold]markup[/bold] [link=file:///etc/passwd]x[/link]",
    "\x1b]0;pwned\x07\x1b[2J\x1b[31mred",
    "nul\x00byte and bell\x07",
    "مرحبا بالعالم \u202eevil\u202c",
    "e\u0301\u0302\u0303 combining",
    "漢字テキスト 😀👩‍👩‍👧‍👦 wide",
]


async def test_hostile_text_is_stored_byte_for_byte_and_shown_literally(
    ollama_server: FakeOllama, config_file: Path
) -> None:
    ollama_server.replies = list(HOSTILE)
    app = make_app(config_file)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.models, what="models")
        expected = {0: "[bold]markup[/bold]", 1: "␛]0;pwned␇␛[2J␛[31mred", 2: "nul␀byte"}
        for i, text in enumerate(HOSTILE):
            await send(pilot, app, text)
            await reply_done(pilot, app)
            if i in expected:
                assert screen_text(app).count(expected[i]) >= 2, "prompt and reply, literally"
    rows = db_rows(config_file)
    assert [r[1] for r in rows if r[0] == "user"] == HOSTILE
    assert [r[1] for r in rows if r[0] == "assistant"] == HOSTILE


# -- hygiene ------------------------------------------------------------------------------


def test_no_shell_is_ever_invoked() -> None:
    for path in [*ROOT.glob("engines/*.py"), *ROOT.glob("tui/**/*.py")]:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                name = ast.unparse(node.func)
                assert name not in ("os.system", "os.popen", "subprocess.getoutput"), (
                    f"{path}: {name}"
                )
                for kw in node.keywords:
                    if kw.arg == "shell":
                        assert isinstance(kw.value, ast.Constant) and not kw.value.value, (
                            f"{path}:{node.lineno}"
                        )


def test_logs_hold_no_prompt_text_above_debug(
    cli,
    make_config: Callable[..., Path],
    ollama_server: FakeOllama,
    tiny_sd_folder: Path,  # type: ignore[no-untyped-def]
) -> None:
    secret = "zebra-sapphire-4417"
    config = make_config(
        diffusion={
            "model": str(tiny_sd_folder),
            "device": "cpu",
            "width": 64,
            "height": 64,
            "steps": 1,
        }
    )
    cli.run("--config", str(config), "chat", f"my password is {secret}")
    cli.run("--config", str(config), "image", f"a {secret} drawing")
    logs = load_settings(config, env={}).paths.logs
    text = "".join(p.read_text() for p in logs.glob("*.jsonl*"))
    assert '"level": "INFO"' in text, "something was logged"
    assert secret not in text


def test_files_are_private_or_as_the_umask_allows(
    ollama_server: FakeOllama,
    config_file: Path,
    cli,
    tiny_sd_folder: Path,  # type: ignore[no-untyped-def]
) -> None:
    settings_ = load_settings(config_file, env={})
    Store.open(settings_.paths.database).close()
    cli.run("--config", str(config_file), "chat", "hello")
    for path in (settings_.paths.database, settings_.paths.logs / "app.jsonl"):
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o077 == 0, f"{path} is {oct(mode)}: readable by others"
    for path in settings_.paths.database.parent.iterdir():
        assert not stat.S_IMODE(path.stat().st_mode) & 0o002, f"{path} is world-writable"


async def test_replies_do_not_pile_up_dead_footer_keys(
    ollama_server: FakeOllama, config_file: Path
) -> None:

    app = make_app(config_file)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.models, what="models")
        footer = chat(app).query_one(AppFooter)

        def watchers() -> int:
            return sum(len(v) for v in getattr(footer, "__watchers", {}).values())

        await send(pilot, app, "one")
        await reply_done(pilot, app)
        await pilot.pause(0.2)
        after_one = watchers()
        for i in range(8):
            await send(pilot, app, f"more {i}")
            await reply_done(pilot, app)
        await pilot.pause(0.2)
        assert watchers() <= after_one + 2, "the footer's keys are not kept alive"


async def test_the_footer_keeps_its_keys_while_they_stay_the_same_and_shows_new_ones(
    ollama_server: FakeOllama, config_file: Path
) -> None:
    """Bindings refreshed without a change (the start refreshed them twice; so does the
    focus moving between widgets with the same keys) do not compose the footer's dozen
    keys again; keys that come and go with the focus or a reply still show."""
    from textual.widgets._footer import FooterKey

    ollama_server.rate = 20
    ollama_server.reply = " ".join(["word"] * 30)
    app = make_app(config_file)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.models, what="models")
        footer = chat(app).query_one(AppFooter)
        await wait_for(pilot, lambda: footer.query(FooterKey), what="the footer's keys")
        keys = list(footer.query(FooterKey))
        for _ in range(3):
            app.refresh_bindings()
            await pilot.pause()
        assert list(footer.query(FooterKey)) == keys, "the same key widgets, not new ones"

        def footer_line() -> str:
            return screen_text(app).splitlines()[-1]

        assert "Send" in footer_line()
        chat(app).query_one("#search").focus()
        await wait_for(pilot, lambda: "Send" not in footer_line(), what="the search's keys")
        chat(app).query_one("#prompt").focus()
        await wait_for(pilot, lambda: "Send" in footer_line(), what="the prompt's keys")

        # Esc's key stays where it is, dimmed while there is nothing to stop: a reply turns
        # it on and off in place, with the same key widgets (no keys shifting under the eye)
        assert "esc Cancel reply" in footer_line()
        assert not esc_on(footer)
        keys = list(footer.query(FooterKey))
        await send(pilot, app, "hello")
        await wait_for(pilot, lambda: esc_on(footer), what="esc turned on")
        assert list(footer.query(FooterKey)) == keys, "turned on in place, not composed again"
        await reply_done(pilot, app)
        await wait_for(pilot, lambda: not esc_on(footer), what="esc turned off")
        assert list(footer.query(FooterKey)) == keys
        assert "esc Cancel reply" in footer_line()


def esc_on(footer: AppFooter) -> bool:
    """Whether the footer's Esc key (stop the reply) is on, not dimmed."""
    from textual.widgets._footer import FooterKey

    (key,) = [k for k in footer.query(FooterKey) if k.action == "cancel_reply"]
    return not key.has_class("-disabled")


async def test_the_footer_shows_a_replys_keys_once_its_first_words_have_had_their_turn(
    ollama_server: FakeOllama, config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The keys a reply changes (Esc stops it) change after its first words have had
    their turn (``FIRST_WORDS_S``, here 3 s), not at once: composed at once, they held the
    first words back 5-10 ms."""
    import tui.app

    monkeypatch.setattr(tui.app, "FIRST_WORDS_S", 3.0)
    ollama_server.first_token_delay = 30.0  # no words come meanwhile
    app = make_app(config_file)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.models, what="models")
        await send(pilot, app, "hello")
        await wait_for(pilot, lambda: chat(app).streaming, what="streaming")
        sent = time.monotonic()
        await pilot.pause(1.0)
        footer = chat(app).query_one(AppFooter)
        if time.monotonic() - sent < 2.5:  # a loaded machine may take longer: then not asked
            assert not esc_on(footer), "the keys wait for the first words"
        await wait_for(pilot, lambda: esc_on(footer), what="esc turned on")
        await chat(app).stop_reply(chat(app).conversation.id)  # type: ignore[union-attr]


async def test_a_replys_request_gets_the_interpreter_quickly_until_its_first_words_come(
    ollama_server: FakeOllama, config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """From a send to its first words, a thread waiting for the interpreter gets it from the
    event loop within 1 ms (the reply's request is made in a thread while the loop mounts
    the new turns); once the words are in, or none came in ``FIRST_WORDS_S``, Python's own
    interval again, and the app leaves it as it found it."""
    import tui.app

    usual = sys.getswitchinterval()
    assert usual != tui.app.QUICK_SWITCH_S
    monkeypatch.setattr(tui.app, "FIRST_WORDS_S", 2.0)
    ollama_server.first_token_delay = 30.0  # no words come meanwhile
    app = make_app(config_file)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.models, what="models")
        await send(pilot, app, "hello")
        assert sys.getswitchinterval() == tui.app.QUICK_SWITCH_S
        await wait_for(pilot, lambda: sys.getswitchinterval() == usual, what="no words in 2 s")
        await chat(app).stop_reply(chat(app).conversation.id)  # type: ignore[union-attr]

        ollama_server.first_token_delay = 1.0
        ollama_server.rate = 20
        ollama_server.reply = " ".join(["word"] * 40)  # two seconds of words
        await send(pilot, app, "again")
        assert sys.getswitchinterval() == tui.app.QUICK_SWITCH_S
        await wait_for(
            pilot, lambda: "word" in shown_turns(chat(app), ReplyTurn)[-1].body.text, what="words"
        )
        await wait_for(pilot, lambda: sys.getswitchinterval() == usual, what="the usual again")
        assert chat(app).streaming, "back to the usual as soon as the words came"
        await reply_done(pilot, app)

        ollama_server.first_token_delay = 30.0
        await send(pilot, app, "and leave while it is on its way")
        assert sys.getswitchinterval() == tui.app.QUICK_SWITCH_S
    assert sys.getswitchinterval() == usual, "left as the app found it"


async def test_the_prompts_cursor_holds_still_while_a_reply_streams_on_screen(
    ollama_server: FakeOllama, config_file: Path
) -> None:
    """Each blink of the prompt's cursor is a frame of its own: while a reply streams on
    screen (drawn in frames of its own) the cursor holds still, and blinks again after."""
    from tui.widgets.prompt import PromptInput

    ollama_server.rate = 20
    ollama_server.reply = " ".join(["word"] * 30)
    app = make_app(config_file)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.models, what="models")
        prompt = chat(app).query_one(PromptInput)
        assert prompt.cursor_blink
        await send(pilot, app, "hello")
        await wait_for(pilot, lambda: not prompt.cursor_blink, what="a steady cursor")
        await reply_done(pilot, app)
        await wait_for(pilot, lambda: prompt.cursor_blink, what="blinking again")
