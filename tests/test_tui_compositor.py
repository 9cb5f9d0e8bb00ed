"""A frame that changes part of the screen (tui/compositor.py): what it writes, laid over
what the terminal showed, is the screen drawn anew; and the widgets beside the change
are not rendered for it."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any, TypeVar

import pytest
import textual.screen
from textual._compositor import ChopsUpdate, LayoutUpdate
from textual.app import App, ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.geometry import Region
from textual.message import Message
from textual.screen import Screen
from textual.strip import Strip
from textual.widget import Widget
from textual.widgets import Footer, Input, Static
from tui_helpers import make_app, recorded_frames, written_over
from waiting import wait_for

from tui import compositor

SIZE = (80, 24)


class CountsRows:
    """Of a widget: counts the rows of its own it is asked to render (each class apart)."""

    rendered: Counter[str]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.rendered = Counter()

    def render_lines(self, crop: Region) -> list[Strip]:
        type(self).rendered["rows"] += crop.height
        return super().render_lines(crop)  # type: ignore[misc,no-any-return]


class Side(CountsRows, Static):
    """A sidebar."""


class View(CountsRows, VerticalScroll):
    """The followed view."""


class Growing(App[None]):
    CSS = "Side { width: 20; } #view { width: 1fr; }"
    BINDINGS = [("ctrl+q", "quit", "Quit")]

    def compose(self) -> ComposeResult:
        with Horizontal():
            yield Side("\n".join(f"conversation {i}" for i in range(30)))
            with View(id="view"):
                yield Static("", id="text")
        yield Footer()


def whole(app: App[None]) -> list[str]:
    return [strip.text for strip in app.screen._compositor.render_strips()]


async def grown(pilot: Any, app: App[None]) -> AsyncIterator[tuple[int, int]]:
    """Grow ``#text`` a line at a time past the view's height (the view follows it to
    its end). Each step yields (the step, the partial frames so far) once its frames are
    written over what the screen showed, with the rows each ``CountsRows`` rendered for
    them. At the end, the screen so written over is the screen drawn anew."""
    frames = recorded_frames(app)
    screen = whole(app)
    text = app.query_one("#text", Static)
    app.query_one("#view", Widget).anchor()
    lines: list[str] = []
    partial = 0
    for n in range(40):
        lines.append(f"line {n} of the reply " + "word " * (n % 9))
        text.update("\n".join(lines))
        for counted in CountsRows.__subclasses__():
            counted.rendered.clear()
        await wait_for(pilot, lambda: bool(frames), what="a frame")
        for frame in frames:
            partial += isinstance(frame, ChopsUpdate)
            screen = written_over(screen, frame) if frame is not None else screen
        frames.clear()
        yield n, partial
        await pilot.pause()
    for frame in frames:
        screen = written_over(screen, frame) if frame is not None else screen
    assert any("line 39" in row for row in screen), "the view followed the text"
    assert screen == whole(app), "the frames written one over another read as a redraw"


async def test_a_partial_frame_over_the_last_one_is_the_screen_drawn_anew() -> None:
    assert compositor.install()
    app = Growing()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        partial = 0
        async for n, so_far in grown(pilot, app):
            partial = so_far
            assert Side.rendered["rows"] == 0, "the sidebar beside the change is not rendered"
            if n > SIZE[1]:  # the text covers the view: its background shows nowhere
                assert View.rendered["rows"] == 0, "the view under its text is not rendered"
        assert partial >= 20


class Body(CountsRows, Horizontal):
    """The screen's body, beside the change and under it."""


class Turn(CountsRows, Vertical):
    """A turn that grows with its text and is covered by it."""


class Padded(App[None]):
    """As the Chat screen: a sidebar; a view with a cell of padding either side and a
    scrollbar beside its turns; a turn that grows with its text, which covers it."""

    CSS = """
    Side { width: 20; border-right: vkey $panel; }
    #view { width: 1fr; padding: 0 1; scrollbar-gutter: stable; }
    Turn { height: auto; }
    #text { padding: 0 1; }
    """

    def compose(self) -> ComposeResult:
        with Body():
            yield Side("\n".join(f"conversation {i}" for i in range(30)))
            with View(id="view"), Turn():
                yield Static("", id="text")
        yield Footer()


async def test_a_container_covered_where_a_frame_draws_is_not_rendered_for_it() -> None:
    """A turn that grows (and so is laid out again at each change) is covered by its
    text: not rendered, though the scrollbar beside it starts where it ends; nor the
    screen's body, whose only pieces of its own lie beside the change."""
    assert compositor.install()
    app = Padded()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        async for _ in grown(pilot, app):
            assert Side.rendered["rows"] == 0, "the sidebar beside the change is not rendered"
            assert Body.rendered["rows"] == 0, "the body, beside the change and under it"
            assert Turn.rendered["rows"] == 0, "the turn under its text is not rendered"


def test_the_version_checked_is_the_installed_textual() -> None:
    """The patch is applied for the Textual that runs (read without importlib.metadata,
    which would cost the start a hundredth of a second)."""
    from importlib.metadata import version

    assert compositor.textual_version() == version("textual")


class Showing(App[None]):
    """An app that shows one screen of its own."""

    def __init__(self, screen: type[Screen[None]]) -> None:
        super().__init__()
        self._screen = screen

    def on_mount(self) -> None:
        self.push_screen(self._screen())


S = TypeVar("S", bound=Screen[None])


async def shown(pilot: Any, app: App[None], screen: type[S]) -> S:
    """``app``'s screen, once it is a ``screen``."""
    await wait_for(pilot, lambda: isinstance(app.screen, screen), what="the screen")
    assert isinstance(app.screen, screen)
    return app.screen


class Soon(compositor.DrawsSoon):
    def compose(self) -> ComposeResult:
        yield Static("", id="text")


async def test_a_frame_asked_for_soon_does_not_wait_for_textuals_frame_timer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Textual draws on a timer (60 times a second): a change made just after a frame
    waits for the next tick. A reply's first and last words ask for their frame at once
    (``draw_soon``). Here the timer ticks every 3 s: the frame asked for comes at once."""
    monkeypatch.setattr(textual.screen, "UPDATE_PERIOD", 3.0)
    app = Showing(Soon)
    async with app.run_test(size=SIZE) as pilot:
        screen = await shown(pilot, app, Soon)
        frames: list[float] = []
        display = app._display

        def counted(on: Any, update: Any) -> None:
            frames.append(time.monotonic())
            display(on, update)

        monkeypatch.setattr(app, "_display", counted)
        text = app.screen.query_one("#text", Static)
        text.update("a change")
        # waited on the event loop alone: the pilot's pauses draw a frame themselves
        await wait_for(None, lambda: frames, what="a frame on the timer", timeout=15)
        text.update("a change right after a frame")
        screen.draw_soon()
        asked = time.monotonic()
        await wait_for(None, lambda: len(frames) >= 2, what="the frame asked for", timeout=15)
        assert frames[1] - asked < 1.5, "drawn at once, not at the timer's next tick (3 s)"


class Summary(App[None]):
    CSS = "Vertical { height: auto; } Static { height: auto; }"


async def test_a_line_changed_twice_around_a_frame_takes_the_height_of_its_last_text() -> None:
    """A reply that ends in the frame its turn first appears: its meta line is set ("…"),
    the screen is laid out (for another widget) before the line's own request reaches it,
    then the line gets the summary. The turn grows to show all of the summary."""
    assert compositor.install()
    app = Summary()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        turn = Vertical(Static("who"), meta := Static("…"))
        await app.screen.mount(turn)  # not laid out yet
        meta.update("… waiting")  # a first change: its layout request is pending
        app.screen._refresh_layout()  # the frame of the new turn
        summary = " ".join(f"part{i}" for i in range(30))  # three rows at 80 columns
        meta.update(summary)
        await wait_for(pilot, lambda: turn.size.height == 4, what="the turn grown")
        await wait_for(pilot, lambda: "part29" in "".join(whole(app)), what="the end shown")


class Followed(compositor.DrawsSoon):
    def compose(self) -> ComposeResult:
        with VerticalScroll(id="view"):
            yield Static("", id="text")


async def test_a_text_that_scrolls_its_followed_view_is_drawn_in_one_frame_with_the_scrollbar(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A layout gives the followed view's scrollbar its new length and position, which ask
    for a repaint of their own: Textual drew the scrollbar alone a frame later (a frame per
    write of a streamed reply). It is drawn with the layout's frame, where it belongs."""
    app = Showing(Followed)
    async with app.run_test(size=SIZE) as pilot:
        await shown(pilot, app, Followed)
        view = app.screen.query_one("#view", VerticalScroll)
        text = app.screen.query_one("#text", Static)
        view.anchor()
        lines = [f"line {n} of the reply" for n in range(80)]
        text.update("\n".join(lines[:30]))  # past the view's height: the scrollbar shows
        await wait_for(pilot, lambda: view.max_scroll_y > 0, what="a scrollbar")
        await pilot.pause(0.3)
        frames: list[object] = []
        display = app._display

        def counted(screen: Any, update: Any) -> None:
            if update is not None:  # a frame that found nothing to draw writes nothing
                frames.append(update)
            display(screen, update)

        monkeypatch.setattr(app, "_display", counted)
        for n in range(35, 80, 5):
            frames.clear()
            text.update("\n".join(lines[:n]))
            # waited on the event loop alone: the pilot's pauses draw a frame themselves
            await wait_for(None, lambda: frames, what="the frame", timeout=15)
            await asyncio.sleep(0.25)  # some 15 ticks of Textual's frame timer
            assert len(frames) == 1, "the text, the view scrolled and its scrollbar: one frame"
            assert view.scroll_y == view.max_scroll_y, "the view followed the text"
            assert lines[n - 1] in whole(app)[-1], "its last line at the bottom"


class Held(compositor.DrawsSoon):
    """A screen whose frames wait while ``holding`` (a reply on it read in a burst)."""

    holding = False

    def compose(self) -> ComposeResult:
        yield Static("", id="text")
        prompt = Input(id="prompt")
        prompt.cursor_blink = False  # a blink would be a change of the focused widget
        yield prompt

    def holds_frames(self) -> bool:
        # as the Chat screen's: never a frame that shows what is typed
        return self.holding and not self.focused_changed()


@contextlib.asynccontextmanager
async def held_screen(
    monkeypatch: pytest.MonkeyPatch, hold_s: float
) -> AsyncIterator[tuple[Held, Static, list[float]]]:
    """A settled ``Held`` screen holding its frames (``HOLD_S`` = ``hold_s``): the screen,
    its text, and the times of the frames drawn from now on."""
    monkeypatch.setattr(compositor.DrawsSoon, "HOLD_S", hold_s)
    app = Showing(Held)
    async with app.run_test(size=SIZE) as pilot:
        screen = await shown(pilot, app, Held)
        await pilot.pause(0.3)
        frames: list[float] = []
        display = app._display

        def counted(screen: Any, update: Any) -> None:
            if update is not None:  # a frame that found nothing to draw writes nothing
                frames.append(time.monotonic())
            display(screen, update)

        monkeypatch.setattr(app, "_display", counted)
        screen.holding = True
        yield screen, screen.query_one("#text", Static), frames


async def test_frames_wait_while_the_screen_holds_them_and_come_once_it_lets_go(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """While a reply on screen is read in a burst, a frame would take the interpreter from
    its reader, and hold its last words back by as long: the change waits (even one asked
    for at once, ``draw_soon``), and is drawn as soon as the burst is read."""
    async with held_screen(monkeypatch, 60.0) as (screen, text, frames):
        text.update("the turns of the message sent")
        screen.draw_soon()
        # on the event loop alone: the pilot's pauses draw a frame themselves
        await asyncio.sleep(0.5)  # some 30 ticks of Textual's frame timer
        assert not frames, "no frame while the screen holds them"
        screen.holding = False
        await wait_for(None, lambda: frames, what="the frame once let go", timeout=15)
        assert "the turns of the message sent" in "".join(whole(screen.app))


async def test_a_held_frame_is_drawn_after_hold_s_however_long_the_hold(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A burst that does not end (a server faster than this machine reads, for long)
    holds each frame ``HOLD_S`` at most: the screen still moves, a few times a second."""
    async with held_screen(monkeypatch, 0.2) as (screen, text, frames):
        for n in range(3):
            frames.clear()
            changed = time.monotonic()
            text.update(f"change {n}")
            await wait_for(None, lambda: frames, what=f"frame {n}, held", timeout=15)
            assert frames[0] - changed >= 0.19, "held its while first"
            assert f"change {n}" in "".join(whole(screen.app))


async def test_what_the_user_types_is_drawn_at_once_while_frames_are_held(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A held frame that would show a change of the focused widget (a key typed in the
    prompt while a reply streams in a burst) can be told (``focused_changed``), and is
    drawn at once by a screen that asks: typing never lags."""
    async with held_screen(monkeypatch, 60.0) as (screen, text, frames):
        prompt = screen.query_one("#prompt", Input)
        prompt.focus()
        await asyncio.sleep(0.3)  # the focus drawn (the focused widget changed)
        frames.clear()
        text.update("held")
        await asyncio.sleep(0.3)
        assert not frames, "a change elsewhere waits"
        prompt.insert_text_at_cursor("typed")
        await wait_for(None, lambda: frames, what="the key's echo", timeout=15)
        assert "typed" in "".join(whole(screen.app))


class Busy(Static):
    """A widget whose own queue is busy a while (a turn's, say, mounting its Markdown):
    a change made meanwhile reaches its screen once the queue is free."""

    class Work(Message):
        pass

    async def on_busy_work(self, _: Busy.Work) -> None:
        await asyncio.sleep(0.5)


class AfterFrame(compositor.DrawsSoon):
    def compose(self) -> ComposeResult:
        yield Busy("", id="text")
        yield Static("", id="list")


async def test_after_the_next_frame_is_after_the_frame_of_a_change_made_before(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What waits for the frame of a change (the conversation list, for a reply's last
    words) is drawn in a later frame, even when the changed widget's queue is busy and
    the screen hears of the change late: ``call_after_refresh`` would run it at once,
    and draw both in one frame."""
    app = Showing(AfterFrame)
    async with app.run_test(size=SIZE) as pilot:
        screen = await shown(pilot, app, AfterFrame)
        await pilot.pause(0.3)
        on_screen = whole(app)
        frames: list[str] = []
        display = app._display

        def drawn(on: Any, update: Any) -> None:
            nonlocal on_screen
            if update is not None:
                on_screen = written_over(on_screen, update)
                frames.append("\n".join(on_screen))
            display(on, update)

        monkeypatch.setattr(app, "_display", drawn)
        text, listing = screen.query_one("#text", Busy), screen.query_one("#list", Static)
        text.post_message(Busy.Work())
        await asyncio.sleep(0.1)  # its queue at work
        text.update("the last words")
        screen.after_next_frame(lambda: listing.update("the list"), within=30)
        # on the event loop alone: the pilot's pauses draw a frame themselves
        await wait_for(None, lambda: any("the list" in f for f in frames), what="the list")
        first = next(f for f in frames if "the last words" in f)
        assert "the list" not in first, "the list is drawn after the frame of the last words"


async def test_after_the_next_frame_runs_by_its_deadline_when_no_frame_comes() -> None:
    """Nothing to draw: what waits for a frame runs by its deadline all the same."""
    app = Showing(AfterFrame)
    async with app.run_test(size=SIZE) as pilot:
        screen = await shown(pilot, app, AfterFrame)
        await pilot.pause(0.3)
        ran: list[float] = []
        asked = time.monotonic()
        screen.after_next_frame(lambda: ran.append(time.monotonic()), within=0.5)
        await wait_for(None, lambda: ran, what="the callback", timeout=15)
        assert ran[0] - asked >= 0.45, "it waited for a frame first"
        await asyncio.sleep(0.6)
        assert len(ran) == 1, "run once"


async def test_a_move_of_the_focus_redraws_what_it_changes_and_no_more(
    ollama_server: Any, config_file: Any
) -> None:
    """Textual draws the whole screen again whenever the focus moves; here only the
    widgets it leaves and reaches are drawn again (``DrawsSoon.focused``). Through every
    stop of the Chat screen's focus, and back, the frames written over one another read
    as the screen drawn anew, and none of them is the whole screen."""
    from tui.screens.chat import ChatScreen

    app = make_app(config_file)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, ChatScreen), what="the Chat screen")
        screen = app.screen
        await pilot.pause()
        frames = recorded_frames(app)
        shown = whole(app)
        stops = []
        for key in ["tab"] * 6 + ["shift+tab"] * 6:
            before = screen.focused
            await pilot.press(key)
            await wait_for(pilot, lambda was=before: screen.focused is not was, what=f"{key} moved")
            await pilot.pause()
            stops.append(type(screen.focused).__name__)
            for frame in frames:
                assert not isinstance(frame, LayoutUpdate), f"{key} to {stops[-1]} drew it all"
                shown = written_over(shown, frame) if frame is not None else shown
            frames.clear()
            assert shown == whole(app), f"{key} to {stops[-1]}: as drawn anew"
        assert len(set(stops)) >= 3, stops
