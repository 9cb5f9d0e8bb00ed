"""Image generation figures, printed as JSON.

1. The engine against bare diffusers on the same pipeline in the same run: seconds per
   image, and the engine's overhead (its step callback, the PNG with its metadata, the
   index) with and without step previews.
1b. The same, interleaved, for plain prompts, img2img, a LoRA and a weighted prompt in
   AUTOMATIC1111's syntax (bare diffusers gets the same words without the syntax), and the
   prompt's parsing and encoding (compel) against diffusers' own ``encode_prompt``.
2. The UI's responsiveness while an image generates on the CPU: keys typed into the form
   under a real pty, and the time until each shows on the emulated screen.
3. With ``--sd15`` (meant for a GPU): SD 1.5's exact architecture with random weights,
   fp16, 512x512, 20 steps, guidance 7.5: plain, with previews, with ``fast``, peak GPU
   memory, and request to first image on a cold engine.

The pipeline on the CPU is the tests' tiny random-weight one (no weights can be
downloaded here): its steps are short, so its overhead figures are a worst case.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "bench")]

from engines.config import DiffusionSettings  # noqa: E402
from engines.diffusion import DiffusionEngine, GenerationRequest  # noqa: E402


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def tiny_folder(work: Path) -> Path:
    from sd_fixtures import build_tiny_pipeline_folder

    return build_tiny_pipeline_folder(work / "tiny-sd")


def sd15_folder(work: Path, dtype: str) -> Path:
    """SD 1.5's architecture with random weights (same cost per step as the real one)."""
    import torch
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from sd_fixtures import write_tiny_clip_tokenizer_files
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
        block_out_channels=(320, 640, 1280, 1280),
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=768, attention_head_dim=8,
    )  # fmt: skip
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(128, 256, 512, 512), sample_size=512,
    )  # fmt: skip
    text = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=49408,
            hidden_size=768,
            intermediate_size=3072,
            num_hidden_layers=12,
            num_attention_heads=12,
            max_position_embeddings=77,
            hidden_act="quick_gelu",
        )
    )
    tokenizer_dir = write_tiny_clip_tokenizer_files(work / "tokenizer-files")
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text, tokenizer=CLIPTokenizer.from_pretrained(tokenizer_dir),
        unet=unet, scheduler=EulerDiscreteScheduler(
            beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
            num_train_timesteps=1000, steps_offset=1,
        ),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )  # fmt: skip
    folder = work / "sd15-random"
    pipe.to(getattr(torch, dtype) if dtype != "auto" else torch.float16)
    pipe.save_pretrained(folder)
    return folder


def bare_pipeline(folder: Path, device: str, dtype: Any) -> Any:
    """The same model with diffusers alone, as its documentation shows."""
    from diffusers import AutoPipelineForText2Image, EulerAncestralDiscreteScheduler

    pipe = AutoPipelineForText2Image.from_pretrained(
        str(folder), dtype=dtype, local_files_only=True
    )
    pipe.scheduler = EulerAncestralDiscreteScheduler.from_config(pipe.scheduler.config)
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def timed(device: str, run: Any) -> float:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    run()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t


def overhead(
    device: str, folder: Path, req: GenerationRequest, n: int, fast: bool = False
) -> dict[str, Any]:
    """Bare diffusers, the engine, and the engine with previews, run in turn (so a busy
    moment of the machine falls on all three alike)."""
    import torch

    work = Path(tempfile.mkdtemp(prefix="llmp-bench-image-"))
    engine = DiffusionEngine(
        DiffusionSettings(model=str(folder), device=device, fast=fast), work / "outputs"
    )
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    engine.load()
    engine.generate(replace(req, seed=123))
    cold = time.perf_counter() - t
    peak = torch.cuda.max_memory_allocated() if device == "cuda" else None
    pipe = bare_pipeline(folder, device, engine._pipe.dtype)
    pipe(req.prompt, width=req.width, height=req.height, num_inference_steps=1)  # warm-up
    shown = 0

    def on_step(info: Any) -> None:
        nonlocal shown
        shown += info.preview is not None

    bare, plain, previews = [], [], []
    for i in range(n):
        bare.append(timed(device, lambda i=i: pipe(
            req.prompt, width=req.width, height=req.height, num_inference_steps=req.steps,
            guidance_scale=req.guidance, generator=torch.Generator("cpu").manual_seed(i),
        ).images[0]))  # fmt: skip
        plain.append(timed(device, lambda i=i: engine.generate(replace(req, seed=i))))
        previews.append(
            timed(device, lambda i=i: engine.generate(replace(req, seed=i), on_step=on_step))
        )
    b, e, p = statistics.median(bare), statistics.median(plain), statistics.median(previews)
    return {
        "device": device,
        "size": f"{req.width}x{req.height}",
        "steps": req.steps,
        "images": n,
        "bare_diffusers_s_per_image": round(b, 4),
        "engine_s_per_image": round(e, 4),
        "engine_with_previews_s_per_image": round(p, 4),
        "engine_overhead_pct": round(100 * (e - b) / b, 2),
        "engine_with_previews_overhead_pct": round(100 * (p - b) / b, 2),
        "previews_shown": shown,
        "cold_engine_request_to_first_image_s": round(cold, 3),
        "fast": fast,
        "peak_gpu_memory_gib": round(peak / 2**30, 2) if peak else None,
    }


WEIGHTED = "a (red:1.3) fox in the [snow], ((high quality)), detailed"
WEIGHTED_PLAIN = "a red fox in the snow, high quality, detailed"


def variants(device: str, folder: Path, steps: int, n: int) -> dict[str, Any]:
    """Plain, img2img, LoRA and weighted prompts: the engine and bare diffusers in turn."""
    import torch
    from diffusers import AutoPipelineForImage2Image
    from PIL import Image
    from sd_fixtures import build_tiny_lora

    work = Path(tempfile.mkdtemp(prefix="llmp-bench-variants-"))
    lora = build_tiny_lora(folder, work / "loras" / "ink.safetensors")
    init = work / "init.png"
    Image.new("RGB", (64, 64), (180, 60, 40)).save(init)

    def engine(**extra: Any) -> DiffusionEngine:
        e = DiffusionEngine(
            DiffusionSettings(model=str(folder), device=device), work / "outputs", **extra
        )
        e.load()
        return e

    main, with_lora = engine(), engine(loras=work / "loras")
    bare = bare_pipeline(folder, device, main._pipe.dtype)
    bare_i2i = AutoPipelineForImage2Image.from_pipe(bare)
    bare_i2i.set_progress_bar_config(disable=True)
    bare_lora = bare_pipeline(folder, device, main._pipe.dtype)
    bare_lora.load_lora_weights(str(lora), adapter_name="ink")
    bare_lora.set_adapters(["ink"], adapter_weights=[0.8])
    base = GenerationRequest(
        WEIGHTED_PLAIN, width=64, height=64, steps=steps, guidance=7.5, scheduler="Euler a"
    )
    image = Image.open(init).convert("RGB")

    def gen(i: int) -> Any:
        return torch.Generator("cpu").manual_seed(i)

    common = {"width": 64, "height": 64, "num_inference_steps": steps, "guidance_scale": 7.5}
    runs: dict[str, tuple[Any, Any]] = {
        "plain": (
            lambda i: bare(WEIGHTED_PLAIN, generator=gen(i), **common),
            lambda i: main.generate(replace(base, seed=i)),
        ),
        "img2img": (
            lambda i: bare_i2i(
                WEIGHTED_PLAIN,
                image=image,
                strength=0.5,
                generator=gen(i),
                num_inference_steps=steps,
                guidance_scale=7.5,
            ),
            lambda i: main.generate(replace(base, seed=i, init_image=str(init), strength=0.5)),
        ),
        "lora": (
            lambda i: bare_lora(WEIGHTED_PLAIN, generator=gen(i), **common),
            lambda i: with_lora.generate(
                replace(base, prompt=WEIGHTED_PLAIN + " <lora:ink:0.8>", seed=i)
            ),
        ),
        "weighted_prompt": (
            lambda i: bare(WEIGHTED_PLAIN, generator=gen(i), **common),
            lambda i: main.generate(replace(base, prompt=WEIGHTED, seed=i)),
        ),
    }
    times: dict[str, tuple[list[float], list[float]]] = {k: ([], []) for k in runs}
    for b, e in runs.values():  # warm each path once
        b(0)
        e(0)
    for i in range(n):
        for name, (b, e) in runs.items():
            times[name][0].append(timed(device, lambda b=b, i=i: b(i)))
            times[name][1].append(timed(device, lambda e=e, i=i: e(i)))
    out: dict[str, Any] = {"device": device, "steps": steps, "images": n, "size": "64x64"}
    for name, (b_list, e_list) in times.items():
        b_med, e_med = statistics.median(b_list), statistics.median(e_list)
        b_min, e_min = min(b_list), min(e_list)
        out[name] = {
            "bare_diffusers_s_per_image": round(b_med, 4),
            "engine_s_per_image": round(e_med, 4),
            "engine_overhead_pct": round(100 * (e_med - b_med) / b_med, 2),
            # the fastest of each: what is left when the shared machine's noise is not
            "engine_overhead_pct_of_fastest": round(100 * (e_min - b_min) / b_min, 2),
        }
    # the prompt alone: diffusers' encode_prompt against the engine's parse + compel
    assert main._encoder is not None
    encode: dict[str, list[float]] = {"bare": [], "plain": [], "weighted": []}
    with torch.no_grad():
        for _ in range(max(20, n * 4)):
            encode["bare"].append(timed(device, lambda: bare.encode_prompt(
                WEIGHTED_PLAIN, device, 1, True, ""
            )))  # fmt: skip
            encode["plain"].append(
                timed(device, lambda: main._encoder.encode(WEIGHTED_PLAIN, ""))  # type: ignore[union-attr]
            )
            encode["weighted"].append(
                timed(device, lambda: main._encoder.encode(WEIGHTED, ""))  # type: ignore[union-attr]
            )
    ms = {k: 1000 * statistics.median(v) for k, v in encode.items()}
    out["prompt_encoding"] = {
        "bare_encode_prompt_ms": round(ms["bare"], 2),
        "engine_plain_prompt_ms": round(ms["plain"], 2),
        "engine_weighted_prompt_ms": round(ms["weighted"], 2),
        "weighted_over_bare_ms_per_image": round(ms["weighted"] - ms["bare"], 2),
        "aim_ms": 5,
    }
    out["aim_overhead_pct"] = 3
    return out


def responsiveness(folder: Path, keys: int) -> dict[str, Any]:
    """Keys typed into the form while the CPU generates: time until each is on screen."""
    from common import APP, Terminal, clean_env, tempdir

    work = tempdir("image-ui")
    cfg = work / "config.toml"
    cfg.write_text(
        '[ollama]\nhost = "http://127.0.0.1:9"\n'
        f'[diffusion]\nmodel = "{folder}"\ndevice = "cpu"\nwidth = 256\nheight = 256\nsteps = 150\n'
        '[paths]\noutputs = "outputs"\nlogs = "logs"\ndatabase = "data/bench.db"\n'
    )
    latencies: list[float] = []
    with Terminal([str(APP), "--config", str(cfg), "--screen", "image"], env=clean_env()) as term:
        if term.wait_visible(["What to draw"], 20) is None:
            raise RuntimeError("the Image screen never showed")
        term.type("zq")  # a prompt no other text on the screen holds
        term.wait_visible(["zq"], 5)
        term.write("\x07")  # Ctrl+G: generate
        if term.wait_visible(["steps/s"], 120) is None:
            raise RuntimeError("generation never started")
        typed = "zq"
        for i in range(keys):
            ch = "bcdefghijklmnopqrstuvwxyz"[i % 25]
            typed += ch
            sent = time.time()
            term.write(ch)
            shown = term.wait_visible([typed[-12:]], 10)
            latencies.append((shown - sent) if shown else float("inf"))
            time.sleep(0.25)
        still_generating = term.visible("steps/s")
        term.write("\x1b")  # Esc: stop
    in_order = [round(1000 * x, 1) for x in latencies]
    latencies.sort()
    return {
        "each_ms": in_order,
        "keys": keys,
        "median_ms": round(1000 * statistics.median(latencies), 1),
        "p90_ms": round(1000 * latencies[int(0.9 * (len(latencies) - 1))], 1),
        "max_ms": round(1000 * latencies[-1], 1),
        "generating_throughout": still_generating,
        "aim_ms": 100,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", type=int, default=8, help="images per variant")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--keys", type=int, default=20, help="keys typed while generating")
    parser.add_argument("--sd15", action="store_true", help="SD 1.5's architecture (for a GPU)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--skip-ui", action="store_true")
    parser.add_argument("--skip-variants", action="store_true")
    args = parser.parse_args()

    from engines.diffusion import resolve_device

    device = resolve_device(args.device)
    work = Path(tempfile.mkdtemp(prefix="llmp-bench-image-"))
    result: dict[str, Any] = {"device": device}
    if args.sd15:
        log("building SD 1.5's architecture with random weights")
        folder = sd15_folder(work, "float16" if device == "cuda" else "float32")
        req = GenerationRequest(
            "a photo of an astronaut riding a horse", width=512, height=512, steps=20, guidance=7.5
        )
        result["sd15_plain"] = overhead(device, folder, req, args.n)
        if device == "cuda":
            result["sd15_fast"] = overhead(device, folder, req, args.n, fast=True)
    else:
        folder = tiny_folder(work)
        req = GenerationRequest("a red fox in the snow", width=64, height=64, steps=args.steps)
        log(f"engine against bare diffusers, tiny pipeline, {args.n} images each")
        result["tiny_pipeline"] = overhead(device, folder, req, args.n)
        if not args.skip_variants:
            log("plain, img2img, LoRA and weighted prompts, engine and bare diffusers in turn")
            result["tiny_variants"] = variants(device, folder, args.steps, args.n)
        if not args.skip_ui and device == "cpu":
            log("the UI's responsiveness while generating on the CPU")
            result["ui_while_generating"] = responsiveness(folder, args.keys)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    threading.excepthook = lambda a: None
    main()
