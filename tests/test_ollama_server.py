"""The fake Ollama server, checked with the official ``ollama`` client (httpx underneath).

These tests also pin down which exception the official client raises for each failure,
which is what the app's error handling has to catch:

- connection refused: ``ConnectionError`` (the builtin) from non-streaming calls, but a raw
  ``httpx.ConnectError`` from ``stream=True`` calls (the client's stream generator does not
  wrap it);
- HTTP error status (404, 500, ...): ``ollama.ResponseError`` with ``status_code`` set;
- ``{"error": ...}`` line in a stream: ``ollama.ResponseError`` with ``status_code == -1``;
- connection dropped mid-stream (FIN): ``httpx.RemoteProtocolError`` ("incomplete chunked
  read"); dropped before any response: ``httpx.RemoteProtocolError`` ("Server disconnected");
  dropped with a TCP reset: ``httpx.ReadError``;
- malformed NDJSON line: ``json.JSONDecodeError`` (a ``ValueError``);
- stream ended cleanly but with no ``done`` chunk (``end_after``): no exception, the
  iteration just stops;
- timeout (``timeout=`` on the client, server hangs): ``httpx.ReadTimeout``.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncGenerator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, cast

import httpx
import ollama
import pytest
from waiting import wait_for

if TYPE_CHECKING:
    from ollama_server import FakeOllama, tokenize
else:
    try:  # tests/ is not a package: pytest puts tests/ itself on sys.path
        from ollama_server import FakeOllama, tokenize
    except ImportError:  # ... unless someone makes it one
        from tests.ollama_server import FakeOllama, tokenize

MODEL = "llama3.2:latest"
HI = [{"role": "user", "content": "hi"}]


@pytest.fixture
def server() -> Iterator[FakeOllama]:
    with FakeOllama() as fake:
        yield fake


@pytest.fixture
def client(server: FakeOllama) -> Iterator[ollama.Client]:
    with ollama.Client(host=server.url) as c:
        yield c


def _stream_text(client: ollama.Client, **kwargs: object) -> str:
    parts = client.chat(model=MODEL, messages=HI, stream=True, **kwargs)  # type: ignore[call-overload]
    return "".join(p.message.content or "" for p in parts)


def test_version_root_and_unknown_route(server: FakeOllama) -> None:
    assert httpx.get(f"{server.url}/api/version").json() == {"version": "0.12.6"}
    assert httpx.get(server.url).text == "Ollama is running"
    r = httpx.get(f"{server.url}/api/nope")
    assert (r.status_code, r.text) == (404, "404 page not found")


def test_list_and_show(client: ollama.Client) -> None:
    models = client.list().models
    assert [m.model for m in models] == ["llama3.2:latest", "qwen2.5-coder:7b"]
    assert models[0].size == 2019393189
    assert models[1].details is not None and models[1].details.parameter_size == "7.6B"

    shown = client.show("llama3.2")  # the ":latest" tag is implied, as in Ollama
    assert shown.modelinfo is not None
    assert shown.modelinfo["llama.context_length"] == 131072
    assert shown.capabilities is not None and "completion" in shown.capabilities

    with pytest.raises(ollama.ResponseError) as err:
        client.show("nope")
    assert err.value.status_code == 404
    assert err.value.error == "model 'nope' not found"


def test_ps_lists_models_after_use(server: FakeOllama, client: ollama.Client) -> None:
    assert client.ps().models == []
    client.chat(model="qwen2.5-coder:7b", messages=HI, options={"num_ctx": 8192})
    loaded = client.ps().models
    assert [(m.model, m.context_length) for m in loaded] == [("qwen2.5-coder:7b", 8192)]
    server.set_loaded([MODEL])
    assert [m.model for m in client.ps().models] == [MODEL]
    unloaded = client.generate(model=MODEL, keep_alive=0)  # how Ollama is asked to unload
    assert unloaded.done_reason == "unload"
    assert client.ps().models == []


def test_streamed_chat_equals_reply_and_records_request(
    server: FakeOllama, client: ollama.Client
) -> None:
    server.reply = "Olá, **mundo**!\n\n  - um\n- dois  "
    conversation = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "oi"},
        {"role": "assistant", "content": "olá"},
        {"role": "user", "content": "again"},
    ]
    parts = list(
        client.chat(model=MODEL, messages=conversation, stream=True, options={"temperature": 0.2})
    )
    assert "".join(p.message.content or "" for p in parts) == server.reply
    assert len(parts) == len(tokenize(server.reply)) + 1
    assert not any(p.done for p in parts[:-1])
    final = parts[-1]
    assert final.done and final.done_reason == "stop"
    assert final.eval_count == len(tokenize(server.reply))
    assert final.total_duration and final.eval_duration and final.prompt_eval_count
    assert server.sent_tokens == final.eval_count and server.completed == 1
    assert server.sent_last_token_at is not None and server.sent_last_token_at_wall is not None

    method, path, body = server.requests[-1]
    assert (method, path) == ("POST", "/api/chat")
    assert body["messages"] == conversation
    assert body["options"] == {"temperature": 0.2}
    assert body["stream"] is True


def test_non_stream_chat_and_generate(server: FakeOllama, client: ollama.Client) -> None:
    server.replies = lambda messages, model: f"{model}: {messages[-1]['content']}"
    response = client.chat(model=MODEL, messages=HI)
    assert response.message.content == f"{MODEL}: hi"
    assert response.done and response.eval_count == 2
    generated = client.generate(model=MODEL, prompt="yo")
    assert generated.response == f"{MODEL}: yo" and generated.done


def test_num_predict_caps_tokens(server: FakeOllama, client: ollama.Client) -> None:
    server.reply = "one two three four five six"
    parts = list(client.chat(model=MODEL, messages=HI, stream=True, options={"num_predict": 3}))
    assert "".join(p.message.content or "" for p in parts) == "one two three"
    assert parts[-1].done_reason == "length" and parts[-1].eval_count == 3


def test_drop_after_raises_remote_protocol_error(server: FakeOllama, client: ollama.Client) -> None:
    server.drop_after = 2
    got: list[str] = []
    # The connection closes without the chunked terminator: httpx.RemoteProtocolError
    # ("peer closed connection without sending complete message body").
    with pytest.raises(httpx.RemoteProtocolError):
        for part in client.chat(model=MODEL, messages=HI, stream=True):
            got.append(part.message.content or "")
    assert got == tokenize(server.reply)[:2]
    # With a TCP reset instead of a clean close, httpx raises httpx.ReadError.
    server.drop_with_reset = True
    with pytest.raises(httpx.ReadError):
        _stream_text(client)
    assert server.cancelled == 0


def test_error_line_raises_response_error(server: FakeOllama, client: ollama.Client) -> None:
    server.error_after = 1
    server.error_message = "llama runner process has terminated"
    with pytest.raises(ollama.ResponseError) as err:
        _stream_text(client)
    assert err.value.error == "llama runner process has terminated"
    assert err.value.status_code == -1  # mid-stream errors carry no HTTP status


def test_end_after_finishes_stream_without_done(server: FakeOllama, client: ollama.Client) -> None:
    server.end_after = 2
    parts = list(client.chat(model=MODEL, messages=HI, stream=True))  # no exception at all
    assert len(parts) == 2 and not parts[-1].done


def test_malformed_line_raises_json_decode_error(client: ollama.Client, server: FakeOllama) -> None:
    server.malformed = True
    with pytest.raises(json.JSONDecodeError):
        _stream_text(client)


def test_status_override_and_unknown_model(server: FakeOllama, client: ollama.Client) -> None:
    server.fail(500, {"error": "llama runner process has terminated"}, path="/api/chat", times=1)
    with pytest.raises(ollama.ResponseError) as err:
        _stream_text(client)
    assert err.value.status_code == 500
    assert _stream_text(client) == server.reply  # only the next request failed
    with pytest.raises(ollama.ResponseError) as missing:
        client.chat(model="nope", messages=HI)
    assert missing.value.status_code == 404
    assert missing.value.error == 'model "nope" not found, try pulling it first'


def test_connection_refused() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    c = ollama.Client(host=f"http://127.0.0.1:{port}")
    with pytest.raises(ConnectionError):
        c.list()
    with pytest.raises(httpx.ConnectError):  # stream=True: not wrapped by the client
        list(c.chat(model=MODEL, messages=HI, stream=True))


def test_rate_is_roughly_respected(server: FakeOllama, client: ollama.Client) -> None:
    server.reply = " ".join(["tok"] * 21)
    server.rate = 200.0
    start = time.monotonic()
    assert _stream_text(client) == server.reply
    elapsed = time.monotonic() - start
    # 20 intervals at 200 tokens/s = 0.1 s; the top bound only catches a stalled server
    # (CI shares two cores)
    assert 0.09 <= elapsed < 3.0


def test_pull_and_delete(server: FakeOllama, client: ollama.Client) -> None:
    statuses = [p.status for p in client.pull("gemma3:1b", stream=True)]
    assert statuses[0] == "pulling manifest" and statuses[-1] == "success"
    assert "gemma3:1b" in [m.model for m in client.list().models]
    assert client.delete("gemma3:1b").status == "success"
    with pytest.raises(ollama.ResponseError) as err:
        client.delete("gemma3:1b")
    assert err.value.status_code == 404


async def test_closing_async_stream_cancels_server_side(server: FakeOllama) -> None:
    server.reply = "word " * 400
    server.rate = 500.0
    client = ollama.AsyncClient(host=server.url)
    stream = cast(
        AsyncGenerator[ollama.ChatResponse, None],
        await client.chat(model=MODEL, messages=HI, stream=True),
    )
    seen = 0
    async for _ in stream:
        seen += 1
        if seen == 3:
            break
    await stream.aclose()
    await wait_for(None, lambda: server.cancelled == 1)
    assert server.completed == 0
    assert server.sent_tokens < 100


async def test_async_timeout_against_hang(server: FakeOllama) -> None:
    server.hang = True
    client = ollama.AsyncClient(host=server.url, timeout=0.2)
    with pytest.raises(httpx.ReadTimeout):
        await client.chat(model=MODEL, messages=HI)
    await wait_for(None, lambda: server.cancelled == 1)  # the server saw the client give up


def test_stop_is_prompt_with_hanging_request() -> None:
    fake = FakeOllama().start()
    fake.hang = True
    c = ollama.Client(host=fake.url, timeout=5)
    errors: list[BaseException] = []

    def call() -> None:
        try:
            c.chat(model=MODEL, messages=HI)
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=call)
    t.start()
    time.sleep(0.1)
    start = time.monotonic()
    fake.stop()
    t.join(10)
    assert time.monotonic() - start < 5.0, "stop() ends an open stream instead of waiting for it"
    assert errors and isinstance(errors[0], httpx.RemoteProtocolError)


def test_standalone_prints_listening_line(tmp_path: Path) -> None:
    reply_file = tmp_path / "reply.md"
    reply_file.write_text("from a file", encoding="utf-8")
    script = Path(__file__).with_name("ollama_server.py")
    proc = subprocess.Popen(
        [sys.executable, str(script), "--port", "0", "--reply-file", str(reply_file)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line.startswith("listening on http://127.0.0.1:")
        url = line.removeprefix("listening on ")
        reply = ollama.Client(host=url).chat(model=MODEL, messages=HI)
        assert reply.message.content == "from a file"
        httpx.post(f"{url}/__fake/config", json={"reply": "changed"})
        assert ollama.Client(host=url).chat(model=MODEL, messages=HI).message.content == "changed"
        assert httpx.get(f"{url}/__fake/state").json()["completed"] == 2
    finally:
        proc.terminate()
        assert proc.wait(5) == 0
