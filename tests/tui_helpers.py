"""Helpers for driving the real app in Pilot tests."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path
from typing import Any, TypeVar

from textual.app import App
from textual.dom import DOMNode
from textual.pilot import Pilot
from textual.widget import Widget
from waiting import wait_for as wait_for

from engines.config import load_settings
from engines.store import Store
from tui.app import LlmPessoalApp, open_store
from tui.widgets.conversation import ConversationView, Turn

T = TypeVar("T", bound=Turn)


def make_app(config: Path, **kwargs: object) -> LlmPessoalApp:
    """The app as ``main()`` builds it, from a config file."""
    settings = load_settings(config, env={})
    store, warnings = open_store(settings)
    return LlmPessoalApp(settings, store, warnings=warnings, **kwargs)  # type: ignore[arg-type]


async def type_text(pilot: Pilot[object], text: str) -> None:
    """Put text in the focused text area (the chat prompt by default), as a paste would."""
    from textual.widgets import TextArea

    from tui.widgets.prompt import PromptInput

    focused = pilot.app.focused
    area = focused if isinstance(focused, TextArea) else pilot.app.screen.query_one(PromptInput)
    area.insert(text)
    await pilot.pause()


def screen_text(app: LlmPessoalApp) -> str:
    """Everything the terminal would show now, as plain text."""
    strips = app.screen._compositor.render_strips()
    return "\n".join(strip.text for strip in strips)


async def shows(pilot: Pilot[object], app: LlmPessoalApp, text: str) -> None:
    """Wait until ``text`` is on the screen: a widget changed since the last frame shows it
    at the next (within one frame timer, or later on a busy machine), not at once."""
    await wait_for(pilot, lambda: text in screen_text(app), what=f"{text!r} on the screen")


def db(path: Path) -> Store:
    return Store.open(path)


async def settle(seconds: float = 0.1) -> None:
    await asyncio.sleep(seconds)


def sql(database: Path | None, statement: str, args: tuple[object, ...] = ()) -> None:
    """Change the database behind the app's back (a fixture's fixed dates, say), through
    sqlite3 itself rather than the store's private transaction."""
    assert database is not None
    with contextlib.closing(sqlite3.connect(database)) as conn, conn:
        conn.execute(statement, args)


def written_over(before: list[str], update: object) -> list[str]:
    """The terminal's rows once ``update`` (a frame the app rendered) is written over
    ``before``."""
    from textual._compositor import ChopsUpdate, LayoutUpdate

    if isinstance(update, LayoutUpdate):  # the whole screen
        return ["".join(strip.text for strip in line) for line in update.strips]
    assert isinstance(update, ChopsUpdate)
    rows = [list(row) for row in before]
    for y, x1, x2 in update.spans:
        for (x, strip), end in zip(update.chops[y].items(), update.chop_ends[y], strict=False):
            if strip is None or x >= x2 or end <= x1:
                continue
            for i, char in enumerate(strip.text):
                if x1 <= x + i < x2:
                    rows[y][x + i] = char
    return ["".join(row) for row in rows]


def recorded_frames(app: App[object]) -> list[object]:
    """Each frame the app's screen renders from now on (None where nothing changed)."""
    painter = app.screen._compositor
    frames: list[object] = []
    render_update = painter.render_update

    def recorded(*args: Any, **kwargs: Any) -> object:
        frames.append(update := render_update(*args, **kwargs))
        return update

    painter.render_update = recorded  # type: ignore[method-assign,assignment]
    return frames


def shown_turns(node: DOMNode, kind: type[T]) -> list[T]:
    """The turns of ``kind`` the conversation view under ``node`` (a screen, or the app:
    its screen's) shows, in order: not those it holds hidden for the next send
    (``ConversationView.make_ready``)."""
    screen = node.screen if isinstance(node, App) else node
    view = screen.query_one(ConversationView)
    return [turn for turn in view.turns() if isinstance(turn, kind)]


def shown_turn(node: DOMNode, kind: type[T]) -> T:
    """The one turn of ``kind`` shown (the test fails if there are more, or none)."""
    [turn] = shown_turns(node, kind)
    return turn


def shown(view: ConversationView) -> list[Widget]:
    """What ``view`` shows, in order (not the turns it holds hidden for the next send)."""
    return [child for child in view.children if child.display]
