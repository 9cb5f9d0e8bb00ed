"""``llm-pessoal search TEXT``: one search over conversations, messages, images and
presets (engines/search.py), best first, as lines or JSON."""

from __future__ import annotations

import argparse
import os
import sys
from datetime import datetime
from typing import TYPE_CHECKING, Any

from engines.config import Settings
from tui.cli_base import EXIT_FAIL, EXIT_OK, EXIT_USAGE, command_store, dumps, err, say
from tui.text import visible

if TYPE_CHECKING:
    from engines.search import Hit

DESCRIPTION = """\
Search every conversation (titles, and every message: every version of a turn and every
branch), every image (prompt, negative prompt, model, seed and sampler; not those in the
trash) and every preset (name, model, system prompt), best match first.

The text is taken as words, never as a query language: quotes, *, -, :, brackets, AND,
OR, NOT and NEAR are looked for like any other word. Every word must match, in any order
(accents and case do not matter); characters typed together ("qwen2.5-coder") must match
together, and the last word also matches as the start of a longer one.

--json prints {"query", "results": [{"kind", "id", "title", "snippet", "marks",
"detail", "conversation_id", "current", "path", "score", "created_at"}], "counts",
"more"}: "marks" are [start, end) character offsets of the matches in "snippet";
"current" is false for a message that is an older version or on another branch; "counts"
are the matches of each kind, counted up to COUNT_CAP."""


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from engines.search import COUNT_CAP, KINDS

    search = sub.add_parser(
        "search",
        help="search conversations, messages, images and presets",
        description=DESCRIPTION.replace("COUNT_CAP", f"{COUNT_CAP:,}"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    search.add_argument("text", metavar="TEXT", help="the words to look for")
    search.add_argument("--json", action="store_true", help="print JSON")
    search.add_argument(
        "--kind",
        action="append",
        default=[],
        metavar="KIND",
        help=f"only these kinds (repeat it, or separate with commas): {', '.join(KINDS)}",
    )
    search.add_argument(
        "--limit", type=int, default=20, metavar="N", help="at most N results (default 20)"
    )
    search.add_argument(
        "--offset", type=int, default=0, metavar="N", help="skip the first N (the next page)"
    )
    search.set_defaults(run=run_search)


def run_search(settings: Settings, args: argparse.Namespace) -> int:
    from engines.search import COUNT_CAP, MAX_LIMIT, SearchError, parse_kinds, search
    from engines.store import StoreError

    if not 1 <= args.limit <= MAX_LIMIT:
        err(f"--limit {args.limit}: use 1 to {MAX_LIMIT}")
        return EXIT_USAGE
    if args.offset < 0:
        err(f"--offset {args.offset}: use 0 or more")
        return EXIT_USAGE
    try:
        kinds = parse_kinds(args.kind)
    except SearchError as exc:
        err(f"--kind: {exc}")
        return EXIT_USAGE
    store = command_store(settings)
    if store is None:
        return EXIT_FAIL
    try:
        results = search(store, args.text, kinds=kinds, limit=args.limit, offset=args.offset)
    except SearchError as exc:
        err(str(exc))
        return EXIT_USAGE
    except StoreError as exc:
        err(str(exc))
        return EXIT_FAIL
    finally:
        store.close()
    if args.json:
        say(
            dumps(
                {
                    "query": results.query,
                    "results": [_hit_json(h) for h in results.hits],
                    "counts": results.counts,
                    "more": results.more,
                }
            )
        )
        return EXIT_OK
    if not results.hits:
        say(f"Nothing found for “{args.text}”.")
        return EXIT_OK
    emphasis = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
    for hit in results.hits:
        when = datetime.fromtimestamp(hit.created_at).strftime("%Y-%m-%d %H:%M")
        where = {
            "message": f"conversation {hit.conversation_id}, message {hit.id}",
            "conversation": f"conversation {hit.id}",
            "image": str(hit.path),
            "preset": f"preset {hit.id}",
        }[hit.kind]
        older = "" if hit.current else " · an older version or another branch"
        say(f"{hit.kind:<12} {hit.title} · {hit.detail} · {when} · {where}{older}")
        # the snippet, each piece shown (never interpreted); matches in bold on a terminal
        line = "".join(
            f"\x1b[1;4m{visible(piece)}\x1b[22;24m" if match and emphasis else visible(piece)
            for piece, match in hit.snippet.parts()
        )
        sys.stdout.write(f"             {line}\n")
    counts = ", ".join(
        f"{n}{'+' if n >= COUNT_CAP else ''} {kind}{'' if n == 1 else 's'}"
        for kind, n in results.counts.items()
        if n
    )
    shown_to = args.offset + len(results.hits)
    more = f"; the next page: --offset {shown_to}" if results.more else ""
    say(f"Results {args.offset + 1}-{shown_to} ({counts}){more}", file=sys.stderr)
    return EXIT_OK


def _hit_json(hit: Hit) -> dict[str, Any]:
    return {
        "kind": hit.kind,
        "id": hit.id,
        "title": hit.title,
        "snippet": hit.snippet.text,
        "marks": [list(m) for m in hit.snippet.marks],
        "detail": hit.detail,
        "conversation_id": hit.conversation_id,
        "current": hit.current,
        "path": str(hit.path) if hit.path else None,
        "score": round(hit.score, 6),
        "created_at": datetime.fromtimestamp(hit.created_at).isoformat(),
    }
