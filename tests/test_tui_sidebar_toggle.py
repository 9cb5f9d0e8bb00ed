"""Ctrl+B hides and shows the conversation list; below 80 columns it starts hidden and
shows over half the width when asked for (Ctrl+B, or Ctrl+F to search)."""

from __future__ import annotations

from pathlib import Path

from ollama_server import FakeOllama
from textual.widgets import Input
from tui_helpers import make_app, screen_text, wait_for

from engines.chat_types import ChatOptions
from engines.config import load_settings
from engines.store import Store
from tui.widgets.conversation import ConversationView
from tui.widgets.prompt import PromptInput
from tui.widgets.sidebar import ConversationList, Sidebar

TITLE = "Lighthouse keepers"


def fill(config: Path) -> None:
    store = Store.open(load_settings(config, env={}).paths.database)
    try:
        c = store.create_conversation("llama3.2:latest", ChatOptions(), TITLE)
        for i in range(4):
            store.add_message(c.id, "user", f"question {i}")
            store.add_message(c.id, "assistant", f"An **answer** with a list:\n\n- {i}\n- two\n")
    finally:
        store.close()


async def test_ctrl_b_hides_the_sidebar_and_shows_it_again(
    ollama_server: FakeOllama, config_file: Path
) -> None:
    fill(config_file)
    app = make_app(config_file)
    async with app.run_test(size=(120, 40)) as pilot:
        sidebar = app.screen.query_one(Sidebar)
        view = app.screen.query_one(ConversationView)
        await wait_for(pilot, lambda: "An answer with a list" in screen_text(app), what="turns")
        assert sidebar.display and TITLE in screen_text(app)
        width = view.region.width
        await pilot.press("ctrl+b")
        await wait_for(pilot, lambda: TITLE not in screen_text(app), what="the list hidden")
        assert not sidebar.display and view.region.width > width
        assert isinstance(app.focused, PromptInput)
        await pilot.press("ctrl+b")
        await wait_for(pilot, lambda: TITLE in screen_text(app), what="the list shown")
        assert sidebar.display and view.region.width == width
        assert isinstance(app.focused, ConversationList)
        assert "An answer with a list" in screen_text(app)


async def test_a_narrow_terminal_shows_the_sidebar_only_when_asked(
    ollama_server: FakeOllama, config_file: Path
) -> None:
    fill(config_file)
    app = make_app(config_file)
    async with app.run_test(size=(70, 24)) as pilot:
        sidebar = app.screen.query_one(Sidebar)
        await wait_for(pilot, lambda: "An answer with a list" in screen_text(app), what="turns")
        assert not sidebar.display and TITLE not in screen_text(app)
        await pilot.press("ctrl+b")
        await wait_for(pilot, lambda: TITLE in screen_text(app), what="the list shown")
        assert sidebar.region.width >= 30  # half the width, not a quarter
        assert isinstance(app.focused, ConversationList)
        await pilot.press("ctrl+b")
        await wait_for(pilot, lambda: not sidebar.display, what="the list hidden")
        await pilot.press("ctrl+f")
        await wait_for(pilot, lambda: sidebar.display, what="the list shown to search")
        assert isinstance(app.focused, Input) and app.focused.id == "search"
        await pilot.resize_terminal(120, 40)
        await wait_for(pilot, lambda: sidebar.region.width <= 40, what="a quarter again")
        assert sidebar.display
