"""Step previews over a thin link: dropped, never queued.

The driver counts what it handed to Textual's writer thread that the terminal has not taken
yet (``OutputBacklog``); while that is large, a step preview is held (only the newest) and
drawn once the terminal has caught up; a final picture is always drawn at once."""

from __future__ import annotations

import os
import random
import sys
import threading

import pytest
from PIL import Image
from textual.app import App, ComposeResult
from textual.drivers._writer_thread import WriterThread
from textual.drivers.linux_driver import LinuxDriver
from waiting import wait_for, wait_until

from tui.output import OutputBacklog, output_backlog, with_output_filter
from tui.widgets.picture import PREVIEW_BACKLOG, Picture


def frame(seed: int, width: int = 120, height: int = 40) -> str:
    """A frame as Textual writes a half-block picture: every cell its own colours."""
    rnd = random.Random(seed)
    out = []
    for y in range(height):
        out.append(f"\x1b[{y + 1};1H")
        for _ in range(width):
            fg = ";".join(str(rnd.randrange(256)) for _ in range(3))
            bg = ";".join(str(rnd.randrange(256)) for _ in range(3))
            out.append(f"\x1b[38;2;{fg};48;2;{bg}m▀\x1b[0m")
    return "".join(out)


async def test_the_backlog_is_what_a_slow_terminal_has_not_taken_yet(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A terminal that stops reading (a pipe nobody reads): what the app wrote piles up in
    the backlog; once the terminal reads again it drains to 0, and every byte arrived."""
    read_fd, write_fd = os.pipe()
    terminal = os.fdopen(write_fd, "w", encoding="utf-8")
    monkeypatch.setattr(sys, "__stderr__", terminal)
    driver = with_output_filter(LinuxDriver)(App(), size=(120, 40))
    backlog = driver.backlog  # type: ignore[attr-defined]
    assert isinstance(backlog, OutputBacklog)
    writer = WriterThread(driver._file)  # type: ignore[attr-defined]
    driver._writer_thread = writer  # type: ignore[attr-defined]
    writer.start()
    received = bytearray()
    try:
        for i in range(4):
            driver.write(frame(i))
        # the pipe holds 64 KB; the rest of four frames (about 160 KB each) waits
        wait_until(lambda: backlog.pending > 300_000, what="the writes held back")
        sent = backlog.pending

        def read() -> None:
            while chunk := os.read(read_fd, 65536):
                received.extend(chunk)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        wait_until(lambda: backlog.pending == 0, what="the backlog drained")
        assert len(received) > sent, "what was held back arrived"
    finally:
        writer.stop()
        terminal.close()
        reader.join(10)
        os.close(read_fd)
    text = received.decode()
    assert text.count("▀") >= 4 * 120 * 40 - 4 * 120, "every frame's cells arrived"


class OnePicture(App[None]):
    def compose(self) -> ComposeResult:
        yield Picture("halfblock", id="preview")


def pictures(n: int) -> list[Image.Image]:
    return [Image.new("RGB", (16, 16), (i * 20, 100, 200)) for i in range(n)]


async def test_previews_wait_while_the_terminal_is_behind_and_only_the_newest_is_drawn() -> None:
    app = OnePicture()
    async with app.run_test(size=(60, 20)) as pilot:
        backlog = OutputBacklog()
        app._driver.backlog = backlog  # type: ignore[union-attr]  # the headless driver counts none
        picture = app.query_one(Picture)
        first, *steps, last_step, final = pictures(8)
        picture.show_preview(first)
        assert picture.image is first, "drawn at once where the terminal keeps up"

        backlog.add(10 * PREVIEW_BACKLOG)  # a thin link: a frame and more not taken yet
        assert output_backlog(app) > PREVIEW_BACKLOG
        for image in [*steps, last_step]:
            picture.show_preview(image)
            await pilot.pause()
        assert picture.image is first, "no preview drawn while the terminal is behind"
        assert picture.held is last_step, "only the newest is held"
        assert picture.previews_held == len(steps), "the others are dropped"

        backlog.done(10 * PREVIEW_BACKLOG)  # the terminal caught up
        await wait_for(pilot, lambda: picture.image is last_step, what="the held preview drawn")
        assert picture.held is None

        backlog.add(10 * PREVIEW_BACKLOG)
        picture.show_preview(first)
        picture.show(final)  # the finished picture: drawn even while the link is behind
        assert picture.image is final
        assert picture.held is None, "a held preview never draws over the final picture"
        await pilot.pause(0.1)
        assert picture.image is final
