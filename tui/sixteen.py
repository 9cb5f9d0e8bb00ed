"""16-colour terminals (TERM=xterm, the Linux console): text keeps its contrast.

Rich reduces each colour to the nearest of the 16 on its own. On the light theme that puts
the muted grey of placeholders and hints on colour 7 over colour 15: light grey on white,
1.2:1 in xterm's palette. Panel borders meet the same fate and vanish. :class:`Sixteen`
reduces a cell's colours as Rich would and, where the letter (or line) would no longer
stand out from its background in xterm's and the VGA palette, takes the colour nearest the
intended one that does. Pictures drawn in half-blocks are left alone: their two colours are
pixels, not a letter on a background.
"""

from __future__ import annotations

import colorsys
from functools import lru_cache

from rich._palettes import STANDARD_PALETTE
from rich.color import Color as RichColor
from rich.color import ColorSystem
from rich.color_triplet import ColorTriplet
from rich.segment import Segment
from rich.style import Style
from textual.color import Color
from textual.filter import LineFilter

MIN_CONTRAST = 3.0
"""WCAG's ratio for large text and for the lines of a user interface: what a fix aims at."""
LINE_CONTRAST = 2.0
"""What a fixed line aims at: seen, and no louder than the frame it stands for."""
POOR = 1.5
"""Under this ratio a pair is fixed; above it Rich's choice stands (a 16-colour theme is
coarse by nature: only what would all but vanish is changed)."""

XTERM = [
    (0, 0, 0), (205, 0, 0), (0, 205, 0), (205, 205, 0), (0, 0, 238), (205, 0, 205),
    (0, 205, 205), (229, 229, 229), (127, 127, 127), (255, 0, 0), (0, 255, 0),
    (255, 255, 0), (92, 92, 255), (255, 0, 255), (0, 255, 255), (255, 255, 255),
]  # fmt: skip
"""xterm's default 16 colours; the VGA palette is Rich's (``STANDARD_PALETTE``)."""
PICTURE = frozenset("▀▄")
"""The half-blocks pictures are drawn with."""


def _luminance(rgb: tuple[int, int, int] | ColorTriplet) -> float:
    def linear(channel: int) -> float:
        c = channel / 255
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = rgb
    return 0.2126 * linear(r) + 0.7152 * linear(g) + 0.0722 * linear(b)


def contrast(a: int, b: int) -> float:
    """The lower of two palette colours' contrast ratios in xterm's and the VGA palette."""
    ratios = []
    for palette in (XTERM, [tuple(STANDARD_PALETTE[i]) for i in range(16)]):
        la, lb = _luminance(palette[a]), _luminance(palette[b])  # type: ignore[arg-type]
        ratios.append((max(la, lb) + 0.05) / (min(la, lb) + 0.05))
    return min(ratios)


def _number(color: RichColor) -> int | None:
    reduced = color.downgrade(ColorSystem.STANDARD)
    return reduced.number


GREYS = (0, 8, 7, 15)


@lru_cache(1024)
def readable(fg: RichColor, bg: RichColor, letters: bool = True) -> RichColor | None:
    """The palette colour to write ``fg`` in over ``bg``, or None when Rich's own is fine.

    Only a pair that all but vanishes is changed (under :data:`POOR`). Lines, and letters of
    a greyish colour, take the grey nearest in lightness that stands out by
    :data:`MIN_CONTRAST`; coloured letters the nearest colour that does."""
    fg_n, bg_n = _number(fg), _number(bg)
    if fg_n is None or bg_n is None or contrast(fg_n, bg_n) >= POOR:
        return None
    wanted = fg.get_truecolor()
    _hue, _lightness, saturation = colorsys.rgb_to_hls(*(c / 255 for c in wanted))
    candidates = GREYS if saturation < 0.3 or not letters else range(16)
    target = MIN_CONTRAST if letters else LINE_CONTRAST
    fits = [n for n in candidates if contrast(n, bg_n) >= target]
    if not fits:
        return None

    def distance(n: int) -> float:
        r, g, b = STANDARD_PALETTE[n]
        if candidates is GREYS:
            return abs(_luminance(STANDARD_PALETTE[n]) - _luminance(wanted))
        return float((r - wanted.red) ** 2 + (g - wanted.green) ** 2 + (b - wanted.blue) ** 2)

    return RichColor.from_ansi(min(fits, key=distance))


@lru_cache(4096)
def readable_style(style: Style, letters: bool) -> Style:
    fg, bg = style.color, style.bgcolor
    if fg is None or bg is None or fg.is_default or bg.is_default:
        return style  # the terminal's own colours: its palette is made to be read
    if style.reverse:
        better = readable(bg, fg, letters)
        return style if better is None else style + Style(bgcolor=better)
    better = readable(fg, bg, letters)
    return style if better is None else style + Style(color=better)


class Sixteen(LineFilter):
    """Each letter and line in a palette colour that stands out from its background."""

    def apply(self, segments: list[Segment], background: Color) -> list[Segment]:
        return [
            segment
            if style is None or control or not text.strip() or set(text) <= PICTURE
            else Segment(text, readable_style(style, any(c.isalnum() for c in text)), control)
            for segment in segments
            for text, style, control in (segment,)
        ]


def use_sixteen(filters: list[LineFilter], color_system: str | None) -> Sixteen | None:
    """Add :class:`Sixteen` to an app's filters when its terminal has 16 colours; it is
    returned so that a headless app (tests, whose screenshots are true colour) can turn it
    off."""
    if color_system != "standard":
        return None
    sixteen = Sixteen()
    filters.append(sixteen)
    return sixteen
