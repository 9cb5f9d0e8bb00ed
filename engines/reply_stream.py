"""A streamed reply read in a thread of its own, through the official (sync) ``ollama``
client, and handed to the event loop in batches.

Ollama writes one NDJSON line per token. Read on the event loop, through the
``AsyncClient``, every token costs a pass of the loop through httpx, httpcore and anyio
(about 0.4 ms of CPU on a small machine: 0.8 s for a 2,000-token reply, as much as
drawing it). The sync client reads the same lines with a blocking socket in about half
of that, off the loop, and the loop is woken at most every ``BATCH_S`` (``STEADY_BATCH_S``
once the first words are out) to take what has come (the first token and the last at
once, so nothing waits on the batching).

Stopping the reader (the consumer closes the stream, or its task is cancelled) shuts the
socket down, which wakes the thread out of its read and closes the HTTP stream: Ollama
stops generating, as with the async client.
"""

from __future__ import annotations

import asyncio
import contextlib
import select
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

import h11
import h11._readers
import httpx
import ollama

from engines.chat_types import Pause
from engines.tls import client_tls

BATCH_S = 0.02
"""The loop is woken at most this often while the first tokens come (50 times a second)."""
STEADY_AFTER_S = 0.3
STEADY_BATCH_S = 0.1
"""After ``STEADY_AFTER_S`` of a stream the loop is woken at most every ``STEADY_BATCH_S``
(an urgent item, such as the last, still at once). A reply is drawn at most 5 times a
second once its first words are: woken 50 times a second, the loop took each batch of
three or four tokens on its own, a wake-up of the loop and then of its timer each time
(a 2,000-token reply at 200 tokens/s: 953 waits of the loop ended, 354 now)."""
NEXT_PART_S = 0.02
"""How long a reader that has read what came during its pause waits for the next part
before it hands what it read over: at a model's pace (20-200 tokens/s) the next part is
there by then, and goes with it (one wake-up of the loop per pause, not two); a server
that stalls holds nothing back longer than this."""
CAUGHT_UP_S = 0.002
"""A read that waited this long found nothing buffered: the reader has caught up."""
IDLE_KEEP_S = 60.0
"""How long a connection to the server stays open with nothing on it, for the next reply
(httpx's default, 5 s, closed it while the user wrote the next prompt, and a reply then
waited for a new connection: a round trip to a remote server, two or three with TLS).
Below the idle limit of the usual proxies in front of a remote Ollama (nginx: 75 s);
Ollama itself keeps an idle connection for as long as the client does."""

_local = threading.local()  # the reading thread's Reading, for the transport to fill in


class Reading:
    """One reply being read: the socket it comes on, and whether to stop. ``woken``: set
    from any thread, it ends a pause that is not watched (the reply came into sight: its
    reader reads what came at once, and pauses as one in sight from then on)."""

    def __init__(
        self, woken: threading.Event | None = None, burst: threading.Event | None = None
    ) -> None:
        self._lock = threading.Lock()
        self._socket: socket.socket | None = None
        self.stopped = False
        self.finished = False
        self._behind = False
        self._burst = burst
        self.last_seen = False
        """The reply's last line has come (``LAST_LINE``, seen as it is received): the
        reader pauses no more, even where the line waits in the HTTP client's buffer."""
        self.waited = False
        """A read of the socket had to wait for the network since the reader cleared this
        (nothing had come yet): the reader has caught up with the server."""
        self.reads_told = False
        """The socket's reads are told (``told_reads``): ``waited`` says whether the reader
        has caught up; elsewhere a read that took ``CAUGHT_UP_S`` is taken to have waited."""
        self.chunks_together = False
        """The response's chunks are read together (``read_chunks_together``)."""
        self.on_wait: Callable[[], None] | None = None
        """Called (in the reading thread) before a read that will wait for the network."""
        self._woken = woken if woken is not None else threading.Event()  # or stop()
        self._poller: Any = None  # select.poll of the socket: whether a read would wait
        self._sock_pending: Callable[[], int] | None = None  # TLS: bytes decrypted already
        self._received_end = b""  # the last bytes received (a line may come in two reads)
        self.peeked: bytearray | None = None  # where a watch looks at what came (``_watch``)

    @property
    def behind(self) -> bool:
        """Whether the last item came without waiting for the network (a burst: the server
        sends faster than the reply is read, or the reading thread waited for the
        interpreter), and more has come already. Not for what came during a pause. The
        first item read once a burst is, is handed over at once (urgent). ``burst``, an
        Event given by whoever shows the reply, is set meanwhile: a screen that draws
        then takes the interpreter from the reader, and so holds the last words back
        (``tui.compositor.DrawsSoon.holds_frames``). Only where reads are told
        (``reads_told``): a timed reader learns that a burst is over only from its next
        item, and a server that stalls after a burst would hold the screen's frames all
        the while."""
        return self._behind

    @behind.setter
    def behind(self, value: bool) -> None:
        if value is not self._behind:
            self._behind = value
            if self._burst is not None:
                if value and self.reads_told:
                    self._burst.set()
                else:
                    self._burst.clear()

    def attach(self, sock: socket.socket | None) -> bool:
        """The response's socket; whether it can be asked if a read will wait."""
        with self._lock:
            self._socket = sock
            stopped = self.stopped
        if stopped:
            self._shutdown(sock)
            return False
        if sock is None:
            return False
        try:
            poller = select.poll()
            poller.register(sock, select.POLLIN)
        except (OSError, ValueError, AttributeError):  # no poll here, or closed
            return False
        self._poller = poller
        self._sock_pending = sock.pending if isinstance(sock, ssl.SSLSocket) else None
        return True

    def before_read(self) -> None:
        """From the transport (``told_reads``), before it reads the socket: note whether
        the read will wait for the network, and say so (``on_wait``)."""
        poller = self._poller
        if poller is None:
            return
        try:
            ready = bool(poller.poll(0)) or bool(self._sock_pending and self._sock_pending())
        except (OSError, ValueError):  # closed meanwhile: the read says what it is
            return
        if not ready:
            self.waited = True
            if self.on_wait is not None:
                self.on_wait()

    def ready_within(self, seconds: float) -> bool:
        """Whether a read of the socket would return within ``seconds`` (waiting that
        long at most); False where it cannot be asked."""
        poller = self._poller
        if poller is None:
            return False
        try:
            return bool(poller.poll(seconds * 1000))
        except (OSError, ValueError):  # closed meanwhile: the read says what it is
            return False

    def received(self, data: bytes) -> None:
        """From the transport: ``data`` was read from the socket."""
        if not self.last_seen:
            received = self._received_end + data
            self.last_seen = LAST_LINE in received
            self._received_end = received[1 - len(LAST_LINE) :]

    def pause(self, seconds: float, *, watched: bool = True) -> None:
        """Wait (in the reading thread) unless stopped; ``watched``: or until the reply's
        last line has come (see ``_watch``)."""
        if seconds <= 0:
            return
        if not watched:
            self._wait(seconds)
            return
        with self._lock:
            sock = self._socket
        if sock is None or isinstance(sock, ssl.SSLSocket) or not _watch(sock, seconds, self):
            self._wait(min(seconds, UNWATCHED_PAUSE_S))

    def _wait(self, seconds: float) -> None:
        """Wait up to ``seconds``, unless woken (or stopped) meanwhile."""
        if self._woken.wait(seconds) and not self.stopped:
            self._woken.clear()  # woken once: the next pause waits again

    def finish(self) -> None:
        """The last item is read: stopping now would only cost the connection."""
        with self._lock:
            self.finished = True
        self.behind = False  # nothing more to read: no burst to wait for

    def stop(self) -> None:
        """From any thread: stop reading; a read in progress returns at once."""
        with self._lock:
            if self.stopped or self.finished:
                return
            self.stopped = True
            self._woken.set()
            sock = self._socket
        if self._burst is not None:
            self._burst.clear()  # what is left unread is nobody's wait
        self._shutdown(sock)

    @staticmethod
    def _shutdown(sock: socket.socket | None) -> None:
        if sock is not None:
            with contextlib.suppress(OSError):  # already closed
                sock.shutdown(socket.SHUT_RDWR)


UNWATCHED_PAUSE_S = 0.02
"""The longest pause of a reader to be watched for its last line that cannot be (over
TLS its bytes are sealed; some systems lack ``SO_RCVLOWAT``): its last words wait for
the pause, at most this long."""
LAST_LINE = b'"done":true'
"""What only the last line of a reply holds, as Ollama writes it (a token's text is
JSON-escaped within its line, so its own quotes never read so)."""
WATCH_STEP = 256
"""Bytes that must come before a paused reader looks at what came: fewer than Ollama's
last line holds (some 300, with its figures), about two tokens' lines."""
PEEK_MAX = 65536
"""What a watch looks at, at most: more than that waiting is read at once."""


def _watch(sock: socket.socket, seconds: float, reading: Reading) -> bool:
    """Wait up to ``seconds`` for the reply's last line to come on ``sock``, looking at
    what comes (without reading it) every ``WATCH_STEP`` bytes; False if the socket
    cannot be watched so (not Linux or a BSD), to wait the plain way.

    A paused reader reads several tokens at once, once the pause is over: one pass
    through the HTTP client for several tokens, the CPU that pausing saves. The reply's
    last words waited for the pause too; watched, they end it: the pause can be long
    (``IN_SIGHT_PAUSE_S``), and the last words come when they come."""
    deadline = time.monotonic() + seconds
    looked = 0  # what came is looked at from here (the line may have come in two parts)
    if reading.peeked is None:  # one buffer per reply: each look copies into it, no more
        reading.peeked = bytearray(PEEK_MAX)
    peeked = reading.peeked
    try:
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, WATCH_STEP)
    except (OSError, ValueError, AttributeError):  # no poll or SO_RCVLOWAT here, or closed
        return False
    try:
        while not reading.stopped:
            left = deadline - time.monotonic()
            # poll: readable once WATCH_STEP bytes more have come (SO_RCVLOWAT), at the
            # end of the stream, or once the socket is shut (stop())
            if left <= 0 or not poller.poll(left * 1000):
                return True
            size = sock.recv_into(peeked, PEEK_MAX, socket.MSG_PEEK)
            if size < looked + len(LAST_LINE) or size >= PEEK_MAX:
                return True  # nothing new (the end, or readable for another reason) or much
            if peeked.find(LAST_LINE, looked, size) >= 0:
                return True
            looked = size - len(LAST_LINE) + 1
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, size + WATCH_STEP)
    except OSError:  # shut or closed meanwhile: the read that follows says what it is
        return True
    finally:
        with contextlib.suppress(OSError):  # left at 1, or the client's reads would wait too
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, 1)
    return True


class _Transport(httpx.HTTPTransport):
    """httpx's transport, which also tells the reading thread its response's socket,
    and each read of it (``told_reads``), and has its body's chunks read in bulk
    (``read_chunks_together``)."""

    def has_idle_connection(self) -> bool:
        """Whether a connection to the server is open and free for the next request (one
        the server has closed, or kept too long, is not)."""
        return any(c.is_idle() and not c.has_expired() for c in self._pool.connections)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        reading: Reading | None = getattr(_local, "reading", None)
        if reading is not None:
            stream = response.extensions.get("network_stream")
            sock = stream.get_extra_info("socket") if stream is not None else None
            polled = reading.attach(sock if isinstance(sock, socket.socket) else None)
            reading.reads_told = polled and told_reads(stream)
            reading.chunks_together = read_chunks_together(response)
        return response


class _Together:
    """An HTTP/1.1 body reader for h11 (in place of its ``ChunkedReader``) that hands
    over every chunk received so far as one piece of data, not one piece each.

    Ollama sends each token as a chunk of its own. h11 parses them one at a time, and
    each one then went up through httpcore and httpx (iter_raw, iter_bytes, iter_text,
    iter_lines) on its own. A reply read in a burst (the server sends faster than it is
    read, or the reading thread waited for the interpreter) comes in one socket read of
    many chunks: joined, they go up once, and the lines are split from them in one go.
    2,000 buffered tokens, read through the ollama client, took 44 ms of CPU with h11's
    reader, 25 with h11's reader wrapped to join what it read, 19 with this one (medians
    of 10; what is left is the JSON and the client's model of each token). At full speed
    the reply's last words came 46 ms after the server's, not 62 (medians of 6 runs).

    Chunk boundaries mean nothing in HTTP: what is read is the same bytes. The chunks'
    heads are checked as h11 checks them; the last chunk (size 0) and the trailer after
    it are read by h11's own reader."""

    def __init__(self) -> None:
        self._left = 0  # bytes of the current chunk not read yet
        self._footer = b""  # what is left to read of the current chunk's closing CRLF
        self._end: Any = None  # h11's reader, from the last chunk on

    def __call__(self, buf: Any) -> Any:
        if self._end is not None:
            return self._end(buf)
        data = bytes(buf)
        parts: list[bytes] = []
        at = 0
        try:
            at = self._read(data, parts)
        finally:
            if at:
                buf.maybe_extract_at_most(at)
        if parts:
            return h11.Data(data=parts[0] if len(parts) == 1 else b"".join(parts))
        return self._end(buf) if self._end is not None else None

    def _read(self, data: bytes, parts: list[bytes]) -> int:
        """Read the chunks in ``data`` into ``parts``: where it stopped. A malformed
        chunk is raised for once what came before it is handed over."""
        at = 0
        size = len(data)
        while at < size:
            if self._footer:
                got = data[at : at + len(self._footer)]
                if not self._footer.startswith(got):
                    if parts:
                        return at
                    raise h11.LocalProtocolError(
                        f"malformed chunk footer: {got!r} (expected {self._footer!r})"
                    )
                at += len(got)
                self._footer = self._footer[len(got) :]
                continue
            if self._left:
                taken = min(self._left, size - at)
                parts.append(data[at : at + taken])
                at += taken
                self._left -= taken
                if not self._left:
                    self._footer = b"\r\n"
                continue
            end = data.find(b"\r\n", at)
            if end < 0:
                return at
            head = _CHUNK_HEAD.fullmatch(data, at, end + 2)
            if head is None:
                if parts:
                    return at
                raise h11.LocalProtocolError(f"illegal chunk header: {data[at : end + 2]!r}")
            length = int(head["chunk_size"], 16)
            if not length:  # the last chunk: h11 reads it, and the trailer
                self._end = h11._readers.ChunkedReader()
                return at
            self._left = length
            at = end + 2
        return at

    def read_eof(self) -> Any:
        """The connection closed in the middle of the body: h11's own error."""
        return (self._end or h11._readers.ChunkedReader()).read_eof()


_CHUNK_HEAD = h11._readers.chunk_header_re
"""A chunk's head (its size, then any extensions), as h11 reads it."""


def read_chunks_together(response: httpx.Response) -> bool:
    """Have the chunks of ``response``'s body read together (``_Together``); False where
    the body is not chunked or the HTTP client is not the one this was written for
    (httpx over httpcore's HTTP/1.1, over h11): the chunks are then read one by one."""
    if response.headers.get("transfer-encoding", "").lower() != "chunked":
        return False
    stream = getattr(response.stream, "_httpcore_stream", None)  # httpx's ResponseStream
    stream = getattr(stream, "_stream", None)  # httpcore's PoolByteStream
    connection = getattr(stream, "_connection", None)  # its HTTP11ConnectionByteStream
    state = getattr(connection, "_h11_state", None)
    return isinstance(state, h11.Connection) and join_chunks(state)


def join_chunks(state: h11.Connection) -> bool:
    """Have the chunked body that ``state`` (an h11 connection that has received a
    response's head) receives now come in pieces of every chunk received (``_Together``);
    False where it is not reading a chunked body."""
    reader = getattr(state, "_reader", None)
    if type(reader) is not h11._readers.ChunkedReader:
        return False
    state._reader = _Together()  # h11 puts its next reader there once the body ends
    return True


def told_reads(stream: Any) -> bool:
    """Have ``stream`` (httpcore's network stream of a connection, kept for its next
    requests) tell the ``Reading`` of the thread that reads it of each read: before it,
    whether it will wait for the network; after it, what came. The HTTP client reads the
    socket 64 KB at a time and keeps what it has not parsed yet: the reply's last line may
    be in its buffer already while the reader is told nothing of it, and a reader that
    took its time (waiting for the interpreter) for waiting on the network paused for
    nothing. False where the stream has no ``read`` to wrap."""
    if stream is None:
        return False
    if getattr(stream, "_llmp_told", False):
        return True
    read = getattr(stream, "read", None)
    if read is None:
        return False

    def told(max_bytes: int, timeout: float | None = None) -> bytes:
        reading: Reading | None = getattr(_local, "reading", None)
        if reading is None:  # a request of another thread, on a connection kept
            return read(max_bytes, timeout)  # type: ignore[no-any-return]
        reading.before_read()
        data: bytes = read(max_bytes, timeout)
        reading.received(data)
        return data

    try:
        stream.read = told
        stream._llmp_told = True
    except AttributeError:  # slots: nothing is told, the reads are timed
        return False
    return True


def sync_client(host: str, timeout: float) -> ollama.Client:
    limits = httpx.Limits(keepalive_expiry=IDLE_KEEP_S)
    transport = _Transport(verify=client_tls(), limits=limits)
    return ollama.Client(host=host, timeout=timeout, transport=transport)


def needs_connection(client: ollama.Client) -> bool:
    """Whether ``client`` (made by :func:`sync_client`) has no connection to its server
    open and free for the next request. False where its requests to the server would not
    go through the transport made here (httpx mounts another for some URLs), whose
    connections this cannot see: nothing is then opened ahead."""
    http = client._client
    try:
        transport = http._transport_for_url(http.base_url)
    except Exception:  # httpx changed: nothing is opened ahead
        return False
    return isinstance(transport, _Transport) and not transport.has_idle_connection()


class Feed:
    """Items from a thread to a coroutine: the thread puts, the loop takes in batches."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._items: deque[object] = deque()
        self._ready = asyncio.Event()
        self._lock = threading.Lock()
        self._woken = False  # a wake-up is on its way to the loop
        self._next_at = 0.0  # the loop's clock: no wake-up before this, unless urgent
        self._first_at: float | None = None  # the loop's clock at the first wake-up

    def put(self, item: object, *, urgent: bool = False) -> bool:
        """From the thread; False once the loop is gone. An urgent item wakes the loop
        at once, even when a batched wake-up is already on its way."""
        self._items.append(item)
        return self._wake_loop(urgent)

    def hold(self, item: object) -> None:
        """From the thread: add ``item`` without waking the loop (``release`` does)."""
        self._items.append(item)

    def release(self) -> bool:
        """From the thread: wake the loop for what is held, as ``put`` would have (no
        sooner than a batched wake-up allows); False once the loop is gone."""
        return self._wake_loop(False) if self._items else True

    def _wake_loop(self, urgent: bool) -> bool:
        with self._lock:
            if self._woken and not urgent:
                return True
            self._woken = True
        try:
            self.loop.call_soon_threadsafe(self._wake, urgent)
        except RuntimeError:  # the loop is closed: nobody reads any more
            return False
        return True

    def _wake(self, urgent: bool) -> None:
        delay = 0.0 if urgent else self._next_at - self.loop.time()
        if delay > 0:
            self.loop.call_later(delay, self._set)
        else:
            self._set()

    def _set(self) -> None:
        with self._lock:
            self._woken = False
        now = self.loop.time()
        if self._first_at is None:
            self._first_at = now
        steady = now - self._first_at >= STEADY_AFTER_S
        self._next_at = now + (STEADY_BATCH_S if steady else BATCH_S)
        self._ready.set()

    async def get(self) -> list[object]:
        """Everything put so far (waiting for at least one item)."""
        while not self._items:
            self._ready.clear()
            if self._items:
                break
            await self._ready.wait()
        batch: list[object] = []
        while self._items:
            batch.append(self._items.popleft())
        return batch


END = object()
"""Put after the last item: the stream ended."""
BURST_OVER = object()
"""Put (urgent) when the reader, behind the server a moment ago (``Reading.behind``),
waits for the network again: what was handed over as followed by more is not."""

Converted = tuple[object, bool, bool] | None
"""What a part becomes: (item, urgent, last), or None to skip it."""


def read_in_thread(
    parts: Callable[[], Iterator[Any]],
    convert: Callable[[Any], Converted],
    feed: Feed,
    reading: Reading,
    pause: Callable[[], Pause] | None = None,
) -> threading.Thread:
    """Start a thread that reads ``parts()`` and puts ``convert(part)`` into ``feed``,
    then ``END``; an exception is put as it is. ``reading.stop()`` ends it. After the
    last item the thread reads the response to its end, so that its connection is kept
    for the next request.

    ``pause()``: how long to wait once the reader has caught up with the server (its
    read waited for the network), and whether the reply's last line ends the wait (see
    ``_watch``). The tokens that come meanwhile are then read at once: one read, one
    wake-up of the thread, for several tokens instead of one each. Not in the first
    ``STEADY_AFTER_S`` after the first item: the first words are read as they come
    (paused, the second token waited 20-40 ms, and the first words with it)."""

    def run() -> None:
        _local.reading = reading
        iterator: Iterator[Any] | None = None
        first_at: float | None = None  # when the first item was read
        resumed = False  # after a pause, until a read waits: what came meanwhile is no burst

        def burst_over() -> None:  # before a read that waits (told reads)
            # what was read since a pause is handed over with the next part and the next
            # pause (one wake-up of the loop), unless that part is slow to come
            if not (resumed and reading.ready_within(NEXT_PART_S)):
                feed.release()
            if reading.behind:
                reading.behind = False
                feed.put(BURST_OVER, urgent=True)

        reading.on_wait = burst_over
        try:
            iterator = parts()
            while True:
                reading.waited = False
                asked = time.monotonic()
                part = next(iterator, END)
                if part is END:
                    break
                if reading.stopped:
                    return
                if reading.reads_told:
                    caught_up = reading.waited
                else:  # timed: a read that waited for the interpreter looks caught up too
                    caught_up = time.monotonic() - asked > CAUGHT_UP_S
                # a burst is read: what waits for its end (see ``Reading.behind``) is
                # told at once, not a batch's wait later (told reads: ``burst_over``)
                burst_read = caught_up and reading.behind
                catching_up = resumed  # read since a pause (this one ends it if it waited)
                resumed = resumed and not caught_up
                reading.behind = not caught_up and not resumed
                converted = convert(part)
                if converted is not None:
                    item, urgent, last = converted
                    urgent = urgent or burst_read
                    if last:
                        reading.finish()
                    if catching_up and reading.reads_told and not urgent:
                        # read after a pause: what came meanwhile is handed over in one
                        # piece once it is all read (before the next pause, or the read
                        # that waits: ``burst_over``), not its first part at once and the
                        # rest a batch later
                        feed.hold(item)
                    elif not feed.put(item, urgent=urgent):
                        return
                if first_at is None and converted is not None:
                    first_at = time.monotonic()
                if (
                    caught_up
                    and pause is not None
                    and not reading.finished
                    and not reading.last_seen  # in the client's buffer: read it now
                    and first_at is not None
                    and time.monotonic() - first_at >= STEADY_AFTER_S  # the first words at once
                ):
                    feed.release()
                    seconds, watched = pause()
                    reading.pause(seconds, watched=watched)  # handed over first
                    resumed = True
            feed.put(END, urgent=True)
        except BaseException as exc:  # handed to the reader, which raises it
            if not reading.stopped:
                feed.put(exc, urgent=True)
        finally:
            reading.behind = False
            reading.on_wait = None
            close = getattr(iterator, "close", None)
            if close is not None:
                with contextlib.suppress(Exception):  # the socket may be shut already
                    close()  # closes the HTTP response
            _local.reading = None

    thread = threading.Thread(target=run, name="ollama-reply", daemon=True)
    thread.start()
    return thread
