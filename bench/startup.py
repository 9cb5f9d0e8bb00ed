"""Launch to first frame, idle memory, and what start-up imports.

For each client (the app; peers with ``--peers``) against the fake Ollama server, under a
120x40 pty: one untimed warm-up launch (fills the OS file cache and gets past first-run
dialogs), then N timed launches. Each is timed from just before the process is spawned to
the read of the pty output that put the client's first-frame text on the emulated screen
(for the app: the prompt's placeholder). Resident memory (the process and its children) is
read 2 s after the first frame. Separately, ``python -c "import tui.app"`` reports whether
torch, diffusers or transformers came along, and what the slowest imports are.

Prints one JSON object. Usage:

    .venv/bin/python bench/startup.py [-n 5] [--peers elia,parllama,oterm]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from clients import APP_CLIENT, PROMPT, Client, peers_from_flag
from common import (
    COLS,
    ROOT,
    ROWS,
    SERVER_VERSION,
    VENV_BIN,
    OtherLoad,
    Server,
    Terminal,
    log,
    machine,
    mapped_libraries,
    markdown_reply,
    median,
    rmtree,
    rnd,
    rss_bytes,
    tempdir,
)

IDLE_S = 2.0
HEAVY = ("torch", "diffusers", "transformers", "accelerate")
HEAVY_LIBS = ("libtorch", "torch/_C", "torch/lib")


def launch_once(client: Client, workdir: Path, url: str) -> dict[str, Any]:
    launch = client.setup(workdir, url, PROMPT)
    term = Terminal(launch.argv, launch.env, launch.cwd)
    load = OtherLoad(term.pid)
    out: dict[str, Any] = {}
    try:
        t_frame = term.wait_visible(client.first_frame, 60, any_of=True)
        if t_frame is None:
            term.pump()
            raise RuntimeError(f"no first frame in 60 s; screen:\n{term.text()}")
        out["first_frame_s"] = t_frame - term.t_start
        if client is APP_CLIENT:  # the status line turns to "● Ollama <version>"
            t_online = term.wait_visible([f"Ollama {SERVER_VERSION}"], 30)
            out["online_s"] = None if t_online is None else t_online - term.t_start
        time.sleep(max(0.0, t_frame + IDLE_S - time.time()))
        out["rss_mib"] = rss_bytes(term.pid) / 2**20
        out["torch_mapped"] = bool(mapped_libraries(term.pid, HEAVY_LIBS))
        out["other_load_cpus"] = load.stop()
    finally:
        term.close(client.quit_keys)
    return out


def measure(client: Client, n: int, url: str) -> dict[str, Any]:
    workdir = tempdir(f"startup-{client.name}")
    try:
        launch = client.setup(workdir, url, PROMPT)
        with Terminal(launch.argv, launch.env, launch.cwd) as warm:  # untimed warm-up
            if client.first_run is not None:
                client.first_run(warm)
            else:
                warm.wait_visible(client.first_frame, 60, any_of=True)
            warm.close(client.quit_keys)
        runs = []
        for i in range(n):
            run = launch_once(client, workdir, url)
            log(
                f"{client.name} run {i + 1}/{n}: first frame {run['first_frame_s']:.3f} s, "
                f"rss {run['rss_mib']:.1f} MiB, other load {run['other_load_cpus']} CPUs"
            )
            runs.append(run)
    finally:
        rmtree(workdir)
    frames = [r["first_frame_s"] for r in runs]
    rss = [r["rss_mib"] for r in runs]
    out: dict[str, Any] = {
        "first_frame_s": {
            "median": rnd(median(frames)),
            "min": rnd(min(frames)),
            "max": rnd(max(frames)),
            "runs": [rnd(f) for f in frames],
        },
        "idle_rss_mib": {"median": rnd(median(rss), 1), "max": rnd(max(rss), 1)},
        "torch_loaded_at_idle": any(r["torch_mapped"] for r in runs),
        "other_load_cpus": [r["other_load_cpus"] for r in runs],
    }
    online = [r["online_s"] for r in runs if r.get("online_s") is not None]
    if online:
        out["online_s"] = {"median": rnd(median(online)), "min": rnd(min(online))}
    return out


def import_check() -> dict[str, Any]:
    """``import tui.app`` in a fresh interpreter: heavy modules pulled in, and import times."""
    code = (
        "import json, sys, time\n"
        "t = time.perf_counter()\n"
        "import tui.app\n"
        "dt = time.perf_counter() - t\n"
        f"heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "print(json.dumps({'import_s': dt, 'heavy': heavy, 'modules': len(sys.modules)}))\n"
    )
    python = str(VENV_BIN / "python")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    res = subprocess.run(
        [python, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env, check=True
    )
    out: dict[str, Any] = json.loads(res.stdout.strip().splitlines()[-1])
    # -X importtime: where import time goes, as self time summed per top-level package
    # (a package's own modules, not what they import from other packages).
    res = subprocess.run(
        [python, "-X", "importtime", "-c", "import tui.app"],
        capture_output=True, text=True, cwd=ROOT, env=env, check=True,
    )  # fmt: skip
    per_pkg: dict[str, int] = {}
    for line in res.stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+\d+ \|\s*(\S+)", line)
        if m:
            pkg = m.group(2).split(".")[0]
            per_pkg[pkg] = per_pkg.get(pkg, 0) + int(m.group(1))
    top = sorted(per_pkg.items(), key=lambda kv: -kv[1])[:15]
    out["import_self_ms_by_package"] = {k: round(v / 1000, 1) for k, v in top}
    out["import_s"] = rnd(out["import_s"])
    out["torch_or_diffusers_imported"] = bool(out["heavy"])
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=5, help="timed launches per client")
    parser.add_argument("--peers", default="", help="comma-separated: elia,parllama,oterm")
    parser.add_argument("--no-app", action="store_true", help="measure the peers only")
    args = parser.parse_args(argv)

    clients: list[Client] = [] if args.no_app else [APP_CLIENT]
    clients += peers_from_flag(args.peers)
    workdir = tempdir("startup-reply")
    reply = workdir / "reply.md"
    reply.write_text(markdown_reply(), encoding="utf-8")
    result: dict[str, Any] = {
        "benchmark": "startup",
        "terminal": f"{COLS}x{ROWS}",
        "runs_per_client": args.n,
        "machine": machine(),
        "aims": {"first_frame_s": 0.35, "idle_rss_mib": 80, "torch_or_diffusers_imported": False},
        "clients": {},
    }
    try:
        with Server(reply) as server:
            for client in clients:
                entry: dict[str, Any] = {"version": client.version()}
                why = client.available()
                if why:
                    entry["skipped"] = why
                    log(f"{client.name}: skipped: {why}")
                else:
                    try:
                        entry.update(measure(client, args.n, server.url))
                    except Exception as exc:
                        entry["error"] = f"{type(exc).__name__}: {exc}"
                        log(f"{client.name}: {entry['error']}")
                    if client is APP_CLIENT:
                        entry["imports"] = import_check()
                result["clients"][client.name] = entry
    finally:
        rmtree(workdir)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
