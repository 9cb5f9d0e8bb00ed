"""The CUDA path, proven in one run on one NVIDIA GPU; prints JSON.

1. speed: SD 1.5's exact architecture with random weights (``bench/image.py``'s builder),
   fp16, 512x512, 20 steps, CFG 7.5. The engine and bare diffusers run interleaved in
   this process: plain, with step previews, and with ``fast`` (its warm-up reported on its
   own); the UNet step, the VAE decode and one preview timed alone; peak memory. Plus the
   cold figures of a fresh process: import, load, first image, second image.
2. out_of_memory: a filler tensor leaves the GPU a little room, then the size grows until
   CUDA raises. The engine must catch it, free what it held (``memory_allocated`` before
   and after, the error still held), give the README's advice, and generate a normal
   image in the same process.
3. ollama_sharing: the real app (headless, through Pilot) against ``tests/ollama_server.py``
   reporting a loaded model with ``size_vram``; a filler tensor leaves the pipeline no
   room. The app must ask the server to unload (it receives ``keep_alive: 0``), say so,
   wait, and load once the room is back (the filler is freed a moment after the unload,
   as Ollama's runner frees its memory after it has answered).
4. monitor: ``engines.monitor.Sampler`` sampled while the pipeline generates: GPU use %,
   memory, temperature and power within NVML's ranges; this process among the GPU's
   processes with its memory; the cost of one sample.
5. cli: one image through ``llm-pessoal image`` in a fresh process; the PNG's parameters.

``checks`` says what passed (a failed one makes the exit status 1); ``aims`` holds the
speed goals (plain <= 1.03x bare, previews <= +2 %, fast <= 0.20 s an image), reported
but not failed on. ``--out FILE`` rewrites FILE after each section, so a run cut short
still leaves what it measured.

``--cpu-dry-run`` runs the same steps on the tests' tiny random-weight pipeline on the
CPU (64x64, a few steps), so CI keeps this script working (``tests/test_gpu_check.py``).
What needs CUDA is skipped and named in ``skipped``; out-of-memory is then raised by a
hook inside the UNet (after it allocated a tensor, whose release is checked), and the
GPU's free memory, in the Ollama check, is read from a stand-in that frees itself when
the server is asked to unload.

On a GPU machine (about 4 minutes on an H200; the ``fast`` warm-up is about a minute of
it; ``--no-fast`` leaves it out). Its Python needs diffusers, textual and the ollama
client beside its own torch, transformers, accelerate, httpx, psutil, pillow and
nvidia-ml-py. Where it cannot reach PyPI, carry wheels made here (12 MB; checked to
import ``tui.app``, ``tui.cli`` and ``ollama`` on a bare Python 3.12 with those)::

    echo /.whl/ >> .git/info/exclude
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \\
        --implementation cp --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \\
        -d .whl diffusers==0.42.1 importlib-metadata textual==8.2.8 rich==15.0.0 \\
        markdown-it-py mdit-py-plugins linkify-it-py uc-micro-py platformdirs pygments \\
        typing-extensions ollama==0.6.3 pydantic==2.14.4 pydantic-core==2.50.5 \\
        typing-inspection annotated-types rich-pixels==3.0.1 textual-image==0.12.0

There, with ``.whl`` carried (the device tool: ``carry=[".whl"]``, ``timeout_s=600``)::

    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
    PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 timeout 540 \\
        python3 bench/gpu_check.py --out $OUT/gpu_check.json

The run takes about 4 minutes, well inside the issue's 8; a 600 s limit leaves room to
run it again after a fix within a 15-minute lease. ``$OUT/gpu_check.json`` is rewritten
after each section, so a run cut short still brings back what it measured.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import itertools
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for _p in (ROOT / "bench", ROOT / "tests", ROOT):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is downloaded: every model is local
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")

from engines.config import DiffusionSettings  # noqa: E402
from engines.diffusion import (  # noqa: E402
    LATENT_RGB_SD15,
    DiffusionEngine,
    DiffusionError,
    GenerationRequest,
    OutOfMemory,
    StepInfo,
    latents_to_rgb,
)

GIB = 2**30
MIB = 2**20
PROMPT = "a photo of an astronaut riding a horse on the moon"
OLLAMA_MODEL = "llama3.2:latest"
README_ADVICE = ("smaller size", "attention_slicing", "vae_tiling", 'cpu_offload = "model"')
"""What README's troubleshooting promises for "the GPU ran out of memory"."""
AIMS = {"plain_vs_bare": 1.03, "previews_overhead_pct": 2.0, "fast_s_per_image": 0.20}
ANCHOR_H200 = {
    "bare_s_per_image": 0.514,
    "unet_step_ms": 21.8,
    "vae_decode_ms": 21.0,
    "peak_gib": 2.65,
    "fast_s_per_image": 0.296,
    "fast_warm_up_s": 64,
}
LIMIT_S = 8 * 60


def log(msg: str) -> None:
    print(f"[gpu_check {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def rnd(x: float | None, nd: int = 4) -> float | None:
    return None if x is None else round(x, nd)


@dataclass
class Plan:
    """What one run does: the real thing on CUDA, or the dry run's small version."""

    dry: bool
    device: str
    size: int
    steps: int
    images: int
    fast: bool
    oom_sizes: tuple[int, ...]
    work: Path
    folder: Path = Path()
    dtype: str = ""

    def request(self, **changes: Any) -> GenerationRequest:
        base = GenerationRequest(
            PROMPT, width=self.size, height=self.size, steps=self.steps, guidance=7.5, seed=0
        )
        return replace(base, **changes)

    def engine(self, outputs: str, **settings: Any) -> DiffusionEngine:
        return DiffusionEngine(
            DiffusionSettings(model=str(self.folder), device=self.device, **settings),
            self.work / outputs,
        )


@dataclass
class Report:
    """The JSON: sections, checks, aims, what was skipped; written after each section."""

    out: Path | None
    data: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.data.update(checks={}, aims={}, skipped={}, errors={})

    def check(self, name: str, ok: bool, detail: Any = None) -> bool:
        self.data["checks"][name] = bool(ok) if detail is None else {"ok": bool(ok), **detail}
        if not ok:
            log(f"CHECK FAILED: {name} {detail if detail is not None else ''}")
        return ok

    def skip(self, name: str, why: str) -> None:
        self.data["skipped"][name] = why

    def aim(self, name: str, measured: float | None, aim: float) -> None:
        self.data["aims"][name] = {
            "aim": aim,
            "measured": rnd(measured),
            "met": measured is not None and measured <= aim,
        }

    def save(self) -> None:
        if self.out is not None:
            self.out.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.out.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.data, indent=2) + "\n", encoding="utf-8")
            tmp.replace(self.out)

    @property
    def failed(self) -> list[str]:
        out = []
        for name, value in self.data["checks"].items():
            ok = value["ok"] if isinstance(value, dict) else value
            if not ok:
                out.append(name)
        return out + [f"error in {name}" for name in self.data["errors"]]


# -- timing helpers -------------------------------------------------------------------


def sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def clock(device: str, run: Callable[[], Any]) -> tuple[float, Any]:
    sync(device)
    t = time.perf_counter()
    value = run()
    sync(device)
    return time.perf_counter() - t, value


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def cuda_memory() -> dict[str, int]:
    import torch

    return {
        "allocated": int(torch.cuda.memory_allocated()),
        "reserved": int(torch.cuda.memory_reserved()),
    }


@contextlib.contextmanager
def filler(leave_free: int) -> Iterator[list[Any]]:
    """A tensor that takes the GPU's free memory but ``leave_free`` bytes; the list holds
    it (clear the list to give it back early)."""
    import torch

    torch.cuda.empty_cache()
    free, _total = torch.cuda.mem_get_info()
    take = max(0, free - leave_free) // MIB * MIB
    held = [torch.empty(take, dtype=torch.uint8, device="cuda")] if take else []
    try:
        yield held
    finally:
        held.clear()
        torch.cuda.empty_cache()


# -- 0: the model ------------------------------------------------------------------------


def build_model(plan: Plan) -> dict[str, Any]:
    t = time.perf_counter()
    if plan.dry:
        from image import tiny_folder

        plan.folder = tiny_folder(plan.work)
        plan.dtype = "float32"
    else:
        from image import sd15_folder

        plan.folder = sd15_folder(plan.work, "float16")
        plan.dtype = "float16"
    weights = sum(p.stat().st_size for p in plan.folder.rglob("*.safetensors"))
    return {
        "model": "tiny random-weight pipeline (tests/sd_fixtures.py)"
        if plan.dry
        else "SD 1.5's architecture, random weights",
        "dtype": plan.dtype,
        "weights_mib": round(weights / MIB, 1),
        "build_s": rnd(time.perf_counter() - t, 2),
    }


# -- 1: speed ------------------------------------------------------------------------------


def cold_child(folder: str, device: str, size: int, steps: int) -> None:
    """In a fresh process: import, load, first and second image (JSON on stdout)."""
    t0 = time.perf_counter()
    import diffusers
    import torch
    from diffusers import AutoPipelineForText2Image  # noqa: F401  (the lazy import, resolved)
    from transformers import CLIPTextModel  # noqa: F401

    t_import = time.perf_counter() - t0
    work = Path(tempfile.mkdtemp(prefix="gpu-check-cold-"))
    engine = DiffusionEngine(DiffusionSettings(model=folder, device=device), work)
    phases: list[tuple[str, float]] = []
    t = time.perf_counter()
    engine.load(on_progress=lambda s: phases.append((s.detail or s.state, time.perf_counter())))
    t_load = time.perf_counter() - t
    req = GenerationRequest(PROMPT, width=size, height=size, steps=steps, guidance=7.5, seed=1)
    t_first, _ = clock(device, partial(engine.generate, req))
    t_second, _ = clock(device, partial(engine.generate, replace(req, seed=2)))
    spans = {}
    for (name, start), (_n, end) in itertools.pairwise(phases):
        key = re.sub(r" .*", "", name)  # "reading /path" -> "reading"
        spans[key] = round(end - start, 3)
    print(
        json.dumps(
            {
                "import_s": round(t_import, 3),
                "load_s": round(t_load, 3),
                "load_phases_s": spans,
                "first_image_s": round(t_first, 3),
                "second_image_s": round(t_second, 3),
                "request_to_first_image_s": round(t_import + t_load + t_first, 3),
                "torch": torch.__version__,
                "diffusers": diffusers.__version__,
            }
        )
    )


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    )
    for name in ("OLLAMA_HOST", "LLM_PESSOAL_CONFIG", "LOG_LEVEL", "DEBUG"):
        env.pop(name, None)
    return env


def cold(plan: Plan, report: Report) -> dict[str, Any]:
    cmd = [
        sys.executable, str(Path(__file__).resolve()), "--cold-child", str(plan.folder),
        "--device", plan.device, "--size", str(plan.size), "--steps", str(plan.steps),
    ]  # fmt: skip
    t = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, env=child_env(), timeout=300)
    wall = time.perf_counter() - t
    if res.returncode != 0:
        report.check("cold.runs", False, {"stderr": res.stderr[-2000:]})
        return {"returncode": res.returncode}
    out: dict[str, Any] = json.loads(res.stdout.strip().splitlines()[-1])
    out["process_wall_s"] = round(wall, 3)
    report.check("cold.runs", True)
    if plan.dry:
        # a 0.2 s image on a shared CPU says nothing about warm-up: the figures stay in
        # the report, the check is the GPU run's
        report.skip("cold.second_image_not_slower_than_first", "timing: a GPU check")
    else:
        report.check(
            "cold.second_image_not_slower_than_first",
            out["second_image_s"] <= out["first_image_s"] * 1.25,
            {"first": out["first_image_s"], "second": out["second_image_s"]},
        )
    return out


def components(plan: Plan, pipe: Any, reps: int) -> dict[str, Any]:
    """The UNet step (CFG: batch 2), the VAE decode and one preview, each alone."""
    import torch

    dev, dtype = plan.device, pipe.unet.dtype
    f = int(pipe.vae_scale_factor)
    lat = torch.randn(2, pipe.unet.config.in_channels, plan.size // f, plan.size // f)
    lat = lat.to(dev, dtype)
    emb = torch.randn(2, 77, pipe.unet.config.cross_attention_dim).to(dev, dtype)
    t = torch.tensor(500, device=dev)
    vae = pipe.vae
    times: dict[str, list[float]] = {"unet_step_ms": [], "vae_decode_ms": [], "preview_ms": []}
    with torch.inference_mode():
        for i in range(reps + 1):  # the first of each is a warm-up
            for name, run in (
                ("unet_step_ms", lambda: pipe.unet(lat, t, encoder_hidden_states=emb)),
                ("vae_decode_ms", lambda: vae.decode(lat[:1].to(vae.dtype))),
                ("preview_ms", lambda: latents_to_rgb(lat[0], LATENT_RGB_SD15)),
            ):
                dt, _ = clock(dev, run)
                if i:
                    times[name].append(1000 * dt)
    return {k: rnd(median(v), 3) for k, v in times.items()}


def speed(plan: Plan, report: Report) -> tuple[dict[str, Any], DiffusionEngine]:
    import torch
    from image import bare_pipeline

    out: dict[str, Any] = {
        "size": f"{plan.size}x{plan.size}",
        "steps": plan.steps,
        "guidance": 7.5,
        "scheduler": "Euler a",
        "images_per_variant": plan.images,
    }
    engine = plan.engine("plain")
    t = time.perf_counter()
    engine.load()
    out["engine_load_s"] = rnd(time.perf_counter() - t, 3)
    bare = bare_pipeline(plan.folder, plan.device, engine._pipe.dtype)
    req = plan.request()
    bare(req.prompt, width=req.width, height=req.height, num_inference_steps=1)  # warm-up

    def run_bare(seed: int) -> Any:
        return bare(
            req.prompt, width=req.width, height=req.height, num_inference_steps=req.steps,
            guidance_scale=req.guidance, generator=torch.Generator("cpu").manual_seed(seed),
        ).images[0]  # fmt: skip

    previews = 0

    def on_step(info: StepInfo) -> None:
        nonlocal previews
        previews += info.preview is not None

    # peak memory of one engine image
    if plan.device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        resting = torch.cuda.memory_allocated()
    engine.generate(req)
    if plan.device == "cuda":
        out["peak_gib"] = rnd(torch.cuda.max_memory_allocated() / GIB, 3)
        out["resting_gib"] = rnd(resting / GIB, 3)

    times: dict[str, list[float]] = {"bare": [], "bare_png_save": [], "plain": [], "previews": []}
    same_pixels: list[float] = []
    for i in range(plan.images):
        dt, image = clock(plan.device, partial(run_bare, i))
        times["bare"].append(dt)
        t = time.perf_counter()
        image.save(plan.work / f"bare-{i}.png")  # what a diffusers script does with it
        times["bare_png_save"].append(time.perf_counter() - t)
        dt, result = clock(plan.device, partial(engine.generate, replace(req, seed=i)))
        times["plain"].append(dt)
        same_pixels.append(max_pixel_difference(image, result.images[0].path))
        dt, _ = clock(plan.device, partial(engine.generate, replace(req, seed=i), on_step))
        times["previews"].append(dt)
    m = {k: median(v) for k, v in times.items()}
    out.update(
        bare_s_per_image=rnd(m["bare"]),
        bare_png_save_s=rnd(m["bare_png_save"]),
        engine_s_per_image=rnd(m["plain"]),
        engine_with_previews_s_per_image=rnd(m["previews"]),
        plain_vs_bare=rnd(m["plain"] / m["bare"]),
        plain_vs_bare_with_png_save=rnd(m["plain"] / (m["bare"] + m["bare_png_save"])),
        previews_overhead_pct=rnd(100 * (m["previews"] - m["plain"]) / m["plain"], 2),
        previews_shown=previews,
        each_s={k: [rnd(x) for x in v] for k, v in times.items()},
        max_pixel_difference_vs_bare=max(same_pixels),
    )
    out["components"] = components(plan, engine._pipe, 10 if plan.device == "cuda" else 2)
    report.aim("plain_vs_bare", m["plain"] / m["bare"], AIMS["plain_vs_bare"])
    report.aim(
        "previews_overhead_pct",
        100 * (m["previews"] - m["plain"]) / m["plain"],
        AIMS["previews_overhead_pct"],
    )
    report.check("speed.previews_shown", previews >= plan.images, {"previews": previews})
    # the engine runs the same computation as bare diffusers (so the timings compare like
    # with like): same seed, same pixels, give or take fp16's non-determinism on a GPU
    report.check(
        "speed.same_pixels_as_bare_diffusers",
        max(same_pixels) <= (0 if plan.device == "cpu" else 8),
        {"max_difference": max(same_pixels)},
    )
    bare = None  # its memory back before the fast engine loads
    gc.collect()

    if not plan.fast:
        report.skip("speed.fast", "--no-fast" if not plan.dry else "fast compiles on CUDA only")
    if plan.fast or plan.dry:  # the dry run runs the code path (fast is a no-op off CUDA)
        # on its own: a failure to compile must not lose the figures above
        out["fast"] = section(report, "speed.fast", partial(fast, plan, report, on_step))
    return out, engine


def max_pixel_difference(image: Any, path: Path) -> float:
    import numpy as np
    from PIL import Image

    with Image.open(path) as saved:
        a = np.asarray(saved.convert("RGB"), dtype=np.int16)
    b = np.asarray(image.convert("RGB"), dtype=np.int16)
    return float(np.abs(a - b).max()) if a.shape == b.shape else float("inf")


def fast(plan: Plan, report: Report, on_step: Callable[[StepInfo], None]) -> dict[str, Any]:
    """The ``fast`` engine (channels-last, fused QKV, compiled UNet) against bare diffusers,
    interleaved as in ``speed``."""
    import torch
    from image import bare_pipeline

    engine = plan.engine("fast", fast=True)
    marks: list[tuple[str, float]] = []
    t = time.perf_counter()
    engine.load(on_progress=lambda s: marks.append((s.detail, time.perf_counter())))
    load_s = time.perf_counter() - t
    warm = [m for m in marks if m[0].startswith("warming up")]
    warm_s = (marks[-1][1] - warm[0][1]) if warm else None
    req = plan.request()
    first, _ = clock(plan.device, partial(engine.generate, req))
    bare = bare_pipeline(plan.folder, plan.device, engine._pipe.dtype)
    bare(req.prompt, width=req.width, height=req.height, num_inference_steps=1)

    def run_bare(seed: int) -> Any:
        return bare(
            req.prompt, width=req.width, height=req.height, num_inference_steps=req.steps,
            guidance_scale=req.guidance, generator=torch.Generator("cpu").manual_seed(seed),
        )  # fmt: skip

    times: dict[str, list[float]] = {"bare": [], "fast": [], "fast_previews": []}
    for i in range(plan.images):
        dt, _ = clock(plan.device, partial(run_bare, i))
        times["bare"].append(dt)
        dt, _ = clock(plan.device, partial(engine.generate, replace(req, seed=i)))
        times["fast"].append(dt)
        dt, _ = clock(plan.device, partial(engine.generate, replace(req, seed=i), on_step))
        times["fast_previews"].append(dt)
    m = {k: median(v) for k, v in times.items()}
    compiled = "OptimizedModule" in type(engine._pipe.unet).__name__
    out = {
        "applied": compiled,
        "load_s": rnd(load_s, 3),
        "warm_up_s": rnd(warm_s, 3),
        "first_image_after_load_s": rnd(first),
        "bare_s_per_image": rnd(m["bare"]),
        "fast_s_per_image": rnd(m["fast"]),
        "fast_with_previews_s_per_image": rnd(m["fast_previews"]),
        "fast_vs_bare": rnd(m["fast"] / m["bare"]),
        "each_s": {k: [rnd(x) for x in v] for k, v in times.items()},
    }
    if plan.device == "cuda":
        report.aim("fast_s_per_image", m["fast"], AIMS["fast_s_per_image"])
        report.check("speed.fast_compiled_the_unet", compiled)
    out["unload"] = unload(plan, report, "fast", engine)
    return out


def unload(plan: Plan, report: Report, name: str, engine: DiffusionEngine) -> dict[str, Any]:
    """``unload`` gives the pipeline back: nothing holds it after (the engine froze the
    collector's view of it at load; a cycle through it, say a hook or the compiled UNet's
    cache, would keep it and its GPU memory for good), and on CUDA the memory is free."""
    pipe = weakref.ref(engine._pipe)
    engine.unload()
    out: dict[str, Any] = {"pipeline_freed": pipe() is None}
    if plan.device == "cuda":
        out["allocated_mib_after"] = round(cuda_memory()["allocated"] / MIB, 1)
    report.check(f"unload.{name}_frees_the_pipeline", pipe() is None, out)
    return out


# -- 2: out of memory -------------------------------------------------------------------


def out_of_memory(plan: Plan, report: Report, engine: DiffusionEngine) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if plan.device == "cuda":
        attempts, error, before, after = oom_on_cuda(plan, engine, out)
    else:
        report.skip("out_of_memory.cuda", "no CUDA: a hook in the UNet raises torch's error")
        attempts, error, before, after = oom_simulated(plan, engine, out)
    out["attempts"] = attempts
    if error is None:
        report.check("out_of_memory.raised", False, {"attempts": attempts})
        return out
    out["message"] = str(error)
    out["memory_before"], out["memory_after"] = before, after
    report.check("out_of_memory.raised", True, {"at": attempts[-1]["size"]})
    report.check("out_of_memory.is_out_of_memory_error", isinstance(error, OutOfMemory))
    missing = [a for a in README_ADVICE if a not in str(error)]
    report.check("out_of_memory.readme_advice", not missing, {"missing": missing})
    report.check("out_of_memory.engine_still_ready", engine.status.state == "ready")
    if plan.device == "cuda":
        freed = after["allocated"] - before["allocated"]
        report.check(
            "out_of_memory.freed_what_it_held",
            freed <= 16 * MIB,
            {"allocated_growth_mib": round(freed / MIB, 1)},
        )
        report.check(
            "out_of_memory.cache_given_back",
            after["reserved"] <= before["reserved"] + 64 * MIB,
            {"reserved_growth_mib": round((after["reserved"] - before["reserved"]) / MIB, 1)},
        )
    else:
        report.check("out_of_memory.freed_what_it_held", after["ballast_alive"] is False)
    report.check("out_of_memory.then_a_normal_image", out.get("normal_image_after") == "ok")
    return out


def oom_on_cuda(
    plan: Plan, engine: DiffusionEngine, out: dict[str, Any]
) -> tuple[list[dict[str, Any]], DiffusionError | None, dict[str, Any], dict[str, Any]]:
    import torch

    req = plan.request(steps=2, seed=5)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    resting = torch.cuda.memory_allocated()
    engine.generate(req)
    extra = torch.cuda.max_memory_allocated() - resting  # what one normal image needs
    out["normal_image_needs_mib"] = round(extra / MIB, 1)
    attempts: list[dict[str, Any]] = []
    error: DiffusionError | None = None
    before = after = {}
    for leave in (extra + GIB, extra + 256 * MIB):  # a second, tighter try if none raised
        with filler(leave) as held:
            out["filler_gib"] = round(sum(h.numel() for h in held) / GIB, 2)
            for size in plan.oom_sizes:
                before = cuda_memory()
                t = time.perf_counter()
                try:
                    engine.generate(replace(req, width=size, height=size))
                except DiffusionError as exc:
                    error = exc  # held, as the app's worker holds the error it reports
                    after = cuda_memory()
                    attempts.append(
                        {"size": size, "raised": True, "s": rnd(time.perf_counter() - t, 2)}
                    )
                    break
                attempts.append({"size": size, "raised": False})
            if error is not None:
                # in the same process, the filler still there: a normal image
                try:
                    engine.generate(replace(req, seed=6))
                    out["normal_image_after"] = "ok"
                except DiffusionError as exc:
                    out["normal_image_after"] = str(exc)
                break
    return attempts, error, before, after


def oom_simulated(
    plan: Plan, engine: DiffusionEngine, out: dict[str, Any]
) -> tuple[list[dict[str, Any]], DiffusionError | None, dict[str, Any], dict[str, Any]]:
    """No GPU: the UNet raises torch's OutOfMemoryError above a "capacity", after it took
    a tensor that only the pipeline's frames hold (as CUDA's activations are held)."""
    import torch

    pipe = engine._pipe
    factor = int(pipe.vae_scale_factor)
    capacity = plan.oom_sizes[1] ** 2  # the second size is the first that does not fit
    ballast: list[weakref.ref[Any]] = []

    def hook(_module: Any, args: tuple[Any, ...]) -> None:
        sample = args[0]
        pixels = sample.shape[-1] * sample.shape[-2] * factor * factor
        held = torch.ones(sample.shape[0], 64, *sample.shape[-2:])  # only this frame holds it
        if pixels >= capacity:
            ballast.append(weakref.ref(held))
            raise torch.OutOfMemoryError(
                "CUDA out of memory. Tried to allocate 2.00 GiB (simulated by gpu_check)"
            )

    out["simulated_capacity_pixels"] = capacity
    handle = pipe.unet.register_forward_pre_hook(hook)
    attempts: list[dict[str, Any]] = []
    error: DiffusionError | None = None
    after: dict[str, Any] = {}
    try:
        for size in plan.oom_sizes:
            try:
                engine.generate(plan.request(width=size, height=size, steps=2, seed=5))
            except DiffusionError as exc:
                error = exc
                after = {"ballast_alive": ballast[-1]() is not None if ballast else None}
                attempts.append({"size": size, "raised": True})
                break
            attempts.append({"size": size, "raised": False})
    finally:
        handle.remove()
    try:
        engine.generate(plan.request(steps=2, seed=6))
        out["normal_image_after"] = "ok"
    except DiffusionError as exc:
        out["normal_image_after"] = str(exc)
    return attempts, error, {}, after


# -- 3: sharing the GPU with Ollama -------------------------------------------------------


def write_config(plan: Plan, where: Path, host: str, **diffusion: Any) -> Path:
    def value(v: Any) -> str:
        return ("true" if v else "false") if isinstance(v, bool) else json.dumps(v)

    sections = {
        "ollama": {"host": host, "timeout": 10, "retry_interval": 0.5},
        "diffusion": {
            "model": str(plan.folder),
            "device": plan.device,
            "width": plan.size,
            "height": plan.size,
            "steps": plan.steps,
            **diffusion,
        },
        "paths": {k: str(where / k) for k in ("outputs", "logs", "exports", "cache")}
        | {"database": str(where / "data" / "llm-pessoal.db")},
    }
    text = "".join(
        f"[{name}]\n" + "".join(f"{k} = {value(v)}\n" for k, v in keys.items()) + "\n"
        for name, keys in sections.items()
    )
    path = where / "config.toml"
    where.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


class FreedOnUnload:
    """Stands for the memory of Ollama's model: freed ``delay`` s after the server got
    ``keep_alive: 0`` (Ollama answers at once, its runner frees the GPU a moment later)."""

    def __init__(self, fake: Any, release: Callable[[], None], delay: float) -> None:
        self.fake, self.release, self.delay = fake, release, delay
        self.unload_seen_at: float | None = None
        self.freed_at: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="freed-on-unload", daemon=True)
        self._thread.start()

    def unload_requests(self) -> list[dict[str, Any]]:
        return [
            r.body
            for r in list(self.fake.requests)
            if r.path == "/api/generate"
            and isinstance(r.body, dict)
            and r.body.get("keep_alive") == 0
        ]

    def _watch(self) -> None:
        while not self._stop.is_set() and not self.unload_requests():
            time.sleep(0.02)
        if self._stop.is_set():
            return
        self.unload_seen_at = time.monotonic()
        time.sleep(self.delay)
        self.release()
        self.freed_at = time.monotonic()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def ollama_sharing(plan: Plan, report: Report) -> dict[str, Any]:
    from ollama_server import FakeOllama

    out: dict[str, Any] = {}
    fake = FakeOllama().start()
    try:
        fake.set_loaded([OLLAMA_MODEL])
        ps = fake._ps()["models"]
        out["ollama_reported"] = [{k: m[k] for k in ("name", "size_vram")} for m in ps]
        config = write_config(plan, plan.work / "app-ollama", fake.url, unload_ollama_models=True)
        if plan.device == "cuda":
            asyncio.run(sharing_on_cuda(plan, report, fake, config, out))
        else:
            report.skip(
                "ollama_sharing.cuda",
                "no CUDA: the app loads on the CPU (where nothing is unloaded), then the "
                "engine's room check runs with a stand-in for the GPU's free memory",
            )
            asyncio.run(sharing_simulated(plan, report, fake, config, out))
    finally:
        fake.stop()
    return out


def make_app(config: Path) -> Any:
    from engines.config import load_settings
    from tui.app import LlmPessoalApp, open_store

    settings = load_settings(config, env={})
    store, warnings = open_store(settings)
    return LlmPessoalApp(settings, store, warnings=warnings)


async def watch_load(app: Any, worker: Any, timeout: float) -> list[str]:
    """Wait for the preload worker; the engine's distinct status lines meanwhile."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while not worker.is_finished and time.monotonic() < deadline:
        detail = app.diffusion.status.detail
        if detail and (not seen or seen[-1] != detail):
            seen.append(detail)
        await asyncio.sleep(0.02)
    return seen


def sharing_checks(
    report: Report, watcher: FreedOnUnload, fake: Any, notes: list[str], out: dict[str, Any]
) -> None:
    unloads = watcher.unload_requests()
    out["unload_requests"] = unloads
    report.check(
        "ollama_sharing.asked_to_unload",
        any(b.get("model") == OLLAMA_MODEL for b in unloads),
        {"requests": [f"{r.method} {r.path}" for r in list(fake.requests)]},
    )
    report.check("ollama_sharing.model_unloaded", OLLAMA_MODEL not in fake.loaded)
    said = [n for n in notes if "unloaded Ollama models" in n and OLLAMA_MODEL in n]
    report.check("ollama_sharing.says_so", bool(said), {"notes": notes})


async def sharing_on_cuda(
    plan: Plan, report: Report, fake: Any, config: Path, out: dict[str, Any]
) -> None:
    import torch

    weights = sum(p.stat().st_size for p in plan.folder.rglob("*.safetensors"))
    with filler(weights // 2) as held:  # not even the weights fit
        out["free_before_gib"] = round(torch.cuda.mem_get_info()[0] / GIB, 2)

        def give_back() -> None:
            held.clear()
            torch.cuda.empty_cache()

        watcher = FreedOnUnload(fake, give_back, delay=1.0)
        app = make_app(config)
        try:
            async with app.run_test(size=(120, 40)):
                t = time.monotonic()
                worker = app.preload_pipeline()
                out["status_lines"] = await watch_load(app, worker, 180)
                ready_at = time.monotonic()
                status = app.diffusion.status
                out["load_s"] = round(ready_at - t, 2)
                out["state"] = status.state
                out["detail"] = status.detail
                report.check(
                    "ollama_sharing.loaded", status.state == "ready", {"status": status.describe()}
                )
                if watcher.freed_at is not None:
                    report.check(
                        "ollama_sharing.loaded_once_the_room_was_back", ready_at > watcher.freed_at
                    )
                notes = list(app.diffusion.notes)
                if status.state == "ready":
                    result = await asyncio.to_thread(app.diffusion.generate, plan.request(seed=9))
                    notes = result.notes
                    report.check("ollama_sharing.then_an_image", len(result.images) == 1)
                sharing_checks(report, watcher, fake, notes, out)
                app.diffusion.unload()
        finally:
            watcher.stop()


async def sharing_simulated(
    plan: Plan, report: Report, fake: Any, config: Path, out: dict[str, Any]
) -> None:
    app = make_app(config)
    room = {"free": 0}

    def give_back() -> None:
        room["free"] = 1 << 50

    watcher = FreedOnUnload(fake, give_back, delay=0.5)
    try:
        async with app.run_test(size=(120, 40)):
            worker = app.preload_pipeline()
            out["status_lines"] = await watch_load(app, worker, 120)
            engine = app.diffusion
            report.check("ollama_sharing.loaded", engine.status.state == "ready")
            report.check(
                "ollama_sharing.cpu_unloads_nothing", not watcher.unload_requests()
            )  # the CPU does not share Ollama's GPU memory
            # The room check as it runs on CUDA before the weights move there, with the
            # GPU's free memory read from the stand-in; make_room is the app's own.
            engine._gpu_free_bytes = lambda: room["free"]
            lines: list[str] = []
            t = time.monotonic()
            await asyncio.to_thread(
                engine._ensure_room, engine._pipe, engine._pipe.dtype, lambda _p, d: lines.append(d)
            )
            done_at = time.monotonic()
            out["room_check_s"] = round(done_at - t, 2)
            out["room_status_lines"] = list(dict.fromkeys(lines))
            report.check(
                "ollama_sharing.loaded_once_the_room_was_back",
                watcher.freed_at is not None and done_at >= watcher.freed_at,
            )
            result = await asyncio.to_thread(engine.generate, plan.request(seed=9))
            report.check("ollama_sharing.then_an_image", len(result.images) == 1)
            sharing_checks(report, watcher, fake, result.notes, out)
            engine.unload()
    finally:
        watcher.stop()


# -- 4: the Monitor ------------------------------------------------------------------------


def monitor(plan: Plan, report: Report, engine: DiffusionEngine) -> dict[str, Any]:
    from engines.monitor import Sampler

    sampler = Sampler(None)
    without_gpu = Sampler(None, gpus=False)
    samples: list[Any] = []
    costs: list[tuple[float, float]] = []
    stop = threading.Event()

    def sample_loop() -> None:
        while not stop.is_set():
            t, c = time.perf_counter(), time.thread_time()
            samples.append(sampler.sample())
            costs.append((time.perf_counter() - t, time.thread_time() - c))
            stop.wait(0.2)

    thread = threading.Thread(target=sample_loop, name="sampler", daemon=True)
    thread.start()
    stop.wait(0.5)
    started = len(samples)
    busy_from = time.time()
    for i in range(3 if plan.device == "cuda" else 1):
        engine.generate(plan.request(seed=20 + i))
    busy_to = time.time()
    stop.set()
    thread.join(5)
    base: list[float] = []
    for _ in range(5):
        t = time.perf_counter()
        without_gpu.sample()
        base.append(time.perf_counter() - t)
    sampler.close()
    without_gpu.close()

    out: dict[str, Any] = {
        "samples": len(samples),
        "during_generation": len(samples) - started,
        "sample_ms": {
            "median": rnd(1000 * median([c[0] for c in costs]), 3),
            "max": rnd(1000 * max(c[0] for c in costs), 3),
            "cpu_median": rnd(1000 * median([c[1] for c in costs]), 3),
            "without_gpus_median": rnd(1000 * median(base), 3),
        },
        "gpu_note": sampler.gpu_note,
    }
    last = samples[-1]
    report.check(
        "monitor.cpu_and_memory_in_range",
        0 <= last.cpu.total <= 100 and 0 < last.memory.used <= last.memory.total,
    )
    report.check("monitor.this_process", last.process.pid == os.getpid() and last.process.rss > 0)
    if plan.device != "cuda":
        report.skip("monitor.gpu", f"no CUDA ({sampler.gpu_note or 'no GPU figures'})")
        report.check("monitor.says_why_no_gpu", not last.gpus and bool(sampler.gpu_note))
        return out
    busy = [s for s in samples if busy_from <= s.time <= busy_to]
    gpus = [g for s in samples for g in s.gpus]
    if not report.check("monitor.gpu_figures", bool(gpus), {"note": sampler.gpu_note}):
        return out
    bad = []
    for g in gpus:
        if not 0 <= g.utilization <= 100:
            bad.append(f"utilization {g.utilization}")
        if not 0 < g.memory_used <= g.memory_total:
            bad.append(f"memory {g.memory_used}/{g.memory_total}")
        if g.temperature is not None and not 0 < g.temperature < 120:
            bad.append(f"temperature {g.temperature}")
        limit = g.power_limit_w or 1500.0
        if g.power_w is not None and not 0 < g.power_w <= 1.5 * limit:
            bad.append(f"power {g.power_w} W (limit {g.power_limit_w})")
    report.check("monitor.figures_in_nvml_ranges", not bad, {"out_of_range": bad[:10]})
    first = gpus[-1]
    out["gpu"] = {
        "name": first.name,
        "memory_total_gib": round(first.memory_total / GIB, 1),
        "power_limit_w": first.power_limit_w,
        "utilization_during_generation": [g.utilization for s in busy for g in s.gpus],
        "temperature_c": sorted({g.temperature for g in gpus if g.temperature is not None}),
        "power_w_max": max((g.power_w or 0.0) for g in gpus),
    }
    report.check(
        "monitor.busy_while_generating",
        any(g.utilization > 0 for s in busy for g in s.gpus),
        {"samples_during": len(busy)},
    )
    import torch

    mine = [p for s in samples for g in s.gpus for p in g.processes if p.pid == os.getpid()]
    seen = sorted(
        {(p.pid, p.name, p.used_memory) for s in samples[-2:] for g in s.gpus for p in g.processes}
    )
    out["processes_seen"] = [list(p) for p in seen]
    out["this_process_gpu_memory_mib"] = round(mine[-1].used_memory / MIB, 1) if mine else None
    out["torch_reserved_mib"] = round(torch.cuda.memory_reserved() / MIB, 1)
    report.check(
        "monitor.this_app_among_gpu_processes",
        bool(mine) and mine[-1].role == "this app" and mine[-1].used_memory > 0,
        {"pid": os.getpid(), "seen": out["processes_seen"]},
    )
    return out


# -- 5: the CLI ----------------------------------------------------------------------------


def cli(plan: Plan, report: Report) -> dict[str, Any]:
    from engines.images import read_parameters

    where = plan.work / "cli"
    config = write_config(plan, where, "http://127.0.0.1:9")
    outdir = where / "pngs"
    seed, negative = 4242, "blurry, low quality"
    cmd = [
        sys.executable, "-m", "tui.cli", "--config", str(config), "image", PROMPT,
        "--negative-prompt", negative, "--width", str(plan.size), "--height", str(plan.size),
        "--steps", str(plan.steps), "--guidance", "7.5", "--seed", str(seed),
        "--scheduler", "DPM++ 2M Karras", "--out", str(outdir),
    ]  # fmt: skip
    t = time.perf_counter()
    res = subprocess.run(
        cmd, capture_output=True, text=True, env=child_env(), timeout=300, cwd=where
    )
    out: dict[str, Any] = {"seconds": rnd(time.perf_counter() - t, 2), "returncode": res.returncode}
    paths = [Path(line) for line in res.stdout.splitlines() if line.strip()]
    if not report.check(
        "cli.one_png", res.returncode == 0 and len(paths) == 1 and paths[0].is_file(),
        {"stdout": res.stdout[-500:], "stderr": res.stderr[-1500:]},
    ):  # fmt: skip
        return out
    from PIL import Image

    with Image.open(paths[0]) as im:
        out["png_size"] = list(im.size)
    params = read_parameters(paths[0])
    out["parameters"] = params.to_text()
    expected = {
        "prompt": PROMPT,
        "negative_prompt": negative,
        "width": plan.size,
        "height": plan.size,
        "steps": plan.steps,
        "guidance": 7.5,
        "seed": seed,
        "scheduler": "DPM++ 2M Karras",
        "model": plan.folder.name,
    }
    wrong = {k: getattr(params, k) for k, v in expected.items() if getattr(params, k) != v}
    report.check("cli.parameters", not wrong, {"wrong": wrong})
    report.check("cli.png_size", out["png_size"] == [plan.size, plan.size])
    return out


# -- the run ----------------------------------------------------------------------------------


def section(report: Report, name: str, run: Callable[[], Any]) -> Any:
    log(f"{name} ...")
    t = time.perf_counter()
    value = None
    try:
        value = run()
    except Exception as exc:
        report.data["errors"][name] = {
            "error": f"{type(exc).__name__}: {exc}",
            "traceback": traceback.format_exc().splitlines()[-12:],
        }
        log(f"{name} failed: {type(exc).__name__}: {exc}")
    finally:
        report.data.setdefault("section_s", {})[name] = round(time.perf_counter() - t, 1)
        report.save()
    return value


def environment(plan: Plan) -> dict[str, Any]:
    import platform

    import diffusers
    import torch

    env: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "device": plan.device,
    }
    if plan.device == "cuda":
        props = torch.cuda.get_device_properties(0)
        env["gpu"] = props.name
        env["gpu_memory_gib"] = round(props.total_memory / GIB, 1)
        env["cuda"] = torch.version.cuda
    return env


def run(plan: Plan, report: Report) -> None:
    started = time.perf_counter()
    d = report.data
    d["benchmark"] = "gpu_check"
    d["mode"] = "cpu-dry-run" if plan.dry else "cuda"
    d["environment"] = environment(plan)
    d["anchor_h200"] = ANCHOR_H200
    d["model"] = section(report, "model", lambda: build_model(plan))
    if not plan.folder.exists():
        return
    d["cold"] = section(report, "cold", lambda: cold(plan, report))
    got = section(report, "speed", lambda: speed(plan, report))
    if got is not None:
        d["speed"], engine = got
    else:  # speed failed: a plain engine for what follows
        engine = plan.engine("plain")
        section(report, "load", engine.load)
    if engine.loaded:
        d["monitor"] = section(report, "monitor", partial(monitor, plan, report, engine))
        d["out_of_memory"] = section(
            report, "out_of_memory", partial(out_of_memory, plan, report, engine)
        )
        d["unload"] = section(report, "unload", partial(unload, plan, report, "plain", engine))
    engine.unload()
    d["ollama_sharing"] = section(report, "ollama_sharing", lambda: ollama_sharing(plan, report))
    d["cli"] = section(report, "cli", lambda: cli(plan, report))
    total = time.perf_counter() - started
    d["total_s"] = round(total, 1)
    if not plan.dry:
        report.check("run.within_8_minutes", total <= LIMIT_S, {"seconds": round(total, 1)})
    d["failed"] = report.failed
    d["passed"] = not d["failed"]
    report.save()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-dry-run", action="store_true", help="the tiny pipeline on the CPU")
    parser.add_argument("--no-fast", action="store_true", help="leave out the compiled UNet")
    parser.add_argument("-n", "--images", type=int, help="images per variant (8; dry run 2)")
    parser.add_argument("--out", type=Path, help="also write the JSON here, after each section")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--cold-child", metavar="MODEL", help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cuda", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, default=512, help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=20, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.cold_child:
        cold_child(args.cold_child, args.device, args.size, args.steps)
        return 0

    import torch

    if not args.cpu_dry_run and not torch.cuda.is_available():
        print("no CUDA GPU here: use --cpu-dry-run", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    if args.cpu_dry_run:
        plan = Plan(
            dry=True, device="cpu", size=64, steps=3, images=args.images or 2, fast=False,
            oom_sizes=(64, 128, 192), work=work,
        )  # fmt: skip
    else:
        plan = Plan(
            dry=False, device="cuda", size=512, steps=20, images=args.images or 8,
            fast=not args.no_fast, oom_sizes=(768, 1024, 1536, 2048), work=work,
        )  # fmt: skip
    report = Report(args.out)
    try:
        run(plan, report)
    finally:
        if not args.keep:
            import shutil

            shutil.rmtree(work, ignore_errors=True)
        else:
            report.data["work"] = str(work)
    print(json.dumps(report.data, indent=2))
    return 0 if report.data.get("passed") else 1


if __name__ == "__main__":
    sys.exit(main())
