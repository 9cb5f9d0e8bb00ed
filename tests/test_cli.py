"""The headless CLI (``python -m tui.cli``) as real subprocesses against the fake server."""

from __future__ import annotations

import json
import os
import pty
import signal
import socket
import subprocess
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from waiting import wait_until

if TYPE_CHECKING:
    from conftest import Cli, MakeConfig
    from ollama_server import DEFAULT_REPLY, FakeOllama, tokenize
else:
    try:
        from ollama_server import DEFAULT_REPLY, FakeOllama, tokenize
    except ImportError:
        from tests.ollama_server import DEFAULT_REPLY, FakeOllama, tokenize
    Cli = MakeConfig = Any

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_UNAVAILABLE, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
ODD_REPLY = "Olá! \x1b[31mred\x1b[0m 😀 שלום\ttab \\n not a newline"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def chat_bodies(server: FakeOllama) -> list[dict[str, Any]]:
    return [r.body for r in server.requests if r.path == "/api/chat"]


def assert_clean_failure(result: subprocess.CompletedProcess[str]) -> str:
    """One line on stderr, from the app, with no traceback; returns it."""
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("llm-pessoal: ")
    return lines[0]


# -- chat ------------------------------------------------------------------------------


def test_chat_prints_the_reply_exactly(
    cli: Cli, config_file: Path, ollama_server: FakeOllama
) -> None:
    ollama_server.reply = ODD_REPLY
    result = cli.run("chat", "hello there")
    assert (result.returncode, result.stderr) == (EXIT_OK, "")
    assert result.stdout == ODD_REPLY + "\n"  # piped: no escaping, one newline to end
    (body,) = chat_bodies(ollama_server)
    assert body["messages"] == [{"role": "user", "content": "hello there"}]
    assert body["model"] == "llama3.2:latest" and body["stream"] is True


def test_a_reply_that_ends_its_line_gets_no_extra_blank_line(cli: Cli, config_file: Path) -> None:
    result = cli.run("chat", "hi")
    assert result.returncode == EXIT_OK
    assert result.stdout == DEFAULT_REPLY


def test_no_stream_and_stats(cli: Cli, config_file: Path, ollama_server: FakeOllama) -> None:
    ollama_server.reply = ODD_REPLY
    result = cli.run("chat", "--no-stream", "--stats", "hi")
    assert result.returncode == EXIT_OK
    assert result.stdout == ODD_REPLY + "\n"
    assert f"{len(tokenize(ODD_REPLY))} tokens" in result.stderr and "tok/s" in result.stderr
    (body,) = chat_bodies(ollama_server)
    # the service streams every reply (so a saved one is saved as it grows); --no-stream
    # only holds the text back until it is whole
    assert body["messages"][-1] == {"role": "user", "content": "hi"}


def test_system_prompt_model_and_config_options_reach_the_server(
    cli: Cli, make_config: MakeConfig, ollama_server: FakeOllama
) -> None:
    make_config(
        ollama={"default_model": "qwen2.5-coder:7b", "max_tokens": 5, "keep_alive": "1h"},
        chat={
            "system_prompt": "from config",
            "temperature": 0.1,
            "seed": 9,
            "context_length": 2048,
        },
    )
    assert cli.run("chat", "one").returncode == EXIT_OK
    assert (
        cli.run("chat", "--system", "Answer in Portuguese.", "-m", "llama3.2", "two").returncode
        == 0
    )
    first, second = chat_bodies(ollama_server)
    assert first["model"] == "qwen2.5-coder:7b"
    assert first["keep_alive"] == "1h"
    assert first["messages"][0] == {"role": "system", "content": "from config"}
    assert first["options"] == {"temperature": 0.1, "num_predict": 5, "seed": 9, "num_ctx": 2048}
    assert second["model"] == "llama3.2"
    assert second["messages"] == [
        {"role": "system", "content": "Answer in Portuguese."},
        {"role": "user", "content": "two"},
    ]


def test_a_dash_reads_the_message_from_stdin(
    cli: Cli, config_file: Path, ollama_server: FakeOllama
) -> None:
    text = "line one\nline two — with ünïcode\n"
    result = cli.run("chat", "-", input=text)
    assert result.returncode == EXIT_OK
    (body,) = chat_bodies(ollama_server)
    assert body["messages"] == [{"role": "user", "content": text}]


@pytest.mark.parametrize("message", ["", "   \n\t"])
def test_an_empty_message_is_a_usage_error(
    cli: Cli, config_file: Path, ollama_server: FakeOllama, message: str
) -> None:
    result = cli.run("chat", message)
    assert result.returncode == EXIT_USAGE
    assert "empty" in assert_clean_failure(result)
    assert cli.run("chat", "-", input=message).returncode == EXIT_USAGE
    assert chat_bodies(ollama_server) == []


def test_an_unknown_model_says_how_to_pull_it(cli: Cli, config_file: Path) -> None:
    result = cli.run("chat", "--model", "unknown", "hi")
    assert result.returncode == EXIT_UNAVAILABLE
    assert "ollama pull unknown" in assert_clean_failure(result)
    assert result.stdout == ""


def test_a_server_that_is_down_is_exit_3(cli: Cli, make_config: MakeConfig) -> None:
    port = free_port()
    make_config(ollama={"host": f"http://127.0.0.1:{port}"})
    for args in (["chat", "hi"], ["chat", "--no-stream", "hi"], ["models"]):
        result = cli.run(*args)
        assert result.returncode == EXIT_UNAVAILABLE, args
        line = assert_clean_failure(result)
        assert f"127.0.0.1:{port}" in line and "ollama serve" in line


def test_ollama_host_overrides_the_config_file(
    cli: Cli, make_config: MakeConfig, ollama_server: FakeOllama
) -> None:
    make_config(ollama={"host": f"http://127.0.0.1:{free_port()}"})
    result = cli.run("chat", "hi", env={"OLLAMA_HOST": f"127.0.0.1:{ollama_server.port}"})
    assert (result.returncode, result.stdout) == (EXIT_OK, DEFAULT_REPLY)


def test_llm_pessoal_config_names_the_file(
    cli: Cli, tmp_path: Path, ollama_server: FakeOllama
) -> None:
    other = tmp_path / "elsewhere" / "settings.toml"
    other.parent.mkdir()
    other.write_text(f'[ollama]\nhost = "{ollama_server.url}"\n[paths]\nlogs = "my-logs"\n')
    result = cli.run("chat", "hi", env={"LLM_PESSOAL_CONFIG": str(other)})
    assert result.returncode == EXIT_OK
    assert (other.parent / "my-logs" / "app.jsonl").is_file()


def test_a_reply_cut_short_keeps_the_partial_text(
    cli: Cli, config_file: Path, ollama_server: FakeOllama
) -> None:
    ollama_server.drop_after = 4
    result = cli.run("chat", "hi")
    assert result.returncode == EXIT_FAIL
    assert result.stdout == "".join(tokenize(DEFAULT_REPLY)[:4]) + "\n"
    assert "lost" in assert_clean_failure(result)


def test_a_terminal_sees_control_characters_not_their_effect(
    cli: Cli, config_file: Path, ollama_server: FakeOllama
) -> None:
    ollama_server.reply = "a\x1b[2Jb\x07c"
    leader, follower = pty.openpty()
    try:
        proc = subprocess.Popen(
            cli.command("chat", "hi"),
            cwd=cli.cwd,
            env=cli.environment(),
            stdin=subprocess.DEVNULL,
            stdout=follower,
            stderr=subprocess.PIPE,
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
        assert proc.wait(20) == EXIT_OK
    finally:
        os.close(leader)
        if follower != -1:
            os.close(follower)
    text = out.decode()
    assert "\x1b" not in text and "\x07" not in text
    assert "a␛[2Jb␇c" in text


def test_a_log_line_is_written_as_json(cli: Cli, config_file: Path, tmp_path: Path) -> None:
    assert cli.run("chat", "hi").returncode == EXIT_OK
    lines = (tmp_path / "logs" / "app.jsonl").read_text(encoding="utf-8").splitlines()
    entries = [json.loads(line) for line in lines]
    request = next(e for e in entries if e["message"] == "chat request")
    assert request["level"] == "INFO" and request["model"] == "llama3.2:latest"
    assert request["timestamp"].endswith("+00:00")


def test_sigint_during_a_reply_exits_130_and_closes_the_stream(
    cli: Cli, config_file: Path, ollama_server: FakeOllama
) -> None:
    ollama_server.reply = "word " * 200
    ollama_server.rate = 20.0
    proc = cli.popen("chat", "hi")
    try:
        assert proc.stdout is not None
        assert proc.stdout.read(10) == "word word "
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == EXIT_INTERRUPTED
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert out.count("word") < 100
    wait_until(lambda: ollama_server.cancelled > 0)
    assert ollama_server.cancelled == 1 and ollama_server.completed == 0


# -- models, status, health ------------------------------------------------------------


def test_models_table(cli: Cli, config_file: Path) -> None:
    result = cli.run("models")
    assert result.returncode == EXIT_OK
    rows = [line.split() for line in result.stdout.splitlines()]
    assert rows == [
        ["NAME", "PARAMS", "QUANT", "FAMILY", "CONTEXT", "SIZE"],
        ["llama3.2:latest", "3.2B", "Q4_K_M", "llama", "131072", "2.0", "GB"],
        ["qwen2.5-coder:7b", "7.6B", "Q4_K_M", "qwen2", "32768", "4.7", "GB"],
    ]


def test_models_json(cli: Cli, config_file: Path) -> None:
    result = cli.run("models", "--json")
    assert result.returncode == EXIT_OK
    models = json.loads(result.stdout)["models"]
    picked = [
        {
            k: m[k]
            for k in ("name", "size", "family", "parameter_size", "quantization", "context_length")
        }
        for m in models
    ]
    assert picked == [
        {
            "name": "llama3.2:latest",
            "size": 2019393189,
            "family": "llama",
            "parameter_size": "3.2B",
            "quantization": "Q4_K_M",
            "context_length": 131072,
        },
        {
            "name": "qwen2.5-coder:7b",
            "size": 4683087332,
            "family": "qwen2",
            "parameter_size": "7.6B",
            "quantization": "Q4_K_M",
            "context_length": 32768,
        },
    ]


def test_no_models_says_how_to_get_one(
    cli: Cli, config_file: Path, ollama_server: FakeOllama
) -> None:
    ollama_server.models.clear()
    result = cli.run("models")
    assert result.returncode == EXIT_OK
    assert "ollama pull" in result.stdout
    assert json.loads(cli.run("models", "--json").stdout) == {"models": []}


def test_status_json(cli: Cli, config_file: Path, ollama_server: FakeOllama) -> None:
    ollama_server.set_loaded(["llama3.2"])
    result = cli.run("status", "--json")
    assert result.returncode == EXIT_OK
    report = json.loads(result.stdout)
    assert report["ollama_status"] == "online"
    assert report["stable_diffusion_status"] == "not_loaded"
    info = report["system_info"]
    assert 0 <= info["cpu_usage"] <= 100 and 0 < info["memory_usage"] <= 100
    if not Path("/dev/nvidiactl").exists():
        assert info["gpu_usage"] is None
    assert report["ollama"]["version"] == "0.12.6"
    assert [m["name"] for m in report["ollama"]["loaded_models"]] == ["llama3.2:latest"]


def test_status_text_and_offline(cli: Cli, make_config: MakeConfig) -> None:
    port = free_port()
    make_config(ollama={"host": f"http://127.0.0.1:{port}"})
    result = cli.run("status")
    assert result.returncode == EXIT_UNAVAILABLE
    assert "Traceback" not in result.stderr
    assert f"Ollama (http://127.0.0.1:{port}): cannot reach Ollama" in result.stdout
    assert "CPU" in result.stdout and "RAM" in result.stdout
    report = json.loads(cli.run("status", "--json").stdout)
    assert report["ollama_status"] == "offline"


def test_health(cli: Cli, make_config: MakeConfig) -> None:
    make_config()
    healthy = cli.run("health")
    assert healthy.returncode == EXIT_OK
    report = json.loads(healthy.stdout)
    assert report["status"] == "healthy"
    assert report["checks"] == {"ollama": "ok", "database": "ok", "outputs": "ok"}

    make_config(ollama={"host": f"http://127.0.0.1:{free_port()}"})
    down = cli.run("health")
    assert down.returncode == EXIT_UNAVAILABLE
    report = json.loads(down.stdout)
    assert report["status"] == "degraded" and "ollama serve" in report["checks"]["ollama"]


# -- config and flags ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('[ollama]\ntimeout = "soon"\n', "timeout"),
        ("[chat]\ntemprature = 0.5\n", "temprature"),
        ("[ollama]\nhost = \n", "line 2"),
        ('[diffusion]\ndevice = "gpu"\n', "device"),
    ],
)
def test_an_invalid_config_is_one_line_and_exit_2(
    cli: Cli, tmp_path: Path, text: str, key: str
) -> None:
    (tmp_path / "config.toml").write_text(text)
    result = cli.run("chat", "hi")
    assert result.returncode == EXIT_USAGE
    line = assert_clean_failure(result)
    assert str(tmp_path / "config.toml") in line and key in line


def test_a_bad_environment_override_is_exit_2(cli: Cli, config_file: Path) -> None:
    result = cli.run("models", env={"LOG_LEVEL": "chatty"})
    assert result.returncode == EXIT_USAGE
    assert "LOG_LEVEL" in assert_clean_failure(result)


def test_version(cli: Cli) -> None:
    result = cli.run("--version")
    assert result.returncode == EXIT_OK
    assert result.stdout == f"llm-pessoal {version('llm-pessoal')}\n"


def test_a_reader_that_goes_away_stops_the_reply_quietly(
    cli: Cli, config_file: Path, ollama_server: FakeOllama
) -> None:
    ollama_server.reply = "word " * 200
    ollama_server.rate = 50.0
    proc = cli.popen("chat", "hi")  # as in `llm-pessoal chat hi | head -c 10`
    try:
        assert proc.stdout is not None and proc.stderr is not None
        assert proc.stdout.read(10) == "word word "
        proc.stdout.close()
        assert proc.wait(10) == EXIT_FAIL
        err = proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "Traceback" not in err and "BrokenPipeError" not in err
    wait_until(lambda: ollama_server.cancelled > 0)
    assert ollama_server.cancelled == 1 and ollama_server.completed == 0


# -- one clear line, exit 2, never a traceback ----------------------------------------------


def test_help_shows_the_exit_codes(cli: Cli) -> None:
    from tui.cli_base import EXIT_MEANINGS

    result = cli.run("--help")
    assert result.returncode == EXIT_OK
    assert "exit codes:" in result.stdout
    text = " ".join(result.stdout.split())  # the table wraps long meanings
    for code, meaning in EXIT_MEANINGS.items():
        assert f"{code.value} {meaning}" in text


def test_image_help_states_the_limits_config_and_the_form_use(cli: Cli) -> None:
    from engines.limits import IMAGE_COUNT, IMAGE_SIDE, IMAGE_STEPS

    result = cli.run("image", "--help", env={"COLUMNS": "400"})
    assert result.returncode == EXIT_OK
    assert IMAGE_SIDE.describe() in result.stdout
    assert f"({IMAGE_STEPS.span()})" in result.stdout
    assert f"({IMAGE_COUNT.span()})" in result.stdout


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["--config=--", "status"], "--config"),
        (["chat", "--model=--", "hi"], "--model"),
        (["image", "a cat", "--out=--"], "--out"),
        (["image", "a cat", "--negative-prompt=--"], "--negative-prompt"),
        (["image", "a cat", "--model=--"], "--model"),
    ],
)
def test_double_dash_as_a_value_is_refused_not_ignored(
    cli: Cli, config_file: Path, ollama_server: FakeOllama, args: list[str], option: str
) -> None:
    result = cli.run(*args)
    assert result.returncode == EXIT_USAGE
    line = assert_clean_failure(result)
    assert f"{option}=--" in line and "cannot be a value" in line
    assert chat_bodies(ollama_server) == []


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["--config", "", "status"], "--config"),
        (["chat", "--model", " ", "hi"], "--model"),
        (["image", "a cat", "--model", ""], "--model"),
        (["image", "a cat", "--out", ""], "--out"),
    ],
)
def test_an_empty_value_is_refused_not_replaced_by_the_default(
    cli: Cli, config_file: Path, ollama_server: FakeOllama, args: list[str], option: str
) -> None:
    result = cli.run(*args)
    assert result.returncode == EXIT_USAGE
    line = assert_clean_failure(result)
    assert option in line and "empty" in line
    assert chat_bodies(ollama_server) == []


@pytest.mark.parametrize("command", [["chat", "-"], ["image", "-"]])
def test_standard_input_that_is_not_utf8_is_named(
    cli: Cli, config_file: Path, ollama_server: FakeOllama, command: list[str]
) -> None:
    result = subprocess.run(
        cli.command(*command),
        cwd=cli.cwd,
        env=cli.environment(),
        input=b"caf\xe9 au lait\n",
        capture_output=True,
        timeout=60,
        check=False,
    )
    stderr = result.stderr.decode()
    assert result.returncode == EXIT_USAGE, stderr
    line = assert_clean_failure(subprocess.CompletedProcess([], 2, "", stderr))
    assert "standard input is not UTF-8" in line and "0xe9 at offset 3" in line
    assert chat_bodies(ollama_server) == []


def test_an_argument_that_is_not_utf8_is_named(
    cli: Cli, config_file: Path, ollama_server: FakeOllama
) -> None:
    result = subprocess.run(
        [*cli.command("chat"), os.fsdecode(b"caf\xe9")],
        cwd=cli.cwd,
        env=cli.environment(),
        capture_output=True,
        timeout=60,
        check=False,
    )
    stderr = result.stderr.decode()
    assert result.returncode == EXIT_USAGE, stderr
    assert "is not UTF-8" in assert_clean_failure(subprocess.CompletedProcess([], 2, "", stderr))
    assert chat_bodies(ollama_server) == []


def test_an_out_of_range_width_states_the_same_limits_as_the_config(
    cli: Cli, config_file: Path
) -> None:
    from engines.limits import IMAGE_SIDE, IMAGE_SIDE_XL

    result = cli.run("image", "a cat", "--width", "100")
    assert result.returncode == EXIT_USAGE
    line = assert_clean_failure(result)
    assert f"width 100 is not allowed: use {IMAGE_SIDE.describe()}" in line
    assert f"{IMAGE_SIDE_XL.span()} with an SDXL model" in line


def test_a_parse_error_is_one_line_and_exit_2(cli: Cli) -> None:
    result = cli.run("image", "a cat", "--steps", "many")
    assert result.returncode == EXIT_USAGE
    line = assert_clean_failure(result)
    assert "--steps" in line and "'many'" in line and "--help" in line


# -- completion ------------------------------------------------------------------------------


def test_completion_comes_from_shtab_for_each_shell(cli: Cli) -> None:
    import shtab

    from tui.cli_completion import DIRECTORY, FILE, SHELLS

    assert {k: FILE[k] for k in SHELLS} == {k: shtab.FILE[k] for k in SHELLS}
    assert {k: DIRECTORY[k] for k in SHELLS} == {k: shtab.DIRECTORY[k] for k in SHELLS}
    for shell in SHELLS:
        result = cli.run("completion", shell)
        assert result.returncode == EXIT_OK, shell
        assert "status" in result.stdout and "--config" in result.stdout, shell
        if shell in ("bash", "zsh"):
            assert "--negative-prompt" in result.stdout
    zsh = cli.run("completion", "zsh").stdout
    assert zsh.startswith("#compdef llm-pessoal")


# -- show ------------------------------------------------------------------------------------


def test_show_prints_the_parameters_off_a_terminal(cli: Cli, tmp_path: Path) -> None:
    from datetime import datetime

    from PIL import Image

    from engines.images import ImageParameters, save_png

    params = ImageParameters("a [bold]cat[/]", "dogs", 64, 64, 12, 6.5, 42, "DDIM", "tiny")
    path = save_png(Image.new("RGB", (64, 64)), tmp_path, params, datetime(2026, 1, 2))
    result = cli.run("show", str(path))
    assert result.returncode == EXIT_OK, result.stderr
    assert result.stdout.splitlines()[0] == str(path)
    assert "  a [bold]cat[/]" in result.stdout  # markup shown as written
    assert "Seed: 42" in result.stdout and "Sampler: DDIM" in result.stdout
    assert "▀" not in result.stdout  # no picture on a pipe

    missing = cli.run("show", str(tmp_path / "nope.png"))
    assert missing.returncode == EXIT_USAGE
    assert "no such file" in assert_clean_failure(missing)
    (tmp_path / "text.png").write_text("not a png")
    bad = cli.run("show", str(tmp_path / "text.png"))
    assert bad.returncode == EXIT_USAGE
    assert "not an image" in assert_clean_failure(bad)
