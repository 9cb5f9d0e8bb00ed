"""Stream a 2,000-token Markdown reply into each client and time what reaches the screen.

For each client and each rate (as fast as the server can send; 200 tokens/s) it starts the
fake Ollama server and the client under a 120x40 pty, sends a prompt, and records the pty
output with read times and the client's CPU ticks. Afterwards it replays the output into a
terminal emulator (pyte) to find when the reply's last token (a unique word) was first on
screen, and whether it still is at the end (the view followed the reply).

Prints one JSON object. Usage:

    .venv/bin/python bench/stream.py [--peers elia,parllama] [--rates fast,200] [--sanity]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from clients import APP_CLIENT, CLI_CLIENT, PROMPT, RAW_CLIENT, Client, peers_from_flag
from common import (
    CLK_TCK,
    COLS,
    MARKER,
    ROWS,
    VENV_BIN,
    Chunk,
    OtherLoad,
    Server,
    Terminal,
    cpu_ticks,
    log,
    machine,
    markdown_reply,
    rmtree,
    rnd,
    rss_bytes,
    summarize_profile,
    tempdir,
    tree_cpu_seconds,
)

N_TOKENS = 2000  # the reply the aims are for (--tokens)
SETTLE_S = 1.5  # recording kept after the last token shows, to see whether it stays
QUIET_S = 5.0  # after the server is done: no output for this long ends the wait
FOLLOW_TIMEOUT_S = 90.0  # after the server is done: the longest wait for the last token
HEADING_START = re.compile(r"(?:^|  )A(?: long)?(?:  |$)", re.MULTILINE)
"""The reply's first word on screen: its heading (``# A long answer``, centred) with its
first token, "A", or two, and no more (the whole heading is ``send_to_first_words_s``)."""


def parse_rate(text: str) -> float | None:
    return None if text in ("fast", "max", "0") else float(text)


def run_one(
    client: Client,
    rate: float | None,
    reply_file: Path,
    keep: bool,
    profile_dir: Path | None = None,
    settle: float = 0.5,
) -> dict[str, Any]:
    """One client, one rate: the figures for that run. ``settle``: seconds between the
    client's first frame (and readiness) and the send."""
    label = "fast" if rate is None else f"{rate:g}/s"
    workdir = tempdir(f"stream-{client.name}")
    out: dict[str, Any] = {"rate": label}
    with Server(reply_file, rate) as server:
        launch = client.setup(workdir, server.url, PROMPT)
        if client.first_run is not None:  # untimed: one-time dialogs on a fresh data dir
            with Terminal(launch.argv, launch.env, launch.cwd) as warm:
                client.first_run(warm)
                warm.close(client.quit_keys)
            launch = client.setup(workdir, server.url, PROMPT)
        term = Terminal(launch.argv, launch.env, launch.cwd)
        try:
            if client.send is not None:
                t_frame = term.wait_visible(client.first_frame, 60, any_of=True)
                if t_frame is None:
                    raise RuntimeError(f"no first frame:\n{term.text()}")
                out["first_frame_s"] = rnd(t_frame - term.t_start)
                if client.ready is not None:
                    client.ready(term)
                time.sleep(settle)  # let start-up work settle before the CPU baseline
                term.pump()
                i0 = term.received()
                cpu0 = cpu_ticks(term.pid) or 0
                tree0 = tree_cpu_seconds(term.pid)
                out["rss_before_mib"] = rnd(rss_bytes(term.pid) / 2**20, 1)
                load = OtherLoad(term.pid, server.proc.pid)
                t_send = time.time()
                client.send(term, PROMPT)
            else:  # a CLI: it sends as it starts; its CPU counts from zero
                i0, cpu0, tree0, t_send = 0, 0, 0.0, term.t_start
                load = OtherLoad(term.pid, server.proc.pid)
            profiler = start_profiler(term.pid, profile_dir, client.name, label)
            record(term, server, i0)
            out["other_load_cpus"] = load.stop()
            if profiler is not None:
                out["profile"] = stop_profiler(profiler)
            out.update(analyse(term, server, i0, cpu0, tree0, t_send))
            if term.proc.poll() is None:
                out["rss_after_mib"] = rnd(rss_bytes(term.pid) / 2**20, 1)
            if not out.get("follows"):
                out["screen_at_end"] = term.text().splitlines()[-12:]
        except Exception as exc:
            out["error"] = f"{type(exc).__name__}: {exc}"
            term.pump()
            out["screen_at_error"] = term.text().splitlines()
        finally:
            term.close(client.quit_keys)
            if not keep:
                rmtree(workdir)
    return out


def start_profiler(
    pid: int, profile_dir: Path | None, name: str, label: str
) -> tuple[subprocess.Popen[bytes], Path] | None:
    """py-spy sampling the client while it streams (figures of such a run are skewed)."""
    if profile_dir is None:
        return None
    profile_dir.mkdir(parents=True, exist_ok=True)
    path = profile_dir / f"{name}-{label.replace('/', '')}.txt"
    argv = [str(VENV_BIN / "py-spy"), "record", "--pid", str(pid), "--format", "raw"]
    argv += ["--rate", "250", "--nonblocking", "--threads", "--output", str(path)]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.3)  # attached before the first token
    return proc, path


def stop_profiler(profiler: tuple[subprocess.Popen[bytes], Path]) -> dict[str, Any]:
    proc, path = profiler
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
    return {"file": str(path), **summarize_profile(path)}


def record(term: Terminal, server: Server, i0: int) -> None:
    """Keep recording until the marker has been drawn (plus a settle time), or the server is
    done and the client has gone quiet or run out of time."""
    needle = MARKER.encode()
    seen_at: float | None = None
    server_done_at: float | None = None
    scanned = i0
    next_poll = 0.0
    while True:
        now = time.time()
        if seen_at is None:
            hit = term.raw_contains(needle, max(i0, scanned - 1))
            scanned = term.received()
            if hit is not None:
                seen_at = now
        if seen_at is not None and now - seen_at >= SETTLE_S:
            return
        if server_done_at is None and now >= next_poll:
            next_poll = now + 0.25
            state = server.state()
            if state["completed"] >= 1 or state["cancelled"] >= 1:
                server_done_at = now
        if server_done_at is not None and seen_at is None:
            last = term.last_output_at() or 0.0
            if now - max(last, server_done_at) >= QUIET_S:
                return
            if now - server_done_at >= FOLLOW_TIMEOUT_S:
                return
        if term.proc.poll() is not None and seen_at is None:
            time.sleep(0.2)  # let the reader thread drain what is left
            return
        time.sleep(0.01)


def analyse(
    term: Terminal, server: Server, i0: int, cpu0: int, tree0: float, t_send: float
) -> dict[str, Any]:
    state = server.state()
    sent_first, sent_last = state["sent_first_token_at_wall"], state["sent_last_token_at_wall"]
    out: dict[str, Any] = {
        "server_tokens_sent": state["last_stream_tokens"],
        "server_completed": state["completed"] >= 1,
        "server_send_s": rnd(sent_last - sent_first) if sent_first and sent_last else None,
        "output_bytes": term.bytes_since(i0),
        "output_writes": term.received() - i0,
    }
    # Replay: whatever was not fed live yet (the send is fed already), chunk by chunk.
    term.pump(i0)
    first_vis = last_vis = None
    # Any of the reply's headings: at "fast", the first one may have scrolled past before
    # the first frame that shows the reply.
    heading = re.compile(r"A long answer|Part \d+: ")
    first_token: Chunk | None = None
    idx = term._fed
    while True:
        chunk = term.pump(idx + 1)
        if chunk is None:
            break
        idx += 1
        want_first = first_vis is None and sent_first and chunk.t >= sent_first
        want_last = last_vis is None and sent_last and chunk.t >= sent_last
        if want_first or want_last:
            screen = term.text()
            if want_first and first_token is None and HEADING_START.search(screen):
                first_token = chunk
            if want_first and heading.search(screen):
                first_vis = (idx - 1, chunk)
                first_token = first_token or chunk
            if want_last and MARKER in screen:
                last_vis = (idx - 1, chunk)
    final = term.text()
    follows = MARKER in final
    out["first_token_visible_s"] = (
        rnd(first_vis[1].t - sent_first) if first_vis and sent_first else None
    )
    enter_at = getattr(term, "enter_at", None)  # the app's client: the Enter after typing
    out["send_to_first_words_s"] = (
        rnd(first_vis[1].t - enter_at) if first_vis and enter_at else None
    )
    out["send_to_first_token_s"] = (
        rnd(first_token.t - enter_at) if first_token and enter_at else None
    )
    out["last_token_visible"] = last_vis is not None
    out["follows"] = follows
    if last_vis is not None and sent_last:
        _, chunk = last_vis
        out["lag_ms"] = rnd((chunk.t - sent_last) * 1000, 1)
        out["send_to_last_token_s"] = rnd(chunk.t - t_send)
        if chunk.cpu is not None:
            cpu_s = (chunk.cpu - cpu0) / CLK_TCK
            out["cpu_s"] = rnd(cpu_s, 2)
            tokens = state["last_stream_tokens"] or 1
            out["cpu_s_per_1k_tokens"] = rnd(cpu_s / tokens * 1000, 3)
    else:
        out["lag_ms"] = None
        end_cpu = next((c.cpu for c in reversed(term.chunks) if c.cpu is not None), None)
        if end_cpu is not None:
            out["cpu_s_until_gave_up"] = rnd((end_cpu - cpu0) / CLK_TCK, 2)
    out["cpu_s_tree_total"] = rnd(tree_cpu_seconds(term.pid) - tree0, 2)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peers", default="", help="comma-separated: elia,parllama,oterm")
    parser.add_argument("--rates", default="fast,200", help="comma-separated: fast and/or tok/s")
    parser.add_argument("--no-app", action="store_true", help="measure the peers only")
    parser.add_argument(
        "--sanity",
        action="store_true",
        help="also time two plain line printers: a stdlib client and `llm-pessoal chat`",
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs per client and rate")
    parser.add_argument(
        "--settle",
        type=float,
        default=0.5,
        help="seconds from the first frame to the send (0.5: the app's Markdown warm-up, "
        "a second after start, is still running and counts in cpu_s; 2.5: a settled app)",
    )
    parser.add_argument(
        "--tokens",
        type=int,
        default=N_TOKENS,
        help="tokens in the reply (2000; fewer to time Enter to the first words quickly; "
        "the CPU and lag aims are for 2000)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp dirs")
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        default=os.environ.get("BENCH_PROFILE") or None,
        help="py-spy each streaming client into DIR (skews that run's figures)",
    )
    args = parser.parse_args(argv)

    clients: list[Client] = [] if args.no_app else [APP_CLIENT]
    if args.sanity:
        clients += [RAW_CLIENT, CLI_CLIENT]
    clients += peers_from_flag(args.peers)
    rates = [parse_rate(r.strip()) for r in args.rates.split(",") if r.strip()]

    workdir = tempdir("stream-reply")
    reply_file = workdir / "reply.md"
    reply_file.write_text(markdown_reply(args.tokens), encoding="utf-8")
    result: dict[str, Any] = {
        "benchmark": "stream",
        "terminal": f"{COLS}x{ROWS}",
        "reply": {"tokens": args.tokens, "chars": len(reply_file.read_text()), "last_word": MARKER},
        "machine": machine(),
        # issue 10: the last token <= 50 ms after the server's, at both rates; <= 1.0 CPU s
        # per 2,000-token reply at 200 tokens/s (cpu_s; 0.5 per 1k); Enter to the first
        # token on screen <= 50 ms (the reply's first word; its first heading whole,
        # send_to_first_words_s, comes a write later)
        "aims": {
            "lag_ms": 50,
            "cpu_s": 1.0,
            "cpu_s_per_1k_tokens": 0.5,
            "send_to_first_token_s": 0.05,
            "follows": True,
        },
        "clients": {},
    }
    try:
        for client in clients:
            entry: dict[str, Any] = {"version": client.version()}
            why = client.available() or client.stream_unsupported
            if why:
                entry["skipped"] = why
                log(f"{client.name}: skipped: {why}")
                result["clients"][client.name] = entry
                continue
            runs = []
            for rate in rates:
                for n in range(args.repeat):
                    log(f"{client.name}: rate {rate or 'fast'} run {n + 1}/{args.repeat}")
                    run = run_one(client, rate, reply_file, args.keep, args.profile, args.settle)
                    log(
                        f"  lag {run.get('lag_ms')} ms, follows {run.get('follows')}, "
                        f"cpu/1k {run.get('cpu_s_per_1k_tokens')} {run.get('error', '')}"
                    )
                    runs.append(run)
            entry["runs"] = runs
            result["clients"][client.name] = entry
    finally:
        rmtree(workdir)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
