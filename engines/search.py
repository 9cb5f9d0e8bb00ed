"""One search over everything: conversations (their titles, and every message on every
version and branch), images (prompt, negative prompt, model, seed and sampler) and presets.

The index is SQLite FTS5 (the ``*_fts`` tables of ``engines/store.py``'s migrations), kept
in step by triggers. The user's text is never read as FTS5 syntax: each word becomes a
quoted phrase (``"`` doubled inside), so ``"``, ``*``, ``NEAR``, ``AND``, ``-``, ``:`` and
brackets are words or separators like any other; the last word also matches as a prefix
while it is being typed (no space after it yet). Every word must match.

Results are ranked by bm25 (best first; a word in a title or a prompt weighs more than
one in the negative prompt), each with a snippet of the text around the match and the
match's offsets in it (plain text: the caller draws the marks). A kind's matches are
ranked among its newest :data:`RANK_WINDOW` matches: a word found in 250,000 messages is
ranked in the 2,000 newest of them (ranking every one would cost most of a second), and
a word that common says little about which is best anyway.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

from engines.store import Store, StoreError, storable

log = logging.getLogger(__name__)

Kind = Literal["conversation", "message", "image", "preset"]
KINDS: tuple[Kind, ...] = get_args(Kind)
"""Every kind of result, in the order a tie between equal scores is broken."""

RANK_WINDOW = 2000
"""A kind's matches are ranked among its newest this many."""
COUNT_CAP = RANK_WINDOW
"""Matches of a kind are counted up to this many (then shown as "2000+")."""
MAX_QUERY = 1000
"""The longest search text, in characters."""
SNIPPET_TOKENS = 14
"""Words of context a snippet holds around the match."""
MAX_LIMIT = 500
"""The most results one page may ask for."""

TOKENIZER = "unicode61 remove_diacritics 2"
"""How the indexes cut text into words (the migration's, and the snippets')."""

_OPEN = "\ue000"
_CLOSE = "\ue001"
"""Where SQLite marks a match in a snippet (private-use characters), read back into
offsets and taken out of the text."""

_FTS = {
    "conversation": "conversations_fts",
    "message": "messages_fts",
    "image": "images_fts",
    "preset": "presets_fts",
}
_WEIGHTS = {
    "conversation": "",
    "message": "",
    "image": ", 4.0, 1.0, 2.0, 2.0, 1.0",  # prompt, negative prompt, model, seed, sampler
    "preset": ", 4.0, 2.0, 1.0",  # name, model, system prompt
}
_VISIBLE = {
    # a trashed image is not found (it is restorable from the gallery's trash)
    "image": " AND rowid NOT IN (SELECT id FROM images WHERE trashed_at IS NOT NULL)",
}


class SearchError(ValueError):
    """A search that cannot be run; the message says why and what is allowed."""


@dataclass(frozen=True)
class Snippet:
    """Text around a match, on one line, and where the matches are in it."""

    text: str
    marks: tuple[tuple[int, int], ...] = ()
    """(start, end) character offsets of each match in ``text``."""

    def parts(self) -> list[tuple[str, bool]]:
        """The text cut at the marks: (piece, whether it is a match)."""
        out: list[tuple[str, bool]] = []
        at = 0
        for start, end in self.marks:
            if start > at:
                out.append((self.text[at:start], False))
            out.append((self.text[start:end], True))
            at = end
        if at < len(self.text):
            out.append((self.text[at:], False))
        return out


@dataclass(frozen=True)
class Hit:
    """One result."""

    kind: Kind
    id: int
    """The row's id in its table (conversations, messages, images or presets)."""
    score: float
    """bm25: lower is better."""
    title: str
    """The conversation's title (for a message too), the image's file name, the preset's
    name."""
    snippet: Snippet
    detail: str = ""
    """A short line of context: who wrote a message, an image's model and seed."""
    conversation_id: int | None = None
    current: bool = True
    """A message on its conversation's current path (False: an older version of a turn,
    or another branch)."""
    path: Path | None = None
    """An image's file."""
    created_at: float = 0.0


@dataclass(frozen=True)
class Results:
    query: str
    hits: list[Hit]
    more: bool = False
    """More results follow this page."""
    counts: dict[Kind, int] = field(default_factory=dict)
    """Matches of each kind searched, counted up to :data:`COUNT_CAP`."""

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def capped(self) -> bool:
        """Some kind has more matches than were counted."""
        return any(n >= COUNT_CAP for n in self.counts.values())


def fts_query(text: str, *, prefix: bool = True) -> str:
    """``text`` as an FTS5 query that means the words as typed: each a quoted phrase, all
    of them required; with ``prefix``, the last word (when no space follows it, and it
    has two characters at least) also as the start of a longer word. Empty when the text
    has no words."""
    text = storable(text).replace("\x00", " ")
    words = text.split()
    if not words:
        return ""
    phrases = ['"' + word.replace('"', '""') + '"' for word in words]
    if prefix and not text[-1].isspace() and len(words[-1]) >= 2:
        phrases[-1] += " *"
    return " ".join(phrases)


def parse_kinds(names: Iterable[str]) -> tuple[Kind, ...]:
    """Kinds by name (``message``, ``messages``, ``image``...); SearchError naming the kinds
    there are."""
    out: list[Kind] = []
    for raw in names:
        for name in raw.split(","):
            name = name.strip().lower()
            if not name:
                continue
            kind = next((k for k in KINDS if name in (k, k + "s")), None)
            if kind is None:
                raise SearchError(f"unknown kind {name!r}: the kinds are {', '.join(KINDS)}")
            if kind not in out:
                out.append(kind)
    return tuple(out) or KINDS


def snippet_of(raw: str | None) -> Snippet:
    """A snippet as SQLite wrote it (matches between the private marks) as one line of
    plain text with the matches' offsets."""
    text: list[str] = []
    marks: list[tuple[int, int]] = []
    start: int | None = None
    at = 0
    for ch in raw or "":
        if ch == _OPEN:
            start = at
        elif ch == _CLOSE:
            if start is not None and at > start:
                marks.append((start, at))
            start = None
        else:
            text.append(" " if ch in "\r\n\t\v\f" else ch)
            at += 1
    return Snippet("".join(text), tuple(marks))


def search(
    store: Store,
    text: str,
    *,
    kinds: Collection[Kind] = KINDS,
    limit: int = 20,
    offset: int = 0,
    cancel: threading.Event | None = None,
) -> Results:
    """The best ``limit`` matches of ``text`` from ``offset`` on, among ``kinds``. Text of
    FTS5 syntax is taken as words (never an error); a text with no words finds nothing.
    SearchError for a text too long or a bad page; StoreError when the database fails. A
    damaged index is built again once, and the search run again."""
    if len(text) > MAX_QUERY:
        raise SearchError(
            f"the search text has {len(text)} characters: at most {MAX_QUERY} are allowed"
        )
    if not 1 <= limit <= MAX_LIMIT:
        raise SearchError(f"the number of results must be between 1 and {MAX_LIMIT}")
    if offset < 0:
        raise SearchError("the first result is at offset 0 or more")
    query = fts_query(text)
    if not query:
        return Results(text, [])
    wanted = [k for k in KINDS if k in kinds]
    try:
        return _search(store, text, query, wanted, limit, offset, cancel)
    except StoreError as exc:
        if "malformed" not in str(exc):
            raise
        log.warning("the search index is damaged; building it again: %s", exc)
        rebuild(store)
        return _search(store, text, query, wanted, limit, offset, cancel)


def _search(
    store: Store,
    text: str,
    query: str,
    kinds: list[Kind],
    limit: int,
    offset: int,
    cancel: threading.Event | None,
) -> Results:
    ranked: list[tuple[float, int, int, Kind]] = []
    counts: dict[Kind, int] = {}
    for order, kind in enumerate(kinds):
        if cancel is not None and cancel.is_set():
            return Results(text, [])
        table = _FTS[kind]
        visible = _VISIBLE.get(kind, "")
        # one pass over the index: the newest matches, each with its score (the window's
        # size is the count shown); ranked here (a prefix query read twice costs twice)
        rows = store._query(
            f"SELECT rowid AS id, bm25({table}{_WEIGHTS[kind]}) AS score FROM {table}"
            f" WHERE {table} MATCH ?1{visible} ORDER BY rowid DESC LIMIT ?2",
            (query, RANK_WINDOW),
        )
        counts[kind] = len(rows)
        best = sorted((float(r["score"]), order, -int(r["id"]), kind) for r in rows)
        ranked += best[: offset + limit + 1]
    ranked.sort()
    page = ranked[offset : offset + limit]
    found: dict[tuple[Kind, int], Hit] = {}
    for kind in kinds:
        ids = [-neg for score, _o, neg, k in page if k == kind]
        if ids:
            scores = {-neg: score for score, _o, neg, k in page if k == kind}
            for hit in _DETAILS[kind](store, query, ids, scores):
                found[(kind, hit.id)] = hit
    hits = [found[(k, -neg)] for _s, _o, neg, k in page if (k, -neg) in found]
    return Results(text, hits, more=len(ranked) > offset + limit, counts=counts)


def _in(ids: list[int]) -> str:
    return ",".join(str(int(i)) for i in ids)


def _snippets(
    store: Store,
    query: str,
    texts: dict[int, tuple[str, ...]],
    *,
    whole: bool = False,
    names: tuple[str, ...] = (),
) -> dict[int, Snippet]:
    """The snippets of a page's texts, each with its matches: SQLite's own, from a small
    index of those texts alone (asking the big index for 20 rows would evaluate a prefix
    query once for each of them). ``whole``: the whole first column, marked. ``names``
    (of the columns after the first): the first column's snippet, and where the match is
    in another column only, that column's after it with its name."""
    if not texts:
        return {}
    if whole:
        what = [f"highlight(search_snippets, 0, '{_OPEN}', '{_CLOSE}')"]
    else:
        columns = range(len(names) + 1) if names else [-1]
        what = [
            f"snippet(search_snippets, {c}, '{_OPEN}', '{_CLOSE}', '…', {SNIPPET_TOKENS})"
            for c in columns
        ]
    with store._lock:  # one page's texts at a time in the connection's table
        store._query(
            "CREATE VIRTUAL TABLE IF NOT EXISTS temp.search_snippets USING fts5("
            f"c0, c1, c2, c3, c4, tokenize='{TOKENIZER}')"
        )
        store._query("DELETE FROM temp.search_snippets")
        for row_id, values in texts.items():
            padded = (list(values) + [None] * 5)[:5]
            store._query(
                "INSERT INTO temp.search_snippets (rowid, c0, c1, c2, c3, c4)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (row_id, *padded),
            )
        rows = store._query(
            f"SELECT rowid, {', '.join(what)} FROM temp.search_snippets"
            " WHERE search_snippets MATCH ?",
            (query,),
        )
        store._query("DELETE FROM temp.search_snippets")
    found: dict[int, Snippet] = {}
    for r in rows:
        parts = [snippet_of(r[i]) for i in range(1, len(what) + 1)]
        first = parts[0]
        other = next(((n, p) for n, p in zip(names, parts[1:], strict=False) if p.marks), None)
        if names and not first.marks and other is not None:
            first = _joined(Snippet(_start(first.text)), f" · {other[0]}: ", other[1])
        found[int(r["rowid"])] = first
    # a text the small index does not match (changed since it was ranked): its start
    return {i: found.get(i) or Snippet(_start(t[0], 120)) for i, t in texts.items()}


def _start(text: str, width: int = 60) -> str:
    line = " ".join(text.split())
    return line if len(line) <= width else line[: width - 1] + "…"


def _joined(a: Snippet, between: str, b: Snippet) -> Snippet:
    shift = len(a.text) + len(between)
    marks = a.marks + tuple((s + shift, e + shift) for s, e in b.marks)
    return Snippet(a.text + between + b.text, marks)


def _messages(store: Store, query: str, ids: list[int], scores: dict[int, float]) -> list[Hit]:
    rows = store._query(
        "SELECT m.id, m.conversation_id, m.role, m.model, m.created_at, m.content, c.title"
        " FROM messages m JOIN conversations c ON c.id = m.conversation_id"
        f" WHERE m.id IN ({_in(ids)})"
    )
    snippets = _snippets(store, query, {int(r["id"]): (str(r["content"]),) for r in rows})
    paths = _current_paths(store, {int(r["conversation_id"]) for r in rows})
    hits = []
    for r in rows:
        role = str(r["role"])
        who = {"user": "You", "assistant": r["model"] or "Assistant"}.get(role, role.title())
        hits.append(
            Hit(
                "message",
                int(r["id"]),
                scores[int(r["id"])],
                str(r["title"]),
                snippets[int(r["id"])],
                detail=str(who),
                conversation_id=int(r["conversation_id"]),
                current=int(r["id"]) in paths.get(int(r["conversation_id"]), set()),
                created_at=float(r["created_at"]),
            )
        )
    return hits


def _current_paths(store: Store, conversations: set[int]) -> dict[int, set[int]]:
    """The messages on each conversation's current path (first turn to current leaf)."""
    if not conversations:
        return {}
    rows = store._query(
        "WITH RECURSIVE path(conversation_id, id) AS ("
        " SELECT id, current_id FROM conversations"
        f" WHERE id IN ({_in(sorted(conversations))}) AND current_id IS NOT NULL"
        " UNION ALL SELECT path.conversation_id, m.parent_id FROM messages m JOIN path"
        " ON m.id = path.id WHERE m.parent_id IS NOT NULL)"
        " SELECT conversation_id, id FROM path"
    )
    out: dict[int, set[int]] = {}
    for r in rows:
        out.setdefault(int(r["conversation_id"]), set()).add(int(r["id"]))
    return out


def _conversations(store: Store, query: str, ids: list[int], scores: dict[int, float]) -> list[Hit]:
    rows = store._query(
        "SELECT c.id, c.title, c.model, c.updated_at,"
        " (SELECT count(*) FROM messages m WHERE m.conversation_id = c.id) AS n"
        f" FROM conversations c WHERE c.id IN ({_in(ids)})"
    )
    snippets = _snippets(store, query, {int(r["id"]): (str(r["title"]),) for r in rows}, whole=True)
    return [
        Hit(
            "conversation",
            int(r["id"]),
            scores[int(r["id"])],
            str(r["title"]),
            snippets[int(r["id"])],
            detail=f"{r['n']} message{'' if r['n'] == 1 else 's'} · {r['model']}",
            conversation_id=int(r["id"]),
            created_at=float(r["updated_at"]),
        )
        for r in rows
    ]


def _images(store: Store, query: str, ids: list[int], scores: dict[int, float]) -> list[Hit]:
    rows = store._query(
        "SELECT id, path, prompt, negative_prompt, model, seed, scheduler, created_at"
        f" FROM images WHERE id IN ({_in(ids)})"
    )
    snippets = _snippets(
        store,
        query,
        {
            int(r["id"]): tuple(
                str(r[k]) for k in ("prompt", "negative_prompt", "model", "seed", "scheduler")
            )
            for r in rows
        },
        names=("negative prompt", "model", "seed", "sampler"),
    )
    return [
        Hit(
            "image",
            int(r["id"]),
            scores[int(r["id"])],
            Path(str(r["path"])).name,
            snippets[int(r["id"])],
            detail=f"{r['model']} · seed {r['seed']} · {r['scheduler']}",
            path=Path(str(r["path"])),
            created_at=float(r["created_at"]),
        )
        for r in rows
    ]


def _presets(store: Store, query: str, ids: list[int], scores: dict[int, float]) -> list[Hit]:
    rows = store._query(
        "SELECT p.id, p.name, p.model, p.updated_at, f.system FROM presets p"
        f" JOIN presets_fts f ON f.rowid = p.id WHERE p.id IN ({_in(ids)})"
    )
    snippets = _snippets(
        store,
        query,
        {int(r["id"]): (str(r["name"]), str(r["model"]), str(r["system"])) for r in rows},
    )
    return [
        Hit(
            "preset",
            int(r["id"]),
            scores[int(r["id"])],
            str(r["name"]),
            snippets[int(r["id"])],
            detail=f"model {r['model']}" if r["model"] else "any model",
            created_at=float(r["updated_at"]),
        )
        for r in rows
    ]


_DETAILS = {
    "conversation": _conversations,
    "message": _messages,
    "image": _images,
    "preset": _presets,
}


def rebuild(store: Store) -> None:
    """Build every search index again from the tables (the triggers keep them in step;
    this mends one that something outside the app left wrong)."""
    with store._tx() as c:
        for table in ("messages_fts", "conversations_fts", "images_fts"):
            c.execute(f"INSERT INTO {table}({table}) VALUES ('rebuild')")
        c.execute("DELETE FROM presets_fts")
        c.execute(
            "INSERT INTO presets_fts(rowid, name, model, system)"
            " SELECT id, name, model, CASE WHEN json_valid(options)"
            " THEN coalesce(json_extract(options, '$.system_prompt'), '') ELSE '' END"
            " FROM presets"
        )
