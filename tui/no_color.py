"""NO_COLOR (https://no-color.org): the app in greys that keep each colour's lightness.

Textual honours ``NO_COLOR`` with its ``Monochrome`` filter, which weighs the gamma-encoded
red, green and blue (``0.2126 R + 0.7152 G + 0.0722 B``): a vivid pink such as the quotes'
``#f4005f`` comes out grey 59 on the dark theme's background 18, hard to read where the
colour was plain to see. :class:`Greys` takes the grey of the same relative luminance
(computed on linear light, as sRGB defines it), so that pink becomes grey 124; greys stay
as they are.
"""

from __future__ import annotations

from functools import lru_cache

from rich.color import Color as RichColor
from rich.segment import Segment
from rich.style import Style
from textual.color import Color
from textual.filter import LineFilter, Monochrome


def _linear(channel: int) -> float:
    c = channel / 255
    return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4


def _encoded(y: float) -> int:
    c = y * 12.92 if y <= 0.0031308 else 1.055 * y ** (1 / 2.4) - 0.055
    return round(max(0.0, min(1.0, c)) * 255)


@lru_cache(1024)
def grey(color: RichColor) -> RichColor:
    """The grey as light as ``color`` (relative luminance, sRGB)."""
    r, g, b = color.get_truecolor()
    if r == g == b:
        return RichColor.from_rgb(r, g, b)
    y = 0.2126 * _linear(r) + 0.7152 * _linear(g) + 0.0722 * _linear(b)
    level = _encoded(y)
    return RichColor.from_rgb(level, level, level)


@lru_cache(4096)
def grey_style(style: Style) -> Style:
    fg = None if style.color is None or style.color.is_default else grey(style.color)
    bg = None if style.bgcolor is None or style.bgcolor.is_default else grey(style.bgcolor)
    return style + Style.from_color(fg, bg)


class Greys(LineFilter):
    """Every colour to the grey of its lightness."""

    def apply(self, segments: list[Segment], background: Color) -> list[Segment]:
        return [
            Segment(text, None if style is None else grey_style(style), None)
            for text, style, _ in segments
        ]


def use_greys(filters: list[LineFilter]) -> None:
    """Put :class:`Greys` in place of Textual's ``Monochrome`` in an app's filters (there
    only when ``NO_COLOR`` is set and the theme is not the terminal's own ANSI colours)."""
    for index, line_filter in enumerate(filters):
        if isinstance(line_filter, Monochrome):
            filters[index] = Greys()
