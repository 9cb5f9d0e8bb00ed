"""How a streamed reply is drawn: the view follows it to its last token, and what was
drawn piece by piece while it streamed reads the same as the finished reply opened anew."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from ollama_server import FakeOllama
from textual import events
from textual.app import App, ComposeResult
from textual.containers import VerticalScroll
from textual.geometry import Region
from textual.pilot import Pilot
from textual.scrollbar import ScrollBar
from textual.strip import Strip
from textual.widget import Widget
from textual.widgets import Static
from tui_helpers import (
    make_app,
    recorded_frames,
    screen_text,
    shown_turns,
    type_text,
    wait_for,
    written_over,
)

from tui.app import LlmPessoalApp
from tui.screens.chat import ChatScreen
from tui.widgets.conversation import ConversationView, ReplyTurn, ReplyWriter
from tui.widgets.markdown_text import Block, LiteralMarkdown, MarkdownText, render, spaced_after
from tui.widgets.steady_scrollbar import SteadyScrollBar, steady_vertical_scrollbar

SIZE = (120, 40)

REPLY = (
    "# A long answer\n\n"
    + "\n\n".join(
        f"Paragraph {i} says **something** with `code` and more words to wrap the line "
        f"past the width of the view, {'so it takes two lines' if i % 2 else 'once'}."
        for i in range(30)
    )
    + "\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n"
    + "```python\ndef f(x):\n    return x * 2\n```\n\n"
    + "- one\n- two\n\n"
    + "The last words: qxfinalmark"
)


def rows(markdown: MarkdownText) -> list[str]:
    """Every row of a Markdown text as drawn, those off screen too, piece after piece."""
    return [
        strip.text.rstrip()
        for piece in markdown.children
        for strip in piece.render_lines(Region(0, 0, *piece.outer_size))
    ]


def reply_lines(app: App[object]) -> list[str]:
    return rows(shown_turns(app.screen, ReplyTurn)[-1].body)


async def ask(pilot: Pilot[int], app: LlmPessoalApp) -> ChatScreen:
    """Send a prompt once the app is online; the Chat screen it was sent on."""
    await wait_for(pilot, lambda: bool(app.models), what="online")
    await type_text(pilot, "write it")
    await pilot.press("enter")
    screen = app.screen
    assert isinstance(screen, ChatScreen)
    return screen


async def test_a_streamed_reply_is_followed_to_its_last_token_and_reads_as_opened_anew(
    ollama_server: FakeOllama, config_file: Path
) -> None:
    ollama_server.reply = REPLY
    ollama_server.rate = 300  # a dozen tokens between two drawings: some only lengthen a line
    app = make_app(config_file)
    async with app.run_test(size=SIZE) as pilot:
        screen = await ask(pilot, app)
        await wait_for(pilot, lambda: screen.streaming, what="streaming")
        await wait_for(pilot, lambda: not screen.streaming, what="finished", timeout=60)
        await wait_for(pilot, lambda: "qxfinalmark" in screen_text(app), what="last token")
        view = screen.query_one(ConversationView)
        assert view.is_vertical_scroll_end, "the view followed the reply with no key pressed"
        streamed = reply_lines(app)
        conversation = screen.conversation
        assert conversation is not None
        screen.open_conversation(conversation.id)  # the same reply, drawn from the store
        await wait_for(
            pilot,
            lambda: (
                len(shown_turns(app.screen, ReplyTurn)) == 1
                and "qxfinalmark" in screen_text(app)
                and reply_lines(app) == streamed
            ),
            what="the reopened reply drawn as it was streamed",
        )
        assert any("return x * 2" in line for line in streamed), "the code block is drawn"
        assert any("Paragraph 29 says something" in line for line in streamed), "bold is styled"


async def test_a_reply_on_screen_tells_its_reader_how_often_it_is_drawn(
    ollama_server: FakeOllama, config_file: Path
) -> None:
    """The writer of a reply on screen tells the reply how often it draws it
    (``Reply.drawn_every``): its reader hands text over no more often."""
    ollama_server.reply = REPLY
    ollama_server.rate = 200
    app = make_app(config_file)
    async with app.run_test(size=SIZE) as pilot:
        screen = await ask(pilot, app)
        await wait_for(pilot, lambda: app.conversations.busy, what="streaming")
        (reply,) = app.conversations.busy.values()

        def told() -> bool:
            live = screen._live.get(reply.reply_id)
            return live is not None and reply.drawn_every == live.writer.spacing() > 0

        await wait_for(pilot, told, what="the reader told how often the reply is drawn")
        assert ReplyWriter.SLOWEST >= reply.drawn_every >= 0.1
        await wait_for(pilot, lambda: "qxfinalmark" in screen_text(app), what="last token")


async def test_a_reply_keeps_its_width_when_it_comes_to_fill_the_view(
    ollama_server: FakeOllama, config_file: Path
) -> None:
    """The scrollbar's place is kept while the view has none: a reply that grows past
    the view's height is not re-wrapped two cells narrower (drawn again) under the
    reader's eyes when the scrollbar comes."""
    ollama_server.reply = REPLY
    ollama_server.rate = 60
    app = make_app(config_file)
    async with app.run_test(size=SIZE) as pilot:
        screen = await ask(pilot, app)
        view = screen.query_one(ConversationView)
        await wait_for(
            pilot,
            lambda: bool(shown_turns(screen, ReplyTurn)) and "A long answer" in screen_text(app),
            what="the first words",
        )
        assert view.max_scroll_y == 0, "the reply fits the view yet"
        width = shown_turns(screen, ReplyTurn)[-1].body.size.width
        await wait_for(pilot, lambda: view.max_scroll_y > 0, what="the view filled", timeout=60)
        await wait_for(pilot, lambda: not screen.streaming, what="finished", timeout=60)
        assert shown_turns(screen, ReplyTurn)[-1].body.size.width == width


def drawn_whole(app: App[None], text: str, width: int = 60) -> list[str]:
    """The rows of ``text`` drawn by Rich in one piece."""
    console = app.console
    lines = console.render_lines(render(text), console.options.update_width(width))
    return ["".join(s.text for s in line).rstrip() for line in lines]


class Growing(App[None]):
    CSS = "Screen { overflow: hidden; }"  # no scrollbar: the text is 60 cells wide throughout

    def compose(self) -> ComposeResult:
        yield MarkdownText()


async def test_markdown_fed_a_few_characters_at_a_time_draws_what_it_would_at_once() -> None:
    whole = Growing()
    async with whole.run_test(size=(60, 40)) as pilot:
        expected = drawn_whole(whole, REPLY)
        whole.query_one(MarkdownText).append(REPLY)
        await wait_for(
            pilot,
            lambda: rows(whole.query_one(MarkdownText)) == expected,
            what="the pieces together read as the text drawn in one piece",
        )
    grown = Growing()
    async with grown.run_test(size=(60, 40)) as pilot:
        markdown = grown.query_one(MarkdownText)
        for start in range(0, len(REPLY), 7):  # a drawing after each: many keep the height
            markdown.append(REPLY[start : start + 7])
            await pilot.pause()
        await wait_for(
            pilot, lambda: rows(markdown) == expected, what="the rows of the text drawn at once"
        )
        assert markdown.text == REPLY


async def test_text_that_comes_faster_than_it_is_drawn_shows_its_end_first_then_reads_whole() -> (
    None
):
    # each part makes several pieces at once (a reply read faster than it was drawn)
    parts = [REPLY.replace("qxfinalmark", f"qxpart{n}") for n in range(3)]
    app = Growing()
    async with app.run_test(size=(60, 40)) as pilot:
        markdown = app.query_one(MarkdownText)
        markdown.append(parts[0] + "\n\n")
        await wait_for(pilot, lambda: any("qxpart0" in r for r in rows(markdown)), what="part 0")
        markdown.append(parts[1] + "\n\n" + parts[2])
        # its end is drawn before the pieces above it
        await wait_for(pilot, lambda: any("qxpart2" in r for r in rows(markdown)), what="part 2")
        expected = drawn_whole(app, markdown.text)
        await wait_for(
            pilot,
            lambda: rows(markdown) == expected,
            what="the pieces drawn later in their place: it reads as the text drawn at once",
        )


TRICKY = (
    "# Blocks that a cut could change\n\n"
    "A paragraph with **bold** and `code`.\n\n"
    "- a loose list\n\n- whose items\n\n- have blank lines between them\n\n"
    "1. numbered\n\n2. loosely\n\n10. and on\n\n"
    "- an item\n\n  with a second paragraph inside it\n\n"
    "> a quote\n\n> and another\n\n"
    "    indented code\n\n    that goes on after a blank line\n\n"
    "```python\ndef f():\n\n    return 1\n```\n\n"
    "| a | b |\n|---|---|\n| 1 | 2 |\n\n"
    "---\n\n"
    "After the rule.\n\n\n\nAfter three blank lines.\n\n"
    "A [link][ref] defined below.\n\n"
    "A paragraph between.\n\n"
    "[ref]: https://example.com\n\n"
    "The end."
)


async def test_a_growing_tail_draws_as_the_text_drawn_whole_after_every_few_characters() -> None:
    # finished blocks are kept drawn: none of them may draw differently from the whole
    for text in (TRICKY, TRICKY.split("A [link]")[0] + "The end, with no reference."):
        app = Growing()
        async with app.run_test(size=(60, 40)):
            markdown = app.query_one(MarkdownText)
            tail = markdown.query_one(".md-tail", Static)
            for end in range(3, len(text) + 3, 3):
                markdown.append(text[end - 3 : end])
                console = app.console
                lines = console.render_lines(tail.content, console.options.update_width(60))
                drawn = ["".join(s.text for s in line).rstrip() for line in lines]
                assert drawn == drawn_whole(app, markdown.text), markdown.text


async def test_a_tail_drawn_a_part_at_a_time_is_the_tail_textual_would_draw_whole() -> None:
    # the tail's rows are kept part by part (PartsVisual): its height and every cell,
    # styles and all, are Textual's own for the tail in one piece, as the text grows
    from textual._context import active_app
    from textual.style import Style
    from textual.visual import RenderOptions, RichVisual

    from tui.widgets.markdown_text import Joined, PartsVisual, Reserved

    app = Growing()
    async with app.run_test(size=(60, 40)):
        token = active_app.set(app)
        try:
            markdown = app.query_one(MarkdownText)
            markdown.reserve(4)
            tail = markdown.query_one(".md-tail", Static)
            style = Style.from_rich_style(app.console.get_style("bold"))
            most_parts = 0
            for end in range(7, len(TRICKY) + 7, 7):
                markdown.append(TRICKY[end - 7 : end])
                content = tail.content
                parts, whole = PartsVisual(tail, content), RichVisual(tail, content)  # type: ignore[arg-type]
                for width in (60, 33):
                    assert parts.get_height(tail.styles, width) == whole.get_height(
                        tail.styles, width
                    )
                    options = RenderOptions(tail._get_style, tail.styles, None, None)
                    drawn = parts.render_strips(width, None, style, options)
                    expected = whole.render_strips(width, None, style, options)
                    assert [list(s) for s in drawn] == [list(s) for s in expected], markdown.text
                    assert parts.render_strips(width, 5, style, options) == drawn[:5]
                inner = content.inner if isinstance(content, Reserved) else content
                most_parts = max(most_parts, len(inner.parts) if isinstance(inner, Joined) else 1)
            assert most_parts >= 3, "the tail was drawn in parts"
        finally:
            active_app.reset(token)


def drawn_afresh(app: App[object]) -> list[str]:
    """The screen rendered with nothing kept from earlier frames: each widget's styled
    rows and content drawn anew."""
    from textual._styles_cache import StylesCache

    widgets = list(app.screen._compositor.visible_widgets)
    caches = {widget: widget._styles_cache for widget in widgets}
    try:
        for widget in widgets:
            widget._styles_cache = StylesCache()
            widget._render_content()
        return [strip.text for strip in app.screen._compositor.render_strips()]
    finally:
        for widget, cache in caches.items():
            widget._styles_cache = cache


@pytest.mark.parametrize("reserve", [4, 12])
async def test_a_streaming_tail_drawn_again_below_its_finished_blocks_reads_as_drawn_afresh(
    reserve: int,
) -> None:
    """The tail's rows above what a write changed are kept as styled (``Block.update``'s
    ``keep_rows``), and the blank rows under the text (``blank_from``); the frames written
    over one another read, after every write, as the screen drawn with nothing kept, to
    the reply's end."""
    app = Growing()
    async with app.run_test(size=(60, 20)) as pilot:
        markdown = app.query_one(MarkdownText)
        markdown.reserve(reserve)
        tail = markdown.query_one(".md-tail", Block)
        await pilot.pause()
        frames = recorded_frames(app)
        shown = drawn_afresh(app)
        kept = blank_kept = 0
        for end in range(11, len(TRICKY) + 11, 11):
            markdown.append(TRICKY[end - 11 : end])
            kept += tail._keep_rows > 0
            regions = tail._repaint_regions
            blank_kept += bool(regions) and max(r.bottom for r in regions) < tail.outer_size.height
            await pilot.pause()
            for frame in frames:
                shown = written_over(shown, frame) if frame is not None else shown
            frames.clear()
            assert shown == drawn_afresh(app), markdown.text
        markdown.end_reserve()
        await pilot.pause()
        for frame in frames:
            shown = written_over(shown, frame) if frame is not None else shown
        assert shown == drawn_afresh(app)
        assert kept > 10, "rows were kept"
        assert reserve < 12 or blank_kept > 5, "blank rows were kept"


ENDINGS = (
    "# H", "a paragraph", "---", " - - -", "   ___", "*\t*\t*", "    ---", "- a\n\n  ---",
    "> ---", "text\n---", "text\r\r---", "text\r\n\r\n***", "[r]: https://x", "```\n---\n```",
    "```\n\n---", "| a |\n|---|\n| 1 |", "x\n===", "- - - x", "",
)  # fmt: skip


def test_whether_a_piece_ends_in_a_rule_is_read_as_the_parser_reads_it() -> None:
    # a piece before the one on screen is not parsed whole to learn whether Rich puts a
    # blank line after it: every block here, alone and after each other, reads as parsed
    for first in ENDINGS:
        for last in ENDINGS:
            for between in ("\n\n", "\n"):
                for end in ("", "\n\n", "  \n"):
                    markup = first + between + last + end
                    assert spaced_after(markup) == LiteralMarkdown(markup).spaced_after, markup


class OneMarkdown(App[None]):
    def compose(self) -> ComposeResult:
        yield MarkdownText()


async def test_a_first_token_with_no_word_waits_for_the_words_that_follow_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A reply's first token is often a heading's mark alone: drawn alone, its frame held
    the words after it back. It waits for them (``HOLD_UNREADABLE`` at most)."""
    monkeypatch.setattr(ReplyWriter, "HOLD_UNREADABLE", 30.0)  # only words end the wait here
    app = OneMarkdown()
    async with app.run_test(size=SIZE) as pilot:
        markdown = app.query_one(MarkdownText)
        appended: list[str] = []
        append = markdown.append
        monkeypatch.setattr(markdown, "append", lambda text: (appended.append(text), append(text)))
        writer = ReplyWriter(markdown)
        writer.write("#")
        for _ in range(20):  # the writer's task runs, and waits
            await asyncio.sleep(0)
        assert appended == []
        writer.write(" A long answer")
        await wait_for(pilot, lambda: markdown.text == "# A long answer", what="the heading")
        assert appended == ["# A long answer"], "the mark and its words drawn together"
        await writer.close()


async def test_a_replys_first_words_are_written_at_once_and_the_next_ones_wait_their_turn() -> None:
    """The first words go to the Markdown as they are handed over, not when the writer's
    task next runs (after whatever the loop has queued meanwhile: on a send, a frame of the
    new turns, 5-15 ms); the words after them wait for the writer's next turn."""
    app = OneMarkdown()
    async with app.run_test(size=SIZE) as pilot:
        markdown = app.query_one(MarkdownText)
        writer = ReplyWriter(markdown)
        writer.write("# A")
        assert markdown.text == "# A", "written at once"
        writer.write(" long answer")
        assert markdown.text == "# A", "the next words wait for the writer's turn"
        await wait_for(pilot, lambda: markdown.text == "# A long answer", what="the next words")
        await writer.close()


async def test_words_that_come_in_a_burst_are_drawn_once_the_burst_is_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Text handed over while more has come already (``more``: the server sends faster
    than the reply is read) waits for the rest, the first words too once the burst has
    brought a line or so: each frame drawn meanwhile held the reading back. What comes
    after the burst ends the wait."""
    monkeypatch.setattr(ReplyWriter, "SLOWEST", 30.0)  # only the burst's end ends the wait
    app = OneMarkdown()
    async with app.run_test(size=SIZE) as pilot:
        markdown = app.query_one(MarkdownText)
        writer = ReplyWriter(markdown)
        words = "# A long answer\n\n" + "word " * ReplyWriter.LONG_BURST
        writer.write(words, more=True)
        assert markdown.text == "", "the first words of a long burst wait for the rest"
        writer.write("and", more=True)
        await asyncio.sleep(5 * ReplyWriter.RAMP[-1])  # past every wait of a reply not in a burst
        assert markdown.text == "", "held while the burst is read"
        writer.write(" more")
        await wait_for(pilot, lambda: markdown.text == words + "and more", what="the burst")
        writer.write(" goes on" * ReplyWriter.LONG_BURST, more=True)
        await asyncio.sleep(5 * ReplyWriter.RAMP[-1])
        assert markdown.text.endswith("and more"), "a later burst waits as well"
        writer.write(".")
        await wait_for(pilot, lambda: markdown.text.endswith("goes on."), what="the next burst")
        await writer.close()


@contextlib.asynccontextmanager
async def first_words_written(
    first: str,
) -> AsyncIterator[tuple[Pilot[object], MarkdownText, ReplyWriter]]:
    """A reply writer on a Markdown text alone, its first words (``first``) drawn."""
    app = OneMarkdown()
    async with app.run_test(size=SIZE) as pilot:
        markdown = app.query_one(MarkdownText)
        writer = ReplyWriter(markdown)
        writer.write(first)
        await wait_for(pilot, lambda: markdown.text == first, what="the first words")
        yield pilot, markdown, writer
        await writer.close()


async def test_a_burst_that_brings_no_more_is_drawn_as_soon_as_that_is_known(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Text handed over as followed by more (``more``) when none comes after all: the
    reader says so as it waits for the server again (a write with no text), and the text
    is drawn then, not ``SLOWEST`` (here 30 s) later nor when the next words come."""
    monkeypatch.setattr(ReplyWriter, "SLOWEST", 30.0)
    async with first_words_written("# A") as (pilot, markdown, writer):
        words = " long answer" + " word" * ReplyWriter.LONG_BURST
        writer.write(words, more=True)
        await asyncio.sleep(5 * ReplyWriter.RAMP[-1])
        assert markdown.text == "# A", "held while the burst is read"
        writer.write("", more=False)
        await wait_for(pilot, lambda: markdown.text == "# A" + words, what="the burst, over")


async def test_only_what_a_burst_brings_makes_it_long_enough_to_wait_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A burst's text waits for its end once the burst has brought a line or so
    (``LONG_BURST``): text that came before it, in the usual way, does not count."""
    monkeypatch.setattr(ReplyWriter, "SLOWEST", 30.0)
    async with first_words_written("# A") as (pilot, markdown, writer):
        writer.write(" word" * ReplyWriter.LONG_BURST)  # pending: its turn has not come
        writer.write(" and", more=True)  # a burst of one token
        await wait_for(pilot, lambda: markdown.text.endswith("word and"), what="drawn in turn")


async def test_a_replys_first_tokens_come_two_or_three_at_once_and_are_drawn_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The first tokens often come two or three at once (the reading thread waited for
    the interpreter while the new turns were drawn): not a burst worth waiting for, nor
    are a few tokens later on."""
    monkeypatch.setattr(ReplyWriter, "SLOWEST", 30.0)
    app = OneMarkdown()
    async with app.run_test(size=SIZE) as pilot:
        markdown = app.query_one(MarkdownText)
        writer = ReplyWriter(markdown)
        writer.write("# A", more=True)
        assert markdown.text == "# A", "written at once"
        writer.write(" long answer", more=True)
        await wait_for(pilot, lambda: markdown.text == "# A long answer", what="the next words")
        await writer.close()


async def test_a_long_burst_is_still_drawn_every_slowest_wait(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ReplyWriter, "SLOWEST", 0.3)
    app = OneMarkdown()
    async with app.run_test(size=SIZE) as pilot:
        markdown = app.query_one(MarkdownText)
        writer = ReplyWriter(markdown)
        words = "word " * ReplyWriter.LONG_BURST
        writer.write(words, more=True)
        await wait_for(pilot, lambda: markdown.text == words, what="the first words")
        writer.write(words, more=True)
        await wait_for(pilot, lambda: markdown.text == words * 2, what="drawn meanwhile")
        await writer.close()


async def test_a_first_token_with_no_word_is_drawn_all_the_same_if_no_word_follows() -> None:
    app = OneMarkdown()
    async with app.run_test(size=SIZE) as pilot:
        markdown = app.query_one(MarkdownText)
        writer = ReplyWriter(markdown)
        writer.write("---")
        await wait_for(pilot, lambda: markdown.text == "---", what="the rule drawn alone")
        await writer.close()


async def test_text_written_while_textual_finishes_mounting_the_markdown_is_drawn() -> None:
    """Textual marks a widget mounted only once its Mount event's handling is done, after
    ``on_mount``; a reply's words written in between (its turn mounting while they come,
    at full speed) were kept for an ``on_mount`` that had already run, and never drawn."""
    app = Growing()
    async with app.run_test(size=(60, 40)) as pilot:
        markdown = app.query_one(MarkdownText)
        markdown.append("# A long answer\n\nThe first words")
        markdown._is_mounted = False  # the moment between on_mount and Textual's flag
        markdown.append(" and the last: qxfinalmark")
        markdown._is_mounted = True
        await wait_for(
            pilot, lambda: "qxfinalmark" in "\n".join(rows(markdown)), what="the last words"
        )


async def test_a_piece_that_settles_as_the_text_grows_is_laid_out_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Text that closes a piece mounts it above the tail, and the tail's own layout places
    and draws it: Textual's second layout once the piece's Mount is handled (a layout and
    paint of the whole screen, some 10 ms per piece, 6-7 per 2,000-token reply) is not
    made. The text reads as drawn whole all the same."""
    from textual.screen import Screen

    layouts: list[float] = []
    real = Screen._refresh_layout

    def counted(self: Screen[object], *args: object, **kwargs: object) -> None:
        layouts.append(time.monotonic())
        real(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Screen, "_refresh_layout", counted)
    app = Growing()
    async with app.run_test(size=(60, 40)) as pilot:
        markdown = app.query_one(MarkdownText)
        markdown.append("# A long answer\n\nThe first words")
        await wait_for(pilot, lambda: "first words" in "\n".join(rows(markdown)), what="words")
        await pilot.pause(0.2)
        layouts.clear()
        markdown.append(" and more.\n\n" + "A paragraph of some length. " * 80 + "\n\nqxtail")
        await wait_for(pilot, lambda: len(markdown.children) == 2, what="a piece settled")
        await wait_for(pilot, lambda: "qxtail" in "\n".join(rows(markdown)), what="the tail")
        await pilot.pause(0.3)
        assert len(layouts) == 1, "the piece is placed by the tail's layout, once"
        assert rows(markdown) == drawn_whole(app, markdown.text)


async def test_a_piece_that_settles_keeps_the_drawing_of_its_blocks_from_the_tail(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The tail draws each finished block once; when they settle into a piece (2,000
    characters and more), that piece is made of those drawings and the blocks after them,
    not drawn anew whole (10-20 ms a piece). It reads as the text drawn whole all the same,
    a table, code and a list in it."""
    from tui.widgets import markdown_text

    drawn: list[str] = []
    real = markdown_text.render

    def counted(markup: str, *, spaced: bool = False) -> markdown_text.Rendered:
        drawn.append(markup)
        return real(markup, spaced=spaced)

    monkeypatch.setattr(markdown_text, "render", counted)
    blocks = [
        f"Paragraph {i} says **something** with `code` and words that wrap the line at last."
        for i in range(24)
    ]
    blocks[5:5] = ["| a | b |\n|---|---|\n| 1 | 2 |", "```python\ndef f(x):\n    return x\n```"]
    blocks[12:12] = ["- one\n- two"]
    app = Growing()
    async with app.run_test(size=(60, 40)) as pilot:
        markdown = app.query_one(MarkdownText)
        for block in blocks:  # each written and drawn: the tail holds it, drawn once
            markdown.append(block + "\n\n")
            await pilot.pause()
            if len(markdown.children) > 1:
                break
        await wait_for(pilot, lambda: len(markdown.children) == 2, what="a piece settled")
        piece_text = markdown.text[: markdown._settled]
        assert len(piece_text) >= markdown_text.SETTLE_AT
        # nothing drawn since the blocks were written holds the piece's first blocks again
        first_blocks = piece_text[: piece_text.index("Paragraph 8")]
        assert not [markup for markup in drawn[-3:] if first_blocks in markup]
        markdown.append("The end.")
        await wait_for(pilot, lambda: "The end." in "\n".join(rows(markdown)), what="the end")
        assert rows(markdown) == drawn_whole(app, markdown.text)


class MountedLate(MarkdownText):
    """A text whose Mount event waits behind others (the dozen widgets of a send's turns
    mount a message at a time): its tail is composed and on screen, and on_mount has not
    run yet."""

    def on_mount(self, event: events.Mount) -> None:
        event.prevent_default()  # MarkdownText's on_mount never runs: nothing may wait for it


async def test_words_written_once_the_tail_is_composed_are_drawn_before_the_mount_is_handled() -> (
    None
):
    """A reply's first words come while its turn mounts: once the text's tail is composed
    they are drawn with the next frame, not kept for its on_mount (which came 15-20 ms
    later on a send, and the first words with it). Text written before that is drawn
    first, in its place."""

    class Late(App[None]):
        CSS = Growing.CSS

        def compose(self) -> ComposeResult:
            yield MountedLate("# A long answer\n\n")

    app = Late()
    async with app.run_test(size=(60, 40)) as pilot:
        markdown = app.query_one(MountedLate)
        await wait_for(pilot, lambda: markdown._tail.is_attached, what="the tail composed")
        markdown.append("The first words: qxfirst")
        await wait_for(
            pilot, lambda: "qxfirst" in "\n".join(rows(markdown)), what="the first words drawn"
        )
        assert markdown.text == "# A long answer\n\nThe first words: qxfirst"
        assert rows(markdown) == drawn_whole(app, markdown.text)


async def test_a_tail_written_to_before_its_mount_is_handled_shows_every_word() -> None:
    """Words written once the tail is composed are drawn at once, before its Mount is
    handled; Textual keeps what it cached of a widget not mounted yet (its look, its
    height) through a refresh, and a tail laid out with a reply's first words, then
    written to again before its Mount, kept showing those first words alone for good."""
    app = Growing()
    async with app.run_test(size=(60, 40)) as pilot:
        markdown = app.query_one(MarkdownText)
        markdown.append("# A")
        await wait_for(pilot, lambda: "A" in "\n".join(rows(markdown)), what="the first words")
        tail = markdown._tail
        tail._is_mounted = False  # as Textual has it until the tail's Mount is handled
        # measured meanwhile, as laying out the text around it does (and Textual keeps it)
        tail.get_content_height(app.size, app.size, 60)
        markdown.append(" long answer\n\nThe words after it: qxlast")
        tail._is_mounted = True
        await wait_for(pilot, lambda: "qxlast" in "\n".join(rows(markdown)), what="every word")
        assert rows(markdown) == drawn_whole(app, markdown.text)


async def test_text_that_comes_at_once_ends_in_the_tail_on_screen_and_the_rest_comes_after() -> (
    None
):
    """Several pieces at once (a reply read faster than it was drawn): the end, which a
    followed view shows, is drawn by the tail, already on screen, so the next frame shows
    the last words; a piece mounted for it showed them a frame later. The pieces before
    it are mounted after that."""
    text = "\n\n".join([REPLY] * 4)
    app = Growing()
    async with app.run_test(size=(60, 40)) as pilot:
        markdown = app.query_one(MarkdownText)
        expected = drawn_whole(app, text)
        markdown.append(text)
        tail = markdown.children[-1]
        assert list(markdown.children) == [tail], "nothing to mount before the end shows"
        assert isinstance(tail, Static) and str(tail.content.markup).endswith("qxfinalmark")
        await wait_for(
            pilot, lambda: rows(markdown) == expected, what="the pieces before it, then whole"
        )
        assert len(markdown.children) > 1


async def test_a_streaming_tail_grows_four_rows_at_a_time_and_loses_its_blank_rows_at_the_end() -> (
    None
):
    """While a reply streams, its tail is kept a multiple of ``ReplyWriter.RESERVE`` rows
    high: a token that starts a row fills a blank one, and the screen is laid out (the
    followed view scrolled) once per four rows instead of at every row. At the end, the
    blank rows go and the reply reads as drawn whole."""
    app = Growing()
    async with app.run_test(size=(60, 40)) as pilot:
        markdown = app.query_one(MarkdownText)
        tail = markdown.query_one(".md-tail", Static)
        markdown.reserve(ReplyWriter.RESERVE)
        heights: list[int] = []
        for i in range(12):
            markdown.append(f"Line {i} of the reply.\n\n")
            rows_now = 2 * i + 1  # paragraphs with a blank row between two
            await wait_for(
                pilot, lambda rows_now=rows_now: tail.size.height >= rows_now, what=f"line {i}"
            )
            heights.append(tail.size.height)
            drawn = rows(markdown)
            assert drawn[:rows_now] == drawn_whole(app, markdown.text), "the text is as drawn whole"
            assert not any(drawn[rows_now:]), "the rows under it are blank"
        assert all(height % 4 == 0 for height in heights), heights
        assert len(set(heights)) == 6, f"laid out at every fourth row, not every row: {heights}"
        markdown.end_reserve()
        await wait_for(
            pilot,
            lambda: rows(markdown) == drawn_whole(app, markdown.text),
            what="the blank rows gone at the end",
        )
        assert tail.size.height == 23


async def test_the_text_keeps_its_steps_as_pieces_settle_out_of_the_streaming_tail() -> None:
    """The blank rows are counted over the whole text, not the tail alone: a piece that
    settles out of the tail (its rows move from the tail to the piece) leaves the text as
    high as it was, so the followed view moves only when the text fills its blank rows."""
    app = Growing()
    async with app.run_test(size=(60, 40)) as pilot:
        markdown = app.query_one(MarkdownText)
        markdown.reserve(10)
        text = REPLY * 3
        heights: list[int] = []
        for end in range(70, len(text) + 70, 70):
            markdown.append(text[end - 70 : end])
            await wait_for(
                pilot,
                lambda end=end: markdown.size.height and not markdown._layout_required,
                what=f"laid out at {end}",
            )
            await pilot.pause()
            heights.append(markdown.size.height)
        assert len(markdown.children) > 3, "pieces settled out of the tail"
        assert all(height % 10 == 0 for height in heights), heights
        assert heights == sorted(heights), f"the text never got shorter: {heights}"
        markdown.end_reserve()
        await wait_for(
            pilot,
            lambda: rows(markdown) == drawn_whole(app, text),
            what="the blank rows gone at the end",
        )


async def test_a_followed_reply_moves_the_view_a_step_at_a_time_and_stays_as_it_ends(
    ollama_server: FakeOllama, config_file: Path
) -> None:
    """A reply that fills the view moves it by two thirds of its height at once, once
    its text has reached the bottom, not a row or two at each write: the text being read
    stays still in between. As the reply ends its blank rows go, but the view does not
    move the text down; the next prompt takes their place."""
    ollama_server.reply = REPLY * 2
    ollama_server.rate = 250
    app = make_app(config_file)
    async with app.run_test(size=SIZE) as pilot:
        screen = await ask(pilot, app)
        view = screen.query_one(ConversationView)
        step = view.jump_rows()
        assert step == view.scrollable_content_region.height * 2 // 3 > 10
        await wait_for(pilot, lambda: screen.streaming, what="streaming")
        positions = [view.scroll_y]  # where the view stands, looked at every 10 ms
        deadline = time.monotonic() + 60
        while screen.streaming and time.monotonic() < deadline:
            await pilot.pause(0.01)
            if view.scroll_y != positions[-1]:
                positions.append(view.scroll_y)
        await wait_for(pilot, lambda: "qxfinalmark" in screen_text(app), what="last token")
        await pilot.pause()
        positions.append(view.scroll_y)
        moves = [b - a for a, b in itertools.pairwise(positions) if b != a]
        # the view fills in steps of four rows; once it scrolls, it keeps the text a
        # multiple of ``step`` rows high, and from its first move by whole steps it moves
        # by whole steps, but for the end (the last words, drawn without blank rows under
        # them); never back (the text moved down as its blank rows went at the end)
        first = next(i for i, move in enumerate(moves) if move % step == 0)
        assert first <= 2 and len(moves) - first >= 4, (step, positions)
        assert all(move > 0 for move in moves), positions
        assert all(move % step == 0 for move in moves[first:-1]), (step, positions)
        assert view.is_vertical_scroll_end, "the view followed the reply to its end"
        reply = shown_turns(screen, ReplyTurn)[-1]
        assert "qxfinalmark" in rows(reply.body)[-1], "the blank rows under the text went"
        await type_text(pilot, "and then")
        await pilot.press("enter")
        await wait_for(
            pilot, lambda: len(shown_turns(screen, ReplyTurn)) == 2, what="the next reply's turn"
        )
        prompt = view.turns()[-2]
        await wait_for(
            pilot,
            lambda: prompt.virtual_region.y == reply.virtual_region.bottom + 1,
            what="the next prompt right under the reply, the rows kept for it given back",
        )


async def test_a_reply_writer_keeps_the_tail_in_steps_until_the_reply_ends() -> None:
    app = Growing()
    async with app.run_test(size=(60, 40)) as pilot:
        markdown = app.query_one(MarkdownText)
        tail = markdown.query_one(".md-tail", Static)
        writer = ReplyWriter(markdown)
        writer.write("One line of a reply.")
        await wait_for(pilot, lambda: tail.size.height == 4, what="a line and three blank rows")
        writer.write(" The last words: qxfinalmark")
        writer.flush()  # the reply has ended
        await wait_for(pilot, lambda: tail.size.height == 1, what="the blank rows gone")
        assert "qxfinalmark" in rows(markdown)[0]
        await writer.close()
        await pilot.pause()
        assert tail.size.height == 1, "closing draws no blank rows again"


async def test_the_views_own_rows_are_drawn_once_and_read_as_textual_draws_each(
    ollama_server: FakeOllama, config_file: Path
) -> None:
    """The conversation's view draws one of its own rows (its background and padding,
    under the turns) and gives it for every row: the same rows as Textual draws one by
    one, with the view plain or bordered (then drawn row by row). Its scrollbar keeps
    its rows (``SteadyScrollBar``) and they are those Textual draws."""
    ollama_server.reply = REPLY
    app = make_app(config_file)
    async with app.run_test(size=SIZE) as pilot:
        screen = await ask(pilot, app)
        await wait_for(pilot, lambda: "qxfinalmark" in screen_text(app), what="the reply")
        view = screen.query_one(ConversationView)
        bar = view.vertical_scrollbar
        assert view.show_vertical_scrollbar and isinstance(bar, SteadyScrollBar)
        crop = Region(0, 0, *bar.size)
        given = bar.render_lines(crop)
        bar._styles_cache.clear()
        bar._render_content()
        assert [list(s) for s in given] == [list(s) for s in Widget.render_lines(bar, crop)]
        for border in (None, ("round", "red")):
            if border is not None:
                view.styles.border = border
                await pilot.pause()
            crop = Region(0, 0, *view.region.size)
            view._styles_cache.clear()
            given = view.render_lines(crop)
            view._styles_cache.clear()
            drawn = Widget.render_lines(view, crop)
            assert len(given) == crop.height
            assert [list(strip) for strip in given] == [list(strip) for strip in drawn]
            assert any(strip.text.strip() for strip in given) == (border is not None)


class Scrolled(App[None]):
    CSS = "SteadyView { height: 20; }"

    def compose(self) -> ComposeResult:
        yield SteadyView(Static("x", id="text"))


class SteadyView(VerticalScroll):
    @property
    def vertical_scrollbar(self) -> ScrollBar:
        return steady_vertical_scrollbar(self)


async def test_a_scrollbar_that_follows_growing_text_draws_each_kind_of_row_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A view that follows growing text moves its scrollbar's thumb at each frame. Its
    rows (track, thumb, the thumb's ends) are kept once drawn: a few of the frames draw
    it through Textual, and every frame shows the rows Textual draws, the mouse over it
    or not."""
    from textual._styles_cache import StylesCache

    drawings: list[object] = []
    real = StylesCache.render_widget

    def counted(self: StylesCache, widget: Widget, crop: Region) -> list[Strip]:
        if isinstance(widget, SteadyScrollBar):
            drawings.append(crop)
        return real(self, widget, crop)

    monkeypatch.setattr(StylesCache, "render_widget", counted)
    app = Scrolled()
    async with app.run_test(size=(60, 24)) as pilot:
        view = app.query_one(SteadyView)
        text = app.query_one("#text", Static)
        bar = view.vertical_scrollbar
        assert isinstance(bar, SteadyScrollBar)
        frames = 0
        for step in range(60):
            text.update("\n".join(f"row {i}" for i in range(30 + 7 * step)))
            view.scroll_end(animate=False, immediate=True)
            await pilot.pause()
            if step == 40:
                bar.mouse_over = True
                await pilot.pause()
            frames += 1
            crop = Region(0, 0, *bar.size)
            given = bar.render_lines(crop)
            bar._styles_cache.clear()
            bar._render_content()
            assert [list(strip) for strip in given] == [
                list(strip) for strip in Widget.render_lines(bar, crop)
            ], f"step {step}"
            drawings.pop()  # the drawing just made to compare
        assert len(drawings) < frames / 3, f"{len(drawings)} of {frames} frames drew the bar"
