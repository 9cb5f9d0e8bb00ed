"""The conversation open at start is drawn just after the first frame (that frame, with
the prompt and the list, does not wait for its Markdown; issue 13): every turn comes, in
order, each image under the reply it came from, and a prompt typed while the app started
is sent in that conversation and shown below it."""

from __future__ import annotations

from pathlib import Path

from ollama_server import FakeOllama
from PIL import Image
from tui_helpers import make_app, screen_text, shown, sql, wait_for

from engines.chat_types import ChatOptions
from engines.config import load_settings
from engines.images import ImageParameters
from engines.store import Store
from tui.screens.chat import ChatScreen
from tui.widgets.chat_image import ChatImage
from tui.widgets.conversation import FIRST_TURNS, ConversationView, PromptTurn, ReplyTurn

PAIRS = FIRST_TURNS  # twice as many turns as come first: some come a frame later
SIZE = (120, 40)


def fill(config: Path, tmp_path: Path) -> tuple[int, list[int]]:
    """A conversation of ``PAIRS`` questions and answers, an image made by its first
    answer and one by its last; its id and its messages' ids."""
    settings = load_settings(config, env={})
    store = Store.open(settings.paths.database)
    try:
        c = store.create_conversation("llama3.2:latest", ChatOptions(), "Harbour lights")
        ids = []
        for i in range(PAIRS):
            ids.append(store.add_message(c.id, "user", f"question {i}"))
            ids.append(store.add_message(c.id, "assistant", f"Answer **{i}**.", model="m"))
        for n, message in enumerate((ids[1], ids[-1])):
            path = tmp_path / f"made-{n}.png"
            Image.new("RGB", (32, 32), (200, 40 * n, 30)).save(path)
            params = ImageParameters(f"harbour {n}", "", 32, 32, 2, 7.5, n, "Euler a", "tiny")
            image = store.add_image(path, params, 1.0)
            sql(store.path, "UPDATE images SET message_id = ? WHERE id = ?", (message, image))
    finally:
        store.close()
    return c.id, ids


def view_of(app: object) -> ConversationView:
    screen = app.screen  # type: ignore[attr-defined]
    assert isinstance(screen, ChatScreen)
    return screen.query_one(ConversationView)


async def test_the_newest_conversation_comes_whole_with_its_images_under_their_replies(
    ollama_server: FakeOllama, config_file: Path, tmp_path: Path
) -> None:
    conversation, ids = fill(config_file, tmp_path)
    app = make_app(config_file)
    async with app.run_test(size=SIZE) as pilot:
        view = view_of(app)
        await wait_for(
            pilot,
            lambda: (
                len([t for t in shown(view) if isinstance(t, PromptTurn | ReplyTurn)]) == len(ids)
            ),
            what="every turn mounted",
        )
        screen = app.screen
        assert isinstance(screen, ChatScreen) and screen.conversation is not None
        assert screen.conversation.id == conversation
        assert [t.message_id for t in shown(view)] == ids  # in order, none twice
        assert f"Answer {PAIRS - 1}." in screen_text(app)  # the end is in sight
        await wait_for(pilot, lambda: len(view.query(ChatImage)) == 2, what="both images")
        for picture, message in zip(view.query(ChatImage), (ids[1], ids[-1]), strict=True):
            turn = picture.parent
            assert isinstance(turn, ReplyTurn) and turn.message_id == message
            assert turn.children[-1] is picture, "below the reply's text"


async def test_a_prompt_typed_while_the_app_starts_goes_below_the_conversation(
    ollama_server: FakeOllama, config_file: Path, tmp_path: Path
) -> None:
    conversation, ids = fill(config_file, tmp_path)
    ollama_server.replies = ["Onwards."]
    app = make_app(config_file, typed_at_start="Where next?\r")
    async with app.run_test(size=SIZE) as pilot:
        view = view_of(app)
        await wait_for(
            pilot,
            lambda: (
                [t.message_id for t in shown(view)][: len(ids)] == ids
                and any(isinstance(t, ReplyTurn) and t.content == "Onwards." for t in shown(view))
                and not app.conversations.busy
            ),
            what="the history, then the prompt typed and its reply",
        )
        tail = [(type(t).__name__, t.content) for t in shown(view)[len(ids) :]]
        assert tail == [("PromptTurn", "Where next?"), ("ReplyTurn", "Onwards.")]
        stored = app.store.messages(conversation)
        assert [m.content for m in stored[-2:]] == ["Where next?", "Onwards."]
        assert [m.id for m in stored[:-2]] == ids
        sent = [m for m in ollama_server.chat_requests()[-1]["messages"] if m["role"] != "system"]
        assert len(sent) == len(ids) + 1, "the model is given the whole conversation"
        assert [m["content"] for m in sent[-2:]] == [f"Answer **{PAIRS - 1}**.", "Where next?"]


async def test_starting_on_another_screen_still_draws_the_newest_conversation(
    ollama_server: FakeOllama, config_file: Path, tmp_path: Path
) -> None:
    _conversation, ids = fill(config_file, tmp_path)
    app = make_app(config_file, start_screen="image")
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: type(app.screen).__name__ == "ImageScreen", what="image")
        await pilot.press("f2")
        await wait_for(pilot, lambda: isinstance(app.screen, ChatScreen), what="the chat")
        view = view_of(app)
        await wait_for(pilot, lambda: [t.message_id for t in shown(view)] == ids, what="every turn")
        await wait_for(pilot, lambda: f"Answer {PAIRS - 1}." in screen_text(app), what="end")
