"""Each CSS source parsed once for a set of variables (tui/stylesheet.py), while the
styles stay those Textual's own stylesheet gives: a widget type mounted later is
styled, a new theme restyles, a broken source is refused and changes nothing."""

from __future__ import annotations

import pickle
import stat
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from ollama_server import FakeOllama
from textual.app import App, ComposeResult
from textual.color import Color
from textual.css import stylesheet as textual_stylesheet
from textual.css.stylesheet import StylesheetParseError
from textual.widgets import Label, Static
from tui_helpers import make_app
from waiting import wait_for

from tui.stylesheet import RULES_FILE, CachedStylesheet, RulesOnDisk, keep_css_rules

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


# -- the rules kept between starts (RulesOnDisk) ---------------------------------------

VARIABLES = {"accent": "red", "primary": "blue"}


def parse_with(disk: RulesOnDisk, variables: dict[str, str] = VARIABLES) -> CachedStylesheet:
    sheet = CachedStylesheet(variables=variables)
    sheet.disk = disk
    sheet.add_source(BASE, read_from=("base", ""))
    sheet.add_source(LATER, read_from=("later", ""))
    sheet.parse()
    return sheet


def test_rules_kept_at_the_end_are_used_at_the_next_start(
    tmp_path: Path, parsed: Counter[str]
) -> None:
    path = tmp_path / RULES_FILE
    first = RulesOnDisk.open(path)
    css = [rule.css for rule in parse_with(first).rules]
    first.save()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert parsed == {BASE: 1, LATER: 1}

    again = RulesOnDisk.open(path)
    assert [rule.css for rule in parse_with(again).rules] == css
    assert parsed == {BASE: 1, LATER: 1}, "read from the file, not parsed again"
    mtime = path.stat().st_mtime_ns
    again.save()
    assert path.stat().st_mtime_ns == mtime, "nothing new: the file is not written again"


def test_rules_of_other_variables_are_parsed_and_replace_them(
    tmp_path: Path, parsed: Counter[str]
) -> None:
    path = tmp_path / RULES_FILE
    first = RulesOnDisk.open(path)
    parse_with(first)
    first.save()
    light = {"accent": "green", "primary": "blue"}
    other = RulesOnDisk.open(path)
    sheet = parse_with(other, light)
    assert "#008000" in sheet.rules[0].css
    other.save()
    assert parsed[BASE] == 2
    assert RulesOnDisk.open(path).variables == light


@pytest.mark.parametrize("problem", ["damaged", "group-writable", "a link", "another textual"])
def test_a_file_that_cannot_be_trusted_or_read_is_not_used_and_is_replaced(
    tmp_path: Path, parsed: Counter[str], problem: str
) -> None:
    path = tmp_path / RULES_FILE
    first = RulesOnDisk.open(path)
    parse_with(first)
    first.save()
    if problem == "damaged":
        path.write_bytes(path.read_bytes()[:100])
    elif problem == "group-writable":
        path.chmod(0o620)
    elif problem == "a link":
        real = tmp_path / "elsewhere.pickle"
        path.rename(real)
        path.symlink_to(real)
    else:
        form, _version, variables, rules = pickle.loads(path.read_bytes())
        path.write_bytes(pickle.dumps((form, "0.1.0", variables, rules)))
    disk = RulesOnDisk.open(path)
    assert disk.rules == {}
    parse_with(disk)
    assert parsed[BASE] == 2, "parsed again"
    disk.save()
    assert not path.is_symlink() and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert RulesOnDisk.open(path).rules, "replaced by a good file"


async def test_the_app_looks_the_same_drawn_with_the_kept_rules(
    ollama_server: FakeOllama, config_file: Path, tmp_path: Path
) -> None:
    """The chat screen and a dialog, drawn from parsed rules and then from the rules the
    first run kept, give the same screenshot."""
    path = tmp_path / RULES_FILE
    shots = []
    for _ in range(2):
        app = make_app(config_file)
        disk = keep_css_rules(app, path)
        assert disk is not None
        async with app.run_test(size=(100, 30)) as pilot:
            await wait_for(pilot, lambda app=app: app.models, what="models")
            await pilot.press("f1")  # the help: a screen with CSS of its own
            await pilot.pause()
            shots.append(app.export_screenshot())
        disk.save()
    assert path.exists()
    assert shots[0] == shots[1]
