"""A vertical scrollbar whose rows are drawn once each, not once per frame.

A view that follows a streaming reply scrolls at each write of it: its content grows, so
Textual's scrollbar gets a new size and position, and draws every row of itself again
through Textual's content and styles (a 2,000-token reply's frames spent 1.3-1.5 ms each
on it: 0.06 s of CPU per reply). Its thumb moves by an eighth of a cell or so, and its
rows are of a few kinds only: the track above the thumb, the track below it, the thumb,
and the thumb's ends (a glyph of eighths). Each row of a vertical bar is its own segment,
drawn alone. ``SteadyScrollBar`` works out the segments (as Textual's ``ScrollBarRender``
does, a few dozen of them) and keeps the row Textual drew for each: a frame whose rows are
all of kinds drawn before takes them as they are, and any other draws the bar as Textual
does.
"""

from __future__ import annotations

from rich.color import Color
from rich.segment import Segment
from rich.style import Style
from textual.geometry import Region, Spacing
from textual.scrollbar import ScrollBar, ScrollBarRender
from textual.strip import Strip
from textual.widget import Widget

NO_SPACE = Spacing(0, 0, 0, 0)


class SteadyScrollBar(ScrollBar):
    """Textual's vertical scrollbar, each kind of row drawn once."""

    def __init__(self, *, name: str | None = None, thickness: int = 1) -> None:
        super().__init__(vertical=True, name=name, thickness=thickness)
        self._rows_of: object = None  # what the rows kept were drawn with
        self._rows: dict[Segment, Strip] = {}  # by a row's segment: the row drawn

    def render_lines(self, crop: Region) -> list[Strip]:
        segments = self._segments()
        if segments is None:
            return super().render_lines(crop)
        drawn_with = (self.size.width, self.background_colors)
        if drawn_with != self._rows_of:
            self._rows_of, self._rows = drawn_with, {}
        rows = self._rows
        kept = [rows.get(segment) for segment in segments[crop.y : crop.bottom]]
        strips = [strip for strip in kept if strip is not None]
        if len(strips) < len(kept):
            whole = super().render_lines(self.size.region)
            if len(whole) == len(segments):
                rows.update(zip(segments, whole, strict=True))
            strips = whole[crop.y : crop.bottom]
        if crop.column_span != (0, self.size.width):
            x1, x2 = crop.column_span
            return [strip.crop(x1, x2) for strip in strips]
        return strips

    def _segments(self) -> list[Segment] | None:
        """The segment of each row, as Textual's ``ScrollBarRender`` draws them; None
        where a row is not drawn from its segment alone (a renderer of another kind, a
        bar with padding or a border, a horizontal bar)."""
        styles = self.styles
        outlined = any(edge[0] for edge in styles.outline)
        if styles.gutter != NO_SPACE or outlined or not self.vertical:
            return None
        bar = self.render()
        if type(bar) is not ScrollBarRender:
            return None
        size = self.size
        style = bar.style if isinstance(bar.style, Style) else Style.parse(str(bar.style))
        segments: list[Segment] = bar.render_bar(
            size=size.height,
            window_size=bar.window_size,
            virtual_size=bar.virtual_size,
            position=bar.position,
            vertical=True,
            thickness=size.width,
            back_color=style.bgcolor or Color.parse("#555555"),
            bar_color=style.color or Color.parse("bright_magenta"),
        ).segments
        return segments


def steady_vertical_scrollbar(view: Widget) -> ScrollBar:
    """``view``'s vertical scrollbar, a ``SteadyScrollBar``, made as Textual makes its
    own (``Widget.vertical_scrollbar``); Textual's own where that is made otherwise."""
    if not hasattr(view, "_vertical_scrollbar") or not hasattr(view.app, "_start_widget"):
        return Widget.vertical_scrollbar.fget(view)  # type: ignore[attr-defined,no-any-return]
    bar: ScrollBar | None = view._vertical_scrollbar
    if bar is not None:
        return bar
    bar = SteadyScrollBar(name="vertical", thickness=view.scrollbar_size_vertical)
    bar.display = False
    view._vertical_scrollbar = bar
    view.app._start_widget(view, bar)
    return bar
