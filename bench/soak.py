"""Soak test, printed as JSON: does the app's memory or descriptor count creep over time?

The real app under the pty harness, talking to the fake Ollama server (400 tokens/s, a reply
of 400 tokens) and generating with the tests' tiny Stable Diffusion pipeline on the CPU
(64x64, a few steps), goes round the same cycle until ``--minutes`` are up:

1. Chat (F2): a new conversation (Ctrl+N), a message, Enter; wait for the reply's stats
   line (``tok/s``).
2. Image (F3): replace the prompt, Ctrl+G; wait for the new PNG and for its name on the
   figures line.
3. Monitor (F4) for ``--monitor-s`` seconds.

Then (unless ``--keep-data``) all but the newest two conversations and images are deleted
from the app's database, with the app's own ``Store``, so the lists it shows stay the same
length: growth is then a leak, not data (650 conversations in the sidebar cost about
9 MiB, so an hour of cycles would otherwise grow by that much).

A thread samples the app every ``--interval`` seconds: VmRSS, RssAnon and Threads from
``/proc/PID/status``, and the number of entries in ``/proc/PID/fd``. Each cycle also takes a
sample at the same point (back on the chat screen, idle), which is less noisy than the timed
ones (those land in any phase: a generation holds more memory than an idle chat).

The warm-up ends at the later of 20 % of the run and the end of cycle 20: the first image
loads torch and the pipeline, and RSS goes on rising for some 15-20 cycles (caches
filling), then stays within a few MiB. After it, a least-squares slope of each series
against time is fitted. The verdict "flat" needs the RSS slope under
``max(5 MiB/h, 4 MiB / measured hours)`` and the descriptor slope under
``max(2/h, 3 / measured hours)``. A short run can only tell a big leak from the wobble
(RSS moves by a few MiB whatever the run length), so its limit is looser: a 3-minute run
measures about 75 s and allows about 200 MiB/h, which still flags a leak of one Textual
footer per redraw of the key bar (about 1,700 MiB/h at this pace). An hour's run
(48 measured minutes) holds RSS to 5 MiB/h and descriptors to under 4 gained.
``fds_gained_since_warmup`` names what any new descriptors point at (``readlink``).

Run: ``.venv/bin/python bench/soak.py --minutes 3`` (CI) or with no argument (an hour).
Not part of ``make bench``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sqlite3
import sys
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench"), str(ROOT / "tests")]

from common import (  # noqa: E402
    APP,
    MODEL,
    SERVER_VERSION,
    Server,
    Terminal,
    clean_env,
    log,
    machine,
    markdown_reply,
    rmtree,
    tempdir,
    tree_cpu_seconds,
)

F2, F3, F4 = "\x1bOQ", "\x1bOR", "\x1bOS"  # xterm's keys for F2-F4
CTRL_N, CTRL_G, CTRL_E, CTRL_U, ESC = "\x0e", "\x07", "\x05", "\x15", "\x1b"
MIB = 1 << 20
KEEP = 2  # conversations and images left in the database after each cycle

EMPTY_CHAT = "Write a message below"  # ConversationView.EMPTY_HINT
REPLY_DONE = "tok/s"  # the reply's stats line
REPLY_FAILED = ("interrupted", "unreachable", "Not sent")
IMAGE_SCREEN = "Recent images"
IMAGE_EMPTY = "What to draw"  # the prompt's placeholder
IMAGE_FAILED = ("No image", "Not generated")
MONITOR_SCREEN = "RAM"


# ---------------------------------------------------------------------------- /proc


@dataclass
class Sample:
    t: float  # seconds since the app started
    cycle: int  # cycles finished when taken
    phase: str
    rss: int  # bytes
    anon: int  # bytes
    threads: int
    fds: int


def read_sample(pid: int, t0: float, cycle: int, phase: str) -> Sample | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    if "VmRSS" not in fields:  # a zombie
        return None

    def kib(key: str) -> int:
        return int(fields.get(key, "0 kB").split()[0]) * 1024

    return Sample(
        round(time.time() - t0, 2),
        cycle,
        phase,
        kib("VmRSS"),
        kib("RssAnon"),
        int(fields.get("Threads", "0")),
        fds,
    )


def fd_targets(pid: int) -> list[str]:
    """What each open descriptor points at (sockets and pipes by kind, files by path)."""
    out = []
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return out
    for name in names:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{name}")
        except OSError:
            continue
        out.append(target.split(":", 1)[0] if target[:1] != "/" and ":" in target else target)
    return out


def fd_diff(before: list[str], after: list[str]) -> dict[str, int]:
    """Descriptor targets gained (+) or lost (-) between two snapshots."""
    diff = Counter(after)
    diff.subtract(Counter(before))
    return {k: v for k, v in sorted(diff.items()) if v}


class Sampler(threading.Thread):
    """Samples the app every ``interval`` seconds until stopped or the app is gone."""

    def __init__(self, pid: int, t0: float, interval: float, soak: Soak) -> None:
        super().__init__(daemon=True)
        self.pid, self.t0, self.interval, self.soak = pid, t0, interval, soak
        self.samples: list[Sample] = []
        self.cpu_s: float | None = None
        self.stop_event = threading.Event()

    def run(self) -> None:
        while not self.stop_event.is_set():
            sample = read_sample(self.pid, self.t0, self.soak.cycles, self.soak.phase)
            if sample is None:
                return
            self.samples.append(sample)
            self.cpu_s = tree_cpu_seconds(self.pid)  # the last seen, should the app die
            self.stop_event.wait(self.interval)


# ---------------------------------------------------------------------------- the fit


def fit(xs: list[float], ys: list[float]) -> tuple[float, float] | None:
    """Least-squares slope of ys over xs, and its standard error."""
    n = len(xs)
    if n < 3:
        return None
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return None
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
    resid = sum((y - my - slope * (x - mx)) ** 2 for x, y in zip(xs, ys, strict=True))
    return slope, math.sqrt(resid / (n - 2) / sxx)


def trend(samples: list[Sample], key: str, scale: float, cycles_per_h: float | None) -> Any:
    got = fit([s.t / 3600 for s in samples], [getattr(s, key) / scale for s in samples])
    if got is None:
        return None
    slope, stderr = got
    out = {"per_hour": round(slope, 3), "stderr_per_hour": round(stderr, 3)}
    if cycles_per_h:
        out["per_cycle"] = round(slope / cycles_per_h, 5)
    return out


def series(samples: list[Sample], key: str, scale: float, nd: int) -> dict[str, Any]:
    values = [getattr(s, key) / scale for s in samples]
    return {
        "first": round(values[0], nd),
        "last": round(values[-1], nd),
        "min": round(min(values), nd),
        "max": round(max(values), nd),
    }


# ---------------------------------------------------------------------------- driving the app


class Stall(Exception):
    """A step did not finish in time (the app is alive but stuck, or a key was lost)."""


class Soak:
    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args, self.work = args, work
        self.cycles = 0
        self.phase = "start"
        self.outputs = work / "app" / "outputs"
        self.bytes_out = 0
        self.stalls: list[dict[str, Any]] = []
        self.timings: dict[str, list[float]] = {"chat": [], "image": [], "cycle": []}
        self.figures_not_shown = 0
        self.retyped = 0
        self.interrupted = False
        self.harness_error: str | None = None
        self.db = work / "app" / "data" / "soak.db"
        self.store: Any = None
        self.prune_errors = 0

    def drain(self, term: Terminal) -> None:
        """Feed what the reader thread recorded to the screen and drop it (an hour's
        recording would otherwise pile up here; the reader itself keeps the pty empty)."""
        term.pump()
        with term._lock:
            self.bytes_out += sum(len(c.data) for c in term.chunks[: term._fed])
            del term.chunks[: term._fed]
            term._fed = 0

    def wait(
        self, term: Terminal, what: str, ok: Any, timeout: float, fail: tuple[str, ...] = ()
    ) -> None:
        deadline = time.monotonic() + timeout
        while True:
            self.drain(term)
            screen = term.text()
            if ok(screen):
                return
            if term.proc.poll() is not None:
                raise Stall(f"{what}: the app exited")
            bad = [f for f in fail if f in screen]
            if bad:
                raise Stall(f"{what}: {bad[0]!r} on screen")
            if time.monotonic() > deadline:
                raise Stall(f"{what}: not done in {timeout:.0f} s")
            time.sleep(0.05)

    def chat(self, term: Terminal) -> None:
        self.phase = "chat"
        term.write(F2)
        term.write(CTRL_N)
        self.wait(term, "new conversation", lambda s: EMPTY_CHAT in s, 15)
        message = f"Soak message {self.cycles + 1}: write the long reply"
        term.type(message)
        self.wait(term, "typed message", lambda s: message in s, 10)
        t = time.monotonic()
        term.write("\r")
        budget = 60 + self.args.reply_tokens / self.args.rate
        self.wait(
            term, "reply", lambda s: REPLY_DONE in s and EMPTY_CHAT not in s, budget, REPLY_FAILED
        )
        self.timings["chat"].append(time.monotonic() - t)

    def image(self, term: Terminal) -> None:
        self.phase = "image"
        term.write(F3)
        self.wait(term, "image screen", lambda s: IMAGE_SCREEN in s, 30)
        prompt = f"soak fox {self.cycles + 1} in snow"
        for attempt in range(3):
            # The prompt has one line: to its end, then delete to its start. Ctrl+U is a
            # binding, run after characters already queued: typed at once, they would be
            # inserted first and deleted with the rest. So: clear, see it empty, then type.
            term.write(CTRL_E + CTRL_U)
            self.wait(term, "cleared prompt", lambda s: IMAGE_EMPTY in s, 10)
            time.sleep(0.1)
            term.type(prompt)
            try:
                self.wait(term, "typed prompt", lambda s: prompt in s, 5)
                break
            except Stall:
                if attempt == 2:
                    raise
                self.retyped += 1
        before = self.pngs()
        t = time.monotonic()
        term.write(CTRL_G)
        deadline = time.monotonic() + 300  # the first one loads the pipeline
        while True:
            self.drain(term)
            new = self.pngs() - before
            if new:
                break
            if term.proc.poll() is not None:
                raise Stall("image: the app exited")
            screen = term.text()
            bad = [f for f in IMAGE_FAILED if f in screen]
            if bad:
                raise Stall(f"image: {bad[0]!r} on screen")
            if time.monotonic() > deadline:
                raise Stall("image: no new PNG in 300 s")
            time.sleep(0.05)
        name = max(new)  # names start with the date and time
        try:  # the figures line names the file once the screen has taken the result
            self.wait(term, "figures line", lambda s: name[:24] in s and "steps/s" not in s, 30)
        except Stall:
            self.figures_not_shown += 1
            raise
        self.timings["image"].append(time.monotonic() - t)

    def prune(self) -> None:
        """Forget all but the newest KEEP conversations and images, from the database the
        app reads (its own Store class, in this process), so the lists it shows stay the
        same length: any growth left is a leak, not data. The sidebar re-reads the list at
        the next Ctrl+N, the gallery at the next visit. The PNG files stay on disk."""
        from engines.store import Store, StoreError

        try:
            if self.store is None:
                self.store = Store.open(self.db, recover=False)
            for c in self.store.conversations()[KEEP:]:
                self.store.delete(c.id)
            for image in self.store.images(limit=1 << 30)[KEEP:]:
                self.store.forget_image(image.id)
        except (StoreError, sqlite3.Error) as exc:
            self.prune_errors += 1
            log(f"prune: {exc}")

    def data_counts(self) -> dict[str, int] | None:
        if self.store is None:
            return None
        try:
            return {
                "conversations": len(self.store.conversations()),
                "images_indexed": len(self.store.images(limit=1 << 30)),
                "png_files": len(self.pngs()),
            }
        except sqlite3.Error:
            return None

    def pngs(self) -> set[str]:
        """The images saved so far (not the ``.tmp-*`` files they are written through)."""
        try:
            return {n for n in os.listdir(self.outputs) if n.endswith(".png") and n[0] != "."}
        except OSError:
            return set()

    def monitor(self, term: Terminal) -> None:
        self.phase = "monitor"
        term.write(F4)
        self.wait(term, "monitor screen", lambda s: MONITOR_SCREEN in s, 20)
        end = time.monotonic() + self.args.monitor_s
        while time.monotonic() < end:
            self.drain(term)
            time.sleep(0.1)

    def back_to_chat(self, term: Terminal) -> None:
        self.phase = "idle"
        term.write(F2)
        self.wait(term, "chat screen", lambda s: f"Ollama {SERVER_VERSION}" in s, 15)
        time.sleep(0.3)  # the switch's redraw
        self.drain(term)


def write_config(work: Path, host: str, pipeline: Path, steps: int, ollama_timeout: float) -> Path:
    app = work / "app"
    app.mkdir(parents=True, exist_ok=True)
    cfg = app / "config.toml"
    cfg.write_text(
        "[ollama]\n"
        f'host = "{host}"\n'
        f"timeout = {ollama_timeout:g}\n"
        f'default_model = "{MODEL}"\n'
        "\n[diffusion]\n"
        f'model = "{pipeline}"\n'
        'device = "cpu"\nwidth = 64\nheight = 64\n'
        f'steps = {steps}\npreview = "halfblock"\n'
        "\n[paths]\n"
        'outputs = "outputs"\nlogs = "logs"\ndatabase = "data/soak.db"\n'
        'exports = "exports"\ncache = "cache"\n'
    )
    return cfg


def run(args: argparse.Namespace) -> dict[str, Any]:
    from sd_fixtures import build_tiny_pipeline_folder

    work = tempdir("soak")
    result: dict[str, Any] = {"machine": machine()}
    try:
        log("building the tiny pipeline")
        pipeline = build_tiny_pipeline_folder(work / "tiny-sd")
        reply = work / "reply.md"
        reply.write_text(markdown_reply(args.reply_tokens))
        with Server(reply, rate=args.rate) as server:
            cfg = write_config(work, server.url, pipeline, args.steps, args.ollama_timeout)
            result.update(drive(args, work, cfg))
    finally:
        if not args.keep_workdir:
            rmtree(work)
        else:
            result["workdir"] = str(work)
    return result


def drive(args: argparse.Namespace, work: Path, cfg: Path) -> dict[str, Any]:
    soak = Soak(args, work)
    planned = args.minutes * 60
    warm_t = args.warmup_fraction * planned
    died: dict[str, Any] | None = None
    cycle_samples: list[Sample] = []
    fds_after_warmup: list[str] | None = None
    fds_at_end: list[str] = []
    cpu_s = None
    argv = [str(APP), "--config", str(cfg), "--screen", "chat"]
    with Terminal(argv, env=clean_env()) as term:
        t0 = term.t_start
        sampler = Sampler(term.pid, t0, args.interval, soak)
        sampler.start()
        try:
            soak.wait(term, "start-up", lambda s: f"Ollama {SERVER_VERSION}" in s, 60)
        except Stall as exc:
            soak.drain(term)
            return {"error": str(exc), "screen": term.text().rstrip().splitlines()[-15:]}
        log(f"app up (pid {term.pid}); soaking for {args.minutes} min")
        run_end = time.time() + planned
        consecutive = 0
        while time.time() < run_end:
            t = time.monotonic()
            try:
                for step in args.cycle:
                    getattr(soak, step)(term)
                soak.back_to_chat(term)
                if not args.keep_data:
                    soak.prune()
                consecutive = 0
            except Stall as exc:
                if term.proc.poll() is not None:
                    break
                consecutive += 1
                soak.stalls.append({"cycle": soak.cycles + 1, "t": rnd1(time.time() - t0),
                                    "phase": soak.phase, "why": str(exc),
                                    "screen": term.text().rstrip().splitlines()[-8:]})  # fmt: skip
                log(f"stall in cycle {soak.cycles + 1}: {exc}")
                term.write(ESC)
                time.sleep(1)
                if consecutive >= 3:
                    log("three stalls in a row: giving up")
                    break
                continue
            except KeyboardInterrupt:
                log("interrupted: reporting what was measured")
                soak.interrupted = True
                break
            except Exception as exc:  # a fault of this script: report what was measured
                soak.harness_error = f"{type(exc).__name__}: {exc}"
                log(f"harness error: {soak.harness_error}")
                break
            soak.cycles += 1
            soak.timings["cycle"].append(time.monotonic() - t)
            sample = read_sample(term.pid, t0, soak.cycles, "cycle-end")
            if sample is not None:
                cycle_samples.append(sample)
            if fds_after_warmup is None and warmed(soak.cycles, time.time() - t0, warm_t, args):
                fds_after_warmup = fd_targets(term.pid)
            if soak.cycles % 5 == 0 and sample is not None:
                log(f"cycle {soak.cycles}: {time.time() - t0:.0f} s, RSS {sample.rss / MIB:.1f}"
                    f" MiB, {sample.fds} fds, {sample.threads} threads")  # fmt: skip
        last_phase, soak.phase = soak.phase, "end"
        sampler.stop_event.set()
        sampler.join(5)
        if term.proc.poll() is None:
            fds_at_end = fd_targets(term.pid)
            cpu_s = tree_cpu_seconds(term.pid)
        else:
            soak.drain(term)
            died = {
                "t": rnd1(time.time() - t0),
                "returncode": term.proc.returncode,
                "in_cycle": soak.cycles + 1,
                "phase": last_phase,
                "screen": term.text().rstrip().splitlines()[-15:],
            }
            cpu_s = sampler.cpu_s
            log(f"the app died (exit status {term.proc.returncode}) in cycle {soak.cycles + 1}")
        elapsed = time.time() - t0
    return report(
        args, soak, sampler.samples, cycle_samples, elapsed, warm_t, cpu_s, died,
        fds_after_warmup, fds_at_end,
    )  # fmt: skip


def warmed(cycles: int, t: float, warm_t: float, args: argparse.Namespace) -> bool:
    return cycles >= args.warmup_cycles and t >= warm_t


def rnd1(x: float) -> float:
    return round(x, 1)


def report(
    args: argparse.Namespace,
    soak: Soak,
    samples: list[Sample],
    cycle_samples: list[Sample],
    elapsed: float,
    warm_t: float,
    cpu_s: float | None,
    died: dict[str, Any] | None,
    fds_after_warmup: list[str] | None,
    fds_at_end: list[str],
) -> dict[str, Any]:
    # The warm-up ends at the later of warm_t and the end of cycle warmup_cycles.
    ends = [s.t for s in cycle_samples if s.cycle == args.warmup_cycles]
    warm_end = max(warm_t, ends[0] if ends else math.inf)
    after = [s for s in samples if s.t >= warm_end]
    cycles_after = [s for s in cycle_samples if s.t >= warm_end]
    window_h = (after[-1].t - after[0].t) / 3600 if len(after) > 1 else 0.0
    cycles_per_h = (
        (after[-1].cycle - after[0].cycle) / window_h if window_h and len(after) > 1 else None
    )
    rss_limit = max(5.0, 4.0 / window_h) if window_h else None
    fd_limit = max(2.0, 3.0 / window_h) if window_h else None

    def median(xs: list[float]) -> float | None:
        xs = sorted(xs)
        return round(xs[len(xs) // 2], 3) if xs else None

    out: dict[str, Any] = {
        "minutes_planned": args.minutes,
        "elapsed_s": rnd1(elapsed),
        "cycles": soak.cycles,
        "samples": len(samples),
        "samples_after_warmup": len(after),
        "warmup_end_s": rnd1(warm_end) if math.isfinite(warm_end) else None,
        "measured_window_min": round(window_h * 60, 2),
        "setup": {
            "rate_tok_s": args.rate,
            "reply_tokens": args.reply_tokens,
            "image": f"64x64, {args.steps} steps, cpu, tiny pipeline",
            "monitor_s": args.monitor_s,
            "interval_s": args.interval,
            "ollama_timeout_s": args.ollama_timeout,
            "keep_data": args.keep_data,
            "cycle": args.cycle,
        },
        "app_cpu_s": round(cpu_s, 2) if cpu_s is not None else None,
        "app_died": died,
        "interrupted": soak.interrupted,
        "harness_error": soak.harness_error,
        "data_at_end": soak.data_counts(),
        "prune_errors": soak.prune_errors,
        "stalls": soak.stalls,
        "figures_line_not_shown": soak.figures_not_shown,
        "image_prompt_retyped": soak.retyped,
        "terminal_output_mib": round(soak.bytes_out / MIB, 2),
        "timings_s": {
            k: {"median": median(v), "first": rnd3(v[0]), "last": rnd3(v[-1]), "max": rnd3(max(v))}
            for k, v in soak.timings.items()
            if v
        },
    }
    if after:  # first and last after the warm-up; max over the whole run
        for name, key, scale, nd in (
            ("rss_mib", "rss", MIB, 1),
            ("rss_anon_mib", "anon", MIB, 1),
            ("fds", "fds", 1, 0),
            ("threads", "threads", 1, 0),
        ):
            out[name] = series(after, key, scale, nd)
            out[name]["max_whole_run"] = series(samples, key, scale, nd)["max"]
    slopes = {
        "rss_mib": trend(after, "rss", MIB, cycles_per_h),
        "rss_anon_mib": trend(after, "anon", MIB, cycles_per_h),
        "fds": trend(after, "fds", 1, cycles_per_h),
        "threads": trend(after, "threads", 1, cycles_per_h),
    }
    out["slopes_after_warmup"] = slopes
    out["slopes_cycle_end_samples"] = {
        "rss_mib": trend(cycles_after, "rss", MIB, cycles_per_h),
        "fds": trend(cycles_after, "fds", 1, cycles_per_h),
    }
    if fds_after_warmup is not None and fds_at_end:
        out["fds_gained_since_warmup"] = fd_diff(fds_after_warmup, fds_at_end)
    rss, fds = slopes["rss_mib"], slopes["fds"]
    if died:
        verdict = "app died"
    elif rss is None or fds is None or rss_limit is None or fd_limit is None:
        verdict = "too short to tell"
    else:
        flat_rss = rss["per_hour"] < rss_limit
        flat_fds = fds["per_hour"] < fd_limit
        verdict = "flat" if flat_rss and flat_fds else "not flat"
    out["thresholds_per_hour"] = {
        "rss_mib": round(rss_limit, 1) if rss_limit else None,
        "fds": round(fd_limit, 1) if fd_limit else None,
        "why": "max(5 MiB/h, 4 MiB over the measured window) and max(2/h, 3 fds over it)",
    }
    out["verdict"] = verdict
    out["series"] = [asdict(s) for s in samples] if args.series else None
    return out


def rnd3(x: float) -> float:
    return round(x, 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between samples")
    parser.add_argument("--rate", type=float, default=400.0, help="server tokens per second")
    parser.add_argument(
        "--reply-tokens", type=int, default=400, help="e.g. 200, 400, 520 (markdown_reply's sizes)"
    )
    parser.add_argument("--steps", type=int, default=4, help="denoising steps per image")
    parser.add_argument(
        "--ollama-timeout",
        type=float,
        default=300.0,
        help="the app's [ollama] timeout (300 is its default)",
    )
    parser.add_argument("--monitor-s", type=float, default=2.0)
    parser.add_argument("--warmup-fraction", type=float, default=0.2)
    parser.add_argument("--warmup-cycles", type=int, default=20)
    parser.add_argument(
        "--cycle",
        type=lambda v: [x for x in v.split(",") if x],
        default=["chat", "image", "monitor"],
        help="the steps of a cycle, in order (a subset isolates a suspect)",
    )
    parser.add_argument(
        "--keep-data",
        action="store_true",
        help="let conversations and images pile up (by default all but the newest 2 are "
        "forgotten after each cycle, so what the app lists stays the same)",
    )
    parser.add_argument("--series", action="store_true", help="every sample in the JSON")
    parser.add_argument("--keep-workdir", action="store_true", help="keep the work folder")
    args = parser.parse_args()
    if bad := set(args.cycle) - {"chat", "image", "monitor"}:
        parser.error(f"--cycle: unknown steps {sorted(bad)}")
    print(json.dumps(run(args), indent=2))


if __name__ == "__main__":
    main()
