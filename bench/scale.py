"""The app with a history of years: 50,000 indexed images and 10,000 conversations.

Builds (once, then reused) a data folder: ``outputs/`` with ``--images`` tiny PNGs, each
with its ``parameters`` text and a row in the index, and a database with
``--conversations`` conversations of ``--messages`` messages each (written through
sqlite3 in bulk, over the schema the measured checkout's own store makes). Then, for
each launch of the real app under a 120x40 pty against the fake Ollama server:

- ``first_frame_s``: spawn to the chat prompt's placeholder on screen;
- ``sidebar_s``: spawn to the newest conversation's title in the sidebar, and
  ``conversation_s`` to its last reply in the conversation (each the output chunk that
  first put it on screen: either may come before the first frame's prompt);
- ``sidebar_reopen_s``: the sidebar hidden (Ctrl+B), then Ctrl+B to its newest title;
- ``gallery_open_s``: the key that opens the gallery to the newest image's caption on
  screen (F3 where the Image screen holds the gallery; F3, then Ctrl+B, where the
  gallery is a screen of its own: timed from Ctrl+B);
- ``gallery_reopen_s``: closed and opened again (the screen is kept), to its status line;
- ``page_scroll_s``: PageDown in the gallery to the last byte of the redraw it causes
  (the output is quiet for 0.3 s after it; thumbnails included), median of 3, and
  ``page_scroll_first_redraw_s``: to the first byte of it;
- ``filter_s``: the filter's last keystroke to the last byte of the redraw (and
  ``filter_first_redraw_s`` to its first), and whether the match was then on screen
  (checkouts without a gallery filter report null);
- ``rss_mib``: resident memory of the app after all of that (and ``idle_rss_mib`` 2 s
  after the first frame).

``--checkout PATH`` measures another tree's code (a ``git archive`` of main, say) with
this venv. Prints one JSON object. Usage:

    .venv/bin/python bench/scale.py [-n 3] [--checkout /tmp/main] [--data /tmp/scale-data]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from statistics import median
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, VENV_BIN, Server, Terminal, app_config, clean_env, log, machine, rnd

WORDS = [
    "lighthouse",
    "fox",
    "harbour",
    "neon",
    "forest",
    "castle",
    "robot",
    "garden",
    "desert",
    "comet",
    "violin",
    "glacier",
    "market",
    "cathedral",
    "orchard",
    "tram",
    "bridge",
    "dragon",
    "teapot",
    "meadow",
]
MODELS = ("sd15-base", "dreamshaper-8", "sdxl-turbo", "realistic-vision")
RUN_APP = "import sys; from tui.cli import main; sys.exit(main())"
MARKER = "scale-data.json"


def prompt_of(i: int) -> str:
    rng = random.Random(i)
    return f"img {i:05d} " + " ".join(rng.choice(WORDS) for _ in range(6))


IMAGE_COLUMNS = (
    "path, prompt, negative_prompt, width, height, steps, guidance, seed, scheduler, model,"
    " seconds, created_at"
)


def image_row(i: int, path: str, created: float) -> tuple[Any, ...]:
    """The index row of the ``i``-th image (``IMAGE_COLUMNS``; search.py too)."""
    return (path, prompt_of(i), "blurry", 512, 512, 20, 7.5, 1000 + i, "Euler a",
            MODELS[i % len(MODELS)], 1.5, created)  # fmt: skip


def build_images(folder: Path, count: int) -> list[tuple[Any, ...]]:
    """``count`` tiny PNGs with their parameters text; their index rows."""
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    start = time.time() - count * 60.0  # one a minute, the newest now
    colours = [
        Image.new("RGB", (16, 16), (i * 37 % 256, i * 91 % 256, i * 53 % 256)) for i in range(64)
    ]
    for i in range(count):
        prompt = prompt_of(i)
        model = MODELS[i % len(MODELS)]
        text = (
            f"{prompt}\nNegative prompt: blurry\nSteps: 20, Sampler: Euler a, CFG scale: 7.5, "
            f"Seed: {1000 + i}, Size: 512x512, Model: {model}"
        )
        info = PngInfo()
        info.add_text("parameters", text)
        path = folder / f"scale-{i:05d}.png"
        colours[i % 64].save(path, pnginfo=info)
        created = start + i * 60.0
        os.utime(path, (created, created))
        rows.append(image_row(i, str(path), created))
        if i % 5000 == 0:
            log(f"  {i} images")
    return rows


def add_conversations(conn: sqlite3.Connection, conversations: int, messages: int) -> None:
    """``conversations`` of ``messages`` turns each (user and assistant in turn, newest
    last), inserted through ``conn`` inside the caller's transaction (search.py too)."""
    now = time.time()
    message_id = 0
    text = "A reply with **bold**, `code` and a list:\n\n- one\n- two\n" * 3
    for c in range(conversations):
        updated = now - (conversations - c) * 30.0
        conn.execute(
            "INSERT INTO conversations (id, title, model, options, created_at, updated_at)"
            " VALUES (?, ?, 'llama3.2:latest', '{}', ?, ?)",
            (c + 1, f"Conversation {c:05d} about {WORDS[c % len(WORDS)]}", updated, updated),
        )
        batch = []
        parent = None
        for m in range(messages):
            message_id += 1
            role = "user" if m % 2 == 0 else "assistant"
            content = f"question {m} of conversation {c}" if role == "user" else text
            batch.append((message_id, c + 1, role, content, updated, parent))
            parent = message_id
        conn.executemany(
            "INSERT INTO messages (id, conversation_id, role, content, status, created_at,"
            " parent_id) VALUES (?, ?, ?, ?, 'done', ?, ?)",
            batch,
        )
        conn.execute("UPDATE conversations SET current_id = ? WHERE id = ?", (parent, c + 1))


def build(data: Path, checkout: Path, images: int, conversations: int, messages: int) -> None:
    marker = data / MARKER
    wanted = {"images": images, "conversations": conversations, "messages": messages}
    if marker.is_file() and json.loads(marker.read_text()) == wanted:
        log(f"reusing {data}")
        return
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir(parents=True)
    t0 = time.time()
    db = data / "data" / "bench.db"
    # the schema the checkout's own store makes (an older checkout's is a prefix of a newer's)
    subprocess.run(
        [str(VENV_BIN / "python"), "-c",
         "import sys; from pathlib import Path; from engines.store import Store; "
         "Store.open(Path(sys.argv[1])).close()", str(db)],
        check=True, env=clean_env(PYTHONPATH=str(checkout)),
    )  # fmt: skip
    rows = build_images(data / "outputs", images)
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("BEGIN")
    conn.executemany(f"INSERT INTO images ({IMAGE_COLUMNS}) VALUES ({', '.join('?' * 12)})", rows)
    add_conversations(conn, conversations, messages)
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    marker.write_text(json.dumps(wanted))
    log(f"built {data} in {time.time() - t0:.0f} s")


def burst_end(
    term: Terminal, since: float, quiet: float = 0.3, limit: float = 10.0
) -> float | None:
    """When the output that followed ``since`` stopped (quiet for ``quiet`` s), as a delay
    from ``since``; None if nothing came."""
    deadline = since + limit
    while time.time() < deadline:
        last = term.last_output_at()
        if last is not None and last > since and time.time() - last >= quiet:
            return last - since
        time.sleep(0.01)
    last = term.last_output_at()
    return None if last is None or last <= since else last - since


def first_output(term: Terminal, since: float, limit: float = 10.0) -> float | None:
    """How long after ``since`` the first output came (the app's first redraw)."""
    deadline = since + limit
    while time.time() < deadline:
        with term._lock:
            later = [c.t for c in term.chunks if c.t > since]
        if later:
            return later[0] - since
        time.sleep(0.002)
    return None


PROMPT = "Message (Enter to send"
REPLY = "A reply with"
"""The first words of every reply in the data (``add_conversations``)."""


def first_seen(term: Terminal, needles: list[str], timeout: float) -> dict[str, float]:
    """Pump live until each of ``needles`` has been on screen (or ``timeout``); for each,
    the read stamp of the chunk that first put it there."""
    seen: dict[str, float] = {}
    deadline = time.time() + timeout
    while len(seen) < len(needles) and time.time() < deadline:
        exited = term.proc.poll() is not None
        while (chunk := term.pump(term._fed + 1)) is not None:
            screen = term.text()
            seen.update((n, chunk.t) for n in needles if n not in seen and n in screen)
        if exited:
            break
        time.sleep(0.002)
    return seen


def wait_gone(term: Terminal, needle: str, timeout: float) -> bool:
    """Pump live until ``needle`` is no longer on screen."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        term.pump()
        if needle not in term.text():
            return True
        time.sleep(0.01)
    return False


def wait_quiet(term: Terminal, quiet: float = 0.5, limit: float = 10.0) -> None:
    deadline = time.time() + limit
    while time.time() < deadline:
        last = term.last_output_at()
        if last is not None and time.time() - last >= quiet:
            return
        time.sleep(0.02)


def settle(term: Terminal, keys: str) -> None:
    """Send ``keys`` and wait for the app's answer to end: for its first output, then for
    quiet (an app quiet already would let the next keys race this answer)."""
    sent = time.time()
    term.write(keys)
    first_output(term, sent, limit=5.0)
    wait_quiet(term)


def launch(checkout: Path, data: Path, url: str, images: int, conversations: int) -> dict[str, Any]:
    cfg = app_config(data, url)
    env = clean_env(PYTHONPATH=str(checkout))
    term = Terminal([str(VENV_BIN / "python"), "-c", RUN_APP, "--config", str(cfg)], env, str(data))
    out: dict[str, Any] = {}
    newest_image = f"img {images - 1:05d}"
    try:
        title = f"Conversation {conversations - 1:05d}"
        seen = first_seen(term, [PROMPT, title, REPLY], 60)
        if PROMPT not in seen:
            raise RuntimeError("no first frame:\n" + term.text())
        out["first_frame_s"] = seen[PROMPT] - term.t_start
        # each as the chunk that first put it on screen (it may come before the prompt)
        out["sidebar_s"] = seen[title] - term.t_start if title in seen else None
        out["conversation_s"] = seen[REPLY] - term.t_start if REPLY in seen else None
        time.sleep(max(0.0, term.t_start + out["first_frame_s"] + 2 - time.time()))
        from common import rss_bytes

        out["idle_rss_mib"] = rss_bytes(term.pid) / 2**20
        wait_quiet(term)
        out["sidebar_reopen_s"] = None
        term.pump()
        if title in term.text():  # Ctrl+B hides the sidebar, and again shows it
            term.write("\x02")
            if wait_gone(term, title, 5):
                wait_quiet(term)
                pressed = time.time()
                term.write("\x02")
                t = term.wait_visible([title], 5)
                out["sidebar_reopen_s"] = None if t is None else t - pressed
                wait_quiet(term)
        term.pump()
        pressed = time.time()
        term.write("\x1b[13~")  # F3
        t = term.wait_visible([newest_image], 5)
        out["gallery_keys"] = "F3"
        if t is None:  # the gallery is a screen of its own: Ctrl+B opens it
            wait_quiet(term)
            term.pump()
            pressed = time.time()
            term.write("\x02")
            t = term.wait_visible([newest_image], 30)
            out["gallery_keys"] = "F3, Ctrl+B"
        else:
            wait_quiet(term)
            term.write("\x02")  # Ctrl+B: focus the list, for the scrolling below
        if t is None:
            raise RuntimeError("the gallery's newest image was not on screen:\n" + term.text())
        out["gallery_open_s"] = t - pressed
        wait_quiet(term)
        scrolls, firsts = [], []
        for _ in range(3):
            pressed = time.time()
            term.write("\x1b[6~")  # PageDown
            took = burst_end(term, pressed)
            first = first_output(term, pressed)
            if took is not None:
                scrolls.append(took)
            if first is not None:
                firsts.append(first)
            wait_quiet(term)
        out["page_scroll_s"] = median(scrolls) if scrolls else None
        out["page_scroll_first_redraw_s"] = median(firsts) if firsts else None
        term.pump()
        out["filter_s"] = None
        out["filter_found"] = None
        if "Filter" in term.text():  # the gallery has a filter: "/" goes to it
            needle = f"img {images // 2:05d}"[:-1]  # ten images and one more match
            settle(term, "/")
            settle(term, needle[:-1])
            pressed = time.time()
            term.write(needle[-1])
            out["filter_s"] = burst_end(term, pressed)
            out["filter_first_redraw_s"] = first_output(term, pressed)
            term.pump()
            out["filter_found"] = f"img {images // 2:05d}" in term.text()
        out["gallery_reopen_s"] = None
        if out["gallery_keys"] == "F3, Ctrl+B":  # closed and opened again (it is kept)
            settle(term, "\x1b")
            settle(term, "\x1b")
            term.pump()
            pressed = time.time()
            term.write("\x02")
            t = term.wait_visible(["Images: "], 10)
            out["gallery_reopen_s"] = None if t is None else t - pressed
            wait_quiet(term)
        from common import rss_bytes

        out["rss_mib"] = rss_bytes(term.pid) / 2**20
        out["screen"] = term.text()
    finally:
        term.close("\x11")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=3, help="launches (default 3)")
    parser.add_argument("--images", type=int, default=50_000)
    parser.add_argument("--conversations", type=int, default=10_000)
    parser.add_argument("--messages", type=int, default=50)
    parser.add_argument("--checkout", type=Path, default=ROOT, help="the code to measure")
    parser.add_argument("--data", type=Path, default=Path("/tmp/llmp-scale-data"))
    parser.add_argument("--show-screen", action="store_true", help="print the last screen")
    args = parser.parse_args(argv)
    checkout = args.checkout.resolve()
    data = args.data / checkout.name
    build(data, checkout, args.images, args.conversations, args.messages)
    reply = data / "reply.md"
    reply.write_text("A short reply.\n", encoding="utf-8")
    runs = []
    with Server(reply) as server:
        for i in range(args.n):
            log(f"launch {i + 1}/{args.n}")
            runs.append(launch(checkout, data, server.url, args.images, args.conversations))
    result: dict[str, Any] = {
        "benchmark": "scale",
        "checkout": str(checkout),
        "images": args.images,
        "conversations": args.conversations,
        "messages_each": args.messages,
        "terminal": "120x40",
        "machine": machine(),
        "gallery_keys": runs[-1]["gallery_keys"],
    }
    for key in (
        "first_frame_s", "sidebar_s", "conversation_s", "sidebar_reopen_s", "gallery_open_s",
        "gallery_reopen_s", "page_scroll_s", "page_scroll_first_redraw_s", "filter_s",
        "filter_first_redraw_s", "idle_rss_mib", "rss_mib",
    ):  # fmt: skip
        values = [r[key] for r in runs if r.get(key) is not None]
        result[key] = (
            {"median": rnd(median(values), 3), "runs": [rnd(v, 3) for v in values]}
            if values
            else None
        )
    result["filter_found"] = runs[-1]["filter_found"]
    if args.show_screen:
        result["screen"] = runs[-1]["screen"].splitlines()
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
