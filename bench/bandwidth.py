"""Bytes the app writes to its terminal, with and without its output filter (tui/output.py).

Sections (all under the harness's 120x40 pty, this checkout's code):

- ``stream``: a 2,000-token Markdown reply at 200 tok/s: bytes per 1,000 tokens and the
  last token's lag after the server's last (aim: <= 50 ms), beside parllama and elia when
  installed under /tmp/peers (else "skipped");
- ``preview``: the Image screen generating with the tiny random-weight pipeline: bytes per
  step (half-block previews, aim <= 30 KB), through ``preview_bytes.py`` in true, 256
  and 16 colours;
- ``monitor``: the Monitor left alone, Ollama down and up: bytes/s (aim <= 2 KB/s), CPU %
  of one core (aim <= 2 %) and where that CPU goes: each thread's CPU time from
  /proc/PID/task/*/stat over the window;
- ``thin``: through ``bench/thin_link.py`` (1 Mbit/s, 50 ms each way): key echo, a reply
  at 50 tok/s.

Prints one JSON object. Usage:

    .venv/bin/python bench/bandwidth.py [--sections stream,preview,monitor,thin]
        [--peers elia,parllama] [--seconds 30]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "tests")]

from clients import APP_CLIENT, Client, Launch, peers_from_flag  # noqa: E402
from common import (  # noqa: E402
    CLK_TCK,
    ROOT,
    VENV_BIN,
    Server,
    Terminal,
    app_config,
    clean_env,
    cpu_ticks,
    log,
    machine,
    markdown_reply,
    rmtree,
    tempdir,
)

N_TOKENS = 2000
THIN_ARGS = ["--rate", "1000000", "--delay", "0.05"]


def app_argv(cfg: Path, *extra: str, thin: bool = False) -> list[str]:
    argv = [str(VENV_BIN / "python"), "-m", "tui.cli", "--config", str(cfg), *extra]
    if thin:
        argv = [str(VENV_BIN / "python"), str(HERE / "thin_link.py"), *THIN_ARGS, "--", *argv]
    return argv


def app_env(filtered: bool) -> dict[str, str]:
    """This checkout's code (not whatever the venv's console script points at)."""
    return clean_env(PYTHONPATH=str(ROOT), LLM_PESSOAL_OUTPUT_FILTER="1" if filtered else "0")


def app_client(filtered: bool, thin: bool = False) -> Client:
    def setup(workdir: Path, url: str, prompt: str) -> Launch:
        cfg = app_config(workdir, url)
        return Launch(app_argv(cfg, thin=thin), app_env(filtered), str(ROOT))

    name = "llm-pessoal" + ("" if filtered else " (unfiltered)") + (" (thin link)" if thin else "")
    return replace(APP_CLIENT, name=name, setup=setup)


# ---------------------------------------------------------------------------- streaming


def stream_section(peers: str, rate: float) -> dict[str, Any]:
    from stream import run_one

    work = tempdir("bandwidth-reply")
    reply = work / "reply.md"
    reply.write_text(markdown_reply(N_TOKENS), encoding="utf-8")
    out: dict[str, Any] = {"tokens": N_TOKENS, "rate_tok_s": rate, "clients": {}}
    try:
        for client in [app_client(False), app_client(True), *peers_from_flag(peers)]:
            why = client.available() or client.stream_unsupported
            if why:
                out["clients"][client.name] = {"skipped": why}
                continue
            log(f"stream: {client.name}")
            run = run_one(client, rate, reply, keep=False)
            entry = {
                "bytes": run.get("output_bytes"),
                "bytes_per_1k_tokens": (
                    round(run["output_bytes"] * 1000 / N_TOKENS)
                    if run.get("output_bytes")
                    else None
                ),
                "writes": run.get("output_writes"),
                "lag_ms": run.get("lag_ms"),
                "follows": run.get("follows"),
                "cpu_s_per_1k_tokens": run.get("cpu_s_per_1k_tokens"),
            }
            if "error" in run:
                entry["error"] = run["error"]
            out["clients"][client.name] = entry
    finally:
        rmtree(work)
    return out


# ---------------------------------------------------------------------------- threads


def thread_ticks(pid: int) -> dict[str, int]:
    """CPU ticks (utime + stime) of each thread of ``pid``, by "name/tid"."""
    out: dict[str, int] = {}
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            data = (task / "stat").read_bytes()
            name = (task / "comm").read_text().strip()
            fields = data[data.rindex(b")") + 2 :].split()
            out[f"{name}/{task.name}"] = int(fields[11]) + int(fields[12])
    return out


def idle_window(term: Terminal, seconds: float) -> dict[str, Any]:
    """Bytes and CPU of the app left alone for ``seconds``, thread by thread."""
    term.pump()
    i0 = term.received()
    threads0 = thread_ticks(term.pid)
    cpu0 = cpu_ticks(term.pid) or 0
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        time.sleep(0.5)
    elapsed = time.monotonic() - t0
    n_bytes = term.bytes_since(i0)
    threads1 = thread_ticks(term.pid)
    used = ((cpu_ticks(term.pid) or 0) - cpu0) / CLK_TCK
    per_thread = {
        name: round((ticks - threads0.get(name, 0)) / CLK_TCK, 2)
        for name, ticks in threads1.items()
        if ticks - threads0.get(name, 0) > 0
    }
    return {
        "seconds": round(elapsed, 1),
        "bytes": n_bytes,
        "bytes_per_s": round(n_bytes / elapsed),
        "cpu_pct_of_one_core": round(100 * used / elapsed, 2),
        "cpu_s_by_thread": dict(sorted(per_thread.items(), key=lambda kv: -kv[1])),
    }


def monitor_section(seconds: float) -> dict[str, Any]:
    out: dict[str, Any] = {"aims": {"bytes_per_s": 2000, "cpu_pct_of_one_core": 2.0}}
    for ollama in ("down", "up"):
        for filtered in (False, True):
            key = f"ollama {ollama}, {'filtered' if filtered else 'unfiltered'}"
            log(f"monitor: {key}")
            work = tempdir("bandwidth-monitor")
            try:
                with contextlib.ExitStack() as stack:
                    if ollama == "up":
                        reply = work / "reply.md"
                        reply.write_text("hi", encoding="utf-8")
                        url = stack.enter_context(Server(reply)).url
                    else:
                        url = "http://127.0.0.1:9"
                    cfg = app_config(work, url)
                    argv = app_argv(cfg, "--screen", "monitor")
                    term = stack.enter_context(Terminal(argv, app_env(filtered), str(ROOT)))
                    if term.wait_visible(["RAM"], 30) is None:
                        raise RuntimeError(f"the Monitor never showed:\n{term.text()}")
                    time.sleep(5)  # past start-up
                    out[key] = idle_window(term, seconds)
            except Exception as exc:
                out[key] = {"error": f"{type(exc).__name__}: {exc}"}
            finally:
                rmtree(work)
    return out


# ---------------------------------------------------------------------------- previews


def preview_section(steps: int) -> dict[str, Any]:
    """``preview_bytes.py`` (in-process, a recording driver) in each colour system."""
    out: dict[str, Any] = {"aim_bytes_per_step": 30_000, "renderer": "halfblock"}
    for system in ("truecolor", "256", "standard"):
        log(f"preview: {system}")
        env = {**app_env(True), "TEXTUAL_COLOR_SYSTEM": system}
        run = subprocess.run(
            [str(VENV_BIN / "python"), str(HERE / "preview_bytes.py")],
            env=env,
            cwd=str(ROOT),
            capture_output=True,
            text=True,
            timeout=900,
        )
        lines = [line for line in run.stdout.splitlines() if line.startswith("{")]
        out[system] = json.loads(lines[-1]) if lines else {"error": run.stderr[-2000:]}
    return out


# ---------------------------------------------------------------------------- thin link


def key_echo(term: Terminal, text: str = "kqzjx") -> list[float | None]:
    """Type ``text`` a key at a time into the focused prompt; ms until each is on screen.
    The first key starts a word found nowhere else and is not timed (a single letter is
    on the screen already)."""
    times: list[float | None] = []
    term.write(text[0])
    if term.wait_visible([text[0] + " "], 10) is None and term.wait_visible([text[0]], 10) is None:
        return times
    time.sleep(0.5)
    for i in range(1, len(text)):
        term.pump()
        i0 = term.received()
        t0 = time.time()
        term.write(text[i])
        deadline = t0 + 10
        seen = None
        while seen is None and time.time() < deadline:
            time.sleep(0.005)
            if term.received() > i0:
                term.pump()
                if text[: i + 1] in term.text():
                    seen = term.chunks[term.received() - 1].t
        times.append(round((seen - t0) * 1000, 1) if seen else None)
        time.sleep(0.3)
    return times


def thin_section(steps: int) -> dict[str, Any]:
    from stream import run_one

    out: dict[str, Any] = {
        "link": "1 Mbit/s, 50 ms each way (bench/thin_link.py)",
        "aims": {"key_echo_ms": 150, "stream_keeps_up_at_tok_s": 50},
    }
    work = tempdir("bandwidth-thin")
    try:
        reply = work / "reply.md"
        reply.write_text(markdown_reply(N_TOKENS), encoding="utf-8")
        for filtered in (False, True):
            key = "filtered" if filtered else "unfiltered"
            entry: dict[str, Any] = {}
            log(f"thin: key echo, {key}")
            with Server(reply) as server:
                cfg = app_config(work / key, server.url)
                argv = app_argv(cfg, thin=True)
                with Terminal(argv, app_env(filtered), str(ROOT)) as term:
                    if term.wait_visible(["Message (Enter to send"], 60) is None:
                        raise RuntimeError("no first frame through the thin link")
                    time.sleep(2)
                    entry["key_echo_ms"] = key_echo(term)
            log(f"thin: stream at 50 tok/s, {key}")
            run = run_one(app_client(filtered, thin=True), 50.0, reply, keep=False)
            entry["stream_50_tok_s"] = {
                k: run.get(k) for k in ("output_bytes", "lag_ms", "follows", "error") if k in run
            }
            out[key] = entry
    finally:
        rmtree(work)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", default="stream,preview,monitor")
    parser.add_argument("--peers", default="elia,parllama")
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=30.0, help="idle Monitor window")
    parser.add_argument("--steps", type=int, default=30, help="steps of the preview run")
    args = parser.parse_args(argv)
    sections = {s.strip() for s in args.sections.split(",") if s.strip()}
    result: dict[str, Any] = {
        "benchmark": "bandwidth",
        "terminal": "120x40, TERM=xterm-256color, COLORTERM=truecolor",
        "machine": machine(),
    }
    if "stream" in sections:
        result["stream"] = stream_section(args.peers, args.rate)
    if "preview" in sections:
        result["preview"] = preview_section(args.steps)
    if "monitor" in sections:
        result["monitor"] = monitor_section(args.seconds)
    if "thin" in sections:
        result["thin"] = thin_section(args.steps)
    print(json.dumps(result, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
