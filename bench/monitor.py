"""Monitor figures, printed as JSON: the cost of one sample, and the app's CPU use while
the Monitor screen is open (aim: under 2 % of one core)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from engines.monitor import Sampler  # noqa: E402


def sample_cost(n: int) -> dict[str, float | str]:
    sampler = Sampler(ROOT / "outputs")
    sampler.sample()
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(n):
        sampler.sample()
    cpu_ms = (time.process_time() - cpu) / n * 1000
    wall_ms = (time.perf_counter() - wall) / n * 1000
    note = sampler.gpu_note
    sampler.close()
    return {
        "samples": n,
        "cpu_ms_per_sample": round(cpu_ms, 3),
        "wall_ms_per_sample": round(wall_ms, 3),
        "gpu": note or "NVML read",
    }


def screen_cpu(seconds: float) -> dict[str, float | str]:
    from common import APP, Terminal, clean_env, cpu_seconds, tempdir

    work = tempdir("monitor")
    cfg = work / "config.toml"
    cfg.write_text(
        '[ollama]\nhost = "http://127.0.0.1:9"\n'
        '[paths]\noutputs = "outputs"\nlogs = "logs"\ndatabase = "data/bench.db"\n'
    )
    with Terminal([str(APP), "--config", str(cfg), "--screen", "monitor"], env=clean_env()) as term:
        if term.wait_visible(["RAM"], 20) is None:
            raise RuntimeError("the Monitor screen never showed")
        time.sleep(5)  # past start-up
        start_cpu, start = cpu_seconds(term.pid) or 0.0, time.monotonic()
        while time.monotonic() - start < seconds:
            time.sleep(0.5)
            term.pump()  # keep the pty drained
        used = (cpu_seconds(term.pid) or 0.0) - start_cpu
        elapsed = time.monotonic() - start
    return {
        "seconds": round(elapsed, 1),
        "cpu_s": round(used, 3),
        "pct_of_one_core": round(100 * used / elapsed, 2),
        "aim_pct": 2.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    print(
        json.dumps(
            {"sample": sample_cost(args.samples), "monitor_screen_open": screen_cpu(args.seconds)},
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
