"""Pilot tests of the Chat screen against the test Ollama server."""

from __future__ import annotations

import re
import socket
from collections.abc import Callable
from pathlib import Path

import pytest
from ollama_server import FakeOllama
from tui_helpers import make_app, screen_text, shown_turn, shown_turns, shows, type_text, wait_for

from engines.store import Store
from tui.screens.chat import ChatScreen
from tui.widgets.conversation import ConversationView, PromptTurn, ReplyTurn
from tui.widgets.dialogs import ConfirmDialog
from tui.widgets.prompt import PromptInput
from tui.widgets.sidebar import ConversationList

SIZE = (120, 40)


def chat_screen(app: object) -> ChatScreen:
    screen = app.screen
    assert isinstance(screen, ChatScreen)
    return screen


def replies(app: object) -> list[ReplyTurn]:
    return list(shown_turns(app.screen, ReplyTurn))


def stored(config_db: Path) -> list[tuple[str, str, str]]:
    store = Store.open(config_db)
    try:
        out = []
        for c in store.conversations():
            out += [(m.role, m.content, m.status) for m in store.messages(c.id)]
        return out
    finally:
        store.close()


def database(config: Path) -> Path:
    from engines.config import load_settings

    return load_settings(config, env={}).paths.database


async def online(pilot: object, app: object) -> None:
    await wait_for(
        pilot,  # type: ignore[arg-type]
        lambda: app.ollama is not None and app.ollama.online and app.models,
        what="Ollama online",
    )


async def test_send_streams_markdown_reply_and_saves_it(
    ollama_server: FakeOllama, config_file: Path
) -> None:
    ollama_server.reply = "# Title\n\nSome **bold** text.\n\n```python\nprint('hi')\n```\n"
    app = make_app(config_file)
    async with app.run_test(size=SIZE) as pilot:
        assert isinstance(app.focused, PromptInput), "the prompt has the focus at start"
        await online(pilot, app)
        await pilot.press(*"hello")
        await pilot.press("enter")
        await wait_for(pilot, lambda: not chat_screen(app).streaming and replies(app))
        reply = replies(app)[-1]
        assert reply.content == ollama_server.reply
        text = screen_text(app)
        assert "Title" in text and "print('hi')" in text
        assert "tok/s" in text and "first token" in text, "the reply's figures are shown"
        assert app.screen.query_one(PromptInput).text == "", "the prompt is cleared once sent"
        sent = ollama_server.requests[-1]
        assert sent.path == "/api/chat"
        assert sent.body["messages"][-1] == {"role": "user", "content": "hello"}
    assert stored(database(config_file)) == [
        ("user", "hello", "done"),
        ("assistant", ollama_server.reply, "done"),
    ]


async def test_the_first_send_after_start_waits_for_no_stylesheet_work(
    ollama_server: FakeOllama, config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The widgets a first reply mounts (its Markdown, the turns' labels) had their CSS
    parsed, with every source again, between Enter and the first words; the app's
    warm-up adds it while it is idle. Started with no conversation, nothing parses the
    stylesheet from the send to the reply's end, and the turns are styled by it."""
    from textual.css.stylesheet import Stylesheet

    ollama_server.reply = "# Title\n\nSome **bold** text."
    app = make_app(config_file)
    async with app.run_test(size=SIZE) as pilot:
        await online(pilot, app)
        app.warm_up()
        await wait_for(pilot, lambda: not app.stylesheet._require_parse, what="styles added")
        parsed: list[object] = []
        parse = Stylesheet.parse
        monkeypatch.setattr(Stylesheet, "parse", lambda sheet: (parsed.append(1), parse(sheet)))
        await pilot.press(*"hello")
        await pilot.press("enter")
        await wait_for(pilot, lambda: not chat_screen(app).streaming and replies(app))
        assert not parsed, "the stylesheet was parsed during the first send"
        markdown = shown_turn(app.screen, ReplyTurn).body
        assert markdown.styles.height is not None and markdown.styles.height.is_auto
        assert "Title" in screen_text(app)


async def test_a_send_shows_the_turns_made_ready_for_it_and_readies_the_next(
    ollama_server: FakeOllama, config_file: Path
) -> None:
    """The view holds a prompt's turn and a reply's ready for the next send, hidden at its
    end (made as the prompt is written, if not before): Enter fills and shows them (no
    widget is mounted before the reply's first frame), in order; once the reply has ended
    the next ones are made, and a second send shows them under the first."""
    ollama_server.reply = "Some **bold** words."
    app = make_app(config_file)
    async with app.run_test(size=SIZE) as pilot:
        await online(pilot, app)
        view = app.screen.query_one(ConversationView)

        def hidden() -> list[object]:
            return [widget for widget in view.children if not widget.display]

        await pilot.press(*"hello")
        await wait_for(pilot, lambda: len(hidden()) == 2, what="the turns of the next send")
        prompt_turn, reply_turn = hidden()
        assert isinstance(prompt_turn, PromptTurn) and isinstance(reply_turn, ReplyTurn)
        assert "You" not in screen_text(app), "the turns made ready draw nothing"
        await pilot.press("enter")
        await wait_for(pilot, lambda: not chat_screen(app).streaming and replies(app))
        assert view.turns() == [prompt_turn, reply_turn], "the send showed the turns made ready"
        assert prompt_turn.message_id and reply_turn.message_id
        await wait_for(pilot, lambda: len(hidden()) == 2, what="the next send's turns")
        assert list(view.children)[-2:] == hidden(), "made ready at the end"
        await pilot.press(*"again")
        await pilot.press("enter")
        await wait_for(pilot, lambda: not chat_screen(app).streaming and len(replies(app)) == 2)
        shown = [turn.content for turn in view.turns()]
        assert shown == ["hello", ollama_server.reply, "again", ollama_server.reply]
        visible_order = [w for w in view.children if w.display]
        assert visible_order == view.turns(), "each turn where it was said"
        text = screen_text(app)
        assert text.index("hello") < text.index("again") < text.rindex("Some bold words")
        await wait_for(pilot, lambda: len(hidden()) == 2, what="the third send's turns")
        ready = hidden()
        await pilot.press("ctrl+n")
        await wait_for(pilot, lambda: not view.turns(), what="a new conversation")
        assert hidden() == ready, "kept while another conversation is shown"
    assert [content for _, content, _ in stored(database(config_file))] == [
        "hello",
        ollama_server.reply,
        "again",
        ollama_server.reply,
    ]


async def test_writing_a_prompt_opens_the_connection_its_reply_goes_on(
    ollama_server: FakeOllama, config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server closed the connection kept since the start (as one does after a while
    idle): the prompt being written opens another, and Enter's request goes on it with
    no wait for a new one."""
    from engines import ollama_client

    monkeypatch.setattr(ollama_client, "CONNECTION_CHECK_S", 0.0)
    app = make_app(config_file)
    async with app.run_test(size=SIZE) as pilot:
        await online(pilot, app)
        await wait_for(
            pilot,
            lambda: app.chat._sync is not None and not app.chat._connecting,
            what="the stream client, with its connection",
        )
        ollama_server.close_connections()
        opened = ollama_server.connections_opened
        await pilot.press(*"hello")
        await wait_for(
            pilot,
            lambda: ollama_server.connections_opened > opened and not app.chat._connecting,
            what="a connection, free for the reply",
        )
        (kept,) = range(opened + 1, ollama_server.connections_opened + 1)
        await pilot.press("enter")
        await wait_for(pilot, lambda: not chat_screen(app).streaming and replies(app))
        assert replies(app)[-1].content == ollama_server.reply
        assert ollama_server.connection_of("/api/chat") == [kept]


async def test_whole_conversation_and_options_are_sent(
    ollama_server: FakeOllama, config_file: Path
) -> None:
    app = make_app(config_file)
    async with app.run_test(size=SIZE) as pilot:
        await online(pilot, app)
        for word in ("first", "second"):
            await type_text(pilot, word)
            await pilot.press("enter")
            await wait_for(pilot, lambda: not chat_screen(app).streaming)
        body = ollama_server.chat_requests()[-1]
        roles = [m["role"] for m in body["messages"]]
        assert roles == ["user", "assistant", "user"]
        assert body["options"]["num_predict"] == app.settings.ollama.max_tokens


async def test_newline_key_and_empty_prompt(ollama_server: FakeOllama, config_file: Path) -> None:
    app = make_app(config_file)
    async with app.run_test(size=SIZE) as pilot:
        await online(pilot, app)
        await pilot.press("enter")
        await pilot.pause()
        assert any("Nothing to send" in n.message for n in app.notices)
        assert not replies(app)
        await pilot.press("a", "ctrl+j", "b")
        assert app.screen.query_one(PromptInput).text == "a\nb"


async def test_markup_and_escapes_are_shown_literally(
    ollama_server: FakeOllama, config_file: Path
) -> None:
    ollama_server.reply = "[bold red]not bold[/] \x1b[31mred\x1b[0m done\x07 <b>kept</b>"
    app = make_app(config_file)
    async with app.run_test(size=SIZE) as pilot:
        await online(pilot, app)
        await type_text(pilot, "[blink]me[/blink] \x1b[2J")
        await pilot.press("enter")
        await wait_for(pilot, lambda: not chat_screen(app).streaming and replies(app))
        text = screen_text(app)
        assert "[bold red]not bold[/]" in text
        assert "␛[31mred␛[0m done␇" in text
        assert "<b>kept</b>" in text, "raw HTML is shown, not dropped"
        assert "[blink]me[/blink] ␛[2J" in text
    assert stored(database(config_file))[1][1] == ollama_server.reply, "stored byte for byte"


async def test_escape_cancels_and_closes_the_stream(
    ollama_server: FakeOllama, config_file: Path
) -> None:
    ollama_server.reply = " ".join(f"word{i}" for i in range(400))
    ollama_server.rate = 50
    app = make_app(config_file)
    async with app.run_test(size=SIZE) as pilot:
        await online(pilot, app)
        await type_text(pilot, "tell me a long story")
        await pilot.press("enter")
        await wait_for(pilot, lambda: ollama_server.sent_tokens >= 5, what="some tokens")
        await pilot.press("escape")
        await wait_for(pilot, lambda: not chat_screen(app).streaming, what="reply stopped")
        await wait_for(pilot, lambda: ollama_server.cancelled >= 1, what="server saw the close")
        reply = replies(app)[-1]
        assert reply.content.startswith("word0 word1")
        await shows(pilot, app, "interrupted")
    rows = stored(database(config_file))
    assert rows[-1][2] == "interrupted" and rows[-1][1].startswith("word0")


async def test_server_vanishing_mid_reply_keeps_the_partial_reply(
    ollama_server: FakeOllama, config_file: Path
) -> None:
    ollama_server.reply = " ".join(f"tok{i}" for i in range(50))
    ollama_server.drop_after = 10
    app = make_app(config_file)
    async with app.run_test(size=SIZE) as pilot:
        await online(pilot, app)
        await type_text(pilot, "hi")
        await pilot.press("enter")
        await wait_for(pilot, lambda: not chat_screen(app).streaming and replies(app))
        text = screen_text(app)
        assert "tok9" in text and "connection to Ollama" in text and "interrupted" in text
        ollama_server.drop_after = None
        # the app keeps working: the next message gets a whole reply
        await type_text(pilot, "again")
        await pilot.press("enter")
        await wait_for(pilot, lambda: not chat_screen(app).streaming and len(replies(app)) == 2)
        assert replies(app)[-1].content == ollama_server.reply
    rows = stored(database(config_file))
    assert rows[1][2] == "interrupted"
    assert rows[1][1] == " ".join(f"tok{i}" for i in range(10))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_ollama_down_at_start_then_recovers(tmp_path: Path, config_file: Path) -> None:
    port = free_port()
    text = config_file.read_text()
    text = re.sub(r'host = ".*"', f'host = "http://127.0.0.1:{port}"', text)
    config_file.write_text(text + "\n")
    app = make_app(config_file)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.ollama is not None, what="first check")
        assert not app.ollama.online  # type: ignore[union-attr]
        assert "unreachable" in screen_text(app)
        await type_text(pilot, "keep me")
        await pilot.press("enter")
        await pilot.pause()
        assert app.screen.query_one(PromptInput).text == "keep me", "a refused message stays"
        refusal = [n.message for n in app.notices if "kept" in n.message]
        assert refusal, "the refusal says the message is kept"
        # said once: the host and the reason are not repeated in two sentences
        assert refusal[-1].count(f"127.0.0.1:{port}") == 1, refusal[-1]
        assert refusal[-1].startswith("Cannot reach Ollama"), refusal[-1]
        server = FakeOllama(port=port).start()
        try:
            await wait_for(
                pilot,
                lambda: app.ollama.online and app.models,
                timeout=10,  # type: ignore[union-attr]
                what="recovery without restart",
            )
            assert "Ollama 0.12.6" in screen_text(app)
            await pilot.press("enter")
            await wait_for(pilot, lambda: not chat_screen(app).streaming and replies(app))
            assert replies(app)[-1].content == server.reply
        finally:
            server.stop()


async def test_unknown_model_is_refused_with_the_fix(
    ollama_server: FakeOllama, make_config: Callable[..., Path]
) -> None:
    config_file = make_config(ollama={"default_model": "nope:1b"})
    app = make_app(config_file)
    async with app.run_test(size=SIZE) as pilot:
        await online(pilot, app)
        await type_text(pilot, "hello")
        await pilot.press("enter")
        # the app offers to pull it (tests/test_tui_models.py pulls); declined, the
        # message is not sent, the notice gives the fix, and the text stays
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmDialog), what="the offer")
        assert "nope:1b is not installed. Pull it now?" in screen_text(app)
        await pilot.press("n")
        await pilot.pause()
        assert isinstance(app.screen, ChatScreen)
        assert any("ollama pull nope:1b" in n.message for n in app.notices)
        assert app.screen.query_one(PromptInput).text == "hello"
        assert not replies(app)


async def test_model_removed_after_listing_shows_the_error(
    ollama_server: FakeOllama, config_file: Path
) -> None:
    app = make_app(config_file)
    async with app.run_test(size=SIZE) as pilot:
        await online(pilot, app)
        ollama_server.remove_model("llama3.2:latest")
        await type_text(pilot, "hello")
        await pilot.press("enter")
        await wait_for(pilot, lambda: not chat_screen(app).streaming and replies(app))
        assert "ollama pull llama3.2:latest" in screen_text(app)
    assert stored(database(config_file))[-1][2] == "error"


async def test_huge_prompt_is_sent_whole_and_shown_in_part(
    ollama_server: FakeOllama, config_file: Path
) -> None:
    big = ("0123456789abcdef" * 64 + "\n") * 1000  # ~1 MB
    app = make_app(config_file)
    async with app.run_test(size=SIZE) as pilot:
        await online(pilot, app)
        app.screen.query_one(PromptInput).load_text(big)
        await pilot.press("enter")
        await wait_for(pilot, lambda: not chat_screen(app).streaming and replies(app), timeout=30)
        assert ollama_server.chat_requests()[-1]["messages"][-1]["content"] == big
        assert "more characters not shown" in screen_text(app) or shown_turns(
            app.screen, PromptTurn
        )
    assert stored(database(config_file))[0][1] == big


async def test_conversations_new_switch_rename_delete_search(
    ollama_server: FakeOllama, config_file: Path
) -> None:
    app = make_app(config_file)
    async with app.run_test(size=SIZE) as pilot:
        await online(pilot, app)
        for text in ("apples are red", "bananas are yellow"):
            await pilot.press("ctrl+n")
            await type_text(pilot, text)
            await pilot.press("enter")
            await wait_for(pilot, lambda: not chat_screen(app).streaming)
        listing = app.screen.query_one(ConversationList)
        # listed once each reply's last words are drawn (or its first words' time is up)
        await wait_for(pilot, lambda: listing.option_count == 2, what="both listed")
        # search by message text
        await pilot.press("ctrl+f")
        await pilot.press(*"apple")
        await pilot.pause(0.4)
        assert listing.option_count == 1
        await pilot.press("enter")  # to the list
        assert app.focused is listing
        await pilot.press("enter")  # open it
        await pilot.pause()
        assert chat_screen(app).conversation.title == "apples are red"  # type: ignore[union-attr]
        # rename
        listing.focus()
        await pilot.press("r")
        await pilot.pause()
        for _ in range(30):
            await pilot.press("backspace")
        await pilot.press(*"fruit", "enter")
        await pilot.pause()
        assert chat_screen(app).conversation.title == "fruit"  # type: ignore[union-attr]
        # delete, with confirmation
        listing.focus()
        await pilot.press("d")
        await pilot.pause()
        assert "Delete “fruit”" in screen_text(app)
        await pilot.press("y")
        await pilot.pause()
        app.screen.query_one("#search").value = ""
        await pilot.pause(0.4)
        assert listing.option_count == 1
        assert chat_screen(app).conversation is None
    titles = [c.title for c in Store.open(database(config_file)).conversations()]
    assert titles == ["bananas are yellow"]


async def test_reopening_shows_saved_conversation(
    ollama_server: FakeOllama, config_file: Path
) -> None:
    app = make_app(config_file)
    async with app.run_test(size=SIZE) as pilot:
        await online(pilot, app)
        await type_text(pilot, "remember this")
        await pilot.press("enter")
        await wait_for(pilot, lambda: not chat_screen(app).streaming and replies(app))
    app2 = make_app(config_file)
    async with app2.run_test(size=SIZE) as pilot:
        await pilot.pause()
        text = screen_text(app2)
        assert "remember this" in text
        assert "Sure! Here is a short answer." in text  # the Markdown, rendered


async def test_options_dialog_validates_and_applies(
    ollama_server: FakeOllama, config_file: Path
) -> None:
    app = make_app(config_file)
    async with app.run_test(size=SIZE) as pilot:
        await online(pilot, app)
        await pilot.press("ctrl+o")
        await pilot.pause()
        temperature = app.screen.query_one("#temperature")
        temperature.value = "9"
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert "Temperature: '9' is not allowed; use a number from 0 to 2" in screen_text(app)
        temperature.value = "0.2"
        app.screen.query_one("#seed").value = "42"
        app.screen.query_one("#system_prompt").load_text("Be brief.")
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert isinstance(app.screen, ChatScreen)
        await type_text(pilot, "hi")
        await pilot.press("enter")
        await wait_for(pilot, lambda: not chat_screen(app).streaming and replies(app))
        body = ollama_server.chat_requests()[-1]
        assert body["options"]["temperature"] == 0.2 and body["options"]["seed"] == 42
        assert body["messages"][0] == {"role": "system", "content": "Be brief."}


async def test_copy_reply_code_block_and_export(
    ollama_server: FakeOllama, config_file: Path
) -> None:
    ollama_server.reply = "Two blocks:\n\n```python\nprint(1)\n```\n\n```sh\necho two\n```\n"
    app = make_app(config_file)
    async with app.run_test(size=SIZE) as pilot:
        await online(pilot, app)
        await type_text(pilot, "code please")
        await pilot.press("enter")
        await wait_for(pilot, lambda: not chat_screen(app).streaming and replies(app))
        await pilot.press("alt+c")
        assert app.clipboard == ollama_server.reply
        await pilot.press("ctrl+g")
        await pilot.pause()
        assert "Copy which code block?" in screen_text(app)
        await pilot.press("down", "enter")
        await pilot.pause()
        assert app.clipboard == "echo two\n"
        await pilot.press("ctrl+s")
        await pilot.pause()
        exports = list(app.settings.paths.exports.glob("*.md"))
        assert len(exports) == 1
        assert exports[0].stat().st_mode & 0o777 == 0o600  # conversation text is private
        content = exports[0].read_text()
        assert "## You\n\ncode please" in content and "echo two" in content


async def test_model_picker_lists_server_models(
    ollama_server: FakeOllama, config_file: Path
) -> None:
    app = make_app(config_file)
    async with app.run_test(size=SIZE) as pilot:
        await online(pilot, app)
        await pilot.press("ctrl+t")
        await pilot.pause()
        text = screen_text(app)
        assert "qwen2.5-coder:7b  (7.6B, Q4_K_M, qwen2" in text
        await pilot.press("down", "enter")
        await pilot.pause()
        await type_text(pilot, "hi")
        await pilot.press("enter")
        await wait_for(pilot, lambda: not chat_screen(app).streaming and replies(app))
        assert ollama_server.chat_requests()[-1]["model"] == "qwen2.5-coder:7b"


async def test_corrupt_database_is_left_alone_and_app_runs(
    ollama_server: FakeOllama, config_file: Path
) -> None:
    path = database(config_file)
    path.parent.mkdir(parents=True, exist_ok=True)
    garbage = b"this is not a database" * 100
    path.write_bytes(garbage)
    app = make_app(config_file)
    async with app.run_test(size=SIZE) as pilot:
        await online(pilot, app)
        assert any("damaged" in n.message for n in app.notices)
        await type_text(pilot, "still works")
        await pilot.press("enter")
        await wait_for(pilot, lambda: not chat_screen(app).streaming and replies(app))
        assert replies(app)[-1].content == ollama_server.reply
    assert path.read_bytes() == garbage


@pytest.mark.parametrize("size", [(40, 12), (300, 100)])
async def test_small_and_large_terminals(
    ollama_server: FakeOllama, config_file: Path, size: tuple[int, int]
) -> None:
    app = make_app(config_file)
    async with app.run_test(size=size) as pilot:
        await online(pilot, app)
        await type_text(pilot, "hi")
        await pilot.press("enter")
        await wait_for(pilot, lambda: not chat_screen(app).streaming and replies(app))
        assert "Ollama" in screen_text(app)
        assert app.screen.query_one(ConversationView).is_vertical_scroll_end or size == (300, 100)


async def test_help_and_screen_keys(ollama_server: FakeOllama, config_file: Path) -> None:
    app = make_app(config_file)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f1")
        await pilot.pause()
        text = screen_text(app)
        for _ in range(4):  # the help is longer than the screen: read it page by page
            await pilot.press("pagedown")
            text += screen_text(app)
        for expected in (
            "Send the message",
            "New line",
            "Stop the reply",
            "Copy a code block",
            "Export the conversation to Markdown",
            "Rename",
        ):
            assert expected in text
        await pilot.press("escape")
        await pilot.press("f3")
        # the Image screen's first drawing is a state to wait for, not the next frame
        await wait_for(pilot, lambda: "Image" in screen_text(app), what="the Image screen")
        await pilot.press("f2")
        await wait_for(pilot, lambda: isinstance(app.screen, ChatScreen), what="the Chat screen")


async def test_thinking_is_shown_before_the_reply(
    ollama_server: FakeOllama, config_file: Path
) -> None:
    ollama_server.thinking = "Let me think about this step by step. " * 20
    ollama_server.rate = 100
    ollama_server.reply = "Forty-two."
    app = make_app(config_file)
    async with app.run_test(size=SIZE) as pilot:
        await online(pilot, app)
        await type_text(pilot, "why?")
        # not pilot.press: it waits for the app to go idle, i.e. for the whole reply
        app.screen.query_one(PromptInput).action_submit()
        await wait_for(pilot, lambda: "thinking… (" in screen_text(app), what="thinking shown")
        await wait_for(pilot, lambda: not chat_screen(app).streaming and replies(app))
        assert replies(app)[-1].content == "Forty-two."
        assert "thinking…" not in screen_text(app)
