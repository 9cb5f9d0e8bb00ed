"""ChatEngine against a real HTTP server that speaks Ollama's API (tests/ollama_server.py)."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from waiting import wait_for

from engines import ollama_client
from engines.chat_types import (
    ChatError,
    ChatMessage,
    ChatOptions,
    ModelNotFound,
    OllamaUnavailable,
    ReplyChunk,
    StreamBroken,
)
from engines.ollama_client import ChatEngine

if TYPE_CHECKING:
    from ollama_server import DEFAULT_REPLY, FakeOllama, tokenize
else:
    try:
        from ollama_server import DEFAULT_REPLY, FakeOllama, tokenize
    except ImportError:
        from tests.ollama_server import DEFAULT_REPLY, FakeOllama, tokenize

REPO = Path(__file__).resolve().parent.parent
MODEL = "llama3.2:latest"
HI = [ChatMessage("user", "hi")]
LONG_REPLY = "word " * 400


@pytest.fixture
async def engine(ollama_server: FakeOllama) -> AsyncIterator[ChatEngine]:
    e = ChatEngine(ollama_server.url, timeout=5)
    try:
        yield e
    finally:
        await e.aclose()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def collect(
    engine: ChatEngine,
    history: list[ChatMessage] = HI,
    options: ChatOptions | None = None,
    model: str = MODEL,
) -> list[ReplyChunk]:
    return [c async for c in engine.stream(model, history, options or ChatOptions())]


def chat_bodies(server: FakeOllama) -> list[dict[str, object]]:
    return [r.body for r in server.requests if r.path == "/api/chat"]


# -- models ----------------------------------------------------------------------------


async def test_list_models_with_labels(engine: ChatEngine) -> None:
    models = await engine.list_models()
    assert [m.label() for m in models] == [
        "llama3.2:latest  (3.2B, Q4_K_M, llama, 2.0 GB)",
        "qwen2.5-coder:7b  (7.6B, Q4_K_M, qwen2, 4.7 GB)",
    ]
    assert models[1].size == 4683087332
    assert models[0].modified_at is not None and models[0].modified_at.year == 2025


async def test_no_models_is_an_empty_list(engine: ChatEngine, ollama_server: FakeOllama) -> None:
    ollama_server.models.clear()
    assert await engine.list_models() == []


async def test_show_gives_context_length_and_details(engine: ChatEngine) -> None:
    llama = await engine.show("llama3.2")  # ":latest" implied, as in Ollama
    assert (llama.context_length, llama.family, llama.parameter_size) == (131072, "llama", "3.2B")
    qwen = await engine.show("qwen2.5-coder:7b")
    assert qwen.context_length == 32768
    assert "insert" in qwen.capabilities
    assert "<|im_start|>" in qwen.template
    with pytest.raises(ModelNotFound, match="ollama pull mistral"):
        await engine.show("mistral")


async def test_a_model_is_shown_once_for_all_who_ask_until_it_is_deleted(
    engine: ChatEngine, ollama_server: FakeOllama
) -> None:
    """The header, the context meter and the tools offered to the first reply all ask
    for the same model's details: the server is asked once, unless the model changes."""

    def shows() -> int:
        return sum(r.path == "/api/show" for r in ollama_server.requests)

    first, same = await asyncio.gather(  # asked at once: one question for both
        engine.show("qwen2.5-coder:7b"), engine.show("qwen2.5-coder:7b")
    )
    assert first == same
    assert await engine.show("qwen2.5-coder:7b") == first
    assert shows() == 1
    assert (await engine.show("qwen2.5-coder:7b", fresh=True)).context_length == 32768
    assert shows() == 2
    await engine.delete("qwen2.5-coder:7b")
    with pytest.raises(ModelNotFound):
        await engine.show("qwen2.5-coder:7b")  # asked again: it is gone
    assert shows() == 3


async def test_loaded_after_a_chat_and_unload(
    engine: ChatEngine, ollama_server: FakeOllama
) -> None:
    assert await engine.loaded() == []
    await collect(engine, options=ChatOptions(context_length=8192))
    (loaded,) = await engine.loaded()
    assert loaded.name == MODEL
    assert loaded.size_vram > 0 and loaded.context_length == 8192
    assert loaded.expires_at is not None
    assert 200 < loaded.expires_at.timestamp() - time.time() <= 300  # keep_alive 5m

    await engine.unload(MODEL)
    assert await engine.loaded() == []
    unload = ollama_server.requests[-2]  # then /api/ps
    assert unload.path == "/api/generate"
    assert unload.body["model"] == MODEL and unload.body["keep_alive"] == 0
    with pytest.raises(ModelNotFound):
        await engine.unload("mistral")


# -- reachability ----------------------------------------------------------------------


async def test_version_and_status_online(engine: ChatEngine, ollama_server: FakeOllama) -> None:
    assert await engine.version() == "0.12.6"
    status = await engine.status()
    assert (status.online, status.host, status.version, status.error) == (
        True,
        ollama_server.url,
        "0.12.6",
        "",
    )


async def test_offline_everywhere_names_the_host_and_ollama_serve() -> None:
    port = free_port()
    engine = ChatEngine(f"127.0.0.1:{port}", timeout=2)
    try:
        status = await engine.status()
        assert not status.online
        assert f"127.0.0.1:{port}" in status.error and "ollama serve" in status.error
        for call in (
            engine.version(),
            engine.list_models(),
            engine.show(MODEL),
            engine.loaded(),
            engine.reply(MODEL, HI, ChatOptions()),
            collect(engine),
        ):
            with pytest.raises(OllamaUnavailable) as info:
                await call
            assert f"http://127.0.0.1:{port}" in str(info.value)
            assert "ollama serve" in str(info.value)
    finally:
        await engine.aclose()


async def test_status_recovers_when_the_server_comes_back() -> None:
    fake = FakeOllama()
    port = free_port()
    fake.port = port
    engine = ChatEngine(f"http://127.0.0.1:{port}", timeout=2)
    try:
        assert not (await engine.status()).online
        fake.start()
        assert (await engine.status()).online
    finally:
        fake.stop()
        await engine.aclose()


# -- connections -----------------------------------------------------------------------


async def test_the_first_reply_goes_on_the_connection_opened_once_the_server_answered(
    engine: ChatEngine, ollama_server: FakeOllama
) -> None:
    """A reply that opens its connection waits a round trip for it (two or three with
    TLS) before its request goes: the one the app opens once the server answers is
    there for the first reply."""
    assert (await engine.status(warm_stream=True)).online
    opened = ollama_server.connections_opened
    assert "".join(c.text for c in await collect(engine)) == DEFAULT_REPLY
    assert ollama_server.connections_opened == opened, "the reply opened a connection"
    (chat,) = ollama_server.connection_of("/api/chat")
    assert chat in ollama_server.connection_of("/api/version")


async def test_a_connection_the_server_closed_is_opened_again_for_the_next_reply(
    engine: ChatEngine, ollama_server: FakeOllama, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While a prompt is written (``keep_connection``, called at each change of it), a
    connection the server has closed is replaced by a new one, and the reply goes on it."""
    monkeypatch.setattr(ollama_client, "CONNECTION_CHECK_S", 0.0)
    await engine.warm_stream()
    await wait_for(None, lambda: ollama_server.connections_opened == 1)
    ollama_server.close_connections()

    def kept() -> bool:  # opened, and the answer on it read: free for the reply
        engine.keep_connection()
        return ollama_server.connections_opened == 2 and not engine._connecting

    await wait_for(None, kept, what="a new connection")
    assert "".join(c.text for c in await collect(engine)) == DEFAULT_REPLY
    assert ollama_server.connection_of("/api/chat") == [2]
    assert ollama_server.connections_opened == 2


async def test_a_connection_kept_past_its_idle_time_is_opened_again(
    ollama_server: FakeOllama, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stream client keeps an idle connection for ``IDLE_KEEP_S`` (not httpx's 5 s,
    shorter than the time taken to write a prompt); one kept longer is replaced while
    the next prompt is written."""
    from engines import reply_stream

    assert reply_stream.IDLE_KEEP_S >= 60
    monkeypatch.setattr(reply_stream, "IDLE_KEEP_S", 0.2)
    monkeypatch.setattr(ollama_client, "CONNECTION_CHECK_S", 0.0)
    engine = ChatEngine(ollama_server.url, timeout=5)
    try:
        await engine.warm_stream()
        assert ollama_server.connections_opened == 1

        def kept() -> bool:
            engine.keep_connection()
            return ollama_server.connections_opened == 2

        await wait_for(None, kept, what="a connection in place of the expired one")
    finally:
        await engine.aclose()


async def test_a_server_gone_while_a_prompt_is_written_is_said_by_the_reply_then_found_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Opening a connection ahead of a reply fails quietly (nothing is raised to the
    caller, which returns at once); the reply says what is wrong, as without it; the
    server back, the next prompt opens a connection again."""
    monkeypatch.setattr(ollama_client, "CONNECTION_CHECK_S", 0.0)
    port = free_port()
    fake = FakeOllama()
    fake.port = port
    fake.start()
    engine = ChatEngine(f"http://127.0.0.1:{port}", timeout=2)
    try:
        await engine.warm_stream()
        fake.stop()
        engine.keep_connection()
        with pytest.raises(OllamaUnavailable, match="ollama serve"):
            await collect(engine)
        fake.start()

        def kept() -> bool:
            engine.keep_connection()
            return fake.connections_opened >= 2 and not engine._connecting

        await wait_for(None, kept, what="a connection to the server back")
        opened = fake.connections_opened
        assert "".join(c.text for c in await collect(engine)) == DEFAULT_REPLY
        assert fake.connections_opened == opened
    finally:
        fake.stop()
        await engine.aclose()


# -- streaming -------------------------------------------------------------------------


async def test_stream_is_the_reply_exactly_with_stats(
    engine: ChatEngine, ollama_server: FakeOllama
) -> None:
    ollama_server.rate = 400.0
    ollama_server.first_token_delay = 0.2
    chunks = await collect(engine)
    assert "".join(c.text for c in chunks) == DEFAULT_REPLY
    n = len(tokenize(DEFAULT_REPLY))
    assert len(chunks) >= n
    assert all(c.stats is None for c in chunks[:-1])
    stats = chunks[-1].stats
    assert stats is not None
    assert stats.model == MODEL
    assert stats.eval_tokens == n
    assert stats.prompt_tokens == len(tokenize("hi")) + 4 * 1 + 1
    # eval_duration is in ns: n tokens at 400/s take (n-1)/400 s.
    assert 0.4 * 400 < stats.tokens_per_s < 1.3 * 400 * n / (n - 1)
    assert stats.first_token_s is not None and 0.2 <= stats.first_token_s < 2
    assert stats.total_s >= 0.2 + (n - 1) / 400
    assert stats.load_s == pytest.approx(0.25)  # a cold load, as Ollama reports it
    assert stats.done_reason == "stop"
    assert "tok/s" in stats.summary() and f"{n} tokens" in stats.summary()

    again = await collect(engine)
    assert again[-1].stats is not None and again[-1].stats.load_s == pytest.approx(0.001)


async def test_thinking_comes_before_the_reply(
    engine: ChatEngine, ollama_server: FakeOllama
) -> None:
    ollama_server.thinking = "First, the question. Then the answer."
    chunks = await collect(engine)
    thought = [c for c in chunks if c.thinking]
    assert "".join(c.thinking for c in thought) == ollama_server.thinking
    assert all(not c.text for c in thought)
    first_text = next(i for i, c in enumerate(chunks) if c.text)
    assert chunks.index(thought[-1]) < first_text
    assert "".join(c.text for c in chunks) == DEFAULT_REPLY


async def test_stream_keeps_every_character(engine: ChatEngine, ollama_server: FakeOllama) -> None:
    odd = "nul\x00 esc\x1b[31m red\r\n emoji 👨‍👩‍👧 RTL שלום \u202e end  \n\n"
    ollama_server.reply = odd
    text = "".join(c.text for c in await collect(engine, [ChatMessage("user", odd)]))
    assert text == odd
    (body,) = chat_bodies(ollama_server)
    assert body["messages"] == [{"role": "user", "content": odd}]


async def test_the_server_receives_the_conversation_and_options(
    engine: ChatEngine, ollama_server: FakeOllama
) -> None:
    history = [
        ChatMessage("system", "an old system prompt, replaced by the options'"),
        ChatMessage("user", "first question"),
        ChatMessage("assistant", "first answer"),
        ChatMessage("user", "second question\nwith two lines"),
    ]
    options = ChatOptions(
        system_prompt="You are terse.", temperature=0.3, context_length=8192, max_tokens=64, seed=42
    )
    await collect(engine, history, options)
    (body,) = chat_bodies(ollama_server)
    assert body["model"] == MODEL
    assert body["stream"] is True
    assert body["keep_alive"] == "5m"
    assert body["messages"] == [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "first answer"},
        {"role": "user", "content": "second question\nwith two lines"},
    ]
    assert body["options"] == {"temperature": 0.3, "num_ctx": 8192, "num_predict": 64, "seed": 42}


async def test_default_options_leave_the_models_own(
    engine: ChatEngine, ollama_server: FakeOllama
) -> None:
    await collect(engine)
    (body,) = chat_bodies(ollama_server)
    assert body["messages"] == [{"role": "user", "content": "hi"}]
    assert body["options"] == {"temperature": 0.8, "num_predict": 2048}


async def test_max_tokens_stops_the_reply(engine: ChatEngine) -> None:
    chunks = await collect(engine, options=ChatOptions(max_tokens=3))
    assert "".join(c.text for c in chunks) == "".join(tokenize(DEFAULT_REPLY)[:3])
    stats = chunks[-1].stats
    assert stats is not None and stats.done_reason == "length"
    assert "stopped at max tokens" in stats.summary()


async def test_non_stream_reply(engine: ChatEngine, ollama_server: FakeOllama) -> None:
    text, stats = await engine.reply(MODEL, HI, ChatOptions(seed=3))
    assert text == DEFAULT_REPLY
    assert stats.eval_tokens == len(tokenize(DEFAULT_REPLY)) and stats.tokens_per_s > 0
    assert stats.first_token_s is None
    (body,) = chat_bodies(ollama_server)
    assert body["stream"] is False and body["options"]["seed"] == 3


# -- failures --------------------------------------------------------------------------


async def test_an_unknown_model_says_how_to_get_it(engine: ChatEngine) -> None:
    with pytest.raises(ModelNotFound) as info:
        await collect(engine, model="mistral:7b")
    assert "ollama pull mistral:7b" in str(info.value)
    assert info.value.model == "mistral:7b"
    with pytest.raises(ModelNotFound, match="ollama pull mistral:7b"):
        await engine.reply("mistral:7b", HI, ChatOptions())


@pytest.mark.parametrize("reset", [False, True])
async def test_a_drop_mid_reply_is_stream_broken_after_the_partial_text(
    engine: ChatEngine, ollama_server: FakeOllama, reset: bool
) -> None:
    ollama_server.drop_after = 3
    ollama_server.drop_with_reset = reset
    got: list[str] = []
    with pytest.raises(StreamBroken) as info:
        async for chunk in engine.stream(MODEL, HI, ChatOptions()):
            got.append(chunk.text)
    assert "".join(got) == "".join(tokenize(DEFAULT_REPLY)[:3])
    assert ollama_server.url in str(info.value) and "lost" in str(info.value)


async def test_an_error_line_mid_stream_shows_the_servers_text(
    engine: ChatEngine, ollama_server: FakeOllama
) -> None:
    ollama_server.error_after = 2
    ollama_server.error_message = "llama runner process has terminated: signal: killed"
    got: list[str] = []
    with pytest.raises(ChatError) as info:
        async for chunk in engine.stream(MODEL, HI, ChatOptions()):
            got.append(chunk.text)
    assert "".join(got) == "".join(tokenize(DEFAULT_REPLY)[:2])
    message = str(info.value)
    assert "llama runner process has terminated: signal: killed" in message
    assert "-1" not in message and "HTTP" not in message


async def test_malformed_ndjson_is_a_chat_error(
    engine: ChatEngine, ollama_server: FakeOllama
) -> None:
    ollama_server.malformed = True
    ollama_server.malformed_after = 2
    with pytest.raises(ChatError) as info:
        await collect(engine)
    assert "unreadable" in str(info.value) and ollama_server.url in str(info.value)


async def test_a_stream_that_ends_without_done_is_broken(
    engine: ChatEngine, ollama_server: FakeOllama
) -> None:
    ollama_server.end_after = 3
    got: list[str] = []
    with pytest.raises(StreamBroken, match="without finishing"):
        async for chunk in engine.stream(MODEL, HI, ChatOptions()):
            got.append(chunk.text)
    assert len(got) == 3


async def test_a_hanging_server_times_out_naming_the_setting(ollama_server: FakeOllama) -> None:
    ollama_server.hang = True
    engine = ChatEngine(ollama_server.url, timeout=0.3)
    try:
        start = time.monotonic()
        with pytest.raises(OllamaUnavailable) as info:
            await collect(engine)
        assert time.monotonic() - start < 2
        assert "0.3 s" in str(info.value) and "[ollama] timeout" in str(info.value)
        await wait_for(None, lambda: ollama_server.cancelled == 1)
    finally:
        await engine.aclose()


@pytest.mark.parametrize("stream", [True, False])
async def test_http_500_shows_ollamas_error_text(
    engine: ChatEngine, ollama_server: FakeOllama, stream: bool
) -> None:
    ollama_server.fail(500, {"error": "out of memory: CUDA error"}, path="/api/chat")
    with pytest.raises(ChatError) as info:
        if stream:
            await collect(engine)
        else:
            await engine.reply(MODEL, HI, ChatOptions())
    assert not isinstance(info.value, OllamaUnavailable | ModelNotFound | StreamBroken)
    assert "out of memory: CUDA error" in str(info.value)
    assert "500" in str(info.value)


async def test_a_plain_text_error_from_a_proxy(
    engine: ChatEngine, ollama_server: FakeOllama
) -> None:
    ollama_server.fail(502, "Bad Gateway")
    with pytest.raises(ChatError, match="Bad Gateway"):
        await engine.list_models()


async def test_the_status_questions_show_ollamas_error_and_time_out_naming_the_setting(
    ollama_server: FakeOllama,
) -> None:
    """Version, models and what is loaded: Ollama's own error text, and a server that
    never answers is given up on at the timeout, which the message names."""
    engine = ChatEngine(ollama_server.url, timeout=0.3)
    try:
        ollama_server.fail(500, {"error": "registry on fire"}, path="/api/ps")
        with pytest.raises(ChatError) as info:
            await engine.loaded()
        assert str(info.value) == "Ollama answered: registry on fire (HTTP 500)"
        ollama_server.fail(503, "", path="/api/tags")
        with pytest.raises(ChatError, match="HTTP 503"):
            await engine.list_models()
    finally:
        await engine.aclose()
    with socket.socket() as silent:  # accepts connections (the kernel does), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        engine = ChatEngine(f"http://127.0.0.1:{silent.getsockname()[1]}", timeout=0.3)
        start = time.monotonic()
        status = await engine.status()
        assert time.monotonic() - start < 2
        assert not status.online and "0.3 s" in status.error and "[ollama] timeout" in status.error


def test_the_client_is_imported_off_the_event_loop(ollama_server: FakeOllama) -> None:
    """The first question (here ``show``, which the context meter asks as the Chat screen
    opens) imports the ollama client, httpx and pydantic in a thread: the event loop,
    which draws the first frame and takes the keys, never waits for them."""
    code = (
        "import asyncio, importlib.abc, sys, threading\n"
        "seen = []\n"
        "class Watch(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name in ('ollama', 'httpx', 'pydantic'):\n"
        "            seen.append((name, threading.current_thread() is threading.main_thread()))\n"
        "        return None\n"
        "sys.meta_path.insert(0, Watch())\n"
        "from engines.ollama_client import ChatEngine\n"
        "async def main():\n"
        f"    e = ChatEngine({ollama_server.url!r}, timeout=5)\n"
        "    details = await e.show('llama3.2:latest')\n"
        "    await e.aclose()\n"
        "    print(details.family)\n"
        "asyncio.run(main())\n"
        "print(sorted(set(seen)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True
    )
    family, imported = result.stdout.splitlines()
    assert family  # it answered
    assert imported == "[('httpx', False), ('ollama', False), ('pydantic', False)]", imported


# -- cancelling ------------------------------------------------------------------------


@pytest.mark.parametrize("busy", [False, True], ids=["waiting-for-a-chunk", "busy-with-one"])
async def test_cancelling_the_reading_task_closes_the_stream(
    engine: ChatEngine, ollama_server: FakeOllama, busy: bool
) -> None:
    ollama_server.reply = LONG_REPLY
    ollama_server.rate = 50.0
    got: list[str] = []

    async def read() -> None:
        async for chunk in engine.stream(MODEL, HI, ChatOptions()):
            got.append(chunk.text)
            if busy and len(got) == 3:  # like a worker awaiting the Markdown widget
                await asyncio.sleep(30)

    task = asyncio.create_task(read())
    await wait_for(None, lambda: len(got) >= 3, timeout=3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await wait_for(None, lambda: ollama_server.cancelled == 1)
    assert ollama_server.completed == 0
    assert ollama_server.sent_tokens < 100
    # The engine still works afterwards.
    ollama_server.rate = None
    ollama_server.reply = "again"
    assert "".join(c.text for c in await collect(engine)) == "again"


async def test_closing_the_iterator_closes_the_stream(
    engine: ChatEngine, ollama_server: FakeOllama
) -> None:
    ollama_server.reply = LONG_REPLY
    ollama_server.rate = 50.0
    stream = engine.stream(MODEL, HI, ChatOptions())
    for _ in range(3):
        assert (await anext(stream)).text.strip() == "word"
    await stream.aclose()
    await wait_for(None, lambda: ollama_server.cancelled == 1)
    assert ollama_server.completed == 0
    assert ollama_server.sent_tokens < 100
