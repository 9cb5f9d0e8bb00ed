"""One search (engines/search.py) over a history of years: 50,000 images and 10,000
conversations of 50 messages (500,000 messages), the data of ``scale.py`` (its prompts,
titles and message texts; index rows only, no PNG files).

Builds (once, then reused) a database at the schema just before the search migration,
then measures on a copy of it:

- ``index_build_s``: opening it with the app's Store, which runs the migration that
  builds the search index for everything already there; ``database_mib`` before and after;
- ``queries``: for each query, the median, p95 and best of ``-n`` runs of
  ``engines.search.search`` (the first page of 20: ranked ids, counts, snippets and
  details), and the number of matches of each kind; ``page_2_ms`` for the next page;
- ``add_message_ms``: the median cost of adding a message through the Store, with the
  triggers that keep the index in step (``add_message_without_index_ms``: the same on the
  database before the migration).

Prints one JSON object. Usage:

    .venv/bin/python bench/search.py [-n 20] [--data /tmp/search-bench]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import sys
import time
from pathlib import Path
from statistics import median, quantiles
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import log, machine
from scale import IMAGE_COLUMNS, add_conversations, image_row

from engines.chat_types import ChatOptions
from engines.search import search
from engines.store import MIGRATIONS, Store, _statements

QUERIES = {
    "common word (in 250,000 messages)": "reply",
    "common word (in 13,000 image prompts)": "lighthouse",
    "two common words": "reply bold",
    "rare word (one image)": "04321",
    "rare words (one message)": "question 8 of conversation 4321",
    "prefix, typing (lightho)": "lightho",
    "short prefix (co)": "co",
    "words typed together (a phrase)": "conversation-4321",
    "model name": "dreamshaper-8",
    "seed": "43210",
    "no match": "zzyzx",
    "FTS5 syntax": '"NEAR(reply* AND',
}
MARKER = "search-data.json"


def search_migration() -> int:
    """How many migrations come before the one that makes the search index."""
    return next(i for i, m in enumerate(MIGRATIONS) if "messages_fts" in m)


def build(data: Path, images: int, conversations: int, messages: int) -> Path:
    """The database at the schema before the search migration, filled; reused when there."""
    before = data / "before.db"
    wanted = {
        "images": images,
        "conversations": conversations,
        "messages": messages,
        "schema": search_migration(),
    }
    marker = data / MARKER
    if marker.is_file() and json.loads(marker.read_text()) == wanted and before.is_file():
        log(f"reusing {before}")
        return before
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir(parents=True)
    t0 = time.time()
    conn = sqlite3.connect(before, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    for script in MIGRATIONS[: search_migration()]:
        for statement in _statements(script):
            conn.execute(statement)
    conn.execute(f"PRAGMA user_version = {search_migration()}")
    start = time.time() - images * 60.0
    conn.execute("BEGIN")
    conn.executemany(
        f"INSERT INTO images ({IMAGE_COLUMNS}) VALUES ({', '.join('?' * 12)})",
        (
            image_row(i, f"/bench/outputs/scale-{i:05d}.png", start + i * 60.0)
            for i in range(images)
        ),
    )
    add_conversations(conn, conversations, messages)
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    marker.write_text(json.dumps(wanted))
    log(f"built {before} in {time.time() - t0:.0f} s")
    return before


def mib(path: Path) -> float:
    size = sum(p.stat().st_size for p in path.parent.glob(path.name + "*") if p.is_file())
    return round(size / 2**20, 1)


def timed(fn: Any, n: int) -> tuple[list[float], Any]:
    times = []
    result = None
    for _ in range(n):
        t = time.perf_counter()
        result = fn()
        times.append((time.perf_counter() - t) * 1000)
    return times, result


def figures(times: list[float]) -> dict[str, float]:
    p95 = quantiles(times, n=20)[-1] if len(times) >= 2 else times[0]
    return {
        "median_ms": round(median(times), 2),
        "p95_ms": round(p95, 2),
        "best_ms": round(min(times), 2),  # the machine's own cost, with nothing else running
    }


def add_messages(store: Store, n: int) -> float:
    conversation = store.create_conversation("m", ChatOptions(), "bench")
    times, _ = timed(
        lambda: store.add_message(conversation.id, "user", "a new question about the comet"), n
    )
    return round(median(times), 3)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=20, help="runs of each query")
    parser.add_argument("--data", type=Path, default=Path("/tmp/search-bench"))
    parser.add_argument("--images", type=int, default=50_000)
    parser.add_argument("--conversations", type=int, default=10_000)
    parser.add_argument("--messages", type=int, default=50)
    args = parser.parse_args()
    before = build(args.data, args.images, args.conversations, args.messages)
    db = args.data / "bench.db"
    for old in args.data.glob("bench.db*"):
        old.unlink()
    shutil.copy(before, db)
    size_before = mib(db)
    log("migrating (building the search index)")
    t = time.perf_counter()
    store = Store.open(db)
    build_s = time.perf_counter() - t
    out: dict[str, Any] = {
        "machine": machine(),
        "data": {
            "images": args.images,
            "conversations": args.conversations,
            "messages": args.conversations * args.messages,
        },
        "index_build_s": round(build_s, 2),
        "database_mib": {"before": size_before, "with_index": mib(db)},
        "queries": {},
    }
    try:
        for name, text in QUERIES.items():
            search(store, text)  # warm: the pages it reads are in the cache after this
            times, results = timed(lambda text=text: search(store, text), args.n)
            page_2, _ = timed(lambda text=text: search(store, text, offset=20), max(3, args.n // 4))
            out["queries"][name] = {
                "text": text,
                **figures(times),
                "page_2_ms": round(median(page_2), 2),
                "matches": {k: v for k, v in results.counts.items() if v},
                "first": f"{results.hits[0].kind} {results.hits[0].id}" if results.hits else None,
            }
            log(f"{name}: {out['queries'][name]['median_ms']} ms")
        every = [q["median_ms"] for q in out["queries"].values()]
        p95s = [q["p95_ms"] for q in out["queries"].values()]
        out["all_queries"] = {"worst_median_ms": max(every), "worst_p95_ms": max(p95s)}
        out["add_message_ms"] = add_messages(store, 200)
    finally:
        store.close()
    shutil.copy(before, args.data / "plain.db")  # not opened by Store: it would migrate it
    out["add_message_without_index_ms"] = _add_raw(args.data / "plain.db", 200)
    print(json.dumps(out, indent=2))
    return 0


def _add_raw(path: Path, n: int) -> float:
    """Adding a message as Store.add_message does (same statements, one transaction
    each), on the database without the search index's triggers."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA foreign_keys = ON")

    def add() -> None:
        conn.execute("BEGIN IMMEDIATE")
        cur = conn.execute(
            "INSERT INTO messages (conversation_id, role, content, status, created_at,"
            " parent_id) VALUES (1, 'user', 'a new question about the comet', 'done', ?,"
            " (SELECT current_id FROM conversations WHERE id = 1))",
            (time.time(),),
        )
        conn.execute(
            "UPDATE conversations SET updated_at = ?, current_id = ? WHERE id = 1",
            (time.time(), cur.lastrowid),
        )
        conn.execute("COMMIT")

    times, _ = timed(add, n)
    conn.close()
    return round(median(times), 3)


if __name__ == "__main__":
    sys.exit(main())
