"""Previews over a thin link: a generation's steps on the Image screen, drawn straight to a
pty and through ``bench/thin_link.py`` (1 Mbit/s, 50 ms each way). Prints JSON.

The app generates twice with the tiny random-weight pipeline (the first loads it), 120x40,
half-blocks, 256 colours + truecolor. For the second generation it reports, as the
terminal saw it: the preview frames drawn (the distinct ``step k/N`` lines on screen), the
bytes, and the lag from the engine's "image generated" (logs/app.jsonl) to the finished
line (``… .png · seed …``) on the terminal's screen. Frames that cannot cross the link in
time should be dropped (the app draws the latest step when it can write again), not queued:
the lag stays near the link's delay plus a frame, whatever the number of steps.

    PYTHONPATH=$PWD .venv/bin/python bench/thin_preview.py [--steps 30] [--links direct,thin]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "tests")]

from common import ROOT, VENV_BIN, Terminal, clean_env, log, machine, rmtree, tempdir  # noqa: E402
from sd_fixtures import build_tiny_pipeline_folder  # noqa: E402

THIN_ARGS = ["--rate", "1000000", "--delay", "0.05"]
PREVIEWS = re.compile(r"previews: (\d+) drawn, (\d+) dropped")
STEP = re.compile(r"step (\d+)/(\d+)")


def config(work: Path, model: Path, steps: int) -> Path:
    cfg = work / "config.toml"
    cfg.write_text(
        '[ollama]\nhost = "http://127.0.0.1:9"\n'
        '\n[paths]\noutputs = "outputs"\nlogs = "logs"\ndatabase = "data/bench.db"\n'
        'cache = "cache"\n'
        f'\n[diffusion]\nmodel = "{model}"\ndevice = "cpu"\nwidth = 64\nheight = 64\n'
        f'steps = {steps}\npreview = "halfblock"\n',
        encoding="utf-8",
    )
    return cfg


def generated_at(logfile: Path) -> list[float]:
    """The times of the engine's "image generated" lines."""
    out = []
    for line in logfile.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if record.get("message") == "image generated":
            out.append(datetime.fromisoformat(record["timestamp"]).timestamp())
    return out


def generate(term: Terminal, timeout: float = 300) -> tuple[int, float | None, int, set[int]]:
    """Ctrl+G; follow the screen chunk by chunk until the finished line. Returns the first
    chunk's index, the finished line's time, the bytes, and the steps seen."""
    start = term.received()
    term.write("\x07")  # Ctrl+G
    seen: set[int] = set()
    started = False
    deadline = time.time() + timeout
    while time.time() < deadline:
        chunk = term.pump(term._fed + 1)
        if chunk is None:
            if term.proc.poll() is not None:
                break
            time.sleep(0.002)
            continue
        screen = term.text()
        match = STEP.search(screen)
        if match:
            started = True
            seen.add(int(match.group(1)))
        elif started and ".png · seed" in screen:
            with term._lock:
                size = sum(len(c.data) for c in term.chunks[start : term._fed])
            return start, chunk.t, size, seen
    return start, None, 0, seen


def run_link(link: str, model: Path, steps: int) -> dict[str, Any]:
    work = tempdir(f"thin-preview-{link}")
    try:
        cfg = config(work, model, steps)
        argv = [
            str(VENV_BIN / "python"),
            "-m",
            "tui.cli",
            "--config",
            str(cfg),
            "--screen",
            "image",
        ]
        if link == "thin":
            argv = [str(VENV_BIN / "python"), str(HERE / "thin_link.py"), *THIN_ARGS, "--", *argv]
        env = clean_env(PYTHONPATH=str(ROOT))
        with Terminal(argv, env, str(work)) as term:
            if term.wait_visible(["Ctrl+G generates"], 120) is None:
                raise RuntimeError(f"{link}: no Image screen")
            term.type("a lighthouse")
            time.sleep(1)
            log(f"{link}: first generation (loads the pipeline)")
            _, first, _, _ = generate(term)
            if first is None:
                raise RuntimeError(f"{link}: the first generation did not finish")
            time.sleep(2)
            log(f"{link}: second generation")
            _, shown, size, seen = generate(term)
            if shown is None:
                raise RuntimeError(f"{link}: the second generation did not finish")
            time.sleep(0.5)
        done = generated_at(work / "logs" / "app.jsonl")
        engine_seconds = None
        drawn = dropped = None
        for line in (work / "logs" / "app.jsonl").read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            if record.get("message") == "image generated":
                engine_seconds = record.get("seconds")
            match = PREVIEWS.match(str(record.get("message", "")))
            if match:
                drawn, dropped = int(match.group(1)), int(match.group(2))
        return {
            "steps": steps,
            "engine_seconds": round(engine_seconds, 2) if engine_seconds else None,
            "steps_drawn": len(seen),
            "previews_drawn": drawn,
            "previews_dropped": dropped,
            "bytes": size,
            "lag_after_generated_ms": round((shown - done[-1]) * 1000) if done else None,
        }
    finally:
        rmtree(work)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--links", default="direct,thin")
    parser.add_argument("--rate", type=int, default=1_000_000, help="the thin link's bits/s")
    args = parser.parse_args(argv)
    THIN_ARGS[1] = str(args.rate)
    work = tempdir("thin-preview-model")
    try:
        model = build_tiny_pipeline_folder(work / "tiny")
        result: dict[str, Any] = {
            "benchmark": "thin_preview",
            "terminal": "120x40, TERM=xterm-256color, COLORTERM=truecolor, half-blocks",
            "thin_link": f"{args.rate / 1e6:g} Mbit/s, 50 ms each way (bench/thin_link.py)",
            "machine": machine(),
        }
        for link in args.links.split(","):
            result[link] = run_link(link.strip(), model, args.steps)
    finally:
        rmtree(work)
    print(json.dumps(result, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
