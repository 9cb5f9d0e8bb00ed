"""Textual's compositor, drawing only the widgets and rows that a frame changes.

For a frame that changes part of the screen (a reply growing, the prompt's cursor
blinking), Textual 8's compositor takes every widget whose clip (for most, the whole
screen) touches the changed area and renders all of its visible rows, then keeps the
rows that changed. A blink of the cursor renders the sidebar, the conversation and the
footer; each drawing of a streamed reply renders the sidebar too. Here a widget is
rendered only where it meets the changed area: its rows inside it, and not at all when
it lies beside it. Frames that redraw the whole screen render the same as before.

``install()`` replaces ``Compositor._render_chops`` (private, so it checks the version
it was written for, 8.x, and otherwise leaves Textual as it is), and mends how
``Widget.refresh`` counts layout requests (see ``_refresh``).

``DrawsSoon`` lets a screen draw one frame without waiting for Textual's frame timer (a
reply's first and last words), and hold its frames a moment while a reply it shows is
read in a burst (``holds_frames``), through Textual's private ``Screen._on_idle`` and
``_on_timer_update``: under another version, ``draw_soon()`` does nothing, frames are
never held, and the two only pass on to Textual's own.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from functools import cache
from pathlib import Path

import textual
from textual import events
from textual._compositor import Compositor
from textual.geometry import Region
from textual.reactive import Reactive
from textual.screen import Screen
from textual.strip import Strip
from textual.widget import Widget

log = logging.getLogger(__name__)

WRITTEN_FOR = "8."
"""The Textual versions whose compositor (and screen timer, see ``DrawsSoon``) this
matches."""


def _render_chops(
    self: Compositor, crop: Region, is_rendered_line: Callable[[int], bool]
) -> Sequence[Mapping[int, Strip]]:
    """Textual's ``Compositor._render_chops``, each widget rendered only where it meets
    ``crop`` and shows: the rows of its visible part inside ``crop`` (at their whole
    width, as Textual divides them) where a widget in front has not already filled every
    piece, and nothing when there are none. A container under its children (a turn, the
    Markdown of a reply, the conversation's view) is not rendered at all."""
    cuts = self.cuts
    chops: list[dict[int, Strip | None]] = [dict.fromkeys(cut_set[:-1]) for cut_set in cuts]
    crop_x, crop_y, crop_width, crop_height = crop
    crop_right, crop_bottom = crop_x + crop_width, crop_y + crop_height
    # front to back: the first strip for a cut wins
    for widget, (region, clip) in self.visible_widgets.items():
        x, y, width, height = region.intersection(clip)
        top, bottom = max(y, crop_y), min(y + height, crop_bottom)
        if top >= bottom or x >= crop_right or x + width <= crop_x:
            continue
        right = x + width
        shown: dict[int, list[int]] = {}  # the rows where it fills a piece: their cuts
        for line_y in range(top, bottom):
            if is_rendered_line(line_y):
                line = chops[line_y]
                final_cuts = [cut for cut in cuts[line_y] if right >= cut >= x]
                # its pieces: from each of its cuts to the next (its right edge is the
                # last cut, and the start of a piece beside it), those inside ``crop``
                # (the frame draws no other) that no widget in front has filled
                if any(
                    line.get(cut) is None and cut < crop_right and end > crop_x
                    for cut, end in itertools.pairwise(final_cuts)
                ):
                    shown[line_y] = final_cuts
        if not shown:
            continue
        top, bottom = next(iter(shown)), next(reversed(shown)) + 1
        strips = widget.render_lines(Region(x - region.x, top - region.y, width, bottom - top))
        for line_y, strip in zip(range(top, bottom), strips, strict=False):
            row_cuts = shown.get(line_y)
            if row_cuts is None:
                continue
            line = chops[line_y]
            for cut, piece in zip(
                row_cuts, strip.divide([cut - x for cut in row_cuts[1:]]), strict=False
            ):
                if line.get(cut) is None:
                    line[cut] = piece
    return chops  # type: ignore[return-value]  # every cut is filled on a rendered line


_textual_refresh = Widget.refresh


def _refresh(
    self: Widget,
    *regions: Region,
    repaint: bool = True,
    layout: bool = False,
    recompose: bool = False,
) -> Widget:
    """Textual's ``Widget.refresh``, counting every layout request. Textual 8 keys a
    widget's cached size on that count, but counts a request only when none is pending:
    a widget laid out while its first request was still on its way (the screen drew for
    another widget), then changed again, kept the size of its first change. A reply
    that ended in the frame its turn first appeared kept its "…" line's height, and the
    second line of its summary, or an error below it, stayed cut off until the window
    was resized."""
    if layout and self._layout_required:
        self._layout_updates += 1
    return _textual_refresh(self, *regions, repaint=repaint, layout=layout, recompose=recompose)


@cache
def textual_version() -> str:
    """The installed Textual's version, from its ``dist-info`` folder beside the package:
    ``importlib.metadata`` would take a hundredth of a second of the start to import
    (email, zipfile, csv...). Where there is not exactly one, it is asked after all."""
    found = list(Path(textual.__file__).parent.parent.glob("textual-*.dist-info"))
    if len(found) == 1:
        return found[0].name.removeprefix("textual-").removesuffix(".dist-info")
    from importlib.metadata import version

    return version("textual")


def install() -> bool:
    """Use ``_render_chops`` and ``_refresh`` above; False (Textual unchanged) for a
    version they were not written for."""
    installed = textual_version()
    if not installed.startswith(WRITTEN_FOR):
        log.info("compositor left as it is for textual %s", installed)
        return False
    Compositor._render_chops = _render_chops  # type: ignore[method-assign]
    Widget.refresh = _refresh  # type: ignore[method-assign,assignment]
    return True


class DrawsSoon(Screen):  # type: ignore[type-arg]
    """A screen that can draw its next frame as soon as it is idle.

    Textual draws a screen's frames on a timer, 60 times a second: a change waits for
    the next tick, up to 17 ms, even when nothing else is drawn. That is right for most
    changes (several in a row make one frame), and costly where someone waits for one:
    a reply's first words and its last (the timer added 5-12 ms to each, measured on a
    settled app). ``draw_soon()`` asks for that one frame without the wait: drawn at the
    screen's next idle moment once the changes made so far have reached it, within
    ``SOON_S``; after that frame, or if none was due by then, the timer again. Only under
    the Textual version this was written for. Under a dialog the screen draws into its
    own buffer, and the dialog's timer still says when the terminal gets it."""

    SOON_S = 0.05
    """How long a ``draw_soon()`` holds: changes that reach the screen later (another
    screen shown meanwhile, a widget not mounted yet) wait for the timer, as any."""
    HOLD_S = 0.15
    """The longest a frame waits while ``holds_frames()`` says so: then it is drawn, and
    the next one may wait as long again."""

    focused: Reactive[Widget | None] = Reactive(None, repaint=False)
    """Textual's, but a move of the focus does not draw the whole screen again: the
    widgets it leaves and reaches draw themselves again (and those styled by where the
    focus is are styled anew). A conversation chosen in the list sends the focus to the
    prompt, and its frame drew every widget on screen (some 20 ms of the 80 it took to
    open one that holds a 20,000-token reply)."""

    _draw_soon_at = -1.0
    _held_since: float | None = None
    _after_frame: list[_AfterFrame] | None = None

    def after_next_frame(self, callback: Callable[[], object], *, within: float) -> None:
        """Call ``callback`` once the next frame this screen draws has gone to the
        terminal, or after ``within`` seconds (more than 0) if none has by then (nothing
        changed, or the screen is not the one shown).

        Not ``call_after_refresh``: that runs once the screen's own queue is empty and
        it knows of nothing to draw, and a widget changed just now tells the screen from
        its own queue, which may not have had its turn (then the callback runs first,
        and what it changes is drawn in the same frame)."""
        waiting = _AfterFrame(callback)
        if self._after_frame is None:
            self._after_frame = []
        self._after_frame.append(waiting)
        self.set_timer(within, waiting.run)

    def holds_frames(self) -> bool:
        """Whether frames should wait a moment (at most ``HOLD_S``): a reply shown here is
        read in a burst. Its reader and the drawing share the interpreter, and a frame
        drawn meanwhile (say, the turns of the message just sent: 10-30 ms) holds the
        reading back, and so the reply's last words, by about as long; what waits is
        drawn with them. None here; a screen that shows replies says."""
        return False

    def focused_changed(self) -> bool:
        """Whether the next frame shows a change of the focused widget (what the user
        types, say)."""
        return self.focused is not None and self.focused in getattr(self, "_dirty_widgets", ())

    def _hold_frame(self) -> bool:
        """Whether the frame due now waits (``holds_frames``, for ``HOLD_S`` at most)."""
        if not self.holds_frames():
            self._held_since = None
            return False
        now = time.monotonic()
        if self._held_since is None:
            self._held_since = now
        if now - self._held_since < self.HOLD_S:
            self._update_timer.resume()  # asked again at the timer's next tick
            return True
        self._held_since = None  # drawn now: the next frame may wait as long again
        return False

    def draw_soon(self) -> None:
        if textual_version().startswith(WRITTEN_FOR):
            self._draw_soon_at = time.monotonic()
            self.check_idle()

    async def _on_idle(self, event: events.Idle) -> None:
        if (
            time.monotonic() - self._draw_soon_at < self.SOON_S
            and self.is_current
            and not self.app._batch_count
            and (
                self._layout_required
                or self._scroll_required
                or self._repaint_required
                or self._dirty_widgets
            )
        ):
            event.prevent_default()
            self._on_timer_update()
            return
        await super()._on_idle(event)

    def _on_timer_update(self) -> None:
        if textual_version().startswith(WRITTEN_FOR) and self._hold_frame():
            return
        self._draw_soon_at = -1.0  # drawn: the next changes wait for the timer again
        super()._on_timer_update()

    def _compositor_refresh(self) -> None:
        """Draw, with the widgets on screen that asked to be drawn again meanwhile.

        A layout gives each widget its new size, and a scrollable one's scrollbar its new
        length and position (reactives that ask for a repaint): Textual drew the frame
        with the old scrollbar, then the scrollbar alone in a frame of its own, a frame
        later (35 such frames for a 2,000-token reply streamed at 200 tokens/s, one per
        write that scrolled the view). Drawn now, the frame shows it as laid out."""
        if self is self.app.screen and textual_version().startswith(WRITTEN_FOR):
            pending = {w for w in self._compositor.visible_widgets if w._repaint_required}
            if pending:
                for widget in pending:
                    widget._repaint_required = False
                self._compositor.update_widgets(pending)
        super()._compositor_refresh()
        if self._after_frame and self is self.app.screen:
            waiting, self._after_frame = self._after_frame, None
            for each in waiting:
                self.call_next(each.run)


class _AfterFrame:
    """A callback for ``DrawsSoon.after_next_frame``, run once: after the frame, or at
    its deadline, whichever comes first."""

    __slots__ = ("_callback",)

    def __init__(self, callback: Callable[[], object]) -> None:
        self._callback: Callable[[], object] | None = callback

    def run(self) -> None:
        callback, self._callback = self._callback, None
        if callback is not None:
            callback()


def draw_soon(widget: Widget) -> None:
    """Draw ``widget``'s screen as soon as it is idle (see ``DrawsSoon``)."""
    if widget.is_attached and isinstance(screen := widget.screen, DrawsSoon):
        screen.draw_soon()
