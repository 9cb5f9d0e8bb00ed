"""Snapshots of the screens as 256- and 16-colour terminals get them (the SVG snapshots are
always true colour).

The real app runs under a pty (``tests/terminals/palette_app.py``) with TERM=xterm-256color
and no COLORTERM (256 colours), or TERM=xterm (16 colours): Rich picks the palette from
TERM, as it would over SSH. Its bytes are replayed into a terminal emulator (pyte) that
keeps each cell's colours as the terminal's palette indices they were sent as (``12`` for
``ESC[94m``, ``236`` for ``ESC[48;5;236m``, ``#rrggbb`` for true colour, which these
terminals must never get). The screen at each of the app's markers (Chat with a streamed
reply, Image with a picture, Monitor, Help), in a dark and a light theme, is compared with
its golden file in ``tests/palette_snapshots/``: the characters, then each row's colours
and attributes as runs.

Update the goldens after an intended change with ``--snapshot-update`` (as the SVG
snapshots) or ``LLM_PESSOAL_UPDATE_PALETTE=1``; each golden gets an SVG beside it, drawn
with xterm's palette, to look at (``rsvg-convert NAME.svg -o NAME.png``).
"""

from __future__ import annotations

import contextlib
import difflib
import html
import os
import re
import select
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pyte
import pytest
from ollama_server import FakeOllama
from pyte import graphics as g
from tui_helpers import sql

from engines.config import load_settings
from engines.store import Store

REPO = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).resolve().parent / "palette_snapshots"
LAUNCHER = Path(__file__).resolve().parent / "terminals" / "palette_app.py"
COLS, ROWS = 120, 40
SCREENS = ("chat", "image", "monitor", "help")
MARKER = re.compile(rb"\x1b\]7777;snapshot=(\w+)\x07")
TERMINALS = {"256": "xterm-256color", "16": "xterm"}
FIXED_TIME = 1_790_000_000.0

REPLY = """\
# Reversing

Here is a Python function that reverses a string:

```python
def reverse(text: str) -> str:
    return text[::-1]
```

| input | output |
|-------|--------|
| abc   | cba    |

> A quote, *in italics*.

- It works on **any** string.
- It does not change the original.
"""


Rows = list[list[tuple[str, str]]]
"""A screen's cells, row by row: (character, style)."""


# -- a terminal that keeps the palette indices -------------------------------------------


class PaletteScreen(pyte.Screen):
    """pyte's screen, its cells' colours kept as sent: ``"-"`` (the terminal's default),
    ``"0"``-``"15"`` (ESC[30-37m, 90-97m and 40-47m, 100-107m), ``"16"``-``"255"``
    (ESC[38;5;Nm) or ``"#rrggbb"`` (ESC[38;2;…m). Dim and blink ride in ``blink``."""

    @property
    def default_char(self) -> pyte.screens.Char:
        return super().default_char._replace(fg="-", bg="-", blink="")  # type: ignore[arg-type]

    def select_graphic_rendition(self, *attrs: int, private: bool = False) -> None:
        if private:
            return
        cur = self.cursor.attrs._asdict()
        params = list(attrs) or [0]
        i = 0
        while i < len(params):
            p = params[i]
            i += 1
            if p == 0:
                cur.update(self.default_char._asdict())
            elif p in (38, 48, 58):
                kind = params[i] if i < len(params) else None
                if kind == 5 and i + 1 < len(params):
                    value = str(params[i + 1])
                    i += 2
                elif kind == 2 and i + 3 < len(params):
                    value = "#{:02x}{:02x}{:02x}".format(*params[i + 1 : i + 4])
                    i += 4
                else:
                    break
                if p != 58:
                    cur["fg" if p == 38 else "bg"] = value
            elif 30 <= p <= 37:
                cur["fg"] = str(p - 30)
            elif 90 <= p <= 97:
                cur["fg"] = str(p - 90 + 8)
            elif 40 <= p <= 47:
                cur["bg"] = str(p - 40)
            elif 100 <= p <= 107:
                cur["bg"] = str(p - 100 + 8)
            elif p == 39:
                cur["fg"] = "-"
            elif p == 49:
                cur["bg"] = "-"
            elif p == 2:
                cur["blink"] = "".join(sorted(set(cur["blink"]) | {"d"}))
            elif p == 5:
                cur["blink"] = "".join(sorted(set(cur["blink"]) | {"k"}))
            elif p == 22:
                cur["bold"] = False
                cur["blink"] = cur["blink"].replace("d", "")
            elif p == 25:
                cur["blink"] = cur["blink"].replace("k", "")
            elif p in g.TEXT:
                name = g.TEXT[p]
                cur[name[1:]] = name.startswith("+")
        self.cursor.attrs = self.cursor.attrs._replace(**cur)


def style_of(cell: object) -> str:
    """A cell's colours and attributes: ``fg/bg`` and ``+`` letters (bold, dim, italic,
    underline, reverse, strike, blink)."""
    c = cell
    flags = "".join(
        letter
        for letter, on in (
            ("b", c.bold),  # type: ignore[attr-defined]
            ("d", "d" in c.blink),  # type: ignore[attr-defined]
            ("i", c.italics),  # type: ignore[attr-defined]
            ("u", c.underscore),  # type: ignore[attr-defined]
            ("r", c.reverse),  # type: ignore[attr-defined]
            ("s", c.strikethrough),  # type: ignore[attr-defined]
            ("k", "k" in c.blink),  # type: ignore[attr-defined]
        )
        if on
    )
    return f"{c.fg}/{c.bg}" + (f"+{flags}" if flags else "")  # type: ignore[attr-defined]


def rows_of(screen: PaletteScreen) -> list[list[tuple[str, str]]]:
    """Each row's cells as (character, style); "" for the right half of a wide one."""
    return [
        [(screen.buffer[y][x].data, style_of(screen.buffer[y][x])) for x in range(screen.columns)]
        for y in range(screen.lines)
    ]


def golden_text(rows: list[list[tuple[str, str]]], title: str) -> str:
    """The golden file: a header, the characters, then each row's styles as runs."""
    lines = [
        f"# {title}",
        "# The characters, then each row's colours as runs of cells: fg/bg[+attrs]*count.",
        "# Colours are palette indices as sent (0-15 ANSI, 16-255 xterm's), '-' the",
        "# terminal's default, #rrggbb true colour. Attributes: b bold, d dim, i italic,",
        "# u underline, r reverse, s strike, k blink.",
        "text",
    ]
    for y, row in enumerate(rows):
        lines.append(f"{y:3d} |{''.join(ch for ch, _ in row)}|")
    lines.append("styles")
    for y, row in enumerate(rows):
        runs: list[list[object]] = []
        for _, style in row:
            if runs and runs[-1][0] == style:
                runs[-1][1] = int(runs[-1][1]) + 1  # type: ignore[call-overload]
            else:
                runs.append([style, 1])
        lines.append(f"{y:3d} " + " ".join(f"{s}*{n}" for s, n in runs))
    return "\n".join(lines) + "\n"


# -- pictures for people ------------------------------------------------------------------

XTERM_16 = [
    "#000000", "#cd0000", "#00cd00", "#cdcd00", "#0000ee", "#cd00cd", "#00cdcd", "#e5e5e5",
    "#7f7f7f", "#ff0000", "#00ff00", "#ffff00", "#5c5cff", "#ff00ff", "#00ffff", "#ffffff",
]  # fmt: skip
"""xterm's default 16 colours (its XTerm resources)."""
DEFAULT_FG, DEFAULT_BG = "#000000", "#ffffff"
"""xterm's own default colours: black on white."""


def xterm_rgb(token: str, default: str) -> str:
    if token == "-":
        return default
    if token.startswith("#"):
        return token
    n = int(token)
    if n < 16:
        return XTERM_16[n]
    if n < 232:
        n -= 16
        levels = [0, 95, 135, 175, 215, 255]
        r, gr, b = levels[n // 36], levels[(n // 6) % 6], levels[n % 6]
        return f"#{r:02x}{gr:02x}{b:02x}"
    level = 8 + 10 * (n - 232)
    return f"#{level:02x}{level:02x}{level:02x}"


def _blend(a: str, b: str) -> str:
    ra, ga, ba = (int(a[i : i + 2], 16) for i in (1, 3, 5))
    rb, gb, bb = (int(b[i : i + 2], 16) for i in (1, 3, 5))
    return f"#{(ra + rb) // 2:02x}{(ga + gb) // 2:02x}{(ba + bb) // 2:02x}"


def render_svg(rows: list[list[tuple[str, str]]], title: str) -> str:
    """The screen as xterm would paint it with its default palette (an SVG)."""
    cw, ch = 9, 18
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{COLS * cw}" height="{ROWS * ch}" '
        f'font-family="DejaVu Sans Mono, monospace" font-size="15">',
        f"<title>{html.escape(title)}</title>",
        f'<rect width="100%" height="100%" fill="{DEFAULT_BG}"/>',
    ]
    for y, row in enumerate(rows):
        x = 0
        while x < len(row):
            style = row[x][1]
            end = x
            while end < len(row) and row[end][1] == style:
                end += 1
            colours, _, flags = style.partition("+")
            fg_token, bg_token = colours.split("/")
            fg, bg = xterm_rgb(fg_token, DEFAULT_FG), xterm_rgb(bg_token, DEFAULT_BG)
            if "r" in flags:
                fg, bg = bg, fg
            if "d" in flags:
                fg = _blend(fg, bg)
            out.append(
                f'<rect x="{x * cw}" y="{y * ch}" width="{(end - x) * cw}" height="{ch}" '
                f'fill="{bg}"/>'
            )
            for cx in range(x, end):
                text = row[cx][0]
                if not text.strip():
                    continue
                if text == "▀":  # a half block: paint it, fonts leave gaps
                    out.append(
                        f'<rect x="{cx * cw}" y="{y * ch}" width="{cw}" height="{ch // 2}" '
                        f'fill="{fg}"/>'
                    )
                    continue
                weight = ' font-weight="bold"' if "b" in flags else ""
                italic = ' font-style="italic"' if "i" in flags else ""
                deco = ' text-decoration="underline"' if "u" in flags else ""
                out.append(
                    f'<text x="{cx * cw}" y="{y * ch + 14}" fill="{fg}"{weight}{italic}{deco}>'
                    f"{html.escape(text)}</text>"
                )
            x = end
    out.append("</svg>")
    return "\n".join(out) + "\n"


# -- running the app on a pty -------------------------------------------------------------


def seed_picture(config: Path) -> None:
    """One image in the gallery (a gradient), so the Image screen and the Monitor show it."""
    from PIL import Image

    from engines.images import ImageParameters, save_png

    settings = load_settings(config, env={})
    image = Image.new("RGB", (64, 64))
    image.putdata([((x * 4) % 256, (y * 4) % 256, 90) for y in range(64) for x in range(64)])
    params = ImageParameters("a gradient", "", 64, 64, 20, 7.5, 3, "Euler a", "tiny")
    path = save_png(image, settings.paths.outputs, params, datetime.fromtimestamp(FIXED_TIME))
    store = Store.open(settings.paths.database)
    store.add_image(path, params, 1.5)
    store.close()
    sql(store.path, "UPDATE images SET created_at = ?", (FIXED_TIME,))


def run_on_pty(config: Path, theme: str, term: str, cwd: Path) -> dict[str, Rows]:
    """The app's screens as the terminal saw them at each marker."""
    import pty

    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("COLORTERM", "NO_COLOR", "FORCE_COLOR", "TEXTUAL_COLOR_SYSTEM", "TMUX")
        and not k.startswith(("TEXTUAL", "KITTY", "TERM_PROGRAM"))
    }
    env.update(TERM=term, PYTHONPATH=str(REPO), LANG="C.UTF-8", COLUMNS="", LINES="")
    env.pop("COLUMNS")
    env.pop("LINES")
    master, slave = pty.openpty()
    import fcntl
    import struct
    import termios

    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLS, 0, 0))
    proc = subprocess.Popen(
        [sys.executable, str(LAUNCHER), "--config", str(config), "--theme", theme],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
        cwd=cwd,
        start_new_session=True,
    )
    os.close(slave)
    screen = PaletteScreen(COLS, ROWS)
    stream = pyte.ByteStream(screen)
    shots: dict[str, Rows] = {}
    pending = b""
    raw = bytearray()
    deadline = time.monotonic() + 240
    try:
        while len(shots) < len(SCREENS) and time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                data = os.read(master, 65536)
            except OSError:
                break
            if not data:
                break
            raw += data
            pending += data
            while (match := MARKER.search(pending)) is not None:
                stream.feed(pending[: match.start()])
                shots[match.group(1).decode()] = rows_of(screen)
                pending = pending[match.end() :]
            # keep a possible marker's start for the next read
            cut = pending.rfind(b"\x1b")
            if cut == -1:
                stream.feed(pending)
                pending = b""
            else:
                stream.feed(pending[:cut])
                pending = pending[cut:]
    finally:
        if proc.poll() is None:
            with contextlib.suppress(OSError):
                os.write(master, b"\x11")  # Ctrl+Q
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        os.close(master)
    if len(shots) < len(SCREENS):
        tail = raw[-3000:].decode(errors="replace")
        raise AssertionError(
            f"the app reached {sorted(shots)} of {SCREENS}; its last output:\n{tail}"
        )
    return shots


VARYING = (
    re.compile(r"127\.0\.0\.1:(\d+)"),  # the fake server's port
    re.compile(r"(\d\d \w{3} \d\d:\d\d)"),  # the conversation's date (made now)
    re.compile(r"first token (\d+\.\d\d) s"),  # measured by the client
)


def normalised(rows: list[list[tuple[str, str]]]) -> list[list[tuple[str, str]]]:
    """What differs between runs (``VARYING``) as 0s and xs, cell for cell (the styles
    stay as drawn)."""

    def blank(match: re.Match[str]) -> str:
        whole, part = match.group(0), match.group(1)
        fixed = "".join("0" if c.isdigit() else "x" if c.isalpha() else c for c in part)
        start = match.start(1) - match.start(0)
        return whole[:start] + fixed + whole[start + len(part) :]

    out = []
    for row in rows:
        line = "".join(ch or "\0" for ch, _ in row)
        for pattern in VARYING:
            line = pattern.sub(blank, line)
        out.append(
            [("" if c == "\0" else c, style) for c, (_, style) in zip(line, row, strict=True)]
        )
    return out


def updating(request: pytest.FixtureRequest) -> bool:
    flag = False
    with contextlib.suppress(ValueError):
        flag = bool(request.config.getoption("--snapshot-update"))
    return flag or os.environ.get("LLM_PESSOAL_UPDATE_PALETTE", "") not in ("", "0")


COLOURS = {
    "256": "256 colours (TERM=xterm-256color, no COLORTERM)",
    "16": "16 colours (TERM=xterm)",
}


def faint_letters(rows: list[list[tuple[str, str]]]) -> list[str]:
    """Letters on a 16-colour screen whose colour and background are under 1.5:1 in xterm's
    palette (light grey on white, say); the terminal's default colours are its own affair."""
    from tui.sixteen import POOR, contrast

    faint = []
    for y, row in enumerate(rows):
        for x, (char, style) in enumerate(row):
            fg, _, rest = style.partition("/")
            bg = rest.split("+")[0]
            if "r" in rest.partition("+")[2]:
                fg, bg = bg, fg
            palette = fg.isdigit() and bg.isdigit() and int(fg) < 16 and int(bg) < 16
            if char.isalnum() and palette and contrast(int(fg), int(bg)) < POOR:
                faint.append(f"{char!r} at {x},{y} ({fg} on {bg})")
    return faint[:10]


@pytest.mark.parametrize("colours", ["256", "16"])
@pytest.mark.parametrize("theme", ["textual-dark", "textual-light"])
def test_screens_in_256_and_16_colours_match_their_goldens(
    ollama_server: FakeOllama,
    make_config: object,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    theme: str,
    colours: str,
) -> None:
    ollama_server.reply = REPLY
    ollama_server.reported_durations = (120_000_000, 1_000_000_000)  # 50 tok/s
    config = make_config(  # type: ignore[operator]
        ui={"theme": theme}, diffusion={"model": "tiny-model", "preview": "halfblock"}
    )
    seed_picture(config)
    shots = run_on_pty(config, theme, TERMINALS[colours], tmp_path)
    update = updating(request)
    GOLDEN.mkdir(exist_ok=True)
    failures = []
    for name in SCREENS:
        title = f"llm-pessoal {name} screen, {theme}, {COLOURS[colours]}, {COLS}x{ROWS}"
        rows = normalised(shots[name])
        got = golden_text(rows, title)
        stem = f"{name}-{theme}-{colours}"
        path = GOLDEN / f"{stem}.txt"
        truecolour = [s for row in rows for _, s in row if "#" in s]
        assert not truecolour, f"{stem}: true colour sent to a {colours}-colour terminal"
        if colours == "16":
            faint = faint_letters(rows)
            assert not faint, f"{stem}: letters that all but vanish in xterm's palette: {faint}"
        if update:
            path.write_text(got, encoding="utf-8")
            (GOLDEN / f"{stem}.svg").write_text(render_svg(rows, title), encoding="utf-8")
            continue
        want = path.read_text(encoding="utf-8") if path.exists() else ""
        if got != want:
            (tmp_path / f"{stem}.svg").write_text(render_svg(rows, title), encoding="utf-8")
            diff = difflib.unified_diff(
                want.splitlines(), got.splitlines(), "golden", "now", n=0, lineterm=""
            )
            failures.append(
                f"{stem}: differs (now drawn: {tmp_path / stem}.svg)\n" + "\n".join(list(diff)[:30])
            )
    assert not failures, "\n\n".join(failures)
