"""Snapshot tests: what the screens look like, kept from regressing.

Update after an intended change with ``pytest tests/test_snapshots.py --snapshot-update``
and look at the report before committing.
"""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest
from ollama_server import FakeOllama
from textual.pilot import Pilot
from tui_helpers import make_app, screen_text, sql, wait_for

from engines.chat_types import ChatOptions, ReplyStats
from engines.config import load_settings
from engines.store import Store
from tui.widgets.sidebar import ConversationList

pytestmark = pytest.mark.usefixtures("steady_cursor")

FIXED_TIME = 1_790_000_000.0  # a fixed moment, so the sidebar's dates do not change

REPLY = """\
Here is a Python function that reverses a string:

```python
def reverse(text: str) -> str:
    return text[::-1]
```

| input | output |
|-------|--------|
| abc   | cba    |

- It works on **any** string.
- It does not change the original.
"""


def seed(config: Path) -> None:
    """Two saved conversations with fixed times: one finished, one interrupted."""
    store = Store.open(load_settings(config, env={}).paths.database)
    a = store.create_conversation("llama3.2:latest", ChatOptions(), "Reverse a string")
    store.add_message(a.id, "user", "How do I reverse a string in Python?")
    rid = store.add_message(a.id, "assistant", "", model="llama3.2:latest")
    stats = ReplyStats("llama3.2:latest", 31, 62, 48.2, 0.21, 1.5, 0.0, "stop")
    store.update_message(rid, REPLY, status="done", stats=stats)
    b = store.create_conversation("qwen2.5-coder:7b", ChatOptions(), "A story that was cut")
    store.add_message(b.id, "user", "Tell me a story [bold]now[/bold]")
    rid = store.add_message(b.id, "assistant", "", model="qwen2.5-coder:7b")
    store.update_message(
        rid,
        "Once upon a time, \x1b[31mthere",
        status="interrupted",
        error="the connection to Ollama at http://127.0.0.1:11434 was lost",
    )
    store.close()
    sql(
        store.path,
        "UPDATE conversations SET created_at = ?, updated_at = ? - id * 60",
        (FIXED_TIME, FIXED_TIME),
    )


async def until_online(pilot: Pilot[object]) -> None:
    app = pilot.app
    await wait_for(pilot, lambda: app.ollama is not None and app.models, what="online")  # type: ignore[attr-defined]
    await wait_for(pilot, lambda: _window_known(app), what="the context window")


def _window_known(app: object) -> bool:
    """The Chat screen's context meter has read the model's window (when it is there)."""
    from tui.widgets.context_meter import ContextMeter

    for screen in app.screen_stack:  # type: ignore[attr-defined]
        for meter in screen.query(ContextMeter):
            return meter.use is not None and meter.use.window > 0
    return True


async def until_checked(pilot: Pilot[object]) -> None:
    app = pilot.app
    await wait_for(pilot, lambda: app.ollama is not None, what="first check")  # type: ignore[attr-defined]


def test_chat_empty(snap_compare, ollama_server: FakeOllama, config_file: Path) -> None:  # type: ignore[no-untyped-def]
    assert snap_compare(make_app(config_file), terminal_size=(120, 40), run_before=until_online)


def test_chat_with_conversations(
    snap_compare, ollama_server: FakeOllama, config_file: Path
) -> None:  # type: ignore[no-untyped-def]
    seed(config_file)
    assert snap_compare(make_app(config_file), terminal_size=(120, 40), run_before=until_online)


def test_chat_interrupted_reply_with_escapes(
    snap_compare, ollama_server: FakeOllama, config_file: Path
) -> None:  # type: ignore[no-untyped-def]
    seed(config_file)

    async def open_second(pilot: Pilot[object]) -> None:
        await until_online(pilot)
        pilot.app.screen.query_one(ConversationList).focus()
        await pilot.press("down", "enter")
        await wait_for(
            pilot,
            lambda: "Once upon a time" in screen_text(pilot.app),  # type: ignore[arg-type]
            what="the interrupted conversation on screen",
        )

    assert snap_compare(make_app(config_file), terminal_size=(120, 40), run_before=open_second)


def test_chat_small_terminal(snap_compare, ollama_server: FakeOllama, config_file: Path) -> None:  # type: ignore[no-untyped-def]
    seed(config_file)
    assert snap_compare(make_app(config_file), terminal_size=(40, 12), run_before=until_online)


def test_chat_offline(snap_compare, config_file: Path) -> None:  # type: ignore[no-untyped-def]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    text = re.sub(r'host = ".*"', f'host = "http://127.0.0.1:{port}"', config_file.read_text())
    config_file.write_text(text)
    assert snap_compare(make_app(config_file), terminal_size=(120, 40), run_before=until_checked)


def test_help_screen(snap_compare, ollama_server: FakeOllama, config_file: Path) -> None:  # type: ignore[no-untyped-def]
    async def open_help(pilot: Pilot[object]) -> None:
        await until_online(pilot)
        await pilot.press("f1")
        await pilot.pause()

    assert snap_compare(make_app(config_file), terminal_size=(120, 40), run_before=open_help)


def test_options_dialog(snap_compare, ollama_server: FakeOllama, config_file: Path) -> None:  # type: ignore[no-untyped-def]
    async def open_options(pilot: Pilot[object]) -> None:
        await until_online(pilot)
        await pilot.press("ctrl+o")
        await pilot.pause()

    assert snap_compare(make_app(config_file), terminal_size=(120, 40), run_before=open_options)


# -- every dialog at 80x24 -----------------------------------------------------------------

SMALL = (80, 24)


def test_chat_at_80x24(snap_compare, ollama_server: FakeOllama, config_file: Path) -> None:  # type: ignore[no-untyped-def]
    seed(config_file)
    assert snap_compare(make_app(config_file), terminal_size=SMALL, run_before=until_online)


def test_options_dialog_at_80x24(
    snap_compare, ollama_server: FakeOllama, config_file: Path
) -> None:  # type: ignore[no-untyped-def]
    async def open_options(pilot: Pilot[object]) -> None:
        await until_online(pilot)
        await pilot.press("ctrl+o")
        await wait_for(pilot, lambda: pilot.app.screen.query("#save"), what="the dialog")
        pilot.app.screen.query_one("#save").focus()  # scrolled into view
        await pilot.pause()

    assert snap_compare(make_app(config_file), terminal_size=SMALL, run_before=open_options)


def test_help_at_80x24(snap_compare, ollama_server: FakeOllama, config_file: Path) -> None:  # type: ignore[no-untyped-def]
    async def open_help(pilot: Pilot[object]) -> None:
        await until_online(pilot)
        await pilot.press("f1")
        await pilot.pause()

    assert snap_compare(make_app(config_file), terminal_size=SMALL, run_before=open_help)


def test_confirm_dialog_at_80x24(
    snap_compare, ollama_server: FakeOllama, config_file: Path
) -> None:  # type: ignore[no-untyped-def]
    seed(config_file)

    async def ask(pilot: Pilot[object]) -> None:
        await until_online(pilot)
        pilot.app.screen.query_one(ConversationList).focus()
        await pilot.press("d")
        await wait_for(pilot, lambda: pilot.app.screen.query("#yes"), what="the question")

    assert snap_compare(make_app(config_file), terminal_size=SMALL, run_before=ask)


def test_rename_dialog_at_80x24(snap_compare, ollama_server: FakeOllama, config_file: Path) -> None:  # type: ignore[no-untyped-def]
    seed(config_file)

    async def rename(pilot: Pilot[object]) -> None:
        await until_online(pilot)
        pilot.app.screen.query_one(ConversationList).focus()
        await pilot.press("r")
        await wait_for(pilot, lambda: pilot.app.screen.query("#text"), what="the dialog")

    assert snap_compare(make_app(config_file), terminal_size=SMALL, run_before=rename)


def test_code_block_picker_at_80x24(
    snap_compare, ollama_server: FakeOllama, config_file: Path
) -> None:  # type: ignore[no-untyped-def]
    store = Store.open(load_settings(config_file, env={}).paths.database)
    c = store.create_conversation("llama3.2:latest", ChatOptions(), "Two blocks")
    store.add_message(c.id, "user", "two blocks please")
    rid = store.add_message(c.id, "assistant", "", model="llama3.2:latest")
    store.update_message(rid, "```sh\nls -la\n```\n\n" + REPLY, status="done")
    store.close()
    sql(store.path, "UPDATE conversations SET created_at = ?, updated_at = ?", (FIXED_TIME,) * 2)

    async def pick(pilot: Pilot[object]) -> None:
        await until_online(pilot)
        await pilot.press("ctrl+g")
        await wait_for(pilot, lambda: pilot.app.screen.query("#pick"), what="the picker")

    assert snap_compare(make_app(config_file), terminal_size=SMALL, run_before=pick)


def test_models_dialog_at_80x24(snap_compare, ollama_server: FakeOllama, config_file: Path) -> None:  # type: ignore[no-untyped-def]
    async def open_models(pilot: Pilot[object]) -> None:
        await until_online(pilot)
        await pilot.press("f5")
        await wait_for(pilot, lambda: "131,072" in screen_text(pilot.app), what="details")  # type: ignore[arg-type]

    assert snap_compare(make_app(config_file), terminal_size=SMALL, run_before=open_models)


def test_palette_on_the_image_screen_at_80x24(snap_compare, config_file: Path) -> None:  # type: ignore[no-untyped-def]
    async def palette(pilot: Pilot[object]) -> None:
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*"Queue")
        await wait_for(pilot, lambda: "Queue: Resume/retry" in screen_text(pilot.app), what="found")  # type: ignore[arg-type]

    app = make_app(config_file, start_screen="image")
    assert snap_compare(app, terminal_size=SMALL, run_before=palette)


def test_image_screen_with_its_gallery_at_80x24(snap_compare, config_file: Path) -> None:  # type: ignore[no-untyped-def]
    from datetime import datetime

    from PIL import Image

    from engines.images import ImageParameters, save_png

    settings = load_settings(config_file, env={})
    image = Image.new("RGB", (64, 64))
    image.putdata([((x * 4) % 256, (y * 4) % 256, 90) for y in range(64) for x in range(64)])
    params = ImageParameters("a gradient", "", 64, 64, 20, 7.5, 3, "Euler a", "tiny")
    path = save_png(image, settings.paths.outputs, params, datetime.fromtimestamp(FIXED_TIME))
    store = Store.open(settings.paths.database)
    store.add_image(path, params, 1.5)
    store.close()
    sql(store.path, "UPDATE images SET created_at = ?", (FIXED_TIME,))

    async def view(pilot: Pilot[object]) -> None:
        # the gallery at 80x24: its filters, a page of thumbnails, the image's details
        from tui.widgets.gallery import ThumbnailGrid

        await pilot.press("ctrl+b")
        await wait_for(
            pilot, lambda: bool(pilot.app.screen.query(ThumbnailGrid)), what="the gallery"
        )  # type: ignore[arg-type]
        tile = pilot.app.screen.query_one(ThumbnailGrid).tiles()[0]
        await wait_for(
            pilot,
            lambda: tile.image is not None,
            what="the thumbnail",
        )  # type: ignore[arg-type]

    app = make_app(config_file, start_screen="image")
    assert snap_compare(app, terminal_size=SMALL, run_before=view)
