"""Backup, restore and clean never destroy what they should keep (issue 9, section 2).

Real files in tmp_path, real SQLite, the CLI as a real subprocess (the ``cli`` fixture),
hostile archives built here with :mod:`tarfile`.
"""

from __future__ import annotations

import io
import json
import logging
import logging.handlers
import os
import select
import shutil
import sqlite3
import subprocess
import tarfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from engines.chat_types import ChatOptions
from engines.images import ImageParameters
from engines.store import Store

if TYPE_CHECKING:
    from conftest import Cli, MakeConfig
else:
    Cli = MakeConfig = Any

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2
PARAMS = ImageParameters("a lighthouse", "", 64, 64, 4, 7.5, 7, "Euler a", "tiny")
DATABASE_MEMBER = "data/llm-pessoal.db"
MB = 1024 * 1024


@pytest.fixture
def data(tmp_path: Path, config_file: Path) -> Path:
    """A conversation, two indexed images, a log and an export; returns the config file."""
    outputs = tmp_path / "outputs"
    outputs.mkdir()
    store = Store.open(tmp_path / "data" / "llm-pessoal.db")
    try:
        conv = store.create_conversation("m", ChatOptions(), "Keep me")
        store.add_message(conv.id, "user", "a private question")
        for name in ("one.png", "two.png"):
            (outputs / name).write_bytes(b"\x89PNG fake " + name.encode())
            store.add_image(outputs / name, PARAMS, 1.0)
    finally:
        store.close()
    (tmp_path / "logs").mkdir(exist_ok=True)
    (tmp_path / "logs" / "app.jsonl").write_text('{"message": "then"}\n', encoding="utf-8")
    (tmp_path / "exports").mkdir()
    (tmp_path / "exports" / "keep.md").write_text("# Keep me\n", encoding="utf-8")
    return config_file


def make_backup(cli: Cli, *args: str) -> Path:
    result = cli.run("backup", *args)
    assert result.returncode == EXIT_OK, result.stderr
    return Path(result.stdout.rsplit(" (", 1)[0])


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """The one line a refusal prints: no traceback, nothing on stdout."""
    assert "Traceback" not in result.stderr, result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith("llm-pessoal: ")
    assert result.stdout == ""
    return line


def archive_of(path: Path, members: dict[str, bytes | tarfile.TarInfo], **manifest: Any) -> Path:
    """A backup archive with these members (a manifest first, unless given)."""
    head = {"format": 1, "app": "llm-pessoal", "version": "0.1.0", **manifest}
    with tarfile.open(path, "w:gz") as tar:
        entries: dict[str, bytes | tarfile.TarInfo] = {"manifest.json": json.dumps(head).encode()}
        entries.update(members)
        for name, blob in entries.items():
            if isinstance(blob, tarfile.TarInfo):
                tar.addfile(blob, io.BytesIO(b"x" * blob.size))
                continue
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(blob), int(time.time()) - 60, 0o644
            tar.addfile(info, io.BytesIO(blob))
    return path


def streamed_zeros_archive(path: Path, name: str, size: int) -> Path:
    """A backup whose member ``name`` is ``size`` zero bytes, written a chunk at a time
    (the archive itself stays small: zeros compress about 1000 times)."""

    class Zeros(io.RawIOBase):
        def __init__(self, left: int) -> None:
            self.left = left

        def readable(self) -> bool:
            return True

        def readinto(self, buffer: Any) -> int:
            n = min(len(buffer), self.left)
            buffer[:n] = bytes(n)
            self.left -= n
            return n

    manifest = json.dumps({"format": 1, "app": "llm-pessoal", "version": "0.1.0"}).encode()
    with tarfile.open(path, "w:gz", compresslevel=9) as tar:
        info = tarfile.TarInfo("manifest.json")
        info.size = len(manifest)
        tar.addfile(info, io.BytesIO(manifest))
        info = tarfile.TarInfo(name)
        info.size, info.mtime = size, int(time.time()) - 60
        tar.addfile(info, io.BufferedReader(Zeros(size), MB))
    return path


def database_bytes(path: Path, build: Callable[[sqlite3.Connection], object]) -> bytes:
    """The bytes of the SQLite file at ``path`` (made if need be) after ``build`` ran on
    it, in one self-contained file."""
    path.parent.mkdir(exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = DELETE")
        build(conn)
    finally:
        conn.close()
    return path.read_bytes()


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under root but the CLI's own log and the test's archives."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
        and not p.is_symlink()
        and p.relative_to(root).as_posix() != "logs/app.jsonl"
        and not p.relative_to(root).as_posix().startswith(("archives/", "build/"))
    }


def integrity(db: Path) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute("PRAGMA integrity_check").fetchall()
    finally:
        conn.close()


# -- backup --out -----------------------------------------------------------------------


def test_backup_refuses_an_existing_file_unless_forced(
    cli: Cli, data: Path, tmp_path: Path
) -> None:
    (tmp_path / "archives").mkdir()
    mine = tmp_path / "archives" / "mine.tar.gz"
    mine.write_bytes(b"a file of mine")

    line = one_line_error(cli.run("backup", "--out", str(mine)))
    assert cli.run("backup", "--out", str(mine)).returncode == EXIT_USAGE
    assert f"{mine}: the file exists; --force replaces it" in line
    assert mine.read_bytes() == b"a file of mine"
    assert not list((tmp_path / "archives").glob(".tmp-*"))

    assert make_backup(cli, "--out", str(mine), "--force") == mine
    with tarfile.open(mine, "r:gz") as tar:
        assert "manifest.json" in tar.getnames()


@pytest.mark.parametrize(
    ("out", "what"),
    [
        ("data/llm-pessoal.db", "the database"),
        ("data/llm-pessoal.db-wal", "the database's wal file"),
        ("data/llm-pessoal.db-shm", "the database's shm file"),
        ("config.toml", "the config file"),
        ("outputs/one.png", "inside [paths] outputs"),
        ("outputs/new.tar.gz", "inside [paths] outputs"),
        ("logs", "inside [paths] logs"),
        ("exports/", "inside [paths] exports"),
        ("link-to-db.tar.gz", "the database"),
    ],
)
def test_backup_never_writes_over_what_the_app_keeps(
    cli: Cli, data: Path, tmp_path: Path, out: str, what: str
) -> None:
    db = tmp_path / "data" / "llm-pessoal.db"
    (tmp_path / "link-to-db.tar.gz").symlink_to(db)
    before = snapshot(tmp_path)
    for force in ((), ("--force",)):
        result = cli.run("backup", "--out", out, *force)
        assert result.returncode == EXIT_USAGE, (out, result.stderr)
        line = one_line_error(result)
        assert f"it is {what}" in line and "refusing to write the backup there" in line
    assert snapshot(tmp_path) == before
    assert integrity(db) == [("ok",)]


@pytest.mark.parametrize(
    "args",
    [
        ("backup", "--out=--"),
        ("clean", "--images-older-than=--"),
        ("clean", "--logs-older-than=--"),
    ],
)
def test_a_double_dash_value_is_one_clear_line(
    cli: Cli, config_file: Path, args: tuple[str, ...]
) -> None:
    result = cli.run(*args)
    assert result.returncode == EXIT_USAGE
    line = one_line_error(result)
    assert args[1].split("=")[0] in line and "'--'" in line


# -- restore: memory, size, what it accepts ---------------------------------------------


def _restore_rss_kib(cli: Cli, archive: Path) -> int:
    """The most memory (KiB) ``restore --yes`` took, read from its own rusage."""
    proc = subprocess.Popen(
        cli.command("restore", str(archive), "--yes"),
        cwd=cli.cwd,
        env=cli.environment(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    assert proc.stderr is not None
    err = proc.stderr.read()
    _pid, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    assert proc.returncode == EXIT_OK, err.decode()
    return int(usage.ru_maxrss)


def test_restore_streams_a_large_member_with_little_memory(
    cli: Cli, config_file: Path, tmp_path: Path
) -> None:
    (tmp_path / "archives").mkdir()
    small = streamed_zeros_archive(tmp_path / "archives" / "small.tar.gz", "outputs/a.png", 1)
    size = 48 * MB
    big = streamed_zeros_archive(tmp_path / "archives" / "big.tar.gz", "outputs/b.png", size)
    assert big.stat().st_size < MB

    baseline = _restore_rss_kib(cli, small)
    peak = _restore_rss_kib(cli, big)
    assert (tmp_path / "outputs" / "b.png").stat().st_size == size
    # holding the member (48 MiB) would show; streaming costs a chunk or two
    assert peak - baseline < 16 * 1024, (baseline, peak)


def test_restore_refuses_more_than_the_configured_cap(
    cli: Cli, make_config: MakeConfig, tmp_path: Path
) -> None:
    make_config(backup={"restore_max_mb": 2})
    (tmp_path / "archives").mkdir()
    archive = streamed_zeros_archive(
        tmp_path / "archives" / "big.tar.gz", "outputs/big.png", 3 * MB
    )
    result = cli.run("restore", str(archive), "--yes")
    assert result.returncode == EXIT_FAIL
    line = one_line_error(result)
    assert "more than 2.0 MB" in line and "restore_max_mb" in line
    assert "nothing was restored" in line
    assert not (tmp_path / "outputs").exists()


def _app_database_with(tmp_path: Path, extra: str) -> bytes:
    """A database the app made, with ``extra`` SQL run on it afterwards."""
    path = tmp_path / "build" / f"app-{time.monotonic_ns()}.db"
    path.parent.mkdir(exist_ok=True)
    Store.open(path).close()
    return database_bytes(path, lambda c: c.executescript(extra))


@pytest.mark.parametrize(
    ("label", "build"),
    [
        (
            "a wrong schema at user_version 0",
            lambda tmp: database_bytes(
                tmp / "build" / "odd.db",
                lambda c: c.executescript(
                    "CREATE TABLE conversations (id INTEGER PRIMARY KEY, note TEXT);"
                    "CREATE TABLE messages (id INTEGER PRIMARY KEY);"
                ),
            ),
        ),
        (
            "the app's schema with a trigger",
            lambda tmp: _app_database_with(
                tmp,
                "CREATE TRIGGER wipe AFTER INSERT ON messages BEGIN DELETE FROM messages; END;",
            ),
        ),
        (
            "the app's schema with a table of its own",
            lambda tmp: _app_database_with(tmp, "CREATE TABLE stash (x);"),
        ),
    ],
)
def test_restore_refuses_a_database_that_is_not_the_apps(
    cli: Cli, data: Path, tmp_path: Path, label: str, build: Callable[[Path], bytes]
) -> None:
    (tmp_path / "archives").mkdir()
    archive = archive_of(tmp_path / "archives" / "odd.tar.gz", {DATABASE_MEMBER: build(tmp_path)})
    before = snapshot(tmp_path)
    result = cli.run("restore", str(archive), "--yes")
    assert result.returncode == EXIT_USAGE, (label, result.stderr)
    line = one_line_error(result)
    assert f"member '{DATABASE_MEMBER}' is refused" in line and "nothing was restored" in line
    assert snapshot(tmp_path) == before
    store = Store.open(tmp_path / "data" / "llm-pessoal.db")
    try:
        assert [c.title for c in store.conversations()] == ["Keep me"]
    finally:
        store.close()


def test_restore_drops_gallery_rows_outside_outputs(
    cli: Cli, config_file: Path, tmp_path: Path
) -> None:
    victim = tmp_path / "victim.png"
    victim.write_bytes(b"not the app's")
    outputs = tmp_path / "outputs"

    gallery = tmp_path / "build" / "gallery.db"
    gallery.parent.mkdir()
    store = Store.open(gallery)
    try:
        store.add_image(outputs / "fine.png", PARAMS, 1.0)
        store.add_image(victim, PARAMS, 1.0)
        store.add_image(Path(f"{outputs}/../victim.png"), PARAMS, 1.0)
        store.add_image(Path("victim.png"), PARAMS, 1.0)
    finally:
        store.close()
    db_bytes = database_bytes(gallery, lambda c: None)
    (tmp_path / "archives").mkdir()
    archive = archive_of(
        tmp_path / "archives" / "a.tar.gz",
        {DATABASE_MEMBER: db_bytes, "outputs/fine.png": b"fine"},
        paths={"outputs": str(outputs)},
    )
    result = cli.run("restore", str(archive), "--yes")
    assert result.returncode == EXIT_OK, result.stderr
    assert f"3 gallery entries named a file outside {outputs} and were dropped" in result.stdout
    store = Store.open(tmp_path / "data" / "llm-pessoal.db")
    try:
        assert [i.path for i in store.images()] == [outputs / "fine.png"]
    finally:
        store.close()
    assert victim.read_bytes() == b"not the app's"


def test_restored_files_get_the_apps_modes_and_temporary_members_are_skipped(
    cli: Cli, config_file: Path, tmp_path: Path
) -> None:
    def member(name: str, mode: int) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = 4, mode, int(time.time()) - 60
        return info

    (tmp_path / "archives").mkdir()
    archive = archive_of(
        tmp_path / "archives" / "modes.tar.gz",
        {
            "outputs/a.png": member("outputs/a.png", 0o6777),
            "logs/app.jsonl.3": member("logs/app.jsonl.3", 0o666),
            "exports/chat.md": member("exports/chat.md", 0o644),
            "outputs/.tmp-half.png": member("outputs/.tmp-half.png", 0o644),
        },
    )
    result = cli.run("restore", str(archive), "--yes")
    assert result.returncode == EXIT_OK, result.stderr
    umask = os.umask(0o022)
    os.umask(umask)
    assert (tmp_path / "outputs" / "a.png").stat().st_mode & 0o7777 == 0o644 & ~umask
    assert (tmp_path / "logs" / "app.jsonl.3").stat().st_mode & 0o7777 == 0o600
    assert (tmp_path / "exports" / "chat.md").stat().st_mode & 0o7777 == 0o600
    assert not (tmp_path / "outputs" / ".tmp-half.png").exists()
    assert "skipped 1 temporary file(s)" in result.stdout


def test_restore_keeps_the_live_log_and_puts_the_archived_one_beside(
    cli: Cli, data: Path, tmp_path: Path
) -> None:
    archive = make_backup(cli)
    log = tmp_path / "logs" / "app.jsonl"
    with log.open("a", encoding="utf-8") as f:
        f.write('{"message": "written after the backup"}\n')
    result = cli.run("restore", str(archive), "--yes")
    assert result.returncode == EXIT_OK, result.stderr
    assert "written after the backup" in log.read_text(encoding="utf-8")
    (beside,) = (tmp_path / "logs").glob("app.jsonl.restored*")
    assert beside.read_text(encoding="utf-8").startswith('{"message": "then"}\n')
    assert "written after the backup" not in beside.read_text(encoding="utf-8")
    assert "(1 beside the file already there, as *.restored)" in result.stdout


@pytest.mark.parametrize(
    ("where", "what"),
    [
        ("data/llm-pessoal.db", "the database"),
        ("outputs/backup.tar.gz", "inside [paths] outputs"),
        ("logs/backup.tar.gz", "inside [paths] logs"),
    ],
)
def test_restore_refuses_an_archive_inside_what_it_replaces(
    cli: Cli, data: Path, tmp_path: Path, where: str, what: str
) -> None:
    archive = make_backup(cli)
    target = tmp_path / where
    shutil.copyfile(archive, target)
    before = snapshot(tmp_path)
    result = cli.run("restore", str(target), "--yes")
    assert result.returncode == EXIT_USAGE
    line = one_line_error(result)
    assert f"the archive is {what}" in line and "nothing was restored" in line
    assert snapshot(tmp_path) == before


def _wait_for_prompt(proc: subprocess.Popen[bytes], prompt: bytes, timeout: float = 30) -> bytes:
    """What the process wrote on stderr up to ``prompt`` (read as it comes)."""
    assert proc.stderr is not None
    seen = b""
    deadline = time.monotonic() + timeout
    while prompt not in seen:
        left = deadline - time.monotonic()
        assert left > 0, f"no {prompt!r} in {seen!r}"
        ready, _, _ = select.select([proc.stderr], [], [], left)
        if ready:
            chunk = os.read(proc.stderr.fileno(), 65536)
            assert chunk, f"stderr closed before {prompt!r}: {seen!r}"
            seen += chunk
    return seen


def test_restore_applies_the_archive_it_checked_and_shows_the_manifest_as_text(
    cli: Cli, data: Path, tmp_path: Path
) -> None:
    import pty

    (tmp_path / "archives").mkdir()
    hostile = "0.1\x1b]52;c;SGVsbG8=\x07\x1b]0;owned\x07\x9b2J"
    archive = archive_of(
        tmp_path / "archives" / "checked.tar.gz",
        {"outputs/checked.png": b"checked"},
        version=hostile,
        created_at="2026\x1b[2J",
    )
    swapped = archive_of(
        tmp_path / "archives" / "swapped.tar.gz", {"outputs/unchecked.png": b"never checked"}
    )
    leader, follower = pty.openpty()
    try:
        proc = subprocess.Popen(
            cli.command("restore", str(archive)),
            cwd=cli.cwd,
            env=cli.environment(),
            stdin=follower,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        asked = _wait_for_prompt(proc, b"Go on? [y/N]")
        os.replace(swapped, archive)  # another file at the path once the user says yes
        os.write(leader, b"y\n")
        out, rest = proc.communicate(timeout=30)
    finally:
        os.close(leader)
        os.close(follower)
    err = asked + rest
    assert proc.returncode == EXIT_OK, err
    assert (tmp_path / "outputs" / "checked.png").read_bytes() == b"checked"
    assert not (tmp_path / "outputs" / "unchecked.png").exists()
    # the manifest's fields are shown, never interpreted by the terminal
    for raw in (b"\x1b", b"\x07", "\x9b".encode()):
        assert raw not in err and raw not in out
    assert "made 2026␛[2J by llm-pessoal 0.1␛]52;c;SGVsbG8=␇".encode() in err


def test_restore_help_lists_every_exit_code(cli: Cli, config_file: Path) -> None:
    for command in ("backup", "restore", "clean"):
        text = cli.run(command, "--help").stdout
        assert "exit codes:" in text
        for code in ("0", "1", "2", "3", "130"):
            assert f"\n  {code} " in text, (command, code)
    assert "database held by the app" in " ".join(cli.run("restore", "--help").stdout.split())


# -- clean ------------------------------------------------------------------------------


def test_clean_cache_leaves_what_the_hub_did_not_make(
    cli: Cli, make_config: MakeConfig, tmp_path: Path
) -> None:
    system = tmp_path / "system"  # a folder like /etc, named as the cache by mistake
    (system / "ssl").mkdir(parents=True)
    (system / "passwd").write_text("root:x:0:0\n", encoding="utf-8")
    (system / "ssl" / "cert.pem").write_text("cert\n", encoding="utf-8")
    (system / "hub").write_text("a file, not the hub's folder\n", encoding="utf-8")
    make_config(paths={"cache": str(system)})
    before = snapshot(tmp_path)

    for args in (("--dry-run",), ()):
        result = cli.run("clean", "--cache", *args)
        assert (result.returncode, result.stdout) == (EXIT_OK, "nothing to remove\n")
        assert result.stderr.splitlines() == [
            f"llm-pessoal: left alone in {system}: hub, passwd, ssl (not made by llm-pessoal "
            "or the Hugging Face hub)"
        ]
    assert snapshot(tmp_path) == before


def test_clean_help_shows_no_default_age(cli: Cli, config_file: Path) -> None:
    text = cli.run("clean", "--help").stdout
    assert "(7d)" not in text and "(30d)" not in text
    assert "no default age" in text
    assert "e.g. 7d" in text and "e.g. 30d" in text
    assert cli.run("clean").returncode == EXIT_USAGE  # and indeed it needs one


def test_clean_refuses_a_planned_path_that_left_its_folder(
    config_file: Path, tmp_path: Path
) -> None:
    from engines.clean import Removal, clean
    from engines.config import load_settings

    settings = load_settings(config_file, env={})
    outputs = tmp_path / "outputs"
    (outputs / "sub").mkdir(parents=True)
    old = outputs / "sub" / "old.png"
    old.write_bytes(b"old")
    plan = [Removal("image", old, 3)]
    # between the plan and the removal, the folder becomes a link to somewhere else
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "old.png").write_bytes(b"someone else's")
    shutil.rmtree(outputs / "sub")
    (outputs / "sub").symlink_to(elsewhere)
    summary = clean(settings, plan)
    assert summary.removed == []
    assert (elsewhere / "old.png").read_bytes() == b"someone else's"
    (problem,) = summary.problems
    assert f"{old}: not inside [paths] outputs {outputs}" in problem


# -- private files ----------------------------------------------------------------------


def test_rotated_logs_are_private(tmp_path: Path) -> None:
    from engines.logs import setup_logging

    umask = os.umask(0o022)
    root = logging.getLogger()
    level = root.level
    try:
        assert setup_logging(tmp_path / "logs", "INFO") is None
        (handler,) = [h for h in root.handlers if getattr(h, "_llm_pessoal", False)]
        logging.getLogger("test").info("a prompt")
        assert isinstance(handler, logging.handlers.RotatingFileHandler)
        handler.doRollover()
        logging.getLogger("test").info("another prompt")
        handler.doRollover()
        logging.getLogger("test").info("a third prompt")
    finally:
        os.umask(umask)
        root.setLevel(level)
        for h in list(root.handlers):
            if getattr(h, "_llm_pessoal", False):
                root.removeHandler(h)
                h.close()
    files = sorted((tmp_path / "logs").iterdir())
    assert [f.name for f in files] == ["app.jsonl", "app.jsonl.1", "app.jsonl.2"]
    assert {f.name: f.stat().st_mode & 0o777 for f in files} == dict.fromkeys(
        ["app.jsonl", "app.jsonl.1", "app.jsonl.2"], 0o600
    )


# -- the gallery's Delete ---------------------------------------------------------------


async def test_gallery_delete_names_the_full_path_and_refuses_one_outside_outputs(
    config_file: Path, tmp_path: Path
) -> None:
    from textual.widgets import Label
    from tui_helpers import make_app, wait_for

    from tui.screens.gallery import GalleryScreen
    from tui.widgets.dialogs import ConfirmDialog
    from tui.widgets.gallery import ThumbnailGrid

    victim = tmp_path / "victim.png"  # a row a restored database could hold
    victim.write_bytes(b"not the app's")
    store = Store.open(tmp_path / "data" / "llm-pessoal.db")
    try:
        store.add_image(victim, PARAMS, 1.0)
    finally:
        store.close()
    app = make_app(config_file, start_screen="image")
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("ctrl+b")
        await wait_for(pilot, lambda: isinstance(app.screen, GalleryScreen), what="the gallery")
        grid = app.screen.query_one(ThumbnailGrid)
        await wait_for(pilot, lambda: grid.current() is not None, what="its page")
        await pilot.press("d")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmDialog), what="the question")
        question = str(app.screen.query_one(".dialog-title", Label).content)
        assert question == f"Move {victim} to the trash?"
        await pilot.press("y")
        await wait_for(pilot, lambda: not isinstance(app.screen, ConfirmDialog))
        await wait_for(pilot, lambda: app.notices, what="a notification")
        (note,) = [n.message for n in app.notices]
        assert note.startswith(f"Not deleted: {victim}: not inside [paths] outputs")
    assert victim.read_bytes() == b"not the app's"
