"""Pilot tests of the Models dialog (F5 on the Chat screen) and of the chat's offer to pull
a missing model, against the fake Ollama."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ollama_server import FakeOllama
from textual.pilot import Pilot
from textual.widgets import Input
from tui_helpers import make_app, screen_text, shown_turns, type_text, wait_for

from tui.screens.chat import ChatScreen
from tui.screens.models import ModelsDialog, PullView
from tui.widgets.conversation import ReplyTurn
from tui.widgets.dialogs import ConfirmDialog
from tui.widgets.prompt import PromptInput

SIZE = (120, 40)
LAYERS = [40_000_000, 1429, 7711, 96]


def names(app: object) -> list[str]:
    return [m.name for m in app.models]


async def online(pilot: Pilot[object]) -> None:
    app = pilot.app
    await wait_for(
        pilot,
        lambda: app.ollama is not None and app.ollama.online and app.models,
        what="Ollama online",
    )


async def open_models(pilot: Pilot[object]) -> ModelsDialog:
    await online(pilot)
    await pilot.press("f5")
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, ModelsDialog), what="the dialog")
    dialog = pilot.app.screen
    assert isinstance(dialog, ModelsDialog)
    await wait_for(pilot, lambda: "131,072 tokens" in screen_text(pilot.app), what="details")  # type: ignore[arg-type]
    return dialog


def layer_rows(app: object) -> int:
    view = app.screen.query_one(PullView)
    return len(view.rows)


async def test_the_dialog_lists_the_models_with_their_details(
    ollama_server: FakeOllama, config_file: Path
) -> None:
    app = make_app(config_file)
    async with app.run_test(size=SIZE) as pilot:
        await open_models(pilot)
        text = screen_text(app)
        for expected in (
            "llama3.2:latest  3.2B · 2.0 GB",
            "qwen2.5-coder:7b  7.6B · 4.7 GB",
            "context length  131,072 tokens",
            "capabilities    completion, tools",
            "quantization    Q4_K_M",
            '"<|eot_id|>"',  # the Modelfile's parameters
            "{{- range .Messages }}",  # the template
        ):
            assert expected in text, expected
        await pilot.press("down")
        await wait_for(pilot, lambda: "32,768 tokens" in screen_text(app), what="qwen's details")
        assert "family          qwen2" in screen_text(app)
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, ChatScreen)
        assert any("Ollama's models" in row for _, rows in app.help_groups() for _, row in rows)


async def test_pull_shows_progress_then_the_model_is_in_the_picker(
    ollama_server: FakeOllama, config_file: Path
) -> None:
    ollama_server.pull_layers = LAYERS
    ollama_server.pull_delay = 0.025
    # held at a quarter of the big layer, then at half of it: the two lines reach the app at
    # two moments, so it has a rate and an ETA to show however the machine is loaded
    ollama_server.pull_holds = (3, 4)
    app = make_app(config_file)
    async with app.run_test(size=SIZE) as pilot:
        await open_models(pilot)
        await pilot.press("p", *"gemma3:1b", "enter")
        await wait_for(pilot, lambda: "10.0 MB / 40.0 MB" in screen_text(app), what="a quarter")
        ollama_server.release_pulls()

        def moving() -> bool:
            text = screen_text(app)
            return all(s in text for s in ("20.0 MB / 40.0 MB · ", "MB/s · ETA 0:", "all layers"))

        await wait_for(pilot, moving, what="bytes, a rate and an ETA")
        assert "Pulling gemma3:1b: pulling " in screen_text(app)
        ollama_server.release_pulls()
        await wait_for(pilot, lambda: "Pulled gemma3:1b." in screen_text(app), what="the end")
        assert layer_rows(app) == 4
        text = screen_text(app)
        assert "96 B / 96 B" in text and "40.0 MB / 40.0 MB" in text
        assert "gemma3:1b" in names(app)
        assert "gemma3:1b  3.2B · 2.0 GB" in text, "the dialog's list shows it"
        await pilot.press("escape")
        await pilot.pause()
        await pilot.press("ctrl+t")
        await pilot.pause()
        assert "gemma3:1b  (3.2B, Q4_K_M, llama, 2.0 GB)" in screen_text(app), "in the picker"


async def test_escape_stops_a_pull_and_closes_its_stream(
    ollama_server: FakeOllama, config_file: Path
) -> None:
    ollama_server.pull_layers = LAYERS
    ollama_server.pull_delay = 0.3
    app = make_app(config_file)
    async with app.run_test(size=SIZE) as pilot:
        dialog = await open_models(pilot)
        dialog.query_one("#pull-name", Input).value = "gemma3:1b"
        dialog.start_pull("gemma3:1b")
        await wait_for(pilot, lambda: layer_rows(app) == 1, what="the first layer")
        await pilot.press("escape")
        await wait_for(pilot, lambda: ollama_server.pulls_cancelled == 1, what="server saw it")
        await wait_for(pilot, lambda: dialog.pulling is None)
        assert "Stopped pulling gemma3:1b; pulling it again resumes it." in screen_text(app)
        assert app.screen is dialog, "the first Esc stops the pull; the dialog stays"
        assert "gemma3:1b" not in names(app) and ollama_server.pulls_completed == 0
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, ChatScreen)


async def test_a_pull_the_registry_refuses_says_so(
    ollama_server: FakeOllama, config_file: Path
) -> None:
    ollama_server.pull_error = "pull model manifest: file does not exist"
    app = make_app(config_file)
    async with app.run_test(size=SIZE) as pilot:
        dialog = await open_models(pilot)
        dialog.start_pull("no-such-model")
        await wait_for(pilot, lambda: "not found on the registry" in screen_text(app))
        assert dialog.query_one(PullView).has_class("-failed")


async def test_delete_the_highlighted_model_after_confirming(
    ollama_server: FakeOllama, config_file: Path
) -> None:
    app = make_app(config_file)
    async with app.run_test(size=SIZE) as pilot:
        dialog = await open_models(pilot)
        await pilot.press("down", "d")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmDialog))
        assert "Delete qwen2.5-coder:7b (4.7 GB) from Ollama?" in screen_text(app)
        await pilot.press("n")
        await pilot.pause()
        assert app.screen is dialog and "qwen2.5-coder:7b" in ollama_server.models
        await pilot.press("delete")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmDialog))
        await pilot.press("y")
        await wait_for(pilot, lambda: names(app) == ["llama3.2:latest"], what="the new list")
        assert sorted(ollama_server.models) == ["llama3.2:latest"]
        assert "qwen2.5-coder" not in screen_text(app)
        assert dialog.highlighted() == "llama3.2:latest"


# -- the chat's missing model ------------------------------------------------------------------


async def test_a_missing_model_is_offered_pulled_then_the_message_is_sent(
    ollama_server: FakeOllama, make_config: Callable[..., Path]
) -> None:
    ollama_server.pull_layers = LAYERS
    ollama_server.pull_delay = 0.01
    app = make_app(make_config(ollama={"default_model": "gemma3:1b"}))
    async with app.run_test(size=SIZE) as pilot:
        await online(pilot)
        await type_text(pilot, "hello")
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmDialog), what="the offer")
        assert "gemma3:1b is not installed. Pull it now?" in screen_text(app)
        await pilot.press("y")
        await wait_for(pilot, lambda: isinstance(app.screen, ChatScreen), what="pulled", timeout=15)
        await wait_for(
            pilot,
            lambda: not app.screen.streaming and shown_turns(app.screen, ReplyTurn),
            what="reply",
        )
        assert ollama_server.pulls_completed == 1 and "gemma3:1b" in names(app)
        chat = [r.body for r in ollama_server.requests if r.path == "/api/chat"]
        assert len(chat) == 1 and chat[0]["model"] == "gemma3:1b"
        assert chat[0]["messages"][-1] == {"role": "user", "content": "hello"}
        assert app.screen.query_one(PromptInput).text == ""
        assert shown_turns(app.screen, ReplyTurn)[-1].content == ollama_server.reply


async def test_declining_the_pull_keeps_the_message(
    ollama_server: FakeOllama, make_config: Callable[..., Path]
) -> None:
    app = make_app(make_config(ollama={"default_model": "gemma3:1b"}))
    async with app.run_test(size=SIZE) as pilot:
        await online(pilot)
        await type_text(pilot, "keep me")
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmDialog), what="the offer")
        await pilot.press("n")
        await pilot.pause()
        assert isinstance(app.screen, ChatScreen)
        assert app.screen.query_one(PromptInput).text == "keep me"
        assert any("ollama pull gemma3:1b" in n.message for n in app.notices)
        assert not shown_turns(app.screen, ReplyTurn)
        assert ollama_server.pulls == 0
        assert not [r for r in ollama_server.requests if r.path == "/api/chat"]


async def test_a_model_pulled_elsewhere_is_sent_without_asking(
    ollama_server: FakeOllama, make_config: Callable[..., Path]
) -> None:
    app = make_app(make_config(ollama={"default_model": "gemma3:1b"}))
    async with app.run_test(size=SIZE) as pilot:
        await online(pilot)
        ollama_server.add_model("gemma3:1b")  # e.g. `ollama pull` in another terminal
        await type_text(pilot, "hi")
        await pilot.press("enter")
        await wait_for(pilot, lambda: shown_turns(app.screen, ReplyTurn), what="sent")
        assert "gemma3:1b" in names(app)
        assert ollama_server.pulls == 0


def test_models_dialog_snapshot(snap_compare, ollama_server: FakeOllama, config_file: Path) -> None:  # type: ignore[no-untyped-def]
    async def open_it(pilot: Pilot[object]) -> None:
        await open_models(pilot)

    assert snap_compare(make_app(config_file), terminal_size=SIZE, run_before=open_it)


async def test_a_server_that_lists_a_model_twice_gets_it_listed_once(
    ollama_server: FakeOllama, config_file: Path
) -> None:
    """A server's list of models with a name twice (a proxy that merges two servers, or
    a hostile one): the dialog, whose rows are keyed by name, lists it once; listed
    twice, Textual refused the rows and the app ended."""
    entries = [m.tag_entry() for m in ollama_server.models.values()]
    ollama_server.fail(200, {"models": [entries[0], *entries]}, path="/api/tags")
    app = make_app(config_file)
    async with app.run_test(size=SIZE) as pilot:
        await open_models(pilot)
        listed = [m.name for m in app.models]
        assert len(listed) == len(entries) and sorted(set(listed)) == sorted(listed)
        assert isinstance(app.screen, ModelsDialog)
