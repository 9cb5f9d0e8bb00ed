"""Markdown drawn by Rich in a few settled pieces and a live tail.

A streamed reply grows a token at a time. Textual's Markdown widget keeps a widget
per block, and every update lays out and redraws all of them; here the text is cut
at block boundaries (a blank line outside a code fence) into pieces of a few
kilobytes that are rendered once, and only the tail is rendered again as it grows.
Raw HTML is shown as text: a model's reply is displayed as written, never hidden.
"""

from __future__ import annotations

import io
import re
import time
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Self

from markdown_it import MarkdownIt
from rich.console import Console, ConsoleOptions, RenderResult
from rich.markdown import Markdown as RichMarkdown
from rich.measure import Measurement
from rich.segment import Segment
from rich.style import Style as RichStyle
from textual._context import active_app
from textual.app import ComposeResult
from textual.app import RenderResult as Drawn
from textual.containers import Vertical
from textual.css.styles import RulesMap
from textual.geometry import Region, Size
from textual.reactive import Reactive
from textual.strip import Strip
from textual.style import Style
from textual.visual import RenderOptions, RichVisual, Visual, VisualType
from textual.widget import Widget
from textual.widgets import Static

from tui.widgets.one_layout import OneLayout, OwnHeights

SETTLE_AT = 2000
"""Characters of finished blocks gathered before they become a piece of their own."""
FIRST_PIECES = 1
"""Pieces drawn at once of a text that makes several at once (a long text opened, or a
reply read faster than it was drawn): its end, which is on screen (the last piece holds
at least ``SETTLE_AT`` characters, some 25-50 rows); the pieces before it are drawn after
the first frame, a few at a time."""
EARLIER_AFTER_S = 0.1
EARLIER_BATCH = 8000
"""Characters of the earlier pieces drawn per frame: a long text (a 20,000-token reply is
130 KB) would keep the app from answering keys for a second if drawn at once."""

_PARSER = MarkdownIt("commonmark", {"html": False}).enable("strikethrough").enable("table")


class LiteralMarkdown(RichMarkdown):
    """Rich's Markdown, with raw HTML kept as text instead of dropped."""

    _settings: ClassVar[dict[tuple[tuple[str, Any], ...], dict[str, Any]]] = {}
    """Rich's attributes by keyword arguments: its ``__init__`` builds a parser of its own
    each time (0.28 ms, twice per write of a streaming reply), which this one would drop."""

    def __init__(self, markup: str, **kwargs: Any) -> None:
        key = tuple(sorted(kwargs.items()))
        settings = self._settings.get(key)
        if settings is None:
            super().__init__("", **kwargs)
            settings = self._settings[key] = dict(vars(self))
        else:
            vars(self).update(settings)
        self.markup = markup
        self.parsed = _PARSER.parse(markup)

    @property
    def spaced_after(self) -> bool:
        """Whether Rich leaves a blank line between this text's last block and a block
        after it (it does after every block but a horizontal rule)."""
        last = next((t for t in reversed(self.parsed) if t.level == 0), None)
        return last is not None and last.type != "hr"


class Rendered:
    """A renderable drawn once per width. Textual renders a Static's content twice per
    update (once to measure its height, once to draw it); Markdown with highlighted code
    is the costly part of a streamed reply, so its segments are kept and given again."""

    def __init__(self, renderable: LiteralMarkdown, *, spaced: bool = False) -> None:
        self.renderable = renderable
        self.spaced = spaced
        """A blank line first, as Rich would put between this piece and the one before."""
        self._key: tuple[object, ...] | None = None
        self._segments: list[Segment] = []
        self._rows = 0  # the line ends in _segments
        self._ends_row = True  # whether _segments end with one (or are none)
        self._strips: dict[tuple[object, ...], list[Strip]] = {}  # by style: see strips()

    @property
    def markup(self) -> str:
        return self.renderable.markup

    @property
    def drawn_rows(self) -> int | None:
        """The rows it was last drawn in; None where it ends without a line end (the next
        part's first row is its last)."""
        return self._rows if self._ends_row else None

    def rows(self, console: Console, options: ConsoleOptions) -> int | None:
        """``drawn_rows`` at ``options``."""
        self.__rich_console__(console, options)
        return self.drawn_rows

    def strips(
        self, widget: Widget, console: Console, options: ConsoleOptions, style: RichStyle
    ) -> list[Strip]:
        """Its rows as Textual's ``RichVisual`` draws them in ``widget`` at ``options`` on
        ``style``, kept (for one style at a time) until the options change."""
        self.__rich_console__(console, options)
        link_style = widget.link_style if widget.auto_links else None
        key = (style, link_style)
        strips = self._strips.get(key)
        if strips is None:
            segments = console.render(widget.post_render(self, style), options)
            lines = Segment.split_and_crop_lines(
                segments, options.max_width, include_new_lines=False, pad=False
            )
            strips = [Strip(line) for line in lines]
            self._strips = {key: strips}
        return strips

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        # Markdown ignores the height it is given; everything else it reads is in the key
        key = (
            options.max_width,
            options.min_width,
            options.justify,
            options.overflow,
            options.no_wrap,
            options.highlight,
            options.markup,
        )
        if key != self._key:
            segments = self._segments = list(console.render(self.renderable, options))
            if self.spaced and segments:
                segments.insert(0, Segment.line())
            self._key = key
            self._rows = sum(text.count("\n") for text, _, _ in segments)
            last = next((text for text, _, _ in reversed(segments) if text), "\n")
            self._ends_row = last.endswith("\n")
            self._strips = {}
        return self._segments

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        return Measurement.get(console, options, self.renderable)


class Joined:
    """The growing tail: its finished blocks, each drawn once (``Rendered``), then the
    block still being written, drawn again as it grows. The segments are those Rich
    gives for the text in one piece (each part begins with the blank line Rich puts
    between two blocks, see ``spaced``)."""

    def __init__(self, parts: list[Rendered]) -> None:
        self.parts = parts

    @property
    def markup(self) -> str:
        return "".join(part.markup for part in self.parts)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        for part in self.parts:
            yield from part.__rich_console__(console, options)

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        measures = [Measurement.get(console, options, part) for part in self.parts]
        return Measurement(max(m.minimum for m in measures), max(m.maximum for m in measures))


_RULE = re.compile(r" {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*")
"""A line that may be a thematic break (a horizontal rule)."""


def spaced_after(markup: str) -> bool:
    """``LiteralMarkdown(markup).spaced_after``, parsed only where it may be False: where
    the last line is a rule, or a link reference definition (which makes no block) may
    leave one last. Opening a long reply read the whole piece before the one on screen
    (2,000 characters and more) to learn only this: 2-5 ms of the frame."""
    body = markup.rstrip()
    last_line = body[max(body.rfind("\n"), body.rfind("\r")) + 1 :]
    if body and not _RULE.fullmatch(last_line) and not _REFERENCE.search(markup):
        return True
    return LiteralMarkdown(markup).spaced_after


FRESH_BLOCK_EXCLUDED = frozenset(" \t\n-*+>|[0123456789")
"""First characters of a line, after a blank line, that may go on with the block before
it (a list item, an indented or quoted line, a table row), or begin a link reference
that text above may use: the tail is never cut before such a line."""


_REFERENCE = re.compile(r"^ {0,3}\[[^\]\n]+\]:", re.MULTILINE)
"""A line that may define a link reference (``[name]: url``)."""


WARM_LANGUAGES = ("python", "bash", "json", "javascript")
"""Code languages whose highlighters are loaded ahead (see ``warm_up``)."""


GIVE_WAY_S = 0.01
"""How often a warm-up that gives way asks again whether it may go on."""


def warm_up(give_way: Callable[[], bool] | None = None) -> None:
    """Render a code block of each language in ``WARM_LANGUAGES`` and drop the result.

    The first code block of a language loads its highlighter (pygments imports a module
    per language: 0.1 s for Python on a small machine), which would otherwise stall the
    first reply, or the first conversation opened, that shows one. Run it in a thread,
    once the app is idle. Before each language it waits while ``give_way()`` says so (a
    reply is starting: the thread would take turns with its request and first words)."""
    console = Console(width=80, file=io.StringIO(), color_system="truecolor")
    for language in WARM_LANGUAGES:
        while give_way is not None and give_way():
            time.sleep(GIVE_WAY_S)
        list(console.render(render(f"```{language}\nx\n```\n"), console.options))


def render(markup: str, *, spaced: bool = False) -> Rendered:
    return Rendered(LiteralMarkdown(markup, code_theme="monokai", hyperlinks=True), spaced=spaced)


def _drawn_rows(parts: list[Rendered]) -> int | None:
    """The rows ``parts`` were last drawn in, together; None where one ends mid-row."""
    rows = 0
    for part in parts:
        part_rows = part.drawn_rows
        if part_rows is None:
            return None
        rows += part_rows
    return rows


class Reserved:
    """A streaming tail with blank rows under it, up to a multiple of ``step`` rows of the
    whole text (the settled pieces ``above`` it and the tail): a token that starts a row
    fills one of them, and only the tail is drawn again; the screen is laid out, and the
    followed view scrolled, once per ``step`` rows (``ConversationView.reserve_rows``).
    Counted over the whole text, a piece that settles out of the tail (its rows move
    from the tail to the piece) leaves the text's height as it was: counted over the tail
    alone, each settling moved the followed view by up to ``step`` rows."""

    def __init__(
        self, inner: Rendered | Joined, step: int, above: Sequence[Rendered | Joined] = ()
    ) -> None:
        self.inner = inner
        self.step = step
        self.above = above
        self._above_rows: tuple[int, int] | None = None  # (width, rows): pieces do not change

    @property
    def markup(self) -> str:
        return self.inner.markup

    def blank_rows(self, rows: int, console: Console, options: ConsoleOptions) -> int:
        """The blank rows under a tail of ``rows`` rows drawn at ``options`` (where the
        pieces above are drawn at the same)."""
        if self.step <= 1:
            return 0
        width = options.max_width
        if self._above_rows is None or self._above_rows[0] != width:
            above = 0
            for piece in self.above:
                for part in PartsVisual.parts_of(piece):
                    above += part.rows(console, options) or 0
            self._above_rows = (width, above)
        return -(self._above_rows[1] + rows) % self.step

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        rows = 0
        ends_row = True
        for segment in self.inner.__rich_console__(console, options):
            if isinstance(segment, Segment) and segment.text:  # always a Segment here
                rows += segment.text.count("\n")
                ends_row = segment.text.endswith("\n")
            yield segment
        if not ends_row:
            rows += 1
            yield Segment.line()
        for _ in range(self.blank_rows(rows, console, options)):
            yield Segment.line()

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        return self.inner.__rich_measure__(console, options)


class PartsVisual(Visual):
    """Textual's ``RichVisual`` of a ``Rendered``, ``Joined`` or ``Reserved``, measured and
    drawn a part at a time, each part's rows kept: a streaming tail of 2,000 characters
    and more was split into rows, styled and counted anew up to three times a frame (to
    learn whether its height changed, to lay it out, to draw it), though only its last
    block had changed (0.2 s of CPU per 2,000-token reply went to it). A settled piece
    made of the tail's parts shares their rows: Textual keeps the very strips given here.
    Where a part does not end with a line end (never seen: Rich ends Markdown with one),
    the parts are drawn as one, by ``RichVisual``."""

    def __init__(self, widget: Block, content: Rendered | Joined | Reserved) -> None:
        self._widget = widget
        self._content = content
        self._whole = RichVisual(widget, content)

    @staticmethod
    def parts_of(content: Rendered | Joined | Reserved) -> list[Rendered]:
        inner = content.inner if isinstance(content, Reserved) else content
        return list(inner.parts) if isinstance(inner, Joined) else [inner]

    def get_optimal_width(self, rules: RulesMap, container_width: int) -> int:
        return self._whole.get_optimal_width(rules, container_width)

    def get_height(self, rules: RulesMap, width: int) -> int:
        app = active_app.get()
        # the options of RichVisual.get_height
        options = app.console_options.update_width(width).update(highlight=False)
        rows = 0
        for part in self.parts_of(self._content):
            part_rows = part.rows(app.console, options)
            if part_rows is None:
                return self._whole.get_height(rules, width)
            rows += part_rows
        return rows + self._blank_rows(rows, options)

    def render_strips(
        self, width: int, height: int | None, style: Style, options: RenderOptions
    ) -> list[Strip]:
        app = active_app.get()
        # the options of RichVisual.render_strips
        console_options = app.console_options.update(
            highlight=False, width=width, height=height
        ).update_width(width)
        rich_style = style.rich_style
        strips: list[Strip] = []
        for part in self.parts_of(self._content):
            if part.rows(app.console, console_options) is None:
                return self._whole.render_strips(width, height, style, options)
            strips.extend(part.strips(self._widget, app.console, console_options, rich_style))
        strips.extend([Strip([])] * self._blank_rows(len(strips), console_options))
        return strips if height is None else strips[:height]

    def _blank_rows(self, rows: int, options: ConsoleOptions) -> int:
        """The blank rows under ``rows`` rows of a ``Reserved`` tail (or 0)."""
        content = self._content
        if not isinstance(content, Reserved):
            return 0
        return content.blank_rows(rows, active_app.get().console, options)


class Block(Static, OneLayout):
    """A piece of Markdown (or the growing tail)."""

    auto_links: Reactive[bool] = Reactive(False)
    """Textual's ``auto_links`` styles the links it made clickable (``@click``) under the
    mouse; Rich's Markdown makes none (a link is the terminal's own), and each drawing went
    through every segment of every row for them."""

    def render(self) -> Drawn:
        content = self.content
        if isinstance(content, Rendered | Joined | Reserved):
            return PartsVisual(self, content)
        return super().render()

    _keep_rows = 0
    """The rows at its top that its last update left as they were (see ``update``)."""

    def update(
        self,
        content: VisualType = "",
        *,
        layout: bool = True,
        keep_rows: int = 0,
        blank_from: int | None = None,
    ) -> None:
        """As Textual's; ``keep_rows``: the rows at the top that ``content`` draws as the
        content before it did (a streaming tail whose finished blocks are the same): their
        styled rows are kept, and only the rows below are drawn again. Textual drew every
        row of the tail anew at each write, some 30-50 rows a frame, for the few at its
        end that changed. ``blank_from``: the rows from there on are blank before and
        after (a ``Reserved`` tail's, at the same height): kept too (a tail kept two
        thirds of the view high drew some ten blank rows again at each write)."""
        if layout:  # laid out anew: every row is drawn again
            blank_from = None
        kept = self._rows_kept(keep_rows, blank_from)
        super().update(content, layout=layout)
        self._keep_rows = keep_rows if kept else 0
        if kept:
            self._restore(kept)
            width, height = self.outer_size
            end = height if blank_from is None else min(height, blank_from)
            if end > keep_rows:  # the screen: the rows between, unless laid out anew
                changed = Region(0, keep_rows, width, end - keep_rows)
                self._repaint_regions = {changed}
                self._dirty_regions = {changed}
        if not self._is_mounted:
            # Textual's refresh of a widget not mounted yet keeps what it cached of its
            # content (its visual, its height): a tail measured before its Mount was
            # handled (laying out the text around it does), then written to again (a
            # reply's first words, then the rest), kept the height of its first words
            # for good, and the rest stayed cut off
            self._layout_cache.clear()
            self.clear_cached_dimensions()
            self._set_dirty()
        if self.is_attached:
            # handed to the screen now: Textual hands a refresh over once this block's
            # own messages are done (when it is idle), and a reply's first words missed
            # the next frame for it. (Textual's compositor places a widget only once it
            # is mounted: before that, this asks for a layout that leaves it out, and the
            # one after its Mount draws it.)
            self._check_refresh()

    def _size_updated(
        self, size: Size, virtual_size: Size, container_size: Size, layout: bool = True
    ) -> bool:
        # a tail that grew (or lost its blank rows) at the width it had: the rows its last
        # update kept are drawn as they were (Textual draws every row of a resized widget)
        keep, self._keep_rows = self._keep_rows, 0
        kept = self._rows_kept(keep) if size.width == self._size.width else {}
        resized = super()._size_updated(size, virtual_size, container_size, layout)
        if kept:
            self._restore(kept)
        return resized

    def _rows_kept(self, rows: int, blank_from: int | None = None) -> dict[int, Strip]:
        """Of the styled rows Textual keeps for this block, those above ``rows`` (and from
        ``blank_from`` on), where its rows are its content's (nothing drawn above it)."""
        styles = self.styles
        if (
            not (rows or blank_from is not None)
            or styles.padding.top
            or styles.border_top[0]
            or styles.outline_top[0]
            or self.border_title is not None
        ):
            return {}
        cache = self._styles_cache
        dirty = cache._dirty_lines
        below = blank_from if blank_from is not None else self.outer_size.height
        return {
            y: strip
            for y, strip in cache._cache.items()
            if (y < rows or y >= below) and y not in dirty
        }

    def _restore(self, kept: dict[int, Strip]) -> None:
        cache = self._styles_cache
        cache._cache.update(kept)
        cache._dirty_lines.difference_update(kept)

    def height_changes(self, content: Rendered | Joined | Reserved) -> bool:
        """Whether ``content`` would change this block's height (and so the layout of
        the screen). A token that lengthens the last line only needs this block drawn
        again; the rendering is kept for the drawing (see ``Rendered``)."""
        width = self.size.width
        if not width or self._layout_required:
            return True
        visual = PartsVisual(self, content)
        # measured as Textual's own get_content_height does (it passes the styles too)
        height = visual.get_height(self.styles, width)  # type: ignore[arg-type]
        return height != self.size.height


class MarkdownText(Vertical, OneLayout, OwnHeights):
    """A Markdown text that can grow: ``append`` re-renders only the unsettled tail."""

    DEFAULT_CSS = """
    MarkdownText {
        height: auto;
    }
    MarkdownText > Static {
        height: auto;
    }
    """

    def __init__(self, text: str = "", *, classes: str | None = None) -> None:
        super().__init__(classes=classes)
        self.text = ""
        self._settled = 0  # text[:_settled] lives in settled pieces
        self._scanned = 0  # lines are scanned up to here for safe cuts
        self._in_fence = ""  # the fence marker of an open code block
        self._safe = 0  # the last offset where a cut cannot split a block
        self._starts: dict[int, int] = {}  # by a settled piece's end: its start
        self._spaced_after: dict[int, bool] = {}  # by a settled piece's end: see LiteralMarkdown
        self._initial = text
        self._mounted = False  # the tail is in place and drawn to (see append)
        self._tail = Block("", classes="md-tail")
        self._fresh = 0  # the last offset past _settled where a block starts afresh
        self._held: list[Rendered] = []  # the tail's finished blocks, drawn once each
        self._held_start = 0  # where the text of _held starts
        self._held_end = 0  # where the text of _held ends
        self._reserve = 0  # rows the tail is rounded up to while it streams (see Reserved)
        self._placed: list[Static] = []  # pieces just settled, laid out with the tail's frame
        self._drawn_parts: list[Rendered] = []  # the parts of the tail as last handed over

    def compose(self) -> ComposeResult:
        yield self._tail

    def refresh(
        self,
        *regions: Region,
        repaint: bool = True,
        layout: bool = False,
        recompose: bool = False,
    ) -> Self:
        """As Textual's, but for the layout Textual asks for once pieces that settled as
        a reply streams are mounted: the tail, shortened by as much as they hold, asked
        for a layout of its own, and that layout has placed and drawn them already (each
        piece that settled cost a second layout and paint of the screen, some 10 ms)."""
        if layout and self._placed:
            placed, self._placed = self._placed, []
            if (
                not regions
                and not recompose
                and not self._layout_required
                and all(piece.is_attached and piece.size.width for piece in placed)
            ):
                return self
        return super().refresh(*regions, repaint=repaint, layout=layout, recompose=recompose)

    def on_mount(self) -> None:
        self._mounted = True
        if self._initial:
            text, self._initial = self._initial, ""
            self._grow(text)

    def _scan(self) -> list[int]:
        """Find safe cuts in the complete lines added since the last scan; return those
        that close a piece of at least ``SETTLE_AT`` characters (a long text opened at
        once becomes many pieces, so that only those on screen are drawn)."""
        text = self.text
        cuts: list[int] = []
        while True:
            end = text.find("\n", self._scanned)
            if end < 0:
                return cuts
            line = text[self._scanned : end].strip()
            if self._scanned == self._safe and text[self._safe] not in FRESH_BLOCK_EXCLUDED:
                self._fresh = self._safe  # a block starts afresh after a blank line
            if self._in_fence:
                if line.startswith(self._in_fence) and not line.strip("`~"):
                    self._in_fence = ""
            elif line.startswith(("```", "~~~")):
                self._in_fence = line[:3]
            elif not line:
                self._safe = end + 1
                if self._safe - (cuts[-1] if cuts else self._settled) >= SETTLE_AT:
                    cuts.append(self._safe)
            self._scanned = end + 1

    def append(self, text: str) -> None:
        """Add ``text`` to the end."""
        # written before the tail is in place: drawn by on_mount, or by the first write
        # once it is. Not ``is_mounted``: Textual sets it only once the Mount event's
        # handling is done, and a write in between (a reply's first words while its turn
        # mounts) was kept for an on_mount that had run already and never drawn: at full
        # speed the reply's last 7 KB were missing in 2 runs of 3. Nor on_mount alone: the
        # tail is composed, and often mounted, well before this text's Mount event is
        # handled (the turns of a send mount a dozen widgets, a message each), and the
        # first words waited for it
        if not self._mounted:
            if not self._tail.is_attached:
                self._initial += text
                return
            self._mounted = True
            text, self._initial = self._initial + text, ""
        self._grow(text)

    def _grow(self, text: str) -> None:
        """Add ``text``. Text that makes several pieces at once (a long text opened, or
        a reply that came faster than it was drawn) shows its end first (what a
        followed view has on screen), and the pieces before it once that is drawn."""
        self.text += text
        cuts = self._scan()
        if cuts:
            cuts[-1] = self._safe  # the last piece takes every finished block
            spans = []
            for cut in cuts:
                spans.append((self._settled, cut))
                self._starts[cut] = self._settled
                self._settled = cut
            later, now = spans[:-FIRST_PIECES], spans[-FIRST_PIECES:]
            if later:
                self._end_in_tail(now[0][0], later)
                return
            pieces = [self._piece(span) for span in now]
            self.mount_all(pieces, before=self._tail)
            self._placed = pieces
            self._update_tail(self._render_tail())
            return
        tail = self._render_tail()
        self._update_tail(tail, layout=self._tail.height_changes(tail))

    def _update_tail(self, tail: Rendered | Joined | Reserved, *, layout: bool = True) -> None:
        """Hand ``tail`` to its block, which keeps the rows of the parts it had drawn
        before (the same finished blocks, at its top)."""
        parts = PartsVisual.parts_of(tail)
        keep_rows = 0
        for before, now in zip(self._drawn_parts, parts, strict=False):
            rows = before.drawn_rows
            if before is not now or rows is None:
                break
            keep_rows += rows
        blank_from = None
        if not layout and isinstance(tail, Reserved):
            # the same height, both drawn at its width (``height_changes``): the rows
            # under both texts are blank in both
            before_rows, rows = _drawn_rows(self._drawn_parts), _drawn_rows(parts)
            if before_rows is not None and rows is not None:
                blank_from = max(before_rows, rows)
        self._drawn_parts = parts
        self._tail.update(tail, layout=layout, keep_rows=keep_rows, blank_from=blank_from)

    def reserve(self, step: int) -> None:
        """While a reply streams: keep the text's height a multiple of ``step`` rows, with
        blank rows under the tail (``Reserved``)."""
        self._reserve = step

    def end_reserve(self, text: str = "") -> int:
        """The reply has ended (with ``text``, its last words): the blank rows under its
        tail go, and the tail is drawn once. Returns the rows the text loses on screen
        (the blank rows, less any the last words take), for the view that shows it to
        keep its place (``ConversationView.keep_end``)."""
        reserved, self._reserve = self._reserve, 0
        shown_rows = self.size.height
        if text:
            self.append(text)
        elif reserved and self._mounted:
            shown = self._tail.content
            # the text is as it was drawn: its rendering is kept (see ``Rendered``), not
            # parsed and drawn again (at full speed, the whole end of a reply: 5-10 ms)
            tail = shown.inner if isinstance(shown, Reserved) else self._render_tail()
            self._update_tail(tail, layout=self._tail.height_changes(tail))
        if not reserved or not shown_rows:
            return 0
        return max(0, shown_rows - self._text_rows())

    def _text_rows(self) -> int:
        """The rows the text takes now, drawn at its width (laid out or not)."""
        rows = 0
        width = self._tail.content_size.width  # every piece's, laid out or not yet
        for block in self.children:
            content = block.content if isinstance(block, Block) else None
            if isinstance(content, Rendered | Joined | Reserved) and width:
                rows += PartsVisual(block, content).get_height(block.styles, width)  # type: ignore[arg-type]
            else:
                rows += block.outer_size.height
        return rows

    def _end_in_tail(self, start: int, later: list[tuple[int, int]]) -> None:
        """Several pieces at once: the text from ``start`` (the last of them, and what
        follows) is drawn by the tail, which is on screen already, so the next frame shows
        it; mounted as a piece of its own it showed a frame later (at full speed, the
        reply's last words came 20-40 ms later). ``later`` is drawn after that frame."""
        for end in [end for end in self._starts if end > start]:
            del self._starts[end]
        self._settled = start
        self._held, self._held_start, self._held_end = [], start, start
        self._update_tail(self._render_tail())
        self.call_after_refresh(
            lambda: self.set_timer(EARLIER_AFTER_S, lambda: self._draw_earlier(later, self._tail))
        )

    def _render_tail(self) -> Rendered | Joined | Reserved:
        """The tail to draw: its text, with blank rows under it while a reply streams."""
        tail = self._tail_text()
        if self._reserve <= 1:
            return tail
        above = [
            piece.content
            for piece in self.children
            if piece is not self._tail
            and isinstance(piece, Block)
            and isinstance(piece.content, Rendered | Joined)
        ]
        return Reserved(tail, self._reserve, above)

    def _tail_text(self) -> Rendered | Joined:
        """The text after the settled pieces. Its finished blocks are drawn once and kept
        (a token re-renders only the block it lengthens), up to the last line that starts
        a block afresh (see ``FRESH_BLOCK_EXCLUDED``): a blank line before it, outside a
        code fence, at its first column. A tail that may hold a link reference definition
        is drawn in one piece, as a reference may change the text above it."""
        start = self._settled
        text = self.text
        if self._held_end <= start:  # none held yet, or what was held has settled
            self._held, self._held_start, self._held_end = [], start, start
        safe = self._safe
        if safe > self._fresh and safe < len(text) and text[safe] not in FRESH_BLOCK_EXCLUDED:
            self._fresh = safe
        if _REFERENCE.search(text, start):
            self._held, self._held_end = [], start
            return render(text[start:], spaced=self._spaced_before(start))
        if self._fresh > self._held_end:
            if self._held_end == start:
                spaced = self._spaced_before(start)
            else:
                spaced = self._held[-1].renderable.spaced_after
            self._held.append(render(text[self._held_end : self._fresh], spaced=spaced))
            self._held_end = self._fresh
        if not self._held:
            return render(text[start:], spaced=self._spaced_before(start))
        rest = render(text[self._held_end :], spaced=self._held[-1].renderable.spaced_after)
        return Joined([*self._held, rest])

    def _spaced_before(self, start: int) -> bool:
        """Whether the piece that starts at ``start`` begins with the blank line that
        Rich would have put there, had it drawn the text in one piece."""
        if start == 0:
            return False
        if start not in self._spaced_after:  # a piece not drawn yet: read, not drawn
            self._spaced_after[start] = spaced_after(self.text[self._starts[start] : start])
        return self._spaced_after[start]

    def _piece(self, span: tuple[int, int]) -> Static:
        start, end = span
        rendered: Rendered | Joined | None = self._held_piece(start, end)
        if rendered is None:
            rendered = render(self.text[start:end], spaced=self._spaced_before(start))
            self._spaced_after[end] = rendered.renderable.spaced_after
        return Block(rendered)

    def _held_piece(self, start: int, end: int) -> Joined | None:
        """The piece from ``start`` to ``end`` made of the tail's finished blocks drawn
        already (``_held``), and the blocks after them drawn now; None where they are not
        its start. A piece that settled as a reply streamed was drawn anew, whole (2,000
        characters and more, with its code highlighted again: 10-20 ms a piece, a tenth
        of the CPU of a 2,000-token reply), though the tail had drawn most of it."""
        held = self._held
        if not held or self._held_start != start or self._held_end > end:
            return None
        if _REFERENCE.search(self.text, start, end):  # drawn in one piece, see _tail_text
            return None
        parts = list(held)
        if self._held_end < end:
            spaced = held[-1].renderable.spaced_after
            parts.append(render(self.text[self._held_end : end], spaced=spaced))
        self._spaced_after[end] = parts[-1].renderable.spaced_after
        return Joined(parts)

    def _draw_earlier(self, spans: list[tuple[int, int]], before: Static) -> None:
        """Draw the last pieces of ``spans`` (those nearest what is on screen) just
        above ``before``, then the rest after the next frame."""
        if not self.is_attached:
            return
        first = len(spans) - 1
        while first > 0 and spans[-1][1] - spans[first - 1][0] <= EARLIER_BATCH:
            first -= 1
        batch, rest = spans[first:], spans[:first]
        pieces = [self._piece(span) for span in batch]
        self.mount_all(pieces, before=before)
        if rest:
            self.call_after_refresh(self._draw_earlier, rest, pieces[0])
