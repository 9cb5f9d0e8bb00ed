"""A streamed reply's chunks read together (``reply_stream.join_chunks``): the same bytes,
whatever the reads, in far fewer pieces."""

from __future__ import annotations

import json
import re
import socket
import threading
from collections.abc import Iterator

import h11
import httpx
import pytest

from engines import reply_stream

LINES = [
    json.dumps({"message": {"content": f"token {i} "}, "done": False}) + "\n" for i in range(300)
]
BODY = "".join(LINES).encode()
CHUNKED = b"".join(b"%x\r\n%s\r\n" % (len(line), line.encode()) for line in LINES) + b"0\r\n\r\n"
HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n\r\n"
)


def head_read(head: bytes = HEAD) -> h11.Connection:
    """An h11 client that sent a request and has read the response's ``head``."""
    conn = h11.Connection(our_role=h11.CLIENT)
    conn.send(h11.Request(method="POST", target="/api/chat", headers=[("Host", "x")]))
    conn.send(h11.EndOfMessage())
    conn.receive_data(head)
    assert isinstance(conn.next_event(), h11.Response)
    return conn


def receiving(pieces: list[bytes]) -> tuple[h11.Connection, list[object]]:
    """The events an h11 client, its chunks joined, makes of ``pieces`` received one
    after another (then the connection closed)."""
    conn = head_read()
    assert reply_stream.join_chunks(conn)
    events: list[object] = []
    for piece in [*pieces, b""]:
        conn.receive_data(piece)
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA or isinstance(event, h11.ConnectionClosed):
                break
            events.append(event)
            if isinstance(event, h11.EndOfMessage):
                return conn, events
    return conn, events


def data_of(events: list[object]) -> bytes:
    return b"".join(bytes(e.data) for e in events if isinstance(e, h11.Data))


def test_every_chunk_received_comes_as_one_piece_and_the_body_ends_as_it_should() -> None:
    conn, events = receiving([CHUNKED])
    assert data_of(events) == BODY
    assert [type(e) for e in events] == [h11.Data, h11.EndOfMessage], (
        "300 chunks received at once: one piece of data, not 300"
    )
    assert conn.their_state is h11.DONE, "the connection can serve the next request"


@pytest.mark.parametrize("size", [1, 2, 5, 7, 64, 1000])
def test_chunks_split_anywhere_between_reads_come_whole_and_in_order(size: int) -> None:
    pieces = [CHUNKED[i : i + size] for i in range(0, len(CHUNKED), size)]
    conn, events = receiving(pieces)
    assert data_of(events) == BODY
    assert isinstance(events[-1], h11.EndOfMessage)
    assert conn.their_state is h11.DONE


def test_a_trailer_after_the_chunks_is_read_as_h11_reads_it() -> None:
    body = CHUNKED[: -len(b"\r\n")] + b"X-Checksum: 42\r\n\r\n"
    _, events = receiving([body[:-5], body[-5:]])
    assert data_of(events) == BODY
    end = events[-1]
    assert isinstance(end, h11.EndOfMessage)
    assert (b"x-checksum", b"42") in list(end.headers)


@pytest.mark.parametrize(
    ("bad", "handed", "error"),
    [
        (b"zz\r\nnot a chunk\r\n", b"", "illegal chunk header"),
        (b"3\r\nabcdef\r\n", b"abc", "malformed chunk footer"),  # longer than it says
    ],
)
def test_a_malformed_chunk_hands_over_the_good_ones_before_it_then_fails(
    bad: bytes, handed: bytes, error: str
) -> None:
    good = b"".join(b"%x\r\n%s\r\n" % (len(line), line.encode()) for line in LINES[:10])
    conn = head_read()
    assert reply_stream.join_chunks(conn)
    conn.receive_data(good + bad)
    event = conn.next_event()
    assert isinstance(event, h11.Data)
    assert bytes(event.data) == "".join(LINES[:10]).encode() + handed, "the good ones first"
    with pytest.raises(h11.RemoteProtocolError, match=error):
        conn.next_event()


def test_a_connection_closed_in_the_middle_of_a_chunk_is_an_incomplete_body() -> None:
    conn = head_read()
    assert reply_stream.join_chunks(conn)
    conn.receive_data(CHUNKED[:1000])
    assert isinstance(conn.next_event(), h11.Data)
    conn.receive_data(b"")
    with pytest.raises(h11.RemoteProtocolError, match="incomplete chunked read"):
        conn.next_event()


def test_a_body_not_chunked_is_read_as_it_was() -> None:
    conn = head_read(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n")
    assert not reply_stream.join_chunks(conn)


class ChunkedServer:
    """A real HTTP/1.1 server on a socket: each request on a connection (kept alive) is
    answered with ``CHUNKED``, head and body in one write."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.connections = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    @staticmethod
    def _answer(conn: socket.socket) -> None:
        buffered = b""
        with conn:
            while True:
                while b"\r\n\r\n" not in buffered:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buffered += data
                head, buffered = buffered.split(b"\r\n\r\n", 1)
                length = int(re.search(rb"(?i)content-length: *(\d+)", head)[1])  # type: ignore[index]
                while len(buffered) < length:
                    buffered += conn.recv(65536)
                buffered = buffered[length:]
                conn.sendall(HEAD + CHUNKED)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def chunked_server() -> Iterator[ChunkedServer]:
    server = ChunkedServer()
    yield server
    server.close()


def test_a_reply_read_through_the_apps_transport_comes_in_few_pieces_whole_and_keeps_its_connection(
    chunked_server: ChunkedServer,
) -> None:
    """Through httpx and httpcore as installed: the body read in one go comes up in a
    few pieces (one per read of the socket), the same bytes, and the connection serves
    the next request."""
    client = httpx.Client(base_url=chunked_server.url, transport=reply_stream._Transport())
    try:
        for _ in range(2):
            reading = reply_stream.Reading()
            reply_stream._local.reading = reading
            try:
                with client.stream("POST", "/api/chat", content=b"{}") as response:
                    pieces = list(response.iter_raw())
            finally:
                reply_stream._local.reading = None
            assert reading.chunks_together
            assert b"".join(pieces) == BODY
            assert len(pieces) < 10, f"{len(pieces)} pieces for 300 chunks read in one go"
        assert chunked_server.connections == 1, "the connection was kept for the next request"
    finally:
        client.close()
