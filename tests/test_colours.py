"""Readable in every terminal's colours: each screen, in a dark and a light theme, drawn as
a 16-colour (TERM=xterm, the Linux console), a 256-colour (TERM=xterm-256color with no
COLORTERM) and a true-colour terminal would draw it: no visible character is written in its
own background's colour once the colours are reduced (what Rich does for such terminals)."""

from __future__ import annotations

from pathlib import Path

import pytest
from ollama_server import FakeOllama
from rich.color import Color, ColorSystem
from rich.style import Style
from tui_helpers import make_app, type_text, wait_for

SIZE = (120, 40)
SYSTEMS = {
    "16 colours": ColorSystem.STANDARD,
    "256 colours": ColorSystem.EIGHT_BIT,
    "true colour": ColorSystem.TRUECOLOR,
}


def reduced(color: Color | None, system: ColorSystem, default: str) -> str:
    if color is None or color.is_default:
        return default
    color = color.downgrade(system)
    if color.number is not None and system != ColorSystem.TRUECOLOR:
        return f"#{color.number}"
    return color.get_truecolor().hex


def unreadable(app: object, system: ColorSystem) -> list[str]:
    """Visible characters whose colour equals their background's in ``system`` (on a
    dialog, only the dialog's: the screen under it is faded on purpose)."""
    screen = app.screen  # type: ignore[attr-defined]
    strips = screen._compositor.render_strips()
    boxes = screen.query(".dialog-box")
    region = boxes.first().region if boxes else screen.region
    bad = []
    for y, strip in enumerate(strips):
        if not region.y <= y < region.bottom:
            continue
        for segment in strip.crop(region.x, region.right):
            text, style = segment.text, segment.style or Style()
            if segment.control or not any(c.isalnum() for c in text):
                continue  # blanks, and lines and blocks (borders that fade are by design)
            fg, bg = style.color, style.bgcolor
            if style.reverse:
                fg, bg = bg, fg
            if reduced(fg, system, "fg") == reduced(bg, system, "bg"):
                where = f"row {y}: {text.strip()[:30]!r}"
                bad.append(f"{where} ({fg and fg.name} on {bg and bg.name})")
    return bad


@pytest.mark.parametrize("theme", ["textual-dark", "textual-light"])
async def test_every_screen_is_readable_in_16_256_and_true_colours(
    ollama_server: FakeOllama, config_file: Path, theme: str
) -> None:
    ollama_server.reply = "# Title\n\nSome **bold** and `code`.\n\n- a list\n\n> a quote\n"
    app = make_app(config_file)
    async with app.run_test(size=SIZE) as pilot:
        app.theme = theme
        await wait_for(pilot, lambda: app.ollama is not None and app.ollama.online and app.models)
        await type_text(pilot, "hello")
        await pilot.press("enter")
        await wait_for(pilot, lambda: ollama_server.completed >= 1)
        await pilot.pause(0.2)
        problems: dict[str, list[str]] = {}
        for key, name in (("f2", "Chat"), ("f3", "Image"), ("f4", "Monitor"), ("f1", "Help")):
            await pilot.press(key)
            await pilot.pause(0.3)
            for label, system in SYSTEMS.items():
                bad = unreadable(app, system)
                if bad:
                    problems[f"{name}, {label}"] = bad[:5]
        assert not problems, problems


def grey(color: Color | None, default: int) -> int | None:
    """The grey level (0-255) of a colour the NO_COLOR filter left; None if it is not
    grey (a colour got through)."""
    if color is None or color.is_default:
        return default
    r, g, b = color.get_truecolor()
    return r if r == g == b else None


def contrast(a: int, b: int) -> float:
    """WCAG's contrast ratio of two greys (1 to 21)."""

    def luminance(level: int) -> float:
        c = level / 255
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    high, low = sorted((luminance(a), luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


MIN_CONTRAST = {"textual-dark": 1.8, "textual-light": 1.3}
"""The least contrast between a letter and its background under NO_COLOR. The greys keep
each colour's luminance, so a letter is exactly as far from its background as in colour:
Textual's own greys gave the dark theme's pink quotes 1.67 (grey 59 on 18; 4.5 in colour);
the light theme's Help headings (grey 185 on 216) are 1.38 in colour as well."""


def without_colour(app: object, dark: bool, least: float) -> tuple[list[str], list[str]]:
    """Characters still in colour, and visible characters too close in grey to their
    background (the terminal's own colours stand for "default": white on black, or black
    on white in a light theme); on a dialog, only the dialog's."""
    screen = app.screen  # type: ignore[attr-defined]
    boxes = screen.query(".dialog-box")
    region = boxes.first().region if boxes else screen.region
    fg_default, bg_default = (255, 0) if dark else (0, 255)
    coloured, faint = [], []
    for y, strip in enumerate(screen._compositor.render_strips()):
        if not region.y <= y < region.bottom:
            continue
        for segment in strip.crop(region.x, region.right):
            text, style = segment.text, segment.style or Style()
            if segment.control or not text.strip():
                continue
            fg, bg = grey(style.color, fg_default), grey(style.bgcolor, bg_default)
            if style.reverse:
                fg, bg = bg, fg
            where = f"row {y}: {text.strip()[:30]!r}"
            if fg is None or bg is None:
                coloured.append(f"{where} ({style.color} on {style.bgcolor})")
            elif any(c.isalnum() for c in text) and contrast(fg, bg) < least:
                faint.append(f"{where} (grey {fg} on {bg}: {contrast(fg, bg):.2f})")
    return coloured, faint


@pytest.mark.parametrize("theme", ["textual-dark", "textual-light"])
async def test_with_no_color_every_screen_is_grey_and_readable(
    ollama_server: FakeOllama, config_file: Path, theme: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """NO_COLOR=1 (https://no-color.org): no colour on any screen, and every letter still
    stands out from its background in grey."""
    monkeypatch.setenv("NO_COLOR", "1")
    ollama_server.reply = "# Title\n\nSome **bold** and `code`.\n\n- a list\n\n> a quote\n"
    app = make_app(config_file)
    async with app.run_test(size=SIZE) as pilot:
        app.theme = theme
        await wait_for(pilot, lambda: app.ollama is not None and app.ollama.online and app.models)
        await type_text(pilot, "hello")
        await pilot.press("enter")
        await wait_for(pilot, lambda: ollama_server.completed >= 1)
        await pilot.pause(0.2)
        problems: dict[str, list[str]] = {}
        for key, name in (("f2", "Chat"), ("f3", "Image"), ("f4", "Monitor"), ("f1", "Help")):
            await pilot.press(key)
            await pilot.pause(0.3)
            dark = app.current_theme.dark
            coloured, faint = without_colour(app, dark, MIN_CONTRAST[theme])
            if coloured:
                problems[f"{name}: in colour"] = coloured[:5]
            if faint:
                problems[f"{name}: faint"] = faint[:5]
        assert not problems, problems
