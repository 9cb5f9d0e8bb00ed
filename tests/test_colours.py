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
