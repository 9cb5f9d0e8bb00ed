"""Pilot tests of the app with several Ollama servers (``[ollama] hosts``), each a real fake
server with its own models: the status line, the picker and the Models dialog labelled by
server, a server that never answers (the others and the prompt go on meanwhile), a server
killed in the middle of a reply (kept, resent to another), and a pull that asks where."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import MakeConfig
from ollama_server import FakeOllama
from textual.pilot import Pilot
from textual.widgets import Select, Static
from tui_helpers import make_app, screen_text, type_text, wait_for

from engines.hosts import model_key
from tui.app import LlmPessoalApp
from tui.screens.chat import ChatScreen
from tui.screens.models import ModelsDialog
from tui.widgets.dialogs import ConfirmDialog, PickDialog
from tui.widgets.prompt import PromptInput

SIZE = (120, 40)
LLAMA = "llama3.2:latest"
GEMMA = "gemma3:1b"
QWEN = "qwen2.5-coder:7b"


def write_hosts(path: Path, *hosts: tuple[str, FakeOllama, float]) -> Path:
    with path.open("a", encoding="utf-8") as f:
        for name, server, timeout in hosts:
            f.write(
                f'\n[[ollama.hosts]]\nname = "{name}"\nurl = "{server.url}"\ntimeout = {timeout}\n'
            )
    return path


@pytest.fixture
def two_hosts(make_config: MakeConfig, ollama_server: FakeOllama, laptop: FakeOllama) -> Path:
    ollama_server.reply = "from the gpu box"
    return write_hosts(make_config(), ("gpu-box", ollama_server, 10), ("laptop", laptop, 10))


def chat(app: LlmPessoalApp) -> ChatScreen:
    """The Chat screen, perhaps under a dialog."""
    return next(s for s in app.screen_stack if isinstance(s, ChatScreen))


def status_text(app: LlmPessoalApp) -> str:
    return str(chat(app).query_one("#ollama-status", Static).content)


async def both_online(pilot: Pilot[object]) -> None:
    app = pilot.app
    assert isinstance(app, LlmPessoalApp)
    await wait_for(pilot, lambda: len({m.host for m in app.models}) == 2, what="both listed")


async def test_the_picker_lists_every_server_s_models_and_a_choice_is_remembered(
    two_hosts: Path, ollama_server: FakeOllama, laptop: FakeOllama
) -> None:
    laptop.set_loaded([GEMMA])
    app = make_app(two_hosts)
    async with app.run_test(size=SIZE) as pilot:
        await both_online(pilot)
        await wait_for(pilot, lambda: "● gpu-box  ● laptop" in status_text(app))
        select = chat(app).query_one("#model", Select)
        await pilot.press("ctrl+t")
        await wait_for(pilot, lambda: select.expanded)
        lines = [line.strip() for line in screen_text(app).splitlines()[:8]]
        entries = [
            f"gpu-box › {LLAMA}  3.2B",
            f"gpu-box › {QWEN}  7.6B",
            f"laptop › {GEMMA}  3.2B · loaded",
            f"laptop › {LLAMA}  3.2B",
        ]
        assert [n for n, line in enumerate(lines) if line in entries] == [2, 3, 4, 5], lines
        assert [lines[n] for n in (2, 3, 4, 5)] == entries
        await pilot.press("escape")
        # the default model is on both: the rule's server is shown, the first in the list
        assert select.value == model_key("gpu-box", LLAMA)
        select.value = model_key("laptop", LLAMA)
        await pilot.pause()
        await type_text(pilot, "hello")
        await pilot.press("enter")
        await wait_for(pilot, lambda: "from the laptop" in screen_text(app), what="the reply")
        conversation = chat(app).conversation
        assert conversation is not None and conversation.host == "laptop"
        assert not any(r.path == "/api/chat" for r in ollama_server.requests)


async def test_a_server_that_never_answers_delays_neither_the_others_nor_the_prompt(
    make_config: MakeConfig, ollama_server: FakeOllama, laptop: FakeOllama, frozen: FakeOllama
) -> None:
    ollama_server.reply = "from the gpu box"
    config = write_hosts(
        make_config(), ("frozen", frozen, 6), ("gpu-box", ollama_server, 10), ("laptop", laptop, 10)
    )
    app = make_app(config)
    async with app.run_test(size=SIZE) as pilot:
        # the first frame waits for no server: all are being checked
        assert "◌ frozen  ◌ gpu-box  ◌ laptop" in status_text(app)
        await both_online(pilot)
        # the others are listed, and the prompt takes keys, while frozen is still unknown
        assert app.hosts.get("frozen").state.online is None
        await type_text(pilot, "typed meanwhile")
        assert chat(app).query_one(PromptInput).text == "typed meanwhile"
        assert "◌ frozen  ● gpu-box  ● laptop" in status_text(app)
        await wait_for(pilot, lambda: "✕ frozen" in status_text(app), what="frozen marked")
        state = app.hosts.get("frozen").state
        assert "did not answer within 6 s" in state.error
        # a reply goes to the first server that answers and has the model (frozen is
        # first in the list, and has it too)
        await pilot.press("enter")
        await wait_for(pilot, lambda: "from the gpu box" in screen_text(app), what="reply")
        assert not any(r.path == "/api/chat" for r in frozen.requests)


async def test_a_server_killed_mid_reply_keeps_the_reply_and_offers_another_server(
    two_hosts: Path, ollama_server: FakeOllama, laptop: FakeOllama
) -> None:
    ollama_server.reply = " ".join(f"word{i}" for i in range(400))
    ollama_server.rate = 40
    app = make_app(two_hosts)
    async with app.run_test(size=SIZE) as pilot:
        await both_online(pilot)
        await type_text(pilot, "count")
        await pilot.press("enter")
        await wait_for(pilot, lambda: ollama_server.sent_tokens >= 5, what="tokens")
        ollama_server.stop()
        await wait_for(pilot, lambda: isinstance(app.screen, PickDialog), what="the offer")
        text = screen_text(app)
        assert "gpu-box went away mid-reply; what it wrote is kept" in text and "1. laptop" in text
        assert "✕ gpu-box" in status_text(app)
        await pilot.press("1")
        await wait_for(pilot, lambda: "from the laptop" in screen_text(app), what="resent")
        conversation = chat(app).conversation
        assert conversation is not None and conversation.host == "laptop"
        replies = [m for m in app.store.all_messages(conversation.id) if m.role == "assistant"]
        assert [m.status for m in replies] == ["interrupted", "done"]
        assert replies[0].content.startswith("word0 word1")
        assert replies[0].error is not None and "gpu-box" in replies[0].error


async def test_the_models_dialog_pulls_and_deletes_on_the_chosen_server(
    two_hosts: Path, ollama_server: FakeOllama, laptop: FakeOllama
) -> None:
    app = make_app(two_hosts)
    async with app.run_test(size=SIZE) as pilot:
        await both_online(pilot)
        await pilot.press("f5")
        await wait_for(pilot, lambda: isinstance(app.screen, ModelsDialog))
        dialog = app.screen
        assert isinstance(dialog, ModelsDialog)
        await wait_for(pilot, lambda: f"laptop › {GEMMA}" in screen_text(app))
        assert f"gpu-box › {QWEN}" in screen_text(app)
        dialog.query_one("#pull-host", Select).value = "laptop"
        dialog.query_one("#pull-name").value = "tinyllama"  # type: ignore[attr-defined]
        dialog.start_pull("tinyllama")
        await wait_for(pilot, lambda: "laptop › tinyllama:latest" in screen_text(app))
        assert "tinyllama:latest" in laptop.models
        assert "tinyllama:latest" not in ollama_server.models
        # delete the highlighted one from its server (the other keeps its copy)
        listing = dialog.query_one("#models-list")
        keys = [listing.get_option_at_index(i).id for i in range(listing.option_count)]  # type: ignore[attr-defined]
        listing.highlighted = keys.index(model_key("laptop", LLAMA))  # type: ignore[attr-defined]
        await pilot.press("d")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmDialog))
        assert f"Delete {LLAMA} (2.0 GB) from laptop?" in screen_text(app)
        await pilot.press("y")
        await wait_for(pilot, lambda: LLAMA not in laptop.models, what="deleted")
        assert LLAMA in ollama_server.models


async def test_offer_to_pull_a_missing_model_asks_which_server(
    make_config: MakeConfig, ollama_server: FakeOllama, laptop: FakeOllama
) -> None:
    config = write_hosts(
        make_config(ollama={"default_model": "tinyllama:latest"}),
        ("gpu-box", ollama_server, 10),
        ("laptop", laptop, 10),
    )
    app = make_app(config)
    async with app.run_test(size=SIZE) as pilot:
        await both_online(pilot)
        await type_text(pilot, "hi")
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmDialog), what="the offer")
        await pilot.press("y")  # Pull
        await wait_for(pilot, lambda: isinstance(app.screen, PickDialog), what="which server")
        assert "Pull tinyllama:latest onto which server?" in screen_text(app)
        await pilot.press("2")  # laptop
        await wait_for(pilot, lambda: "from the laptop" in screen_text(app), what="the reply")
        assert "tinyllama:latest" in laptop.models
        assert "tinyllama:latest" not in ollama_server.models
        conversation = chat(app).conversation
        assert conversation is not None and conversation.host == "laptop"


async def test_the_monitor_shows_each_server_and_its_loaded_models(
    two_hosts: Path, laptop: FakeOllama
) -> None:
    laptop.set_loaded([GEMMA])
    app = make_app(two_hosts)
    async with app.run_test(size=SIZE) as pilot:
        await both_online(pilot)
        await pilot.press("f4")
        await wait_for(pilot, lambda: f"laptop › {GEMMA}" in screen_text(app), what="loaded")
        text = screen_text(app)
        assert "● Ollama gpu-box 0.12.6" in text and "2 models, 0 loaded" in text
        assert "● Ollama laptop 0.12.6" in text and "2 models, 1 loaded" in text


async def test_a_conversation_whose_server_is_down_is_offered_another_not_a_pull(
    two_hosts: Path, ollama_server: FakeOllama, laptop: FakeOllama
) -> None:
    app = make_app(two_hosts)
    async with app.run_test(size=SIZE) as pilot:
        await both_online(pilot)
        await type_text(pilot, "hi")
        await pilot.press("enter")
        await wait_for(pilot, lambda: "from the gpu box" in screen_text(app), what="reply")
        ollama_server.stop()
        app.check_ollama_soon()
        await wait_for(pilot, lambda: "✕ gpu-box" in status_text(app), what="marked down")
        await type_text(pilot, "again")
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, PickDialog), what="the offer")
        assert "gpu-box cannot be reached. Resend to another server" in screen_text(app)
        await pilot.press("1")
        await wait_for(pilot, lambda: "from the laptop" in screen_text(app), what="resent")
        conversation = chat(app).conversation
        assert conversation is not None and conversation.host == "laptop"


async def test_a_server_s_model_name_with_markup_is_shown_as_written(
    make_config: MakeConfig, ollama_server: FakeOllama, laptop: FakeOllama
) -> None:
    odd = "[bold]x[/bold]:latest"
    config = write_hosts(
        make_config(ollama={"default_model": odd}),
        ("gpu-box", ollama_server, 10),
        ("laptop", laptop, 10),
    )
    app = make_app(config)
    async with app.run_test(size=SIZE) as pilot:
        await both_online(pilot)
        await type_text(pilot, "hi")
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmDialog), what="the offer")
        await pilot.press("y")
        await wait_for(pilot, lambda: isinstance(app.screen, PickDialog), what="which server")
        assert f"Pull {odd} onto which server?" in screen_text(app)
