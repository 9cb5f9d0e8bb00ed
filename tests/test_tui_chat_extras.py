"""Issue 11 in the Chat screen: every option in the dialog, presets, images and files as
attachments, the context meter, "Ask about this image". What the fake Ollama received is
checked, and every refusal keeps the text where it was."""

from __future__ import annotations

import base64
from collections.abc import Callable
from pathlib import Path

import pytest
from ollama_server import FakeOllama, vision_model
from PIL import Image
from tui_helpers import make_app, screen_text, shown_turns, type_text, wait_for

from engines.images import ImageParameters
from engines.presets import Presets
from engines.store import Store
from tui.app import LlmPessoalApp
from tui.screens.chat import ChatScreen
from tui.widgets.attachments import AttachDialog, ImagePreviews, PendingAttachments
from tui.widgets.context_meter import ContextMeter
from tui.widgets.conversation import PromptTurn, ReplyTurn
from tui.widgets.dialogs import OptionsDialog, TextDialog
from tui.widgets.presets import PresetsDialog
from tui.widgets.prompt import PromptInput

SIZE = (120, 40)


def chat(app: LlmPessoalApp) -> ChatScreen:
    screen = app.screen
    assert isinstance(screen, ChatScreen)
    return screen


def notices(app: LlmPessoalApp) -> list[str]:
    return [n.message for n in app.notices]


async def online(pilot: object, app: LlmPessoalApp) -> None:
    await wait_for(
        pilot,  # type: ignore[arg-type]
        lambda: app.ollama is not None and app.ollama.online and app.models,
        what="Ollama online",
    )


def prompt_text(app: LlmPessoalApp) -> str:
    return chat(app).query_one(PromptInput).text


async def replied(pilot: object, app: LlmPessoalApp, count: int) -> None:
    await wait_for(
        pilot,  # type: ignore[arg-type]
        lambda: not chat(app).streaming and len(shown_turns(app.screen, ReplyTurn)) >= count,
        what=f"{count} replies",
    )


# -- options --------------------------------------------------------------------------------


async def test_every_option_from_the_dialog_reaches_ollama(
    ollama_server: FakeOllama, config_file: Path
) -> None:
    ollama_server.add_model(vision_model())
    app = make_app(config_file)
    async with app.run_test(size=SIZE) as pilot:
        await online(pilot, app)
        chat(app).new_model = "llava:7b"
        await pilot.press("ctrl+o")
        await wait_for(pilot, lambda: isinstance(app.screen, OptionsDialog))
        dialog = app.screen
        # the model's own values (its Modelfile) are shown beside the options
        await wait_for(pilot, lambda: "model: 0.6" in screen_text(app), what="model defaults")
        for key, value in {
            "top_p": "0.7",
            "top_k": "20",
            "min_p": "0.1",
            "repeat_penalty": "1.3",
            "repeat_last_n": "32",
            "num_ctx": "2048",
            "keep_alive": "1h",
            "think": "medium",
            "format": "json",
        }.items():
            dialog.query_one(f"#{key}").value = value
        stop = dialog.query_one("#stop")
        stop.load_text("###\n\nEND")  # an empty stop sequence
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert isinstance(app.screen, OptionsDialog), "the dialog stays open"
        assert "Stop sequences: stop sequence 2 is empty" in screen_text(app)
        assert stop.text == "###\n\nEND" and dialog.query_one("#top_p").value == "0.7"
        stop.load_text("###\nEND")
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: isinstance(app.screen, ChatScreen))
        await type_text(pilot, "hi")
        await pilot.press("enter")
        await replied(pilot, app, 1)
    body = ollama_server.chat_requests()[-1]
    assert body["options"] == {
        "temperature": 0.8,
        "num_predict": 2048,
        "top_p": 0.7,
        "top_k": 20,
        "min_p": 0.1,
        "repeat_penalty": 1.3,
        "repeat_last_n": 32,
        "num_ctx": 2048,
        "stop": ["###", "END"],
    }
    assert (body["keep_alive"], body["think"], body["format"]) == ("1h", "medium", "json")


async def test_a_schema_file_that_is_not_json_keeps_the_dialog_open(
    ollama_server: FakeOllama, config_file: Path, tmp_path: Path
) -> None:
    (tmp_path / "schema.json").write_text("{not json")
    app = make_app(config_file)
    async with app.run_test(size=(80, 24)) as pilot:
        await online(pilot, app)
        await pilot.press("ctrl+o")
        await wait_for(pilot, lambda: isinstance(app.screen, OptionsDialog))
        app.screen.query_one("#format").value = "schema.json"  # beside config.toml
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert isinstance(app.screen, OptionsDialog)
        assert "Format: 'schema.json' is not JSON (Expecting" in screen_text(app)
        (tmp_path / "schema.json").write_text('{"type": "object"}')
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: isinstance(app.screen, ChatScreen))
        assert chat(app).new_options.format_value() == {"type": "object"}


# -- presets --------------------------------------------------------------------------------


async def test_a_preset_starts_a_conversation_and_one_is_made_from_it(
    ollama_server: FakeOllama, config_file: Path
) -> None:
    app = make_app(config_file)
    async with app.run_test(size=SIZE) as pilot:
        await online(pilot, app)
        await pilot.press("alt+p")
        await wait_for(pilot, lambda: isinstance(app.screen, PresetsDialog))
        assert "Coder" in screen_text(app) and "Writer" in screen_text(app)
        app.screen.query_one("#preset-list").highlighted = 0  # Coder, the first by name
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, ChatScreen))
        assert any("preset “Coder”" in n for n in notices(app))
        await type_text(pilot, "write a loop")
        await pilot.press("enter")
        await replied(pilot, app, 1)
        body = ollama_server.chat_requests()[-1]
        assert body["messages"][0]["content"].startswith("You are a senior software engineer")
        assert body["options"]["temperature"] == 0.2
        # this conversation, saved as a preset of its own
        await pilot.press("alt+p")
        await wait_for(pilot, lambda: isinstance(app.screen, PresetsDialog))
        await pilot.press("s")
        await wait_for(pilot, lambda: isinstance(app.screen, TextDialog))
        app.screen.query_one("#text").value = "My coder"
        await pilot.press("enter")
        await wait_for(pilot, lambda: "My coder" in screen_text(app), what="listed")
        await pilot.press("x")
        await wait_for(pilot, lambda: any("Exported 4 presets" in n for n in notices(app)))
    folder = app.settings.paths.presets
    assert (folder / "my-coder.toml").read_text().startswith('name = "My coder"')
    store = Store.open(app.settings.paths.database)
    saved = Presets(store).get("My coder")
    assert saved.options.temperature == 0.2 and saved.model == "llama3.2:latest"
    store.close()


# -- attachments ----------------------------------------------------------------------------


async def test_an_image_for_a_model_without_vision_is_refused_and_nothing_is_lost(
    ollama_server: FakeOllama,
    config_file: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    ollama_server.add_model(vision_model())
    Image.new("RGB", (40, 30), "orange").save(tmp_path / "cat.png")
    (tmp_path / "fake.png").write_text("not an image")
    app = make_app(config_file)
    async with app.run_test(size=SIZE) as pilot:
        await online(pilot, app)
        await type_text(pilot, "what is it?")
        # a file Pillow cannot read: asked again, the path as typed, with why
        await pilot.press("alt+a")
        await wait_for(pilot, lambda: isinstance(app.screen, AttachDialog))
        app.screen.query_one("#path").value = "fake.png"
        await pilot.press("enter")
        await wait_for(pilot, lambda: "is not an image Pillow can read" in screen_text(app))
        assert app.screen.query_one("#path").value == "fake.png"
        app.screen.query_one("#path").value = "ca"
        await wait_for(pilot, lambda: "cat.png" in screen_text(app), what="completion")
        app.screen.query_one("#path").value = "cat.png"
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, ChatScreen))
        pending = chat(app).query_one(PendingAttachments)
        # the file is read in a thread: attached once it is read, and drawn then
        await wait_for(
            pilot,
            lambda: (
                [a.name for a in pending.items] == ["cat.png"] and "📎 cat.png" in screen_text(app)
            ),
            what="cat.png attached and shown",
        )
        await pilot.press("enter")  # llama3.2 has no vision
        await wait_for(pilot, lambda: any("cannot read images" in n for n in notices(app)))
        told = next(n for n in notices(app) if "cannot read images" in n)
        assert "choose a vision model: llava:7b" in told and "Your message is kept" in told
        assert prompt_text(app) == "what is it?" and len(pending.items) == 1
        assert ollama_server.chat_requests() == []
        chat(app).new_model = "llava:7b"
        await pilot.press("enter")
        await replied(pilot, app, 1)
        assert prompt_text(app) == "" and pending.items == []
        turn = shown_turns(chat(app), PromptTurn)[-1]
        assert turn.query(ImagePreviews)  # drawn in the conversation
    sent = ollama_server.chat_requests()[-1]["messages"][-1]
    assert base64.b64decode(sent["images"][0]) == (tmp_path / "cat.png").read_bytes()


async def test_at_paths_send_files_as_context_and_bad_ones_keep_the_text(
    ollama_server: FakeOllama,
    config_file: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("buy milk\n")
    (tmp_path / "blob.bin").write_bytes(b"\x00\x01\x02")
    app = make_app(config_file)
    async with app.run_test(size=SIZE) as pilot:
        await online(pilot, app)
        for text, why in [
            ("read @missing/file.txt", "'missing/file.txt' does not exist"),
            ("read @blob.bin", "blob.bin is a binary file, not text"),
        ]:
            chat(app).query_one(PromptInput).text = text
            await pilot.press("enter")
            await wait_for(pilot, lambda why=why: any(why in n for n in notices(app)))
            assert prompt_text(app) == text
        assert ollama_server.chat_requests() == []
        prompt = chat(app).query_one(PromptInput)
        prompt.text = "summarise @no"
        prompt.move_cursor(prompt.document.end)
        await pilot.press("tab")  # completes the @path
        assert prompt.text == "summarise @notes.txt"
        meter = chat(app).query_one(ContextMeter)
        assert meter.use is not None and meter.use.pending >= 5
        await pilot.press("enter")
        await replied(pilot, app, 1)
    sent = ollama_server.chat_requests()[-1]["messages"][-1]["content"]
    assert sent == "summarise @notes.txt\n\nnotes.txt:\n```txt\nbuy milk\n```"


async def test_the_context_meter_warns_before_old_messages_drop(
    ollama_server: FakeOllama, make_config: Callable[..., Path]
) -> None:
    config = make_config(chat={"context_length": 64, "context_warn": 50})
    ollama_server.reply = " ".join(["word"] * 30)
    app = make_app(config)
    async with app.run_test(size=SIZE) as pilot:
        await online(pilot, app)
        await type_text(pilot, "tell me a lot " * 3)
        await pilot.press("enter")
        await replied(pilot, app, 1)
        meter = chat(app).query_one(ContextMeter)
        await wait_for(pilot, lambda: meter.use is not None and meter.use.used > 32)
        assert meter.use is not None and meter.use.window == 64 and meter.use.source == "num_ctx"
        assert meter.has_class("-warn") and "/ 64 (num_ctx)" in screen_text(app)
        await wait_for(pilot, lambda: any(n.title == "Context nearly full" for n in app.notices))
        told = next(n.message for n in app.notices if n.title == "Context nearly full")
        assert "Ollama drops the oldest messages" in told


async def test_ask_about_this_image_from_the_gallery(
    ollama_server: FakeOllama, config_file: Path
) -> None:
    ollama_server.add_model(vision_model())
    app = make_app(config_file)
    outputs = app.settings.paths.outputs
    outputs.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (64, 64), (20, 200, 30)).save(outputs / "green.png")
    params = ImageParameters("a green square", "", 64, 64, 20, 7.5, 1, "Euler a", "tiny")
    app.store.add_image(outputs / "green.png", params, 1.0)
    async with app.run_test(size=SIZE) as pilot:
        await online(pilot, app)
        await pilot.press("f3")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "ImageScreen")
        from tui.screens.gallery import GalleryScreen
        from tui.widgets.gallery import ThumbnailGrid

        await pilot.press("ctrl+b")
        await wait_for(pilot, lambda: isinstance(app.screen, GalleryScreen), what="the gallery")
        grid = app.screen.query_one(ThumbnailGrid)
        await wait_for(pilot, lambda: grid.current() is not None, what="a page")
        await pilot.press("a")
        await wait_for(pilot, lambda: isinstance(app.screen, ChatScreen))
        pending = chat(app).query_one(PendingAttachments)
        await wait_for(pilot, lambda: [a.name for a in pending.items] == ["green.png"])
        assert chat(app).conversation is None and prompt_text(app) == "What is in this image?"
        assert pending.items[0].path.parent == app.settings.paths.attachments
        # the default model cannot see: the installed vision model is chosen
        await wait_for(pilot, lambda: chat(app).current_model() == "llava:7b")
        await pilot.press("enter")
        await wait_for(pilot, lambda: not chat(app).streaming and shown_turns(chat(app), ReplyTurn))
    sent = ollama_server.chat_requests()[-1]
    assert sent["model"] == "llava:7b"
    image = base64.b64decode(sent["messages"][-1]["images"][0])
    assert image == (outputs / "green.png").read_bytes()


async def test_the_new_dialogs_fit_80x24(ollama_server: FakeOllama, config_file: Path) -> None:
    app = make_app(config_file)
    async with app.run_test(size=(80, 24)) as pilot:
        await online(pilot, app)
        for key, dialog in (
            ("ctrl+o", OptionsDialog),
            ("alt+p", PresetsDialog),
            ("alt+a", AttachDialog),
        ):
            await pilot.press(key)
            await wait_for(pilot, lambda dialog=dialog: isinstance(app.screen, dialog))
            text = screen_text(app)
            assert "esc" in text.splitlines()[-1].lower()
            if dialog is OptionsDialog:
                save = app.screen.query_one("#save")
                assert save.region.bottom <= 23, "Save is in sight without scrolling"
            await pilot.press("escape")
            await wait_for(pilot, lambda: isinstance(app.screen, ChatScreen))
