"""``preview = "auto"`` inside a real tmux: the app asks, tmux answers for itself (no Kitty
graphics, no Sixel in Debian's build), and the app draws half-blocks, saying why in one log
line; an explicit ``preview`` is used as set."""

from __future__ import annotations

import json
import shutil
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import REPO, MakeConfig
from tmux_helpers import Tmux

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed"),
]


@pytest.fixture
def tmux() -> Iterator[Tmux]:
    t = Tmux(f"llm-pessoal-test-{uuid.uuid4().hex[:8]}")
    yield t
    t.kill()


def pictures_line(log: Path, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists():
            for line in log.read_text(encoding="utf-8").splitlines():
                message = str(json.loads(line).get("message", ""))
                if message.startswith("pictures: "):
                    return message
        time.sleep(0.1)
    raise AssertionError(f"no 'pictures:' line in {log}")


@pytest.mark.parametrize(
    ("preview", "expected"),
    [("auto", "pictures: halfblock (inside tmux"), ("sixel", "pictures: sixel (preview")],
)
def test_preview_in_tmux(
    tmux: Tmux, make_config: MakeConfig, tmp_path: Path, preview: str, expected: str
) -> None:
    config = make_config(diffusion={"preview": preview})
    command = f"sleep 0.3; PYTHONPATH={REPO} exec {sys.executable} -m tui.cli --config {config}"
    tmux("new-session", "-d", "-s", "app", "-x", "100", "-y", "30", command)
    line = pictures_line(tmp_path / "logs" / "app.jsonl")
    assert line.startswith(expected), line
    tmux.wait_for("Message (Enter")
    tmux.keys("C-q")
