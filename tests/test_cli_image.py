"""``llm-pessoal image`` on the tiny random-weight pipeline: real subprocesses, and the same
``main`` in this process where a subprocess would only add a Python start (``in_process``).

The config's ``[diffusion] model`` is the tiny diffusers folder and its ``[paths]`` are under
``tmp_path`` (the ``make_config`` fixture), so each run loads the model through the app's real
path, writes real PNGs and indexes them in a real store.
"""

from __future__ import annotations

import io
import logging
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from engines.images import read_parameters
from engines.store import Store

if TYPE_CHECKING:
    from conftest import Cli, MakeConfig
else:
    Cli = MakeConfig = Any

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_UNAVAILABLE, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
NAME = re.compile(r"^\d{8}-\d{6}-(\d+)-([a-z0-9-]+)\.png$")
RUN_TIMEOUT = 120  # loading torch on a busy two-core machine takes seconds, not minutes


@pytest.fixture
def sd_config(make_config: MakeConfig, tiny_sd_folder: Path) -> Path:
    """A config whose model is the tiny folder, with small defaults (64x64, 2 steps)."""
    return make_config(
        diffusion={
            "model": str(tiny_sd_folder),
            "device": "cpu",
            "width": 64,
            "height": 64,
            "steps": 2,
            "scheduler": "Euler",
        }
    )


def in_process(cli: Cli, *args: str, input: str = "") -> subprocess.CompletedProcess[str]:
    """``llm-pessoal ARGS`` through the CLI's own ``main`` in this process, in the ``cli``
    fixture's folder: the code a subprocess runs, less a Python start and a torch import
    (seconds each on two busy cores). Its standard streams are byte-backed text streams that
    are no terminals, as pipes are; the logging it sets up is undone afterwards. A few tests
    here (the first, Ctrl+C, --show on a terminal) still run the real subprocess."""
    from tui.cli import main

    def stream(data: bytes = b"") -> io.TextIOWrapper:
        return io.TextIOWrapper(io.BytesIO(data), encoding="utf-8", newline="")

    out, err = stream(), stream()
    root = logging.getLogger()
    handlers, level, cwd = list(root.handlers), root.level, os.getcwd()
    saved_streams, saved_columns = (sys.stdin, sys.stdout, sys.stderr), os.environ.get("COLUMNS")
    os.chdir(cli.cwd)
    os.environ["COLUMNS"] = cli.env.get("COLUMNS", "120")
    sys.stdin, sys.stdout, sys.stderr = stream(input.encode()), out, err
    try:
        try:
            code = main(list(args))
        except SystemExit as exc:  # argparse's usage errors
            code = exc.code if isinstance(exc.code, int) else EXIT_FAIL
    finally:
        sys.stdin, sys.stdout, sys.stderr = saved_streams
        os.chdir(cwd)
        if saved_columns is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = saved_columns
        for handler in [h for h in root.handlers if h not in handlers]:
            root.removeHandler(handler)
            handler.close()
        root.setLevel(level)
    texts = []
    for written in (out, err):
        written.flush()
        texts.append(written.buffer.getvalue().decode())  # type: ignore[attr-defined]
    return subprocess.CompletedProcess(["llm-pessoal", *args], code, *texts)


def image(cli: Cli, config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return in_process(cli, "--config", str(config), "image", *args)


def gallery(database: Path) -> list[Any]:
    store = Store.open(database)
    try:
        return store.images()
    finally:
        store.close()


def test_prints_each_saved_path_and_indexes_it_in_the_gallery(
    cli: Cli, sd_config: Path, tmp_path: Path
) -> None:
    # the real subprocess, end to end (the tests below call the same main in this process)
    result = cli.run(
        "--config", str(sd_config), "image", "a lighthouse at dusk", "--count", "2", "--seed", "5",
        timeout=RUN_TIMEOUT,
    )  # fmt: skip
    assert result.returncode == EXIT_OK, result.stderr
    paths = [Path(line) for line in result.stdout.splitlines()]
    assert len(paths) == 2 and all(p.is_file() for p in paths)
    assert {p.parent for p in paths} == {tmp_path / "outputs"}
    assert [NAME.match(p.name).groups() for p in paths] == [  # type: ignore[union-attr]
        ("5", "a-lighthouse-at-dusk"),
        ("6", "a-lighthouse-at-dusk"),
    ]
    for path, seed in zip(paths, (5, 6), strict=True):
        params = read_parameters(path)
        assert (params.seed, params.width, params.height, params.steps) == (seed, 64, 64, 2)
        assert (params.prompt, params.scheduler, params.model) == (
            "a lighthouse at dusk",
            "Euler",
            "tiny-sd15",
        )
    # progress goes to stderr, never to stdout
    assert "loading" in result.stderr and "ready on cpu in float32" in result.stderr
    assert "image 2/2" in result.stderr and "step 2/2" in result.stderr
    assert "Traceback" not in result.stderr
    # the gallery (the store's images table) has both
    indexed = gallery(tmp_path / "data" / "llm-pessoal.db")
    assert sorted(i.path for i in indexed) == sorted(paths)
    assert sorted(i.parameters.seed for i in indexed) == [5, 6]


def test_out_chooses_the_folder_and_options_reach_the_image(
    cli: Cli, sd_config: Path, tmp_path: Path
) -> None:
    out = tmp_path / "elsewhere" / "pngs"
    result = in_process(
        cli,
        "--config",
        str(sd_config),
        "image",
        "-",
        "--out",
        str(out),
        "--seed",
        "77",
        "--negative-prompt",
        "fog",
        "--scheduler",
        "DPM++ 2M Karras",
        "--guidance",
        "4.5",
        "--steps",
        "3",
        "--width",
        "72",
        input="a harbour, piped\n",
    )
    assert result.returncode == EXIT_OK, result.stderr
    (path,) = (Path(line) for line in result.stdout.splitlines())
    assert path.parent == out and path.is_file()
    assert NAME.match(path.name).groups() == ("77", "a-harbour-piped")  # type: ignore[union-attr]
    params = read_parameters(path)
    assert (params.prompt, params.negative_prompt) == ("a harbour, piped", "fog")
    assert (params.scheduler, params.guidance, params.steps) == ("DPM++ 2M Karras", 4.5, 3)
    assert (params.width, params.height) == (72, 64)
    assert not (tmp_path / "outputs").exists() or list((tmp_path / "outputs").iterdir()) == []


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--width", "60"], "width 60 is not allowed: use a multiple of 8"),
        (["--width", "0"], "width 0 is not allowed"),  # not silently the default
        (["--height", "4096"], "height 4096 is not allowed"),
        (["--steps", "0"], "steps 0 is not allowed: use 1 to 150"),
        (["--steps", "151"], "steps 151 is not allowed"),
        (["--guidance", "nan"], "guidance nan is not allowed"),
        (["--seed", "-1"], "seed -1 is not allowed"),
        (["--count", "17"], "count 17 is not allowed: use 1 to 16"),
        (["--scheduler", "bogus"], "scheduler 'bogus' is unknown: use one of Euler, Euler a"),
    ],
)
def test_a_bad_request_is_exit_2_before_loading(
    cli: Cli, sd_config: Path, tmp_path: Path, args: list[str], named: str
) -> None:
    result = image(cli, sd_config, "a cat", *args)
    assert result.returncode == EXIT_USAGE
    assert result.stdout == ""
    assert result.stderr.startswith("llm-pessoal: ") and named in result.stderr
    assert "loading" not in result.stderr  # refused before the model was touched
    assert not (tmp_path / "outputs").exists()


def test_an_empty_prompt_is_exit_2(cli: Cli, sd_config: Path) -> None:
    result = image(cli, sd_config, "   ")
    assert result.returncode == EXIT_USAGE and "the prompt is empty" in result.stderr


def test_a_model_that_does_not_exist_is_exit_3(cli: Cli, sd_config: Path, tmp_path: Path) -> None:
    result = image(cli, sd_config, "a cat", "--model", "/does/not/exist")
    assert result.returncode == EXIT_UNAVAILABLE, result.stderr
    assert result.stdout == ""
    assert "llm-pessoal: model path /does/not/exist does not exist" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "outputs").exists()


def _lines(stream: Any, into: queue.Queue[str]) -> None:
    for line in stream:
        into.put(line)
    into.put("")  # the end


def test_sigint_while_generating_exits_130_and_leaves_no_file(
    cli: Cli, sd_config: Path, tmp_path: Path
) -> None:
    out = tmp_path / "interrupted"
    proc = cli.popen(
        "--config",
        str(sd_config),
        "image",
        "a very long job",
        "--steps",
        "150",
        "--width",
        "128",
        "--height",
        "128",
        "--out",
        str(out),
    )
    stderr: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=_lines, args=(proc.stderr, stderr), daemon=True)
    reader.start()
    seen: list[str] = []
    try:
        deadline = time.monotonic() + RUN_TIMEOUT
        while not any("step 1/150" in line for line in seen):
            line = stderr.get(timeout=max(0.1, deadline - time.monotonic()))
            assert line, "the CLI ended before its first step:\n" + "".join(seen)
            seen.append(line)
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=60)  # stdout holds a few paths at most: it cannot fill up
        stopped_after = time.monotonic() - sent
        stdout = proc.stdout.read() if proc.stdout else ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(5)
    while not stderr.empty():
        seen.append(stderr.get())
    text = "".join(seen)
    assert code == EXIT_INTERRUPTED, text
    assert "stopping after this step" in text and "Traceback" not in text
    assert "terminate called" not in text and "Fatal Python error" not in text
    assert stdout == ""
    assert not out.exists() or list(out.iterdir()) == []  # no PNG, no .tmp-* file
    print(f"stopped {stopped_after:.2f} s after SIGINT")


def test_show_draws_the_image_on_a_terminal_and_progress_is_sparse_off_one(
    cli: Cli, sd_config: Path, tmp_path: Path
) -> None:
    import pty

    leader, follower = pty.openpty()
    try:
        proc = subprocess.Popen(
            cli.command("--config", str(sd_config), "image", "a red barn", "--show", "--seed", "3"),
            cwd=cli.cwd,
            env=cli.environment({"TERM": "xterm-256color", "COLUMNS": "100", "LINES": "40"}),
            stdin=follower,
            stdout=follower,
            stderr=subprocess.PIPE,
        )
        os.close(follower)
        follower = -1
        out = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
        assert proc.stderr is not None
        err = proc.stderr.read().decode()
        assert proc.wait(RUN_TIMEOUT) == EXIT_OK, err
    finally:
        os.close(leader)
        if follower != -1:
            os.close(follower)
    text = out.decode()
    assert "▀" in text or "▄" in text  # the picture, in half blocks with colours
    assert "\x1b[38;" in text
    [path] = list((tmp_path / "outputs").glob("*.png"))
    assert str(path) in text
    # stderr was a pipe: plain progress lines, no cursor movement, the last step always shown
    assert "\x1b[" not in err and "\r" not in err
    assert any("step 2/2" in line for line in err.splitlines())


# -- img2img, hires fix, LoRAs ------------------------------------------------------------


def test_init_image_and_strength_make_img2img_at_the_images_size(
    cli: Cli, sd_config: Path, tmp_path: Path
) -> None:
    from PIL import Image

    start = tmp_path / "start.png"
    Image.new("RGB", (77, 64), (20, 120, 200)).save(start)  # 77 goes down to 72
    result = image(cli, sd_config, "a lake", "--init-image", str(start), "--strength", "0.5")
    assert result.returncode == EXIT_OK, result.stderr
    (path,) = (Path(line) for line in result.stdout.splitlines())
    params = read_parameters(path)
    assert (params.width, params.height, params.denoising_strength) == (72, 64, 0.5)
    assert "step 1/1" in result.stderr  # 2 steps x 0.5


def test_hires_makes_the_larger_image_and_records_it(cli: Cli, sd_config: Path) -> None:
    from PIL import Image

    result = image(cli, sd_config, "a lake", "--hires", "2", "--hires-strength", "0.5")
    assert result.returncode == EXIT_OK, result.stderr
    (path,) = (Path(line) for line in result.stdout.splitlines())
    with Image.open(path) as im:
        assert im.size == (128, 128)
    params = read_parameters(path)
    assert (params.width, params.hires_upscale, params.denoising_strength) == (64, 2, 0.5)
    assert params.hires_upscaler == "Latent"


def test_lora_options_are_the_prompts_lora_tags(
    cli: Cli, make_config: MakeConfig, tiny_sd_folder: Path, tmp_path: Path
) -> None:
    from sd_fixtures import build_tiny_lora

    loras = tmp_path / "my-loras"
    build_tiny_lora(tiny_sd_folder, loras / "ink.safetensors", seed=1)
    build_tiny_lora(tiny_sd_folder, loras / "film grain.safetensors", seed=2)
    config = make_config(
        diffusion={"model": str(tiny_sd_folder), "device": "cpu", "width": 64, "height": 64,
                   "steps": 1, "scheduler": "Euler"},
        paths={"loras": loras},
    )  # fmt: skip
    result = image(cli, config, "a fox", "--lora", "ink:0.7", "--lora", "film grain")
    assert result.returncode == EXIT_OK, result.stderr
    (path,) = (Path(line) for line in result.stdout.splitlines())
    params = read_parameters(path)
    assert params.prompt == "a fox <lora:ink:0.7> <lora:film grain:1>"
    assert re.fullmatch(r"ink: [0-9a-f]{12}, film grain: [0-9a-f]{12}", params.lora_hashes)
    missing = image(cli, config, "a fox <lora:nope:1>")
    assert missing.returncode == EXIT_USAGE
    assert "LoRA 'nope' not found in" in missing.stderr and "film grain, ink" in missing.stderr


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--lora", "ink:heavy"], "--lora 'ink:heavy': the weight 'heavy' is not a number"),
        (["--lora", "ink:9"], "LoRA 'ink' weight 9 is not allowed: use -5 to 5"),
        (["--init-image", "/no/such.png"], "--init-image /no/such.png: no such file"),
        (["--hires", "9"], "hires scale 9 is not allowed: use 1 (off) to 4"),
        (["--hires", "2", "--hires-strength", "0"], "hires strength 0 is not allowed"),
        (["--hires", "2", "--hires-upscaler", "x"], "invalid choice: 'x'"),
    ],
)
def test_bad_new_options_are_exit_2_before_loading(
    cli: Cli, sd_config: Path, tmp_path: Path, args: list[str], named: str
) -> None:
    result = image(cli, sd_config, "a cat", *args)
    assert result.returncode == EXIT_USAGE
    assert named in result.stderr and "loading" not in result.stderr
    assert not (tmp_path / "outputs").exists()


def test_a_strength_of_zero_with_an_init_image_is_exit_2(
    cli: Cli, sd_config: Path, tmp_path: Path
) -> None:
    from PIL import Image

    start = tmp_path / "start.png"
    Image.new("RGB", (64, 64)).save(start)
    result = image(cli, sd_config, "a cat", "--init-image", str(start), "--strength", "0")
    assert result.returncode == EXIT_USAGE
    assert "strength 0 is not allowed: use 0.01 to 1" in result.stderr
