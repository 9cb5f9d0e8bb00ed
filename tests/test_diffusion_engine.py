"""The diffusion engine (``engines/diffusion.py``) on the tiny random-weight pipelines.

The engine loads them through its real loading path (``DiffusionEngine.load`` with settings
that point at the folder or the single file), on the CPU, in float32. Images are 64x64 with
a few steps. The only fakes are inside the third-party model (a forward hook on the UNet);
the engine's own logic always runs as it would for a user.
"""

from __future__ import annotations

import gc
import json
import re
import shutil
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
from PIL import Image

from engines.config import DiffusionSettings
from engines.diffusion import (
    MAX_COUNT,
    MAX_GUIDANCE,
    MAX_STEPS,
    SCHEDULERS,
    DiffusionEngine,
    DiffusionError,
    EngineStatus,
    GeneratedImage,
    GenerationRequest,
    RequestError,
    SizeLimits,
    StepInfo,
    latents_to_rgb,
    validate,
)
from engines.images import ImageParameters, read_parameters

if TYPE_CHECKING:
    from sd_fixtures import TinySingleFile

# Its module fixtures load pipelines: under pytest-xdist (``--dist loadgroup``) the module runs
# on one worker, so each is loaded once.
pytestmark = pytest.mark.xdist_group("diffusion_engine")

REPO = Path(__file__).resolve().parent.parent
PROMPT = "a red fox in the snow"
NAME = re.compile(r"^(\d{8})-(\d{6})-(\d+)-([a-z0-9-]+)\.png$")


def request(**changes: Any) -> GenerationRequest:
    """A small, fast request: 64x64, 3 steps, a fixed seed."""
    base = GenerationRequest(
        PROMPT, width=64, height=64, steps=3, guidance=7.5, seed=42, scheduler="Euler"
    )
    return replace(base, **changes)


def make_engine(model: Path | str, outputs: Path, **settings: Any) -> DiffusionEngine:
    return DiffusionEngine(DiffusionSettings(model=str(model), device="cpu", **settings), outputs)


def pixels(path: Path) -> np.ndarray[Any, Any]:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def files(folder: Path) -> list[str]:
    """Every entry in ``folder`` (hidden ones included), or [] when there is no folder."""
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


class Loaded:
    """The module's engine, loaded once from the tiny folder, and what its loading showed."""

    def __init__(self, engine: DiffusionEngine, before: EngineStatus, seen: list[EngineStatus]):
        self.engine = engine
        self.before = before
        self.seen = seen


@pytest.fixture(scope="module")
def loaded(tiny_sd_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Loaded:
    engine = make_engine(tiny_sd_folder, tmp_path_factory.mktemp("outputs"))
    before = engine.status
    seen: list[EngineStatus] = []
    engine.load(on_progress=seen.append)
    return Loaded(engine, before, seen)


@pytest.fixture
def engine(loaded: Loaded, tmp_path: Path) -> Iterator[DiffusionEngine]:
    """The module's loaded engine, writing into this test's ``tmp_path / "outputs"``."""
    e = loaded.engine
    e.outputs = tmp_path / "outputs"
    e.on_image = None
    yield e
    e.on_image = None
    assert e.loaded, "a test left the shared engine unloaded"


# -- loading ---------------------------------------------------------------------------


def test_loading_goes_from_not_loaded_through_loading_to_ready(loaded: Loaded) -> None:
    assert loaded.before.state == "not loaded" and loaded.before.describe() == "not loaded"
    states = [s.state for s in loaded.seen]
    assert states[0] == "loading" and states[-1] == "ready"
    assert set(states[:-1]) == {"loading"}, states
    progress = [s.progress for s in loaded.seen]
    assert progress == sorted(progress) and len(set(progress)) == len(progress), progress
    assert 0 < progress[0] < progress[-2] < 1 == progress[-1]
    assert all(s.detail for s in loaded.seen[:-1])  # each phase says what it does
    assert "loading (" in loaded.seen[0].describe()
    status = loaded.engine.status
    assert (status.state, status.device, status.dtype) == ("ready", "cpu", "float32")
    assert status.describe() == "SD 1.x ready on cpu in float32"
    assert status.architecture == "SD 1.x"
    assert loaded.engine.loaded


def test_loading_twice_is_a_no_op(engine: DiffusionEngine) -> None:
    pipe = engine._pipe
    seen: list[EngineStatus] = []
    status = engine.load(on_progress=seen.append)
    assert engine._pipe is pipe and status.state == "ready" and seen == []
    assert engine.load(engine.model) is status


def test_single_file_makes_the_same_pixels_as_the_folder(
    engine: DiffusionEngine, tiny_sd_single_file: TinySingleFile, tmp_path: Path
) -> None:
    single = make_engine(
        tiny_sd_single_file.checkpoint,
        tmp_path / "single",
        single_file_config=str(tiny_sd_single_file.config),
    )
    try:
        assert single.load().describe() == "SD 1.x ready on cpu in float32"
        (a,) = engine.generate(request(seed=7)).images
        (b,) = single.generate(request(seed=7)).images
        assert np.array_equal(pixels(a.path), pixels(b.path))
        assert b.parameters.model == tiny_sd_single_file.checkpoint.stem  # no folder, no suffix
        assert b.path.parent == tmp_path / "single"
    finally:
        single.unload()


class Tiny:
    """A tiny pipeline of one architecture: its folder, its single file and config folder."""

    def __init__(self, folder: Path, checkpoint: Path, config: Path) -> None:
        self.folder, self.checkpoint, self.config = folder, checkpoint, config


def _tiny(kind: str, root: Path) -> Tiny:
    from sd_fixtures import build_config_folder, build_original_single_file, build_tiny_folder

    folder = build_tiny_folder(root / kind, kind)
    return Tiny(
        folder,
        build_original_single_file(folder, root / f"tiny-{kind}.safetensors"),
        build_config_folder(folder, root / f"{kind}-config"),
    )


@pytest.fixture(scope="module")
def tiny_sdxl(tmp_path_factory: pytest.TempPathFactory) -> Tiny:
    return _tiny("sdxl", tmp_path_factory.mktemp("tiny-sdxl"))


@pytest.fixture(scope="module")
def tiny_sd2(tmp_path_factory: pytest.TempPathFactory) -> Tiny:
    return _tiny("sd2", tmp_path_factory.mktemp("tiny-sd2"))


def test_the_sd15_single_file_is_found_to_be_sd15(
    tiny_sd_single_file: TinySingleFile, tmp_path: Path
) -> None:
    from engines.diffusion import detect_single_file

    assert detect_single_file(tiny_sd_single_file.checkpoint) == "v1"


@pytest.mark.parametrize(
    ("kind", "architecture", "pipeline", "prediction"),
    [
        ("sdxl", "SDXL", "StableDiffusionXLPipeline", "epsilon"),
        ("sd2", "SD 2.x", "StableDiffusionPipeline", "v_prediction"),
    ],
)
def test_a_single_file_of_each_architecture_loads_offline_as_its_folder_does(
    request_fixture: pytest.FixtureRequest,
    tmp_path: Path,
    kind: str,
    architecture: str,
    pipeline: str,
    prediction: str,
) -> None:
    tiny: Tiny = request_fixture.getfixturevalue(f"tiny_{kind}")
    single = make_engine(tiny.checkpoint, tmp_path / "single", single_file_config=str(tiny.config))
    folder = make_engine(tiny.folder, tmp_path / "folder")
    try:
        status = single.load()
        assert status.architecture == architecture
        assert status.describe() == f"{architecture} ready on cpu in float32"
        assert type(single._pipe).__name__ == pipeline
        assert single._pipe.scheduler.config.prediction_type == prediction
        assert folder.load().architecture == architecture  # a folder says it too
        (a,) = single.generate(request(steps=2)).images
        (b,) = folder.generate(request(steps=2)).images
        # every weight reached its place: the same pixels as the diffusers folder
        assert np.array_equal(pixels(a.path), pixels(b.path))
    finally:
        single.unload()
        folder.unload()


@pytest.fixture
def request_fixture(request: pytest.FixtureRequest) -> pytest.FixtureRequest:
    return request


def test_the_decode_is_sdxls_own_with_its_latent_statistics(
    tiny_sdxl: Tiny, tmp_path: Path
) -> None:
    """The tiny SDXL's VAE has latents_mean/latents_std: the engine's image (decoded only
    when not cancelled) equals the pipeline's own decode of the same run."""
    import torch

    e = make_engine(tiny_sdxl.folder, tmp_path / "outputs")
    try:
        e.load()
        (image,) = e.generate(request(steps=2, seed=5, negative_prompt="blurry")).images
        own = e._pipe(
            prompt=PROMPT,
            negative_prompt="blurry",
            width=64,
            height=64,
            num_inference_steps=2,
            guidance_scale=7.5,
            generator=torch.Generator("cpu").manual_seed(5),
        ).images[0]
        assert np.array_equal(pixels(image.path), np.asarray(own.convert("RGB")))
    finally:
        e.unload()


def test_a_config_of_another_architecture_is_refused_naming_both(
    tiny_sdxl: Tiny, tiny_sd_single_file: TinySingleFile, tmp_path: Path
) -> None:
    e = make_engine(
        tiny_sdxl.checkpoint,
        tmp_path / "outputs",
        single_file_config=str(tiny_sd_single_file.config),
    )
    with pytest.raises(
        DiffusionError, match=r"is SDXL but single_file_config .* StableDiffusionPipeline"
    ):
        e.load()
    assert e.status.state == "failed" and not e.loaded


def test_a_file_that_is_not_a_checkpoint_says_what_it_may_be(tmp_path: Path) -> None:
    import torch
    from safetensors.torch import save_file

    lora = tmp_path / "style.safetensors"
    save_file({"lora_unet_down_blocks_0.lora_down.weight": torch.zeros(4, 4)}, str(lora))
    e = make_engine(lora, tmp_path / "outputs")
    with pytest.raises(DiffusionError, match=r"not a Stable Diffusion checkpoint.*\[paths\] loras"):
        e.load()


def test_unload_frees_the_pipeline(tiny_sd_folder: Path, tmp_path: Path) -> None:
    e = make_engine(tiny_sd_folder, tmp_path / "outputs")
    e.load()
    pipe, unet = weakref.ref(e._pipe), weakref.ref(e._pipe.unet)
    e.unload()
    gc.collect()
    assert pipe() is None and unet() is None
    assert not e.loaded
    assert (e.status.state, e.status.device, e.status.progress) == ("not loaded", "", 0.0)
    assert e.status.describe() == "not loaded"


def test_a_missing_path_fails_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such-model"
    e = make_engine(missing, tmp_path / "outputs")
    with pytest.raises(DiffusionError, match=re.escape(str(missing))):
        e.load()
    assert e.status.state == "failed" and str(missing) in e.status.detail
    assert e.status.describe().startswith("failed: ")
    assert not e.loaded


def test_a_folder_without_model_index_is_refused(tmp_path: Path, tiny_sd_folder: Path) -> None:
    folder = tmp_path / "not-a-model"
    shutil.copytree(tiny_sd_folder / "unet", folder / "unet")
    e = make_engine(folder, tmp_path / "outputs")
    with pytest.raises(DiffusionError, match=r"not a diffusers model folder.*model_index\.json"):
        e.load()
    assert e.status.state == "failed"


def _missing(weights: Path) -> None:
    weights.unlink()


def _truncated(weights: Path) -> None:
    weights.write_bytes(weights.read_bytes()[:1000])


def _garbled(weights: Path) -> None:
    weights.write_bytes(b"\xff" * 64 + b"not a safetensors file" * 50)


@pytest.mark.parametrize(
    ("damage", "named"),
    [
        (_missing, r"unet"),
        (_truncated, r"unet/diffusion_pytorch_model\.safetensors"),
        (_garbled, r"unet/diffusion_pytorch_model\.safetensors"),
    ],
    ids=["missing", "truncated", "garbled"],
)
def test_damaged_weights_fail_naming_the_file_then_a_good_model_loads(
    tiny_sd_folder: Path, tmp_path: Path, damage: Any, named: str
) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(tiny_sd_folder, broken)
    damage(broken / "unet" / "diffusion_pytorch_model.safetensors")
    e = make_engine(broken, tmp_path / "outputs")
    with pytest.raises(DiffusionError, match=named) as caught:
        e.load()
    assert str(broken) in str(caught.value)
    assert e.status.state == "failed" and not e.loaded
    # the same engine loads a good model afterwards (the damaged one is not cached)
    assert e.load(str(tiny_sd_folder)).state == "ready"
    assert e.loaded and e.model == str(tiny_sd_folder)
    e.unload()


def test_importing_the_engine_does_not_import_torch() -> None:
    code = (
        "import json, sys\n"
        "import engines.diffusion\n"
        "print(json.dumps(sorted(m for m in ('torch', 'diffusers', 'transformers') "
        "if m in sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert json.loads(out.stdout) == []


# -- requests --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"prompt": ""}, r"the prompt is empty"),
        ({"prompt": "   \n\t"}, r"the prompt is empty"),
        ({"width": 100}, r"width 100 is not allowed: use a multiple of 8 from 64 to 2048"),
        ({"width": 56}, r"width 56 is not allowed: use a multiple of 8 from 64 to 2048"),
        ({"width": 2056}, r"width 2056 is not allowed: use a multiple of 8 from 64 to 2048"),
        ({"height": 0}, r"height 0 is not allowed: use a multiple of 8 from 64 to 2048"),
        ({"height": -64}, r"height -64 is not allowed"),
        ({"steps": 0}, rf"steps 0 is not allowed: use 1 to {MAX_STEPS}"),
        ({"steps": 151}, rf"steps 151 is not allowed: use 1 to {MAX_STEPS}"),
        ({"guidance": -1.0}, rf"guidance -1 is not allowed: use 0 to {MAX_GUIDANCE:g}"),
        ({"guidance": 31.0}, rf"guidance 31 is not allowed: use 0 to {MAX_GUIDANCE:g}"),
        ({"guidance": float("nan")}, r"guidance nan is not allowed: use 0 to 30"),
        ({"guidance": float("inf")}, r"guidance inf is not allowed"),
        ({"seed": -1}, r"seed -1 is not allowed: use 0 to 4294967295, or leave it empty"),
        ({"seed": 2**32}, r"seed 4294967296 is not allowed: use 0 to 4294967295"),
        ({"count": 0}, rf"count 0 is not allowed: use 1 to {MAX_COUNT}"),
        ({"count": 17}, rf"count 17 is not allowed: use 1 to {MAX_COUNT}"),
        ({"prompt": "a\x00b"}, r"the prompt holds a NUL character"),
        ({"negative_prompt": "x\x00"}, r"the negative prompt holds a NUL character"),
    ],
)
def test_validate_refuses_each_bad_field(changes: dict[str, Any], expected: str) -> None:
    with pytest.raises(RequestError, match=expected):
        validate(request(**changes))


def test_an_unknown_scheduler_lists_the_known_ones() -> None:
    with pytest.raises(RequestError) as caught:
        validate(request(scheduler="Bogus 3000"))
    message = str(caught.value)
    assert "scheduler 'Bogus 3000' is unknown" in message
    assert all(name in message for name in SCHEDULERS)


def test_validate_names_every_problem_at_once() -> None:
    with pytest.raises(RequestError) as caught:
        validate(request(width=60, steps=0, seed=-5))
    assert [p.split()[0] for p in str(caught.value).split("; ")] == ["width", "steps", "seed"]


@pytest.mark.parametrize(
    "good",
    [
        request(),
        request(width=2048, height=64, steps=150, guidance=0.0, seed=0, count=16),
        request(guidance=30.0, seed=2**32 - 1),
        request(seed=None, negative_prompt="blurry", scheduler="Heun"),
    ],
)
def test_validate_passes_good_requests(good: GenerationRequest) -> None:
    assert validate(good) is good


def test_the_model_sets_the_limits() -> None:
    assert validate(request(width=72), SizeLimits(multiple=8)).width == 72
    with pytest.raises(RequestError, match="multiple of 64 from 128 to 256"):
        validate(request(width=72), SizeLimits(multiple=64, minimum=128, maximum=256))


def test_a_refused_request_does_no_work(engine: DiffusionEngine) -> None:
    steps: list[StepInfo] = []
    saved: list[GeneratedImage] = []
    engine.on_image = saved.append
    with pytest.raises(RequestError, match="width 60"):
        engine.generate(request(width=60), on_step=steps.append)
    assert steps == [] and saved == [] and files(engine.outputs) == []


def test_an_unloaded_engine_refuses_before_loading(tmp_path: Path) -> None:
    e = make_engine(tmp_path / "would-fail-to-load", tmp_path / "outputs")
    with pytest.raises(RequestError, match="steps 0"):
        e.generate(request(steps=0))
    assert e.status.state == "not loaded"  # no loading was tried
    assert files(tmp_path / "outputs") == []


# -- generating ------------------------------------------------------------------------


def test_a_png_with_its_parameters(engine: DiffusionEngine) -> None:
    started = time.time()
    result = engine.generate(request(negative_prompt="blurry, dark", scheduler="Euler a"))
    assert not result.cancelled and result.notes == []
    (image,) = result.images
    assert files(engine.outputs) == [image.path.name]
    match = NAME.match(image.path.name)
    assert match, image.path.name
    day, clock, seed, slug = match.groups()
    assert (seed, slug) == ("42", "a-red-fox-in-the-snow")
    made = time.mktime(time.strptime(day + clock, "%Y%m%d%H%M%S"))
    assert started - 2 <= made <= time.time() + 1
    expected = ImageParameters(
        prompt=PROMPT,
        negative_prompt="blurry, dark",
        width=64,
        height=64,
        steps=3,
        guidance=7.5,
        seed=42,
        scheduler="Euler a",
        model=Path(engine.model).name,
    )
    assert image.parameters == expected
    assert read_parameters(image.path) == expected
    assert "/" not in expected.model
    assert image.seconds > 0
    with Image.open(image.path) as im:
        assert (im.format, im.mode, im.size) == ("PNG", "RGB", (64, 64))


def test_the_same_seed_makes_the_same_pixels(engine: DiffusionEngine) -> None:
    (a,) = engine.generate(request(seed=1234)).images
    (b,) = engine.generate(request(seed=1234)).images
    (c,) = engine.generate(request(seed=1235)).images
    assert a.path != b.path, "never one over the other"
    if a.path.name[:15] == b.path.name[:15]:  # the same second: the second name gets -2
        assert b.path.name.endswith("-2.png")
    assert np.array_equal(pixels(a.path), pixels(b.path))
    assert not np.array_equal(pixels(a.path), pixels(c.path))
    assert pixels(a.path).std() > 0  # an image, not a flat colour


def test_count_makes_consecutive_seeds_and_calls_on_image_once_each(
    engine: DiffusionEngine,
) -> None:
    saved: list[GeneratedImage] = []
    engine.on_image = saved.append
    result = engine.generate(request(seed=100, count=3, steps=2))
    assert [i.parameters.seed for i in result.images] == [100, 101, 102]
    assert saved == result.images
    assert files(engine.outputs) == sorted(i.path.name for i in result.images)
    assert [NAME.match(i.path.name).group(3) for i in result.images] == ["100", "101", "102"]  # type: ignore[union-attr]
    assert len({pixels(i.path).tobytes() for i in result.images}) == 3


def test_the_seed_wraps_at_two_to_the_32(engine: DiffusionEngine) -> None:
    result = engine.generate(request(seed=2**32 - 1, count=2, steps=1))
    assert [i.parameters.seed for i in result.images] == [2**32 - 1, 0]


def test_no_seed_means_a_random_one_that_is_recorded(engine: DiffusionEngine) -> None:
    (a,) = engine.generate(request(seed=None, steps=1)).images
    (b,) = engine.generate(request(seed=None, steps=1)).images
    assert a.parameters.seed != b.parameters.seed
    for image in (a, b):
        assert 0 <= image.parameters.seed < 2**32
        assert read_parameters(image.path).seed == image.parameters.seed
        assert f"-{image.parameters.seed}-" in image.path.name
    # the recorded seed makes the image again
    (again,) = engine.generate(request(seed=a.parameters.seed, steps=1)).images
    assert np.array_equal(pixels(again.path), pixels(a.path))


@pytest.mark.parametrize("scheduler", list(SCHEDULERS))
def test_every_scheduler_generates_and_counts_the_users_steps(
    engine: DiffusionEngine, scheduler: str
) -> None:
    steps: list[StepInfo] = []
    (image,) = engine.generate(request(scheduler=scheduler, steps=3), on_step=steps.append).images
    assert read_parameters(image.path).scheduler == scheduler
    assert [(s.step, s.steps) for s in steps] == [(1, 3), (2, 3), (3, 3)]
    assert steps[-1].preview is not None


# -- AUTOMATIC1111 prompts ---------------------------------------------------------------


def _positions(tokenizer: Any, prompt: str, word: str) -> list[int]:
    """Where ``word``'s tokens sit in ``prompt``'s encoding (start marker at 0)."""
    ids = tokenizer(prompt).input_ids
    sub = tokenizer(word, add_special_tokens=False).input_ids
    for start in range(len(ids)):
        if ids[start : start + len(sub)] == sub:
            return list(range(start, start + len(sub)))
    raise AssertionError(f"{word!r} not in {prompt!r}")


def _changed_rows(a: Any, b: Any) -> list[int]:
    import torch

    assert a.shape == b.shape
    return [int(i) for i in torch.nonzero((a[0] != b[0]).any(dim=-1)).flatten()]


@pytest.fixture(scope="module")
def sdxl_engine(
    tiny_sdxl: Tiny, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DiffusionEngine]:
    e = make_engine(tiny_sdxl.folder, tmp_path_factory.mktemp("sdxl-outputs"))
    e.load()
    yield e
    e.unload()


@pytest.mark.parametrize("which", ["engine", "sdxl_engine"])
def test_a_weight_changes_the_embedding_where_it_says_and_only_there(
    request_fixture: pytest.FixtureRequest, which: str
) -> None:
    e: DiffusionEngine = request_fixture.getfixturevalue(which)
    assert e._encoder is not None
    plain = e._encoder.encode("a red fox in the snow", "")
    weighted = e._encoder.encode("a red (fox:1.3) in the snow", "")
    where = _positions(e._pipe.tokenizer, "a red fox in the snow", "fox")
    assert _changed_rows(plain["prompt_embeds"], weighted["prompt_embeds"]) == where
    # (fox) is 1.1, ((fox)) 1.21: the same place, each further from the plain embedding
    once = e._encoder.encode("a red (fox) in the snow", "")["prompt_embeds"]
    twice = e._encoder.encode("a red ((fox)) in the snow", "")["prompt_embeds"]
    base = plain["prompt_embeds"]
    assert _changed_rows(base, once) == where == _changed_rows(base, twice)
    d1, d2 = ((x - base)[0, where].norm() for x in (once, twice))
    assert 0 < d1 < d2
    # [fox] lowers it: the fox's rows move too
    lower = e._encoder.encode("a red [fox] in the snow", "")["prompt_embeds"]
    assert set(where) <= set(_changed_rows(base, lower))
    # the negative prompt is read the same way
    neg = e._encoder.encode("a fox", "(blurry:1.5), dark")["negative_prompt_embeds"]
    neg_plain = e._encoder.encode("a fox", "blurry, dark")["negative_prompt_embeds"]
    blurry = _positions(e._pipe.tokenizer, "blurry, dark", "blurry")
    assert _changed_rows(neg_plain, neg) == blurry
    if which == "sdxl_engine":  # both encoders (32 + 64 wide), and the pooled text
        assert weighted["prompt_embeds"].shape[-1] == 96
        assert weighted["pooled_prompt_embeds"].shape[-1] == 32


def test_a_plain_prompt_is_encoded_exactly_as_diffusers_does(engine: DiffusionEngine) -> None:
    import torch

    assert engine._encoder is not None
    ours = engine._encoder.encode("a photo of a cat", "blurry")
    theirs = engine._pipe.encode_prompt("a photo of a cat", "cpu", 1, True, "blurry")
    assert torch.equal(ours["prompt_embeds"], theirs[0])
    assert torch.equal(ours["negative_prompt_embeds"], theirs[1])
    # escaped brackets are the characters themselves, not weights
    escaped = engine._encoder.encode(r"a \(photo\) of a cat", "")["prompt_embeds"]
    literal = engine._pipe.encode_prompt("a (photo) of a cat", "cpu", 1, False)[0]
    assert torch.equal(escaped, literal)


def test_token_100_of_a_long_prompt_reaches_the_unet(engine: DiffusionEngine) -> None:
    """Prompts past 75 tokens are read in chunks of 75, nothing is dropped: a word at
    token 100 changes the text embedding's second chunk and the image."""
    tokenizer = engine._pipe.tokenizer
    words = ["cat", "dog"] * 60  # one token each
    assert all(len(tokenizer(w, add_special_tokens=False).input_ids) == 1 for w in words)
    changed = list(words)
    changed[99] = "tree" if words[99] != "tree" else "sky"
    long, other = " ".join(words), " ".join(changed)
    assert engine._encoder is not None
    a = engine._encoder.encode(long, "")["prompt_embeds"]
    b = engine._encoder.encode(other, "")["prompt_embeds"]
    assert a.shape[1] == 2 * 77  # two chunks, each with its start and end markers
    # token 100 is the 25th of the second chunk (its start marker at 77)
    assert _changed_rows(a, b)[0] >= 77
    assert engine.prompt_tokens(long) == (120, 75)
    first = engine.generate(request(prompt=long, steps=2))
    second = engine.generate(request(prompt=other, steps=2))
    assert first.notes == []  # nothing is cut, nothing to warn about
    assert not np.array_equal(pixels(first.images[0].path), pixels(second.images[0].path))
    assert read_parameters(first.images[0].path).prompt == long  # recorded as written


def test_a_full_chunk_ends_after_a_comma_up_to_20_tokens_back(engine: DiffusionEngine) -> None:
    """AUTOMATIC1111's chunking: past 75 tokens, the words after the last comma (if it is
    at most 20 tokens back) move to the next chunk whole; else the cut is at 75."""
    import torch

    assert engine._encoder is not None
    encode = engine._encoder.encode
    head, tail = " ".join(["cat"] * 70) + ",", " ".join(["dog"] * 10)
    joined = encode(f"{head} {tail}", "")["prompt_embeds"]
    assert joined.shape[1] == 154
    assert torch.equal(joined[:, :77], encode(head, "")["prompt_embeds"])
    assert torch.equal(joined[:, 77:], encode(tail, "")["prompt_embeds"])
    # a comma 35 tokens back does not move anything: the cut is at 75 tokens
    early = " ".join(["cat"] * 40) + ", " + " ".join(["dog"] * 50)
    cut = encode(early, "")["prompt_embeds"]
    words = early.split(" ")  # "cat" x 39, "cat,", "dog" x 50: 91 tokens
    first = " ".join(words[:39]) + " cat, " + " ".join(["dog"] * 34)  # 75 tokens
    assert torch.equal(cut[:, :77], encode(first, "")["prompt_embeds"])


def test_break_starts_a_new_chunk(engine: DiffusionEngine) -> None:
    import torch

    assert engine._encoder is not None
    broken = engine._encoder.encode("a red fox BREAK in the snow", "")["prompt_embeds"]
    alone = engine._encoder.encode("a red fox", "")["prompt_embeds"]
    second = engine._encoder.encode("in the snow", "")["prompt_embeds"]
    assert broken.shape[1] == 154
    assert torch.equal(broken[:, :77], alone) and torch.equal(broken[:, 77:], second)
    # a negative prompt of one chunk is padded to two with the empty prompt's
    both = engine._encoder.encode("a red fox BREAK in the snow", "blurry")
    assert both["negative_prompt_embeds"].shape == broken.shape


def test_the_png_keeps_the_prompt_as_written(engine: DiffusionEngine) -> None:
    prompt = r"a (red:1.3) fox, [snow], \(sic\) BREAK at night"
    (image,) = engine.generate(request(prompt=prompt, steps=1, negative_prompt="(blurry)")).images
    stored = read_parameters(image.path)
    assert (stored.prompt, stored.negative_prompt) == (prompt, "(blurry)")


# -- LoRAs and embeddings -------------------------------------------------------------


class Networked:
    def __init__(self, engine: DiffusionEngine, loras: Path, embeddings: Path) -> None:
        self.engine, self.loras, self.embeddings = engine, loras, embeddings


@pytest.fixture(scope="module")
def networked(
    tiny_sd_folder: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Networked]:
    """An engine on the tiny SD 1.x folder with two LoRAs and an embedding in its folders."""
    from sd_fixtures import build_tiny_embedding, build_tiny_lora

    root = tmp_path_factory.mktemp("networks")
    build_tiny_lora(tiny_sd_folder, root / "loras" / "ink.safetensors", seed=1)
    build_tiny_lora(tiny_sd_folder, root / "loras" / "styles" / "film grain.safetensors", seed=2)
    build_tiny_embedding(root / "embeddings" / "sty.safetensors")
    e = DiffusionEngine(
        DiffusionSettings(model=str(tiny_sd_folder), device="cpu"),
        root / "outputs",
        loras=root / "loras",
        embeddings=root / "embeddings",
    )
    e.load()
    yield Networked(e, root / "loras", root / "embeddings")
    e.unload()


def _lora_layers(engine: DiffusionEngine) -> list[str]:
    return [n for n, _ in engine._pipe.unet.named_modules() if "lora" in n.lower()]


def test_a_lora_changes_the_image_and_without_it_the_base_image_is_back_exactly(
    networked: Networked,
) -> None:
    e = networked.engine
    assert e.lora_names() == ["film grain", "ink"]
    (base,) = e.generate(request(steps=2)).images
    (inked,) = e.generate(request(prompt=PROMPT + " <lora:ink:1>", steps=2)).images
    assert _lora_layers(e)  # loaded through peft
    assert not np.array_equal(pixels(base.path), pixels(inked.path))
    (again,) = e.generate(request(steps=2)).images
    assert _lora_layers(e) == []  # removed: the UNet has its own layers back
    assert np.array_equal(pixels(base.path), pixels(again.path))
    assert read_parameters(again.path).lora_hashes == ""


def test_several_loras_at_once_with_their_weights_and_their_hashes(networked: Networked) -> None:
    import hashlib

    e = networked.engine
    (one,) = e.generate(request(prompt="<lora:ink:0.8> " + PROMPT, steps=2)).images
    (two,) = e.generate(
        request(prompt="<lora:ink:0.8> <lora:film grain:0.5> " + PROMPT, steps=2)
    ).images
    assert not np.array_equal(pixels(one.path), pixels(two.path))
    assert sorted(e._pipe.get_active_adapters()) == ["lora_film_grain", "lora_ink"]

    # the hashes AUTOMATIC1111 writes: SHA-256 of the file after its safetensors header
    def addnet(path: Path) -> str:
        data = path.read_bytes()
        return hashlib.sha256(data[8 + int.from_bytes(data[:8], "little") :]).hexdigest()[:12]

    stored = read_parameters(two.path)
    ink = networked.loras / "ink.safetensors"
    film = networked.loras / "styles" / "film grain.safetensors"
    assert stored.lora_hashes == f"ink: {addnet(ink)}, film grain: {addnet(film)}"
    text = Image.open(two.path).info["parameters"]
    assert f'Lora hashes: "ink: {addnet(ink)}, film grain: {addnet(film)}"' in text
    assert stored.prompt.startswith("<lora:ink:0.8> <lora:film grain:0.5>")  # as written
    e.generate(request(steps=1))  # leave the shared engine without LoRAs


def test_a_lora_replaced_on_disk_is_read_again(networked: Networked, tmp_path: Path) -> None:
    from sd_fixtures import build_tiny_lora

    e = networked.engine
    path = networked.loras / "swap.safetensors"
    build_tiny_lora(Path(e.model), path, seed=5)
    try:
        (first,) = e.generate(request(prompt=PROMPT + " <lora:swap:1>", steps=2)).images
        build_tiny_lora(Path(e.model), path, seed=6)
        (second,) = e.generate(request(prompt=PROMPT + " <lora:swap:1>", steps=2)).images
        assert not np.array_equal(pixels(first.path), pixels(second.path))
        assert read_parameters(first.path).lora_hashes != read_parameters(second.path).lora_hashes
    finally:
        path.unlink()
        e.generate(request(steps=1))  # leave the shared engine without LoRAs


def test_an_unknown_lora_is_named_with_the_ones_there(networked: Networked, tmp_path: Path) -> None:
    e = networked.engine
    e.outputs = tmp_path / "none"
    with pytest.raises(
        RequestError, match=r"LoRA 'inky' not found in .*loras \(LoRAs there: film grain, ink\)"
    ):
        e.generate(request(prompt="a fox <lora:inky:1>"))
    assert files(tmp_path / "none") == []


def test_an_embedding_is_used_by_its_name_and_recorded(networked: Networked) -> None:
    import hashlib

    import torch

    e = networked.engine
    assert e._encoder is not None
    before = e._encoder.encode("a fox, sty", "")["prompt_embeds"]
    (image,) = e.generate(request(prompt="a fox, sty", steps=1)).images
    assert "sty" in e._networks.inversions  # type: ignore[union-attr]
    after = e._encoder.encode("a fox, sty", "")["prompt_embeds"]
    assert not torch.equal(before, after)
    # two vectors: the name stands for two tokens of its own
    vocab = e._pipe.tokenizer.get_vocab()
    assert {"<sty>", "<sty>_1"} <= set(vocab)
    digest = hashlib.sha256((networked.embeddings / "sty.safetensors").read_bytes()).hexdigest()
    assert read_parameters(image.path).ti_hashes == f"sty: {digest[:12]}"
    # a prompt without the name is as it was
    (plain,) = e.generate(request(steps=1)).images
    assert read_parameters(plain.path).ti_hashes == ""


def test_an_sd_embedding_on_sdxl_is_refused_naming_it(
    sdxl_engine: DiffusionEngine, tmp_path: Path
) -> None:
    from sd_fixtures import build_tiny_embedding

    build_tiny_embedding(tmp_path / "embeddings" / "sty.safetensors")
    e = sdxl_engine
    assert e._networks is not None
    before = e._networks.embedding_folder
    e._networks.embedding_folder = tmp_path / "embeddings"
    try:
        with pytest.raises(RequestError, match=re.escape("embedding 'sty' is for SD 1.x/2.x")):
            e.generate(request(prompt="a fox, sty"))
        (image,) = e.generate(request(prompt="a fox", steps=1)).images  # others still work
        assert read_parameters(image.path).ti_hashes == ""
    finally:
        e._networks.embedding_folder = before


# -- img2img and the hires fix ------------------------------------------------------------


def test_img2img_shares_every_module_of_the_loaded_pipeline(engine: DiffusionEngine) -> None:
    text, image = engine._pipe, engine._img2img
    assert type(image).__name__ == "StableDiffusionImg2ImgPipeline"
    for name in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        assert getattr(image, name) is getattr(text, name), name
    params = {id(p) for m in (text.unet, text.vae, text.text_encoder) for p in m.parameters()}
    both = {
        id(p)
        for pipe in (text, image)
        for m in (pipe.unet, pipe.vae, pipe.text_encoder)
        for p in m.parameters()
    }
    assert both == params  # no second copy of any weight


def test_img2img_from_a_file_with_its_strength_and_seed(engine: DiffusionEngine) -> None:
    (start,) = engine.generate(request(steps=2, seed=1)).images
    steps: list[StepInfo] = []
    light = request(init_image=str(start.path), strength=0.3, steps=10, seed=9)
    (a,) = engine.generate(light, on_step=steps.append).images
    assert [s.step for s in steps] == [1, 2, 3] and {s.steps for s in steps} == {3}
    (b,) = engine.generate(light).images
    assert np.array_equal(pixels(a.path), pixels(b.path))  # the seed makes it again
    (heavy,) = engine.generate(replace(light, strength=1.0)).images
    origin = pixels(start.path).astype(int)
    near = np.abs(pixels(a.path).astype(int) - origin).mean()
    far = np.abs(pixels(heavy.path).astype(int) - origin).mean()
    assert 0 < near < far
    stored = read_parameters(a.path)
    assert (stored.denoising_strength, stored.seed, stored.steps) == (0.3, 9, 10)
    assert "Denoising strength: 0.3" in Image.open(a.path).info["parameters"]


def test_an_init_image_of_another_size_is_resized(engine: DiffusionEngine, tmp_path: Path) -> None:
    other = tmp_path / "wide.png"
    Image.new("RGB", (100, 40), (200, 30, 30)).save(other)
    (image,) = engine.generate(request(init_image=str(other), strength=0.5, steps=2)).images
    with Image.open(image.path) as im:
        assert im.size == (64, 64)


def test_a_file_that_is_not_an_image_is_refused(engine: DiffusionEngine, tmp_path: Path) -> None:
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    with pytest.raises(RequestError, match=r"init image notes\.png cannot be read"):
        engine.generate(request(init_image=str(bad), strength=0.5))


@pytest.mark.parametrize("upscaler", ["Latent", "Lanczos"])
def test_hires_fix_makes_the_larger_image_and_records_it(
    engine: DiffusionEngine, upscaler: str
) -> None:
    steps: list[StepInfo] = []
    hires = request(steps=4, hires_scale=2.0, hires_strength=0.5, hires_upscaler=upscaler)
    (image,) = engine.generate(hires, on_step=steps.append).images
    with Image.open(image.path) as im:
        assert im.size == (128, 128)
        text = im.info["parameters"]
    # 4 steps at 64x64, then 2 (4 x 0.5) at 128x128, counted as one run
    assert [s.step for s in steps] == [1, 2, 3, 4, 5, 6] and {s.steps for s in steps} == {6}
    assert "Size: 64x64" in text  # the first pass's size, as AUTOMATIC1111 records it
    assert f"Denoising strength: 0.5, Hires upscale: 2, Hires upscaler: {upscaler}" in text
    stored = read_parameters(image.path)
    assert (stored.hires_upscale, stored.denoising_strength, stored.hires_steps) == (2, 0.5, None)
    (again,) = engine.generate(replace(hires, hires_steps=6)).images
    assert "Hires steps: 6" in Image.open(again.path).info["parameters"]


def test_sdxl_img2img_and_hires_fix_on_its_own_modules(sdxl_engine: DiffusionEngine) -> None:
    e = sdxl_engine
    assert type(e._img2img).__name__ == "StableDiffusionXLImg2ImgPipeline"
    for name in ("unet", "vae", "text_encoder", "text_encoder_2", "tokenizer_2"):
        assert getattr(e._img2img, name) is getattr(e._pipe, name), name
    (big,) = e.generate(request(steps=2, hires_scale=2.0, hires_upscaler="Lanczos")).images
    with Image.open(big.path) as im:
        assert im.size == (128, 128)
    (redrawn,) = e.generate(
        request(steps=2, init_image=str(big.path), strength=0.5, width=96, height=96)
    ).images
    with Image.open(redrawn.path) as im:
        assert im.size == (96, 96)


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"init_image": "x.png", "strength": 0.0}, "strength 0 is not allowed: use 0.01 to 1"),
        ({"init_image": "/no/such.png"}, "init image /no/such.png is not a file"),
        ({"hires_scale": 5.0}, "hires scale 5 is not allowed: use 1 (off) to 4"),
        ({"hires_scale": 2.0, "hires_strength": 1.5}, "hires strength 1.5 is not allowed"),
        ({"hires_scale": 2.0, "hires_upscaler": "ESRGAN"}, "hires upscaler 'ESRGAN' is unknown"),
        ({"hires_scale": 2.0, "hires_steps": 200}, "hires steps 200 is not allowed: use 0"),
        ({"width": 1024, "hires_scale": 3.0}, "hires scale 3 makes 3072x192, over 2048"),
        ({"prompt": "a <lora:ink:9>"}, "LoRA 'ink' weight 9 is not allowed: use -5 to 5"),
        ({"init_image": "x.png", "strength": 0.05, "steps": 10}, "leaves no step"),
    ],
)
def test_the_new_fields_are_checked_naming_value_and_limits(
    changes: dict[str, Any], expected: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Image.new("RGB", (8, 8)).save(tmp_path / "x.png")
    with pytest.raises(RequestError, match=re.escape(expected)):
        validate(request(**changes))


def test_hires_fix_with_an_init_image_is_refused(tmp_path: Path) -> None:
    Image.new("RGB", (8, 8)).save(tmp_path / "x.png")
    with pytest.raises(RequestError, match="hires fix is for text-to-image"):
        validate(request(init_image=str(tmp_path / "x.png"), hires_scale=2.0))


# -- previews --------------------------------------------------------------------------


def test_on_step_for_every_step_with_previews(engine: DiffusionEngine) -> None:
    steps: list[StepInfo] = []
    engine.generate(request(steps=6, count=2, seed=3), on_step=steps.append)
    assert [(s.image_index, s.step) for s in steps] == [
        (i, n) for i in range(2) for n in range(1, 7)
    ]
    assert all(s.steps == 6 and s.count == 2 for s in steps)
    elapsed = [s.elapsed_s for s in steps[:6]]
    assert elapsed == sorted(elapsed) and elapsed[0] > 0
    for first, last in ((steps[0], steps[5]), (steps[6], steps[11])):
        for info in (first, last):
            assert isinstance(info.preview, Image.Image)
            assert info.preview.mode == "RGB" and info.preview.size == (32, 32)  # the latents
    assert steps[0].steps_per_s > 0 and steps[-1].eta_s == 0
    assert steps[2].eta_s > 0


def test_latents_to_rgb_makes_an_image_cheaply() -> None:
    import torch

    from engines.diffusion import LATENT_RGB_SD15

    latents = torch.randn(4, 64, 64, generator=torch.Generator().manual_seed(0))
    latents_to_rgb(latents, LATENT_RGB_SD15)  # the first call pays one-off costs
    started = time.perf_counter()
    image = latents_to_rgb(latents, LATENT_RGB_SD15)
    cost = time.perf_counter() - started
    print(f"latents_to_rgb on 4x64x64: {cost * 1000:.3f} ms")
    assert (image.mode, image.size) == ("RGB", (64, 64))
    zero = latents_to_rgb(torch.zeros(4, 8, 8), LATENT_RGB_SD15)
    assert zero.getpixel((0, 0)) == (127, 127, 127)


# -- cancelling ------------------------------------------------------------------------


def count_unet_calls(engine: DiffusionEngine) -> tuple[list[int], Any]:
    calls: list[int] = []
    handle = engine._pipe.unet.register_forward_hook(lambda *_: calls.append(1))
    return calls, handle


def test_cancel_at_step_3_of_10_stops_within_a_step(engine: DiffusionEngine) -> None:
    cancel = threading.Event()
    seen: list[int] = []

    def on_step(info: StepInfo) -> None:
        seen.append(info.step)
        if info.step == 3:
            cancel.set()

    calls, handle = count_unet_calls(engine)
    try:
        result = engine.generate(request(steps=10), on_step=on_step, cancel=cancel)
    finally:
        handle.remove()
    assert result.cancelled and result.images == []
    assert seen == [1, 2, 3]  # no step after the one that cancelled
    assert len(calls) <= 4  # the UNet ran at most one more step, not the other 7
    assert files(engine.outputs) == []
    assert engine._pipe._interrupt is False  # the next run is not interrupted
    assert len(engine.generate(request(steps=2)).images) == 1


def test_cancel_in_the_second_image_keeps_the_first(engine: DiffusionEngine) -> None:
    cancel = threading.Event()
    saved: list[GeneratedImage] = []
    engine.on_image = saved.append

    def on_step(info: StepInfo) -> None:
        if info.image_index == 1 and info.step == 3:
            cancel.set()

    result = engine.generate(request(steps=10, count=2, seed=8), on_step=on_step, cancel=cancel)
    assert result.cancelled
    (kept,) = result.images
    assert kept.parameters.seed == 8 and saved == [kept]
    assert files(engine.outputs) == [kept.path.name]  # no .tmp-* file, nothing for seed 9


def test_cancel_from_another_thread(engine: DiffusionEngine) -> None:
    cancel = threading.Event()
    seen: list[int] = []

    def on_step(info: StepInfo) -> None:
        seen.append(info.step)
        if info.step == 2:
            threading.Thread(target=cancel.set).start()

    result = engine.generate(request(steps=20), on_step=on_step, cancel=cancel)
    assert result.cancelled and result.images == [] and files(engine.outputs) == []
    assert 2 <= len(seen) < 20


def test_a_cancel_set_before_the_start_makes_nothing(engine: DiffusionEngine) -> None:
    cancel = threading.Event()
    cancel.set()
    steps: list[StepInfo] = []
    result = engine.generate(request(count=2), on_step=steps.append, cancel=cancel)
    assert result.cancelled and result.images == [] and steps == []
    assert files(engine.outputs) == []


# -- failures --------------------------------------------------------------------------


def test_a_failure_inside_the_pipeline_is_a_diffusion_error(engine: DiffusionEngine) -> None:
    calls = 0

    def explode(*_: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise RuntimeError("the UNet fell over")

    saved: list[GeneratedImage] = []
    engine.on_image = saved.append
    handle = engine._pipe.unet.register_forward_hook(explode)
    try:
        with pytest.raises(
            DiffusionError, match=r"^the pipeline failed: RuntimeError: the UNet fell over"
        ):
            engine.generate(request(steps=5))
    finally:
        handle.remove()
    assert saved == [] and files(engine.outputs) == []
    assert engine.status.state == "ready"
    (image,) = engine.generate(request(steps=2)).images  # and it works again
    assert image.path.exists()


@pytest.mark.parametrize("where", ["a file", "under a file"])
def test_saving_fails_cleanly(engine: DiffusionEngine, tmp_path: Path, where: str) -> None:
    blocker = tmp_path / "outputs"
    blocker.write_text("not a folder")
    engine.outputs = blocker if where == "a file" else blocker / "images"
    saved: list[GeneratedImage] = []
    engine.on_image = saved.append
    with pytest.raises(
        DiffusionError, match=rf"^cannot save the image in {re.escape(str(engine.outputs))}"
    ):
        engine.generate(request(steps=1))
    assert saved == []
    assert files(tmp_path) == ["outputs"] and blocker.read_text() == "not a folder"
    engine.outputs = tmp_path / "fine"
    assert len(engine.generate(request(steps=1)).images) == 1
