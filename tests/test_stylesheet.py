"""Each CSS source parsed once for a set of variables (tui/stylesheet.py), while the
styles stay those Textual's own stylesheet gives: a widget type mounted later is
styled, a new theme restyles, a broken source is refused and changes nothing."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from textual.app import App, ComposeResult
from textual.color import Color
from textual.css import stylesheet as textual_stylesheet
from textual.css.stylesheet import StylesheetParseError
from textual.widgets import Label, Static
from waiting import wait_for

from tui.stylesheet import CachedStylesheet

BASE = "Static { background: $accent; }"
LATER = "Label { color: $primary; }"


@pytest.fixture
def parsed(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """How many times each source was parsed, by its CSS."""
    counts: Counter[str] = Counter()
    parse = textual_stylesheet.parse

    def counting(scope: str, css: str, *args: Any, **kwargs: Any) -> Any:
        counts[css] += 1
        return parse(scope, css, *args, **kwargs)

    monkeypatch.setattr(textual_stylesheet, "parse", counting)
    return counts


def test_a_source_is_parsed_once_across_reparses_and_unchanged_variables(
    parsed: Counter[str],
) -> None:
    sheet = CachedStylesheet(variables={"accent": "red", "primary": "blue"})
    sheet.add_source(BASE, read_from=("base", ""))
    sheet.parse()
    sheet.set_variables({"accent": "red", "primary": "blue"})  # the same values again
    sheet.add_source(LATER, read_from=("later", ""))
    sheet.reparse()  # as Textual does when a widget type is first mounted
    sheet.reparse()
    assert parsed == {BASE: 1, LATER: 1}
    assert [rule.css for rule in sheet.rules] == [
        "Static {\n    background: #FF0000;\n}",
        "Label {\n    color: #0000FF;\n}",
    ]


def test_new_variables_parse_every_source_again_with_them(parsed: Counter[str]) -> None:
    sheet = CachedStylesheet(variables={"accent": "red", "primary": "blue"})
    sheet.add_source(BASE, read_from=("base", ""))
    sheet.parse()
    sheet.set_variables({"accent": "green", "primary": "blue"})
    sheet.reparse()
    assert parsed[BASE] == 2
    assert "background: #008000" in sheet.rules[0].css


def test_a_broken_source_is_refused_and_the_rules_stay_as_they_were() -> None:
    sheet = CachedStylesheet(variables={"accent": "red"})
    sheet.add_source(BASE, read_from=("base", ""))
    sheet.parse()
    before = sheet.rules
    sheet.add_source("Label { colour: nope; }", read_from=("broken", ""))
    with pytest.raises(StylesheetParseError):
        sheet.reparse()
    assert sheet.rules == before


class Later(App[None]):
    """An app that mounts a widget type with CSS of its own after it starts."""

    CSS = "Static { background: $panel; }"

    def __init__(self) -> None:
        super().__init__()
        CachedStylesheet.install(self)

    def compose(self) -> ComposeResult:
        yield Static("first", id="first")


class Styled(Label):
    DEFAULT_CSS = "Styled { color: $error; }"


async def test_in_an_app_later_widget_types_are_styled_and_a_new_theme_restyles() -> None:
    app = Later()
    async with app.run_test(size=(40, 10)) as pilot:
        assert isinstance(app.stylesheet, CachedStylesheet)
        await app.mount(Styled("later"))
        await pilot.pause()
        styled = app.query_one(Styled)
        assert styled.styles.color == Color.parse(app.get_css_variables()["error"])
        first = app.query_one("#first", Static)
        dark = first.styles.background
        app.theme = "textual-light"
        light = Color.parse(app.get_css_variables()["panel"])
        assert light != dark
        await wait_for(
            pilot, lambda: first.styles.background == light, what="the light theme's panel"
        )
