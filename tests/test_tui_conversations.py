"""Pilot tests of replies owned by the conversation service: background replies, several
at once, stop, quit and delete while streaming, regenerate, edit, continue, versions, the
turn cursor and prompt history - against the test Ollama server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
import textual.screen
from conftest import MakeConfig
from ollama_server import FakeOllama
from textual import events
from textual.widgets import Input, Static
from textual.widgets.option_list import OptionDoesNotExist
from tui_helpers import make_app, screen_text, shown, shows, type_text, wait_for

from engines.chat_types import ChatOptions
from engines.config import load_settings
from engines.conversations import Reply
from engines.store import Store
from tui import app as tui_app
from tui.app import LlmPessoalApp
from tui.compositor import DrawsSoon
from tui.screens import chat as chat_screen
from tui.screens.chat import ChatScreen
from tui.widgets import conversation as conversation_widgets
from tui.widgets.conversation import ConversationView, PromptTurn, ReplyTurn
from tui.widgets.dialogs import ConfirmDialog
from tui.widgets.history import HistoryDialog
from tui.widgets.prompt import PromptInput
from tui.widgets.sidebar import ConversationList

T = TypeVar("T")
SIZE = (120, 40)
LONG = "long " * 5000
"""A reply that streams far longer than any test lasts (each ends by stopping it)."""


def chat(app: LlmPessoalApp) -> ChatScreen:
    [screen] = [s for s in app.screen_stack if isinstance(s, ChatScreen)]
    return screen


def view(app: LlmPessoalApp) -> ConversationView:
    return chat(app).query_one(ConversationView)


def prompt(app: LlmPessoalApp) -> PromptInput:
    return chat(app).query_one(PromptInput)


def notices(app: LlmPessoalApp) -> str:
    return "\n".join(n.message for n in app.notices)


def stored_path(config: Path, conversation_id: int) -> list[tuple[str, str, str]]:
    store = Store.open(load_settings(config, env={}).paths.database)
    try:
        return [(m.role, m.content, m.status) for m in store.messages(conversation_id)]
    finally:
        store.close()


async def online(pilot: Any, app: LlmPessoalApp) -> None:
    await wait_for(
        pilot, lambda: app.ollama is not None and app.ollama.online and app.models, what="online"
    )


async def send(pilot: Any, app: LlmPessoalApp, text: str) -> int:
    """Send ``text`` in the conversation on screen; its id."""
    prompt(app).focus()
    await type_text(pilot, text)
    prompt(app).action_submit()  # not pilot.press: it waits for the app to go idle
    await wait_for(
        pilot,
        lambda: chat(app).conversation is not None and prompt(app).text == "",
        what=f"{text!r} sent",
    )
    conversation = chat(app).conversation
    assert conversation is not None
    return conversation.id


async def highlight_listed(pilot: Any, app: LlmPessoalApp, conversation_id: int) -> None:
    """Focus the sidebar's list and highlight that conversation, once it is listed (a new
    one is once its reply's first words are drawn, or their time is up)."""
    listing = chat(app).query_one(ConversationList)

    def listed() -> bool:
        try:
            listing.get_option(str(conversation_id))
        except OptionDoesNotExist:
            return False
        return True

    await wait_for(pilot, listed, what=f"conversation {conversation_id} listed")
    listing.focus()
    listing.highlighted = listing.get_option_index(str(conversation_id))


def writing(app: LlmPessoalApp, conversation_id: int, words: int = 3) -> bool:
    """The reply of that conversation has streamed at least ``words`` pieces."""
    reply = app.conversations.reply_in(conversation_id)
    return reply is not None and len(reply.parts) >= words


async def streaming(pilot: Any, app: LlmPessoalApp, text: str, words: int = 3) -> Reply:
    """Send ``text`` once the app is online; its reply, once it has streamed ``words``."""
    await online(pilot, app)
    cid = await send(pilot, app, text)
    await wait_for(pilot, lambda: writing(app, cid, words), what=f"{text!r} streaming")
    reply = app.conversations.reply_in(cid)
    assert reply is not None
    return reply


def each_frame(
    monkeypatch: pytest.MonkeyPatch, app: LlmPessoalApp, look: Callable[[], T]
) -> list[T]:
    """What ``look()`` says as each frame the app draws from now on goes to the terminal."""
    seen: list[T] = []
    display = app._display

    def counted(screen: Any, update: Any) -> None:
        if update is not None:
            seen.append(look())
        display(screen, update)

    monkeypatch.setattr(app, "_display", counted)
    return seen


async def idle(pilot: Any, app: LlmPessoalApp) -> None:
    await wait_for(
        pilot, lambda: not app.conversations.busy and not chat(app).streaming, what="replies done"
    )


def question(app: LlmPessoalApp) -> str:
    """What the confirmation on screen asks."""
    dialog = app.screen
    assert isinstance(dialog, ConfirmDialog)
    return " ".join(dialog.question.split())


def chats(server: FakeOllama) -> int:
    return sum(r.path == "/api/chat" for r in server.requests)


def label(app: LlmPessoalApp, conversation_id: int) -> str:
    """The conversation's line in the sidebar ("" while it is not listed: the list takes in
    a conversation just sent once its reply has had its time for the first words)."""
    listing = chat(app).query_one(ConversationList)
    try:
        return str(listing.get_option(str(conversation_id)).prompt)
    except OptionDoesNotExist:
        return ""


async def test_a_send_in_b_while_a_streams_and_a_shows_live_when_back(
    ollama_server: FakeOllama, config_file: Path
) -> None:
    ollama_server.replies = lambda messages, model: (
        LONG if messages[-1]["content"] == "A" else "B is short."
    )
    ollama_server.rate = 150
    app = make_app(config_file)
    async with app.run_test(size=SIZE) as pilot:
        await online(pilot, app)
        a = await send(pilot, app, "A")
        await wait_for(pilot, lambda: writing(app, a), what="A streaming")
        # the sidebar marks the streaming conversation
        await wait_for(pilot, lambda: "writing…" in label(app, a), what="A marked")
        await pilot.press("ctrl+n")
        b = await send(pilot, app, "B")
        assert b != a
        await wait_for(pilot, lambda: app.conversations.reply_in(b) is None, what="B done")
        assert "Not sent" not in notices(app)
        assert writing(app, a), "A goes on in the background"
        assert stored_path(config_file, b)[-1] == ("assistant", "B is short.", "done")
        # back to A: its reply is drawn where it stands, and goes on live
        chat(app).open_conversation(a)
        await pilot.pause()
        live = view(app).last_reply()
        assert live is not None and live.status == "streaming"
        await wait_for(pilot, lambda: live.body.text.startswith("long long"), what="A drawn")
        shown = len(live.body.text)
        await wait_for(pilot, lambda: len(live.body.text) > shown + 20, what="A drawn live")
        await pilot.press("escape")
        await idle(pilot, app)
        assert live.status == "interrupted"
        assert stored_path(config_file, a)[-1] == ("assistant", live.body.text, "interrupted")


async def test_the_screen_holds_its_frames_while_the_reply_on_it_is_read_in_a_burst(
    ollama_server: FakeOllama, config_file: Path
) -> None:
    """A reply on screen whose reader is behind the server (``Reply.bursting``, set by the
    reader: tests/test_reply_stream.py) holds the Chat screen's frames a moment, since
    each would hold its last words back; a reply in the background holds nothing."""
    ollama_server.reply = LONG
    ollama_server.rate = 50
    app = make_app(config_file)
    async with app.run_test(size=SIZE) as pilot:
        reply = await streaming(pilot, app, "A")
        a = reply.conversation_id
        screen = chat(app)
        await wait_for(pilot, lambda: not screen.holds_frames(), what="caught up")
        reply.bursting.set()  # as its reader does while behind
        assert screen.holds_frames()
        await pilot.press("ctrl+n")
        await wait_for(pilot, lambda: not screen.streaming, what="A out of sight")
        reply.bursting.set()
        assert not screen.holds_frames(), "a reply in the background holds no frame"
        screen.open_conversation(a)
        await wait_for(pilot, lambda: screen.streaming, what="A on screen again")
        reply.bursting.set()
        assert screen.holds_frames()
        await pilot.press("escape")
        await idle(pilot, app)
        assert not reply.bursting.is_set(), "a stopped reply leaves no burst behind"
        assert not screen.holds_frames()


async def test_what_is_typed_during_a_burst_is_drawn_at_once_and_the_rest_waits(
    ollama_server: FakeOllama, config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the reply on screen is read in a burst, a key typed in the prompt is drawn at
    once, the last character deleted too; the prompt a send has just emptied waits with
    the rest of the screen."""
    monkeypatch.setattr(DrawsSoon, "HOLD_S", 60.0)
    monkeypatch.setattr(chat_screen, "SEND_CLEARED_S", 60.0)
    ollama_server.reply = LONG
    ollama_server.rate = 100
    ollama_server.stall_after = 5  # then the reader waits: nothing it does clears the burst
    ollama_server.stall_s = 60
    app = make_app(config_file)
    async with app.run_test(size=SIZE) as pilot:
        reply = await streaming(pilot, app, "A", words=1)
        screen = chat(app)
        prompt(app).focus()
        await pilot.pause(0.3)
        # for each frame: whether the burst was still being read
        frames = each_frame(monkeypatch, app, reply.bursting.is_set)
        reply.bursting.set()  # as its reader does while behind
        screen._sent_at = time.monotonic() - 120  # A's send, long past
        for edit, what in ((lambda: prompt(app).insert("typed"), "typed"), (prompt(app).clear, "")):
            frames.clear()
            edit()
            # waited on the event loop alone: the pilot's pauses draw a frame themselves
            await wait_for(None, lambda: frames, what=f"the echo of {what!r}", timeout=15)
            assert frames[0], "the echo was drawn during the burst, not after it"
            assert prompt(app).text == what
        prompt(app).insert("x")
        await wait_for(None, lambda: frames, what="the echo of 'x'", timeout=15)
        frames.clear()
        screen._sent_at = time.monotonic()  # as a send does, as it empties the prompt
        prompt(app).clear()
        await asyncio.sleep(0.3)
        assert not frames, "the prompt emptied by the send waits while the burst is read"
        reply.bursting.clear()  # the burst is read
        await wait_for(None, lambda: frames, what="the frame once the burst is read", timeout=15)
        await pilot.press("escape")
        await idle(pilot, app)


def slow_reply_turns(monkeypatch: pytest.MonkeyPatch) -> None:
    """A reply's turn made from now on takes 0.3 s to mount (a part of it does)."""

    class Slow(Static):
        async def on_mount(self) -> None:
            await asyncio.sleep(0.3)

    compose = ReplyTurn.compose

    def slowly(turn: ReplyTurn) -> Any:
        yield from compose(turn)
        yield Slow()

    monkeypatch.setattr(ReplyTurn, "compose", slowly)


def laid_out(app: LlmPessoalApp, kind: type) -> bool:
    """A widget of ``kind`` is in the Chat screen's last frame (laid out, not just mounted)."""
    return any(isinstance(w, kind) for w in chat(app)._compositor.visible_widgets)


async def test_the_turns_of_a_message_sent_are_drawn_as_soon_as_they_are_mounted(
    ollama_server: FakeOllama, config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The turns of a message just sent are drawn once they are mounted, not at the next
    tick of Textual's frame timer: a frame the timer started then (up to 17 ms later) held
    back the server's first tokens, which come a few milliseconds after. Here the timer
    ticks once a minute and the model takes 30 s to its first token: the turns come at
    once anyway."""
    monkeypatch.setattr(textual.screen, "UPDATE_PERIOD", 60.0)
    ollama_server.first_token_delay = 30.0
    app = make_app(config_file)
    async with app.run_test(size=SIZE) as pilot:
        await online(pilot, app)
        prompt(app).focus()
        await type_text(pilot, "the question")  # drawn by the pilot's pause
        assert not laid_out(app, PromptTurn)
        prompt(app).action_submit()
        # on the event loop alone: the pilot's pauses draw a frame themselves
        await wait_for(
            None,
            lambda: laid_out(app, PromptTurn) and laid_out(app, ReplyTurn),
            what="the new turns drawn",
        )
        assert app.conversations.busy, "drawn while the reply waits for its first token"
        await pilot.press("escape")
        await idle(pilot, app)


async def test_no_frame_shows_the_turn_of_a_message_sent_without_its_replys_turn(
    ollama_server: FakeOllama, config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the reply's turn of a message just sent is being mounted, frames wait (its
    mounting takes a dozen turns of the event loop, and a frame drawn meanwhile held it
    back): both turns come in one frame. Here the reply's turn takes 0.3 s to mount, and
    Textual's frame timer ticks 60 times a second meanwhile."""
    monkeypatch.setattr(chat_screen, "MOUNTING_HOLD_S", 60.0)
    monkeypatch.setattr(DrawsSoon, "HOLD_S", 60.0)
    slow_reply_turns(monkeypatch)
    ollama_server.first_token_delay = 30.0
    app = make_app(config_file)
    async with app.run_test(size=SIZE) as pilot:
        await online(pilot, app)
        prompt(app).focus()
        await type_text(pilot, "the question")
        # each frame: the prompt's turn, the reply's
        frames = each_frame(
            monkeypatch, app, lambda: (laid_out(app, PromptTurn), laid_out(app, ReplyTurn))
        )
        prompt(app).action_submit()
        # on the event loop alone: the pilot's pauses draw a frame themselves
        await wait_for(None, lambda: any(reply for _, reply in frames), what="the turns drawn")
        assert all(reply for prompt_turn, reply in frames if prompt_turn), frames
        await pilot.press("escape")
        await idle(pilot, app)


def two_saved(config: Path) -> tuple[int, int]:
    """Two saved conversations of a prompt and a reply each; the second opens at start."""
    store = Store.open(load_settings(config, env={}).paths.database)
    ids = []
    for name in ("first", "second"):
        conversation = store.create_conversation("llama3.2:latest", ChatOptions(), name)
        store.add_message(conversation.id, "user", f"the {name} question")
        store.add_message(conversation.id, "assistant", f"the {name} answer", model="m")
        ids.append(conversation.id)
    store.close()
    return ids[0], ids[1]


def shows_reply_of(app: LlmPessoalApp, conversation_id: int) -> bool:
    """The last frame of the Chat screen has the reply of that conversation laid out."""
    stored = stored_path_ids(app, conversation_id)
    return any(
        isinstance(w, ReplyTurn) and w.message_id in stored
        for w in chat(app)._compositor.visible_widgets
    )


def stored_path_ids(app: LlmPessoalApp, conversation_id: int) -> set[int]:
    return {m.id for m in app.store.messages(conversation_id)}


async def test_no_frame_shows_a_conversation_opened_without_its_last_turn(
    ollama_server: FakeOllama, config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Frames wait while the last turn of a conversation just opened is mounted (at most
    ``OPENING_HOLD_S``): a frame drawn meanwhile showed the list's new choice over an
    empty view, and the frame of the turns waited for it. Here the reply's turn takes
    0.3 s to mount, and Textual's frame timer ticks 60 times a second meanwhile."""
    monkeypatch.setattr(conversation_widgets, "OPENING_HOLD_S", 60.0)
    monkeypatch.setattr(DrawsSoon, "HOLD_S", 60.0)
    first, _ = two_saved(config_file)
    app = make_app(config_file)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: "the second answer" in screen_text(app), what="opened")
        slow_reply_turns(monkeypatch)
        frames = each_frame(monkeypatch, app, lambda: shows_reply_of(app, first))
        chat(app).open_conversation(first)
        # on the event loop alone: the pilot's pauses draw a frame themselves
        await wait_for(None, lambda: any(frames), what="the conversation drawn")
        assert all(frames), frames
        assert "the first answer" in screen_text(app)


async def test_a_conversation_opened_is_drawn_as_soon_as_its_turns_are_mounted(
    ollama_server: FakeOllama, config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not at the next tick of Textual's frame timer (up to 17 ms later): here it ticks
    once a minute, and the conversation comes at once anyway."""
    monkeypatch.setattr(textual.screen, "UPDATE_PERIOD", 60.0)
    first, _ = two_saved(config_file)
    app = make_app(config_file)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: "the second answer" in screen_text(app), what="opened")
        chat(app).open_conversation(first)
        # on the event loop alone: the pilot's pauses draw a frame themselves
        await wait_for(None, lambda: shows_reply_of(app, first), what="the conversation drawn")


@pytest.mark.parametrize("first_words_s", [8.0, 0.001], ids=["long", "up-before-the-send-ends"])
async def test_the_sidebar_shows_a_new_conversation_once_its_first_words_time_is_up(
    ollama_server: FakeOllama,
    config_file: Path,
    monkeypatch: pytest.MonkeyPatch,
    first_words_s: float,
) -> None:
    """The sidebar takes in the conversation of a message just sent (new, or gone to the
    top) once its reply has had its time for the first words (``first_words_due``), not
    in the frame of the new turns, which the first words wait for. A long time: the
    turns are drawn, the list is not yet; then it is. A time up before the send is done
    (a machine that loaded): the list at once, and the app closes cleanly (a timer of no
    time at all broke Textual's, which said so when stopped)."""
    monkeypatch.setattr(tui_app, "FIRST_WORDS_S", first_words_s)
    ollama_server.reply = LONG  # still streaming when the list is looked at
    ollama_server.rate = 100
    app = make_app(config_file)
    async with app.run_test(size=SIZE) as pilot:
        await online(pilot, app)
        listing = chat(app).query_one(ConversationList)
        cid = await send(pilot, app, "A")
        if first_words_s > 1:
            await wait_for(pilot, lambda: laid_out(app, ReplyTurn), what="the turns drawn")
            listed = [listing.get_option_at_index(i).id for i in range(listing.option_count)]
            assert str(cid) not in listed, "the list waits for the first words"
        await wait_for(
            pilot,
            lambda: listing.option_count and listing.get_option_at_index(0).id == str(cid),
            what="the conversation listed at the top",
        )
        assert app.conversations.reply_in(cid) is not None, "listed while the reply streams"
        await pilot.press("escape")
        await idle(pilot, app)


async def test_a_reply_done_before_its_first_words_time_is_drawn_done_before_the_list(
    ollama_server: FakeOllama, config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reply that ends before its first words' time is up (a short one, at full speed):
    the list takes its conversation in once the reply is drawn done, not in that frame,
    which its last words wait for."""
    monkeypatch.setattr(tui_app, "FIRST_WORDS_S", 8.0)
    ollama_server.reply = "Short, and done at once."
    app = make_app(config_file)
    async with app.run_test(size=SIZE) as pilot:
        await online(pilot, app)
        listing = chat(app).query_one(ConversationList)

        def looked() -> tuple[bool, bool]:  # the reply drawn done, the conversation listed
            reply = view(app).last_reply()
            return (reply is not None and reply.status == "done", listing.option_count > 0)

        frames = each_frame(monkeypatch, app, looked)
        await send(pilot, app, "A")
        await wait_for(pilot, lambda: listing.option_count, what="the conversation listed")
        drawn_done = next(listed for done, listed in frames if done)
        assert not drawn_done, "the frame that drew the reply done did not draw the list"


async def test_a_reply_finishing_out_of_sight_is_marked_unseen_with_a_notice(
    ollama_server: FakeOllama, make_config: MakeConfig
) -> None:
    ollama_server.reply = "word " * 300  # 3 s: long enough to go to another conversation
    ollama_server.rate = 100
    app = make_app(make_config(ui={"bell": True}))
    rang: list[bool] = []
    app.bell = lambda: rang.append(True)  # type: ignore[method-assign]
    async with app.run_test(size=SIZE) as pilot:
        await online(pilot, app)
        a = await send(pilot, app, "in the background")
        await wait_for(pilot, lambda: writing(app, a), what="A streaming")
        await pilot.press("ctrl+n")
        await wait_for(pilot, lambda: a in app.unseen, what="A finished unseen")
        await pilot.pause()
        assert "Reply ready in “in the background”" in notices(app)
        assert rang, "the bell rings where [ui] bell is on"
        assert "new reply" in label(app, a)
        chat(app).open_conversation(a)
        await pilot.pause()
        assert a not in app.unseen and "new reply" not in label(app, a)


async def test_past_the_limit_a_reply_waits_and_says_so(
    ollama_server: FakeOllama, make_config: MakeConfig
) -> None:
    ollama_server.reply = LONG
    ollama_server.rate = 100
    app = make_app(make_config(chat={"max_parallel": 1}))
    async with app.run_test(size=SIZE) as pilot:
        await online(pilot, app)
        a = await send(pilot, app, "first")
        await wait_for(pilot, lambda: writing(app, a), what="A streaming")
        await pilot.press("ctrl+n")
        b = await send(pilot, app, "second")
        await wait_for(pilot, lambda: "waiting: 1st in line" in screen_text(app), what="waits")
        await wait_for(pilot, lambda: "waiting" in label(app, b), what="B marked waiting")
        assert ollama_server.streams == 1, "the second did not reach the server"
        # Esc stops the visible reply, even one still waiting; the other goes on
        await pilot.press("escape")
        await wait_for(pilot, lambda: app.conversations.reply_in(b) is None, what="B stopped")
        assert stored_path(config_file_of(app), b)[-1][2] == "interrupted"
        assert writing(app, a)
        # the sidebar's key stops any conversation's reply
        await highlight_listed(pilot, app, a)
        await pilot.press("s")
        await wait_for(pilot, lambda: not app.conversations.busy, what="A stopped")
        assert stored_path(config_file_of(app), a)[-1][2] == "interrupted"
        assert "Stopped the reply in “first”" in notices(app)


def config_file_of(app: LlmPessoalApp) -> Path:
    return app.settings.paths.database.parent.parent / "config.toml"


async def test_the_palette_stops_a_background_reply(
    ollama_server: FakeOllama, config_file: Path
) -> None:
    ollama_server.reply = LONG
    ollama_server.rate = 100
    app = make_app(config_file)
    async with app.run_test(size=SIZE) as pilot:
        await online(pilot, app)
        a = await send(pilot, app, "stop me")
        await wait_for(pilot, lambda: writing(app, a), what="streaming")
        await pilot.press("ctrl+n")
        # the palette's commands, as the palette gathers them for the screen on show
        [stop] = [
            c for c in app.get_system_commands(chat(app)) if c.title.startswith("Stop the reply")
        ]
        assert stop.title == "Stop the reply in “stop me”"
        stop.callback()
        await wait_for(pilot, lambda: not app.conversations.busy, what="stopped")
        assert stored_path(config_file, a)[-1][2] == "interrupted"


async def test_deleting_a_streaming_conversation_stops_it_first(
    ollama_server: FakeOllama, config_file: Path
) -> None:
    ollama_server.reply = LONG
    ollama_server.rate = 100
    app = make_app(config_file)
    async with app.run_test(size=SIZE) as pilot:
        await online(pilot, app)
        a = await send(pilot, app, "doomed")
        await wait_for(pilot, lambda: writing(app, a), what="streaming")
        await highlight_listed(pilot, app, a)
        await pilot.press("d")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmDialog), what="asked")
        assert "will be stopped first" in question(app)
        await pilot.press("y")
        await wait_for(pilot, lambda: app.store.conversation(a) is None, what="deleted")
        assert not app.conversations.busy
        await wait_for(pilot, lambda: ollama_server.cancelled == 1, what="the server stopped")
        assert chat(app).conversation is None


async def test_the_server_dropping_one_of_two_parallel_streams(
    ollama_server: FakeOllama, config_file: Path
) -> None:
    ollama_server.replies = lambda messages, model: (
        "short and done." if messages[-1]["content"] == "short" else LONG
    )
    ollama_server.rate = 150
    ollama_server.drop_after = 20  # the short reply ends before this
    app = make_app(config_file)
    async with app.run_test(size=SIZE) as pilot:
        await online(pilot, app)
        cut = await send(pilot, app, "long")
        await pilot.press("ctrl+n")
        done = await send(pilot, app, "short")
        await idle(pilot, app)
        assert stored_path(config_file, done)[-1] == ("assistant", "short and done.", "done")
        _, content, status = stored_path(config_file, cut)[-1]
        assert status == "interrupted" and content.startswith("long long")
        chat(app).open_conversation(cut)
        await pilot.pause()
        text = screen_text(app)
        assert "interrupted" in text and "long long" in text


async def test_regenerating_while_the_model_is_missing_offers_a_pull_and_loses_nothing(
    ollama_server: FakeOllama, config_file: Path
) -> None:
    ollama_server.reply = "the only answer"
    app = make_app(config_file)
    async with app.run_test(size=SIZE) as pilot:
        await online(pilot, app)
        a = await send(pilot, app, "question")
        await idle(pilot, app)
        ollama_server.remove_model("llama3.2:latest")
        # the app's list is stale: the server answers that it lacks the model
        await pilot.press("alt+r")
        await wait_for(pilot, lambda: "is not installed" in notices(app), what="error")
        await idle(pilot, app)
        assert "2/2" in screen_text(app) and "ollama pull" in screen_text(app)
        assert [m.status for m in app.store.all_messages(a)] == ["done", "done", "error"]
        await pilot.press("alt+left")
        await wait_for(pilot, lambda: "the only answer" in screen_text(app), what="kept")
        # now the list is known: regenerating again offers the pull first
        await wait_for(
            pilot,
            lambda: "llama3.2:latest" not in [m.name for m in app.models],
            what="the list read again",
        )
        await pilot.press("alt+r")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmDialog), what="pull offered")
        assert "not installed" in screen_text(app)
        await pilot.press("escape")
        await wait_for(pilot, lambda: "nothing was regenerated" in notices(app), what="notice")
        assert len(app.store.all_messages(a)) == 3, "no new version was made"
        assert stored_path(config_file, a)[-1] == ("assistant", "the only answer", "done")


async def test_regenerate_keeps_versions_to_flip_through_and_sends_the_shown_one(
    ollama_server: FakeOllama, config_file: Path
) -> None:
    ollama_server.replies = ["first answer", "second answer", "after"]
    app = make_app(config_file)
    async with app.run_test(size=SIZE) as pilot:
        await online(pilot, app)
        a = await send(pilot, app, "question")
        await idle(pilot, app)
        # as a terminal sends it (ESC r: a key with a character, which the prompt must not type)
        app.post_message(events.Key("alt+r", "r"))
        await wait_for(pilot, lambda: len(app.store.all_messages(a)) == 3, what="regenerated")
        assert prompt(app).text == ""
        await idle(pilot, app)
        regenerated = ollama_server.chat_requests()[-1]["messages"]
        assert regenerated == [{"role": "user", "content": "question"}]
        reply = view(app).last_reply()
        assert reply is not None and reply.content == "second answer"
        assert "2/2" in screen_text(app)
        await pilot.press("alt+left")
        await wait_for(pilot, lambda: "first answer" in screen_text(app), what="flipped back")
        assert "1/2" in screen_text(app)
        assert "first answer" in screen_text(app) and "second answer" not in screen_text(app)
        assert stored_path(config_file, a)[-1][1] == "first answer"
        await pilot.press("alt+left")
        assert "first version" in notices(app)
        # the history sent next follows the version shown
        await send(pilot, app, "more")
        await idle(pilot, app)
        sent = ollama_server.chat_requests()[-1]["messages"]
        assert [m["content"] for m in sent] == ["question", "first answer", "more"]


async def test_editing_a_prompt_branches_and_an_empty_edit_is_refused(
    ollama_server: FakeOllama, config_file: Path
) -> None:
    ollama_server.replies = ["r1", "r2", "r1 edited"]
    app = make_app(config_file)
    async with app.run_test(size=SIZE) as pilot:
        await online(pilot, app)
        a = await send(pilot, app, "one")
        await idle(pilot, app)
        await send(pilot, app, "two")
        await idle(pilot, app)
        before = stored_path(config_file, a)
        # the turn cursor: from the last turn up to the first prompt
        for _ in range(4):
            await pilot.press("alt+up")
        selected = view(app).selected
        assert isinstance(selected, PromptTurn) and selected.content == "one"
        await pilot.press("alt+c")
        assert app.clipboard == "one", "the selected turn is copied"
        await type_text(pilot, "draft")
        await pilot.press("alt+e")
        assert prompt(app).text == "one" and chat(app).editing is not None
        # into an empty prompt: refused, nothing lost
        prompt(app).clear()
        await pilot.press("enter")
        assert "The edited prompt is empty" in notices(app)
        assert chat(app).editing is not None and stored_path(config_file, a) == before
        await type_text(pilot, "one, edited")
        await pilot.press("enter")
        await wait_for(pilot, lambda: chat(app).editing is None, what="edit sent")
        await idle(pilot, app)
        assert prompt(app).text == "draft", "the draft comes back"
        assert stored_path(config_file, a) == [
            ("user", "one, edited", "done"),
            ("assistant", "r1 edited", "done"),
        ]
        assert [m["content"] for m in ollama_server.chat_requests()[-1]["messages"]] == [
            "one, edited"
        ]
        # the old branch is kept: flip the prompt's versions back to it
        await pilot.press("alt+up", "alt+up")
        assert isinstance(view(app).selected, PromptTurn)
        assert "2/2" in screen_text(app)
        await pilot.press("alt+left")
        await wait_for(pilot, lambda: stored_path(config_file, a) == before, what="old branch")
        await wait_for(pilot, lambda: "r2" in screen_text(app), what="old branch shown")
        assert "1/2" in screen_text(app)


async def test_deleting_from_a_turn_that_starts_a_branch(
    ollama_server: FakeOllama, config_file: Path
) -> None:
    ollama_server.replies = ["r1", "r2", "r1 edited"]
    app = make_app(config_file)
    async with app.run_test(size=SIZE) as pilot:
        await online(pilot, app)
        a = await send(pilot, app, "one")
        await idle(pilot, app)
        await send(pilot, app, "two")
        await idle(pilot, app)
        old_branch = stored_path(config_file, a)
        first = app.store.messages(a)[0].id
        app.conversations.edit(app.store.conversation(a), first, "one, edited")  # type: ignore[arg-type]
        reply = app.conversations.reply_in(a)
        assert reply is not None
        app.start_reply(reply)
        await idle(pilot, app)
        chat(app).open_conversation(a)
        await pilot.pause()
        await pilot.press("alt+up", "alt+up")
        assert isinstance(view(app).selected, PromptTurn)
        await pilot.press("alt+d")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmDialog), what="asked")
        assert "other 1 version of this turn is kept" in question(app)
        await pilot.press("y")
        await wait_for(pilot, lambda: stored_path(config_file, a) == old_branch, what="deleted")
        assert "one, edited" not in [m.content for m in app.store.all_messages(a)]
        await wait_for(pilot, lambda: "r2" in screen_text(app), what="old branch shown")
        assert "one, edited" not in screen_text(app)


async def test_quitting_with_replies_streaming_asks_and_keeps_them_interrupted(
    ollama_server: FakeOllama, config_file: Path
) -> None:
    ollama_server.reply = LONG
    ollama_server.rate = 100
    app = make_app(config_file)
    async with app.run_test(size=SIZE) as pilot:
        await online(pilot, app)
        a = await send(pilot, app, "A")
        await pilot.press("ctrl+n")
        b = await send(pilot, app, "B")
        await wait_for(pilot, lambda: writing(app, a) and writing(app, b), what="both streaming")
        await pilot.press("ctrl+q")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmDialog), what="asked")
        assert "2 replies are still being written" in question(app)
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, ChatScreen), what="not quit")
        assert writing(app, a) and writing(app, b)
        await pilot.press("ctrl+q")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmDialog), what="asked again")
        await pilot.press("y")
        await wait_for(pilot, lambda: app.return_code is not None, what="quit")
    for cid in (a, b):
        _, content, status = stored_path(config_file, cid)[-1]
        assert status == "interrupted" and content.startswith("long long")


async def test_continue_a_reply_cut_at_the_length_limit(
    ollama_server: FakeOllama, make_config: MakeConfig
) -> None:
    ollama_server.reply = "one two three four five six seven eight nine ten"
    config = make_config(ollama={"max_tokens": 4})
    app = make_app(config)
    async with app.run_test(size=SIZE) as pilot:
        await online(pilot, app)
        a = await send(pilot, app, "count")
        await idle(pilot, app)
        cut = stored_path(config, a)[-1][1]
        assert cut == "one two three four"
        await shows(pilot, app, "cut at the length limit")
        await pilot.press("alt+g")
        await wait_for(pilot, lambda: chats(ollama_server) == 2, what="continued")
        await idle(pilot, app)
        sent = ollama_server.chat_requests()[-1]["messages"]
        assert sent[-1] == {"role": "assistant", "content": cut}
        _, content, status = stored_path(config, a)[-1]
        assert status == "done" and content.startswith(cut) and len(content) > len(cut)
        assert len(app.store.all_messages(a)) == 2, "the same message goes on"
        reply = view(app).last_reply()
        assert isinstance(reply, ReplyTurn) and reply.body.text == content


async def test_continue_is_refused_for_a_complete_reply(
    ollama_server: FakeOllama, config_file: Path
) -> None:
    app = make_app(config_file)
    async with app.run_test(size=SIZE) as pilot:
        await online(pilot, app)
        await send(pilot, app, "hi")
        await idle(pilot, app)
        await pilot.press("alt+g")
        assert "That reply is complete" in notices(app)
        assert not app.conversations.busy


async def test_prompt_history_walks_this_conversation_first_and_ctrl_r_searches(
    ollama_server: FakeOllama, config_file: Path
) -> None:
    app = make_app(config_file)
    async with app.run_test(size=SIZE) as pilot:
        await online(pilot, app)
        await send(pilot, app, "alpha in the first")
        await idle(pilot, app)
        await pilot.press("ctrl+n")
        await send(pilot, app, "beta here")
        await idle(pilot, app)
        await send(pilot, app, "gamma here")
        await idle(pilot, app)
        walked = []
        for _ in range(4):
            await pilot.press("up")
            walked.append(prompt(app).text)
        assert walked == ["gamma here", "beta here", "alpha in the first", "alpha in the first"]
        await pilot.press("down", "down")
        assert prompt(app).text == "gamma here"
        await pilot.press("down")
        assert prompt(app).text == ""
        # Up in a prompt with text moves the cursor: nothing is replaced
        await type_text(pilot, "line one\nline two")
        await pilot.press("up")
        assert prompt(app).text == "line one\nline two"
        prompt(app).clear()
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: isinstance(app.screen, HistoryDialog), what="search")
        app.screen.query_one(Input).insert_text_at_cursor("alp")
        await wait_for(pilot, lambda: "1 of 3 prompts" in screen_text(app), what="filtered")
        await pilot.press("enter")
        await wait_for(pilot, lambda: prompt(app).text == "alpha in the first", what="recalled")


async def test_a_long_saved_reply_opens_in_pieces_and_shows_its_end(
    ollama_server: FakeOllama, config_file: Path
) -> None:
    paragraphs = [f"Paragraph {i} with **bold** words and more words." * 4 for i in range(400)]
    long = "\n\n".join(paragraphs) + "\n\nThe very end."
    store = Store.open(load_settings(config_file, env={}).paths.database)
    conversation = store.create_conversation("llama3.2:latest", ChatOptions(), "long one")
    store.add_message(conversation.id, "user", "write a lot")
    store.add_message(conversation.id, "assistant", long, model="llama3.2:latest")
    store.close()
    app = make_app(config_file)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: view(app).last_reply() is not None, what="opened")
        reply = view(app).last_reply()
        assert reply is not None
        await wait_for(pilot, lambda: "The very end." in screen_text(app), what="its end shown")
        assert reply.body.text == long

        # the pieces before the end follow the first frame, a few per frame, nearest
        # first; together they are the whole, in order
        def drawn() -> str:
            return "".join(piece.content.markup for piece in reply.body.query_children(Static))

        await wait_for(pilot, lambda: drawn() == long, what="every piece, nothing lost or twice")
        assert len(reply.body.children) > 10


async def test_search_and_rename_work_while_a_reply_streams(
    ollama_server: FakeOllama, config_file: Path
) -> None:
    ollama_server.reply = LONG
    ollama_server.rate = 100
    app = make_app(config_file)
    async with app.run_test(size=SIZE) as pilot:
        await online(pilot, app)
        a = await send(pilot, app, "streaming one")
        await wait_for(pilot, lambda: writing(app, a), what="streaming")
        await pilot.press("ctrl+n")
        b = await send(pilot, app, "quiet one")
        await pilot.press("escape")  # B stops; A goes on
        await wait_for(pilot, lambda: app.conversations.reply_in(b) is None, what="B stopped")
        await pilot.press("ctrl+f")
        search = chat(app).query_one("#search", Input)
        search.insert_text_at_cursor("streaming")
        listing = chat(app).query_one(ConversationList)
        await wait_for(pilot, lambda: listing.option_count == 1, what="searched")
        assert "streaming one" in label(app, a) and "writing…" in label(app, a)
        listing.focus()
        await pilot.press("r")
        await wait_for(pilot, lambda: app.screen.query("#text"), what="rename asked")
        field = app.screen.query_one("#text", Input)
        field.clear()
        field.insert_text_at_cursor("renamed while writing")
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.store.conversation(a).title == "renamed while writing")  # type: ignore[union-attr]
        assert writing(app, a), "the reply goes on"
        await app.stop_reply(a)
        assert stored_path(config_file, a)[-1][2] == "interrupted"


async def test_a_long_conversation_opens_at_its_end_and_then_holds_every_turn_in_order(
    config_file: Path,
) -> None:
    """The last turns are drawn first (a conversation of years opens as fast as a short
    one); the turns above them follow, in order, and the view stays at the end."""
    store = Store.open(load_settings(config_file, env={}).paths.database)
    try:
        conv = store.create_conversation("llama3.2:latest", ChatOptions(), "Long")
        for i in range(30):
            store.add_message(conv.id, "user", f"question {i}")
            store.add_message(conv.id, "assistant", f"answer {i}", model="llama3.2:latest")
        ids = [m.id for m in store.messages(conv.id)]
    finally:
        store.close()
    app = make_app(config_file)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: len(shown(view(app))) == 60, what="every turn")
        turns = [t.message_id for t in shown(view(app)) if isinstance(t, PromptTurn | ReplyTurn)]
        assert turns == ids
        await wait_for(pilot, lambda: "answer 29" in screen_text(app), what="the end in view")
        assert "question 0" not in screen_text(app)
        view(app).scroll_home(animate=False)
        await wait_for(pilot, lambda: "question 0" in screen_text(app), what="the first turn")
        # a search result opens the conversation anew, scrolled to its first turn
        chat(app).open_at_message(conv.id, ids[2])
        await wait_for(  # the turn is selected once laid out ("question 1" was in view)
            pilot, lambda: view(app).selected is not None, what="turn 2 selected"
        )
        selected = view(app).selected
        assert selected is not None and selected.message_id == ids[2]
        await wait_for(pilot, lambda: "question 1" in screen_text(app), what="turn 2 in view")
