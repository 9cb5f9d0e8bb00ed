"""A container of auto height whose children take their own heights is arranged once
per change, not once to measure it and again to place it (``OwnHeights``); one whose
children take a share of its height is arranged at its own height, as before."""

from __future__ import annotations

from textual.app import App, ComposeResult
from textual.containers import Vertical
from textual.geometry import Size
from textual.widgets import Static

from tui.widgets.one_layout import OwnHeights


class Column(Vertical, OwnHeights):
    DEFAULT_CSS = "Column { height: auto; }"


class Shares(App[None]):
    CSS = """
    .share { height: 50%; }
    #middle { align-vertical: middle; height: 1fr; }
    """

    def compose(self) -> ComposeResult:
        with Column(id="own"):
            yield Static("one\ntwo")
            yield Static("three", classes="fixed")
        with Column(id="shared"):
            yield Static("half", classes="share")
        with Column(id="middle"):
            yield Static("centred")


async def test_a_column_of_own_heights_is_arranged_once_for_any_height() -> None:
    app = Shares()
    async with app.run_test(size=(40, 20)) as pilot:
        await pilot.pause()
        column = app.query_one("#own", Column)
        assert column.size.height == 3
        measured = column.arrange(Size(40, 20))  # as Textual measures it: its parent's height
        placed = column.arrange(Size(40, column.size.height))  # as it places it
        assert placed is measured, "the second arrangement comes from the cache"
        assert [p.region.height for p in placed.placements] == [2, 1]


async def test_a_column_whose_child_takes_a_share_is_arranged_at_each_height() -> None:
    app = Shares()
    async with app.run_test(size=(40, 20)) as pilot:
        await pilot.pause()
        column = app.query_one("#shared", Column)
        tall = column.arrange(Size(40, 20))
        short = column.arrange(Size(40, 8))
        assert [p.region.height for p in tall.placements] == [10]
        assert [p.region.height for p in short.placements] == [4]


async def test_a_column_aligned_below_its_top_is_arranged_at_each_height() -> None:
    app = Shares()
    async with app.run_test(size=(40, 20)) as pilot:
        await pilot.pause()
        column = app.query_one("#middle", Column)
        tall = column.arrange(Size(40, 21))
        short = column.arrange(Size(40, 5))
        assert [p.region.y for p in tall.placements] == [10]
        assert [p.region.y for p in short.placements] == [2]
