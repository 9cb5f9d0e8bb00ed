"""The TUI with a hub model: the Image screen shows its download (and Esc stops it), and the
Models dialog's "Image models" section lists, pulls, deletes and makes a model the default.
The hub is the local server of tests/hub_server.py; everything runs the app's real way."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from textual.widgets import Input, Label, OptionList
from tui_helpers import make_app, screen_text, type_text, wait_for

from tui.screens.image import ImageScreen
from tui.screens.models import ModelsDialog
from tui.widgets.dialogs import ConfirmDialog
from tui.widgets.image_models import ImageModelsPane

try:
    from test_hub import REPO, hub, hub_repo_folder  # fixtures
except ImportError:
    from tests.test_hub import REPO, hub, hub_repo_folder

__all__ = ["hub", "hub_repo_folder"]
FakeHub = Any
SIZE = (120, 40)
UNET = "unet/diffusion_pytorch_model.safetensors"


@pytest.fixture
def config(make_config: Callable[..., Path], tmp_path: Path) -> Path:
    return make_config(
        paths={"models": tmp_path / "models"},
        diffusion={"model": REPO, "device": "cpu", "width": 64, "height": 64, "steps": 2},
        ui={"screen": "image"},
    )


def image_screen(app: Any) -> ImageScreen:
    screen = app.screen
    assert isinstance(screen, ImageScreen)
    return screen


def label(widget_owner: Any, selector: str) -> str:
    return str(widget_owner.query_one(selector, Label).content)


async def test_the_image_screen_shows_the_download_and_esc_stops_it(
    hub: FakeHub, config: Path, tmp_path: Path
) -> None:
    hub.hold_after = 1_500_000  # the big files stop there until released
    app = make_app(config)
    async with app.run_test(size=SIZE) as pilot:
        await type_text(pilot, "a red square")
        await pilot.press("ctrl+g")
        screen = image_screen(app)
        status = screen.query_one("#pipeline-status")
        await wait_for(
            pilot,
            lambda: (
                "downloading" in str(status.render()) and UNET in label(screen, "#image-figures")
            ),
            timeout=60,
            what="the download in the status line",
        )
        line = str(status.render())
        assert "● tests/tiny-sd · downloading " in line and "MB / 9.4 MB" in line
        assert screen.query_one("#image-progress").visible
        await pilot.press("escape")
        await wait_for(pilot, lambda: not screen.generating, timeout=30, what="the stop")
        assert label(screen, "#image-error") == ""  # asked for: no error
        assert label(screen, "#image-figures") == "job #1 stopped; 0 images kept"
        notes = [n.message for n in app.notices]
        assert any(n.startswith("stopped downloading tests/tiny-sd") for n in notes), notes
        assert not app.diffusion.loaded
        hub.hold_after = None
        hub.release.set()
        await pilot.press("ctrl+g")
        await wait_for(
            pilot,
            lambda: not screen.generating and ".png · seed" in label(screen, "#image-figures"),
            timeout=120,
            what="the image of the second try",
        )
        assert app.diffusion.loaded and label(screen, "#image-error") == ""
        assert list((tmp_path / "outputs").glob("*.png"))
    assert any(r[2].startswith("bytes=") for r in hub.gets(UNET))  # it went on


async def open_image_models(pilot: Any) -> ImageModelsPane:
    await pilot.press("f5")
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, ModelsDialog), what="the dialog")
    pane = pilot.app.screen.query_one(ImageModelsPane)
    return pane


async def test_pull_make_default_and_delete_from_the_models_dialog(
    hub: FakeHub, config: Path, tmp_path: Path
) -> None:
    app = make_app(config)
    async with app.run_test(size=(80, 24)) as pilot:
        pane = await open_image_models(pilot)
        listing = pane.query_one("#image-models-list", OptionList)
        assert app.screen.focused is listing
        await wait_for(
            pilot, lambda: "No image models on disk yet" in screen_text(app), what="empty"
        )
        await pilot.press("p")
        assert app.screen.focused is pane.query_one("#image-pull-name", Input)
        pane.query_one("#image-pull-name", Input).value = REPO
        await pilot.press("enter")
        await wait_for(pilot, lambda: pane.pulling is None and pane.models, timeout=60, what="pull")
        assert label(pane, "#image-pull-status").startswith("Pulled tests/tiny-sd")
        assert [(m.name, m.default) for m in pane.models] == [(REPO, True)]
        assert "9.4 MB" in screen_text(app)

        mine = tmp_path / "models" / "mine.safetensors"
        mine.parent.mkdir()
        mine.write_bytes(b"0" * 100)
        listing.focus()
        await pilot.press("r")
        await wait_for(pilot, lambda: len(pane.models) == 2, what="the local file listed")
        await pilot.press("down", "u")  # for this run only
        await wait_for(pilot, lambda: app.diffusion.model == str(mine), what="used now")
        state = tmp_path / "data" / "state.json"
        assert not state.exists() or "image_model" not in json.loads(state.read_text())
        await wait_for(pilot, lambda: pane.models[1].default, what="marked as the default")
        await pilot.press("up", "s")  # for every run
        await wait_for(pilot, lambda: app.diffusion.model == REPO, what="the default")
        assert json.loads(state.read_text())["image_model"] == REPO

        await pilot.press("d")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmDialog), what="the question")
        assert "Delete tests/tiny-sd (9.4 MB)" in screen_text(app)
        await pilot.press("y")
        await wait_for(
            pilot, lambda: [m.name for m in pane.models] == [str(mine)], what="the list without it"
        )
        assert not (tmp_path / "cache" / "hub" / "models--tests--tiny-sd").exists()


async def test_esc_stops_a_pull_then_closes_the_dialog(
    hub: FakeHub, config: Path, tmp_path: Path
) -> None:
    hub.hold_after = 1_500_000
    app = make_app(config)
    async with app.run_test(size=SIZE) as pilot:
        pane = await open_image_models(pilot)
        pane.start_pull(REPO)
        await wait_for(pilot, lambda: hub.holding.is_set(), timeout=60, what="a download held")
        await wait_for(
            pilot, lambda: UNET in label(pane, "#image-pull-files"), what="the file line"
        )
        await pilot.press("escape")
        await wait_for(pilot, lambda: pane.pulling is None, timeout=30, what="the stop")
        assert label(pane, "#image-pull-status").startswith("Stopped pulling tests/tiny-sd")
        assert isinstance(app.screen, ModelsDialog)
        await wait_for(pilot, lambda: bool(pane.models), what="the partial model listed")
        assert not pane.models[0].complete and "incomplete" in screen_text(app)
        hub.hold_after = None
        hub.release.set()
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, ImageScreen), what="closed")
