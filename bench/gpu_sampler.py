"""For a machine with an NVIDIA GPU: the sampler's real GPU figures while a load runs.

Runs fp16 matrix multiplications on every GPU for ``--seconds`` and samples the
machine every half second, printing JSON: utilisation, memory, heat, power and the
processes the sampler names (this one should be 'this app'). Needs torch with CUDA."""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engines.monitor import Sampler


def load(stop: threading.Event, device: int) -> None:
    import torch

    a = torch.randn(8192, 8192, device=f"cuda:{device}", dtype=torch.float16)
    while not stop.is_set():
        a = (a @ a).clamp_(-1, 1)
    torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        print(json.dumps({"error": "torch sees no CUDA GPU"}))
        return
    sampler = Sampler(None)
    idle = sampler.sample()
    stop = threading.Event()
    threads = [
        threading.Thread(target=load, args=(stop, i)) for i in range(torch.cuda.device_count())
    ]
    for t in threads:
        t.start()
    samples = []
    started = time.monotonic()
    while time.monotonic() - started < args.seconds:
        time.sleep(0.5)
        t0 = time.perf_counter()
        s = sampler.sample()
        cost_ms = (time.perf_counter() - t0) * 1000
        samples.append(
            {
                "t": round(time.monotonic() - started, 1),
                "sample_ms": round(cost_ms, 2),
                "gpus": [{**g, "processes": g["processes"]} for g in s.to_dict()["gpus"]],
            }
        )
    stop.set()
    for t in threads:
        t.join()
    sampler.close()
    print(json.dumps({"idle": idle.to_dict()["gpus"], "under_load": samples}, indent=2))


if __name__ == "__main__":
    main()
