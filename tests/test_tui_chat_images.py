"""Chat and images in the app (issue 14), driven with Pilot against the fake Ollama and the
tiny SD pipeline: Alt+I and /image turn the chat into an image job whose prompt the model
writes and the user edits; the image appears in the conversation and opens in the viewer;
a model calls generate_image and talks about the result; "Ask about this image" and
"Improve this prompt"; and the bad inputs (an empty or huge prompt, a failing pipeline)."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path

from ollama_server import FakeOllama, ToolCallReply, tool_messages, vision_model
from PIL import Image
from textual.widgets import TextArea
from tui_helpers import make_app, screen_text, shown_turn, shown_turns, type_text, wait_for

from engines.config import DEFAULT_IMAGE_INSTRUCTION
from engines.image_links import origin_of
from engines.image_requests import IMAGE_PROMPT_MAX
from engines.images import ImageParameters
from tui.app import LlmPessoalApp
from tui.screens.chat import ChatScreen
from tui.widgets.attachments import PendingAttachments
from tui.widgets.chat_image import ChatImage
from tui.widgets.conversation import ReplyTurn
from tui.widgets.dialogs import ConfirmDialog
from tui.widgets.image_prompt import ImagePromptDialog
from tui.widgets.image_viewer import ImageViewer
from tui.widgets.prompt import PromptInput

SIZE = (120, 40)


def chat(app: LlmPessoalApp) -> ChatScreen:
    screen = app.screen
    assert isinstance(screen, ChatScreen), screen
    return screen


def notices(app: LlmPessoalApp) -> str:
    return "\n".join(n.message for n in app.notices)


async def online(pilot: object, app: LlmPessoalApp) -> None:
    await wait_for(
        pilot,  # type: ignore[arg-type]
        lambda: app.ollama is not None and app.ollama.online and app.models,
        what="Ollama online",
    )


async def replied(pilot: object, app: LlmPessoalApp, count: int) -> None:
    def done() -> bool:
        turns = list(shown_turns(app.screen, ReplyTurn))
        return len(turns) >= count and all(t.status != "streaming" for t in turns)

    await wait_for(pilot, done, what=f"{count} replies")  # type: ignore[arg-type]


def tiny_config(make_config: Callable[..., Path], model: Path, **chat_keys: object) -> Path:
    return make_config(
        diffusion={"model": str(model), "device": "cpu", "width": 64, "height": 64, "steps": 2},
        chat=chat_keys,
    )


async def test_an_image_of_the_last_reply_is_written_edited_queued_and_shown_inline(
    ollama_server: FakeOllama, make_config: Callable[..., Path], tiny_sd_folder: Path
) -> None:
    ollama_server.add_model(vision_model())
    ollama_server.replies = ["A red fox sleeps in the snow at dawn.", "red fox, snow, dawn light"]
    app = make_app(tiny_config(make_config, tiny_sd_folder))
    async with app.run_test(size=SIZE) as pilot:
        await online(pilot, app)
        await type_text(pilot, "Tell me about foxes")
        await pilot.press("enter")
        await replied(pilot, app, 1)
        await pilot.press("alt+i")
        await wait_for(pilot, lambda: isinstance(app.screen, ImagePromptDialog), what="dialog")
        asked = ollama_server.chat_requests()[-1]["messages"][-1]["content"]
        assert asked.startswith(DEFAULT_IMAGE_INSTRUCTION) and "A red fox sleeps" in asked
        area = app.screen.query_one(TextArea)
        assert area.text == "red fox, snow, dawn light"
        area.insert(", watercolor")
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: isinstance(app.screen, ChatScreen))
        assert "it will appear in this conversation" in notices(app)
        await wait_for(pilot, lambda: app.screen.query(ChatImage), timeout=180, what="image")
        [inline] = app.screen.query(ChatImage)
        reply = shown_turn(chat(app), ReplyTurn)
        assert inline.parent is reply, "the image is under the reply it came from"
        assert inline.image.parameters.prompt == "red fox, snow, dawn light, watercolor"
        caption = f"seed {inline.image.parameters.seed}"
        await wait_for(pilot, lambda: caption in screen_text(app), what="in sight")
        conversation = chat(app).conversation
        assert conversation is not None
        origin = origin_of(app.store, inline.image.id)
        assert origin is not None
        assert (origin.conversation_id, origin.message_id) == (conversation.id, reply.message_id)
        # it stays after the conversation is opened again
        chat(app).open_conversation(conversation.id)

        # (the one drawn as the reply came is removed as the conversation opens again)
        def drawn_again() -> list[ChatImage]:
            return [i for i in app.screen.query(ChatImage) if i is not inline]

        await wait_for(pilot, drawn_again, what="image again")
        await wait_for(pilot, lambda: not inline.is_attached, what="the first one gone")
        # Enter on it opens the viewer; a there asks about it in a new chat
        app.screen.query_one(ChatImage).focus()
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, ImageViewer), what="viewer")
        await pilot.press("a")
        await wait_for(pilot, lambda: isinstance(app.screen, ChatScreen))
        pending = chat(app).query_one(PendingAttachments)
        await wait_for(pilot, lambda: len(pending.items) == 1, what="attached")
        assert pending.items[0].name == inline.image.path.name
        assert chat(app).conversation is None
        assert chat(app).query_one(PromptInput).text == "What is in this image?"
        # the gallery names the conversation and opens it (o)
        await pilot.press("f3")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "ImageScreen")
        await pilot.press("ctrl+b")
        await wait_for(pilot, lambda: "from the chat" in screen_text(app), what="its chat")
        await pilot.press("o")
        await wait_for(
            pilot,
            lambda: (
                isinstance(app.screen, ChatScreen)
                and chat(app).conversation is not None
                and chat(app).conversation.id == conversation.id
            ),  # type: ignore[union-attr]
            what="the conversation again",
        )


async def test_a_model_calls_generate_image_the_user_agrees_and_the_model_talks_about_it(
    ollama_server: FakeOllama, make_config: Callable[..., Path], tiny_sd_folder: Path
) -> None:
    call = {"prompt": "a lighthouse", "width": 64, "height": 64, "steps": 2, "seed": 5}
    ollama_server.replies = [
        ToolCallReply((("generate_image", call),), "Drawing it. "),
        "Here is your lighthouse, seed 5.",
    ]
    app = make_app(tiny_config(make_config, tiny_sd_folder))
    async with app.run_test(size=SIZE) as pilot:
        await online(pilot, app)
        await type_text(pilot, "Draw a lighthouse")
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmDialog), what="asked")
        question = app.screen.question  # type: ignore[attr-defined]
        assert "asks for an image: “a lighthouse” (64×64, 2 steps, seed 5)" in question
        assert "asks for an image" in screen_text(app)
        await pilot.press("y")
        await replied(pilot, app, 1)
        reply = shown_turn(chat(app), ReplyTurn)
        assert reply.content == "Drawing it. Here is your lighthouse, seed 5."
        [use] = reply.tools
        assert use.state == "done" and use.image
        text = screen_text(app)
        assert "⚙ generate_image “a lighthouse”" in text and "→ made" in text
        [answer] = tool_messages(ollama_server.chat_requests()[-1])
        result = json.loads(answer["content"])
        assert (result["path"], result["seed"]) == (use.image, 5)
        assert Path(result["path"]).is_file()
        await wait_for(pilot, lambda: reply.query(ChatImage), what="the image in the reply")
        # kept: the conversation read again shows the call, its answer and the image
        conversation = chat(app).conversation
        assert conversation is not None
        chat(app).open_conversation(conversation.id)
        await wait_for(pilot, lambda: app.screen.query(ChatImage), what="after reload")
        assert "→ made" in screen_text(app)
        [stored] = app.store.messages(conversation.id)[-1].tools
        assert stored.image == use.image


async def test_a_tool_called_while_the_pipeline_fails_says_so_and_the_app_goes_on(
    ollama_server: FakeOllama, make_config: Callable[..., Path], tmp_path: Path
) -> None:
    ollama_server.replies = [
        ToolCallReply((("generate_image", {"prompt": "a cat", "width": 4000}),)),
        ToolCallReply((("generate_image", {"prompt": "a cat"}),)),
        "The image engine is not working right now.",
    ]
    config = make_config(
        diffusion={"model": str(tmp_path / "gone-model"), "width": 64, "height": 64},
        chat={"image_tool_ask": False},
    )
    app = make_app(config)
    async with app.run_test(size=SIZE) as pilot:
        await online(pilot, app)
        await type_text(pilot, "Draw a cat")
        await pilot.press("enter")
        await replied(pilot, app, 1)
        reply = shown_turn(chat(app), ReplyTurn)
        refused, failed = reply.tools
        assert refused.state == "refused" and "width 4000 is not allowed" in refused.result
        assert failed.state == "failed" and "does not exist" in failed.result
        text = screen_text(app)
        assert "→ refused: width 4000 is not allowed" in text
        assert "→ failed: the image could not be made" in text
        await wait_for(pilot, lambda: "was not made" in notices(app), what="the notice")
        first, second = tool_messages(ollama_server.chat_requests()[-1])
        assert first["content"].startswith("refused: width 4000")
        assert second["content"].startswith("error: the image could not be made")
        # the app goes on: another message is sent and answered
        ollama_server.replies = None
        await type_text(pilot, "never mind")
        await pilot.press("enter")
        await replied(pilot, app, 2)


async def test_an_empty_or_huge_prompt_from_the_model_is_named_and_nothing_is_lost(
    ollama_server: FakeOllama, config_file: Path
) -> None:
    app = make_app(config_file)
    async with app.run_test(size=(80, 24)) as pilot:
        await online(pilot, app)
        ollama_server.reply = "   "
        await type_text(pilot, "/image a cat on a roof")
        await pilot.press("enter")
        await wait_for(pilot, lambda: "empty image prompt" in notices(app), what="refusal")
        assert chat(app).query_one(PromptInput).text == "/image a cat on a roof"
        assert not app.image_queue.jobs()
        ollama_server.reply = "roof cat " * 400
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, ImagePromptDialog), what="dialog")
        limit = f"an image prompt may have {IMAGE_PROMPT_MAX:,} at most"
        assert limit in notices(app) and "image prompt may have" in screen_text(app)
        dialog = app.screen
        assert len(dialog.query_one(TextArea).text) <= IMAGE_PROMPT_MAX
        # at 80x24 the buttons are in sight
        assert dialog.query_one("#accept").region.bottom <= 23
        assert "Queue (^s)" in screen_text(app)
        dialog.query_one(TextArea).load_text("")
        await pilot.press("ctrl+s")
        assert "The prompt is empty" in screen_text(app) and isinstance(
            app.screen, ImagePromptDialog
        )
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, ChatScreen))
        assert "Nothing was queued." in notices(app) and not app.image_queue.jobs()
        assert chat(app).query_one(PromptInput).text == "/image a cat on a roof"


async def test_improve_this_prompt_from_the_gallery_with_the_vision_model(
    ollama_server: FakeOllama, make_config: Callable[..., Path]
) -> None:
    ollama_server.add_model(vision_model())
    ollama_server.reply = "a green square, studio lighting, minimal, high detail"
    app = make_app(make_config(chat={"vision_model": "llava:7b"}))
    outputs = app.settings.paths.outputs
    outputs.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (64, 64), (20, 200, 30)).save(outputs / "green.png")
    params = ImageParameters("a green square", "", 64, 64, 20, 7.5, 1, "Euler a", "tiny")
    app.store.add_image(outputs / "green.png", params, 1.0)
    async with app.run_test(size=SIZE) as pilot:
        await online(pilot, app)
        await pilot.press("f3")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "ImageScreen")
        await pilot.press("ctrl+b")
        await wait_for(pilot, lambda: "green.png" in screen_text(app), what="the gallery")
        await pilot.press("p")
        await wait_for(pilot, lambda: isinstance(app.screen, ImagePromptDialog), what="dialog")
        assert "Improved by llava:7b" in screen_text(app)
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "ImageScreen")
        form_prompt = app.screen.query_one("#image-prompt", TextArea).text
        assert form_prompt == "a green square, studio lighting, minimal, high detail"
    sent = ollama_server.chat_requests()[-1]
    assert sent["model"] == "llava:7b" and "a green square" in sent["messages"][-1]["content"]
    image = base64.b64decode(sent["messages"][-1]["images"][0])
    assert image == (outputs / "green.png").read_bytes()


async def test_improve_this_prompt_on_the_image_screen_fills_the_form(
    ollama_server: FakeOllama, config_file: Path
) -> None:
    app = make_app(config_file, start_screen="image")
    async with app.run_test(size=SIZE) as pilot:
        await online(pilot, app)
        await pilot.press("alt+i")
        await wait_for(pilot, lambda: "The prompt is empty" in notices(app), what="refused")
        assert not ollama_server.chat_requests()
        await type_text(pilot, "a cat")
        ollama_server.reply = "Prompt: a fluffy cat on a windowsill, soft morning light"
        await pilot.press("alt+i")
        await wait_for(pilot, lambda: isinstance(app.screen, ImagePromptDialog), what="dialog")
        await pilot.press("escape")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "ImageScreen")
        assert app.screen.query_one("#image-prompt", TextArea).text == "a cat", "kept"
        await pilot.press("alt+i")
        await wait_for(pilot, lambda: isinstance(app.screen, ImagePromptDialog), what="again")
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "ImageScreen")
        form = app.screen.query_one("#image-prompt", TextArea)
        assert form.text == "a fluffy cat on a windowsill, soft morning light"
    [body, _] = ollama_server.chat_requests()
    assert body["model"] == "llama3.2:latest", "no vision model: the default model"
    assert "a cat" in body["messages"][-1]["content"] and not body["messages"][-1].get("images")


async def test_queue_at_once_skips_the_dialog_and_links_the_typed_text_to_the_conversation(
    ollama_server: FakeOllama, make_config: Callable[..., Path], tmp_path: Path
) -> None:
    ollama_server.replies = ["Owls hunt at night.", "an owl in flight, moonlight"]
    config = make_config(
        diffusion={"model": str(tmp_path / "gone-model"), "width": 64, "height": 64},
        chat={"image_queue_at_once": True},
    )
    app = make_app(config)
    async with app.run_test(size=SIZE) as pilot:
        await online(pilot, app)
        await type_text(pilot, "Tell me about owls")
        await pilot.press("enter")
        await replied(pilot, app, 1)
        await type_text(pilot, "/image an owl at night")
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.image_queue.jobs(), what="queued at once")
        assert not isinstance(app.screen, ImagePromptDialog)
        [job] = app.image_queue.jobs()
        assert job.request.prompt == "an owl in flight, moonlight"
        assert "an owl at night" in ollama_server.chat_requests()[-1]["messages"][-1]["content"]
        assert chat(app).query_one(PromptInput).text == "", "the typed text was used"
        from engines.image_links import job_origin

        origin = job_origin(app.store, job.id)
        reply = shown_turn(chat(app), ReplyTurn)
        assert origin is not None and origin.message_id == reply.message_id
        await wait_for(pilot, lambda: "was not made" in notices(app), what="failed job told")
