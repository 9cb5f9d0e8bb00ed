"""SQLite storage: conversations and their messages, and the index of generated images.

WAL journal, versioned migrations through ``PRAGMA user_version``. A streaming
reply is saved as it grows with status ``streaming``; when it ends it becomes
``done``, ``interrupted`` or ``error``. A reply left ``streaming`` by a killed
process is marked ``interrupted`` the next time the store opens.

Which process writes a streaming reply is in its ``owner`` column: a token whose lock
file (``<database>.owners/<token>.lock``) the writing store holds with ``flock`` for as
long as it is open. The lock goes when the process does, however it ends, so recovery
interrupts only the replies whose owner's lock is free, and leaves a live app's reply
(another window on the same database) streaming.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from engines.chat_types import (
    ChatMessage,
    ChatOptions,
    ReplyStats,
    ToolCall,
    ToolUse,
    tool_uses_from_json,
    tool_uses_to_json,
)

if TYPE_CHECKING:
    from engines.images import ImageParameters  # loaded with the first image read

log = logging.getLogger(__name__)

Status = Literal["done", "streaming", "interrupted", "error"]
TITLE_MAX = 60

MIGRATIONS: tuple[str, ...] = (
    # 1: conversations and their messages
    """
    CREATE TABLE conversations (
        id INTEGER PRIMARY KEY,
        title TEXT NOT NULL,
        model TEXT NOT NULL,
        options TEXT NOT NULL DEFAULT '{}',
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE TABLE messages (
        id INTEGER PRIMARY KEY,
        conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
        role TEXT NOT NULL CHECK (role IN ('system', 'user', 'assistant')),
        content TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'done'
            CHECK (status IN ('done', 'streaming', 'interrupted', 'error')),
        model TEXT,
        stats TEXT,
        error TEXT,
        created_at REAL NOT NULL
    );
    CREATE INDEX messages_by_conversation ON messages(conversation_id, id);
    CREATE INDEX conversations_by_update ON conversations(updated_at DESC);
    """,
    # 2: the index of generated images
    """
    CREATE TABLE images (
        id INTEGER PRIMARY KEY,
        path TEXT NOT NULL UNIQUE,
        prompt TEXT NOT NULL,
        negative_prompt TEXT NOT NULL DEFAULT '',
        width INTEGER NOT NULL,
        height INTEGER NOT NULL,
        steps INTEGER NOT NULL,
        guidance REAL NOT NULL,
        seed INTEGER NOT NULL,
        scheduler TEXT NOT NULL,
        model TEXT NOT NULL,
        seconds REAL NOT NULL DEFAULT 0,
        created_at REAL NOT NULL
    );
    CREATE INDEX images_by_time ON images(created_at DESC);
    """,
    # 3: messages form a tree: each has a parent (the turn it answers or follows), and a
    # conversation has a current leaf. Regenerating adds a sibling and editing a prompt
    # starts a branch; nothing is deleted by either. Existing conversations become one
    # straight path, each message the child of the one before it.
    """
    ALTER TABLE messages ADD COLUMN parent_id INTEGER REFERENCES messages(id) ON DELETE CASCADE;
    ALTER TABLE conversations ADD COLUMN current_id INTEGER;
    UPDATE messages SET parent_id = (
        SELECT MAX(p.id) FROM messages p
        WHERE p.conversation_id = messages.conversation_id AND p.id < messages.id
    );
    UPDATE conversations SET current_id = (
        SELECT MAX(m.id) FROM messages m WHERE m.conversation_id = conversations.id
    );
    CREATE INDEX messages_by_parent ON messages(parent_id, id);
    """,
    # 4: who writes a streaming reply (crash recovery leaves a live process's reply alone)
    """
    ALTER TABLE messages ADD COLUMN owner TEXT;
    """,
    # 5: the Ollama server (by its [ollama] hosts name) a conversation used; '' for none yet
    """
    ALTER TABLE conversations ADD COLUMN host TEXT NOT NULL DEFAULT '';
    """,
    # 6: chat presets (a named system prompt with options, and optionally a
    # model; three shipped), and the images attached to messages (copies in the data folder)
    """
    CREATE TABLE presets (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE COLLATE NOCASE,
        model TEXT NOT NULL DEFAULT '',
        options TEXT NOT NULL DEFAULT '{}',
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    INSERT INTO presets (name, model, options, created_at, updated_at) VALUES
    ('Coder', '', '{"system_prompt": "You are a senior software engineer. Answer with working, '
        || 'idiomatic code and a short explanation. Say which language and version you assume, '
        || 'point out edge cases and security issues, and never invent APIs.", '
        || '"temperature": 0.2, "top_p": 0.9, "repeat_penalty": 1.05}', 0, 0),
    ('Writer', '', '{"system_prompt": "You are a careful writing partner. Keep the author''s '
        || 'voice, suggest clearer and shorter wording, and explain each change in one line.", '
        || '"temperature": 0.9, "top_p": 0.95, "min_p": 0.05}', 0, 0),
    ('Concise', '', '{"system_prompt": "Answer in as few words as the question allows. '
        || 'No preamble, no repetition of the question, no closing remarks. Use a list only '
        || 'when the answer is a list.", "temperature": 0.3, "max_tokens": 512}', 0, 0);
    CREATE TABLE attachments (
        id INTEGER PRIMARY KEY,
        message_id INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
        kind TEXT NOT NULL CHECK (kind IN ('image', 'file')),
        name TEXT NOT NULL,
        path TEXT NOT NULL,
        size INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX attachments_by_message ON attachments(message_id, id);
    """,
    # 7: the image queue (jobs that outlive the process), the batch an image came from, the
    # gallery's trash (a trashed image keeps its row, restorable until `clean`), and the
    # indexes behind the gallery's filters
    """
    CREATE TABLE jobs (
        id INTEGER PRIMARY KEY,
        position REAL NOT NULL,
        request TEXT NOT NULL,
        model TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT 'queued'
            CHECK (state IN ('queued', 'running', 'paused', 'done', 'failed', 'stopped')),
        done INTEGER NOT NULL DEFAULT 0,
        error TEXT,
        owner TEXT,
        created_at REAL NOT NULL,
        started_at REAL,
        finished_at REAL
    );
    CREATE INDEX jobs_by_state ON jobs(state, position);
    ALTER TABLE images ADD COLUMN job_id INTEGER;
    ALTER TABLE images ADD COLUMN trashed_at REAL;
    ALTER TABLE images ADD COLUMN trashed_from TEXT;
    CREATE INDEX images_by_job ON images(job_id);
    CREATE INDEX images_by_model ON images(model, created_at DESC);
    CREATE INDEX images_trashed ON images(trashed_at) WHERE trashed_at IS NOT NULL;
    """,
    # 8: one search (engines/search.py): SQLite FTS5 indexes over conversation titles,
    # every message (every version and branch), the images' settings and the presets,
    # kept in step by triggers, and built here for the data already there. Messages,
    # titles and images index their own tables' text (external content: no copy); a
    # preset's system prompt is inside its JSON options, so the presets' index keeps its
    # own copy of what it searches.
    """
    CREATE VIRTUAL TABLE messages_fts USING fts5(
        content, content='messages', content_rowid='id',
        tokenize='unicode61 remove_diacritics 2', prefix='2 3'
    );
    INSERT INTO messages_fts(messages_fts) VALUES ('rebuild');
    CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN
        INSERT INTO messages_fts(rowid, content) VALUES (new.id, new.content);
    END;
    CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN
        INSERT INTO messages_fts(messages_fts, rowid, content)
        VALUES ('delete', old.id, old.content);
    END;
    CREATE TRIGGER messages_fts_update AFTER UPDATE OF content ON messages BEGIN
        INSERT INTO messages_fts(messages_fts, rowid, content)
        VALUES ('delete', old.id, old.content);
        INSERT INTO messages_fts(rowid, content) VALUES (new.id, new.content);
    END;
    CREATE VIRTUAL TABLE conversations_fts USING fts5(
        title, content='conversations', content_rowid='id',
        tokenize='unicode61 remove_diacritics 2', prefix='2 3'
    );
    INSERT INTO conversations_fts(conversations_fts) VALUES ('rebuild');
    CREATE TRIGGER conversations_fts_insert AFTER INSERT ON conversations BEGIN
        INSERT INTO conversations_fts(rowid, title) VALUES (new.id, new.title);
    END;
    CREATE TRIGGER conversations_fts_delete AFTER DELETE ON conversations BEGIN
        INSERT INTO conversations_fts(conversations_fts, rowid, title)
        VALUES ('delete', old.id, old.title);
    END;
    CREATE TRIGGER conversations_fts_update AFTER UPDATE OF title ON conversations BEGIN
        INSERT INTO conversations_fts(conversations_fts, rowid, title)
        VALUES ('delete', old.id, old.title);
        INSERT INTO conversations_fts(rowid, title) VALUES (new.id, new.title);
    END;
    CREATE VIRTUAL TABLE images_fts USING fts5(
        prompt, negative_prompt, model, seed, scheduler, content='images', content_rowid='id',
        tokenize='unicode61 remove_diacritics 2', prefix='2 3'
    );
    INSERT INTO images_fts(images_fts) VALUES ('rebuild');
    CREATE TRIGGER images_fts_insert AFTER INSERT ON images BEGIN
        INSERT INTO images_fts(rowid, prompt, negative_prompt, model, seed, scheduler)
        VALUES (new.id, new.prompt, new.negative_prompt, new.model, new.seed, new.scheduler);
    END;
    CREATE TRIGGER images_fts_delete AFTER DELETE ON images BEGIN
        INSERT INTO images_fts(images_fts, rowid, prompt, negative_prompt, model, seed, scheduler)
        VALUES ('delete', old.id, old.prompt, old.negative_prompt, old.model, old.seed,
            old.scheduler);
    END;
    CREATE TRIGGER images_fts_update
    AFTER UPDATE OF prompt, negative_prompt, model, seed, scheduler ON images BEGIN
        INSERT INTO images_fts(images_fts, rowid, prompt, negative_prompt, model, seed, scheduler)
        VALUES ('delete', old.id, old.prompt, old.negative_prompt, old.model, old.seed,
            old.scheduler);
        INSERT INTO images_fts(rowid, prompt, negative_prompt, model, seed, scheduler)
        VALUES (new.id, new.prompt, new.negative_prompt, new.model, new.seed, new.scheduler);
    END;
    CREATE VIRTUAL TABLE presets_fts USING fts5(
        name, model, system, tokenize='unicode61 remove_diacritics 2', prefix='2 3'
    );
    INSERT INTO presets_fts(rowid, name, model, system)
    SELECT id, name, model, CASE WHEN json_valid(options)
        THEN coalesce(json_extract(options, '$.system_prompt'), '') ELSE '' END FROM presets;
    CREATE TRIGGER presets_fts_insert AFTER INSERT ON presets BEGIN
        INSERT INTO presets_fts(rowid, name, model, system)
        VALUES (new.id, new.name, new.model, CASE WHEN json_valid(new.options)
            THEN coalesce(json_extract(new.options, '$.system_prompt'), '') ELSE '' END);
    END;
    CREATE TRIGGER presets_fts_delete AFTER DELETE ON presets BEGIN
        DELETE FROM presets_fts WHERE rowid = old.id;
    END;
    CREATE TRIGGER presets_fts_update AFTER UPDATE ON presets BEGIN
        DELETE FROM presets_fts WHERE rowid = old.id;
        INSERT INTO presets_fts(rowid, name, model, system)
        VALUES (new.id, new.name, new.model, CASE WHEN json_valid(new.options)
            THEN coalesce(json_extract(new.options, '$.system_prompt'), '') ELSE '' END);
    END;
    """,
    # 9: chat and images (issue 14): the tool calls of a reply with their answers (JSON), and
    # the conversation and message an image job (and so its images) came from; deleting
    # either leaves the image, unlinked
    """
    ALTER TABLE messages ADD COLUMN tools TEXT;
    ALTER TABLE jobs ADD COLUMN conversation_id INTEGER
        REFERENCES conversations(id) ON DELETE SET NULL;
    ALTER TABLE jobs ADD COLUMN message_id INTEGER REFERENCES messages(id) ON DELETE SET NULL;
    ALTER TABLE images ADD COLUMN conversation_id INTEGER
        REFERENCES conversations(id) ON DELETE SET NULL;
    ALTER TABLE images ADD COLUMN message_id INTEGER REFERENCES messages(id) ON DELETE SET NULL;
    CREATE INDEX images_by_message ON images(message_id);
    CREATE INDEX images_by_conversation ON images(conversation_id);
    CREATE INDEX jobs_by_message ON jobs(message_id);
    CREATE INDEX jobs_by_conversation ON jobs(conversation_id);
    """,
    # 10: the gallery's text filter: the columns it reads, newest first, in an index of their
    # own, so a filter reads them in order without the rest of each row (issue 13)
    """
    CREATE INDEX images_text ON images(created_at DESC, id DESC, prompt, negative_prompt,
        model, seed) WHERE trashed_at IS NULL;
    """,
    # 11: the replies left streaming, by owner, in an index of their own (only those rows):
    # the recovery at every start read all 500,000 messages of a long history for them,
    # 45 ms before the first frame (issue 13)
    """
    CREATE INDEX messages_streaming ON messages(owner) WHERE status = 'streaming';
    """,
)

try:
    import fcntl
except ImportError:  # pragma: no cover - not on Windows: a streaming reply has no owner
    fcntl = None  # type: ignore[assignment]

_TOKEN = re.compile(r"[0-9]+-[0-9a-f]{16}")


def _statements(script: str) -> Iterator[str]:
    """The SQL statements of a migration, one by one: split at each ``;`` that ends a
    whole statement (a trigger's body holds statements of its own)."""
    pending = ""
    for part in script.split(";"):
        pending += part + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \n;"):
                yield pending
            pending = ""
    if pending.strip(" \n;"):
        yield pending


def owners_folder(database: Path) -> Path:
    """Where the lock files of the processes writing replies to ``database`` are."""
    return database.with_name(database.name + ".owners")


def _lock_free(path: Path) -> bool:
    """Whether no process holds the lock file at ``path`` (taking it, then letting go)."""
    if fcntl is None:
        return True
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW)
    except FileNotFoundError:
        return True
    except OSError:
        return False  # cannot tell: take it for alive, the reply is not touched
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    else:
        return True
    finally:
        os.close(fd)


class StoreError(Exception):
    """The database cannot be used; the message names the file and what to do."""


@dataclass(frozen=True)
class Conversation:
    id: int
    title: str
    model: str
    options: ChatOptions
    created_at: float
    updated_at: float
    host: str = ""
    """The Ollama server (its ``[ollama] hosts`` name) it used; empty until it used one."""


@dataclass(frozen=True)
class StoredMessage:
    id: int
    conversation_id: int
    role: Literal["system", "user", "assistant"]
    content: str
    status: Status
    model: str | None
    stats: ReplyStats | None
    error: str | None
    created_at: float
    parent_id: int | None = None
    images: tuple[str, ...] = ()
    """The images attached to a prompt: copies in the data folder."""
    tools: tuple[ToolUse, ...] = ()
    """A reply's tool calls and their answers, in order."""

    def as_chat(self) -> ChatMessage:
        return ChatMessage(self.role, self.content, self.images)

    def as_chats(self) -> list[ChatMessage]:
        """The message as the model saw it: a reply that called tools is its text up to
        each call, the call, and the tools' answers, then the rest of its text."""
        if not self.tools:
            return [self.as_chat()]
        out: list[ChatMessage] = []
        start = 0
        uses = sorted(self.tools, key=lambda u: u.at)
        i = 0
        while i < len(uses):
            at = min(max(uses[i].at, start), len(self.content))
            group = [u for u in uses[i:] if u.at == uses[i].at]
            i += len(group)
            calls = tuple(ToolCall(u.name, u.arguments) for u in group)
            out.append(ChatMessage("assistant", self.content[start:at], tool_calls=calls))
            out += [ChatMessage("tool", u.result, tool_name=u.name) for u in group]
            start = at
        if self.content[start:] or not out:
            out.append(ChatMessage("assistant", self.content[start:]))
        return out


@dataclass(frozen=True)
class StoredImage:
    id: int
    path: Path
    parameters: ImageParameters
    seconds: float
    created_at: float


def title_from(text: str) -> str:
    """A conversation title from the first prompt: its first non-empty line, shortened."""
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    line = "".join(ch if ch.isprintable() else " " for ch in line)
    if len(line) > TITLE_MAX:
        line = line[: TITLE_MAX - 1].rstrip() + "…"
    return line or "New conversation"


def _fold(text: str | None) -> str:
    return text.casefold() if text else ""


def storable(text: str) -> str:
    """``text`` as SQLite can hold it: lone surrogates (from a ``\\ud800`` escape in a
    server's JSON) cannot be UTF-8 and become U+FFFD; everything else is kept."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return _SURROGATES.sub("\ufffd", text)
    return text


_SURROGATES = re.compile("[\ud800-\udfff]")


class Store:
    """The app's database. Safe to share between the UI thread and workers."""

    def __init__(self, conn: sqlite3.Connection, path: Path | None) -> None:
        self._conn = conn
        self._lock = threading.RLock()
        self.path = path
        self._owner: str | None = None
        self._owner_fd: int | None = None

    # -- opening ------------------------------------------------------------

    @classmethod
    def open(
        cls,
        path: Path,
        *,
        busy_timeout_s: float = 2.0,
        recover: bool = True,
        open_timeout_s: float | None = None,
    ) -> Store:
        """Open (creating if needed) and migrate the database at ``path``. With
        ``recover``, replies left streaming by a process that died are marked
        interrupted; commands that may run beside the app pass False (a reply the app
        is streaming at that moment is not interrupted). A lock another program holds
        is waited for ``busy_timeout_s`` at most, or ``open_timeout_s`` while opening
        (the app opens it before its first frame: a database held locked must not
        hold the first frame back)."""
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"{path}: cannot create its folder: {exc.strerror or exc}") from None
        try:  # a new database is created private to its owner from the first byte
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            pass
        except OSError as exc:
            raise StoreError(f"{path}: cannot create the database: {exc.strerror or exc}") from None
        try:
            conn = sqlite3.connect(
                path,
                timeout=busy_timeout_s if open_timeout_s is None else open_timeout_s,
                check_same_thread=False,
                isolation_level=None,
            )
        except sqlite3.Error as exc:
            raise StoreError(f"{path}: cannot open the database: {exc}") from None
        conn.create_function("fold", 1, _fold, deterministic=True)
        store = cls(conn, path)
        try:
            store._prepare(wal=True, recover=recover)
            conn.execute(f"PRAGMA busy_timeout = {round(busy_timeout_s * 1000)}")
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise StoreError(cls._explain(path, exc)) from None
        return store

    @classmethod
    def memory(cls) -> Store:
        """A throw-away store, used when the database file cannot be opened."""
        conn = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
        conn.create_function("fold", 1, _fold, deterministic=True)
        store = cls(conn, None)
        store._prepare(wal=False)
        return store

    @staticmethod
    def _explain(path: Path, exc: sqlite3.Error) -> str:
        text = str(exc)
        if "locked" in text or "busy" in text:
            return (
                f"{path}: the database is locked by another program (another llm-pessoal?); "
                "close it and try again"
            )
        if "not a database" in text or "malformed" in text or "corrupt" in text:
            return (
                f"{path}: the database file is damaged ({text}); it was left untouched: "
                "move it aside to start a new one"
            )
        return f"{path}: {text}"

    def _prepare(self, *, wal: bool, recover: bool = True) -> None:
        with self._lock:
            c = self._conn
            c.execute("PRAGMA foreign_keys = ON")
            # a row that INSERT OR REPLACE (or UPDATE OR REPLACE) deletes fires its delete
            # triggers, so the search index forgets it too (engines/search.py)
            c.execute("PRAGMA recursive_triggers = ON")
            if wal:
                c.execute("PRAGMA journal_mode = WAL")
                c.execute("PRAGMA synchronous = NORMAL")
            version = c.execute("PRAGMA user_version").fetchone()[0]
            if version > len(MIGRATIONS):
                raise sqlite3.DatabaseError(
                    f"schema version {version} is newer than this app knows "
                    f"({len(MIGRATIONS)}); upgrade llm-pessoal"
                )
            for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
                c.execute("BEGIN IMMEDIATE")
                try:
                    for statement in _statements(script):
                        c.execute(statement)
                    c.execute(f"PRAGMA user_version = {number}")
                    c.execute("COMMIT")
                except BaseException:
                    c.execute("ROLLBACK")
                    raise
                log.info("database migrated", extra={"version": number})
            if not recover:
                return
            interrupted = 0
            c.execute("BEGIN IMMEDIATE")  # a database another program locks is refused here
            try:
                owners = [
                    row[0]
                    for row in c.execute(
                        "SELECT DISTINCT owner FROM messages WHERE status = 'streaming'"
                    ).fetchall()
                ]
                for owner in owners:
                    if self._owner_alive(owner):
                        continue
                    interrupted += c.execute(
                        "UPDATE messages SET status = 'interrupted'"
                        " WHERE status = 'streaming' AND owner IS ?",
                        (owner,),
                    ).rowcount
                c.execute("COMMIT")
            except BaseException:
                c.execute("ROLLBACK")
                raise
            if interrupted:
                log.warning("replies interrupted by an earlier exit", extra={"count": interrupted})
            self._sweep_owners()

    def _owner_alive(self, owner: str | None) -> bool:
        """Whether the process that wrote ``owner`` still holds its lock. Rows with no
        owner (written before the column, or where no lock could be taken) are taken
        for dead, as all streaming rows were before."""
        if owner is None or self.path is None or not _TOKEN.fullmatch(owner):
            return False
        if owner == self._owner:
            return True
        return not _lock_free(owners_folder(self.path) / f"{owner}.lock")

    def _sweep_owners(self) -> None:
        """Remove the lock files of processes that are gone."""
        if self.path is None or fcntl is None:
            return
        folder = owners_folder(self.path)
        try:  # (os.scandir, not Path.glob: no fnmatch to import at every start)
            entries = [folder / e.name for e in os.scandir(folder) if e.name.endswith(".lock")]
        except OSError:
            return
        for entry in entries:
            if entry.stem != self._owner and _lock_free(entry):
                with suppress(OSError):
                    entry.unlink()

    def _claim(self) -> str | None:
        """This store's owner token, its lock file taken on first use; None where no
        lock can be had (the reply is then recovered as before: by the next start)."""
        if self._owner is not None or self.path is None or fcntl is None:
            return self._owner
        folder = owners_folder(self.path)
        for _attempt in range(3):
            token = f"{os.getpid()}-{os.urandom(8).hex()}"  # (secrets would load hmac, hashlib)
            path = folder / f"{token}.lock"
            try:
                folder.mkdir(mode=0o700, exist_ok=True)
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            except OSError as exc:
                log.warning("no owner lock for streaming replies: %s", exc)
                return None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                # a sweep may have unlinked the new file before the lock was taken
                if os.stat(path).st_ino == os.fstat(fd).st_ino:
                    self._owner, self._owner_fd = token, fd
                    return token
            except OSError:
                pass
            os.close(fd)
        return None

    def close(self) -> None:
        with self._lock:
            self._conn.close()
            if self._owner_fd is not None and self.path is not None:
                with suppress(OSError):
                    (owners_folder(self.path) / f"{self._owner}.lock").unlink()
                os.close(self._owner_fd)
                self._owner_fd = None

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise StoreError(self._explain(self.path or Path(":memory:"), exc)) from None
            try:
                yield self._conn
                self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                self._conn.execute("ROLLBACK")
                raise StoreError(self._explain(self.path or Path(":memory:"), exc)) from None
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise

    def _query_in(self, sql: str, ids: Sequence[int]) -> list[sqlite3.Row]:
        """``sql`` for every id of ``ids``: its ``{ids}`` is a list of placeholders, filled
        500 ids at a time (SQLite limits a statement's parameters)."""
        rows: list[sqlite3.Row] = []
        ids = list(ids)
        for start in range(0, len(ids), 500):
            chunk = tuple(ids[start : start + 500])
            rows += self._query(sql.format(ids=",".join("?" * len(chunk))), chunk)
        return rows

    def _query(self, sql: str, args: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with self._lock:
            try:
                cur = self._conn.execute(sql, args)
                cur.row_factory = sqlite3.Row
                return cur.fetchall()
            except sqlite3.Error as exc:
                raise StoreError(self._explain(self.path or Path(":memory:"), exc)) from None

    # -- conversations -------------------------------------------------------

    def create_conversation(
        self,
        model: str,
        options: ChatOptions,
        title: str = "New conversation",
        host: str = "",
    ) -> Conversation:
        now = time.time()
        with self._tx() as c:
            cur = c.execute(
                "INSERT INTO conversations (title, model, options, created_at, updated_at, host)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (storable(title), model, json.dumps(options.to_dict()), now, now, host),
            )
        return Conversation(int(cur.lastrowid or 0), title, model, options, now, now, host)

    @staticmethod
    def _conversation(row: sqlite3.Row) -> Conversation:
        try:
            options = ChatOptions.from_dict(json.loads(row["options"]))
        except (ValueError, TypeError):
            options = ChatOptions()
        return Conversation(
            row["id"],
            row["title"],
            row["model"],
            options,
            row["created_at"],
            row["updated_at"],
            row["host"],
        )

    def conversations(
        self, search: str = "", *, limit: int | None = None, after: Conversation | None = None
    ) -> list[Conversation]:
        """Newest first; ``search`` matches titles and message text, literally and
        without regard to case in any script (``água`` finds ``ÁGUA``). A page at a time
        with ``limit``: the next page is the one ``after`` the last conversation of the
        page before (keyset paging, as cheap at the 100th page as at the first)."""
        where, args = self._listed(search)
        if after is not None:
            where.append("(c.updated_at < ? OR (c.updated_at = ? AND c.id < ?))")
            args += (after.updated_at, after.updated_at, after.id)
        sql = "SELECT * FROM conversations c"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY c.updated_at DESC, c.id DESC"
        if limit is not None:
            sql += " LIMIT ?"
            args += (max(0, limit),)
        return [self._conversation(r) for r in self._query(sql, args)]

    def newest_conversation(self) -> int | None:
        """The id of the conversation updated last, or None when there is none."""
        rows = self._query("SELECT id FROM conversations ORDER BY updated_at DESC, id DESC LIMIT 1")
        return int(rows[0]["id"]) if rows else None

    def conversations_before(self, conversation_id: int, search: str = "") -> int | None:
        """How many conversations the list (``conversations(search)``) shows above this
        one; None when it is not in that list."""
        rows = self._query(
            "SELECT updated_at, id FROM conversations WHERE id = ?", (conversation_id,)
        )
        if not rows:
            return None
        where, args = self._listed(search)
        if where and not self._query(
            "SELECT 1 FROM conversations c WHERE c.id = ? AND " + " AND ".join(where),
            (conversation_id, *args),
        ):
            return None
        updated_at = rows[0]["updated_at"]
        where.append("(c.updated_at > ? OR (c.updated_at = ? AND c.id > ?))")
        args += (updated_at, updated_at, conversation_id)
        count = self._query(
            "SELECT COUNT(*) AS n FROM conversations c WHERE " + " AND ".join(where), args
        )
        return int(count[0]["n"])

    @staticmethod
    def _listed(search: str) -> tuple[list[str], tuple[Any, ...]]:
        """The WHERE terms (and their arguments) of the conversations ``search`` finds."""
        if not search.strip():
            return [], ()
        needle = _fold(search.strip())
        return [
            "(instr(fold(c.title), ?) > 0 OR EXISTS (SELECT 1 FROM messages m"
            " WHERE m.conversation_id = c.id AND instr(fold(m.content), ?) > 0))"
        ], (needle, needle)

    def conversation(self, conversation_id: int) -> Conversation | None:
        rows = self._query("SELECT * FROM conversations WHERE id = ?", (conversation_id,))
        return self._conversation(rows[0]) if rows else None

    def rename(self, conversation_id: int, title: str) -> None:
        title = title.strip()
        if not title:
            raise ValueError("a conversation title cannot be empty")
        with self._tx() as c:
            c.execute(
                "UPDATE conversations SET title = ?, updated_at = ? WHERE id = ?",
                (storable(title), time.time(), conversation_id),
            )

    def update_settings(self, conversation_id: int, model: str, options: ChatOptions) -> None:
        with self._tx() as c:
            c.execute(
                "UPDATE conversations SET model = ?, options = ? WHERE id = ?",
                (model, json.dumps(options.to_dict()), conversation_id),
            )

    def set_host(self, conversation_id: int, host: str) -> None:
        """The Ollama server the conversation uses from now on (by its name)."""
        with self._tx() as c:
            c.execute("UPDATE conversations SET host = ? WHERE id = ?", (host, conversation_id))

    def delete(self, conversation_id: int) -> None:
        with self._tx() as c:
            c.execute("DELETE FROM conversations WHERE id = ?", (conversation_id,))

    # -- messages ------------------------------------------------------------

    def add_message(
        self,
        conversation_id: int,
        role: Literal["system", "user", "assistant"],
        content: str,
        *,
        status: Status = "done",
        model: str | None = None,
        parent_id: int | Literal["current"] | None = "current",
        images: Sequence[tuple[str, Path, int]] = (),
    ) -> int:
        """Add a message under ``parent_id`` (by default the conversation's current leaf;
        None: a new first turn) and make it the current leaf. ``images``: (name, copy,
        size) of each image attached to it."""
        now = time.time()
        with self._lock:
            owner = self._claim() if status == "streaming" else None
        with self._tx() as c:
            if parent_id == "current":
                row = c.execute(
                    "SELECT current_id FROM conversations WHERE id = ?", (conversation_id,)
                ).fetchone()
                parent_id = row[0] if row else None
            cur = c.execute(
                "INSERT INTO messages (conversation_id, role, content, status, model, created_at,"
                " parent_id, owner) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (conversation_id, role, storable(content), status, model, now, parent_id, owner),
            )
            message_id = int(cur.lastrowid or 0)
            for name, copy, size in images:
                c.execute(
                    "INSERT INTO attachments (message_id, kind, name, path, size)"
                    " VALUES (?, 'image', ?, ?, ?)",
                    (message_id, storable(name), str(copy), size),
                )
            c.execute(
                "UPDATE conversations SET updated_at = ?, current_id = ? WHERE id = ?",
                (now, message_id, conversation_id),
            )
        return message_id

    def update_message(
        self,
        message_id: int,
        content: str,
        *,
        status: Status,
        stats: ReplyStats | None = None,
        error: str | None = None,
        tools: tuple[ToolUse, ...] | None = None,
    ) -> None:
        """Save a message's text and state; ``tools`` (a reply's tool calls) when given."""
        owner = None
        if status == "streaming":  # a reply taken up again (continued) is this process's now
            with self._lock:
                owner = self._claim()
        with self._tx() as c:
            c.execute(
                "UPDATE messages SET content = ?, status = ?, stats = ?, error = ?,"
                " owner = COALESCE(?, owner), tools = COALESCE(?, tools) WHERE id = ?",
                (
                    storable(content),
                    status,
                    json.dumps(stats.to_dict()) if stats else None,
                    error,
                    owner,
                    storable(tool_uses_to_json(tools)) if tools else None,
                    message_id,
                ),
            )

    def messages(self, conversation_id: int) -> list[StoredMessage]:
        """The conversation as it reads now: the path from its first turn to its current
        leaf (other versions and branches are kept, and reached through :meth:`siblings`)."""
        rows = self._query(
            "WITH RECURSIVE path(id, depth) AS ("
            " SELECT current_id, 0 FROM conversations WHERE id = ?1 AND current_id IS NOT NULL"
            " UNION ALL SELECT m.parent_id, path.depth + 1 FROM messages m JOIN path"
            " ON m.id = path.id WHERE m.parent_id IS NOT NULL)"
            " SELECT m.* FROM path JOIN messages m ON m.id = path.id ORDER BY path.depth DESC",
            (conversation_id,),
        )
        return self._messages(rows)

    def all_messages(self, conversation_id: int) -> list[StoredMessage]:
        """Every message of the conversation, every version and branch, oldest first."""
        rows = self._query(
            "SELECT * FROM messages WHERE conversation_id = ? ORDER BY id", (conversation_id,)
        )
        return self._messages(rows)

    def prompts(self, conversation_id: int | None = None, limit: int = 500) -> list[str]:
        """What the user wrote, newest first and each text once: in one conversation, or
        in all of them."""
        where = "role = 'user'" + (" AND conversation_id = ?" if conversation_id else "")
        args: tuple[Any, ...] = (conversation_id,) if conversation_id else ()
        rows = self._query(
            f"SELECT content, MAX(id) AS newest FROM messages WHERE {where}"
            " GROUP BY content ORDER BY newest DESC LIMIT ?",
            (*args, limit),
        )
        return [str(r["content"]) for r in rows]

    def message(self, message_id: int) -> StoredMessage | None:
        rows = self._query("SELECT * FROM messages WHERE id = ?", (message_id,))
        return self._messages(rows)[0] if rows else None

    def siblings(self, message_id: int) -> list[int]:
        """The versions of a turn, oldest first: the messages that share its parent and
        its role (a regenerated reply's earlier replies; an edited prompt's earlier
        prompts). A turn that was never redone is its only version."""
        rows = self._query(
            "SELECT s.id FROM messages m JOIN messages s ON s.conversation_id = m.conversation_id"
            " AND s.role = m.role AND s.parent_id IS m.parent_id WHERE m.id = ? ORDER BY s.id",
            (message_id,),
        )
        return [int(r["id"]) for r in rows]

    def latest_leaf(self, message_id: int) -> int:
        """The end of the branch that goes on from ``message_id``, following the newest
        child at each turn."""
        leaf = message_id
        while True:
            rows = self._query("SELECT MAX(id) AS child FROM messages WHERE parent_id = ?", (leaf,))
            if not rows or rows[0]["child"] is None:
                return leaf
            leaf = int(rows[0]["child"])

    def switch_to(self, message_id: int) -> None:
        """Make the branch through ``message_id`` the current one (its newest leaf)."""
        leaf = self.latest_leaf(message_id)
        with self._tx() as c:
            c.execute(
                "UPDATE conversations SET current_id = ? WHERE id ="
                " (SELECT conversation_id FROM messages WHERE id = ?)",
                (leaf, message_id),
            )

    def delete_from(self, message_id: int) -> None:
        """Delete ``message_id`` and everything that followed it on every branch. The
        conversation goes on from the newest remaining version of that turn, else from
        the turn before it."""
        message = self.message(message_id)
        if message is None:
            return
        on_current_path = any(m.id == message_id for m in self.messages(message.conversation_id))
        others = [i for i in self.siblings(message_id) if i != message_id]
        with self._tx() as c:
            c.execute("DELETE FROM messages WHERE id = ?", (message_id,))
        if not on_current_path:
            return
        if others:
            self.switch_to(others[-1])
            return
        with self._tx() as c:
            c.execute(
                "UPDATE conversations SET current_id = ? WHERE id = ?",
                (message.parent_id, message.conversation_id),
            )

    def _images(self, ids: list[int]) -> dict[int, tuple[str, ...]]:
        found: dict[int, list[str]] = {}
        rows = self._query_in(
            "SELECT message_id, path FROM attachments WHERE kind = 'image'"
            " AND message_id IN ({ids}) ORDER BY id",
            ids,
        )
        for r in rows:
            found.setdefault(int(r["message_id"]), []).append(str(r["path"]))
        return {k: tuple(v) for k, v in found.items()}

    def attachment_paths(self) -> set[str]:
        """Every attachment copy some message refers to (``clean --attachments`` keeps them)."""
        return {str(r["path"]) for r in self._query("SELECT DISTINCT path FROM attachments", ())}

    def image_names(self, message_id: int) -> dict[str, str]:
        """The names the user gave the images of a message, by their copy's path."""
        rows = self._query(
            "SELECT path, name FROM attachments WHERE message_id = ? ORDER BY id", (message_id,)
        )
        return {str(r["path"]): str(r["name"]) for r in rows}

    def _messages(self, rows: list[sqlite3.Row]) -> list[StoredMessage]:
        images = self._images([int(r["id"]) for r in rows if r["role"] == "user"])
        out = []
        for r in rows:
            stats = None
            if r["stats"]:
                try:
                    stats = ReplyStats.from_dict(json.loads(r["stats"]))
                except (ValueError, TypeError):
                    stats = None
            out.append(
                StoredMessage(
                    r["id"],
                    r["conversation_id"],
                    r["role"],
                    r["content"],
                    r["status"],
                    r["model"],
                    stats,
                    r["error"],
                    r["created_at"],
                    r["parent_id"],
                    images.get(int(r["id"]), ()),
                    tool_uses_from_json(r["tools"]) if "tools" in r.keys() else (),  # noqa: SIM118
                )
            )
        return out

    # -- images ----------------------------------------------------------------------

    def add_image(self, path: Path, parameters: ImageParameters, seconds: float) -> int:
        p = parameters
        with self._tx() as c:
            cur = c.execute(
                "INSERT OR REPLACE INTO images (path, prompt, negative_prompt, width, height,"
                " steps, guidance, seed, scheduler, model, seconds, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    str(path),
                    storable(p.prompt),
                    storable(p.negative_prompt),
                    p.width,
                    p.height,
                    p.steps,
                    p.guidance,
                    p.seed,
                    p.scheduler,
                    p.model,
                    seconds,
                    time.time(),
                ),
            )
        return int(cur.lastrowid or 0)

    def images(self, limit: int = 200) -> list[StoredImage]:
        """The most recent images first."""
        rows = self._query(
            "SELECT * FROM images WHERE trashed_at IS NULL ORDER BY created_at DESC, id DESC"
            " LIMIT ?",
            (limit,),
        )
        return [self.stored_image(r) for r in rows]

    @staticmethod
    def stored_image(r: sqlite3.Row) -> StoredImage:
        """An ``images`` row as a :class:`StoredImage`."""
        from engines.images import ImageParameters

        return StoredImage(
            r["id"],
            Path(r["path"]),
            ImageParameters(
                r["prompt"],
                r["negative_prompt"],
                r["width"],
                r["height"],
                r["steps"],
                r["guidance"],
                r["seed"],
                r["scheduler"],
                r["model"],
            ),
            r["seconds"],
            r["created_at"],
        )

    def forget_image(self, image_id: int) -> None:
        """Remove an image from the index (the caller deletes the file)."""
        with self._tx() as c:
            c.execute("DELETE FROM images WHERE id = ?", (image_id,))

    def image_id_at(self, path: Path) -> int | None:
        """The index row of the image file at ``path``, if it is indexed (for clean-up)."""
        rows = self._query("SELECT id FROM images WHERE path = ?", (str(path),))
        return int(rows[0]["id"]) if rows else None

    def integrity_ok(self) -> bool:
        rows = self._query("PRAGMA integrity_check")
        return bool(rows) and rows[0][0] == "ok"


def tool_summary(use: ToolUse) -> str:
    """One line on a tool call: its prompt (for the image tool) and what came of it."""
    prompt = use.arguments.get("prompt")
    what = (
        f"“{prompt}”"
        if isinstance(prompt, str) and prompt
        else json.dumps(dict(use.arguments), ensure_ascii=False)[:200]
    )
    if use.state == "running":
        return f"{what} (working…)"
    outcome = use.image or use.result
    return f"{what} → {use.state}: {outcome}"[:1000]


def export_markdown(
    conversation: Conversation, messages: list[StoredMessage], folder: Path | None = None
) -> str:
    """A conversation as a Markdown document; a prompt's images as links relative to
    ``folder`` (where the document goes; None: the working folder)."""
    lines = [f"# {conversation.title}", "", f"Model: `{conversation.model}`", ""]
    if conversation.options.system_prompt:
        lines += ["## System", "", conversation.options.system_prompt, ""]
    for m in messages:
        heading = {"user": "You", "assistant": "Assistant", "system": "System"}[m.role]
        if m.status in ("interrupted", "error"):
            heading += f" ({m.status})"
        lines += [f"## {heading}", ""]
        for use in m.tools:  # the tools it called, before its text
            lines += [f"> Tool `{use.name}`: {tool_summary(use)}", ""]
        lines += [m.content, ""]
        for image in m.images:
            link = os.path.relpath(image, folder or Path.cwd()).replace(os.sep, "/")
            lines += [f"![{Path(image).name}](<{link}>)", ""]
        if m.stats:
            lines += [f"*{m.stats.summary()}*", ""]
    return "\n".join(lines).rstrip() + "\n"
