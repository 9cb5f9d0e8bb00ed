"""Markdown drawn by Rich in a few settled pieces and a live tail.

A streamed reply grows a token at a time. Textual's Markdown widget keeps a widget
per block, and every update lays out and redraws all of them; here the text is cut
at block boundaries (a blank line outside a code fence) into pieces of a few
kilobytes that are rendered once, and only the tail is rendered again as it grows.
Raw HTML is shown as text: a model's reply is displayed as written, never hidden.
"""

from __future__ import annotations

from typing import Any

from markdown_it import MarkdownIt
from rich.markdown import Markdown as RichMarkdown
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Static

SETTLE_AT = 2000
"""Characters of finished blocks gathered before they become a piece of their own."""
FIRST_PIECES = 2
"""Pieces of a long text drawn at once when it opens (its end, which is on screen); the
pieces before them are drawn right after the first frame."""
EARLIER_AFTER_S = 0.1

_PARSER = MarkdownIt("commonmark", {"html": False}).enable("strikethrough").enable("table")


class LiteralMarkdown(RichMarkdown):
    """Rich's Markdown, with raw HTML kept as text instead of dropped."""

    def __init__(self, markup: str, **kwargs: Any) -> None:
        super().__init__("", **kwargs)
        self.markup = markup
        self.parsed = _PARSER.parse(markup)


def render(markup: str) -> LiteralMarkdown:
    return LiteralMarkdown(markup, code_theme="monokai", hyperlinks=True)


class MarkdownText(Vertical):
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
        self._initial = text
        self._tail = Static("", classes="md-tail")

    def compose(self) -> ComposeResult:
        yield self._tail

    def on_mount(self) -> None:
        if self._initial:
            text, self._initial = self._initial, ""
            self._grow(text, end_first=True)

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
        if not self.is_mounted:  # written before it is on screen: drawn once it is
            self._initial += text
            return
        self._grow(text)

    def _grow(self, text: str, *, end_first: bool = False) -> None:
        """Add ``text``; with ``end_first``, a long text shows its end (what a followed
        view has on screen) first, and the pieces before it once that is drawn."""
        self.text += text
        cuts = self._scan()
        if cuts:
            cuts[-1] = self._safe  # the last piece takes every finished block
            spans = []
            for cut in cuts:
                spans.append((self._settled, cut))
                self._settled = cut
            later = spans[:-FIRST_PIECES] if end_first else []
            now = spans[len(later) :]
            self.mount_all([self._piece(span) for span in now], before=self._tail)
            if later:  # once the end is laid out and painted
                self.call_after_refresh(
                    lambda: self.set_timer(EARLIER_AFTER_S, lambda: self._draw_earlier(later))
                )
        self._tail.update(render(self.text[self._settled :]))

    def _piece(self, span: tuple[int, int]) -> Static:
        return Static(render(self.text[span[0] : span[1]]))

    def _draw_earlier(self, spans: list[tuple[int, int]]) -> None:
        if self.is_attached:
            self.mount_all([self._piece(span) for span in spans], before=0)
