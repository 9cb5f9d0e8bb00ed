"""Launch to first frame, idle memory, and what start-up imports.

For each client (the app; peers with ``--peers``) against the fake Ollama server, under a
120x40 pty: one untimed warm-up launch (fills the OS file cache and gets past first-run
dialogs), then N timed launches. Each is timed from just before the process is spawned to
the read of the pty output that put the client's first-frame text on the emulated screen
(for the app: the prompt's placeholder). Resident memory (the process and its children) is
read 2 s after the first frame. Separately, ``python -c "import tui.app"`` reports whether
torch, diffusers or transformers came along, and what the slowest imports are.

``--floor`` measures the app against the framework's floor instead: ``bench/minimal_app.py``
(Header, Static, TextArea, Footer; same Python, same Textual), started alternately with
the app, N times each, under the same pty. The app is timed until the model name is on
screen, the minimal app until its marker is; idle RSS is read 2 s after that, with the
chat screen open. Both run this checkout's code (``PYTHONPATH`` set to it). Then the app
alone under bad input: 10,000 conversations in the database, a database another program
holds locked, a damaged database file, and Ollama unreachable, each with its first frame
and whether the screen said what happened.

Each start also records the CPU time the process had used when the needle showed: on a
machine others share, wall time grows with their load, CPU time far less. ``--base DIR``
adds the app as another checkout has it (``git archive HEAD~3 | tar -x -C DIR``, with a
``.venv`` link), started alternately with this one in the same run, the scenarios too:
before and after a change under the same load. ``--rtt MS`` has the terminal answer the
clients' questions after that round trip, as a terminal at the far end of an SSH link does
(the app asks what pictures it can draw as it starts).

``--profile`` says where the start-up time goes: ``-X importtime`` of ``tui.cli`` and
``tui.app`` (cumulative and self time), cProfile of the app from the first line of
``main()`` to its first frame of the chat screen (under the pty), Textual's own "ready in"
time (``TEXTUAL_LOG``), and the resident memory each layer of imports adds.

Prints one JSON object. Usage:

    .venv/bin/python bench/startup.py [-n 5] [--peers elia,parllama,oterm]
    .venv/bin/python bench/startup.py --floor [-n 7] [--scenarios none] [--base DIR] [--rtt MS]
    .venv/bin/python bench/startup.py --profile [--top 25]
"""

from __future__ import annotations

import argparse
import json
import os
import pstats
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from clients import APP_CLIENT, PROMPT, Client, peers_from_flag
from common import (
    COLS,
    MODEL,
    ROOT,
    ROWS,
    SERVER_VERSION,
    VENV_BIN,
    OtherLoad,
    Server,
    Terminal,
    app_config,
    clean_env,
    log,
    machine,
    mapped_libraries,
    markdown_reply,
    median,
    rmtree,
    rnd,
    rss_bytes,
    tempdir,
    tree_cpu_seconds,
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


# ---------------------------------------------------------------------------- --floor

MINIMAL_APP = Path(__file__).resolve().with_name("minimal_app.py")
MINIMAL_MARKER = "minimal-app-first-frame"
RUN_APP = "import sys; from tui.cli import main; sys.exit(main())"
"""How the console script starts the app, run with this checkout on PYTHONPATH."""
FLOOR_AIMS = {"first_frame_vs_minimal": 1.4, "idle_rss_mib": 55.0}
SCENARIOS = ("10k-conversations", "locked-database", "damaged-database", "ollama-unreachable")
CONVERSATIONS = 10_000


def checkout_env() -> dict[str, str]:
    """This checkout's code, not what the venv's editable install points at."""
    return clean_env(PYTHONPATH=str(ROOT))


@dataclass
class Start:
    """One way to start a client: its argv, what on screen is its first usable frame, and
    (for a scenario) what the screen must also say."""

    name: str
    argv: list[str]
    needle: str
    expect: str | None = None
    code: Path = ROOT
    """The checkout whose code runs (``PYTHONPATH``): this one, or ``--base``."""


def start_once(start: Start, cwd: Path, rtt_s: float = 0.0) -> dict[str, Any]:
    term = Terminal(
        start.argv, clean_env(PYTHONPATH=str(start.code)), str(cwd), answer_delay_s=rtt_s
    )
    load = OtherLoad(term.pid)
    out: dict[str, Any] = {}
    try:
        t_frame = term.wait_visible([start.needle], 60)
        if t_frame is None:
            term.pump()
            raise RuntimeError(
                f"{start.name}: {start.needle!r} not on screen in 60 s:\n{term.text()}"
            )
        out["first_frame_s"] = t_frame - term.t_start
        # the CPU time it took (the process and its children, read as the needle shows):
        # on a machine others share, wall time grows with their load, CPU time much less
        out["cpu_s"] = tree_cpu_seconds(term.pid)
        if start.expect is not None:
            t_said = term.wait_visible([start.expect], 15)
            out["said_s"] = None if t_said is None else t_said - term.t_start
        time.sleep(max(0.0, t_frame + IDLE_S - time.time()))
        out["rss_mib"] = rss_bytes(term.pid) / 2**20
        out["other_load_cpus"] = load.stop()
        out["screen_top"] = term.text().splitlines()[0].rstrip()
    finally:
        term.close("\x11")
    return out


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    frames = [r["first_frame_s"] for r in runs]
    rss = [r["rss_mib"] for r in runs]
    cpu = [r["cpu_s"] for r in runs]
    out: dict[str, Any] = {
        "first_frame_s": {
            "median": rnd(median(frames)),
            "min": rnd(min(frames)),
            "max": rnd(max(frames)),
            "runs": [rnd(f) for f in frames],
        },
        "cpu_to_first_frame_s": {"median": rnd(median(cpu)), "min": rnd(min(cpu))},
        "idle_rss_mib": {"median": rnd(median(rss), 1), "max": rnd(max(rss), 1)},
        "other_load_cpus": [r["other_load_cpus"] for r in runs],
    }
    said = [r.get("said_s") for r in runs if "said_s" in r]
    if said:
        out["said_what_happened"] = all(x is not None for x in said)
        out["said_s_median"] = rnd(
            median([x for x in said if x is not None]) if any(said) else None
        )
    out["screen_top"] = runs[-1]["screen_top"]
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def fill_database(path: Path, conversations: int) -> None:
    """``conversations`` conversations of two messages each, through the app's own store."""
    sys.path.insert(0, str(ROOT))
    from engines.chat_types import ChatOptions
    from engines.store import Store

    store = Store.open(path)
    options = ChatOptions()
    try:
        for i in range(conversations):
            c = store.create_conversation(
                MODEL, options, title=f"Conversation {i} on topic {i % 97}"
            )
            store.add_message(c.id, "user", f"question number {i}, " * 6)
            store.add_message(
                c.id, "assistant", f"answer {i} with **bold**, `code` and a list:\n\n- a\n- b\n" * 4,
                model=MODEL,
            )  # fmt: skip
    finally:
        store.close()


@contextmanager
def scenario(name: str, workdir: Path, url: str) -> Iterator[tuple[Path, str | None]]:
    """The app's config for a scenario, and what its screen must say."""
    host = f"http://127.0.0.1:{free_port()}" if name == "ollama-unreachable" else url
    cfg = app_config(workdir, host)
    db = workdir / "data" / "bench.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    locker: subprocess.Popen[str] | None = None
    expect: str | None = None
    if name == "10k-conversations":
        fill_database(db, CONVERSATIONS)
        expect = f"Conversation {CONVERSATIONS - 1} "  # the newest, at the top of the list
    elif name == "locked-database":
        fill_database(db, 1)
        code = (
            "import sqlite3, sys, time\n"
            "c = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
            "c.execute('PRAGMA locking_mode = EXCLUSIVE'); c.execute('BEGIN EXCLUSIVE')\n"
            "c.execute('UPDATE conversations SET title = title')\n"
            "print('locked', flush=True); time.sleep(3600)\n"
        )
        locker = subprocess.Popen(
            [sys.executable, "-c", code, str(db)], stdout=subprocess.PIPE, text=True
        )
        assert locker.stdout is not None
        if locker.stdout.readline().strip() != "locked":
            raise RuntimeError("could not lock the database")
        expect = "locked"
    elif name == "damaged-database":
        db.write_bytes(b"this is not a SQLite database, just damaged bytes\n" * 2048)
        expect = "damaged"
    elif name == "ollama-unreachable":
        expect = "unreachable"
    try:
        yield cfg, expect
    finally:
        if locker is not None:
            locker.kill()
            locker.wait()


def floor(
    n: int, scenarios: list[str], base: Path | None = None, rtt_s: float = 0.0
) -> dict[str, Any]:
    python = str(VENV_BIN / "python")
    workdir = tempdir("startup-floor")
    reply = workdir / "reply.md"
    reply.write_text("A short reply.\n", encoding="utf-8")
    result: dict[str, Any] = {
        "benchmark": "startup-floor",
        "terminal": f"{COLS}x{ROWS}",
        "runs_per_client": n,
        "machine": machine(),
        "measured": "from just before the spawn to the pty read that put the needle on screen",
        "terminal_round_trip_s": rtt_s,
        "aims": dict(FLOOR_AIMS),
    }
    try:
        with Server(reply) as server:
            app_dir = workdir / "app"
            app = Start(
                "llm-pessoal",
                [python, "-c", RUN_APP, "--config", str(app_config(app_dir, server.url))],
                MODEL,
            )
            minimal = Start("minimal-textual-app", [python, str(MINIMAL_APP)], MINIMAL_MARKER)
            starts = [app, minimal]
            if base is not None:  # the same app from another checkout (the code before)
                starts.append(Start(f"{app.name}@base", app.argv, MODEL, code=base))
                result["base"] = str(base)
            for start in starts:  # untimed: fills the OS file cache
                start_once(start, app_dir)
            runs: dict[str, list[dict[str, Any]]] = {s.name: [] for s in starts}
            for i in range(n):  # alternately, so a busy moment falls on all alike
                for start in starts if i % 2 == 0 else starts[::-1]:
                    run = start_once(start, app_dir, rtt_s)
                    runs[start.name].append(run)
                    log(
                        f"{start.name} {i + 1}/{n}: first frame {run['first_frame_s']:.3f} s, "
                        f"rss {run['rss_mib']:.1f} MiB, other load {run['other_load_cpus']}"
                    )
            clients = {name: summary(r) for name, r in runs.items()}
            result["clients"] = clients
            a, m = clients[app.name], clients[minimal.name]
            ratio = a["first_frame_s"]["median"] / m["first_frame_s"]["median"]
            ratio_min = a["first_frame_s"]["min"] / m["first_frame_s"]["min"]
            result["first_frame_vs_minimal"] = {"median": rnd(ratio, 2), "min": rnd(ratio_min, 2)}
            result["cpu_to_first_frame_vs_minimal"] = rnd(
                a["cpu_to_first_frame_s"]["median"] / m["cpu_to_first_frame_s"]["median"], 2
            )
            result["idle_rss_vs_minimal"] = rnd(
                a["idle_rss_mib"]["median"] / m["idle_rss_mib"]["median"], 2
            )
            if base is not None:
                b = clients[f"{app.name}@base"]
                result["vs_base"] = {
                    "first_frame": rnd(
                        a["first_frame_s"]["median"] / b["first_frame_s"]["median"], 2
                    ),
                    "cpu_to_first_frame": rnd(
                        a["cpu_to_first_frame_s"]["median"] / b["cpu_to_first_frame_s"]["median"],
                        2,
                    ),
                    "base_first_frame_vs_minimal": rnd(
                        b["first_frame_s"]["median"] / m["first_frame_s"]["median"], 2
                    ),
                    "base_cpu_to_first_frame_vs_minimal": rnd(
                        b["cpu_to_first_frame_s"]["median"] / m["cpu_to_first_frame_s"]["median"],
                        2,
                    ),
                }
            result["aims_met"] = {
                "first_frame_vs_minimal": ratio <= FLOOR_AIMS["first_frame_vs_minimal"],
                "idle_rss_mib": a["idle_rss_mib"]["median"] <= FLOOR_AIMS["idle_rss_mib"],
            }
            result["scenarios"] = {}
            for name in scenarios:
                where = workdir / name
                try:
                    with scenario(name, where, server.url) as (cfg, expect):
                        start = Start(
                            name, [python, "-c", RUN_APP, "--config", str(cfg)], MODEL, expect
                        )
                        pair = [start]
                        if base is not None:
                            pair.append(Start(f"{name}@base", start.argv, MODEL, expect, base))
                        for s in pair:
                            start_once(s, where)  # untimed
                        got: dict[str, list[dict[str, Any]]] = {s.name: [] for s in pair}
                        for i in range(n):
                            for s in pair if i % 2 == 0 else pair[::-1]:
                                got[s.name].append(start_once(s, where, rtt_s))
                                log(
                                    f"{s.name} {i + 1}/{n}: first frame "
                                    f"{got[s.name][-1]['first_frame_s']:.3f} s"
                                )
                    entry = summary(got[name])
                    if base is not None:
                        before = summary(got[f"{name}@base"])
                        entry["base"] = before
                        entry["vs_base"] = rnd(
                            entry["first_frame_s"]["median"] / before["first_frame_s"]["median"], 2
                        )
                    entry["vs_minimal"] = rnd(
                        entry["first_frame_s"]["median"] / m["first_frame_s"]["median"], 2
                    )
                    entry["vs_app"] = rnd(
                        entry["first_frame_s"]["median"] / a["first_frame_s"]["median"], 2
                    )
                    entry["cpu_vs_app"] = rnd(
                        entry["cpu_to_first_frame_s"]["median"]
                        / a["cpu_to_first_frame_s"]["median"],
                        2,
                    )
                except Exception as exc:
                    entry = {"error": f"{type(exc).__name__}: {exc}"}
                    log(f"{name}: {entry['error']}")
                result["scenarios"][name] = entry
    finally:
        rmtree(workdir)
    return result


# ---------------------------------------------------------------------------- --profile

PROFILE_CODE = """
import cProfile, json, sys, time
t0 = time.perf_counter()
out, stats = sys.argv.pop(1), sys.argv.pop(1)
prof = cProfile.Profile()
prof.enable()
import textual.app
seen = {}
display = textual.app.App._display
def first_frame(self, screen, renderable):
    display(self, screen, renderable)
    if not seen and renderable is not None and type(screen).__name__ == "ChatScreen":
        seen["first_frame_s"] = time.perf_counter() - t0
        seen["modules"] = len(sys.modules)
        prof.disable()
        self.exit()
textual.app.App._display = first_frame
from tui.cli import main
try:
    main()
finally:
    prof.disable()
    prof.dump_stats(stats)
    with open(out, "w") as f:
        json.dump(seen, f)
"""


PHASES_CODE = """
import asyncio, functools, importlib, json, sys, time
t0 = time.perf_counter()
out = sys.argv.pop(1)
marks, spent, depth = {}, {}, {}

def mark(name):
    marks.setdefault(name, round(1000 * (time.perf_counter() - t0), 1))

def wrap(module, path, name):
    try:
        owner = importlib.import_module(module)
        *parents, attr = path.split(".")
        for p in parents:
            owner = getattr(owner, p)
        fn = getattr(owner, attr)
    except (ImportError, AttributeError):
        return
    def add(t):
        if not marks.get("first frame"):
            total, calls = spent.get(name, (0.0, 0))
            spent[name] = (total + time.perf_counter() - t, calls + 1)
    if asyncio.iscoroutinefunction(fn):
        @functools.wraps(fn)
        async def timed(*a, **k):
            depth[name] = depth.get(name, 0) + 1
            t = time.perf_counter()
            try:
                return await fn(*a, **k)
            finally:
                depth[name] -= 1
                if not depth[name]:
                    add(t)
    else:
        @functools.wraps(fn)
        def timed(*a, **k):
            depth[name] = depth.get(name, 0) + 1
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                depth[name] -= 1
                if not depth[name]:
                    add(t)
    setattr(owner, attr, timed)

import textual.app
mark("import textual.app")
import tui.cli
mark("import tui.cli")
import tui.app
mark("import tui.app (and its screens)")
for module, path, name in [
    ("tui.cli", "build_parser", "argparse parser"),
    ("tui.cli", "load_settings", "load_settings"),
    ("engines.logs", "setup_logging", "setup_logging"),
    ("tui.app", "open_store", "open_store"),
    ("tui.app", "LlmPessoalApp.__init__", "LlmPessoalApp.__init__"),
    ("tui.app", "LlmPessoalApp.on_mount", "LlmPessoalApp.on_mount"),
    ("tui.screens.chat", "ChatScreen.compose", "ChatScreen.compose"),
    ("tui.screens.chat", "ChatScreen.on_mount", "ChatScreen.on_mount"),
    ("engines.store", "Store.conversations", "Store.conversations"),
    ("tui.widgets.sidebar", "Sidebar.show", "Sidebar.show"),
    ("tui.widgets.conversation", "ConversationView.show_messages", "ConversationView.show_messages"),
    ("textual.css.stylesheet", "Stylesheet.read_all", "CSS: read files"),
    ("textual.css.stylesheet", "Stylesheet.parse", "CSS: parse"),
    ("textual.css.stylesheet", "Stylesheet.apply", "CSS: apply to nodes"),
    ("textual.app", "App._init_mode", "App._init_mode (switch_mode)"),
    ("textual.app", "App.refresh_css", "App.refresh_css"),
    ("textual.screen", "Screen._refresh_layout", "layout"),
    ("textual.app", "App._display", "render and write frames"),
]:
    wrap(module, path, name)

display = textual.app.App._display
def first_frame(self, screen, renderable):
    display(self, screen, renderable)
    if not marks.get("first frame") and renderable is not None and type(screen).__name__ == "ChatScreen":
        mark("first frame")
        self.exit()
textual.app.App._display = first_frame
run = textual.app.App.run
def run_marked(self, *a, **k):
    mark("App.run")
    return run(self, *a, **k)
textual.app.App.run = run_marked
from tui.cli import main
try:
    main()
finally:
    with open(out, "w") as f:
        json.dump({"marks_ms": marks, "spent_ms": {k: [round(1000 * v[0], 1), v[1]] for k, v in spent.items()}}, f)
"""


def answer_until_exit(term: Terminal, timeout: float = 60) -> None:
    """Feed the app's output to the emulated screen until it exits, so the terminal's
    answers reach it as a real terminal's would (the questions of ``tui/graphics.py``
    unanswered cost their 0.2 s wait, which is no part of a real start)."""
    deadline = time.time() + timeout
    while term.proc.poll() is None and time.time() < deadline:
        term.pump()
        time.sleep(0.002)


def phases(n: int = 3) -> dict[str, Any]:
    """Wall-clock milestones of one start (ms from the interpreter's first line of the
    wrapper) and the time spent in the app's and Textual's main steps until the first
    frame of the chat screen: plain timers around a few functions, no profiler, so the
    figures are real (the median of ``n`` starts, after one to warm up)."""
    workdir = tempdir("startup-phases")
    reply = workdir / "reply.md"
    reply.write_text("A short reply.\n", encoding="utf-8")
    out_path = workdir / "phases.json"
    runs: list[dict[str, Any]] = []
    try:
        with Server(reply) as server:
            cfg = app_config(workdir / "app", server.url)
            argv = [
                str(VENV_BIN / "python"),
                "-c",
                PHASES_CODE,
                str(out_path),
                "--config",
                str(cfg),
            ]
            for i in range(n + 1):
                with Terminal(argv, checkout_env(), str(workdir)) as term:
                    answer_until_exit(term)
                if i:
                    runs.append(json.loads(out_path.read_text()))
    finally:
        rmtree(workdir)
    marks = {k: median([r["marks_ms"].get(k) for r in runs]) for k in runs[-1]["marks_ms"]}
    spent = {
        k: {"ms": median([r["spent_ms"][k][0] for r in runs if k in r["spent_ms"]]),
            "calls": runs[-1]["spent_ms"][k][1]}
        for k in runs[-1]["spent_ms"]
    }  # fmt: skip
    return {
        "runs": n,
        "milestones_ms": marks,
        "until_first_frame_ms": dict(sorted(spent.items(), key=lambda kv: -(kv[1]["ms"] or 0))),
        "note": "nested steps overlap (CSS: apply runs inside layout and the screen's mount)",
    }


def importtime(top: int) -> dict[str, Any]:
    """``-X importtime``: the slowest imports by cumulative time (down to the third level
    of nesting), and self time summed per top-level package."""
    env = checkout_env()
    res = subprocess.run(
        [str(VENV_BIN / "python"), "-X", "importtime", "-c", "import tui.cli, tui.app"],
        capture_output=True, text=True, cwd=ROOT, env=env, check=True,
    )  # fmt: skip
    rows = []
    for line in res.stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)", line)
        if m:
            rows.append((int(m.group(1)), int(m.group(2)), len(m.group(3)) // 2, m.group(4)))
    total = sum(r[0] for r in rows)
    per_pkg: dict[str, int] = {}
    for self_us, _cum, _depth, name in rows:
        per_pkg[name.split(".")[0]] = per_pkg.get(name.split(".")[0], 0) + self_us
    cumulative = sorted((r for r in rows if r[2] <= 3), key=lambda r: -r[1])[:top]
    return {
        "total_ms": round(total / 1000, 1),
        "slowest_cumulative_ms": [
            {"module": name, "ms": round(cum / 1000, 1), "depth": depth}
            for _s, cum, depth, name in cumulative
        ],
        "self_ms_by_package": {
            k: round(v / 1000, 1) for k, v in sorted(per_pkg.items(), key=lambda kv: -kv[1])[:top]
        },
    }


def first_frame_profile(top: int) -> dict[str, Any]:
    """cProfile of the app from ``main()`` to the first frame of the chat screen, under the
    pty against the fake server; the slowest functions by cumulative time."""
    workdir = tempdir("startup-profile")
    reply = workdir / "reply.md"
    reply.write_text("A short reply.\n", encoding="utf-8")
    seen_path, stats_path = workdir / "seen.json", workdir / "stats.prof"
    try:
        with Server(reply) as server:
            cfg = app_config(workdir / "app", server.url)
            argv = [str(VENV_BIN / "python"), "-c", PROFILE_CODE, str(seen_path), str(stats_path)]
            for _ in range(2):  # the first fills the file cache and makes the database
                with Terminal([*argv, "--config", str(cfg)], checkout_env(), str(workdir)) as t:
                    answer_until_exit(t)
        seen = json.loads(seen_path.read_text())
        stats = pstats.Stats(str(stats_path))
        total = stats.total_tt  # type: ignore[attr-defined]
        rows = []
        for (path, line, func), (_cc, nc, tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
            rows.append((ct, tt, nc, f"{Path(path).name}:{line}({func})", path))

        def where(path: str) -> str:
            for key in ("/tui/", "/engines/", "/textual/", "/rich/", "/markdown_it/"):
                if key in path:
                    return key.strip("/")
            return "other"

        ours = [r for r in rows if where(r[4]) in ("tui", "engines")]
        return {
            "first_frame_s_profiled": rnd(seen.get("first_frame_s")),
            "modules_at_first_frame": seen.get("modules"),
            "profiled_s": rnd(total),
            "note": "cProfile slows Python code about twofold: compare rows, not with --floor",
            "slowest_cumulative": [
                {
                    "function": name,
                    "cum_ms": round(1000 * ct, 1),
                    "self_ms": round(1000 * tt, 1),
                    "calls": nc,
                }
                for ct, tt, nc, name, _p in sorted(rows, key=lambda r: -r[0])[:top]
            ],
            "slowest_self": [
                {"function": name, "self_ms": round(1000 * tt, 1), "calls": nc, "in": where(p)}
                for ct, tt, nc, name, p in sorted(rows, key=lambda r: -r[1])[:top]
            ],
            "ours_cumulative": [
                {"function": name, "cum_ms": round(1000 * ct, 1), "calls": nc}
                for ct, tt, nc, name, _p in sorted(ours, key=lambda r: -r[0])[:top]
            ],
        }
    finally:
        rmtree(workdir)


def textual_ready(n: int = 3) -> dict[str, Any]:
    """Textual's own figure: "ready in N milliseconds" (from ``App.__init__`` to the
    app's message loop), from its log file (``TEXTUAL_LOG``)."""
    workdir = tempdir("startup-textual-log")
    reply = workdir / "reply.md"
    reply.write_text("A short reply.\n", encoding="utf-8")
    python = str(VENV_BIN / "python")
    out: dict[str, Any] = {}
    try:
        with Server(reply) as server:
            cfg = app_config(workdir / "app", server.url)
            for name, argv, needle in (
                ("llm-pessoal", [python, "-c", RUN_APP, "--config", str(cfg)], MODEL),
                ("minimal-textual-app", [python, str(MINIMAL_APP)], MINIMAL_MARKER),
            ):
                ready = []
                for i in range(n + 1):
                    log_file = workdir / f"{name}-{i}.log"
                    env = {**checkout_env(), "TEXTUAL_LOG": str(log_file)}
                    with Terminal(argv, env, str(workdir)) as term:
                        term.wait_visible([needle], 60)
                        time.sleep(0.5)
                        term.close("\x11")
                    text = log_file.read_text(errors="replace") if log_file.exists() else ""
                    m = re.search(r"ready in (\d+) milliseconds", text)
                    if m and i:  # the first is a warm-up
                        ready.append(int(m.group(1)))
                out[name] = {"ready_ms": ready, "median": median(ready)}
    finally:
        rmtree(workdir)
    return out


def import_memory() -> dict[str, Any]:
    """Resident memory after each layer of imports, in a fresh interpreter each."""
    layers = {
        "python": "pass",
        "textual.app": "import textual.app",
        "+ textual widgets": "import textual.app, textual.widgets, textual.widgets._text_area",
        "+ ollama client": "import textual.app, textual.widgets, ollama",
        "tui.app": "import tui.app",
        "tui.app + tui.screens.chat": "import tui.app, tui.screens.chat",
    }
    out = {}
    for name, code in layers.items():
        probe = (
            f"{code}\nimport sys\n"
            "rss = int(open('/proc/self/statm').read().split()[1]) * __import__('os').sysconf('SC_PAGE_SIZE')\n"
            "print(rss, len(sys.modules))\n"
        )
        res = subprocess.run(
            [str(VENV_BIN / "python"), "-c", probe],
            capture_output=True, text=True, cwd=ROOT, env=checkout_env(), check=True,
        )  # fmt: skip
        rss, modules = res.stdout.split()
        out[name] = {"rss_mib": round(int(rss) / 2**20, 1), "modules": int(modules)}
    return out


def profile(top: int) -> dict[str, Any]:
    return {
        "benchmark": "startup-profile",
        "machine": machine(),
        "importtime": importtime(top),
        "phases": phases(),
        "first_frame_cprofile": first_frame_profile(top),
        "textual_ready": textual_ready(),
        "import_memory": import_memory(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=5, help="timed launches per client")
    parser.add_argument("--peers", default="", help="comma-separated: elia,parllama,oterm")
    parser.add_argument("--no-app", action="store_true", help="measure the peers only")
    parser.add_argument(
        "--floor", action="store_true", help="the app against bench/minimal_app.py, and bad input"
    )
    parser.add_argument(
        "--scenarios",
        default=",".join(SCENARIOS),
        help=f"with --floor: comma-separated, of {', '.join(SCENARIOS)}; 'none' for none",
    )
    parser.add_argument(
        "--base",
        type=Path,
        metavar="DIR",
        help="with --floor: also start the app from this checkout (the code before a change), "
        "alternately with this one, in the same run",
    )
    parser.add_argument(
        "--rtt",
        type=float,
        default=0.0,
        metavar="MS",
        help="with --floor: the terminal answers the clients' questions after this round "
        "trip, as a terminal at the far end of an SSH link does",
    )
    parser.add_argument("--profile", action="store_true", help="where the start-up time goes")
    parser.add_argument("--top", type=int, default=25, help="with --profile: rows per table")
    args = parser.parse_args(argv)
    if args.floor:
        chosen = [] if args.scenarios == "none" else args.scenarios.split(",")
        unknown = set(chosen) - set(SCENARIOS)
        if unknown:
            parser.error(f"unknown scenarios {sorted(unknown)}: use {', '.join(SCENARIOS)}")
        base = args.base.resolve() if args.base else None
        print(json.dumps(floor(args.n, chosen, base, args.rtt / 1000), indent=2))
        return 0
    if args.profile:
        print(json.dumps(profile(args.top), indent=2))
        return 0

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
