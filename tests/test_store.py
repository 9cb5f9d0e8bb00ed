"""The SQLite store: real files in tmp_path, reopened the way the app reopens them."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import stat
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from engines.chat_types import ChatOptions, ReplyStats
from engines.store import (
    MIGRATIONS,
    Conversation,
    Store,
    StoredMessage,
    StoreError,
    export_markdown,
    title_from,
)

REPO = Path(__file__).resolve().parent.parent
OPTIONS = ChatOptions(system_prompt="be brief", temperature=0.2, seed=7)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "data" / "chat.db"


@pytest.fixture
def store(db: Path) -> Iterator[Store]:
    s = Store.open(db)
    try:
        yield s
    finally:
        s.close()


def raw(db: Path) -> sqlite3.Connection:
    return sqlite3.connect(db, isolation_level=None)


def reopen(store: Store) -> Store:
    assert store.path is not None
    store.close()
    return Store.open(store.path)


# -- the file --------------------------------------------------------------------------


def test_a_new_file_is_migrated_in_wal_mode(store: Store, db: Path) -> None:
    conn = raw(db)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"conversations", "messages"} <= tables
    finally:
        conn.close()


def test_reopening_keeps_the_data_and_does_not_migrate_again(store: Store) -> None:
    c = store.create_conversation("llama3.2:latest", OPTIONS, "kept")
    store.add_message(c.id, "user", "hello")
    again = reopen(store)
    try:
        assert [x.title for x in again.conversations()] == ["kept"]
        assert [m.content for m in again.messages(c.id)] == ["hello"]
        assert again.integrity_ok()
    finally:
        again.close()


def test_a_database_from_a_newer_version_is_refused(db: Path) -> None:
    Store.open(db).close()
    conn = raw(db)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(StoreError) as info:
        Store.open(db)
    assert str(db) in str(info.value)
    assert "newer" in str(info.value) and "upgrade" in str(info.value)


def test_the_database_file_is_private(store: Store, db: Path) -> None:
    c = store.create_conversation("m", OPTIONS)
    store.add_message(c.id, "user", "secret")
    files = [p for p in db.parent.iterdir() if p.name.startswith(db.name)]
    assert db in files and len(files) >= 2  # the database and its WAL
    for path in files:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o077 == 0, f"{path.name} is {oct(mode)}"


def test_a_corrupt_file_is_refused_and_left_untouched(db: Path) -> None:
    db.parent.mkdir(parents=True)
    junk = b"not SQLite! " + os.urandom(16 * 1024)
    db.write_bytes(junk)
    before = sorted(p.name for p in db.parent.iterdir())
    with pytest.raises(StoreError) as info:
        Store.open(db)
    message = str(info.value)
    assert str(db) in message
    assert "damaged" in message and "left untouched" in message
    assert db.read_bytes() == junk
    assert sorted(p.name for p in db.parent.iterdir()) == before


def test_a_locked_database_says_so_within_seconds(db: Path) -> None:
    Store.open(db).close()
    holder = raw(db)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        start = time.monotonic()
        with pytest.raises(StoreError) as info:
            Store.open(db)
        assert time.monotonic() - start < 4
        assert str(db) in str(info.value) and "locked" in str(info.value)
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_the_app_gives_up_on_a_locked_database_at_once_and_later_writes_wait(db: Path) -> None:
    """The app opens the store before its first frame: a database held locked is given up
    after ``open_timeout_s`` (not the 2 s a write waits), and once open, writes wait
    ``busy_timeout_s`` for a lock another program holds a moment."""
    Store.open(db).close()
    holder = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        start = time.monotonic()
        with pytest.raises(StoreError, match="locked"):
            Store.open(db, open_timeout_s=0.1, busy_timeout_s=30)
        assert time.monotonic() - start < 1.5
    finally:
        holder.execute("ROLLBACK")
    store = Store.open(db, open_timeout_s=0.1, busy_timeout_s=30)
    c = store.create_conversation("m", OPTIONS)
    holder.execute("BEGIN EXCLUSIVE")
    released = threading.Event()

    def release() -> None:
        time.sleep(0.5)
        holder.execute("ROLLBACK")
        released.set()

    threading.Thread(target=release).start()
    store.add_message(c.id, "user", "waited for the lock")  # not refused after 0.1 s
    assert released.is_set()
    assert [m.content for m in store.messages(c.id)] == ["waited for the lock"]
    store.close()
    holder.close()


def test_a_write_while_another_program_holds_the_lock_says_so(db: Path) -> None:
    store = Store.open(db, busy_timeout_s=0.3)
    c = store.create_conversation("m", OPTIONS)
    holder = raw(db)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        start = time.monotonic()
        with pytest.raises(StoreError, match="locked"):
            store.add_message(c.id, "user", "hello")
        assert time.monotonic() - start < 4
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    store.add_message(c.id, "user", "hello again")  # and it works once the lock is gone
    assert [m.content for m in store.messages(c.id)] == ["hello again"]
    store.close()


def test_a_folder_that_cannot_be_made_is_a_store_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError, match=re.escape(str(tmp_path / "file"))):
        Store.open(tmp_path / "file" / "chat.db")


# -- conversations ---------------------------------------------------------------------


def test_create_list_rename_delete(store: Store, db: Path) -> None:
    a = store.create_conversation("llama3.2:latest", OPTIONS, "first")
    b = store.create_conversation("qwen2.5-coder:7b", ChatOptions(), "second")
    assert [c.title for c in store.conversations()] == ["second", "first"]
    store.add_message(a.id, "user", "bump")  # a newer message brings a conversation up
    assert [c.title for c in store.conversations()] == ["first", "second"]

    store.rename(b.id, "  renamed  ")
    got = store.conversation(b.id)
    assert got is not None and got.title == "renamed"
    with pytest.raises(ValueError):
        store.rename(b.id, "   ")

    loaded = store.conversation(a.id)
    assert loaded is not None
    assert (loaded.model, loaded.options) == ("llama3.2:latest", OPTIONS)
    store.update_settings(a.id, "qwen2.5-coder:7b", ChatOptions(temperature=1.5))
    loaded = store.conversation(a.id)
    assert loaded is not None and loaded.model == "qwen2.5-coder:7b"
    assert loaded.options.temperature == 1.5

    store.add_message(a.id, "assistant", "reply")
    store.delete(a.id)
    assert [c.title for c in store.conversations()] == ["renamed"]
    assert store.conversation(a.id) is None
    assert store.messages(a.id) == []
    conn = raw(db)
    try:  # cascaded in the file, not just hidden
        count = conn.execute(
            "SELECT count(*) FROM messages WHERE conversation_id = ?", (a.id,)
        ).fetchone()
        assert count[0] == 0
    finally:
        conn.close()


TRICKY_TITLES = [
    "100% sure",
    "1000 sure",
    "snake_case",
    "snakeXcase",
    "C:\\temp",
    "C:temp",
    'it\'s "quoted"',
    "'; DROP TABLE conversations; --",
]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("100%", ["100% sure"]),
        ("%", ["100% sure"]),
        ("_", ["snake_case"]),
        ("e_c", ["snake_case"]),
        ("\\", ["C:\\temp"]),
        ("C:\\t", ["C:\\temp"]),
        ("'s \"q", ['it\'s "quoted"']),
        ("'; DROP TABLE", ["'; DROP TABLE conversations; --"]),
        ("SNAKE", ["snakeXcase", "snake_case"]),
        ("nothing like it", []),
    ],
)
def test_search_matches_titles_literally(store: Store, query: str, expected: list[str]) -> None:
    for title in TRICKY_TITLES:
        store.create_conversation("m", OPTIONS, title)
    assert sorted(c.title for c in store.conversations(query)) == sorted(expected)
    assert len(store.conversations()) == len(TRICKY_TITLES)  # nothing was dropped


def test_the_list_pages_by_keyset_and_loses_none_among_equal_times(store: Store, db: Path) -> None:
    made = [store.create_conversation("m", ChatOptions(), f"c{i:02}") for i in range(23)]
    with raw(db) as c:  # several conversations updated in the same second
        c.execute("UPDATE conversations SET updated_at = 1000 + (id / 4)")
    everything = store.conversations()
    pages: list[list[Conversation]] = []
    after = None
    while True:
        page = store.conversations(limit=5, after=after)
        if not page:
            break
        pages.append(page)
        after = page[-1]
    assert [len(p) for p in pages] == [5, 5, 5, 5, 3]
    assert [c.id for p in pages for c in p] == [c.id for c in everything]
    assert len({c.id for c in everything}) == len(made)
    assert store.newest_conversation() == everything[0].id
    # where a conversation stands in the list, with and without a search
    for n in (0, 7, 22):
        assert store.conversations_before(everything[n].id) == n
    store.add_message(made[3].id, "user", "the needle is here")
    store.add_message(made[9].id, "user", "another NEEDLE")
    found = store.conversations("needle")
    assert [c.id for c in found] == [made[9].id, made[3].id]
    assert store.conversations("needle", limit=1, after=found[0]) == [found[1]]
    assert store.conversations_before(made[3].id, "needle") == 1
    assert store.conversations_before(made[4].id, "needle") is None  # not found by it
    assert store.conversations_before(10_000) is None


def test_an_empty_store_has_no_newest_conversation(store: Store) -> None:
    assert store.newest_conversation() is None
    assert store.conversations(limit=5) == []


def test_search_matches_message_text(store: Store) -> None:
    plain = store.create_conversation("m", OPTIONS, "plain title")
    other = store.create_conversation("m", OPTIONS, "other")
    store.add_message(plain.id, "user", "where is the needle?")
    store.add_message(other.id, "assistant", "50% off_today")
    assert [c.id for c in store.conversations("needle")] == [plain.id]
    assert [c.id for c in store.conversations("0% off_")] == [other.id]
    assert store.conversations("0% offX") == []
    assert len(store.conversations("   ")) == 2  # blank: everything


# -- messages --------------------------------------------------------------------------

ODD_TEXTS = [
    "control \x01\x07\x08\x1b[31mred\x1b[0m \x7f \x9b end",
    "nul \x00 inside \x00",
    "emoji 😀 👍🏽 👨‍👩‍👧 🏳️‍🌈",
    "RTL שלום مرحبا \u202eevil\u202c \u2066iso\u2069",
    "line\r\nendings\rmixed\n\n  trailing  \t",
    "",
    "a" * 1_000_000 + "ç" * 10 + "\x00",
]


def test_messages_come_back_byte_for_byte(store: Store) -> None:
    c = store.create_conversation("m", OPTIONS)
    ids = [store.add_message(c.id, "user", text) for text in ODD_TEXTS]
    streamed = store.add_message(c.id, "assistant", "", status="streaming", model="m")
    store.update_message(streamed, ODD_TEXTS[-1] + "😀", status="done")
    again = reopen(store)
    try:
        got = again.messages(c.id)
        assert [m.id for m in got] == [*ids, streamed]
        assert [m.content for m in got] == [*ODD_TEXTS, ODD_TEXTS[-1] + "😀"]
        assert all(m.content.encode() == t.encode() for m, t in zip(got, ODD_TEXTS, strict=False))
    finally:
        again.close()


def test_a_finished_reply_keeps_its_stats_and_model(store: Store) -> None:
    c = store.create_conversation("m", OPTIONS)
    stats = ReplyStats("llama3.2:latest", 12, 34, 56.5, 0.25, 1.5, 0.1, "stop")
    mid = store.add_message(c.id, "assistant", "", status="streaming", model="llama3.2:latest")
    store.update_message(mid, "partial", status="streaming")
    store.update_message(mid, "partial and done", status="done", stats=stats)
    (m,) = store.messages(c.id)
    assert (m.content, m.status, m.model, m.stats) == (
        "partial and done",
        "done",
        "llama3.2:latest",
        stats,
    )
    store.update_message(mid, "oops", status="error", error="Ollama answered: boom")
    (m,) = store.messages(c.id)
    assert (m.status, m.error) == ("error", "Ollama answered: boom")


def test_a_reply_left_streaming_is_interrupted_after_reopening(store: Store) -> None:
    c = store.create_conversation("m", OPTIONS)
    store.add_message(c.id, "user", "question")
    done = store.add_message(c.id, "assistant", "an earlier answer")
    mid = store.add_message(c.id, "assistant", "", status="streaming", model="m")
    store.update_message(mid, "half an ans", status="streaming")
    again = reopen(store)
    try:
        got = {m.id: m for m in again.messages(c.id)}
        assert (got[mid].status, got[mid].content) == ("interrupted", "half an ans")
        assert (got[done].status, got[done].content) == ("done", "an earlier answer")
        assert again.integrity_ok()
    finally:
        again.close()


WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from engines.chat_types import ChatOptions
    from engines.store import Store

    store = Store.open(Path(sys.argv[1]))
    c = store.create_conversation("m", ChatOptions(), "killed")
    for i in range(5):
        store.add_message(c.id, "user", f"earlier {i}")
    mid = store.add_message(c.id, "assistant", "", status="streaming", model="m")
    text, i = "", 0
    while True:
        i += 1
        text += f"token{i} "
        store.update_message(mid, text, status="streaming")
        if i == 30:
            print("writing", flush=True)
    """
)


def test_a_writer_killed_mid_reply_leaves_a_sound_database(db: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(db)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "writing"
        time.sleep(0.2)  # many more partial updates go by
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    assert proc.returncode == -signal.SIGKILL

    store = Store.open(db)
    try:
        assert store.integrity_ok()
        (c,) = store.conversations()
        messages = store.messages(c.id)
        assert [m.content for m in messages[:5]] == [f"earlier {i}" for i in range(5)]
        assert all(m.status == "done" for m in messages[:5])
        reply = messages[5]
        assert reply.status == "interrupted"
        words = reply.content.split()
        assert len(words) >= 30
        assert words == [f"token{i}" for i in range(1, len(words) + 1)]  # a whole prefix
        assert reply.content.endswith(" ")
    finally:
        store.close()


def test_writes_from_several_threads_all_land(store: Store) -> None:
    c = store.create_conversation("m", OPTIONS)

    def write(n: int) -> None:
        for i in range(40):
            store.add_message(c.id, "user", f"{n}-{i}")

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got = {m.content for m in store.messages(c.id)}
    assert got == {f"{n}-{i}" for n in range(4) for i in range(40)}
    assert store.integrity_ok()


def test_the_memory_store_works_like_a_file(tmp_path: Path) -> None:
    s = Store.memory()
    c = s.create_conversation("m", OPTIONS, "in memory")
    s.add_message(c.id, "user", "hi")
    assert [m.content for m in s.messages(c.id)] == ["hi"]
    assert s.path is None
    assert list(tmp_path.iterdir()) == []


# -- titles and export -----------------------------------------------------------------


def test_title_from_a_first_prompt() -> None:
    assert title_from("\n\n  Explain WAL mode  \nin detail") == "Explain WAL mode"
    assert title_from("   \n\t") == "New conversation"
    assert title_from("bell\x07 and \x1b[31mred") == "bell  and  [31mred"
    long = title_from("x" * 200)
    assert len(long) == 60 and long.endswith("…")


def test_export_markdown() -> None:
    conv = Conversation(1, "Sorting in Python", "llama3.2:latest", OPTIONS, 0.0, 0.0)
    stats = ReplyStats("llama3.2:latest", 20, 10, 50.0, 0.5, 1.0, 0.0, "stop")

    def msg(
        i: int, role: str, content: str, status: str = "done", s: ReplyStats | None = None
    ) -> StoredMessage:
        return StoredMessage(i, 1, role, content, status, None, s, None, 0.0)  # type: ignore[arg-type]

    messages = [
        msg(1, "user", "How do I sort a list?"),
        msg(2, "assistant", "Use `sorted(xs)`.", s=stats),
        msg(3, "user", "And in reverse?"),
        msg(4, "assistant", "Use `rev", status="interrupted"),
    ]
    assert export_markdown(conv, messages) == (
        "# Sorting in Python\n"
        "\n"
        "Model: `llama3.2:latest`\n"
        "\n"
        "## System\n"
        "\n"
        "be brief\n"
        "\n"
        "## You\n"
        "\n"
        "How do I sort a list?\n"
        "\n"
        "## Assistant\n"
        "\n"
        "Use `sorted(xs)`.\n"
        "\n"
        "*llama3.2:latest · 10 tokens · 50.0 tok/s · first token 0.50 s · prompt 20 tokens*\n"
        "\n"
        "## You\n"
        "\n"
        "And in reverse?\n"
        "\n"
        "## Assistant (interrupted)\n"
        "\n"
        "Use `rev\n"
    )


def test_search_ignores_case_in_any_script(tmp_path: Path) -> None:
    from engines.chat_types import ChatOptions

    store = Store.open(tmp_path / "db.sqlite")
    c = store.create_conversation("m", ChatOptions(), "Receita")
    store.add_message(c.id, "user", "Quanto de ÁGUA no PÃO?")
    store.create_conversation("m", ChatOptions(), "Outra")
    assert [x.title for x in store.conversations("água")] == ["Receita"]
    assert [x.title for x in store.conversations("pão")] == ["Receita"]
    assert [x.title for x in store.conversations("RECEITA")] == ["Receita"]


def test_lone_surrogates_are_saved_not_fatal(tmp_path: Path) -> None:
    from engines.chat_types import ChatOptions

    store = Store.open(tmp_path / "db.sqlite")
    c = store.create_conversation("m", ChatOptions(), "t")
    mid = store.add_message(c.id, "assistant", "ok \ud800 then", status="streaming")
    store.update_message(mid, "ok \ud800 then more", status="done")
    assert store.messages(c.id)[0].content == "ok \ufffd then more"


# -- crash recovery tells a live writer from a dead one ---------------------------------


def test_a_second_store_leaves_a_live_stores_streaming_reply_alone(db: Path) -> None:
    first = Store.open(db)
    c = first.create_conversation("m", OPTIONS)
    mid = first.add_message(c.id, "assistant", "", status="streaming", model="m")
    first.update_message(mid, "still writ", status="streaming")
    second = Store.open(db)  # another window of the app on the same database
    try:
        (m,) = second.messages(c.id)
        assert m.status == "streaming", "a live reply is not marked interrupted"
        first.update_message(mid, "still writing, done", status="done")
        (m,) = second.messages(c.id)
        assert (m.status, m.content) == ("done", "still writing, done")
    finally:
        second.close()
        first.close()


def test_a_reply_of_a_closed_store_is_interrupted_by_the_next(db: Path) -> None:
    first = Store.open(db)
    c = first.create_conversation("m", OPTIONS)
    first.add_message(c.id, "assistant", "half", status="streaming", model="m")
    first.close()  # as an app that died would: its lock is gone
    again = Store.open(db)
    try:
        assert [m.status for m in again.messages(c.id)] == ["interrupted"]
        assert list(Path(f"{db}.owners").glob("*.lock")) == [], "the dead lock files go"
    finally:
        again.close()


STREAMER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from engines.chat_types import ChatOptions
    from engines.store import Store

    store = Store.open(Path(sys.argv[1]))
    c = store.create_conversation("m", ChatOptions(), "live")
    mid = store.add_message(c.id, "assistant", "", status="streaming", model="m")
    store.update_message(mid, "partial", status="streaming")
    print("streaming", flush=True)
    sys.stdin.readline()
    """
)


def test_another_process_streaming_is_alive_until_it_dies(db: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", STREAMER, str(db)],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "streaming"
        other = Store.open(db)
        try:
            (c,) = other.conversations()
            assert [m.status for m in other.messages(c.id)] == ["streaming"]
        finally:
            other.close()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    after = Store.open(db)
    try:
        (c,) = after.conversations()
        assert [(m.status, m.content) for m in after.messages(c.id)] == [("interrupted", "partial")]
    finally:
        after.close()


def test_migrating_a_version_2_database_keeps_every_row(db: Path) -> None:
    db.parent.mkdir(parents=True)
    conn = raw(db)
    for script in MIGRATIONS[:2]:
        conn.executescript(script)
    conn.execute("PRAGMA user_version = 2")
    conn.execute(
        "INSERT INTO conversations (id, title, model, options, created_at, updated_at)"
        " VALUES (1, 'old', 'm', '{}', 1, 1)"
    )
    rows = [(1, "user", "question", "done"), (2, "assistant", "half", "streaming")]
    for mid, role, content, status in rows:
        conn.execute(
            "INSERT INTO messages (id, conversation_id, role, content, status, created_at)"
            " VALUES (?, 1, ?, ?, ?, 1)",
            (mid, role, content, status),
        )
    conn.execute(
        "INSERT INTO images (path, prompt, width, height, steps, guidance, seed, scheduler,"
        " model, created_at) VALUES ('/x.png', 'a cat', 64, 64, 2, 7.5, 1, 'euler', 'sd', 1)"
    )
    conn.close()
    store = Store.open(db)
    try:
        assert [(m.role, m.content, m.status) for m in store.messages(1)] == [
            ("user", "question", "done"),
            ("assistant", "half", "interrupted"),  # written by an app with no owner column
        ]
        assert [i.parameters.prompt for i in store.images()] == ["a cat"]
        assert store.conversation(1) is not None
    finally:
        store.close()
    conn = raw(db)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS) >= 3
    finally:
        conn.close()


def test_a_crafted_owner_is_taken_for_dead_and_touches_no_file(db: Path, tmp_path: Path) -> None:
    outside = tmp_path / "victim.lock"
    outside.write_text("keep")
    store = Store.open(db)
    c = store.create_conversation("m", OPTIONS)
    mid = store.add_message(c.id, "assistant", "", status="streaming", model="m")
    store.close()
    conn = raw(db)
    conn.execute("UPDATE messages SET owner = ? WHERE id = ?", ("../../victim", mid))
    conn.close()
    again = Store.open(db)
    try:
        assert [m.status for m in again.messages(c.id)] == ["interrupted"]
        assert outside.read_text() == "keep"
    finally:
        again.close()


def test_opening_a_long_history_reads_no_table_whole(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The recovery at every start looks for replies left streaming: at 500,000 messages,
    a read of every message held the first frame back 45 ms (issue 13). Every statement the
    opening runs reaches its rows through an index, and a file of the schema before that
    index gets it, its streaming reply still recovered."""
    store = Store.open(db)
    c = store.create_conversation("m", OPTIONS)
    for i in range(20):
        store.add_message(c.id, "user" if i % 2 == 0 else "assistant", f"turn {i}")
    mid = store.add_message(c.id, "assistant", "half", status="streaming", model="m")
    store.close()
    conn = raw(db)  # the file as the release before the index left it
    conn.execute("DROP INDEX messages_streaming")
    conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) - 1}")
    conn.execute("ANALYZE")  # statistics that make a scan of a small table look cheap
    conn.close()
    statements: list[str] = []
    connect = sqlite3.connect

    def traced(*args: object, **kwargs: object) -> sqlite3.Connection:
        conn = connect(*args, **kwargs)  # type: ignore[arg-type]
        conn.set_trace_callback(statements.append)
        return conn

    monkeypatch.setattr("engines.store.sqlite3.connect", traced)
    again = Store.open(db)
    monkeypatch.undo()
    try:
        assert [m.status for m in again.messages(c.id)][-1] == "interrupted"
        assert again.messages(c.id)[-1].id == mid
    finally:
        again.close()
    reads = [s for s in statements if re.match(r"\s*(SELECT|UPDATE|DELETE)\b", s, re.I)]
    assert any("streaming" in s for s in reads), statements
    conn = raw(db)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        for sql in reads:
            plan = [row[-1] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}")]
            scans = [step for step in plan if re.match(r"SCAN \w+$", step)]
            assert not scans, (sql, plan)
    finally:
        conn.close()
