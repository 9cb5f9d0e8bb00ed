"""``llm-pessoal image-models`` and ``image`` with a hub id, as real subprocesses talking to
the local hub server (tests/hub_server.py) through ``HF_ENDPOINT``."""

from __future__ import annotations

import json
import queue
import resource
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

try:
    from test_hub import FP32, REPO, hub, hub_repo_folder
except ImportError:
    from tests.test_hub import FP32, REPO, hub, hub_repo_folder  # noqa: F401

if TYPE_CHECKING:
    from conftest import Cli, MakeConfig
    from hub_server import FakeHub
else:
    Cli = MakeConfig = FakeHub = Any

RUN_TIMEOUT = 120


@pytest.fixture
def config(make_config: MakeConfig, tmp_path: Path) -> Path:
    return make_config(
        paths={"models": tmp_path / "models"},
        diffusion={
            "model": REPO,
            "device": "cpu",
            "width": 64,
            "height": 64,
            "steps": 2,
            "scheduler": "Euler",
        },
    )


def env(hub: FakeHub, **extra: str) -> dict[str, str]:
    return {"HF_ENDPOINT": hub.url, "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1", **extra}


def run(cli: Cli, config: Path, hub: FakeHub, *args: str) -> subprocess.CompletedProcess[str]:
    return cli.run("--config", str(config), *args, env=env(hub), timeout=RUN_TIMEOUT)


def listed(cli: Cli, config: Path, hub: FakeHub) -> dict[str, Any]:
    result = run(cli, config, hub, "image-models", "list", "--json")
    assert result.returncode == 0, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def test_pull_list_rm(cli: Cli, config: Path, hub: FakeHub, tmp_path: Path) -> None:
    assert listed(cli, config, hub)["models"] == []
    pulled = run(cli, config, hub, "image-models", "pull", REPO, "--dtype", "float32", "--json")
    assert pulled.returncode == 0, pulled.stderr
    assert "pulling tests/tiny-sd: 12 files, 9.4 MB" in pulled.stderr
    assert "not needed" in pulled.stderr
    assert "100%  12/12 files  9.4 MB / 9.4 MB" in pulled.stderr
    data = json.loads(pulled.stdout)
    assert sorted(f["path"] for f in data["plan"]["files"]) == FP32
    assert Path(data["path"], "unet", "diffusion_pytorch_model.safetensors").is_file()

    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "mine.safetensors").write_bytes(b"0" * 2048)
    models = listed(cli, config, hub)
    assert models["default"] == REPO
    assert [(m["name"], m["kind"], m["default"]) for m in models["models"]] == [
        (REPO, "hub", True),
        (str(tmp_path / "models" / "mine.safetensors"), "file", False),
    ]
    table = run(cli, config, hub, "image-models")
    assert table.returncode == 0
    row = table.stdout.splitlines()[1].split()
    assert row[:5] == ["*", REPO, "hub", "9.4", "MB"], table.stdout

    refused = run(cli, config, hub, "image-models", "rm", REPO)
    assert refused.returncode == 2 and "--yes" in refused.stderr
    gone = run(cli, config, hub, "image-models", "rm", REPO, "--yes", "--json")
    assert gone.returncode == 0, gone.stderr
    assert json.loads(gone.stdout)["freed_bytes"] == hub.repos[REPO].size(FP32)
    assert [m["name"] for m in listed(cli, config, hub)["models"]] == [
        str(tmp_path / "models" / "mine.safetensors")
    ]
    outside = run(cli, config, hub, "image-models", "rm", str(config), "--yes")
    assert outside.returncode == 3 and config.exists()


def test_image_with_a_hub_id_downloads_with_progress_then_draws(
    cli: Cli, config: Path, hub: FakeHub
) -> None:
    result = run(cli, config, hub, "image", "a red square")
    assert result.returncode == 0, result.stderr
    assert "downloading tests/tiny-sd: 12 files, 9.4 MB" in result.stderr
    assert "12/12 files  9.4 MB / 9.4 MB" in result.stderr
    assert Path(result.stdout.strip()).is_file()
    hub.stop()  # the second image needs no network at all
    again = run(cli, config, hub, "image", "a blue square")
    assert again.returncode == 0, again.stderr
    assert "downloading" not in again.stderr


def test_errors_are_one_line_each(
    cli: Cli, config: Path, hub: FakeHub, hub_repo_folder: Path
) -> None:
    from hub_server import HubRepo

    hub.repos["tests/gated"] = HubRepo.from_folder(hub_repo_folder, gated=True, token="tok")
    gated = run(cli, config, hub, "image-models", "pull", "tests/gated")
    assert gated.returncode == 1
    assert gated.stderr.count("\n") == 1 and "HF_TOKEN" in gated.stderr
    missing = run(cli, config, hub, "image-models", "pull", "tests/none")
    assert missing.returncode == 1
    assert missing.stderr == (
        f"llm-pessoal: there is no model tests/none on the hub ({hub.url}): check the id "
        "(owner/name); if it is private, set HF_TOKEN or run `hf auth login`\n"
    )
    hub.stop()
    offline = run(cli, config, hub, "image", "x")
    assert offline.returncode == 3
    last = offline.stderr.splitlines()[-1]
    assert last.startswith(
        f"llm-pessoal: tests/tiny-sd is not in the cache and the hub cannot be reached ({hub.url}: "
    ), offline.stderr
    assert last.endswith(
        "): connect to the network and run `llm-pessoal image-models pull tests/tiny-sd`, "
        "or set [diffusion] model to a local folder or file"
    )
    assert "warn" not in offline.stderr.lower() and "Traceback" not in offline.stderr


def _lines(stream: Any, into: queue.Queue[str]) -> None:
    for line in stream:
        into.put(line)
    into.put("")


def test_ctrl_c_stops_the_pull_and_pulling_again_goes_on(
    cli: Cli, config: Path, hub: FakeHub
) -> None:
    hub.hold_after = 1_500_000
    proc = subprocess.Popen(
        [*cli.command("--config", str(config), "image-models", "pull", REPO, "--dtype", "float32")],
        cwd=cli.cwd,
        env=cli.environment(env(hub)),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=_lines, args=(proc.stderr, lines), daemon=True).start()
    try:
        assert hub.holding.wait(RUN_TIMEOUT), "the download never started"
        blobs = cli.cwd / "cache" / "hub" / "models--tests--tiny-sd" / "blobs"
        deadline = time.monotonic() + RUN_TIMEOUT
        while not any(p.stat().st_size >= 1_000_000 for p in blobs.glob("*.incomplete")):
            assert time.monotonic() < deadline and proc.poll() is None, "no part on disk"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    rest = []
    while (line := lines.get(timeout=10)) != "":
        rest.append(line)
    text = "".join(rest)
    assert code == 130, text
    assert "pull of tests/tiny-sd stopped; what came stays in the cache" in text
    assert "Traceback" not in text
    hub.hold_after = None
    hub.release.set()
    state = listed(cli, config, hub)["models"]
    assert [(m["name"], m["complete"]) for m in state] == [(REPO, False)]
    assert state[0]["partial_bytes"] > 0
    again = run(cli, config, hub, "image-models", "pull", REPO, "--dtype", "float32")
    assert again.returncode == 0, again.stderr
    assert any(r[2].startswith("bytes=") and r[2] != "bytes=0-" for r in hub.gets())


def _small_files(limit: int) -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_FSIZE as Linux has it")
def test_a_disk_that_fills_up_leaves_nothing_half_written(
    cli: Cli, config: Path, hub: FakeHub, tmp_path: Path
) -> None:
    proc = subprocess.run(
        cli.command("--config", str(config), "image-models", "pull", REPO, "--dtype", "float32"),
        cwd=cli.cwd,
        env=cli.environment(env(hub)),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        preexec_fn=lambda: _small_files(2_000_000),
    )
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.splitlines()[-1].startswith(
        "llm-pessoal: the disk filled up while downloading tests/tiny-sd"
    ), proc.stderr
    assert "nothing half-written is left" in proc.stderr
    blobs = tmp_path / "cache" / "hub" / "models--tests--tiny-sd" / "blobs"
    assert not list(blobs.glob("*.incomplete"))
    assert all(b.stat().st_size < 2_000_000 for b in blobs.iterdir())
