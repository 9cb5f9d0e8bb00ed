"""A reply's reader alone: the CPU it takes to read a 2,000-token reply, and how long after
the server's last token the stream hands over its end, for each way of pausing.

A reply is read in a thread of its own (``engines/reply_stream.py``). Once it has caught up
with the server, it pauses before reading again, so that it reads several tokens at once:
on a small machine each read costs some 0.5 ms of CPU (a wake-up and a pass through the
HTTP client), parsing a line 15 us. Each case here streams the same reply from the fake
Ollama server (a process of its own) through ``ChatEngine.stream``, with nothing else on
the event loop:

- ``0.02s`` pauses 0.02 s (the reader of the last release);
- ``0.1s unwatched`` pauses 0.1 s (fewer reads, the last words wait for the pause);
- ``0.1s watched`` pauses 0.1 s and watches the socket for the reply's last line, which
  ends the pause (the app's reader for a reply on screen);
- ``0.5s unwatched``: the app's reader for a reply out of sight (its conversation is not
  shown): what a reply in the background costs, but for the little its events cost.

``cpu_s`` is the process's CPU from the request to the reply's end (the reader thread
and the loop that takes its batches); ``end_after_server_ms`` is from the server's last
token to the stream's last chunk. Prints one JSON object. Usage:

    .venv/bin/python bench/reader.py [--repeat 3] [--rate 200]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, Server, log, machine, markdown_reply, rmtree, rnd, tempdir

N_TOKENS = 2000
CASES = {
    "0.02s": (0.02, False),
    "0.1s unwatched": (0.1, False),
    "0.1s watched": (0.1, True),
    "0.5s unwatched": (0.5, False),
}


async def read_once(url: str, pause: tuple[float, bool]) -> dict[str, Any]:
    from engines.chat_types import ChatMessage, ChatOptions
    from engines.ollama_client import ChatEngine

    engine = ChatEngine(url)
    try:
        await engine.status()  # the client made, the connection open: not timed
        times0 = os.times()
        chunks = 0
        async for chunk in engine.stream(
            "llama3.2:latest",
            [ChatMessage("user", "hi")],
            ChatOptions(),
            pause=lambda: pause,
            joined=True,
        ):
            chunks += 1
            if chunk.stats is not None:
                break
        ended = time.time()
        times1 = os.times()
    finally:
        await engine.aclose()
    cpu = (times1.user - times0.user) + (times1.system - times0.system)
    return {"cpu_s": rnd(cpu), "chunks": chunks, "ended_at": ended}


def run_case(reply_file: Path, rate: float, pause: tuple[float, bool]) -> dict[str, Any]:
    with Server(reply_file, rate) as server:
        out = asyncio.run(read_once(server.url, pause))
        state = server.state()
    last = state.get("sent_last_token_at_wall")
    ended = out.pop("ended_at")
    out["end_after_server_ms"] = rnd((ended - last) * 1000, 1) if last else None
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs of each case")
    parser.add_argument("--rate", type=float, default=200.0, help="tokens/s of the reply")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    workdir = tempdir("reader")
    reply_file = workdir / "reply.md"
    reply_file.write_text(markdown_reply(N_TOKENS), encoding="utf-8")
    result: dict[str, Any] = {
        "benchmark": "reader",
        "rate": args.rate,
        "reply_tokens": N_TOKENS,
        "machine": machine(),
        "cases": {name: [] for name in CASES},
    }
    try:
        for i in range(args.repeat):  # the cases alternately: this machine's speed drifts
            for name, pause in CASES.items():
                log(f"{name}: run {i + 1}/{args.repeat}")
                result["cases"][name].append(run_case(reply_file, args.rate, pause))
                log(f"  {result['cases'][name][-1]}")
    finally:
        rmtree(workdir)
    result["median"] = {
        name: {
            key: rnd(statistics.median(r[key] for r in runs if r[key] is not None), 3)
            for key in ("cpu_s", "end_after_server_ms")
        }
        for name, runs in result["cases"].items()
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
