"""Model management in ChatEngine (pull with progress, delete) against the fake Ollama, and
the pull's figures (rates, ETAs) worked out from a clock the test controls."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import pytest
from waiting import wait_for

from engines.chat_types import ModelNotFound, ModelNotOnRegistry, OllamaUnavailable, StreamBroken
from engines.ollama_client import ChatEngine
from engines.progress import PullProgress, PullTracker, RateMeter
from engines.units import duration_text

if TYPE_CHECKING:
    from ollama_server import FakeOllama
else:
    try:
        from ollama_server import FakeOllama
    except ImportError:
        from tests.ollama_server import FakeOllama

LAYERS = [40_000_000, 1429, 7711, 96]


@pytest.fixture
async def engine(ollama_server: FakeOllama) -> AsyncIterator[ChatEngine]:
    e = ChatEngine(ollama_server.url, timeout=5)
    try:
        yield e
    finally:
        await e.aclose()


async def collect(engine: ChatEngine, name: str) -> list[PullProgress]:
    return [p async for p in engine.pull(name)]


# -- pull ---------------------------------------------------------------------------------


async def test_pull_reports_every_layer_with_rising_bytes_then_success(
    engine: ChatEngine, ollama_server: FakeOllama
) -> None:
    ollama_server.pull_layers = LAYERS
    ollama_server.pull_delay = 0.01
    events = await collect(engine, "gemma3:1b")

    assert events[0].status == "pulling manifest" and not events[0].digest
    assert [e.status for e in events[-3:]] == [
        "verifying sha256 digest",
        "writing manifest",
        "success",
    ]
    assert events[-1].done and not any(e.done for e in events[:-1])

    layers: dict[str, list[PullProgress]] = {}
    for e in events:
        if e.digest:
            layers.setdefault(e.digest, []).append(e)
    assert [lines[0].total for lines in layers.values()] == LAYERS
    for digest, lines in layers.items():
        done = [e.completed for e in lines]
        assert done == sorted(done) and done[0] == 0 and done[-1] == lines[0].total
        assert all(e.status == f"pulling {digest[7:19]}" and e.layer == digest[7:19] for e in lines)
        assert lines[-1].eta_s == 0.0 and lines[-1].fraction == 1.0
        assert any(e.rate for e in lines[1:]), "a rate once the layer has moved"

    overall = [e.overall_completed for e in events]
    assert overall == sorted(overall) and events[-1].overall_completed == sum(LAYERS)
    assert events[-1].overall_total == sum(LAYERS) and events[-1].layers == 4
    # 10 MB every 10 ms on the big layer: a rate of the right size, and an ETA from it
    middle = layers[next(iter(layers))][2]
    assert middle.rate is not None and 1e8 < middle.rate < 2e9
    assert middle.eta_s is not None and 0 < middle.eta_s < 1
    assert "MB" in middle.figures() and "/s" in middle.figures() and "ETA 0:00" in middle.figures()

    assert "gemma3:1b" in [m.name for m in await engine.list_models()]
    assert ollama_server.pulls_completed == 1


async def test_a_cached_layer_counts_as_done_but_not_as_speed(
    engine: ChatEngine, ollama_server: FakeOllama
) -> None:
    ollama_server.pull_layers = [1_000_000, 2_000]
    ollama_server.pull_cached = 1
    events = await collect(engine, "gemma3:1b")
    cached = [e for e in events if e.total == 1_000_000]
    assert len(cached) == 1 and cached[0].completed == 1_000_000 and cached[0].rate is None
    assert events[-1].overall_completed == 1_002_000


async def test_cancelling_a_pull_closes_the_stream(
    engine: ChatEngine, ollama_server: FakeOllama
) -> None:
    ollama_server.pull_layers = LAYERS
    ollama_server.pull_delay = 0.05
    seen: list[PullProgress] = []

    async def read() -> None:
        async for p in engine.pull("gemma3:1b"):
            seen.append(p)

    task = asyncio.create_task(read())
    await wait_for(None, lambda: any(p.completed for p in seen))
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await wait_for(None, lambda: ollama_server.pulls_cancelled == 1)
    lines = ollama_server.pull_lines
    await asyncio.sleep(0.15)
    assert ollama_server.pull_lines == lines, "the server stopped sending"
    assert ollama_server.pulls_completed == 0
    assert "gemma3:1b" not in [m.name for m in await engine.list_models()]


async def test_closing_the_pull_iterator_closes_the_stream(
    engine: ChatEngine, ollama_server: FakeOllama
) -> None:
    ollama_server.pull_delay = 0.05
    async with contextlib.aclosing(engine.pull("gemma3:1b")) as pull:
        async for p in pull:
            if p.digest:
                break
    await wait_for(None, lambda: ollama_server.pulls_cancelled == 1)


async def test_a_name_the_registry_does_not_have(
    engine: ChatEngine, ollama_server: FakeOllama
) -> None:
    ollama_server.pull_error = "pull model manifest: file does not exist"
    with pytest.raises(ModelNotOnRegistry) as caught:
        await collect(engine, "no-such-model:9b")
    message = str(caught.value)
    assert "'no-such-model:9b' was not found on the registry" in message
    assert "ollama.com/library" in message and "file does not exist" in message
    assert isinstance(caught.value, ModelNotFound), "the CLI's exit code 3"


async def test_other_pull_errors_show_ollamas_words(
    engine: ChatEngine, ollama_server: FakeOllama
) -> None:
    ollama_server.pull_error = "max retries exceeded: connection reset"
    with pytest.raises(Exception, match="Ollama answered: max retries exceeded") as caught:
        await collect(engine, "gemma3:1b")
    assert not isinstance(caught.value, ModelNotFound)


async def test_a_pull_cut_short_is_stream_broken(
    engine: ChatEngine, ollama_server: FakeOllama
) -> None:
    ollama_server.pull_drop_after = 3
    with pytest.raises(StreamBroken):
        await collect(engine, "gemma3:1b")


async def test_pull_and_delete_with_the_server_down() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    engine = ChatEngine(f"http://127.0.0.1:{port}", timeout=2)
    try:
        with pytest.raises(OllamaUnavailable, match="ollama serve"):
            await collect(engine, "gemma3:1b")
        with pytest.raises(OllamaUnavailable, match="ollama serve"):
            await engine.delete("gemma3:1b")
    finally:
        await engine.aclose()


# -- delete -------------------------------------------------------------------------------


async def test_delete_removes_the_model(engine: ChatEngine, ollama_server: FakeOllama) -> None:
    await engine.delete("qwen2.5-coder:7b")
    assert [m.name for m in await engine.list_models()] == ["llama3.2:latest"]
    await engine.delete("llama3.2")  # no tag: ":latest", as Ollama reads it
    assert await engine.list_models() == []


async def test_deleting_an_unknown_model(engine: ChatEngine) -> None:
    with pytest.raises(ModelNotFound, match="'nope:1b' is not installed, so there is nothing"):
        await engine.delete("nope:1b")


# -- the figures --------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_tracker_rates_and_etas_per_layer_and_overall() -> None:
    clock = Clock()
    tracker = PullTracker("m", clock=clock, window=5.0)
    assert tracker.update("pulling manifest").overall_total == 0
    first = tracker.update("pulling aaa", "sha256:aaa", total=1000)
    assert (first.completed, first.rate, first.eta_s) == (0, None, None)
    clock.now += 1
    p = tracker.update("pulling aaa", "sha256:aaa", total=1000, completed=250)
    assert p.rate == 250.0 and p.eta_s == 3.0
    assert p.overall_rate == 250.0 and p.overall_eta_s == 3.0
    clock.now += 1
    p = tracker.update("pulling aaa", "sha256:aaa", total=1000, completed=1000)
    assert p.eta_s == 0.0 and p.fraction == 1.0
    # a second layer: the overall total grows as Ollama announces it
    p = tracker.update("pulling bbb", "sha256:bbb", total=3000, completed=0)
    assert (p.overall_total, p.overall_completed, p.layers) == (4000, 1000, 2)
    clock.now += 2
    p = tracker.update("pulling bbb", "sha256:bbb", total=3000, completed=1000)
    assert p.rate == 500.0 and p.eta_s == 4.0
    assert p.overall_completed == 2000 and p.overall_rate == 2000 / 4
    assert p.overall_eta_s == 2000 / 500
    assert p.figures() == "1.0 KB / 3.0 KB · 500 B/s · ETA 0:04"
    assert p.overall_figures() == "2.0 KB / 4.0 KB · 500 B/s · ETA 0:04"
    done = tracker.update("success")
    assert done.done and done.overall_completed == 4000 and done.overall_eta_s == 0.0


def test_rate_meter_forgets_old_samples() -> None:
    meter = RateMeter(window=2.0)
    assert meter.add(0.0, 0) is None
    assert meter.add(1.0, 100) == 100.0
    assert meter.add(2.0, 200) == 100.0
    assert meter.add(3.0, 1200) == pytest.approx(1100 / 2)  # the first second is forgotten
    assert meter.add(10.0, 1200) == 0.0


@pytest.mark.parametrize(
    ("seconds", "text"), [(0, "0:00"), (7.4, "0:07"), (754, "12:34"), (3723, "1:02:03")]
)
def test_duration_text(seconds: float, text: str) -> None:
    assert duration_text(seconds) == text
