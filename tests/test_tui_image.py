"""Pilot tests of the Image screen with the tiny pipeline, loaded the app's real way."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from ollama_server import FakeOllama
from PIL import Image
from textual.widgets import Input, Label, TextArea
from tui_helpers import make_app, screen_text, shown_turns, sql, type_text, wait_for

from engines.images import ImageParameters, read_parameters, save_png
from engines.store import Store
from tui.screens.chat import ChatScreen
from tui.screens.image import ImageScreen
from tui.widgets.conversation import ReplyTurn
from tui.widgets.image_viewer import ImageViewer

SIZE = (120, 40)


def image_config(make_config: Callable[..., Path], model: Path, **diffusion: object) -> Path:
    return make_config(
        diffusion={
            "model": str(model),
            "device": "cpu",
            "width": 64,
            "height": 64,
            "steps": 4,
            **diffusion,
        },
    )


def screen(app: object) -> ImageScreen:
    s = app.screen
    assert isinstance(s, ImageScreen)
    return s


def error_text(app: object) -> str:
    return str(screen(app).query_one("#image-error", Label).content)


def pngs(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.png")) if folder.exists() else []


async def generate(pilot: object, app: object, prompt: str) -> None:
    await type_text(pilot, prompt)  # type: ignore[arg-type]
    screen(app).action_generate()
    await wait_for(
        pilot,
        lambda: not screen(app).generating,
        timeout=60,  # type: ignore[arg-type]
        what="generation to end",
    )


async def test_generate_saves_a_png_and_fills_the_gallery(
    make_config: Callable[..., Path], tiny_sd_folder: Path
) -> None:
    config = image_config(make_config, tiny_sd_folder)
    app = make_app(config, start_screen="image")
    async with app.run_test(size=SIZE) as pilot:
        s = screen(app)
        assert app.focused is s.query_one("#image-prompt")
        assert "not loaded" in screen_text(app)
        await generate(pilot, app, "a red fox in the snow")
        assert "ready on cpu in float32" in screen_text(app)
        [png] = pngs(app.settings.paths.outputs)
        params = read_parameters(png)
        assert params.prompt == "a red fox in the snow" and params.width == 64
        assert params.model == tiny_sd_folder.name
        assert f"seed {params.seed}" in screen_text(app)
        assert "✓ #1 done 1/1 a red fox in the snow" in screen_text(app)
    [indexed] = Store.open(app.settings.paths.database).images()
    assert indexed.path == png


async def test_bad_fields_are_named_and_nothing_runs(
    make_config: Callable[..., Path], tiny_sd_folder: Path
) -> None:
    app = make_app(image_config(make_config, tiny_sd_folder), start_screen="image")
    async with app.run_test(size=SIZE) as pilot:
        s = screen(app)
        s.action_generate()
        await pilot.pause()
        assert "the prompt is empty" in error_text(app)
        await type_text(pilot, "a house")
        s.query_one("#image-width", Input).value = "100"
        s.action_generate()
        await pilot.pause()
        assert "width 100 is not allowed: use a multiple of 8 from 64 to 2048" in error_text(app)
        s.query_one("#image-width", Input).value = "64"
        s.query_one("#image-guidance", Input).value = "abc"
        s.action_generate()
        await pilot.pause()
        assert "Guidance: 'abc' is not a number" in error_text(app)
        assert app.focused is s.query_one("#image-guidance")
        assert not s.generating
        assert s.query_one("#image-prompt", TextArea).text == "a house", "nothing typed is lost"
        assert pngs(app.settings.paths.outputs) == []


async def test_escape_cancels_within_a_step(
    make_config: Callable[..., Path], tiny_sd_folder: Path
) -> None:
    config = image_config(make_config, tiny_sd_folder, steps=150, width=128, height=128)
    app = make_app(config, start_screen="image")
    async with app.run_test(size=SIZE) as pilot:
        s = screen(app)
        await type_text(pilot, "slow one")
        s.action_generate()
        await wait_for(
            pilot,
            lambda: s.last_step is not None and s.last_step.step >= 2,
            timeout=60,
            what="a few steps",
        )
        await pilot.press("escape")
        await wait_for(pilot, lambda: not s.generating, timeout=30, what="stop")
        assert s.last_step is not None and s.last_step.step < 150
        assert "stopped; 0 images kept" in screen_text(app)
        outputs = app.settings.paths.outputs
        assert pngs(outputs) == [] and not list(outputs.glob(".tmp-*"))


async def in_gallery(pilot: object, app: object, *keys: str) -> None:
    """Open the gallery (Ctrl+B), wait for its first page, then press ``keys``."""
    from tui.screens.gallery import GalleryScreen
    from tui.widgets.gallery import ThumbnailGrid

    await pilot.press("ctrl+b")  # type: ignore[attr-defined]
    await wait_for(pilot, lambda: isinstance(app.screen, GalleryScreen), what="the gallery")  # type: ignore[arg-type, attr-defined]
    grid = app.screen.query_one(ThumbnailGrid)  # type: ignore[attr-defined]
    await wait_for(pilot, lambda: grid.current() is not None, what="its first page")  # type: ignore[arg-type]
    await pilot.press(*keys)  # type: ignore[attr-defined]
    await pilot.pause()  # type: ignore[attr-defined]


async def test_gallery_reuse_copy_view_delete(
    make_config: Callable[..., Path], tiny_sd_folder: Path
) -> None:
    app = make_app(image_config(make_config, tiny_sd_folder), start_screen="image")
    async with app.run_test(size=SIZE) as pilot:
        s = screen(app)
        s.query_one("#image-negative", TextArea).load_text("blurry")
        s.query_one("#image-seed", Input).value = "1234"
        await generate(pilot, app, "a blue boat")
        [png] = pngs(app.settings.paths.outputs)
        # reuse: the form comes back from the PNG's own metadata
        s.query_one("#image-prompt", TextArea).load_text("something else")
        s.query_one("#image-seed", Input).value = ""
        await in_gallery(pilot, app, "u")
        await wait_for(pilot, lambda: s.query_one("#image-prompt", TextArea).text == "a blue boat")
        assert app.screen is s
        assert s.query_one("#image-negative", TextArea).text == "blurry"
        assert s.query_one("#image-seed", Input).value == "1234"
        # copy the path
        await in_gallery(pilot, app, "c")
        assert app.clipboard == str(png)
        # view larger
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, ImageViewer))
        assert "Seed: 1234" in screen_text(app)
        await pilot.press("escape")
        await pilot.pause()
        # delete (to the trash), after confirming
        await pilot.press("d")
        await pilot.pause()
        assert f"Move {png} to the trash?" in str(
            app.screen.query_one(".dialog-title", Label).content
        )
        await pilot.press("y")
        await wait_for(pilot, lambda: not png.exists(), what="the file moved")
        assert (app.settings.paths.outputs / ".trash" / png.name).is_file()
    assert Store.open(app.settings.paths.database).images() == []


async def test_chat_works_while_an_image_generates(
    make_config: Callable[..., Path], tiny_sd_folder: Path, ollama_server: FakeOllama
) -> None:
    config = image_config(make_config, tiny_sd_folder, steps=150, width=128, height=128)
    app = make_app(config, start_screen="image")
    async with app.run_test(size=SIZE) as pilot:
        s = screen(app)
        await type_text(pilot, "a long one")
        s.action_generate()
        await wait_for(pilot, lambda: s.last_step is not None, timeout=60, what="first step")
        await pilot.press("f2")
        await wait_for(pilot, lambda: app.models, what="models")
        chat = app.screen
        assert isinstance(chat, ChatScreen)
        await type_text(pilot, "hello while drawing")
        await pilot.press("enter")
        await wait_for(
            pilot, lambda: not chat.streaming and shown_turns(chat, ReplyTurn), timeout=30
        )
        assert shown_turns(chat, ReplyTurn)[-1].content == ollama_server.reply
        assert s.generating, "the image is still being made"
        s.action_cancel()
        await wait_for(pilot, lambda: not s.generating, timeout=30)


async def test_missing_model_is_a_clear_error(
    make_config: Callable[..., Path], tmp_path: Path
) -> None:
    app = make_app(image_config(make_config, tmp_path / "no-such-model"), start_screen="image")
    async with app.run_test(size=SIZE) as pilot:
        await generate(pilot, app, "anything")
        assert "does not exist" in error_text(app) and "failed" in screen_text(app)
        assert screen(app).query_one("#image-prompt", TextArea).text == "anything"


def write_sample(folder: Path, seed: int, when: float) -> Path:
    """A deterministic PNG with parameters, as the engine writes them."""
    from datetime import datetime

    image = Image.new("RGB", (64, 64))
    image.putdata(
        [((x * 4) % 256, (y * 4) % 256, (seed * 40) % 256) for y in range(64) for x in range(64)]
    )
    params = ImageParameters(f"sample {seed}", "", 64, 64, 20, 7.5, seed, "Euler a", "tiny")
    return save_png(image, folder, params, datetime.fromtimestamp(when))


@pytest.mark.usefixtures("steady_cursor")
def test_image_screen_snapshot(
    snap_compare, make_config: Callable[..., Path], tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    config = make_config(diffusion={"model": "stable-diffusion-v1-5/stable-diffusion-v1-5"})
    from engines.config import load_settings

    settings = load_settings(config, env={})
    store = Store.open(settings.paths.database)
    for seed in (1, 2):
        path = write_sample(settings.paths.outputs, seed, 1_790_000_000 + seed * 60)
        store.add_image(path, read_parameters(path), 1.5)
    store.close()
    sql(store.path, "UPDATE images SET created_at = 1790000000 + seed * 60")

    async def settle(pilot):  # type: ignore[no-untyped-def]
        from tui.widgets.picture import Picture

        app = pilot.app
        await wait_for(pilot, lambda: isinstance(app.screen, ImageScreen), what="the screen")
        preview = app.screen.query_one("#preview", Picture)
        await wait_for(pilot, lambda: preview.image is not None, what="the newest image")
        await pilot.pause(0.3)

    assert snap_compare(
        make_app(config, start_screen="image"), terminal_size=SIZE, run_before=settle
    )


def test_image_screen_at_80x24_snapshot(snap_compare, make_config: Callable[..., Path]) -> None:  # type: ignore[no-untyped-def]
    """The form scrolls at 80x24: every field, the sampler and the queue stay reachable."""
    config = make_config(diffusion={"model": "stable-diffusion-v1-5/stable-diffusion-v1-5"})

    async def settle(pilot):  # type: ignore[no-untyped-def]
        await pilot.press("f8")  # the queue at the form's end scrolls into view
        await pilot.pause(0.3)

    assert snap_compare(
        make_app(config, start_screen="image"), terminal_size=(80, 24), run_before=settle
    )


# -- img2img, hires fix, LoRAs, imported settings, variations ----------------------------


def notices(app: object) -> list[str]:
    return [str(n.message) for n in app.notices]


async def test_the_new_fields_reach_the_request_and_a_bad_one_is_named(
    make_config: Callable[..., Path], tiny_sd_folder: Path, tmp_path: Path
) -> None:
    from textual.widgets import Select

    from tui.widgets.image_form import ImageForm

    start = tmp_path / "start.png"
    Image.new("RGB", (64, 64)).save(start)
    app = make_app(image_config(make_config, tiny_sd_folder), start_screen="image")
    async with app.run_test(size=SIZE) as pilot:
        s = screen(app)
        await type_text(pilot, "a house")
        for field, value in (("init", str(start)), ("strength", "0.4"), ("hires-steps", "")):
            s.query_one(f"#image-{field}", Input).value = value
        request = s.query_one(ImageForm).request()
        assert (request.init_image, request.strength, request.hires_scale) == (str(start), 0.4, 1.0)
        s.query_one("#image-init", Input).value = ""
        s.query_one("#image-hires", Input).value = "2"
        s.query_one("#image-hires-strength", Input).value = "0.45"
        s.query_one("#image-hires-steps", Input).value = "7"
        s.query_one("#image-upscaler", Select).value = "Lanczos"
        request = s.query_one(ImageForm).request()
        assert (request.hires_scale, request.hires_strength, request.hires_steps) == (2, 0.45, 7)
        assert request.hires_upscaler == "Lanczos" and request.init_image == ""
        s.query_one("#image-strength", Input).value = "lots"
        s.action_generate()
        await pilot.pause()
        assert "Strength: 'lots' is not a number; use 0.01 to 1" in error_text(app)
        assert app.focused is s.query_one("#image-strength")
        s.query_one("#image-strength", Input).value = "0.75"
        s.query_one("#image-hires", Input).value = "9"
        s.action_generate()
        await pilot.pause()
        assert "hires scale 9 is not allowed: use 1 (off) to 4" in error_text(app)
        assert not s.generating and pngs(app.settings.paths.outputs) == []


async def test_the_lora_picker_inserts_the_tag_at_the_cursor(
    make_config: Callable[..., Path], tiny_sd_folder: Path, tmp_path: Path
) -> None:
    from sd_fixtures import build_tiny_lora

    loras = tmp_path / "loras"
    build_tiny_lora(tiny_sd_folder, loras / "ink.safetensors")
    build_tiny_lora(tiny_sd_folder, loras / "zebra.safetensors", seed=2)
    config = make_config(
        diffusion={"model": str(tiny_sd_folder), "device": "cpu"}, paths={"loras": loras}
    )
    app = make_app(config, start_screen="image")
    async with app.run_test(size=SIZE) as pilot:
        s = screen(app)
        prompt = s.query_one("#image-prompt", TextArea)
        prompt.load_text("a fox, at night")
        prompt.move_cursor((0, 6))  # after "a fox,"
        await pilot.press("ctrl+r")
        await pilot.pause()
        assert "Insert a LoRA at the cursor" in screen_text(app)
        await pilot.press("down", "enter")
        await pilot.pause()
        assert prompt.text == "a fox,<lora:zebra:1.0> at night"
        assert app.focused is prompt


async def test_no_lora_folder_says_where_to_put_them(
    make_config: Callable[..., Path], tiny_sd_folder: Path
) -> None:
    app = make_app(image_config(make_config, tiny_sd_folder), start_screen="image")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: notices(app), what="the notice")
        (notice,) = notices(app)
        assert "No LoRAs in" in notice and "[paths] loras" in notice


async def test_import_settings_from_a_comfyui_png_and_a_png_without_any(
    make_config: Callable[..., Path], tiny_sd_folder: Path, tmp_path: Path
) -> None:
    import json

    from PIL.PngImagePlugin import PngInfo

    graph = {
        "3": {"class_type": "KSampler", "inputs": {
            "seed": 99, "steps": 12, "cfg": 5.5, "sampler_name": "dpmpp_2m",
            "scheduler": "karras", "denoise": 1, "positive": ["6", 0], "negative": ["7", 0],
            "latent_image": ["5", 0]}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 96, "height": 64}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a comfy castle"}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "fog"}},
    }  # fmt: skip
    info = PngInfo()
    info.add_text("prompt", json.dumps(graph))
    comfy, plain = tmp_path / "comfy.png", tmp_path / "plain.png"
    Image.new("RGB", (8, 8)).save(comfy, pnginfo=info)
    Image.new("RGB", (8, 8)).save(plain)
    app = make_app(image_config(make_config, tiny_sd_folder), start_screen="image")
    async with app.run_test(size=SIZE) as pilot:
        s = screen(app)
        await pilot.press("ctrl+o")
        await pilot.pause()
        app.screen.query_one("#text", Input).value = str(comfy)
        await pilot.press("enter")
        prompt = s.query_one("#image-prompt", TextArea)
        await wait_for(pilot, lambda: prompt.text == "a comfy castle", what="the import")
        assert s.query_one("#image-negative", TextArea).text == "fog"
        values = {f: s.query_one(f"#image-{f}", Input).value for f in ("width", "steps", "seed")}
        assert values == {"width": "96", "steps": "12", "seed": "99"}
        assert any("(ComfyUI)" in n for n in notices(app))
        await pilot.press("ctrl+o")
        await pilot.pause()
        app.screen.query_one("#text", Input).value = str(plain)
        await pilot.press("enter")
        await wait_for(
            pilot,
            lambda: any("plain.png holds no generation settings" in n for n in notices(app)),
            what="the refusal",
        )
        assert prompt.text == "a comfy castle"  # nothing lost


async def test_variations_and_start_from_in_the_gallery(
    make_config: Callable[..., Path], tiny_sd_folder: Path
) -> None:
    from tui.widgets.image_form import ImageForm

    app = make_app(image_config(make_config, tiny_sd_folder, steps=3), start_screen="image")
    async with app.run_test(size=SIZE) as pilot:
        s = screen(app)
        await generate(pilot, app, "a green hill")
        [first] = pngs(app.settings.paths.outputs)
        await in_gallery(pilot, app, "i")
        await wait_for(pilot, lambda: s.query_one("#image-init", Input).value == str(first))
        s.query_one("#image-init", Input).value = ""
        await in_gallery(pilot, app, "v")
        outputs = app.settings.paths.outputs
        await wait_for(
            pilot,
            lambda: len(pngs(outputs)) == 5 and not s.generating,
            timeout=60,
            what="four variations",
        )
        made = [p for p in pngs(app.settings.paths.outputs) if p != first]
        assert len(made) == 4
        params = [read_parameters(p) for p in made]
        assert {p.prompt for p in params} == {"a green hill"}
        assert {p.denoising_strength for p in params} == {0.35}
        assert len({p.seed for p in params}) == 4 and read_parameters(first).seed not in {
            p.seed for p in params
        }
        # Ctrl+T: start the next image from the newest one
        await pilot.press("ctrl+f", "ctrl+t")
        await pilot.pause()
        newest = max(made, key=lambda p: p.stat().st_mtime_ns)
        assert s.query_one(ImageForm).query_one("#image-init", Input).value in {
            str(p) for p in made
        }
        assert newest.exists()


async def test_every_new_binding_is_in_the_help_and_the_keymap(
    make_config: Callable[..., Path], tiny_sd_folder: Path
) -> None:
    from tui.keys import binding_ids

    ids = binding_ids()
    new = ("image.lora", "image.import", "image.from_last", "gallery.variations", "gallery.init")
    assert set(new) <= set(ids)
    app = make_app(image_config(make_config, tiny_sd_folder), start_screen="image")
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, ImageScreen), what="the Image screen")
        rows = [text for _, group in app.help_groups() for _, text in group]
        for binding_id in new:
            assert ids[binding_id].tooltip in rows, binding_id


async def test_after_a_generation_the_picture_is_the_new_image(
    make_config: Callable[..., Path], tiny_sd_folder: Path
) -> None:
    """The caption names the new file, and the picture is that file too (it used to fall
    back to the gallery item highlighted before the generation)."""
    import numpy as np
    from PIL import Image

    from tui.widgets.picture import Picture

    app = make_app(image_config(make_config, tiny_sd_folder), start_screen="image")
    async with app.run_test(size=SIZE) as pilot:
        await generate(pilot, app, "a red fox")
        await generate(pilot, app, "a blue whale")
        s = screen(app)
        newest = max(pngs(app.settings.paths.outputs), key=lambda p: p.stat().st_mtime_ns)
        assert newest.name in screen_text(app)
        with Image.open(newest) as png:
            expected = np.asarray(png.convert("RGB"), dtype=np.int16)
        preview = s.query_one("#preview", Picture)

        def the_new_image() -> bool:
            if preview.image is None:
                return False
            got = np.asarray(preview.image.convert("RGB"), dtype=np.int16)
            return got.shape == expected.shape and bool(np.abs(got - expected).max() == 0)

        await wait_for(pilot, the_new_image, what="the new image in the preview")
        got = np.asarray(preview.image.convert("RGB"), dtype=np.int16)  # type: ignore[union-attr]
        assert got.shape == expected.shape and np.abs(got - expected).max() == 0


async def test_the_image_screen_opens_on_the_newest_image(
    make_config: Callable[..., Path], tiny_sd_folder: Path
) -> None:
    """As AUTOMATIC1111 shows its last output: the preview holds the newest indexed image
    (not the older one), named under it, with no model loaded."""
    from tui.widgets.picture import Picture

    config = image_config(make_config, tiny_sd_folder)
    app = make_app(config, start_screen="image")
    outputs = app.settings.paths.outputs
    outputs.mkdir(parents=True, exist_ok=True)
    for name, colour, when in (("old.png", (200, 20, 20), 1.0), ("new.png", (20, 20, 200), 2.0)):
        Image.new("RGB", (32, 32), colour).save(outputs / name)
        params = ImageParameters(name, "", 32, 32, 20, 7.5, 7, "Euler a", "tiny")
        app.store.add_image(outputs / name, params, 1.0)
        sql(
            app.settings.paths.database,
            "UPDATE images SET created_at = ? WHERE path = ?",
            (when, str(outputs / name)),
        )
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, ImageScreen), what="the Image screen")
        preview = app.screen.query_one("#preview", Picture)
        await wait_for(pilot, lambda: preview.image is not None, what="a picture in the preview")
        assert preview.image is not None and preview.image.getpixel((0, 0)) == (20, 20, 200)
        assert "new.png · seed 7 · the newest image" in screen_text(app)
        assert app.diffusion.status.state == "not loaded"
