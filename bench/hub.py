"""Downloading an image model: the app (``llm-pessoal image-models pull``) against
``hf download`` of the same files from the same local hub server, in the same run.

The server is tests/hub_server.py in a process of its own, serving a synthetic diffusers repo
(random bytes; sizes in SD 1.5's proportions, scaled by ``--mb``) laid out as SD 1.5's repo is,
with the extras the app leaves alone (fp16 copies, a .ckpt, EMA weights). ``hf download`` is
given exactly the files the app chose, so both move the same bytes. Each round runs both, in
alternating order, into fresh caches; the figures are wall times of the whole command (process
start included) and the transfer rate. JSON on stdout.

    .venv/bin/python bench/hub.py                 # 1 GB, 3 rounds
    .venv/bin/python bench/hub.py --mb 3000 -n 5
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PY = ROOT / ".venv" / "bin" / "python"
HF = ROOT / ".venv" / "bin" / "hf"
REPO = "bench/sd15-like"
# SD 1.5's fp32 weights, in proportion (unet 3.44 GB, text encoder 0.49 GB, vae 0.33 GB)
SHARES = {
    "unet/diffusion_pytorch_model.safetensors": 0.806,
    "text_encoder/model.safetensors": 0.115,
    "vae/diffusion_pytorch_model.safetensors": 0.079,
}
EXTRAS = {  # what the app must not download (a share of --mb each)
    "unet/diffusion_pytorch_model.fp16.safetensors": 0.4,
    "v1-5-pruned-emaonly.ckpt": 0.3,
    "unet/diffusion_pytorch_model.non_ema.bin": 0.2,
}
CONFIGS = {
    "unet/config.json": {"_class_name": "UNet2DConditionModel"},
    "vae/config.json": {"_class_name": "AutoencoderKL"},
    "text_encoder/config.json": {"architectures": ["CLIPTextModel"]},
    "scheduler/scheduler_config.json": {"_class_name": "PNDMScheduler"},
    "tokenizer/tokenizer_config.json": {"model_max_length": 77},
    "tokenizer/vocab.json": {"a": 0},
    "safety_checker/config.json": {},
}
MODEL_INDEX = {
    "_class_name": "StableDiffusionPipeline",
    "scheduler": ["diffusers", "PNDMScheduler"],
    "text_encoder": ["transformers", "CLIPTextModel"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "unet": ["diffusers", "UNet2DConditionModel"],
    "vae": ["diffusers", "AutoencoderKL"],
    "safety_checker": ["stable_diffusion", "StableDiffusionSafetyChecker"],
    "feature_extractor": [None, None],
}

SERVER = """
import sys, time
sys.path.insert(0, {tests!r})
from pathlib import Path
from hub_server import FakeHub, HubRepo
hub = FakeHub(repos={{{repo!r}: HubRepo.from_folder(Path({folder!r}), mapped=True)}}).start()
print(hub.url, flush=True)
sys.stdin.read()
"""


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def write_random(path: Path, size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    block = os.urandom(1 << 20)
    with path.open("wb") as out:
        left = size
        while left > 0:
            out.write(block[: min(left, len(block))])
            left -= len(block)
    # distinct contents per file (the etag is the sha256): the first bytes differ
    with path.open("r+b") as out:
        out.write(path.as_posix().encode()[:64].ljust(64, b"\0"))


def build_repo(folder: Path, total_mb: int) -> None:
    total = total_mb * 1_000_000
    for name, share in {**SHARES, **EXTRAS}.items():
        write_random(folder / name, int(total * share))
    for name, data in CONFIGS.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(json.dumps(data))
    (folder / "model_index.json").write_text(json.dumps(MODEL_INDEX))


def run(command: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user + system) of one command."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{command[:4]} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return seconds, cpu


def tree_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=1000, help="size of the needed files, MB")
    parser.add_argument("-n", "--rounds", type=int, default=3)
    parser.add_argument("--work", type=Path, help="scratch folder (default: a temporary one)")
    args = parser.parse_args()

    work = args.work or Path(tempfile.mkdtemp(prefix="bench-hub-"))
    repo_folder = work / "repo"
    if not (repo_folder / "model_index.json").exists():
        log(f"writing a {args.mb} MB repo (and its extras) in {repo_folder}")
        build_repo(repo_folder, args.mb)
    log("starting the hub server")
    server = subprocess.Popen(
        [
            str(PY),
            "-c",
            SERVER.format(tests=str(ROOT / "tests"), repo=REPO, folder=str(repo_folder)),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        url = server.stdout.readline().strip()
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("HF_", "LLM_PESSOAL"))},
            "HF_ENDPOINT": url,
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "HF_HUB_DISABLE_PROGRESS_BARS": "1",
            "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1",
            "PYTHONPATH": str(ROOT),
        }
        files = sorted(
            [*SHARES, *(n for n in CONFIGS if not n.startswith("safety")), "model_index.json"]
        )
        needed = sum((repo_folder / n).stat().st_size for n in files)
        everything = tree_bytes(repo_folder)
        results: dict[str, list[float]] = {"app": [], "hf": []}
        cpu: dict[str, list[float]] = {"app": [], "hf": []}
        for round_ in range(args.rounds):
            order = ["app", "hf"] if round_ % 2 == 0 else ["hf", "app"]
            for who in order:
                place = work / f"{who}-{round_}"
                shutil.rmtree(place, ignore_errors=True)
                place.mkdir(parents=True)
                if who == "app":
                    (place / "config.toml").write_text(
                        f'[paths]\ncache = "{place / "cache"}"\nlogs = "{place / "logs"}"\n'
                        f'database = "{place / "data" / "db.sqlite"}"\n'
                    )
                    command = [
                        str(PY), "-m", "tui.cli", "--config", str(place / "config.toml"),
                        "image-models", "pull", REPO, "--dtype", "float32",
                    ]  # fmt: skip
                    cache = place / "cache" / "hub"
                else:
                    cache = place / "cache" / "hub"
                    command = [str(HF), "download", REPO, *files, "--cache-dir", str(cache)]
                seconds, cpu_s = run(command, env, place)
                cpu[who].append(cpu_s)
                got = tree_bytes(cache)
                if got < needed or got > needed * 1.01:
                    raise SystemExit(f"{who} downloaded {got} bytes, expected {needed}")
                results[who].append(seconds)
                log(f"round {round_ + 1} {who}: {seconds:.2f} s wall, {cpu_s:.2f} s CPU")
                shutil.rmtree(place, ignore_errors=True)
        app, hf = statistics.median(results["app"]), statistics.median(results["hf"])
        report: dict[str, Any] = {
            "bench": "hub download: llm-pessoal image-models pull vs hf download",
            "server": "tests/hub_server.py on 127.0.0.1 (its own process)",
            "repo_bytes": everything,
            "needed_bytes": needed,
            "files": len(files),
            "rounds": args.rounds,
            "app_s": [round(s, 3) for s in results["app"]],
            "hf_download_s": [round(s, 3) for s in results["hf"]],
            "app_median_s": round(app, 3),
            "hf_download_median_s": round(hf, 3),
            "app_MB_per_s": round(needed / app / 1e6, 1),
            "hf_download_MB_per_s": round(needed / hf / 1e6, 1),
            "app_min_s": round(min(results["app"]), 3),
            "hf_download_min_s": round(min(results["hf"]), 3),
            "app_cpu_median_s": round(statistics.median(cpu["app"]), 3),
            "hf_download_cpu_median_s": round(statistics.median(cpu["hf"]), 3),
            "app_extra_wall_time_pct": round(100 * (app - hf) / hf, 1),
            "app_extra_wall_time_pct_best": round(
                100 * (min(results["app"]) - min(results["hf"])) / min(results["hf"]), 1
            ),
            "goal_pct": 5.0,
            "note": "wall times on a shared machine vary; the CPU seconds and the best "
            "rounds are the steadier figures",
        }
        print(json.dumps(report, indent=2))
    finally:
        if server.stdin:
            server.stdin.close()
        server.wait(10)
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
