"""A container of auto height whose children take their own heights is arranged once
per change, not once to measure it and again to place it (``OwnHeights``); one whose
children take a share of its height is arranged at its own height, as before."""

from __future__ import annotations

import pytest
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


@pytest.mark.parametrize(
    ("column_id", "heights", "expected"),
    [
        # a child of height 50%: half of each height
        ("shared", (20, 8), [(0, 10), (0, 4)]),
        # a child aligned in the middle: lower in the taller column
        ("middle", (21, 5), [(10, 1), (2, 1)]),
    ],
)
async def test_a_column_laid_out_by_its_own_height_is_arranged_at_each_height(
    column_id: str, heights: tuple[int, int], expected: list[tuple[int, int]]
) -> None:
    app = Shares()
    async with app.run_test(size=(40, 20)) as pilot:
        await pilot.pause()
        column = app.query_one(f"#{column_id}", Column)
        placed = [column.arrange(Size(40, height)).placements[0].region for height in heights]
        assert [(region.y, region.height) for region in placed] == expected
