"""The conversation list loads a page at a time: scrolling or moving down loads the next
page, a search still finds the oldest conversations, and the highlight stays on the
conversation that is open."""

from __future__ import annotations

from pathlib import Path

from ollama_server import FakeOllama
from tui_helpers import make_app, screen_text, sql, wait_for

from engines.chat_types import ChatOptions
from engines.config import load_settings
from engines.store import Store
from tui.screens.chat import ChatScreen
from tui.widgets.sidebar import PAGE, ConversationList

SIZE = (120, 40)
HISTORY = 2 * PAGE + 30
"""Conversations in the database: two full pages and a part of a third."""


def fill(config: Path) -> Path:
    """``HISTORY`` conversations, "Talk 0" the oldest; the oldest holds a rare word."""
    database = load_settings(config, env={}).paths.database
    store = Store.open(database)
    try:
        for i in range(HISTORY):
            c = store.create_conversation("llama3.2:latest", ChatOptions(), f"Talk {i}")
            store.add_message(c.id, "user", "the aardvark question" if i == 0 else f"question {i}")
    finally:
        store.close()
    # one second apart, in the order they were made: "Talk N-1" is the newest
    sql(database, "UPDATE conversations SET updated_at = 1700000000 + id")
    return database


def titles(listing: ConversationList) -> list[str]:
    return [
        str(listing.get_option_at_index(i).prompt).split("\n")[0]
        for i in range(listing.option_count)
    ]


def chat(app: object) -> ChatScreen:
    screen = app.screen  # type: ignore[attr-defined]
    assert isinstance(screen, ChatScreen)
    return screen


def highlighted_title(listing: ConversationList) -> str:
    assert listing.highlighted is not None
    return titles(listing)[listing.highlighted]


async def test_the_list_loads_a_page_then_more_as_the_highlight_goes_down(
    ollama_server: FakeOllama, config_file: Path
) -> None:
    fill(config_file)
    app = make_app(config_file)
    async with app.run_test(size=SIZE) as pilot:
        listing = app.screen.query_one(ConversationList)
        await wait_for(pilot, lambda: listing.option_count > 0, what="the first page")
        # the newest conversation is open, the first page listed, nothing more yet
        assert chat(app).conversation is not None
        assert chat(app).conversation.title == f"Talk {HISTORY - 1}"
        assert listing.option_count == PAGE and listing.more
        assert titles(listing)[:2] == [f"Talk {HISTORY - 1}", f"Talk {HISTORY - 2}"]
        listing.focus()
        await pilot.press("end")  # the last loaded one: the next page comes
        await wait_for(pilot, lambda: listing.option_count == 2 * PAGE, what="the second page")
        assert highlighted_title(listing) == f"Talk {HISTORY - PAGE}"  # where it was
        await pilot.press("end")
        await wait_for(pilot, lambda: listing.option_count == HISTORY, what="the last page")
        assert not listing.more
        # every conversation once, newest first
        assert titles(listing) == [f"Talk {i}" for i in reversed(range(HISTORY))]
        # open an old one: it stays highlighted, and the list keeps what it loaded
        await pilot.press("end", "enter")
        await wait_for(
            pilot,
            lambda: chat(app).conversation is not None and chat(app).conversation.title == "Talk 0",
            what="the oldest conversation open",
        )
        assert listing.option_count == HISTORY
        assert highlighted_title(listing) == "Talk 0"
        assert "the aardvark question" in screen_text(app)


async def test_scrolling_loads_the_next_page(ollama_server: FakeOllama, config_file: Path) -> None:
    fill(config_file)
    app = make_app(config_file)
    async with app.run_test(size=SIZE) as pilot:
        listing = app.screen.query_one(ConversationList)
        await wait_for(pilot, lambda: listing.option_count == PAGE, what="the first page")
        listing.scroll_end(animate=False, immediate=True)  # the wheel, without the mouse
        await wait_for(pilot, lambda: listing.option_count == 2 * PAGE, what="the second page")
        assert listing.highlighted == 0  # scrolling moves no highlight


async def test_a_search_finds_the_oldest_and_clearing_it_keeps_it_highlighted(
    ollama_server: FakeOllama, config_file: Path
) -> None:
    fill(config_file)
    app = make_app(config_file)
    async with app.run_test(size=SIZE) as pilot:
        listing = app.screen.query_one(ConversationList)
        await wait_for(pilot, lambda: listing.option_count == PAGE, what="the first page")
        await pilot.press("ctrl+f", *"aardvark")
        await wait_for(pilot, lambda: titles(listing) == ["Talk 0"], what="the search's result")
        assert not listing.more
        await pilot.press("enter", "enter")  # to the list, then open it
        await wait_for(
            pilot,
            lambda: chat(app).conversation is not None and chat(app).conversation.title == "Talk 0",
            what="the oldest conversation open",
        )
        # the search cleared: the list goes down to the open conversation, highlighted
        await pilot.press("ctrl+f")
        for _ in "aardvark":
            await pilot.press("backspace")
        await wait_for(
            pilot, lambda: listing.option_count >= HISTORY, what="the list down to Talk 0"
        )
        assert highlighted_title(listing) == "Talk 0"
        assert titles(listing)[0] == f"Talk {HISTORY - 1}"
