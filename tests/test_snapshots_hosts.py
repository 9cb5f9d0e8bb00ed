"""Snapshot tests of the app with three Ollama servers (one that never answers), at 80x24:
the status line, the model picker labelled by server, and the Models dialog with the server
a pull goes to. Update with ``--snapshot-update`` after an intended change, and look."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import MakeConfig
from ollama_server import FakeModel, FakeOllama
from textual.pilot import Pilot
from tui_helpers import make_app, screen_text, wait_for

pytestmark = pytest.mark.usefixtures("steady_cursor")

SMALL = (80, 24)


@pytest.fixture
def three_hosts(make_config: MakeConfig, ollama_server: FakeOllama) -> Iterator[Path]:
    laptop = FakeOllama(models=[FakeModel("llama3.2:latest"), FakeModel("gemma3:1b")]).start()
    laptop.set_loaded(["gemma3:1b"])
    frozen = FakeOllama().start()
    frozen.unresponsive = True
    path = make_config()
    with path.open("a", encoding="utf-8") as f:
        for name, server, timeout in (
            ("gpu-box", ollama_server, 10),
            ("laptop", laptop, 10),
            ("frozen", frozen, 1),
        ):
            f.write(f'\n[[ollama.hosts]]\nname = "{name}"\nurl = "{server.url}"\n')
            f.write(f"timeout = {timeout}\n")
    yield path
    laptop.stop()
    frozen.stop()


async def all_checked(pilot: Pilot[object]) -> None:
    await wait_for(pilot, lambda: "✕ frozen" in screen_text(pilot.app), what="frozen marked")  # type: ignore[arg-type]
    await wait_for(pilot, lambda: "● gpu-box  ● laptop" in screen_text(pilot.app))  # type: ignore[arg-type]


def test_chat_picker_with_three_servers_at_80x24(snap_compare, three_hosts: Path) -> None:  # type: ignore[no-untyped-def]
    async def open_picker(pilot: Pilot[object]) -> None:
        await all_checked(pilot)
        await pilot.press("ctrl+t")
        await wait_for(pilot, lambda: "laptop › gemma3:1b" in screen_text(pilot.app))  # type: ignore[arg-type]

    assert snap_compare(make_app(three_hosts), terminal_size=SMALL, run_before=open_picker)


def test_models_dialog_with_three_servers_at_80x24(snap_compare, three_hosts: Path) -> None:  # type: ignore[no-untyped-def]
    async def open_models(pilot: Pilot[object]) -> None:
        await all_checked(pilot)
        await pilot.press("f5")
        await wait_for(pilot, lambda: "131,072 tokens" in screen_text(pilot.app))  # type: ignore[arg-type]

    assert snap_compare(make_app(three_hosts), terminal_size=SMALL, run_before=open_models)
