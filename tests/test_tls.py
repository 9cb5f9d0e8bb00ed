"""An Ollama server behind https:// is still verified, though the app reads the certificate
authorities only at the first TLS handshake (engines/tls.py): a certificate nobody vouches
for is refused before anything is sent, on the client that asks for models and on the one
that streams replies; one the configured authorities sign (``SSL_CERT_FILE``, as httpx
reads it) is accepted."""

from __future__ import annotations

import asyncio
import ssl
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from engines import tls
from engines.chat_types import ChatError, ChatMessage, ChatOptions, ReplyChunk
from engines.ollama_client import ChatEngine

if TYPE_CHECKING:
    from ollama_server import DEFAULT_REPLY, FakeOllama
else:
    try:
        from ollama_server import DEFAULT_REPLY, FakeOllama
    except ImportError:
        from tests.ollama_server import DEFAULT_REPLY, FakeOllama

CERTS = Path(__file__).resolve().parent / "data" / "tls"
"""A self-signed certificate for 127.0.0.1 (valid until 2126) and its key."""
MODEL = "llama3.2:latest"


@pytest.fixture
def https_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeOllama]:
    """The fake Ollama over HTTPS, and a fresh shared context (the process's is read once)."""
    monkeypatch.setattr(tls, "_shared", None)
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(CERTS / "cert.pem", CERTS / "key.pem")
    fake = FakeOllama(tls=context).start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def redirect_to(https_server: FakeOllama) -> Iterator[str]:
    """An http:// server that sends every request on to the HTTPS one (as a proxy in front
    of Ollama may); its URL. The CAs are read only when the redirect is followed."""

    class Redirect(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(301)
            self.send_header("Location", https_server.url + self.path)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


async def reply_text(engine: ChatEngine) -> str:
    chunks = [c async for c in engine.stream(MODEL, [ChatMessage("user", "hi")], ChatOptions())]
    return "".join(c.text for c in chunks)


async def test_an_unknown_certificate_is_refused_before_anything_is_sent(
    https_server: FakeOllama,
) -> None:
    assert https_server.url.startswith("https://")
    engine = ChatEngine(https_server.url, timeout=5)
    try:
        status = await engine.status()
        assert not status.online
        with pytest.raises(ChatError):
            await engine.list_models()
        with pytest.raises(ChatError):  # the client that streams replies verifies too
            await reply_text(engine)
    finally:
        await engine.aclose()
    assert https_server.requests == []


async def test_a_certificate_the_configured_authorities_sign_is_accepted(
    https_server: FakeOllama, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(CERTS / "cert.pem"))
    engine = ChatEngine(https_server.url, timeout=5)
    try:
        status = await engine.status(warm_stream=True)
        assert status.online, status.error
        assert status.version == https_server.version
        assert MODEL in [m.name for m in await engine.list_models()]
        assert await reply_text(engine) == DEFAULT_REPLY
    finally:
        await engine.aclose()
    # the second version: the stream client's connection, verified and opened once the
    # server answered, which the reply then went on (no second handshake)
    assert [r.path for r in https_server.requests][:3] == [
        "/api/version",
        "/api/version",
        "/api/tags",
    ]
    assert https_server.connection_of("/api/chat") == https_server.connection_of("/api/version")[1:]


async def test_a_redirect_from_http_to_https_is_verified(
    redirect_to: str, https_server: FakeOllama, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = ChatEngine(redirect_to, timeout=5)
    try:
        assert not (await engine.status()).online  # nobody vouches for it
    finally:
        await engine.aclose()
    assert https_server.requests == []
    monkeypatch.setattr(tls, "_shared", None)
    monkeypatch.setenv("SSL_CERT_FILE", str(CERTS / "cert.pem"))
    engine = ChatEngine(redirect_to, timeout=5)
    try:
        assert (await engine.status()).online
    finally:
        await engine.aclose()
    assert [r.path for r in https_server.requests] == ["/api/version"]


async def test_a_paused_reader_over_tls_waits_no_longer_than_before(
    https_server: FakeOllama, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over TLS the reply's last line cannot be watched for (its bytes are sealed): a
    reader asked to pause long and watch pauses ``UNWATCHED_PAUSE_S`` at most, and the
    reply ends when it ends."""
    monkeypatch.setenv("SSL_CERT_FILE", str(CERTS / "cert.pem"))
    https_server.reply = " ".join(f"w{i}" for i in range(60))
    https_server.rate = 40  # 1.5 s: the reader pauses once its first words are read
    engine = ChatEngine(https_server.url, timeout=5)
    try:
        stream = engine.stream(
            MODEL, [ChatMessage("user", "hi")], ChatOptions(), pause=lambda: (600.0, True)
        )
        chunks = await asyncio.wait_for(_all(stream), 20)
    finally:
        await engine.aclose()
    assert "".join(c.text for c in chunks) == https_server.reply


async def test_over_tls_too_a_last_line_read_with_the_last_words_ends_the_reply_at_once(
    https_server: FakeOllama, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reader sees what it reads decrypted: the reply's last line, come in one read
    with the last words, keeps it from pausing (here ten minutes, unwatched) over TLS as
    over plain HTTP."""
    monkeypatch.setenv("SSL_CERT_FILE", str(CERTS / "cert.pem"))
    https_server.reply = " ".join(f"w{i}" for i in range(16))
    https_server.rate = 20  # 0.8 s: the reader has caught up, past its first words
    https_server.last_with_end = True

    def pause() -> tuple[float, bool]:  # none until the last words are out, with the last line
        return (600.0, False) if https_server.reply_written() else (0.0, False)

    engine = ChatEngine(https_server.url, timeout=5)
    try:
        stream = engine.stream(MODEL, [ChatMessage("user", "hi")], ChatOptions(), pause=pause)
        chunks = await asyncio.wait_for(_all(stream), 20)
    finally:
        await engine.aclose()
    assert "".join(c.text for c in chunks) == https_server.reply
    assert chunks[-1].stats is not None


async def _all(stream: AsyncIterator[ReplyChunk]) -> list[ReplyChunk]:
    return [chunk async for chunk in stream]
