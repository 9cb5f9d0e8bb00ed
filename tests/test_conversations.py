"""The conversation service against the fake Ollama server: replies from request to final
status, several at once, and the message tree (regenerate, edit, continue, delete)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from ollama_server import FakeOllama
from waiting import wait_for

from engines import conversations, reply_stream
from engines.chat_types import ChatOptions
from engines.conversations import (
    ConversationError,
    ConversationService,
    ReplyEvent,
    ReplyFigures,
    ReplyFinished,
    ReplyStarted,
    ReplyText,
    ReplyWaiting,
)
from engines.ollama_client import ChatEngine
from engines.store import Store

MODEL = "llama3.2:latest"


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store.open(tmp_path / "db.sqlite")
    yield s  # type: ignore[misc]
    s.close()


@pytest.fixture
async def service(ollama_server: FakeOllama, store: Store) -> AsyncIterator[ConversationService]:
    engine = ChatEngine(ollama_server.url, timeout=10)
    try:
        yield ConversationService(store, engine, save_interval=0.05, max_parallel=2)
    finally:
        await engine.aclose()


def chat_bodies(server: FakeOllama) -> list[list[dict[str, str]]]:
    return [r.body["messages"] for r in server.requests if r.path == "/api/chat"]


async def test_a_reply_is_saved_and_told_to_every_listener(
    service: ConversationService, store: Store, ollama_server: FakeOllama
) -> None:
    ollama_server.reply = "Hello there, friend."
    seen: list[ReplyEvent] = []
    also: list[ReplyEvent] = []
    service.subscribe(seen.append)
    service.subscribe(also.append)
    conversation = service.new_conversation(MODEL, ChatOptions(system_prompt="Be kind."), "Hi")
    reply = service.send(conversation, "Hi")
    finished = await service.run(reply)
    assert finished.status == "done" and finished.content == "Hello there, friend."
    assert isinstance(seen[0], ReplyStarted) and seen == also
    assert "".join(e.text for e in seen if isinstance(e, ReplyText)) == "Hello there, friend."
    assert isinstance(seen[-1], ReplyFinished) and seen[-1].stats is not None
    [prompt, answer] = store.messages(conversation.id)
    assert (prompt.content, answer.content, answer.status) == ("Hi", finished.content, "done")
    assert answer.parent_id == prompt.id
    [sent] = chat_bodies(ollama_server)
    assert sent == [
        {"role": "system", "content": "Be kind."},
        {"role": "user", "content": "Hi"},
    ]
    assert service.reply_in(conversation.id) is None


async def test_two_conversations_stream_at_once_and_a_third_waits_its_turn(
    service: ConversationService, store: Store, ollama_server: FakeOllama
) -> None:
    ollama_server.reply = "word " * 30
    ollama_server.rate = 100
    events: list[ReplyEvent] = []
    service.subscribe(events.append)
    a, b, c = (service.new_conversation(MODEL, ChatOptions(), t) for t in "ABC")
    ra, rb = service.send(a, "one"), service.send(b, "two")
    ta, tb = asyncio.create_task(service.run(ra)), asyncio.create_task(service.run(rb))
    await wait_for(None, lambda: ollama_server.streams == 2, what="both streaming")
    rc = service.send(c, "three")
    tc = asyncio.create_task(service.run(rc))
    await wait_for(None, lambda: any(isinstance(e, ReplyWaiting) for e in events))
    [waiting] = [e for e in events if isinstance(e, ReplyWaiting)]
    assert (waiting.conversation_id, waiting.position) == (c.id, 1)
    assert set(service.busy) == {a.id, b.id, c.id}
    with pytest.raises(ConversationError, match="still being written"):
        service.send(a, "again")
    results = await asyncio.gather(ta, tb, tc)
    assert [r.status for r in results] == ["done"] * 3
    starts = [e.conversation_id for e in events if isinstance(e, ReplyStarted)]
    assert starts[-1] == c.id, "the third began only when a slot was free"
    assert all(store.messages(x.id)[-1].status == "done" for x in (a, b, c))


async def test_stopping_a_reply_keeps_it_interrupted_and_the_server_stops(
    service: ConversationService, store: Store, ollama_server: FakeOllama
) -> None:
    ollama_server.reply = "word " * 400
    ollama_server.rate = 100
    conversation = service.new_conversation(MODEL, ChatOptions(), "x")
    reply = service.send(conversation, "talk")
    task = asyncio.create_task(service.run(reply))
    await wait_for(None, lambda: len(reply.parts) >= 5, what="some words")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    saved = store.messages(conversation.id)[-1]
    assert saved.status == "interrupted" and saved.content.startswith("word word")
    await wait_for(None, lambda: ollama_server.cancelled == 1, what="the server saw it")


async def test_the_server_dropping_one_of_two_streams_interrupts_only_that_one(
    service: ConversationService, store: Store, ollama_server: FakeOllama
) -> None:
    ollama_server.replies = lambda messages, model: (
        "short and done." if messages[-1]["content"] == "short" else "long " * 200
    )
    ollama_server.rate = 200
    ollama_server.drop_after = 20  # the short reply ends before this
    a, b = (service.new_conversation(MODEL, ChatOptions(), t) for t in "AB")
    short, long = service.send(a, "short"), service.send(b, "long")
    done, cut = await asyncio.gather(service.run(short), service.run(long))
    assert (done.status, done.content) == ("done", "short and done.")
    assert cut.status == "interrupted" and cut.error and cut.content.startswith("long long")
    assert store.messages(b.id)[-1].status == "interrupted"


async def test_regenerate_keeps_every_version_and_sends_the_shown_history(
    service: ConversationService, store: Store, ollama_server: FakeOllama
) -> None:
    ollama_server.replies = ["first answer", "second answer", "third answer", "after"]
    conversation = service.new_conversation(MODEL, ChatOptions(), "q")
    await service.run(service.send(conversation, "question"))
    await service.run(service.regenerate(conversation))
    _prompt, newest = store.messages(conversation.id)
    assert newest.content == "second answer"
    versions = store.siblings(newest.id)
    assert len(versions) == 2 and store.message(versions[0]).content == "first answer"  # type: ignore[union-attr]
    assert chat_bodies(ollama_server)[1] == [{"role": "user", "content": "question"}]
    store.switch_to(versions[0])  # "1/2": flip back to the first version
    assert [m.content for m in store.messages(conversation.id)] == ["question", "first answer"]
    await service.run(service.send(conversation, "and then?"))
    assert chat_bodies(ollama_server)[-1] == [
        {"role": "user", "content": "question"},
        {"role": "assistant", "content": "first answer"},
        {"role": "user", "content": "and then?"},
    ], "the history follows the version shown"
    assert [m.content for m in store.all_messages(conversation.id)].count("second answer") == 1


async def test_editing_a_prompt_starts_a_branch_and_keeps_the_old_one(
    service: ConversationService, store: Store, ollama_server: FakeOllama
) -> None:
    ollama_server.replies = ["A1", "A2", "B1"]
    conversation = service.new_conversation(MODEL, ChatOptions(), "q")
    await service.run(service.send(conversation, "first"))
    await service.run(service.send(conversation, "second"))
    first_prompt = store.messages(conversation.id)[0]
    with pytest.raises(ConversationError, match="empty"):
        service.edit(conversation, first_prompt.id, "   ")
    assert len(store.all_messages(conversation.id)) == 4, "nothing written by the refusal"
    await service.run(service.edit(conversation, first_prompt.id, "first, edited"))
    assert [m.content for m in store.messages(conversation.id)] == ["first, edited", "B1"]
    assert chat_bodies(ollama_server)[-1] == [{"role": "user", "content": "first, edited"}]
    old_branch = store.siblings(store.messages(conversation.id)[0].id)[0]
    store.switch_to(old_branch)
    assert [m.content for m in store.messages(conversation.id)] == [
        "first",
        "A1",
        "second",
        "A2",
    ]


async def test_continue_sends_the_partial_reply_and_appends_to_it(
    service: ConversationService, store: Store, ollama_server: FakeOllama
) -> None:
    ollama_server.replies = ["Once upon a time", " there was a fox."]
    ollama_server.drop_after = 3
    conversation = service.new_conversation(MODEL, ChatOptions(), "story")
    cut = await service.run(service.send(conversation, "Tell a story"))
    assert cut.status == "interrupted"
    ollama_server.drop_after = None
    with_prefix = cut.content
    finished = await service.run(service.continue_reply(conversation))
    assert finished.status == "done" and finished.reply_id == cut.reply_id
    assert finished.content == with_prefix + " there was a fox."
    assert chat_bodies(ollama_server)[-1][-1] == {"role": "assistant", "content": with_prefix}
    with pytest.raises(ConversationError, match="complete"):
        service.continue_reply(conversation)


async def test_regenerating_with_a_missing_model_is_an_error_and_keeps_the_old_reply(
    service: ConversationService, store: Store, ollama_server: FakeOllama
) -> None:
    conversation = service.new_conversation(MODEL, ChatOptions(), "q")
    await service.run(service.send(conversation, "question"))
    ollama_server.remove_model(MODEL)
    failed = await service.run(service.regenerate(conversation))
    assert failed.status == "error" and MODEL in (failed.error or "")
    assert "ollama pull" in (failed.error or "")
    versions = store.siblings(failed.reply_id)
    assert store.message(versions[0]).status == "done"  # type: ignore[union-attr]


async def test_deleting_from_a_turn_that_starts_a_branch(
    service: ConversationService, store: Store, ollama_server: FakeOllama
) -> None:
    ollama_server.replies = ["A1", "B1"]
    conversation = service.new_conversation(MODEL, ChatOptions(), "q")
    await service.run(service.send(conversation, "first"))
    first = store.messages(conversation.id)[0]
    await service.run(service.edit(conversation, first.id, "other"))
    edited = store.messages(conversation.id)[0]
    store.delete_from(edited.id)  # the branch shown goes; the other one is shown
    assert [m.content for m in store.messages(conversation.id)] == ["first", "A1"]
    store.delete_from(store.messages(conversation.id)[1].id)
    assert [m.content for m in store.messages(conversation.id)] == ["first"]
    await service.run(service.send(conversation, "again"))
    assert [m.content for m in store.messages(conversation.id)][:2] == ["first", "again"]


async def test_a_replys_rate_counts_the_servers_tokens_though_they_come_in_batches(
    ollama_server: FakeOllama, store: Store
) -> None:
    # time here is the server's tokens, 10 ms each: the rate is 100 tokens/s whatever the
    # batches the reader hands over (several tokens each, at 400 tokens/s)
    ollama_server.reply = " ".join(f"w{i}" for i in range(300))
    ollama_server.rate = 400
    engine = ChatEngine(ollama_server.url, timeout=10)
    service = ConversationService(
        store, engine, save_interval=0.05, clock=lambda: ollama_server.sent_tokens * 0.01
    )
    texts: list[ReplyText] = []
    rates: list[float] = []
    service.subscribe(lambda e: texts.append(e) if isinstance(e, ReplyText) else None)
    service.subscribe(
        lambda e: rates.append(e.tokens_per_s) if isinstance(e, ReplyFigures) else None
    )
    try:
        conversation = service.new_conversation(MODEL, ChatOptions(), "Hi")
        finished = await service.run(service.send(conversation, "Hi"))
    finally:
        await engine.aclose()
    assert finished.content == ollama_server.reply
    assert "".join(t.text for t in texts) == ollama_server.reply
    assert len(texts) < 300, "the tokens are handed over in batches"
    assert len(rates) >= 3
    assert all(60 <= rate <= 110 for rate in rates), rates  # a token or two either way


async def test_a_burst_of_text_is_told_over_when_the_server_stops_to_think(
    service: ConversationService, ollama_server: FakeOllama, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Text that comes faster than it is read is published as followed by more
    (``ReplyText.more``: the screen waits for the rest before it draws). When the server
    then stops for a while (a model thinking), the service says the burst is over before
    the server goes on: a text event that is not ``more`` (with no text if none came)."""
    put = reply_stream.Feed.put

    def slow_put(feed: reply_stream.Feed, item: object, *, urgent: bool = False) -> bool:
        # read more slowly than the server writes (as on a busy machine), so that the
        # burst is still being read when the loop takes what came: read at full speed,
        # it is over (nothing left to wait for) before the loop first looks
        time.sleep(0.0002)
        return put(feed, item, urgent=urgent)

    monkeypatch.setattr(reply_stream.Feed, "put", slow_put)
    ollama_server.reply = " ".join(f"w{i}" for i in range(2000))  # the server's limit: 2,048
    ollama_server.rate = None  # a burst, as fast as the server writes
    ollama_server.stall_after = 1500
    ollama_server.stall_s = 3.0
    told: list[tuple[ReplyText, int]] = []  # with the tokens the server had sent by then
    service.subscribe(
        lambda e: (
            told.append((e, ollama_server.last_stream_tokens)) if isinstance(e, ReplyText) else None
        )
    )
    conversation = service.new_conversation(MODEL, ChatOptions(), "Hi")
    finished = await service.run(service.send(conversation, "Hi"))
    assert finished.content == ollama_server.reply
    assert "".join(e.text for e, _ in told) == ollama_server.reply
    during = [e for e, sent in told if sent == 1500]  # while the server stood still
    assert during, "the first 1,500 tokens were told before the server went on"
    assert any(e.more for e, _ in told), "a burst was read (told as followed by more)"
    assert not during[-1].more, "the burst was told over while the server stood still"


async def test_a_reply_in_sight_is_read_as_often_as_it_is_drawn(
    store: Store, ollama_server: FakeOllama
) -> None:
    """A reply in sight is read as often as whoever shows it draws it (``drawn_every``,
    here every 0.5 s), not five times as often: its text comes in that many batches once
    its first words are out, and every word of it comes."""
    ollama_server.reply = " ".join(f"w{i}" for i in range(300))
    ollama_server.rate = 100  # 3 s
    engine = ChatEngine(ollama_server.url, timeout=10)
    service = ConversationService(store, engine, save_interval=600.0)
    told: list[float] = []
    service.subscribe(
        lambda e: told.append(time.monotonic()) if isinstance(e, ReplyText) and e.text else None
    )
    try:
        conversation = service.new_conversation(MODEL, ChatOptions(), "Hi")
        reply = service.send(conversation, "Hi")
        reply.drawn_every = 0.5
        finished = await asyncio.wait_for(service.run(reply), 30)
    finally:
        await engine.aclose()
    assert finished.content == ollama_server.reply
    steady = [t for t in told if t - told[0] >= 0.5]  # the first words are read as they come
    span = told[-1] - told[0]
    assert len(steady) <= span / 0.5 + 2, f"{len(steady)} batches in {span:.1f} s"


async def test_a_reply_brought_into_sight_is_read_at_once(
    store: Store, ollama_server: FakeOllama, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reply out of sight (another conversation is shown) is read in batches: its
    reader pauses between reads (here ten minutes). Brought into sight, what came
    meanwhile is read at once, not when the pause is over, and the rest as it comes."""
    monkeypatch.setattr(conversations, "OUT_OF_SIGHT_PAUSE_S", 600.0)
    ollama_server.reply = " ".join(f"w{i}" for i in range(150))
    ollama_server.rate = 50  # 3 s
    engine = ChatEngine(ollama_server.url, timeout=10)
    service = ConversationService(store, engine, save_interval=600.0)
    told: list[str] = []
    service.subscribe(lambda e: told.append(e.text) if isinstance(e, ReplyText) else None)
    try:
        conversation = service.new_conversation(MODEL, ChatOptions(), "Hi")
        reply = service.send(conversation, "Hi")
        reply.in_sight = False
        running = asyncio.create_task(service.run(reply))
        await wait_for(None, lambda: ollama_server.last_stream_tokens >= 60, what="60 tokens sent")
        read = len("".join(told).split())
        assert read < 40, f"out of sight, the reader pauses: {read} tokens read of 60 sent"
        reply.in_sight = True
        await wait_for(
            None, lambda: len("".join(told).split()) >= 60, timeout=5, what="read once in sight"
        )
        finished = await asyncio.wait_for(running, 30)
    finally:
        await engine.aclose()
    assert finished.content == ollama_server.reply
