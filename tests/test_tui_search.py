"""One search in the TUI (F6 on every screen): typing shows ranked results as they come,
Enter opens a message in its conversation (scrolled to it, its version shown), an image
in the Image screen's viewer, a preset in a new conversation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import MakeConfig
from PIL import Image
from PIL.PngImagePlugin import PngInfo
from textual.pilot import Pilot
from textual.widgets import Input, OptionList
from tui_helpers import make_app, screen_text, wait_for

from engines.chat_types import ChatOptions
from engines.config import load_settings
from engines.images import ImageParameters
from engines.presets import Presets
from engines.store import Store
from tui.app import LlmPessoalApp
from tui.screens.chat import ChatScreen
from tui.widgets.conversation import ConversationView
from tui.widgets.image_viewer import ImageViewer
from tui.widgets.search import SearchDialog

SIZE = (80, 24)


def fill(config: Path) -> dict[str, int]:
    """A long conversation whose first reply was regenerated (the search finds the older
    version, far above the end), a second conversation, an image and a preset."""
    settings = load_settings(config, env={})
    store = Store.open(settings.paths.database)
    try:
        c = store.create_conversation("llama3", ChatOptions(), "Sailing notes")
        first = store.add_message(c.id, "user", "What is a bowline?")
        old = store.add_message(c.id, "assistant", "A knot: the albatross loop \x1b[31m[b]x[/b]")
        store.add_message(c.id, "assistant", "A knot that makes a fixed loop.", parent_id=first)
        for i in range(12):
            store.add_message(c.id, "user", f"Question {i} about tides and wind")
            store.add_message(c.id, "assistant", "Tides follow the moon.\n\n" * 3)
        other = store.create_conversation("llama3", ChatOptions(), "Kitchen")
        store.add_message(other.id, "user", "A recipe with albatross? No: with leeks.")
        path = settings.paths.outputs / "heron.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        p = ImageParameters("a grey heron at dawn", "blurry", 64, 64, 4, 7.0, 4242, "Euler", "sd")
        info = PngInfo()
        info.add_text("parameters", p.to_text())
        Image.new("RGB", (64, 64), (90, 90, 120)).save(path, pnginfo=info)
        image = store.add_image(path, p, 1.0)
        preset = Presets(store).save("Mariner", ChatOptions(system_prompt="Speak as a heron"))
    finally:
        store.close()
    return {"conversation": c.id, "old": old, "image": image, "preset": preset.id}


def chat(app: LlmPessoalApp) -> ChatScreen:
    [screen] = [s for s in app.screen_stack if isinstance(s, ChatScreen)]
    return screen


async def search_for(pilot: Any, app: LlmPessoalApp, text: str) -> SearchDialog:
    await pilot.press("f6")
    await wait_for(pilot, lambda: isinstance(app.screen, SearchDialog), what="the search")
    dialog = app.screen
    assert isinstance(dialog, SearchDialog)
    await pilot.press(*text)
    await wait_for(pilot, lambda: dialog.answered == text, what=f"the results for {text!r}")
    return dialog


async def test_typing_shows_ranked_results_and_enter_opens_the_message_scrolled_to(
    make_config: MakeConfig,
) -> None:
    config = make_config()
    ids = fill(config)
    app = make_app(config)
    async with app.run_test(size=SIZE) as pilot:
        dialog = await search_for(pilot, app, "albatro")  # the last word as a prefix
        assert sorted((h.title, h.current) for h in dialog.hits) == [
            ("Kitchen", True),
            ("Sailing notes", False),  # the older version of the first reply
        ]
        text = screen_text(app)
        assert "Sailing notes · Assistant · older version or other branch" in text
        assert "albatross loop ␛[31m[b]x[/b]" in text  # shown as text, never interpreted
        assert "2 shown, best first · 2 messages" in text
        # the match is marked by style in the result's text
        option = dialog.query_one(OptionList).get_option_at_index(0)
        marked = [
            str(option.prompt)[s.start : s.end]  # type: ignore[index, union-attr]
            for s in option.prompt.spans  # type: ignore[union-attr]
            if "reverse" in str(s.style)
        ]
        assert marked == ["albatross"]
        await pilot.press("backspace", "backspace")  # "albat": still both, as typed
        await wait_for(pilot, lambda: dialog.answered == "albat")
        assert len(dialog.hits) == 2
        at = next(i for i, h in enumerate(dialog.hits) if h.id == ids["old"])
        for _ in range(at):
            await pilot.press("down")
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, ChatScreen), what="the chat")
        view = chat(app).query_one(ConversationView)
        await wait_for(
            pilot,
            lambda: view.selected is not None and view.selected.message_id == ids["old"],
            what="the message selected",
        )
        turn = view.selected
        assert turn is not None and chat(app).conversation is not None
        assert chat(app).conversation.id == ids["conversation"]
        # the older version is the one shown now, and it is on screen (scrolled up to it)
        assert (turn.version, turn.versions) == (1, 2)
        await wait_for(
            pilot,
            lambda: (
                view.scroll_offset.y
                <= turn.virtual_region.y
                < view.scroll_offset.y + view.size.height
            ),
            what="the turn scrolled into view",
        )
        assert view.scroll_offset.y < view.max_scroll_y  # not left at the end
        assert "albatross loop" in screen_text(app)


async def test_an_image_opens_in_the_image_screens_viewer(make_config: MakeConfig) -> None:
    config = make_config(diffusion={"device": "cpu"})
    ids = fill(config)
    app = make_app(config)
    async with app.run_test(size=SIZE) as pilot:
        dialog = await search_for(pilot, app, "4242")
        assert [(h.kind, h.id) for h in dialog.hits] == [("image", ids["image"])]
        assert "heron.png · sd · seed 4242 · Euler" in screen_text(app)
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, ImageViewer), what="the viewer")
        viewer = app.screen
        assert isinstance(viewer, ImageViewer) and viewer.image.id == ids["image"]
        assert app.current_mode == "image"
        await pilot.press("escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, ImageViewer))
        assert type(app.screen).__name__ == "ImageScreen"


async def test_a_preset_starts_a_new_conversation_with_it(make_config: MakeConfig) -> None:
    config = make_config()
    fill(config)
    app = make_app(config)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f4")  # from the Monitor screen
        await wait_for(pilot, lambda: app.current_mode == "monitor")
        dialog = await search_for(pilot, app, "heron")
        kinds = sorted(h.kind for h in dialog.hits)
        assert kinds == ["image", "preset"]
        at = next(i for i, h in enumerate(dialog.hits) if h.kind == "preset")
        for _ in range(at):
            await pilot.press("down")
        await pilot.press("enter")
        await wait_for(
            pilot, lambda: app.current_mode == "chat" and isinstance(app.screen, ChatScreen)
        )
        assert chat(app).conversation is None
        assert chat(app).new_options.system_prompt == "Speak as a heron"


async def test_the_key_works_on_every_screen_and_the_dialog_keeps_the_newest_text(
    make_config: MakeConfig,
) -> None:
    config = make_config(diffusion={"device": "cpu"})
    fill(config)
    app = make_app(config)
    async with app.run_test(size=SIZE) as pilot:
        for key, mode in (("f2", "chat"), ("f3", "image"), ("f4", "monitor")):
            await pilot.press(key)
            await wait_for(pilot, lambda mode=mode: app.current_mode == mode)  # type: ignore[misc]
            await pilot.press("f6")
            await wait_for(pilot, lambda: isinstance(app.screen, SearchDialog), what=mode)
            await pilot.press("escape")
            await wait_for(pilot, lambda: not isinstance(app.screen, SearchDialog))
        await pilot.press("f3", "ctrl+b")  # the gallery, a screen of its own
        await wait_for(pilot, lambda: type(app.screen).__name__ == "GalleryScreen")
        dialog = await search_for(pilot, app, "tides and win")
        assert len(dialog.hits) == 12 and {h.kind for h in dialog.hits} == {"message"}
        # typed on: the newest text's answer is the one shown
        await pilot.press(*"dxyz")
        await wait_for(pilot, lambda: dialog.answered == "tides and windxyz")
        assert "Nothing found for “tides and windxyz”." in screen_text(app)
        assert dialog.hits == []
        await pilot.press("ctrl+u")  # Input's clear line
        await wait_for(pilot, lambda: "Type to search every" in screen_text(app))
        assert dialog.query_one(Input).value == ""


async def test_the_palette_and_the_help_list_the_search(make_config: MakeConfig) -> None:
    app = make_app(make_config())
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        commands = [c.title for c in app.get_system_commands(app.screen)]
        assert "Everywhere: Search all" in commands
        rows = dict(next(rows for name, rows in app.help_groups() if name == "Everywhere"))
        assert rows["f6"] == "Search every conversation, message, image and preset"


@pytest.mark.usefixtures("steady_cursor")
def test_the_search_at_80x24(snap_compare: Any, make_config: MakeConfig) -> None:
    """Results of every kind, the match marked, an older version said, escapes shown."""
    config = make_config(diffusion={"device": "cpu"})
    fill(config)

    async def search_albatross(pilot: Pilot[object]) -> None:
        app = pilot.app
        assert isinstance(app, LlmPessoalApp)
        await search_for(pilot, app, "albatross")

    assert snap_compare(make_app(config), terminal_size=SIZE, run_before=search_albatross)


async def test_keys_can_move_the_search_to_another_key(make_config: MakeConfig) -> None:
    app = make_app(make_config(keys={"app.search": "ctrl+k"}))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+k")  # over the prompt's own Ctrl+K (delete to the line's end)
        await wait_for(pilot, lambda: isinstance(app.screen, SearchDialog), what="the search")
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, ChatScreen))
        await pilot.press("f6")  # the prompt's own F6 again (select the line)
        await pilot.pause()
        assert isinstance(app.screen, ChatScreen)
