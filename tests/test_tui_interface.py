"""The interface as a user finds it: every action in the palette and the help, keys that
do not clash, dialogs that answer y/n and fit 80x24, signals that say what is true, and
failures that are told, not swallowed."""

from __future__ import annotations

import importlib
import inspect
import json
import pkgutil
import re
import subprocess
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest
from ollama_server import FakeOllama
from PIL import Image
from textual.binding import Binding
from textual.pilot import Pilot
from textual.screen import Screen
from textual.widgets import Button, Input, Select
from tui_helpers import make_app, screen_text, shown_turns, type_text, wait_for

import tui
from engines.chat_types import ChatOptions
from engines.config import load_settings
from engines.images import ImageParameters, save_png
from engines.logs import setup_logging
from engines.store import Store
from tui import keys
from tui.app import LlmPessoalApp
from tui.screens.chat import ChatScreen
from tui.screens.gallery import GalleryScreen
from tui.screens.help import HelpScreen
from tui.screens.image import ImageScreen
from tui.screens.models import ModelsDialog, PullView
from tui.screens.monitor import MonitorScreen
from tui.widgets.conversation import ReplyTurn
from tui.widgets.dialogs import ConfirmDialog, OptionsDialog, PickDialog, TextDialog
from tui.widgets.image_prompt import ImagePromptDialog
from tui.widgets.image_viewer import ImageViewer
from tui.widgets.picture import Picture
from tui.widgets.sidebar import ConversationList

SIZE = (120, 40)
SMALL = (80, 24)


def chat(app: LlmPessoalApp) -> ChatScreen:
    screen = app.screen
    assert isinstance(screen, ChatScreen)
    return screen


async def online(pilot: Pilot[object]) -> None:
    app = pilot.app
    await wait_for(
        pilot,
        lambda: app.ollama is not None and app.ollama.online and app.models,
        what="Ollama online",
    )


def database(config: Path) -> Path:
    return load_settings(config, env={}).paths.database


def notices(app: LlmPessoalApp) -> list[str]:
    return [n.message for n in app.notices]


def a_stored_image(app: LlmPessoalApp) -> object:
    image = Image.new("RGB", (64, 64), (200, 30, 30))
    params = ImageParameters("a red square", "", 64, 64, 4, 7.5, 1, "Euler a", "tiny")
    path = save_png(image, app.settings.paths.outputs, params, datetime.now())
    app.store.add_image(path, params, 0.5)
    return app.store.images()[0]


# -- every action is findable -----------------------------------------------------------


def own_bindings_in(screen: Screen[object]) -> list[tuple[object, Binding]]:
    """Every binding with a description that a class of the app declares, for the
    screen and each widget in it, read straight from the classes."""
    found = []
    for node in screen.walk_children(with_self=True):
        for cls in type(node).__mro__:
            if not cls.__module__.startswith("tui."):
                continue
            for binding in cls.__dict__.get("BINDINGS", []):
                if isinstance(binding, Binding) and binding.description:
                    found.append((node, binding))
    return found


def test_every_class_with_bindings_is_known_to_the_palette_and_the_help() -> None:
    registered = {(s.module, s.name) for s in keys.SOURCES}
    declared = set()
    for module_info in pkgutil.walk_packages(tui.__path__, "tui."):
        if module_info.name.startswith("tui.cli"):
            continue
        module = importlib.import_module(module_info.name)
        for name, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ == module.__name__ and cls.__dict__.get("BINDINGS"):
                declared.add((cls.__module__, name))
    assert declared - registered == set(), "add these to tui.keys.SOURCES"


async def test_the_palette_and_the_help_hold_every_binding_of_every_screen_and_dialog(
    ollama_server: FakeOllama, config_file: Path
) -> None:
    app = make_app(config_file)
    async with app.run_test(size=SIZE) as pilot:
        await online(pilot)
        image = a_stored_image(app)
        checked: set[str] = set()

        async def check(what: str) -> None:
            screen = app.screen
            titles = [c.title for c in app.get_system_commands(screen)]
            helps = [c.help for c in app.get_system_commands(screen)]
            rows = [row for _, group in app.help_groups() for row in group]
            for node, binding in [*own_bindings_in(screen), *((app, b) for b in app.BINDINGS)]:
                assert isinstance(binding, Binding)
                action = binding.action.split("(")[0].rsplit(".", 1)[-1]
                if action in ("command_palette", "quit"):
                    continue  # the palette itself; Textual lists its own Quit
                if node.check_action(action, ()) is False:
                    continue  # impossible now (no reply to cancel)
                assert any(t.endswith(f": {binding.description}") for t in titles), (
                    f"{what}: {binding.description!r} is not in the palette"
                )
                first = app.get_key_display(Binding(binding.key.split(",")[0], action))
                assert any(f"({first}" in h for h in helps), f"{what}: no key for {binding}"
                text = binding.tooltip or binding.description
                assert any(row[1] == text for row in rows), f"{what}: {text!r} not in the help"
                checked.add(binding.action)

        await check("chat")
        for dialog in (
            ConfirmDialog("Delete it?"),
            TextDialog("Rename", "old"),
            PickDialog("Which?", ["a", "b", "c"]),
            OptionsDialog(ChatOptions()),
            ModelsDialog(),
            ImageViewer(image, "halfblock"),  # type: ignore[arg-type]
            GalleryScreen(),
            ImagePromptDialog("a red fox in the snow"),
        ):
            await app.push_screen(dialog)
            await pilot.pause()
            await check(type(dialog).__name__)
            app.pop_screen()
            await pilot.pause()
        await pilot.press("f1")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen))
        await check("help")
        await pilot.press("escape", "f3")
        await wait_for(pilot, lambda: isinstance(app.screen, ImageScreen))
        await check("image")
        await pilot.press("f4")
        await wait_for(pilot, lambda: isinstance(app.screen, MonitorScreen))
        await check("monitor")
        for action in ("rename", "act('reuse')", "unload", "pick(1)", "answer(True)", "save"):
            assert action in checked, f"{action} was not checked"


async def test_an_action_of_a_widget_runs_from_the_palette(
    ollama_server: FakeOllama, config_file: Path
) -> None:
    app = make_app(config_file, start_screen="image")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*"Image: Queue")
        await wait_for(pilot, lambda: "Image: Queue" in screen_text(app), what="found")
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.focused is app.screen.query_one("#image-queue"))


# -- [keys] refuses clashes ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("keymap", "named"),
    [
        ({"chat.model": "ctrl+q"}, ["'chat.model'", "'app.quit'", "ctrl+q"]),
        ({"image.generate": "ctrl+b"}, ["'image.generate'", "'image.gallery'"]),
        ({"app.help": "y"}, ["'app.help'", "Question's 'Yes'"]),
        ({"chat.model": "ctrl+b", "chat.sidebar": "ctrl+b"}, ["'chat.model'", "'chat.sidebar'"]),
    ],
)
def test_a_key_two_bindings_would_share_is_refused_naming_both(
    keymap: dict[str, str], named: list[str]
) -> None:
    problem = keys.check_keymap(keymap, "config.toml")
    assert problem is not None and problem.startswith("config.toml: [keys]")
    for name in named:
        assert name in problem


def test_keys_that_clash_with_nothing_are_accepted() -> None:
    assert keys.check_keymap({"chat.model": "f9", "image.generate": "f11"}, "c") is None
    # the same key on two screens is no clash: never active together
    assert keys.check_keymap({"monitor.unload_pipeline": "ctrl+g"}, "c") is None
    # every binding on its own default keys: the defaults clash only on purpose
    defaults = {i: b.key for i, b in keys.binding_ids().items()}
    assert keys.check_keymap(defaults, "c") is None


def test_a_clash_in_config_stops_the_app_with_exit_2(make_config: Callable[..., Path]) -> None:
    config = make_config(keys={"chat.model": "ctrl+q"})
    result = subprocess.run(
        [sys.executable, "-m", "tui.cli", "--config", str(config)],
        capture_output=True, text=True, timeout=60, cwd=config.parent,
    )  # fmt: skip
    assert result.returncode == 2
    assert "'chat.model'" in result.stderr and "'app.quit'" in result.stderr
    assert "Traceback" not in result.stderr


# -- confirmations ------------------------------------------------------------------------


async def test_a_confirmation_answers_y_or_n_and_a_cancel_says_what_was_kept(
    ollama_server: FakeOllama, config_file: Path
) -> None:
    store = Store.open(database(config_file))
    store.create_conversation("llama3.2:latest", ChatOptions(), "Keep me")
    store.close()
    app = make_app(config_file)
    async with app.run_test(size=SIZE) as pilot:
        await online(pilot)
        app.screen.query_one(ConversationList).focus()
        for cancel in ("n", "enter", "escape"):
            await pilot.press("d")
            await wait_for(pilot, lambda: isinstance(app.screen, ConfirmDialog))
            labels = [str(b.label) for b in app.screen.query(Button)]
            assert labels == ["Delete (y)", "Cancel (n)"], "the keys are on the buttons"
            await pilot.press(cancel)
            await wait_for(pilot, lambda: isinstance(app.screen, ChatScreen))
            assert notices(app)[-1] == "Kept “Keep me”.", cancel
            assert len(app.store.conversations()) == 1
        await pilot.press("d")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmDialog))
        await pilot.press("y")
        await wait_for(pilot, lambda: not app.store.conversations(), what="deleted")


# -- Ctrl+N ---------------------------------------------------------------------------------


async def test_a_new_conversation_uses_the_default_model_and_says_so(
    ollama_server: FakeOllama, make_config: Callable[..., Path]
) -> None:
    config = make_config(ollama={"default_model": "llama3.2:latest"})
    store = Store.open(database(config))
    store.create_conversation("qwen2.5-coder:7b", ChatOptions(), "with qwen")
    store.close()
    app = make_app(config)
    async with app.run_test(size=SIZE) as pilot:
        await online(pilot)
        assert chat(app).current_model() == "qwen2.5-coder:7b"
        await pilot.press("ctrl+n")
        await pilot.pause()
        assert chat(app).current_model() == "llama3.2:latest"
        assert chat(app).query_one("#model", Select).value == "llama3.2:latest"
        assert "A new conversation with llama3.2:latest." in screen_text(app)
        assert any("New conversation with llama3.2:latest" in n for n in notices(app))
        await type_text(pilot, "hi")
        await pilot.press("enter")
        await wait_for(pilot, lambda: not chat(app).streaming and shown_turns(chat(app), ReplyTurn))
        assert ollama_server.chat_requests()[-1]["model"] == "llama3.2:latest"


# -- signals that say what is true ------------------------------------------------------------


async def test_an_empty_seed_is_not_drawn_as_an_error(config_file: Path) -> None:
    app = make_app(config_file, start_screen="image")
    async with app.run_test(size=SIZE) as pilot:
        seed = app.screen.query_one("#image-seed", Input)
        seed.focus()
        await pilot.press("1", "backspace", "tab")
        await pilot.pause()
        assert seed.value == "" and not seed.has_class("-invalid"), "empty is a random seed"


async def test_the_models_dialog_says_ollama_is_offline_not_that_there_are_none(
    make_config: Callable[..., Path],
) -> None:
    config = make_config(ollama={"host": "http://127.0.0.1:9", "retry_interval": 30})
    app = make_app(config)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.ollama is not None, what="first check")
        await pilot.press("f5")
        await wait_for(pilot, lambda: isinstance(app.screen, ModelsDialog))
        await wait_for(pilot, lambda: "cannot be listed" in screen_text(app), what="offline said")
        assert "No models yet" not in screen_text(app)


async def test_a_finished_pull_is_not_shown_after_a_delete(
    ollama_server: FakeOllama, config_file: Path
) -> None:
    ollama_server.pull_layers = [1000, 10]
    app = make_app(config_file)
    async with app.run_test(size=SIZE) as pilot:
        await online(pilot)
        await pilot.press("f5")
        await wait_for(pilot, lambda: isinstance(app.screen, ModelsDialog))
        dialog = app.screen
        assert isinstance(dialog, ModelsDialog)
        dialog.start_pull("gemma3:1b")
        await wait_for(pilot, lambda: "Pulled gemma3:1b." in screen_text(app), what="pulled")
        await wait_for(pilot, lambda: dialog.highlighted() == "gemma3:1b")
        await pilot.press("d")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmDialog))
        await pilot.press("y")
        await wait_for(pilot, lambda: "gemma3:1b" not in [m.name for m in app.models])
        assert not dialog.query_one(PullView).display
        assert "Pulled gemma3:1b." not in screen_text(app)


async def test_dialogs_show_their_own_keys_not_the_chats(
    ollama_server: FakeOllama, config_file: Path
) -> None:
    app = make_app(config_file)
    async with app.run_test(size=SIZE) as pilot:
        await online(pilot)
        assert "^n New" in screen_text(app).splitlines()[-1]
        await pilot.press("ctrl+o")
        await wait_for(pilot, lambda: isinstance(app.screen, OptionsDialog))
        footer = screen_text(app).splitlines()[-1]
        assert "^s Save" in footer and "Cancel" in footer
        assert "New" not in footer and "Options" not in footer


async def test_down_goes_from_the_search_box_to_the_list(
    ollama_server: FakeOllama, config_file: Path
) -> None:
    app = make_app(config_file)
    async with app.run_test(size=SIZE) as pilot:
        await online(pilot)
        await type_text(pilot, "hello")
        await pilot.press("enter")
        await wait_for(pilot, lambda: not chat(app).streaming and shown_turns(chat(app), ReplyTurn))
        await pilot.press("ctrl+f")
        assert isinstance(app.focused, Input)
        await pilot.press("down")
        assert isinstance(app.focused, ConversationList)


async def test_the_numbers_of_the_code_block_picker_pick(
    ollama_server: FakeOllama, config_file: Path
) -> None:
    ollama_server.reply = "".join(f"```py\nblock_{n}()\n```\n\n" for n in range(1, 4))
    app = make_app(config_file)
    async with app.run_test(size=SIZE) as pilot:
        await online(pilot)
        await type_text(pilot, "three blocks")
        await pilot.press("enter")
        await wait_for(pilot, lambda: not chat(app).streaming and shown_turns(chat(app), ReplyTurn))
        await pilot.press("ctrl+g")
        await wait_for(pilot, lambda: isinstance(app.screen, PickDialog))
        assert "2. py: block_2()" in screen_text(app)
        await pilot.press("2")
        await wait_for(pilot, lambda: isinstance(app.screen, ChatScreen))
        assert app.clipboard == "block_2()\n"


# -- 80x24 ------------------------------------------------------------------------------------


async def test_the_options_dialog_saves_by_click_at_80x24(
    ollama_server: FakeOllama, config_file: Path
) -> None:
    app = make_app(config_file)
    async with app.run_test(size=SMALL) as pilot:
        await online(pilot)
        await pilot.press("ctrl+o")
        await wait_for(pilot, lambda: isinstance(app.screen, OptionsDialog))
        app.screen.query_one("#temperature", Input).value = "0.3"
        save = app.screen.query_one("#save", Button)
        save.focus()  # Tab would get there: the dialog scrolls it into view
        await pilot.pause()
        assert save.region.bottom <= SMALL[1] - 1, "above the footer"
        await pilot.click("#save")
        await wait_for(pilot, lambda: isinstance(app.screen, ChatScreen), what="saved")
        assert chat(app).new_options.temperature == 0.3


async def test_at_80x24_the_preview_and_the_conversation_get_room(
    ollama_server: FakeOllama, config_file: Path
) -> None:
    app = make_app(config_file)
    async with app.run_test(size=SMALL) as pilot:
        await online(pilot)
        sidebar = app.screen.query_one("#sidebar")
        assert sidebar.display and sidebar.region.width < 31
        assert app.screen.query_one("#conversation").region.width >= 50
        await pilot.press("ctrl+b")
        await pilot.pause()
        assert not sidebar.display, "Ctrl+B hides it"
        assert app.screen.query_one("#conversation").region.width >= 75
        await pilot.press("f3")
        await wait_for(pilot, lambda: "Generate" in screen_text(app))
        assert app.screen.query_one("#preview").region.width >= 40


async def test_the_image_viewer_fits_80x24(config_file: Path) -> None:
    app = make_app(config_file, start_screen="image")
    async with app.run_test(size=SMALL) as pilot:
        image = a_stored_image(app)
        await app.push_screen(ImageViewer(image, "halfblock"))  # type: ignore[arg-type]
        picture = app.screen.query_one("#viewer-picture", Picture)
        await wait_for(pilot, lambda: picture.image is not None, what="the picture, read")
        text = screen_text(app)
        assert "a red square" in text and "Seed: 1" in text, "the parameters are shown"
        assert picture.region.width >= 60 and picture.region.height >= 8
        assert "esc Close" in text.splitlines()[-1]


# -- failures are told ------------------------------------------------------------------------


async def test_a_worker_that_fails_is_logged_with_its_traceback_and_told(
    ollama_server: FakeOllama, config_file: Path
) -> None:
    app = make_app(config_file, start_screen="monitor")
    setup_logging(app.settings.paths.logs, "INFO")

    async def broken() -> list[object]:
        raise RuntimeError("the list of loaded models broke")

    app.chat.loaded = broken  # type: ignore[method-assign]
    try:
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: any("Unexpected" in n.title for n in app.notices))
            (told,) = [n.message for n in app.notices if n.title == "Unexpected error"]
            assert "read_loaded_models" in told and "the list of loaded models broke" in told
            assert "\n" not in told and "app.jsonl" in told
    finally:
        setup_logging(app.settings.paths.logs, "WARNING")
    lines = (app.settings.paths.logs / "app.jsonl").read_text().splitlines()
    [entry] = [json.loads(x) for x in lines if "read_loaded_models" in x]
    assert entry["level"] == "ERROR"
    assert "Traceback" in entry["exception"] and "RuntimeError" in entry["exception"]


# -- the Monitor's unload during a generation ------------------------------------------------


async def test_unloading_during_a_generation_offers_to_stop_it(
    make_config: Callable[..., Path], tiny_sd_folder: Path, ollama_server: FakeOllama
) -> None:
    config = make_config(
        diffusion={
            "model": str(tiny_sd_folder),
            "device": "cpu",
            "width": 128,
            "height": 128,
            "steps": 150,
        }
    )
    app = make_app(config, start_screen="image")
    async with app.run_test(size=SIZE) as pilot:
        image = app.screen
        await type_text(pilot, "a slow one")
        await pilot.press("ctrl+g")
        await wait_for(pilot, lambda: image.last_step is not None, timeout=60, what="steps")
        await pilot.press("f4")
        await wait_for(pilot, lambda: isinstance(app.screen, MonitorScreen))
        await pilot.press("x")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmDialog))
        assert "An image is being generated" in screen_text(app)
        assert "Stop and unload (y)" in screen_text(app)
        await pilot.press("y")
        await wait_for(pilot, lambda: not app.diffusion.loaded, timeout=60, what="unloaded")
        assert any("Stopping the image" in n for n in notices(app))
        await wait_for(pilot, lambda: not image.generating, timeout=30)
        assert image.last_step.step < 150


def test_no_dead_code_is_left() -> None:
    tui_folder = Path(tui.__file__).parent
    assert not (tui_folder / "messages.py").exists()
    assert ".coming" not in (tui_folder / "app.tcss").read_text()
    for path in tui_folder.rglob("*.py"):
        text = path.read_text()
        assert "def lp(" not in text or path.name == "base.py", path
        assert "assert isinstance(self.screen" not in text and 'group="gpu"' not in text, path
        assert not re.search(r"screen = self\.screen\s+assert isinstance", text), path
