"""What the app writes to its terminal, thinned: only what changed, in fewer bytes.

Textual draws a frame as whole lines: each segment as ``ESC[…m text ESC[0m`` after an
absolute cursor move, and every visible line again when a view scrolls. Over SSH on a
thin link that is most of the link. :class:`OutputFilter` keeps a model of the screen
the terminal shows (a character and a style per cell) and, for each write, sends only:

- the cells that differ from what the terminal already shows;
- a style sequence only when the style changes, as the shortest change from the
  terminal's current style (``ESC[1m`` rather than a reset and the whole style again);
- erase-to-end-of-line (``ESC[K``) for a blank run that reaches the right edge, and
  erase-characters (``ESC[nX``) plus a cursor move for a long blank run inside a line;
- the shortest cursor move (none when the cursor is already there, ``\\r``, a relative
  move, or rewriting a cell or two already right).

Anything it does not model (graphics, screen clears, scrolls, mode changes) passes
through in order; those that change the screen make it forget what it knew, so the next
frame is written whole. It never drops a byte that could change what is shown.

:class:`FilteredDriver` is Textual's Linux driver with the filter on its ``write``. The
filter is off where ``LLM_PESSOAL_OUTPUT_FILTER=0`` (to measure or rule it out). It also
keeps :class:`OutputBacklog`, what it has handed to Textual's writer thread that is not yet
written to the terminal: on a thin link, where the terminal takes bytes slower than the
app makes them, step previews wait for it (``output_backlog``; ``Picture.show_preview``).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from rich.cells import get_character_cell_size

if TYPE_CHECKING:
    from textual.driver import Driver

log = logging.getLogger(__name__)

ENV_SWITCH = "LLM_PESSOAL_OUTPUT_FILTER"
SYNC_START = "\x1b[?2026h"
SYNC_END = "\x1b[?2026l"

_TOKENS = re.compile(
    r"\x1b\[([0-9;:]*)m"  # 1: SGR
    r"|\x1b\[(\d*)(?:;(\d*))?[Hf]"  # 2, 3: cursor position
    r"|(\x1b\[[\x30-\x3f]*[\x20-\x2f]*[\x40-\x7e])"  # 4: any other CSI
    r"|(\x1b[P_\]^X][\s\S]*?(?:\x1b\\|\x07))"  # 5: DCS, APC, OSC, PM, SOS strings
    r"|(\x1b[\s\S]?)"  # 6: any other escape (or a lone ESC)
    r"|([\x00-\x1a\x1c-\x1f\x7f])"  # 7: C0 controls and DEL
    r"|([^\x00-\x1f\x7f]+)"  # 8: text
)

Style = tuple[str | None, str | None, str | None, frozenset[str]]
"""(foreground, background, underline colour, attributes) as SGR parameters."""

PLAIN: Style = (None, None, None, frozenset())

# Attributes and the parameter that turns each off (bold and dim share theirs).
_OFF = {
    "1": "22",
    "2": "22",
    "3": "23",
    "4": "24",
    "21": "24",
    "5": "25",
    "6": "25",
    "7": "27",
    "8": "28",
    "9": "29",
    "53": "55",
}
_OFF_CLEARS = {
    "22": ("1", "2"),
    "23": ("3",),
    "24": ("4", "21"),
    "25": ("5", "6"),
    "27": ("7",),
    "28": ("8",),
    "29": ("9",),
    "55": ("53",),
}
_BLANK_SAFE = frozenset({"1", "2", "3", "5", "6", "8"})
"""Attributes that do not change how a blank cell looks (erasing paints the same)."""

_MODES_KEPT = frozenset(
    {"25", "2026", "1000", "1002", "1003", "1004", "1006", "1015", "2004", "12", "7", "1", "1036"}
)
"""Private modes that change nothing on screen (cursor, mouse, paste, focus, sync...)."""

MIN_ERASE = 4
"""The shortest blank run worth ``ESC[K`` (3 bytes) at the end of a line."""
MIN_ERASE_INSIDE = 12
"""The shortest blank run worth ``ESC[nX ESC[nC`` inside a line."""


def _parse_sgr(style: Style, params: str) -> Style:
    fg, bg, ul, attrs = style
    added: set[str] = set(attrs)
    parts = params.split(";") if params else ["0"]
    i = 0
    while i < len(parts):
        p = parts[i]
        i += 1
        if p in ("", "0"):
            fg = bg = ul = None
            added.clear()
        elif p in ("38", "48", "58"):
            kind = parts[i] if i < len(parts) else ""
            take = 4 if kind == "2" else 2 if kind == "5" else 1
            value = ";".join([p, *parts[i : i + take]])
            i += take
            if p == "38":
                fg = value
            elif p == "48":
                bg = value
            else:
                ul = value
        elif p.startswith(("38:", "48:", "58:")):
            if p[0] == "3":
                fg = p
            elif p[0] == "4":
                bg = p
            else:
                ul = p
        elif p == "39":
            fg = None
        elif p == "49":
            bg = None
        elif p == "59":
            ul = None
        elif p.isdigit() and (30 <= int(p) <= 37 or 90 <= int(p) <= 97):
            fg = p
        elif p.isdigit() and (40 <= int(p) <= 47 or 100 <= int(p) <= 107):
            bg = p
        elif p in _OFF_CLEARS:
            added.difference_update(_OFF_CLEARS[p])
            if p == "24":
                added.difference_update({a for a in added if a.startswith("4:")})
        elif p == "4:0":
            added.difference_update({a for a in added if a == "4" or a.startswith("4:")})
        else:
            added.add(p)  # an attribute (or one we do not know: kept, turned off by a reset)
    return (fg, bg, ul, frozenset(added))


def _params(style: Style) -> list[str]:
    fg, bg, ul, attrs = style
    out = sorted(attrs)
    out += [c for c in (fg, bg, ul) if c is not None]
    return out


@functools.lru_cache(maxsize=4096)
def style_change(current: Style | None, wanted: Style) -> str:
    """The shortest SGR sequence that takes the terminal from ``current`` (None:
    unknown) to ``wanted``."""
    full = "\x1b[" + ";".join(["0", *_params(wanted)]) + "m" if wanted != PLAIN else "\x1b[m"
    if current is None:
        return full
    if current == wanted:
        return ""
    fg, bg, ul, attrs = wanted
    cfg, cbg, cul, cattrs = current
    removed = cattrs - attrs
    if any(a not in _OFF for a in removed):
        return full
    parts: list[str] = []
    offs = sorted({_OFF[a] for a in removed})
    parts += offs
    # bold and dim share their off: turn back on the one that stays
    readd = {a for off in offs for a in _OFF_CLEARS[off] if a in attrs}
    parts += sorted((attrs - cattrs) | readd)
    if fg != cfg:
        parts.append(fg or "39")
    if bg != cbg:
        parts.append(bg or "49")
    if ul != cul:
        parts.append(ul or "59")
    diff = "\x1b[" + ";".join(parts) + "m"
    return diff if len(diff) < len(full) else full


def _cells(text: str) -> list[str] | None:
    """``text`` as terminal cells ("" for the right half of a wide character), or None
    when it starts with a combining character (no cell of its own to add it to)."""
    if text.isascii():
        return list(text)
    cells: list[str] = []
    for ch in text:
        width = get_character_cell_size(ch)
        if width == 0:
            if not cells:
                return None
            last = -2 if cells[-1] == "" else -1
            cells[last] += ch
        elif width == 2:
            cells += [ch, ""]
        else:
            cells.append(ch)
    return cells


class OutputFilter:
    """Rewrites Textual's output so it carries only what changed on screen.

    ``size`` tells the terminal's (columns, rows) at each write; when it changes the
    model is forgotten. ``feed`` takes what Textual wrote and returns what to send."""

    def __init__(self, size: Callable[[], tuple[int, int]]) -> None:
        self._size = size
        self.width = 0
        self.height = 0
        self._chars: list[list[str | None]] = []
        self._styles: list[list[Style | None]] = []
        # what Textual means: its cursor and style
        self._row: int | None = 0
        self._col: int | None = 0
        self._style: Style = PLAIN
        # what the terminal has: its cursor and style
        self._at_row: int | None = None
        self._at_col: int | None = None
        self._sgr: Style | None = None
        self._sgr_cache: dict[tuple[Style, str], Style] = {}
        self._out: list[str] = []

    # -- the model -----------------------------------------------------------------

    def forget(self) -> None:
        """Know nothing about the screen, the cursor or the style (the next frame is
        written whole)."""
        self._chars = [[None] * self.width for _ in range(self.height)]
        self._styles = [[None] * self.width for _ in range(self.height)]
        self._at_row = self._at_col = None
        self._sgr = None

    def _check_size(self) -> None:
        try:
            width, height = self._size()
        except (OSError, ValueError):
            return
        if (width, height) != (self.width, self.height):
            self.width, self.height = width, height
            self.forget()

    # -- emitting ------------------------------------------------------------------

    def _move(self, row: int, col: int) -> None:
        at_row, at_col = self._at_row, self._at_col
        if at_row == row and at_col == col:
            return
        out = self._out
        if at_row == row and at_col is not None:
            if col == 0:
                out.append("\r")
            elif col > at_col:
                gap = col - at_col
                # rewrite cells already right when that is shorter than a move
                if gap <= 3 and self._rewritable(row, at_col, col):
                    out.append("".join(self._chars[row][at_col:col]))  # type: ignore[arg-type]
                else:
                    out.append("\x1b[C" if gap == 1 else f"\x1b[{gap}C")
            else:
                out.append(f"\x1b[{row + 1};{col + 1}H")
        else:
            out.append(f"\x1b[{row + 1};{col + 1}H" if col else f"\x1b[{row + 1}H")
        self._at_row, self._at_col = row, col

    def _rewritable(self, row: int, start: int, end: int) -> bool:
        chars = self._chars[row][start:end]
        return (
            self._sgr is not None
            and all(c is not None and len(c) == 1 and c.isascii() for c in chars)
            and all(s == self._sgr for s in self._styles[row][start:end])
        )

    def _set_style(self, style: Style) -> None:
        change = style_change(self._sgr, style)
        if change:
            self._out.append(change)
            self._sgr = style

    def _emit(self, row: int, col: int, cells: list[str], style: Style, to_edge: bool) -> None:
        """Write ``cells`` at (row, col), which the model says differ from the screen."""
        self._move(row, col)
        self._set_style(style)
        out = self._out
        blank_safe = style[3] <= _BLANK_SAFE
        n = len(cells)
        if blank_safe and to_edge:
            k = n
            while k > 0 and cells[k - 1] == " ":
                k -= 1
            if n - k >= MIN_ERASE:
                self._write_cells(cells[:k], blank_safe)
                out.append("\x1b[K")
                self._at_col = col + k if col + k < self.width else None
                return
        self._write_cells(cells, blank_safe)
        end = col + n
        self._at_col = end if end < self.width else None  # pending wrap: unknown

    def _write_cells(self, cells: list[str], blank_safe: bool) -> None:
        if not blank_safe or len(cells) < MIN_ERASE_INSIDE:
            self._out.append("".join(cells))
            return
        # long runs of blank cells (a space carrying a combining mark is not blank) are
        # erased and stepped over
        out = self._out
        start = i = 0
        n = len(cells)
        while i < n:
            if cells[i] != " ":
                i += 1
                continue
            j = i
            while j < n and cells[j] == " ":
                j += 1
            if j - i >= MIN_ERASE_INSIDE:
                if start < i:
                    out.append("".join(cells[start:i]))
                out.append(f"\x1b[{j - i}X\x1b[{j - i}C")
                start = j
            i = j
        if start < n:
            out.append("".join(cells[start:]))

    def _text(self, text: str) -> None:
        row, col = self._row, self._col
        cells = _cells(text)
        if row is None or col is None or cells is None or col + len(cells) > self.width:
            self._raw_text(text)
            return
        if row >= self.height:
            self._raw_text(text)
            return
        n = len(cells)
        if col + n == self.width and len(cells[-1] or cells[-2 if n > 1 else -1]) > 1:
            # a combining mark in the last column: some terminals (pyte) wrap before it
            self._raw_text(text)
            return
        style = self._style
        chars = self._chars[row]
        styles = self._styles[row]
        end = col + n
        self._col = end
        if chars[col:end] == cells and styles[col:end] == [style] * n:
            return
        first = 0
        while chars[col + first] == cells[first] and styles[col + first] == style:
            first += 1
        last = n - 1
        while chars[col + last] == cells[last] and styles[col + last] == style:
            last -= 1
        if cells[first] == "" and first > 0:
            first -= 1  # the right half of a wide character: write the character
        if last + 1 < n and cells[last + 1] == "":
            last += 1
        to_edge = end == self.width
        if to_edge and all(c == " " for c in cells[last + 1 :]):
            last = n - 1  # a blank tail is erased to the edge anyway
        # a wide character cut in half by this write is gone from the screen
        if chars[col] == "" and col > 0:
            chars[col - 1] = None
        if end < self.width and chars[end] == "":
            chars[end] = None
        # erasing to the edge is right only when what is written reaches it
        self._emit(row, col + first, cells[first : last + 1], style, to_edge and last == n - 1)
        chars[col:end] = cells
        styles[col:end] = [style] * n

    def _raw_text(self, text: str) -> None:
        """Text where the model cannot follow: sent as it is, and the model forgotten."""
        if self._row is not None and self._col is not None:
            self._move(self._row, self._col)
        self._set_style(self._style)
        self._out.append(text)
        self.forget()
        self._sgr = self._style
        self._row = self._col = None

    def _passthrough(self, seq: str, *, screen_changes: bool, moves_cursor: bool) -> None:
        if (screen_changes or moves_cursor) and self._row is not None and self._col is not None:
            self._move(self._row, self._col)  # it acts where Textual's cursor is
            self._set_style(self._style)
        self._out.append(seq)
        if screen_changes:
            self.forget()
        if moves_cursor:
            self._at_row = self._at_col = None
            self._row = self._col = None

    # -- parsing -------------------------------------------------------------------

    def feed(self, data: str) -> str:
        """What to send to the terminal for ``data`` (what Textual wrote)."""
        self._check_size()
        self._out = []
        for match in _TOKENS.finditer(data):
            kind = match.lastindex  # each alternative ends with a group of its own
            if kind == 8:
                self._text(match.group(8))
            elif kind == 1:
                key = (self._style, match.group(1))
                style = self._sgr_cache.get(key)
                if style is None:
                    if len(self._sgr_cache) > 4096:
                        self._sgr_cache.clear()
                    style = self._sgr_cache[key] = _parse_sgr(*key)
                self._style = style
            elif kind == 2 or kind == 3:
                row, col = match.group(2, 3)
                r = int(row or 1) - 1
                c = int(col or 1) - 1
                if 0 <= r < self.height and 0 <= c < self.width:
                    self._row, self._col = r, c
                else:
                    self._passthrough(match.group(0), screen_changes=False, moves_cursor=True)
            elif kind == 4:
                self._csi(match.group(4))
            elif kind == 5:
                string = match.group(5)
                control_data = string.split(";", 1)[0]
                graphics = string.startswith("\x1bP") or (
                    string.startswith("\x1b_G")
                    and ("a=T" in control_data or "a=p" in control_data)
                    and "U=1" not in control_data
                )
                is_osc = string.startswith("\x1b]")
                self._passthrough(string, screen_changes=graphics, moves_cursor=not is_osc)
            elif kind == 6:
                esc = match.group(6)
                # ESC 7 / ESC 8 (save and restore the cursor), ESC c (reset), charsets...
                self._passthrough(esc, screen_changes=esc in ("\x1bc",), moves_cursor=True)
            elif kind == 7:
                self._control(match.group(7))
        self._sync_cursor()
        return "".join(self._out)

    def _control(self, control: str) -> None:
        if control == "\r" and self._col is not None:
            self._col = 0
        elif control == "\n" and self._row is not None:
            # Textual follows a new line with an absolute move; until one comes, the
            # line feed is owed (sent if text comes first).
            if self._row + 1 < self.height:
                self._row += 1
                self._col = 0  # the tty's output processing adds the carriage return
            else:
                self._passthrough(control, screen_changes=True, moves_cursor=True)
        elif control == "\x07":
            self._out.append(control)
        else:
            self._passthrough(control, screen_changes=True, moves_cursor=True)

    def _csi(self, seq: str) -> None:
        final = seq[-1]
        body = seq[2:-1]
        if final in "hl" and body.startswith("?"):
            modes = set(body[1:].split(";"))
            self._passthrough(seq, screen_changes=not modes <= _MODES_KEPT, moves_cursor=False)
        elif final in "nctuq" and not (final == "u" and body == ""):
            # reports, keyboard protocol, cursor shape: nothing on screen changes
            self._out.append(seq)
        else:
            self._passthrough(seq, screen_changes=True, moves_cursor=True)

    def _sync_cursor(self) -> None:
        """Leave the terminal's cursor where Textual left its own (it shows there)."""
        if self._row is not None and self._col is not None:
            self._move(self._row, self._col)


class OutputBacklog:
    """Characters handed to the terminal's writer thread and not yet written to the
    terminal (into the kernel's pty or socket buffer): near 0 where the terminal keeps
    up, growing while a thin link holds the writes back."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.pending = 0

    def add(self, n: int) -> None:
        with self._lock:
            self.pending += n

    def done(self, n: int) -> None:
        with self._lock:
            self.pending = max(0, self.pending - n)


class _CountingFile:
    """The terminal's file as Textual's writer thread sees it: what it writes is counted
    done in ``backlog`` once flushed (a write into Python's buffer is not on the wire)."""

    def __init__(self, file: Any, backlog: OutputBacklog) -> None:
        self._file = file
        self._backlog = backlog
        self._unflushed = 0

    def write(self, text: str) -> int:
        written: int = self._file.write(text)
        self._unflushed += len(text)
        return written

    def flush(self) -> None:
        try:
            self._file.flush()
        finally:
            done, self._unflushed = self._unflushed, 0
            self._backlog.done(done)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._file, name)


def output_backlog(app: object) -> int:
    """Characters ``app`` has written that its terminal has not taken yet (0 where its
    driver does not count them: tests, the web)."""
    backlog = getattr(getattr(app, "_driver", None), "backlog", None)
    return backlog.pending if isinstance(backlog, OutputBacklog) else 0


def filter_enabled(env: dict[str, str] | None = None) -> bool:
    env = dict(os.environ) if env is None else env
    return env.get(ENV_SWITCH, "1").strip().lower() not in ("0", "off", "false", "no")


META_SENDS_ESCAPE_ON = "\x1b[?1036h"
META_SENDS_ESCAPE_OFF = "\x1b[?1036l"
"""xterm's metaSendsEscape: Alt+key arrives as ESC key (Textual's alt+key), not as an
8-bit character (Debian's xterm sends "ã" for Alt+c by default). Others ignore it."""


def watch_hangup(fileno: int, app: Any, driver: Any) -> threading.Thread | None:
    """Watch the terminal (``fileno``, its input) in a thread of its own, and have the app
    quit once it hangs up (an ssh link dropped, the terminal window closed): ``driver``
    writes nothing more (``hung_up``), and the app's ``hung_up()``, or else ``exit()``, is
    called on its event loop. The kernel's SIGHUP ends the app as well, where it is not
    ignored; where it is (``nohup``), Textual read an empty input over and over, a CPU's
    worth, for as long as the machine ran, and a quit then waited for ever on output that
    nobody read. None where the input cannot be watched (not a terminal, no ``poll``)."""
    import select

    try:
        if not os.isatty(fileno):
            return None
        poller = select.poll()
        poller.register(fileno, 0)  # no events asked: poll() wakes on a hang-up or error
    except (OSError, ValueError, AttributeError):
        return None

    def watch() -> None:
        while True:
            try:
                events = poller.poll()
            except InterruptedError:
                continue
            except (OSError, ValueError):
                return
            if any(
                mask & (select.POLLHUP | select.POLLERR | select.POLLNVAL) for _, mask in events
            ):
                break
        log.warning("the terminal hung up: quitting")
        driver.hung_up = True
        quit_ = getattr(app, "hung_up", None) or app.exit
        with contextlib.suppress(RuntimeError):  # the app is gone already
            app.call_from_thread(quit_)

    thread = threading.Thread(target=watch, name="terminal-hangup", daemon=True)
    thread.start()
    return thread


def with_output_filter(driver: type[Driver]) -> type[Driver]:
    """``driver`` with :class:`OutputFilter` on its output (unless switched off) and Alt
    keys asked of xterm as ESC prefixes, where it is Textual's Linux driver; else
    ``driver`` itself."""
    from textual.drivers.linux_driver import LinuxDriver

    if not (isinstance(driver, type) and issubclass(driver, LinuxDriver)):
        return driver

    class FilteredDriver(driver):  # type: ignore[valid-type,misc]
        """Writes only what changed on screen (:class:`OutputFilter`)."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._output_filter = OutputFilter(self._get_terminal_size)
            self._held: str | None = None
            self._failed = not filter_enabled()
            self.backlog = OutputBacklog()
            self.hung_up = False
            """The terminal is gone (``watch_hangup``): nothing more is written to it."""
            self._hangup_watch: threading.Thread | None = None
            terminal: Any = self._file  # type: ignore[has-type]
            self._file = _CountingFile(terminal, self.backlog)

        def _send(self, data: str) -> None:
            if self.hung_up:
                return  # nobody reads it: written, it filled the writer's queue, then waited
            self.backlog.add(len(data))
            super().write(data)

        def start_application_mode(self) -> None:
            super().start_application_mode()
            self.write(META_SENDS_ESCAPE_ON)
            self.flush()
            if self._hangup_watch is None:  # once: application mode comes back after ^Z
                self._hangup_watch = watch_hangup(self.fileno, self._app, self)

        def stop_application_mode(self) -> None:
            self.write(META_SENDS_ESCAPE_OFF)
            super().stop_application_mode()

        def write(self, data: str) -> None:
            if self._failed:
                self._send(data)
                return
            # Textual brackets each frame in synchronized-output marks: a frame with
            # nothing left to send goes without them.
            if data == SYNC_START:
                self._held = data
                return
            if data == SYNC_END and self._held is not None:
                self._held = None
                return
            if data == SYNC_END:
                self._send(data)
                return
            try:
                out = self._output_filter.feed(data)
            except Exception:  # never lose the screen over an optimisation
                log.exception("output filter failed; writing unfiltered from now on")
                self._failed = True
                out = data
            if out and self._held is not None:
                out = self._held + out
                self._held = None
            if out:
                self._send(out)

    return FilteredDriver
