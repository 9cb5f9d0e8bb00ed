"""Chat and images, the engines (issue 14): the prompt a model writes (empty, huge), the
``generate_image`` tool offered to a model that can call tools, its calls checked and run
through the real image queue, the answers sent back to the model in the next request, and
the calls kept with the reply (reload, history, regenerate, export); the links from a
job's images to their conversation and message, kept by the migration."""

from __future__ import annotations

import json
import shutil
import sqlite3
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from ollama_server import FakeModel, FakeOllama, ToolCallReply, tool_messages

from engines.chat_types import ChatOptions
from engines.config import DiffusionSettings
from engines.conversations import ConversationService, ReplyEvent, ReplyToolUsed
from engines.diffusion import DiffusionEngine, GenerationRequest
from engines.image_links import images_of_messages, job_origin, origin_of
from engines.image_requests import (
    IMAGE_PROMPT_MAX,
    ImagePromptError,
    ToolArgumentError,
    check_written,
    request_from_arguments,
    write_prompt,
)
from engines.image_tool import ImageTool
from engines.images import ImageParameters
from engines.ollama_client import ChatEngine
from engines.queue import ImageQueue
from engines.store import MIGRATIONS, Store, export_markdown

MODEL = "llama3.2:latest"
OLD = Path(__file__).parent / "data" / "schema-v2.db"


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store.open(tmp_path / "db.sqlite")
    yield s  # type: ignore[misc]
    s.close()


@pytest.fixture
async def engine(ollama_server: FakeOllama) -> AsyncIterator[ChatEngine]:
    e = ChatEngine(ollama_server.url, timeout=10)
    try:
        yield e
    finally:
        await e.aclose()


def failing_tool(store: Store, tmp_path: Path, **kwargs: object) -> tuple[ImageTool, ImageQueue]:
    """The real tool and queue, with an image model that is not there: every job fails
    as the pipeline does when its model cannot be loaded."""
    queue = ImageQueue(store)
    settings = DiffusionSettings(model=str(tmp_path / "no-such-model"), width=64, height=64)
    diffusion = DiffusionEngine(settings, tmp_path / "outputs", tmp_path / "cache")

    def run_queue() -> None:
        if queue.want_worker():
            threading.Thread(target=queue.run, args=(diffusion,), daemon=True).start()

    tool = ImageTool(lambda: queue, settings, lambda: settings.model, run_queue, **kwargs)  # type: ignore[arg-type]
    return tool, queue


# -- the prompt a model writes -----------------------------------------------------------


def test_a_written_prompt_is_cleaned_an_empty_one_refused_a_huge_one_cut_at_the_limit() -> None:
    assert check_written('Prompt: "a red fox, snow,\n golden hour"').prompt == (
        "a red fox, snow, golden hour"
    )
    assert check_written("<think>hmm</think>```\nlighthouse, dusk\n```").prompt == (
        "lighthouse, dusk"
    )
    for empty in ("", "   \n", '""', "<think>only thoughts</think>"):
        with pytest.raises(ImagePromptError, match="empty image prompt"):
            check_written(empty)
    huge = "castle " * 1000
    written = check_written(huge)
    assert len(written.prompt) <= IMAGE_PROMPT_MAX and written.prompt.startswith("castle castle")
    assert not written.prompt.endswith("cas")  # cut at a word
    assert f"{IMAGE_PROMPT_MAX:,}" in written.note and "6,999 characters" in written.note


async def test_the_model_writes_the_prompt_following_the_instruction(
    engine: ChatEngine, ollama_server: FakeOllama
) -> None:
    ollama_server.reply = "  a lighthouse on a cliff, storm, oil painting  "
    written = await write_prompt(engine, MODEL, "Write a prompt. Be vivid.", "We talked of the sea")
    assert written.prompt == "a lighthouse on a cliff, storm, oil painting" and not written.note
    [body] = ollama_server.chat_requests()
    [message] = body["messages"]
    assert message["content"].startswith("Write a prompt. Be vivid.")
    assert "We talked of the sea" in message["content"]
    assert not body.get("tools")
    ollama_server.reply = ""
    with pytest.raises(ImagePromptError, match="empty"):
        await write_prompt(engine, MODEL, "Write a prompt.", "the sea")


# -- the tool's arguments ----------------------------------------------------------------


def test_tool_arguments_are_checked_and_a_bad_one_is_named_with_what_is_allowed() -> None:
    defaults = DiffusionSettings(width=512, height=512, steps=20, negative_prompt="blurry")
    request = request_from_arguments({"prompt": " a fox ", "width": "640", "seed": 7.0}, defaults)
    assert (request.prompt, request.width, request.height, request.seed) == ("a fox", 640, 512, 7)
    assert (request.steps, request.negative_prompt) == (20, "blurry")
    bad = {
        "width 5000 is not allowed": {"prompt": "a fox", "width": 5000},
        "width 100 is not allowed": {"prompt": "a fox", "width": 100},
        "steps must be a whole number": {"prompt": "a fox", "steps": "many"},
        "prompt is empty": {"prompt": "  "},
        "prompt is missing": {"width": 512},
        "unknown argument style": {"prompt": "a fox", "style": "noir"},
        f"it may have {IMAGE_PROMPT_MAX:,} at most": {"prompt": "x" * (IMAGE_PROMPT_MAX + 1)},
        "prompt must be a string": {"prompt": ["a", "fox"]},
        "seed 4294967296 is not allowed": {"prompt": "a fox", "seed": 2**32},
    }
    for reason, arguments in bad.items():
        with pytest.raises(ToolArgumentError) as caught:
            request_from_arguments(arguments, defaults)
        assert reason in str(caught.value), (reason, str(caught.value))


# -- the tool in a reply ----------------------------------------------------------------


async def test_a_bad_tool_call_is_refused_and_the_reason_goes_back_to_the_model(
    engine: ChatEngine, store: Store, ollama_server: FakeOllama, tmp_path: Path
) -> None:
    tool, queue = failing_tool(store, tmp_path)
    service = ConversationService(store, engine, save_interval=0.05, tools=tool)
    seen: list[ReplyEvent] = []
    service.subscribe(seen.append)
    ollama_server.replies = [
        ToolCallReply((("generate_image", {"prompt": "a fox", "width": 5000}),)),
        "Sorry, that size is too large.",
    ]
    conversation = service.new_conversation(MODEL, ChatOptions(), "draw")
    finished = await service.run(service.send(conversation, "Draw a huge fox"))
    assert finished.status == "done" and finished.content == "Sorry, that size is too large."
    first, second = ollama_server.chat_requests()
    assert [t["function"]["name"] for t in first["tools"]] == ["generate_image"]
    [answer] = tool_messages(second)
    assert answer["tool_name"] == "generate_image"
    assert answer["content"].startswith("refused: width 5000 is not allowed")
    assert second["messages"][-2]["tool_calls"][0]["function"]["arguments"]["width"] == 5000
    assert queue.jobs() == [], "nothing was queued"
    [use] = store.messages(conversation.id)[-1].tools
    assert (use.state, use.arguments["width"]) == ("refused", 5000)
    assert [e.uses[-1].state for e in seen if isinstance(e, ReplyToolUsed)] == [
        "running",
        "refused",
    ]


async def test_a_tool_called_while_the_pipeline_fails_tells_the_model_and_the_reply_goes_on(
    engine: ChatEngine, store: Store, ollama_server: FakeOllama, tmp_path: Path
) -> None:
    tool, queue = failing_tool(store, tmp_path)
    service = ConversationService(store, engine, save_interval=0.05, tools=tool)
    ollama_server.replies = [
        ToolCallReply((("generate_image", {"prompt": "a lighthouse", "seed": 3}),), "Let me."),
        "The image engine failed, sorry.",
    ]
    conversation = service.new_conversation(MODEL, ChatOptions(), "draw")
    finished = await service.run(service.send(conversation, "Draw a lighthouse"))
    assert finished.status == "done"
    assert finished.content == "Let me.The image engine failed, sorry."
    [job] = queue.jobs()
    assert job.state == "failed" and "does not exist" in (job.error or "")
    [answer] = tool_messages(ollama_server.chat_requests()[-1])
    assert answer["content"].startswith("error: the image could not be made: the model")
    origin = job_origin(store, job.id)
    assert origin is not None and origin.message_id == finished.reply_id
    # kept with the reply: it reads back as the model saw it
    reply = store.messages(conversation.id)[-1]
    [use] = reply.tools
    assert (use.state, use.at) == ("failed", len("Let me."))
    chats = reply.as_chats()
    assert [(c.role, c.content) for c in chats] == [
        ("assistant", "Let me."),
        ("tool", use.result),
        ("assistant", "The image engine failed, sorry."),
    ]
    assert chats[0].tool_calls[0].arguments == {"prompt": "a lighthouse", "seed": 3}
    # the next turn sends the call and its answer again; regenerating leaves them out
    ollama_server.replies = None
    ollama_server.reply = "Anything else?"
    await service.run(service.send(conversation, "ok"))
    sent = ollama_server.chat_requests()[-1]["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "tool", "assistant", "user"]
    await service.run(service.regenerate(conversation))
    assert [m["role"] for m in ollama_server.chat_requests()[-1]["messages"]][-1] == "user"
    markdown = export_markdown(conversation, store.messages(conversation.id))
    assert "Tool `generate_image`: “a lighthouse” → failed" in markdown


async def test_the_tool_is_offered_only_to_a_model_that_can_call_tools_and_when_enabled(
    engine: ChatEngine, store: Store, ollama_server: FakeOllama, tmp_path: Path
) -> None:
    ollama_server.add_model(FakeModel("plain:1b", capabilities=["completion"]))
    tool, _ = failing_tool(store, tmp_path)
    service = ConversationService(store, engine, tools=tool)
    for model in ("plain:1b", MODEL):
        conversation = service.new_conversation(model, ChatOptions(), "hi")
        await service.run(service.send(conversation, "hi"))
    plain, capable = ollama_server.chat_requests()
    assert not plain.get("tools") and capable["tools"][0]["function"]["name"] == "generate_image"
    off, _ = failing_tool(store, tmp_path, enabled=False)
    service = ConversationService(store, engine, tools=off)
    conversation = service.new_conversation(MODEL, ChatOptions(), "hi")
    await service.run(service.send(conversation, "hi"))
    assert not ollama_server.chat_requests()[-1].get("tools")


async def test_declining_the_tool_call_tells_the_model(
    engine: ChatEngine, store: Store, ollama_server: FakeOllama, tmp_path: Path
) -> None:
    asked: list[GenerationRequest] = []

    async def decline(request: GenerationRequest, _call: object) -> bool:
        asked.append(request)
        return False

    tool, queue = failing_tool(store, tmp_path, approve=decline)
    service = ConversationService(store, engine, tools=tool)
    ollama_server.replies = [
        ToolCallReply((("generate_image", {"prompt": "a cat"}),)),
        "Alright, no image.",
    ]
    conversation = service.new_conversation(MODEL, ChatOptions(), "cat")
    await service.run(service.send(conversation, "A cat?"))
    assert [r.prompt for r in asked] == ["a cat"] and queue.jobs() == []
    [answer] = tool_messages(ollama_server.chat_requests()[-1])
    assert answer["content"].startswith("refused: the user declined")


# -- the links, and the migration -------------------------------------------------------


def test_a_jobs_images_know_their_conversation_and_message(store: Store, tmp_path: Path) -> None:
    conversation = store.create_conversation(MODEL, ChatOptions(), "Foxes")
    message = store.add_message(conversation.id, "assistant", "A fox in the snow.")
    queue = ImageQueue(store)
    job = queue.add(GenerationRequest("a fox"), "m", origin=(conversation.id, message))
    path = tmp_path / "fox.png"
    params = ImageParameters("a fox", "", 64, 64, 2, 7.5, 1, "Euler a", "m")
    image_id = store.add_image(path, params, 1.0)
    from engines.diffusion import GeneratedImage

    queue._image_saved(job.id, GeneratedImage(path, params, 1.0))
    origin = origin_of(store, image_id)
    assert origin is not None and (origin.conversation_id, origin.message_id) == (
        conversation.id,
        message,
    )
    assert origin.title == "Foxes"
    assert [i.id for i in images_of_messages(store, [message])[message]] == [image_id]
    store.delete(conversation.id)  # the image stays, unlinked
    assert origin_of(store, image_id) is None and [i.id for i in store.images()] == [image_id]


def test_the_migration_keeps_old_data_and_links_new_images(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    shutil.copy(OLD, db)
    store = Store.open(db)
    try:
        [image] = store.images()
        assert origin_of(store, image.id) is None
        first = store.conversations()[0]
        assert all(m.tools == () for m in store.messages(first.id))
    finally:
        store.close()
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        columns = {r[1] for r in conn.execute("PRAGMA table_info(images)")}
        assert {"conversation_id", "message_id", "job_id"} <= columns


def test_stored_tool_uses_survive_damage(store: Store) -> None:
    conversation = store.create_conversation(MODEL, ChatOptions(), "x")
    message = store.add_message(conversation.id, "assistant", "hi")
    with sqlite3.connect(store.path) as conn:  # type: ignore[arg-type]
        conn.execute("UPDATE messages SET tools = ? WHERE id = ?", ("not json", message))
    assert store.message(message).tools == ()  # type: ignore[union-attr]
    broken = json.dumps([{"name": 3}, {"name": "generate_image", "arguments": {}, "at": -4}])
    with sqlite3.connect(store.path) as conn:  # type: ignore[arg-type]
        conn.execute("UPDATE messages SET tools = ? WHERE id = ?", (broken, message))
    [use] = store.message(message).tools  # type: ignore[union-attr]
    assert (use.name, use.at, use.state) == ("generate_image", 0, "failed")


def test_the_migration_from_the_schema_before_it_keeps_jobs_images_and_messages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import engines.store

    mine = next(i for i, m in enumerate(MIGRATIONS) if "images_by_message" in m)
    db = tmp_path / "before.db"
    monkeypatch.setattr(engines.store, "MIGRATIONS", MIGRATIONS[:mine])
    before = Store.open(db)
    conversation = before.create_conversation(MODEL, ChatOptions(), "Kept")
    before.add_message(conversation.id, "user", "hello")
    before.add_message(conversation.id, "assistant", "hi there")
    path = tmp_path / "kept.png"
    params = ImageParameters("kept", "", 64, 64, 2, 7.5, 1, "Euler a", "m")
    image_id = before.add_image(path, params, 1.0)
    with sqlite3.connect(db) as conn:
        conn.execute(
            "INSERT INTO jobs (position, request, model, created_at) VALUES (1, '{}', 'm', 0)"
        )
    before.close()
    monkeypatch.setattr(engines.store, "MIGRATIONS", MIGRATIONS)
    after = Store.open(db)
    try:
        assert [(m.role, m.content, m.tools) for m in after.messages(conversation.id)] == [
            ("user", "hello", ()),
            ("assistant", "hi there", ()),
        ]
        assert [i.id for i in after.images()] == [image_id] and origin_of(after, image_id) is None
        assert job_origin(after, 1) is None
    finally:
        after.close()
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        assert conn.execute("SELECT COUNT(*) FROM jobs").fetchone()[0] == 1
