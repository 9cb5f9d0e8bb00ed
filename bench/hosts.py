"""Several Ollama servers: one that hangs must not delay the first frame, nor the others.

Three fake servers (``tests/ollama_server.py``, each a process of its own): ``frozen``
accepts connections and never answers (not even ``/api/version``), ``gpu-box`` and
``laptop`` answer. The app is launched under a 120x40 pty, alternately with

- ``one``: ``[ollama] host`` = gpu-box alone (the figure to keep), and
- ``three-one-hung``: ``[ollama] hosts`` = frozen (first in the list, the worst place;
  timeout ``--timeout`` s), gpu-box, laptop,

N times each after an untimed warm-up of each. For every launch: the first frame (the
prompt's placeholder on screen), when the reachable servers were shown online (``● Ollama``
with one server; ``● gpu-box  ● laptop`` with three), and when the frozen one was marked
unreachable (``✕ frozen``, which should be its timeout, no sooner, no later). The prompt is
typed into while frozen is still being waited for, and the time until the typed text is on
screen is recorded (the UI stays responsive).

Prints one JSON object. Usage:

    .venv/bin/python bench/hosts.py [-n 5] [--timeout 5]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    APP,
    MODEL,
    ROOT,
    OtherLoad,
    Server,
    Terminal,
    clean_env,
    log,
    machine,
    markdown_reply,
    median,
    rmtree,
    rnd,
    tempdir,
)

FIRST_FRAME = "Message (Enter to send"
TYPED = "typed while a server hangs"


def config(workdir: Path, hosts: list[tuple[str, str, float]] | None, url: str) -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    cfg = workdir / "config.toml"
    text = f'[ollama]\nhost = "{url}"\ndefault_model = "{MODEL}"\n'
    for name, address, timeout in hosts or []:
        text += f'\n[[ollama.hosts]]\nname = "{name}"\nurl = "{address}"\ntimeout = {timeout}\n'
    text += (
        '\n[paths]\noutputs = "outputs"\nlogs = "logs"\ndatabase = "data/bench.db"\n'
        'exports = "exports"\ncache = "cache"\n'
    )
    cfg.write_text(text, encoding="utf-8")
    return cfg


def launch(cfg: Path, online: str, hung: str | None, timeout: float) -> dict[str, Any]:
    term = Terminal([str(APP), "--config", str(cfg)], clean_env(PYTHONPATH=str(ROOT)))
    load = OtherLoad(term.pid)
    out: dict[str, Any] = {}
    try:
        t_frame = term.wait_visible([FIRST_FRAME], 60)
        if t_frame is None:
            raise RuntimeError(f"no first frame in 60 s:\n{term.text()}")
        out["first_frame_s"] = t_frame - term.t_start
        t_online = term.wait_visible([online], 30)
        out["online_s"] = None if t_online is None else t_online - term.t_start
        if hung is not None:
            marked_yet = hung in term.text()
            t_typed_at = time.time()
            term.type(TYPED)
            t_typed = term.wait_visible([TYPED], 10)
            out["typed_echo_s"] = None if t_typed is None else t_typed - t_typed_at
            out["typed_before_hung_marked"] = not marked_yet and hung not in term.text()
            t_hung = term.wait_visible([hung], timeout + 30)
            out["hung_marked_s"] = None if t_hung is None else t_hung - term.t_start
        out["other_load_cpus"] = load.stop()
    finally:
        term.close("\x11")
    return out


def stats(runs: list[dict[str, Any]], key: str) -> dict[str, Any] | None:
    values = [r[key] for r in runs if r.get(key) is not None]
    if not values:
        return None
    return {"median": rnd(median(values)), "min": rnd(min(values)), "max": rnd(max(values))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=5, help="timed launches of each")
    parser.add_argument("--timeout", type=float, default=5.0, help="the hung server's timeout")
    args = parser.parse_args(argv)
    workdir = tempdir("hosts")
    reply = workdir / "reply.md"
    workdir.mkdir(parents=True, exist_ok=True)
    reply.write_text(markdown_reply(200), encoding="utf-8")
    out: dict[str, Any] = {"machine": machine(), "n": args.n, "hung_timeout_s": args.timeout}
    servers = [Server(reply) for _ in range(3)]
    try:
        frozen, gpu, laptop = servers
        frozen.config(unresponsive=True)
        one = config(workdir / "one", None, gpu.url)
        three = config(
            workdir / "three",
            [
                ("frozen", frozen.url, args.timeout),
                ("gpu-box", gpu.url, 30),
                ("laptop", laptop.url, 30),
            ],
            gpu.url,
        )
        cases = {
            "one": (one, "● Ollama", None),
            "three-one-hung": (three, "● gpu-box  ● laptop", "✕ frozen"),
        }
        for cfg, online, hung in cases.values():  # untimed warm-ups
            launch(cfg, online, hung, args.timeout)
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in cases}
        for i in range(args.n):
            for name, (cfg, online, hung) in cases.items():
                run = launch(cfg, online, hung, args.timeout)
                runs[name].append(run)
                log(
                    f"{name} {i + 1}/{args.n}: "
                    + json.dumps({k: rnd(v) if isinstance(v, float) else v for k, v in run.items()})
                )
        for name, found in runs.items():
            out[name] = {
                key: stats(found, key)
                for key in ("first_frame_s", "online_s", "typed_echo_s", "hung_marked_s")
                if stats(found, key) is not None
            }
            if name != "one":
                out[name]["typed_before_hung_marked"] = all(
                    r["typed_before_hung_marked"] for r in found
                )
            out[name]["other_load_cpus"] = [r["other_load_cpus"] for r in found]
        base = out["one"]["first_frame_s"]["median"]
        hung_frame = out["three-one-hung"]["first_frame_s"]["median"]
        out["first_frame_delta_s"] = rnd(hung_frame - base)
    finally:
        for server in servers:
            server.stop()
        rmtree(workdir)
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
