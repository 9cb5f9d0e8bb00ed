"""Images on disk (``engines/images.py``) and their index in the store: the ``parameters``
text chunk other tools read, safe file names, atomic writes. No torch here."""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from PIL import Image

from engines.images import (
    PARAMETERS_KEY,
    ImageParameters,
    image_filename,
    png_bytes,
    read_parameters,
    read_settings,
    save_png,
    unique_path,
)
from engines.store import Store

WHEN = datetime(2025, 3, 4, 5, 6, 7)
PARAMS = ImageParameters(
    prompt="a red fox in the snow, golden hour",
    negative_prompt="blurry, lowres",
    width=512,
    height=768,
    steps=20,
    guidance=7.5,
    seed=12345,
    scheduler="DPM++ 2M Karras",
    model="v1-5-pruned-emaonly",
)
A1111 = (
    "a cat\n"
    "Negative prompt: blurry\n"
    "Steps: 20, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 12345, Size: 512x768, "
    "Model hash: abc123, Model: v1-5-pruned-emaonly, Version: v1.6.0"
)


def with_(**changes: object) -> ImageParameters:
    from dataclasses import replace

    return replace(PARAMS, **changes)  # type: ignore[arg-type]


# -- the parameters text ---------------------------------------------------------------


def test_to_text_is_the_de_facto_format() -> None:
    assert PARAMS.to_text() == (
        "a red fox in the snow, golden hour\n"
        "Negative prompt: blurry, lowres\n"
        "Steps: 20, Sampler: DPM++ 2M Karras, CFG scale: 7.5, Seed: 12345, Size: 512x768, "
        "Model: v1-5-pruned-emaonly"
    )


def test_no_negative_prompt_means_no_negative_line() -> None:
    text = with_(negative_prompt="").to_text()
    assert "Negative prompt" not in text
    assert ImageParameters.from_text(text) == with_(negative_prompt="")


@pytest.mark.parametrize(
    "params",
    [
        PARAMS,
        with_(prompt="line one\nline two\n\nline four", negative_prompt="bad\nworse"),
        with_(prompt="a cat\n", negative_prompt=""),  # a piped prompt's newline
        with_(model="my, model"),
        with_(model="sd: the remix"),
        with_(model='the "best" one'),
        with_(model='c:\\models\\a, "b"'),
        with_(model=""),
        with_(prompt="", negative_prompt="only a negative"),
        with_(prompt="emoji 🦊 ünïcödé, שלום", negative_prompt="🙈"),
        with_(guidance=0.0, seed=0, width=64, height=64, steps=1),
        with_(guidance=30.0, seed=2**32 - 1, steps=150, scheduler="Euler a"),
    ],
    ids=lambda p: repr(p.prompt[:12] + "|" + p.model),
)
def test_text_round_trip(params: ImageParameters) -> None:
    assert ImageParameters.from_text(params.to_text()) == params


def test_reads_automatic1111_parameters() -> None:
    assert ImageParameters.from_text(A1111) == ImageParameters(
        prompt="a cat",
        negative_prompt="blurry",
        width=512,
        height=768,
        steps=20,
        guidance=7.0,
        seed=12345,
        scheduler="DPM++ 2M Karras",
        model="v1-5-pruned-emaonly",
    )


def test_reads_automatic1111_quoted_values_and_multiline_prompts() -> None:
    text = (
        "masterpiece,\nbest quality\nNegative prompt: ugly,\nbad hands\n"
        "Steps: 30, Sampler: Euler a, CFG scale: 6.5, Seed: 1, Size: 640x512, "
        'Lora hashes: "add_detail: 7c6bad76eb54, more: 0123", Model: anything-v5'
    )
    p = ImageParameters.from_text(text)
    assert (p.prompt, p.negative_prompt) == ("masterpiece,\nbest quality", "ugly,\nbad hands")
    assert (p.steps, p.scheduler, p.guidance, p.width, p.height) == (30, "Euler a", 6.5, 640, 512)
    assert p.model == "anything-v5"
    assert p.lora_hashes == "add_detail: 7c6bad76eb54, more: 0123"


def test_hires_img2img_and_network_fields_as_automatic1111_writes_them() -> None:
    params = with_(
        denoising_strength=0.45,
        hires_upscale=2.0,
        hires_steps=12,
        hires_upscaler="Latent",
        lora_hashes="ink: 0123456789ab, film grain: ba9876543210",
        ti_hashes="sty: c74b4e810b03",
    )
    text = params.to_text()
    assert text.endswith(
        "Model: v1-5-pruned-emaonly, Denoising strength: 0.45, Hires upscale: 2, "
        'Hires steps: 12, Hires upscaler: Latent, Lora hashes: "ink: 0123456789ab, '
        'film grain: ba9876543210", TI hashes: "sty: c74b4e810b03"'
    )
    assert ImageParameters.from_text(text) == params


def test_the_newer_automatic1111_schedule_type_joins_the_sampler() -> None:
    text = "a cat\nSteps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 1"
    assert ImageParameters.from_text(text).scheduler == "DPM++ 2M Karras"


def _png(path: Path, **chunks: str) -> Path:
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    for key, value in chunks.items():
        info.add_text(key, value)
    Image.new("RGB", (8, 8)).save(path, pnginfo=info)
    return path


COMFY_PROMPT = {
    "3": {
        "class_type": "KSampler",
        "inputs": {
            "seed": 156680208700286, "steps": 25, "cfg": 6.5, "sampler_name": "dpmpp_2m",
            "scheduler": "karras", "denoise": 1, "model": ["10", 0], "positive": ["6", 0],
            "negative": ["7", 0], "latent_image": ["5", 0],
        },
    },
    "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd_xl_base_1.0.safetensors"}},
    "10": {"class_type": "LoraLoader", "inputs": {"model": ["4", 0], "lora_name": "ink.safetensors"}},
    "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 832, "height": 1216, "batch_size": 1}},
    "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red fox", "clip": ["4", 1]}},
    "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["4", 1]}},
}  # fmt: skip


def test_settings_from_a_comfyui_png(tmp_path: Path) -> None:
    import json

    path = _png(tmp_path / "comfy.png", prompt=json.dumps(COMFY_PROMPT), workflow="{}")
    params, source = read_settings(path)
    assert source == "ComfyUI"
    assert (params.prompt, params.negative_prompt) == ("a red fox", "blurry")
    assert (params.width, params.height, params.steps, params.guidance) == (832, 1216, 25, 6.5)
    assert (params.seed, params.scheduler) == (156680208700286, "DPM++ 2M Karras")
    assert params.model == "sd_xl_base_1.0"


def test_settings_from_a_comfyui_workflow_alone(tmp_path: Path) -> None:
    import json

    workflow = {
        "nodes": [
            {"id": 3, "type": "KSampler", "widgets_values": [42, "fixed", 30, 8, "euler_ancestral", "normal", 1],
             "inputs": [{"name": "positive", "link": 1}, {"name": "negative", "link": 2},
                        {"name": "latent_image", "link": 3}]},
            {"id": 6, "type": "CLIPTextEncode", "widgets_values": ["a castle"]},
            {"id": 7, "type": "CLIPTextEncode", "widgets_values": ["fog"]},
            {"id": 5, "type": "EmptyLatentImage", "widgets_values": [640, 448, 1]},
        ],
        "links": [[1, 6, 0, 3, 1, "CONDITIONING"], [2, 7, 0, 3, 2, "CONDITIONING"],
                  [3, 5, 0, 3, 3, "LATENT"]],
    }  # fmt: skip
    params, _ = read_settings(_png(tmp_path / "wf.png", workflow=json.dumps(workflow)))
    assert (params.prompt, params.negative_prompt, params.seed) == ("a castle", "fog", 42)
    assert (params.width, params.height, params.steps, params.scheduler) == (
        640,
        448,
        30,
        "Euler a",
    )


def test_settings_from_this_apps_png_and_a_png_without_any(tmp_path: Path) -> None:
    path = save_png(Image.new("RGB", (8, 8)), tmp_path, PARAMS, WHEN)
    assert read_settings(path) == (PARAMS, "AUTOMATIC1111-style")
    with pytest.raises(ValueError, match=r"plain\.png holds no generation settings"):
        read_settings(_png(tmp_path / "plain.png", Comment="hello"))


@pytest.mark.parametrize("text", ["", "\n\n", "just a prompt", "a cat\nSampler: Euler"])
def test_text_without_steps_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        ImageParameters.from_text(text)


prompt_text = st.text(
    alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"),
    max_size=200,
).filter(
    lambda s: (
        not s.startswith("\n")
        and not any(line.startswith("Negative prompt:") for line in s.split("\n"))
    )
)


@settings(max_examples=150, deadline=None)
@given(
    prompt=prompt_text,
    negative=prompt_text,
    model=st.text(
        alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00\n"),
        max_size=60,
    ),
    seed=st.integers(0, 2**32 - 1),
    guidance=st.sampled_from([0.0, 1.0, 4.5, 7.0, 7.5, 12.25, 30.0]),
)
@example(prompt="a\n\nb", negative="", model="  x  ", seed=0, guidance=7.0)
@example(prompt="x", negative="Negative prompt: twice", model='\\"', seed=1, guidance=7.5)
@example(prompt="", negative="\r", model="", seed=0, guidance=0.0)
@example(prompt="p", negative="  two spaces", model="m", seed=0, guidance=0.0)
def test_text_round_trip_for_arbitrary_text(
    prompt: str, negative: str, model: str, seed: int, guidance: float
) -> None:
    params = with_(
        prompt=prompt, negative_prompt=negative, model=model, seed=seed, guidance=guidance
    )
    assert ImageParameters.from_text(params.to_text()) == params


# -- the PNG's text chunk --------------------------------------------------------------


def tiny_image() -> Image.Image:
    return Image.new("RGB", (8, 8), (200, 40, 10))


def test_png_carries_the_parameters_chunk(tmp_path: Path) -> None:
    params = with_(prompt="émoji 🦊\nsecond line", model='my, "model"')
    path = tmp_path / "a.png"
    path.write_bytes(png_bytes(tiny_image(), params))
    assert read_parameters(path) == params
    with Image.open(io.BytesIO(path.read_bytes())) as im:
        assert im.size == (8, 8)
        assert isinstance(im.info[PARAMETERS_KEY], str)


def test_a_png_without_parameters_is_a_value_error(tmp_path: Path) -> None:
    path = tmp_path / "plain.png"
    tiny_image().save(path)
    with pytest.raises(ValueError, match=r"plain\.png has no 'parameters'"):
        read_parameters(path)


def test_save_png_writes_atomically_with_a_safe_name(tmp_path: Path) -> None:
    folder = tmp_path / "new" / "outputs"
    first = save_png(tiny_image(), folder, PARAMS, WHEN)
    second = save_png(tiny_image(), folder, PARAMS, WHEN)
    assert first.name == "20250304-050607-12345-a-red-fox-in-the-snow-golden-hour.png"
    assert second.name == "20250304-050607-12345-a-red-fox-in-the-snow-golden-hour-2.png"
    assert sorted(p.name for p in folder.iterdir()) == sorted([first.name, second.name])
    assert read_parameters(second) == PARAMS


# -- file names ------------------------------------------------------------------------

HOSTILE = [
    "../../etc/passwd",
    "/abs/path",
    "a\x00b",
    "🦊🔥🦊",
    "x" * 500,
    "..",
    ".",
    "",
    "C:\\Windows\\system32",
    "con",
    "-rf --no-preserve-root",
    "name\nwith\nnewlines",
]


def assert_safe_name(name: str) -> None:
    assert "/" not in name and "\\" not in name and "\x00" not in name
    assert ".." not in name
    assert not Path(name).is_absolute() and Path(name).name == name
    assert name.endswith(".png") and not name.startswith(("-", "."))
    assert name.isascii() and name.isprintable()
    assert len(name) <= 100


@pytest.mark.parametrize("prompt", HOSTILE)
def test_image_filename_of_hostile_prompts(prompt: str) -> None:
    name = image_filename(WHEN, 7, prompt)
    assert_safe_name(name)
    assert name.startswith("20250304-050607-7-")


@settings(max_examples=300, deadline=None)
@given(prompt=st.text(max_size=600), seed=st.integers(0, 2**32 - 1))
def test_image_filename_is_never_a_path(prompt: str, seed: int) -> None:
    name = image_filename(WHEN, seed, prompt)
    assert_safe_name(name)
    assert name.startswith(f"20250304-050607-{seed}-")


def test_the_name_pattern() -> None:
    assert image_filename(WHEN, 42, "A Red Fox, in the Snow!") == (
        "20250304-050607-42-a-red-fox-in-the-snow.png"
    )


def test_unique_path_counts_up_when_taken(tmp_path: Path) -> None:
    name = "20250304-050607-1-cat.png"
    assert unique_path(tmp_path, name) == tmp_path / name
    (tmp_path / name).touch()
    assert unique_path(tmp_path, name) == tmp_path / "20250304-050607-1-cat-2.png"
    (tmp_path / "20250304-050607-1-cat-2.png").touch()
    assert unique_path(tmp_path, name) == tmp_path / "20250304-050607-1-cat-3.png"


@pytest.mark.parametrize("name", ["../escape.png", "/abs/escape.png", "a/b/escape.png"])
def test_unique_path_stays_inside_the_folder(tmp_path: Path, name: str) -> None:
    path = unique_path(tmp_path / "out", name)
    assert path == tmp_path / "out" / "escape.png"


# -- the gallery index -----------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store.open(tmp_path / "data" / "gallery.db")
    try:
        yield s
    finally:
        s.close()


def test_store_add_images_forget_round_trip(store: Store, tmp_path: Path) -> None:
    odd = with_(prompt="multi\nline 🦊", negative_prompt="", model='a, "b"', seed=2**32 - 1)
    first = store.add_image(tmp_path / "one.png", PARAMS, 1.5)
    second = store.add_image(tmp_path / "two.png", odd, 0.25)
    assert first != second and first > 0 and second > 0
    images = store.images()
    assert [i.id for i in images] == [second, first]  # the most recent first
    assert [i.path for i in images] == [tmp_path / "two.png", tmp_path / "one.png"]
    assert [i.parameters for i in images] == [odd, PARAMS]
    assert [i.seconds for i in images] == [0.25, 1.5]
    assert store.images(limit=1)[0].id == second

    store.forget_image(second)
    assert [i.id for i in store.images()] == [first]
    store.forget_image(second)  # forgetting twice is harmless
    store.forget_image(first)
    assert store.images() == []


def test_store_keeps_images_across_reopen(tmp_path: Path) -> None:
    db = tmp_path / "data" / "gallery.db"
    s = Store.open(db)
    s.add_image(tmp_path / "a.png", PARAMS, 2.0)
    s.add_image(tmp_path / "a.png", with_(seed=9), 3.0)  # the same file indexed again
    s.close()
    s = Store.open(db)
    try:
        (only,) = s.images()
        assert only.parameters.seed == 9 and only.seconds == 3.0
    finally:
        s.close()
