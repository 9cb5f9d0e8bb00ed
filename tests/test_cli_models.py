"""``llm-pessoal models pull|rm|show`` as real subprocesses against the fake Ollama."""

from __future__ import annotations

import io
import json
import os
import pty
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from waiting import wait_until

from engines.progress import PullTracker
from tui.cli_models import PullDisplay

if TYPE_CHECKING:
    from conftest import Cli, MakeConfig
    from ollama_server import FakeOllama
else:
    try:
        from ollama_server import FakeOllama
    except ImportError:
        from tests.ollama_server import FakeOllama
    Cli = MakeConfig = Any

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_UNAVAILABLE, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
LAYERS = [40_000_000, 1429, 7711, 96]


def installed(server: FakeOllama) -> list[str]:
    return sorted(server.models)


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("llm-pessoal: ")]
    assert len(lines) == 1, result.stderr
    return lines[0]


def on_a_terminal(cli: Cli, args: list[str], typed: bytes = b"") -> tuple[int, str]:
    """Run the CLI with a pseudo-terminal as stdin, stdout and stderr; type ``typed``."""
    leader, follower = pty.openpty()
    try:
        proc = subprocess.Popen(
            cli.command(*args),
            cwd=cli.cwd,
            env=cli.environment(),
            stdin=follower,
            stdout=follower,
            stderr=follower,
        )
        os.close(follower)
        follower = -1
        out = b""
        sent = False
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
            if typed and not sent and b"[y/N]" in out:
                os.write(leader, typed)
                sent = True
        return proc.wait(20), out.decode()
    finally:
        os.close(leader)
        if follower != -1:
            os.close(follower)


# -- pull -----------------------------------------------------------------------------------


def test_pull_draws_each_layer_and_exits_0(
    cli: Cli, config_file: Path, ollama_server: FakeOllama
) -> None:
    ollama_server.pull_layers = LAYERS
    result = cli.run("models", "pull", "gemma3:1b")
    assert (result.returncode, result.stdout) == (EXIT_OK, "")
    lines = result.stderr.splitlines()
    assert lines[0] == "pulling manifest"
    assert lines[-3:] == ["verifying sha256 digest", "writing manifest", "success"]
    finals = [line for line in lines if "100%" in line]
    assert len(finals) == 4, result.stderr
    assert finals[0].startswith("pulling ") and "━" * 24 + " 100%" in finals[0]
    assert "40.0 MB / 40.0 MB" in finals[0] and "96 B / 96 B" in finals[3]
    assert "gemma3:1b" in installed(ollama_server)


def test_pull_on_a_terminal_redraws_the_line_with_rate_and_eta(
    cli: Cli, config_file: Path, ollama_server: FakeOllama
) -> None:
    ollama_server.pull_layers = [40_000_000]
    ollama_server.pull_steps = 5
    ollama_server.pull_delay = 0.12
    code, out = on_a_terminal(cli, ["models", "pull", "gemma3:1b"])
    assert code == EXIT_OK
    assert "\r\x1b[2Kpulling " in out  # the bar is redrawn in place (rich.progress)
    assert out.count("pulling 4b056eccc7ed") >= 2
    assert "MB/s" in out and "ETA 0:0" in out
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out).replace("\r", "")
    assert "40.0 MB / 40.0 MB" in plain and plain.rstrip().endswith("success")


def test_pull_display_skips_lines_that_come_too_fast() -> None:
    out = io.StringIO()
    display = PullDisplay(out, tty=False)
    tracker = PullTracker("m")
    display.show(tracker.update("pulling manifest"))
    for done in range(0, 1001, 10):
        display.show(tracker.update("pulling abc", "sha256:abc", 1000, done))
    display.show(tracker.update("success"))
    lines = out.getvalue().splitlines()
    assert lines[0] == "pulling manifest" and lines[-1] == "success"
    assert len(lines) == 4, "the layer's first and last lines, not the hundred between"


def test_pull_display_on_a_terminal_redraws_a_few_times_a_second() -> None:
    from tui.cli_progress import REFRESH_PER_S

    out = io.StringIO()
    display = PullDisplay(out, tty=True)
    tracker = PullTracker("m")
    started = time.monotonic()
    for done in range(0, 1_000_001, 1000):  # a thousand lines, as fast as they come
        display.show(tracker.update("pulling abc", "sha256:abc", 1_000_000, done))
    display.show(tracker.update("success"))
    display.end_line()
    elapsed = time.monotonic() - started
    redraws = out.getvalue().count("pulling abc")
    assert redraws <= REFRESH_PER_S * elapsed + 4, (redraws, elapsed)
    assert out.getvalue().count("100%") >= 1 and "success" in out.getvalue()


def test_pulling_a_name_the_registry_lacks_is_exit_3(
    cli: Cli, config_file: Path, ollama_server: FakeOllama
) -> None:
    ollama_server.pull_error = "pull model manifest: file does not exist"
    result = cli.run("models", "pull", "no-such-model")
    assert result.returncode == EXIT_UNAVAILABLE
    assert "'no-such-model' was not found on the registry" in one_error_line(result)


def test_pull_with_the_server_down_is_exit_3(cli: Cli, make_config: MakeConfig) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    make_config(ollama={"host": f"http://127.0.0.1:{port}"})
    for args in (["pull", "x"], ["rm", "--yes", "x"], ["show", "x"]):
        result = cli.run("models", *args)
        assert result.returncode == EXIT_UNAVAILABLE, args
        assert "ollama serve" in one_error_line(result)


def test_ctrl_c_stops_the_pull_and_exits_130(
    cli: Cli, config_file: Path, ollama_server: FakeOllama
) -> None:
    ollama_server.pull_layers = LAYERS
    ollama_server.pull_delay = 0.1
    proc = cli.popen("models", "pull", "gemma3:1b")
    try:
        wait_until(lambda: ollama_server.pull_lines >= 3)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == EXIT_INTERRUPTED
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert "pull of gemma3:1b stopped; pulling it again resumes it" in err
    wait_until(lambda: ollama_server.pulls_cancelled > 0)
    assert ollama_server.pulls_cancelled == 1 and ollama_server.pulls_completed == 0
    assert "gemma3:1b" not in installed(ollama_server)


# -- rm -------------------------------------------------------------------------------------


def test_rm_with_yes(cli: Cli, config_file: Path, ollama_server: FakeOllama) -> None:
    result = cli.run("models", "rm", "--yes", "qwen2.5-coder:7b")
    assert (result.returncode, result.stdout) == (EXIT_OK, "deleted qwen2.5-coder:7b\n")
    assert installed(ollama_server) == ["llama3.2:latest"]
    assert cli.run("models", "rm", "-y", "llama3.2").stdout == "deleted llama3.2:latest\n"


def test_rm_off_a_terminal_wants_yes(
    cli: Cli, config_file: Path, ollama_server: FakeOllama
) -> None:
    result = cli.run("models", "rm", "llama3.2:latest", input="y\n")
    assert result.returncode == EXIT_USAGE
    assert "--yes" in one_error_line(result)
    assert "llama3.2:latest" in installed(ollama_server)
    assert not [r for r in ollama_server.requests if r.path == "/api/delete"]


def test_rm_an_unknown_model_is_exit_3(cli: Cli, config_file: Path) -> None:
    result = cli.run("models", "rm", "--yes", "nope:1b")
    assert result.returncode == EXIT_UNAVAILABLE
    assert "'nope:1b' is not installed, so there is nothing to delete" in one_error_line(result)


@pytest.mark.parametrize(("typed", "code"), [(b"y\n", EXIT_OK), (b"\n", EXIT_FAIL)])
def test_rm_asks_on_a_terminal(
    cli: Cli, config_file: Path, ollama_server: FakeOllama, typed: bytes, code: int
) -> None:
    got, out = on_a_terminal(cli, ["models", "rm", "qwen2.5-coder:7b"], typed)
    assert got == code, out
    assert "Delete qwen2.5-coder:7b (4.7 GB)? [y/N]" in out
    assert ("qwen2.5-coder:7b" in installed(ollama_server)) is (code != EXIT_OK)
    assert ("deleted qwen2.5-coder:7b" in out) is (code == EXIT_OK)


# -- show -----------------------------------------------------------------------------------


def test_show(cli: Cli, config_file: Path) -> None:
    result = cli.run("models", "show", "llama3.2")
    assert result.returncode == EXIT_OK
    out = result.stdout
    for expected in (
        "Model\n  name            llama3.2\n",
        "  family          llama\n",
        "  parameters      3.2B\n",
        "  quantization    Q4_K_M\n",
        "  context length  131072\n",
        "  capabilities    completion, tools\n",
        '\nParameters\n  stop                           "<|start_header_id|>"\n',
        "\nTemplate\n  {{- range .Messages }}",
        "\nLicense\n  LICENSE AGREEMENT (fake)\n",
    ):
        assert expected in out


def test_show_json(cli: Cli, config_file: Path) -> None:
    result = cli.run("models", "show", "qwen2.5-coder:7b", "--json")
    assert result.returncode == EXIT_OK
    data = json.loads(result.stdout)
    assert {k: data[k] for k in ("name", "family", "parameter_size", "quantization")} == {
        "name": "qwen2.5-coder:7b",
        "family": "qwen2",
        "parameter_size": "7.6B",
        "quantization": "Q4_K_M",
    }
    assert data["context_length"] == 32768 and isinstance(data["capabilities"], list)
    assert data["template"] and data["license"] and "stop" in data["parameters"]


def test_show_an_unknown_model_is_exit_3(cli: Cli, config_file: Path) -> None:
    result = cli.run("models", "show", "nope:1b")
    assert result.returncode == EXIT_UNAVAILABLE
    assert "'nope:1b' is not installed" in one_error_line(result)
