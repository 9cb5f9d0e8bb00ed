"""The hand-over of a streamed reply from its reading thread to the event loop."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import pytest
from ollama_server import FakeOllama
from waiting import wait_for

from engines import reply_stream
from engines.chat_types import ChatMessage, ChatOptions, ReplyChunk
from engines.ollama_client import URGENT_UNTIL_WORD, ChatEngine
from engines.reply_stream import Feed


@contextlib.asynccontextmanager
async def reply_stream_of(
    server: FakeOllama, **kwargs: Any
) -> AsyncIterator[AsyncGenerator[ReplyChunk, None]]:
    """The server's reply, streamed by a ChatEngine of its own (closed after)."""
    engine = ChatEngine(server.url)
    try:
        stream = engine.stream(
            "llama3.2:latest", [ChatMessage("user", "hi")], ChatOptions(), **kwargs
        )
        yield stream
        await stream.aclose()
    finally:
        await engine.aclose()


async def test_items_put_together_are_taken_together_and_in_order() -> None:
    feed = Feed(asyncio.get_running_loop())
    done = threading.Event()

    def produce() -> None:
        for i in range(200):
            feed.put(i)
        done.set()

    threading.Thread(target=produce).start()
    await asyncio.to_thread(done.wait)
    got: list[object] = []
    batches = 0
    while len(got) < 200:
        got += await asyncio.wait_for(feed.get(), 5)
        batches += 1
    assert got == list(range(200))
    assert batches < 10, "one wake-up of the loop takes what has come, not one per item"


async def test_an_urgent_item_comes_at_once_with_those_before_it() -> None:
    loop = asyncio.get_running_loop()
    feed = Feed(loop)
    feed.put("first", urgent=True)
    assert await asyncio.wait_for(feed.get(), 5) == ["first"]
    # a batched wake-up is now due only after BATCH_S: an urgent item overtakes it
    await asyncio.to_thread(feed.put, "middle")
    await asyncio.to_thread(feed.put, "last", urgent=True)
    got: list[object] = []
    while len(got) < 2:
        got += await asyncio.wait_for(feed.get(), 5)
    assert got == ["middle", "last"]


async def test_a_closed_loop_tells_the_thread_to_stop() -> None:
    other = asyncio.new_event_loop()
    feed = Feed(other)
    other.close()
    assert feed.put("late") is False


async def test_a_reader_that_pauses_between_reads_still_gets_every_token_in_order(
    ollama_server: FakeOllama,
) -> None:
    ollama_server.reply = " ".join(f"w{i}" for i in range(300))
    ollama_server.rate = 400
    engine = ChatEngine(ollama_server.url)
    try:
        chunks = [
            c
            async for c in engine.stream(
                "llama3.2:latest",
                [ChatMessage("user", "hi")],
                ChatOptions(),
                pause=lambda: (0.05, True),
            )
        ]
        assert "".join(c.text for c in chunks) == ollama_server.reply
        assert chunks[-1].stats is not None and chunks[-1].stats.eval_tokens > 0
    finally:
        await engine.aclose()


async def test_stopping_a_paused_reader_closes_the_stream_at_once(
    ollama_server: FakeOllama,
) -> None:
    ollama_server.reply = "word " * 400
    ollama_server.rate = 50
    engine = ChatEngine(ollama_server.url)
    try:
        stream = engine.stream(
            "llama3.2:latest",
            [ChatMessage("user", "hi")],
            ChatOptions(),
            pause=lambda: (600.0, True),
        )
        assert (await anext(stream)).text.strip() == "word"  # then the reader pauses 10 min
        await stream.aclose()
        await wait_for(None, lambda: ollama_server.cancelled == 1, what="the server saw the close")
        assert ollama_server.completed == 0
    finally:
        await engine.aclose()


async def test_the_replys_last_line_ends_a_readers_pause(ollama_server: FakeOllama) -> None:
    """A reader that has caught up pauses (here for ten minutes), and reads what came
    meanwhile at once; the reply's last line ends the pause: the last words are not held
    back by it. The tokens of the pause come together."""
    ollama_server.reply = " ".join(f"w{i}" for i in range(60))
    ollama_server.rate = 40  # 1.5 s: the reader pauses once the first words are read
    async with reply_stream_of(ollama_server, pause=lambda: (600.0, True), joined=True) as stream:
        chunks = await asyncio.wait_for(_all(stream), 20)
    assert "".join(c.text for c in chunks) == ollama_server.reply
    assert chunks[-1].stats is not None
    assert chunks[-2].pieces > 5, "what came while the reader paused is read at once"


async def _all(stream: AsyncGenerator[ReplyChunk, None]) -> list[ReplyChunk]:
    return [chunk async for chunk in stream]


async def _text(stream: AsyncGenerator[ReplyChunk, None]) -> ReplyChunk:
    """The next chunk with text (not one that only says a burst is over)."""
    while not (chunk := await anext(stream)).text:
        assert chunk.pieces == 0 and not chunk.more
    return chunk


async def test_the_first_words_are_read_as_they_come_before_the_reader_pauses(
    ollama_server: FakeOllama,
) -> None:
    """A reader that has caught up pauses (here for ten minutes), but not while the first
    words come (``STEADY_AFTER_S``): they are not held back a pause each."""
    ollama_server.reply = " ".join(f"w{i}" for i in range(200))
    ollama_server.rate = 100
    async with reply_stream_of(ollama_server, pause=lambda: (600.0, True)) as stream:
        got = ""
        while len(got.split()) < 4:
            got += (await asyncio.wait_for(anext(stream), 10)).text
        assert got.split()[:4] == ["w0", "w1", "w2", "w3"]


async def test_the_tokens_up_to_the_first_word_come_at_once_and_those_after_in_batches(
    ollama_server: FakeOllama, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reply often begins with a mark alone ("#", "-"), which the screen holds until a
    word follows. The tokens up to the first word wake the loop at once; batched, the word
    came a batch's wait (``BATCH_S``, here 2 s) after the mark. Those after it are
    batched."""
    monkeypatch.setattr(reply_stream, "BATCH_S", 2.0)
    ollama_server.reply = "# A long answer\n\n" + " ".join(f"w{i}" for i in range(200))
    ollama_server.rate = 50  # a token every 20 ms
    async with reply_stream_of(ollama_server, joined=True) as stream:
        first = await asyncio.wait_for(anext(stream), 10)
        assert first.text == "#"
        started = time.monotonic()
        word = await asyncio.wait_for(_text(stream), 10)
        assert "A" in word.text
        assert time.monotonic() - started < 1.0, "the first word is not held for a batch"
        rest = await asyncio.wait_for(_text(stream), 10)
        assert rest.pieces > 1, "after the first word, tokens come in batches"


async def test_a_reply_of_symbols_alone_is_batched_after_its_first_few_tokens(
    ollama_server: FakeOllama, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The tokens before the first word come at once only up to ``URGENT_UNTIL_WORD``: a
    reply with no word (symbols, emoji) does not wake the loop once per token throughout."""
    monkeypatch.setattr(reply_stream, "BATCH_S", 0.5)
    ollama_server.reply = " ".join(["*"] * 60)
    ollama_server.rate = 50  # a token every 20 ms: batched, 20-odd per batch
    async with reply_stream_of(ollama_server, joined=True) as stream:
        chunks = [chunk async for chunk in stream]
        assert "".join(c.text for c in chunks) == ollama_server.reply
        alone = [c for c in chunks if c.pieces == 1 and c.text]
        assert len(alone) <= URGENT_UNTIL_WORD + 1, "only the first few come one at a time"
        assert any(c.pieces > 5 for c in chunks), "the rest come in batches"


async def test_a_reply_read_faster_than_it_came_is_marked_as_having_more_to_come(
    ollama_server: FakeOllama,
) -> None:
    """At full speed the reply is in the socket before it is read: what is handed over
    meanwhile says so (``more``), and the screen draws it once the rest is read. A
    reply that comes slower than it is read never says so at its end."""
    ollama_server.reply = " ".join(f"w{i}" for i in range(2000))  # the server's limit: 2,048
    ollama_server.rate = None  # as fast as the server writes
    async with reply_stream_of(ollama_server, joined=True) as stream:
        chunks = [chunk async for chunk in stream]
    assert "".join(c.text for c in chunks) == ollama_server.reply
    assert any(c.more for c in chunks), "handed over while the rest was being read"
    assert chunks[-1].stats is not None and not chunks[-1].more


def test_a_reader_that_waited_for_the_network_is_not_behind() -> None:
    """``Reading.behind``: whether the last item came without a wait (more had come)."""
    reading = reply_stream.Reading()
    feed = Feed(asyncio.new_event_loop())
    sent = threading.Event()
    waited: list[bool] = []

    def parts() -> Any:
        time.sleep(0.05)  # the first token: waited for
        yield "a"
        waited.append(reading.behind)
        yield "b"  # buffered already: no wait
        waited.append(reading.behind)
        sent.wait(10)
        time.sleep(0.05)
        yield "c"
        waited.append(reading.behind)

    def convert(part: Any) -> reply_stream.Converted:
        return part, False, False

    thread = reply_stream.read_in_thread(parts, convert, feed, reading)
    sent.set()
    thread.join(10)
    feed.loop.close()
    assert waited == [False, True, False]


def test_the_burst_event_is_set_while_the_reader_is_behind_and_cleared_at_the_end() -> None:
    """``Reading(burst=...)``: whoever shows the reply knows when its reader is behind the
    server (a screen then holds its frames, which would hold the reading back). Set while
    the items come buffered already, clear once a read waits for the network, and clear
    before the last item is handed over, even one read in a burst. The reads are told as
    the transport tells them (``told_reads``): whether each waited for the network."""
    burst = threading.Event()
    reading = reply_stream.Reading(burst=burst)
    reading.reads_told = True
    feed = Feed(asyncio.new_event_loop())
    seen: list[bool] = []
    handed: dict[object, bool] = {}
    put = feed.put

    def told(item: object, *, urgent: bool = False) -> bool:
        handed[item] = burst.is_set()
        return put(item, urgent=urgent)

    feed.put = told  # type: ignore[method-assign]

    def read_waits() -> None:  # as the transport says of a read that waits for the network
        reading.waited = True
        if reading.on_wait is not None:
            reading.on_wait()

    def parts() -> Any:
        read_waits()
        yield "a"
        yield "b"  # buffered already: a burst
        read_waits()
        yield "d"  # waited for: the burst is read
        yield "end"  # the last, in a burst of its own

    def convert(part: Any) -> reply_stream.Converted:
        seen.append(burst.is_set())
        return part, False, part == "end"

    thread = reply_stream.read_in_thread(parts, convert, feed, reading)
    thread.join(10)
    feed.loop.close()
    assert seen == [False, True, False, True]
    assert handed["end"] is False, "cleared before the last item is handed over"
    assert not burst.is_set()


def test_a_reader_whose_reads_are_not_told_never_says_burst() -> None:
    """Where the transport cannot tell the reads (``reads_told`` False), a reader learns
    that a burst is over only from its next item: a server that stalls after a burst would
    hold the screen's frames all the while. Such a reader never sets ``burst``."""
    burst = threading.Event()
    reading = reply_stream.Reading(burst=burst)
    feed = Feed(asyncio.new_event_loop())
    seen: list[bool] = []

    def parts() -> Any:
        yield from ["a", "b", "c"]  # buffered, one after another

    def convert(part: Any) -> reply_stream.Converted:
        seen.append(burst.is_set())
        return part, False, False

    thread = reply_stream.read_in_thread(parts, convert, feed, reading)
    thread.join(10)
    feed.loop.close()
    assert seen == [False, False, False]


def test_a_stopped_reader_leaves_no_burst_behind() -> None:
    """A reply stopped mid-burst (Esc) leaves its screen free to draw."""
    burst = threading.Event()
    reading = reply_stream.Reading(burst=burst)
    reading.reads_told = True
    reading.behind = True
    assert burst.is_set()
    reading.stop()
    assert not burst.is_set()


async def test_the_item_read_once_a_burst_is_read_is_handed_over_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Text that came in a burst waits, on screen, for the burst's end (``more``): the
    item that shows it has ended (its read waited for the network) wakes the loop at
    once, not a batch's wait (here 5 s) later."""
    monkeypatch.setattr(reply_stream, "BATCH_S", 5.0)
    monkeypatch.setattr(reply_stream, "STEADY_BATCH_S", 5.0)
    feed = Feed(asyncio.get_running_loop())
    reading = reply_stream.Reading()
    release = threading.Event()

    def parts() -> Any:
        time.sleep(0.05)
        yield "a"
        yield "b"  # a burst: came with "a"
        yield "c"
        time.sleep(0.05)
        yield "d"  # waited for: the burst is read
        release.wait(10)

    def convert(part: Any) -> reply_stream.Converted:
        return part, False, False

    reply_stream.read_in_thread(parts, convert, feed, reading)
    got: list[object] = []

    async def until_d() -> None:
        while "d" not in got:
            got.extend(await feed.get())

    try:
        await asyncio.wait_for(until_d(), 3)
    finally:
        release.set()
        reading.stop()
    assert got == ["a", "b", "c", "d"]
    assert not reading.behind


async def test_a_last_line_that_comes_with_the_last_words_ends_the_reply_with_no_pause(
    ollama_server: FakeOllama,
) -> None:
    """The reply's last words, its last line and the stream's end often come in one read
    (a server that writes them together, or a reader that read late): the HTTP client
    keeps the last line in its buffer, the socket has nothing more to say, and a reader
    that paused now (here for ten minutes) waited for nothing. It knows the last line has
    come (the transport tells it each read) and reads it at once."""
    ollama_server.reply = " ".join(f"w{i}" for i in range(16))
    ollama_server.rate = 20  # 0.8 s: the reader has caught up, past its first words
    ollama_server.last_with_end = True

    def pause() -> tuple[float, bool]:  # none until the last words are out, with the last line
        return (600.0, True) if ollama_server.reply_written() else (0.0, True)

    async with reply_stream_of(ollama_server, pause=pause, joined=True) as stream:
        chunks = await asyncio.wait_for(_all(stream), 30)
        ended = time.monotonic()
    assert "".join(c.text for c in chunks) == ollama_server.reply
    assert chunks[-1].stats is not None
    assert ollama_server.sent_last_token_at is not None
    assert ended - ollama_server.sent_last_token_at < 5, "no pause once the last line is in"


def test_a_reading_knows_whether_a_read_will_wait_and_when_the_last_line_has_come() -> None:
    """What the transport tells a ``Reading`` (``told_reads``): before a read, whether it
    will wait for the network (``waited``, and ``on_wait``); after it, what came, the
    reply's last line too, even split between two reads."""
    ours, theirs = socket.socketpair()
    try:
        reading = reply_stream.Reading()
        reading.attach(ours)
        waits: list[bool] = []
        reading.on_wait = lambda: waits.append(True)
        reading.before_read()
        assert reading.waited and waits == [True], "nothing had come: the read waits"
        reading.waited = False
        theirs.sendall(b'{"done":false}\n{"do')
        reading.before_read()
        assert not reading.waited and waits == [True], "something had come: no wait"
        reading.received(ours.recv(100))
        assert not reading.last_seen
        theirs.sendall(b'ne":true}\n')
        reading.received(ours.recv(100))
        assert reading.last_seen, "the last line, split between two reads"
    finally:
        ours.close()
        theirs.close()


async def test_a_burst_read_to_its_end_says_so_before_the_reader_waits_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Items read without waiting for the network (a burst: ``Reading.behind``) are drawn
    once the burst is read. When the reader is about to wait for the network again, it
    says the burst is over (``BURST_OVER``) at once, not a batch's wait (here 5 s) later:
    the words already handed over as followed by more are drawn then, not when the next
    token comes (for a model that then thinks a while, much later)."""
    monkeypatch.setattr(reply_stream, "BATCH_S", 5.0)
    monkeypatch.setattr(reply_stream, "STEADY_BATCH_S", 5.0)
    feed = Feed(asyncio.get_running_loop())
    reading = reply_stream.Reading()
    ours, theirs = socket.socketpair()
    release = threading.Event()

    def parts() -> Any:  # reads as the transport does: told (``told_reads``)
        reading.attach(ours)
        reading.reads_told = True
        buffered = b""
        while not release.is_set():
            while b"\n" in buffered:
                line, buffered = buffered.split(b"\n", 1)
                yield line.decode()
            reading.before_read()
            data = ours.recv(100)
            reading.received(data)
            if not data:
                return
            buffered += data

    def convert(part: Any) -> reply_stream.Converted:
        return part, part == "a", False  # the first, at once

    reply_stream.read_in_thread(parts, convert, feed, reading)
    got: list[object] = []
    await wait_for(None, lambda: reading.waited, what="the reader waiting for the first line")
    theirs.sendall(b"a\n")

    async def until(item: object) -> None:
        while item not in got:
            got.extend(await feed.get())

    try:
        await asyncio.wait_for(until("a"), 3)
        assert got == ["a"], "a line waited for is no burst"
        theirs.sendall(b"b\nc\nd\n")  # a burst: read without a wait between them
        await asyncio.wait_for(until(reply_stream.BURST_OVER), 3)
        assert [item for item in got if isinstance(item, str)] == ["a", "b", "c", "d"], got
        assert not reading.behind
    finally:
        release.set()
        reading.stop()
        ours.close()
        theirs.close()


LAST = (
    b'{"model":"llama3.2:latest","created_at":"2026-12-01T10:00:00.123456789Z",'
    b'"message":{"role":"assistant","content":""},"done_reason":"stop","done":true,'
    b'"total_duration":4935812345,"load_duration":20512345,"prompt_eval_count":26,'
    b'"prompt_eval_duration":130012345,"eval_count":259,"eval_duration":4700012345}\n'
)
"""Ollama's last line of a reply, with its figures: longer than ``WATCH_STEP``. (A last
line shorter than that, from a server that is not Ollama, goes unseen by a watch,
which then waits out its pause: 0.1 s for a reply on screen.)"""


def _tcp_pair() -> tuple[socket.socket, socket.socket]:
    """Two ends of a TCP connection on this machine (``SO_RCVLOWAT`` is TCP's)."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        theirs = socket.create_connection(listener.getsockname())
        ours, _ = listener.accept()
    return ours, theirs


WATCHED_TOKEN = b'{"message":{"content":"' + b"w" * 300 + b'"},"done":false}\n'
"""A token's line longer than ``WATCH_STEP``: a watch looks at what came once it is in."""


def start_watch(sock: socket.socket) -> tuple[reply_stream.Reading, list[bool], threading.Thread]:
    """A paused reader's watch of ``sock`` (30 s at most), in a thread: its reading, what
    it returned once it has, and the thread."""
    reading = reply_stream.Reading()
    ended: list[bool] = []
    watch = threading.Thread(target=lambda: ended.append(reply_stream._watch(sock, 30.0, reading)))
    watch.start()
    return reading, ended, watch


def test_a_watch_ends_at_the_last_line_and_leaves_the_socket_as_it_was() -> None:
    """A paused reader watches the socket (``_watch``): what comes is looked at, not read;
    a line that is not the last goes on waiting, the last line ends the wait, and the
    socket wakes its reads at the first byte again after (``SO_RCVLOWAT`` 1)."""
    ours, theirs = _tcp_pair()
    try:
        started = time.monotonic()
        _, ended, watch = start_watch(ours)
        token = WATCHED_TOKEN
        theirs.sendall(token)
        time.sleep(0.3)
        assert watch.is_alive(), "a token's line does not end the watch"
        theirs.sendall(LAST)
        watch.join(10)
        assert ended == [True] and time.monotonic() - started < 10
        assert ours.getsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT) == 1
        ours.settimeout(5)
        got = b""
        while not got.endswith(LAST):
            got += ours.recv(4096)
        assert got == token + LAST, "nothing was read by the watch"
    finally:
        ours.close()
        theirs.close()


def test_a_watch_finds_a_last_line_that_came_in_two_parts() -> None:
    """What came is looked at each time some more has (``WATCH_STEP`` bytes): the last
    line's mark cut between two such looks is still found, and only what is new is
    searched again (a look copies what came into the reply's one buffer)."""
    ours, theirs = _tcp_pair()
    try:
        reading, ended, watch = start_watch(ours)
        cut = LAST.index(b'"done":true') + len(b'"done":t')
        theirs.sendall(WATCHED_TOKEN + LAST[:cut])
        time.sleep(0.3)
        assert watch.is_alive(), "a token's line and the start of the mark do not end it"
        theirs.sendall(LAST[cut:] + b" " * reply_stream.WATCH_STEP)
        watch.join(10)
        assert ended == [True] and not watch.is_alive()
        assert reading.peeked is not None and len(reading.peeked) == reply_stream.PEEK_MAX
    finally:
        ours.close()
        theirs.close()


def test_stopping_a_reader_ends_its_watch_at_once() -> None:
    ours, theirs = _tcp_pair()
    try:
        reading = reply_stream.Reading()
        reading.attach(ours)
        watch = threading.Thread(target=reply_stream._watch, args=(ours, 30.0, reading))
        started = time.monotonic()
        watch.start()
        reading.stop()  # shuts the socket: the watch's poll wakes
        watch.join(10)
        assert not watch.is_alive() and time.monotonic() - started < 10
    finally:
        ours.close()
        theirs.close()
