"""The tiny Stable Diffusion fixtures (``tests/sd_fixtures.py``) are what they claim to be.

They load offline through diffusers' public entry points, generate images of the sizes the
module documents, and the LDM single file holds exactly the folder's weights. Timings are
printed (run with ``-s`` to see them), never asserted.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    import numpy as np
    from sd_fixtures import (
        LDM_TEXT_PREFIX,
        LDM_UNET_PREFIX,
        LDM_VAE_PREFIX,
        MAX_PROMPT_TOKENS,
        TEXT_VOCAB_SIZE,
        TINY_IMAGE_SIZE,
        TINY_SIZE_MULTIPLE,
        TINY_VAE_SCALE_FACTOR,
        WEIGHTED_COMPONENTS,
        TinySingleFile,
        build_single_file_config,
        build_tiny_pipeline_folder,
        build_tiny_single_file,
        torch_threads,
    )
else:
    try:  # tests/ is on sys.path (pytest's rootdir-relative import), as for conftest
        from sd_fixtures import (
            LDM_TEXT_PREFIX,
            LDM_UNET_PREFIX,
            LDM_VAE_PREFIX,
            MAX_PROMPT_TOKENS,
            TEXT_VOCAB_SIZE,
            TINY_IMAGE_SIZE,
            TINY_SIZE_MULTIPLE,
            TINY_VAE_SCALE_FACTOR,
            WEIGHTED_COMPONENTS,
            TinySingleFile,
            build_single_file_config,
            build_tiny_pipeline_folder,
            build_tiny_single_file,
            torch_threads,
        )
    except ImportError:
        from tests.sd_fixtures import (
            LDM_TEXT_PREFIX,
            LDM_UNET_PREFIX,
            LDM_VAE_PREFIX,
            MAX_PROMPT_TOKENS,
            TEXT_VOCAB_SIZE,
            TINY_IMAGE_SIZE,
            TINY_SIZE_MULTIPLE,
            TINY_VAE_SCALE_FACTOR,
            WEIGHTED_COMPONENTS,
            TinySingleFile,
            build_single_file_config,
            build_tiny_pipeline_folder,
            build_tiny_single_file,
            torch_threads,
        )

# diffusers' lazy module hides its classes' methods from mypy: pipelines are typed as Any here
# (as in engines/diffusion.py), each one a StableDiffusionPipeline.
Pipeline = Any

PROMPT = "a photo of an astronaut riding a horse on mars"
STEPS = 4


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Iterator[None]:
    """Steady timings on a busy two-core machine (see ``sd_fixtures.torch_threads``)."""
    with torch_threads(1):
        yield


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Any attempt to open a connection fails the test (loading must be purely local)."""

    def refuse(self: socket.socket, address: Any) -> None:
        raise AssertionError(f"network access to {address!r} while loading offline")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    yield


def load_folder(folder: Path) -> Pipeline:
    from diffusers import AutoPipelineForText2Image

    pipe: Pipeline = AutoPipelineForText2Image.from_pretrained(  # type: ignore[no-untyped-call]
        folder, local_files_only=True
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def load_single_file(single: TinySingleFile) -> Pipeline:
    from diffusers import StableDiffusionPipeline

    pipe: Pipeline = StableDiffusionPipeline.from_single_file(
        str(single.checkpoint), config=str(single.config), local_files_only=True
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def generate(pipe: Pipeline, **kwargs: Any) -> np.ndarray[Any, Any]:
    """The pipeline's image for :data:`PROMPT`, seed 0, as a float array (1, H, W, 3)."""
    import torch

    options: dict[str, Any] = {"num_inference_steps": STEPS, "output_type": "np", **kwargs}
    images: np.ndarray[Any, Any] = pipe(
        PROMPT, generator=torch.Generator("cpu").manual_seed(0), **options
    ).images
    return images


def test_folder_has_sd_layout(tiny_sd_folder: Path) -> None:
    index = json.loads((tiny_sd_folder / "model_index.json").read_text(encoding="utf-8"))
    assert index["_class_name"] == "StableDiffusionPipeline"
    assert index["unet"] == ["diffusers", "UNet2DConditionModel"]
    assert index["vae"] == ["diffusers", "AutoencoderKL"]
    assert index["text_encoder"] == ["transformers", "CLIPTextModel"]
    assert index["tokenizer"] == ["transformers", "CLIPTokenizer"]
    assert index["scheduler"] == ["diffusers", "PNDMScheduler"]
    assert index["safety_checker"] == [None, None]
    assert index["requires_safety_checker"] is False
    for component in WEIGHTED_COMPONENTS:
        assert list((tiny_sd_folder / component).glob("*.safetensors")), component
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json"):
        assert (tiny_sd_folder / "tokenizer" / name).is_file(), name


def test_tokenizer_takes_any_text(tiny_sd_folder: Path) -> None:
    from transformers import CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(tiny_sd_folder / "tokenizer", local_files_only=True)
    assert tokenizer.model_max_length == MAX_PROMPT_TOKENS
    for text in ("", PROMPT, "Ça va? 日本語 🚀 <b>x</b> 3.14 'quoted'", "word " * 200):
        ids = tokenizer(text, padding="max_length", truncation=True).input_ids
        assert len(ids) == MAX_PROMPT_TOKENS
        assert ids[0] == tokenizer.bos_token_id
        assert tokenizer.eos_token_id in ids
        assert all(0 <= i < TEXT_VOCAB_SIZE for i in ids)
        assert tokenizer.unk_token_id not in ids[1 : ids.index(tokenizer.eos_token_id)]
    assert tokenizer.tokenize("a photo of a cat") == [
        "a</w>",
        "photo</w>",
        "of</w>",
        "a</w>",
        "cat</w>",
    ]


@pytest.mark.usefixtures("no_network")
def test_folder_loads_offline_and_makes_a_64px_image(tiny_sd_folder: Path) -> None:
    from diffusers import StableDiffusionPipeline

    started = time.perf_counter()
    pipe = load_folder(tiny_sd_folder)
    loaded = time.perf_counter()
    image = pipe(PROMPT, num_inference_steps=STEPS).images[0]
    done = time.perf_counter()

    assert pipe.vae_scale_factor == TINY_VAE_SCALE_FACTOR
    assert type(pipe) is StableDiffusionPipeline  # (after: mypy narrows pipe to a broken type)
    assert image.size == (TINY_IMAGE_SIZE, TINY_IMAGE_SIZE)
    assert image.mode == "RGB"
    print(
        f"\ntiny SD folder: load {loaded - started:.3f} s, "
        f"{STEPS}-step {TINY_IMAGE_SIZE}px image {done - loaded:.3f} s"
    )


@pytest.mark.parametrize("side", [TINY_SIZE_MULTIPLE, 3 * TINY_SIZE_MULTIPLE])
def test_any_multiple_of_8_works(tiny_sd_folder: Path, side: int) -> None:
    pipe = load_folder(tiny_sd_folder)
    image = pipe(PROMPT, height=side, width=2 * side, num_inference_steps=1).images[0]
    assert image.size == (2 * side, side)


def test_other_sizes_are_refused(tiny_sd_folder: Path) -> None:
    pipe = load_folder(tiny_sd_folder)
    with pytest.raises(ValueError, match="divisible by 8"):
        pipe(PROMPT, height=TINY_IMAGE_SIZE - 4, width=TINY_IMAGE_SIZE, num_inference_steps=1)


def test_single_file_has_the_ldm_layout(
    tiny_sd_folder: Path, tiny_sd_single_file: TinySingleFile
) -> None:
    from safetensors import safe_open

    with safe_open(str(tiny_sd_single_file.checkpoint), "pt") as handle:
        shapes = {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}  # noqa: SIM118 - safe_open has no __iter__
    folder_tensors = 0
    for component in WEIGHTED_COMPONENTS:
        for weights in (tiny_sd_folder / component).glob("*.safetensors"):
            with safe_open(str(weights), "pt") as handle:
                folder_tensors += len(list(handle.keys()))
    assert len(shapes) == folder_tensors
    assert all(key.startswith((LDM_UNET_PREFIX, LDM_VAE_PREFIX, LDM_TEXT_PREFIX)) for key in shapes)
    # The keys that took care: an upsampler after a transformer (".2.conv"), the decoder's
    # reversed levels, the VAE attention as 1x1 convs, CLIP's nested names.
    assert f"{LDM_UNET_PREFIX}output_blocks.2.2.conv.weight" in shapes
    assert f"{LDM_UNET_PREFIX}middle_block.1.transformer_blocks.0.attn2.to_k.weight" in shapes
    assert f"{LDM_VAE_PREFIX}decoder.up.1.upsample.conv.weight" in shapes
    assert f"{LDM_VAE_PREFIX}decoder.up.0.block.2.conv2.weight" in shapes
    assert shapes[f"{LDM_VAE_PREFIX}encoder.mid.attn_1.q.weight"] == (64, 64, 1, 1)
    assert f"{LDM_TEXT_PREFIX}embeddings.position_embedding.weight" in shapes
    assert f"{LDM_TEXT_PREFIX}final_layer_norm.weight" in shapes


@pytest.mark.usefixtures("no_network")
def test_single_file_loads_bit_exact(
    tiny_sd_folder: Path, tiny_sd_single_file: TinySingleFile
) -> None:
    import torch

    from_folder = load_folder(tiny_sd_folder)
    started = time.perf_counter()
    from_single = load_single_file(tiny_sd_single_file)
    print(f"\ntiny SD single file: load {time.perf_counter() - started:.3f} s")

    for component in WEIGHTED_COMPONENTS:
        expected = getattr(from_folder, component).state_dict()
        actual = getattr(from_single, component).state_dict()
        assert actual.keys() == expected.keys(), component
        unequal = [key for key in expected if not torch.equal(actual[key], expected[key])]
        assert not unequal, f"{component}: {unequal[:5]}"
    assert dict(from_single.scheduler.config) == dict(from_folder.scheduler.config)

    assert (generate(from_single) == generate(from_folder)).all()


def test_builds_are_deterministic_and_timed(
    tmp_path: Path, tiny_sd_single_file: TinySingleFile
) -> None:
    import torch

    rng_before = torch.get_rng_state()
    started = time.perf_counter()
    folder = build_tiny_pipeline_folder(tmp_path / "again")
    built_folder = time.perf_counter()
    checkpoint = build_tiny_single_file(folder, tmp_path / "again.safetensors")
    build_single_file_config(folder, tmp_path / "config")
    built_single = time.perf_counter()

    assert torch.equal(torch.get_rng_state(), rng_before), "the build moved the global torch RNG"
    assert checkpoint.read_bytes() == tiny_sd_single_file.checkpoint.read_bytes()
    print(
        f"\ntiny SD builds: folder {built_folder - started:.3f} s, "
        f"single file + config {built_single - built_folder:.3f} s"
    )
