"""``bench/gpu_check.py --cpu-dry-run`` keeps working, and the engine's GPU-path failures
free what they held.

The dry run is the GPU check's own steps on the tiny random-weight pipeline on the CPU:
speed against bare diffusers, out of memory, the app asking the fake Ollama to unload,
the Monitor, one image through the CLI. Its checks are the ones the GPU run makes; what
needs CUDA is named in ``skipped``.
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import weakref
from pathlib import Path
from typing import Any

import pytest

from engines.config import DiffusionSettings
from engines.diffusion import DiffusionEngine, DiffusionError, GenerationRequest

REPO = Path(__file__).resolve().parent.parent

EXPECTED_CHECKS = {
    "cold.runs",
    "speed.previews_shown",
    "speed.same_pixels_as_bare_diffusers",
    "out_of_memory.raised",
    "out_of_memory.is_out_of_memory_error",
    "out_of_memory.readme_advice",
    "out_of_memory.freed_what_it_held",
    "out_of_memory.engine_still_ready",
    "out_of_memory.then_a_normal_image",
    "ollama_sharing.loaded",
    "ollama_sharing.asked_to_unload",
    "ollama_sharing.model_unloaded",
    "ollama_sharing.says_so",
    "ollama_sharing.loaded_once_the_room_was_back",
    "ollama_sharing.then_an_image",
    "monitor.cpu_and_memory_in_range",
    "monitor.this_process",
    "monitor.says_why_no_gpu",
    "cli.one_png",
    "cli.parameters",
    "cli.png_size",
    "unload.plain_frees_the_pipeline",
    "unload.fast_frees_the_pipeline",
}


def ok(value: Any) -> bool:
    return bool(value["ok"] if isinstance(value, dict) else value)


def test_the_dry_run_makes_every_check_and_passes(tmp_path: Path) -> None:
    out = tmp_path / "gpu_check.json"
    res = subprocess.run(
        [sys.executable, str(REPO / "bench" / "gpu_check.py"), "--cpu-dry-run", "-n", "1",
         "--out", str(out)],
        capture_output=True, text=True, cwd=REPO, timeout=600, check=False,
    )  # fmt: skip
    assert res.stdout.strip(), res.stderr[-3000:]
    report = json.loads(res.stdout)
    assert report == json.loads(out.read_text()), "--out holds the same report"
    assert report["mode"] == "cpu-dry-run"
    assert report["errors"] == {}, report["errors"]
    failed = {k: v for k, v in report["checks"].items() if not ok(v)}
    assert failed == {}, failed
    assert set(report["checks"]) >= EXPECTED_CHECKS, EXPECTED_CHECKS - set(report["checks"])
    assert res.returncode == 0 and report["passed"] is True
    # what needs CUDA says so, instead of passing silently
    assert {
        "monitor.gpu",
        "out_of_memory.cuda",
        "ollama_sharing.cuda",
        "speed.fast",
        "cold.second_image_not_slower_than_first",
    } <= set(report["skipped"])
    # the figures the GPU run reports are there, as numbers
    speed = report["speed"]
    for key in ("bare_s_per_image", "engine_s_per_image", "engine_with_previews_s_per_image"):
        assert speed[key] > 0, key
    assert set(speed["components"]) == {"unet_step_ms", "vae_decode_ms", "preview_ms"}
    cold = report["cold"]
    assert all(cold[k] > 0 for k in ("import_s", "load_s", "first_image_s", "second_image_s"))
    assert {"plain_vs_bare", "previews_overhead_pct"} <= set(report["aims"])
    oom = report["out_of_memory"]
    assert "ran out of memory at 128x128" in oom["message"]
    sharing = report["ollama_sharing"]
    assert sharing["ollama_reported"][0]["size_vram"] > 0
    assert sharing["unload_requests"][0]["keep_alive"] == 0
    assert "Steps: 3" in report["cli"]["parameters"]


@pytest.fixture
def unet_out_of_memory() -> Any:
    """Every UNet forward raises torch's out-of-memory error, after taking a tensor only
    its frame holds (as a GPU's activations are held); yields the weak references."""
    import torch
    from diffusers import UNet2DConditionModel

    taken: list[weakref.ref[Any]] = []
    unets: list[weakref.ref[Any]] = []

    def hook(module: Any, _args: Any) -> None:
        if isinstance(module, UNet2DConditionModel):
            held = torch.ones(4, 64, 8, 8)
            taken.append(weakref.ref(held))
            unets.append(weakref.ref(module))
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    handle = torch.nn.modules.module.register_module_forward_pre_hook(hook)
    try:
        yield taken, unets
    finally:
        handle.remove()


def test_a_load_that_runs_out_of_memory_frees_the_pipeline(
    tiny_sd_folder: Path, tmp_path: Path, unet_out_of_memory: Any
) -> None:
    """The warm-up runs out of memory: the load fails with the advice for loading, and the
    half-loaded pipeline is gone while the caller still holds the error."""
    taken, unets = unet_out_of_memory
    engine = DiffusionEngine(
        DiffusionSettings(model=str(tiny_sd_folder), device="cpu"), tmp_path / "outputs"
    )
    with pytest.raises(DiffusionError) as caught:
        engine.load()
    error = caught.value  # held, as a worker holds the error it reports
    assert str(error).startswith(f"not enough GPU memory to load {tiny_sd_folder}")
    assert 'cpu_offload = "model"' in str(error)
    assert engine.status.state == "failed" and not engine.loaded
    gc.collect()
    assert taken and taken[-1]() is None, "the UNet's tensor outlived the error"
    assert unets and unets[-1]() is None, "the half-loaded pipeline outlived the error"
    assert error.__traceback__ is not None  # the error itself is intact


def test_out_of_memory_while_generating_frees_what_the_step_held(
    tiny_sd_folder: Path, tmp_path: Path
) -> None:
    import torch

    engine = DiffusionEngine(
        DiffusionSettings(model=str(tiny_sd_folder), device="cpu"), tmp_path / "outputs"
    )
    engine.load()
    taken: list[weakref.ref[Any]] = []

    def hook(_module: Any, args: Any) -> None:
        held = torch.ones(4, 64, 8, 8)
        taken.append(weakref.ref(held))
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    handle = engine._pipe.unet.register_forward_pre_hook(hook)
    request = GenerationRequest("a fox", width=64, height=64, steps=2, seed=1)
    try:
        with pytest.raises(DiffusionError, match=r"^the GPU ran out of memory at 64x64: ") as c:
            engine.generate(request)
    finally:
        handle.remove()
    error = c.value  # still held
    assert taken and taken[-1]() is None, "the step's tensor outlived the error"
    assert engine.status.state == "ready"
    assert len(engine.generate(request).images) == 1  # and the engine works on
    assert str(error)
    engine.unload()


def test_unload_frees_a_pipeline_caught_in_a_reference_cycle(
    tiny_sd_folder: Path, tmp_path: Path
) -> None:
    """CPU offload (accelerate's hooks: module -> forward -> module) and compiled modules
    put the pipeline in reference cycles; load froze the collector's view of it, so unload
    must unfreeze it, or the pipeline and its GPU memory are never given back."""
    from accelerate.hooks import ModelHook, add_hook_to_module

    engine = DiffusionEngine(
        DiffusionSettings(model=str(tiny_sd_folder), device="cpu"), tmp_path / "outputs"
    )
    engine.load()
    add_hook_to_module(engine._pipe.unet, ModelHook())  # as enable_model_cpu_offload does
    unet = weakref.ref(engine._pipe.unet)
    engine.unload()
    assert unet() is None, "the unloaded pipeline is still in memory"
