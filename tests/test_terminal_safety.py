"""Outside text never reaches the terminal raw (DESIGN decision 9).

A hostile Ollama server (its version, model names, families, quantizations, error texts, an
error line mid-stream), a PNG whose stored prompt holds escapes, a hostile ``--model`` and a
hostile file name are fed to the real app and the real CLI in a real terminal. What is checked
is the bytes the program writes to that terminal: none of the injected sequences (an OSC 52
clipboard write, a window title, a BEL, a C1 CSI) may be there; their visible stand-ins are.
"""

from __future__ import annotations

import os
import pty
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from PIL import Image
from tmux_helpers import Tmux

from engines.config import load_settings
from engines.images import ImageParameters, read_parameters, save_png
from engines.store import Store
from tui.text import visible

if TYPE_CHECKING:
    from conftest import Cli, MakeConfig
    from ollama_server import FakeModel, FakeOllama
else:
    try:
        from ollama_server import FakeModel, FakeOllama
    except ImportError:
        from tests.ollama_server import FakeModel, FakeOllama
    Cli = MakeConfig = Any

OSC52 = "\x1b]52;c;VkVSQ0xJUA==\x07"
TITLE = "\x1b]0;X\x07"
BEL = "\x07"
C1_CSI = "\x9b31m"
HOSTILE = f"{OSC52}{TITLE}{BEL}{C1_CSI}"
SHOWN = visible(HOSTILE)  # what the user should see instead: ␛]52;c;VkVSQ0xJUA==␇...
EVIL_MODEL = f"evil{OSC52}{BEL}{C1_CSI}:latest"
EVIL_VERSION = f"0.9{OSC52}{TITLE}"

# Bytes that would act on the terminal if they were written. The UTF-8 form of U+009B is what
# Python writes for the C1 CSI; xterm and others act on it in UTF-8 mode.
INJECTED = (b"\x1b]52", b"\x1b]0;", b"\x07", "\x9b".encode(), b"\x9b31m")
# The app's own drawing: Textual sets the mouse pointer's shape with OSC 22, ended by a BEL.
OWN_SEQUENCES = re.compile(rb"\x1b\]22;[a-z-]*\x07")


def assert_no_injection(out: bytes) -> None:
    out = OWN_SEQUENCES.sub(b"", out)
    for sequence in INJECTED:
        assert sequence not in out, f"{sequence!r} reached the terminal:\n{out[-3000:]!r}"


# -- the CLI on a pseudo-terminal -----------------------------------------------------------


def on_a_terminal(cli: Cli, *args: str, timeout: float = 60) -> tuple[int, bytes]:
    """Run the CLI with a pseudo-terminal as stdin, stdout and stderr; all it wrote there."""
    leader, follower = pty.openpty()
    try:
        proc = subprocess.Popen(
            cli.command(*args),
            cwd=cli.cwd,
            env=cli.environment({"TERM": "xterm-256color"}),
            stdin=follower,
            stdout=follower,
            stderr=follower,
        )
        os.close(follower)
        follower = -1
        out = b""
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
        return proc.wait(timeout), out
    finally:
        os.close(leader)
        if follower != -1:
            os.close(follower)


@pytest.fixture
def hostile_server(ollama_server: FakeOllama) -> FakeOllama:
    ollama_server.version = EVIL_VERSION
    ollama_server.add_model(
        FakeModel(name=EVIL_MODEL, family=f"fam{HOSTILE}", quantization_level=f"Q{HOSTILE}")
    )
    ollama_server.set_loaded([EVIL_MODEL])
    return ollama_server


def test_cli_status_and_models_show_server_strings_without_their_effect(
    cli: Cli, config_file: Path, hostile_server: FakeOllama
) -> None:
    code, out = on_a_terminal(cli, "status")
    assert code == 0
    assert_no_injection(out)
    assert visible(EVIL_VERSION).encode() in out
    assert visible(EVIL_MODEL).encode() in out  # the loaded model

    code, out = on_a_terminal(cli, "models")
    assert code == 0
    assert_no_injection(out)
    assert visible(EVIL_MODEL).encode() in out
    assert f"fam{SHOWN}".encode() in out and f"Q{SHOWN}".encode() in out

    code, out = on_a_terminal(cli, "models", "show", EVIL_MODEL)
    assert code == 0
    assert_no_injection(out)
    assert f"fam{SHOWN}".encode() in out


def test_cli_error_texts_of_the_server_are_shown_not_obeyed(
    cli: Cli, config_file: Path, hostile_server: FakeOllama
) -> None:
    hostile_server.error_after = 2  # an error line in the middle of the reply's stream
    hostile_server.error_message = f"boom{HOSTILE}"
    code, out = on_a_terminal(cli, "chat", "hi")
    assert code == 1
    assert_no_injection(out)
    assert f"boom{SHOWN}".encode() in out

    hostile_server.error_after = None
    hostile_server.fail(500, {"error": f"refused{HOSTILE}"})
    code, out = on_a_terminal(cli, "chat", "hi")
    assert code == 1
    assert_no_injection(out)
    assert f"refused{SHOWN}".encode() in out

    for args in (("models",), ("status",), ("models", "pull", "x"), ("models", "show", "x")):
        code, out = on_a_terminal(cli, *args)
        assert code != 0, args
        assert_no_injection(out)
        assert f"refused{SHOWN}".encode() in out, (args, out)


def test_cli_echoes_argv_and_file_names_safely(
    cli: Cli, config_file: Path, hostile_server: FakeOllama, tmp_path: Path
) -> None:
    wanted = f"nothere{HOSTILE}"
    for args in (
        ("chat", "--model", wanted, "hi"),
        ("models", "rm", "--yes", wanted),
        ("models", "show", wanted),
    ):
        code, out = on_a_terminal(cli, *args)
        assert code == 3, (args, out)
        assert_no_injection(out)
        # shown as the display function writes it, or as a repr() within a message
        assert f"nothere{SHOWN}".encode() in out or b"nothere\\x1b]52" in out, (args, out)

    hostile_server.pull_error = f"pull model manifest: file does not exist{HOSTILE}"
    code, out = on_a_terminal(cli, "models", "pull", wanted)
    assert code != 0
    assert_no_injection(out)
    assert SHOWN.encode() in out

    missing = tmp_path / f"conf{HOSTILE}.toml"
    code, out = on_a_terminal(cli, "--config", str(missing), "status")
    assert code == 2
    assert_no_injection(out)
    assert f"conf{SHOWN}.toml".encode() in out


def test_cli_image_echoes_a_hostile_model_safely(cli: Cli, config_file: Path) -> None:
    code, out = on_a_terminal(cli, "image", "a cat", "--model", f"./nope{HOSTILE}")
    assert code == 3, out
    assert_no_injection(out)
    assert f"nope{SHOWN}".encode() in out  # in "loading …" and in the error


def hostile_png(folder: Path) -> Path:
    image = Image.new("RGB", (64, 64), (200, 30, 30))
    params = ImageParameters(
        f"a red square{HOSTILE}", f"blurry{HOSTILE}", 64, 64, 20, 7.5, 7, "Euler a", f"m{HOSTILE}"
    )
    return save_png(image, folder, params, datetime.fromtimestamp(1_790_000_000))


def test_cli_show_prints_a_pngs_parameters_safely(
    cli: Cli, config_file: Path, tmp_path: Path
) -> None:
    path = hostile_png(tmp_path / "pics")
    code, out = on_a_terminal(cli, "show", str(path))
    assert code == 0, out
    assert_no_injection(out)
    assert f"a red square{SHOWN}".encode() in out
    assert "▀".encode() in out or "▄".encode() in out  # the picture, in half blocks


# -- the TUI in tmux, its raw output captured with pipe-pane ----------------------------------


@pytest.fixture
def tmux() -> Iterator[Tmux]:
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed")
    t = Tmux(f"llm-pessoal-safety-{uuid.uuid4().hex[:8]}")
    yield t
    t.kill()


@pytest.mark.e2e
def test_the_app_writes_no_injected_sequence_to_its_terminal(
    tmux: Tmux, cli: Cli, config_file: Path, hostile_server: FakeOllama, tmp_path: Path
) -> None:
    hostile_server.error_after = 1
    hostile_server.error_message = f"boom{HOSTILE}"
    settings = load_settings(config_file, env={})
    store = Store.open(settings.paths.database)
    path = hostile_png(settings.paths.outputs)
    store.add_image(path, read_parameters(path), 1.5)
    store.close()

    raw = tmp_path / "terminal.bytes"
    env = cli.environment()
    command = (
        f"sleep 0.5; exec env PYTHONPATH={env['PYTHONPATH']} "
        f"{sys.executable} -m tui.cli --config {config_file}"
    )
    tmux(
        "new-session", "-d", "-s", "app", "-x", "120", "-y", "40",
        *[a for k in ("PATH", "HOME", "LANG") if k in env for a in ("-e", f"{k}={env[k]}")],
        "-e", "TERM=xterm-256color",
        command,
    )  # fmt: skip
    tmux("pipe-pane", "-o", "-t", "app", f"cat >> {raw}")

    tmux.wait_for("Ollama 0.9␛]52")  # the header's version
    tmux.keys("-l", "hello")
    tmux.keys("Enter")
    tmux.wait_for("boom␛]52")  # the error line that came mid-stream
    tmux.keys("C-t")  # the model picker lists the hostile model
    tmux.wait_for("evil␛]52")
    tmux.keys("Escape")
    tmux.keys("F4")  # the Monitor: version and the loaded model
    tmux.wait_for("0.9␛]52")
    tmux.wait_for("evil␛]52")
    tmux.keys("F3")
    tmux.wait_for("Queue (F8")
    tmux.keys("C-b")  # to the gallery, then Reuse the hostile image's settings
    tmux.wait_for("a red square␛")  # the gallery's caption of it
    tmux.wait_for("m␛]52;c;")  # its model, in the details
    tmux.wait_for("u Reuse")
    tmux.keys("u")
    tmux.wait_for("The form now holds")
    tmux.wait_for("blurry␛]52")  # the negative prompt, in the form, visible
    tmux.keys("C-q")
    deadline = time.monotonic() + 15
    while (
        subprocess.run(
            ["tmux", "-L", tmux.socket, "has-session", "-t", "app"], capture_output=True
        ).returncode
        == 0
    ):
        assert time.monotonic() < deadline, "Ctrl+Q did not quit the app"
        time.sleep(0.1)
    out = raw.read_bytes()
    assert len(out) > 10_000  # the app's own drawing was captured
    assert_no_injection(out)


# -- the display functions themselves ----------------------------------------------------------


def test_shown_is_a_renderable_that_neither_interprets_markup_nor_keeps_controls() -> None:
    from rich.console import Console

    from tui.text import shown

    text = shown(f"[bold]x[/bold] [link=https://e.example]y[/link]{HOSTILE}", style="red")
    assert text.plain == f"[bold]x[/bold] [link=https://e.example]y[/link]{SHOWN}"
    console = Console(force_terminal=True, color_system="truecolor", width=200)
    with console.capture() as capture:
        console.print(text)
    written = capture.get().encode()
    assert_no_injection(written)
    assert b"\x1b]8;" not in written  # no hyperlink made from the text


def test_json_output_escapes_what_a_terminal_would_act_on() -> None:
    import json

    from tui.cli_base import dumps

    data = {"name": f"é{HOSTILE}\u202e"}
    text = dumps(data)
    assert json.loads(text) == data  # the same document
    assert_no_injection(text.encode())
    assert "\x1b" not in text and "\u202e" not in text and "é" in text
