"""``backup``, ``restore`` and ``clean``: real files in tmp_path, real SQLite, the CLI as a
real subprocess (the ``cli`` fixture)."""

from __future__ import annotations

import gzip
import io
import json
import os
import pty
import re
import shutil
import sqlite3
import subprocess
import tarfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from engines.backup import DATABASE_MEMBER
from engines.chat_types import ChatOptions
from engines.clean import parse_duration
from engines.images import ImageParameters
from engines.store import Store
from engines.units import human_bytes

if TYPE_CHECKING:
    from conftest import Cli, MakeConfig, write_toml
else:
    try:
        from conftest import write_toml
    except ImportError:
        from tests.conftest import write_toml
    Cli = MakeConfig = Any

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2
DAY = 86400
PARAMS = ImageParameters("a lighthouse", "", 64, 64, 4, 7.5, 7, "Euler a", "tiny")
OLD = time.time() - 30 * DAY


@pytest.fixture
def data(tmp_path: Path, config_file: Path) -> Path:
    """A filled-in data set under tmp_path: a conversation, three indexed images (one in a
    subfolder), logs with a rotation, an export; returns the config file."""
    outputs = tmp_path / "outputs"
    (outputs / "sub").mkdir(parents=True)
    store = Store.open(tmp_path / "data" / "llm-pessoal.db")
    try:
        conv = store.create_conversation("llama3.2:latest", ChatOptions(), "Reverse a string")
        store.add_message(conv.id, "user", "How do I reverse a string?")
        store.add_message(conv.id, "assistant", "text[::-1]")
        for i, name in enumerate(("one.png", "two.png", "sub/three.png")):
            path = outputs / name
            path.write_bytes(b"\x89PNG fake " + bytes([i]) * 500)
            store.add_image(path, PARAMS, 1.0)
    finally:
        store.close()
    (tmp_path / "logs").mkdir(exist_ok=True)
    (tmp_path / "logs" / "app.jsonl").write_text('{"message": "now"}\n', encoding="utf-8")
    (tmp_path / "logs" / "app.jsonl.1").write_text('{"message": "before"}\n', encoding="utf-8")
    (tmp_path / "exports").mkdir()
    (tmp_path / "exports" / "reverse.md").write_text("# Reverse a string\n", encoding="utf-8")
    return config_file


def members(archive: Path) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(archive, "r:gz") as tar:
        return {m.name: m for m in tar.getmembers()}


def read_member(archive: Path, name: str) -> bytes:
    with tarfile.open(archive, "r:gz") as tar:
        f = tar.extractfile(name)
        assert f is not None
        return f.read()


def backup(cli: Cli, *args: str) -> Path:
    result = cli.run("backup", *args)
    assert (result.returncode, result.stderr) == (EXIT_OK, ""), result.stderr
    (line,) = result.stdout.splitlines()
    match = re.fullmatch(r"(.+\.tar\.gz) \(([\d.]+ (?:B|KB|MB))\)", line)
    assert match, line
    return Path(match[1])


def tree(root: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under root (links as their target text), with content and mtime; the
    log the CLI itself writes is left out. The database files are only looked at, never
    opened: closing a file releases every POSIX lock this process holds on it, the lock of
    an open :class:`Store` included."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if rel == "logs/app.jsonl" or rel.startswith(("home/", "archives/")):
            continue
        if path.is_symlink():
            out[rel] = (os.readlink(path).encode(), 0)
        elif path.is_file() and rel.startswith("data/"):
            st = path.stat()
            out[rel] = (f"{st.st_size} bytes, {st.st_mtime_ns}".encode(), int(st.st_mtime))
        elif path.is_file():
            out[rel] = (path.read_bytes(), int(path.stat().st_mtime))
    return out


def without(files: dict[str, Any], *prefixes: str) -> dict[str, Any]:
    return {k: v for k, v in files.items() if not k.startswith(prefixes)}


def stored_paths(db: Path) -> set[Path]:
    store = Store.open(db)
    try:
        return {image.path for image in store.images()}
    finally:
        store.close()


def run_on_terminal(cli: Cli, answer: bytes, *args: str) -> tuple[int, str, str]:
    """Run the CLI with a terminal on standard input that types ``answer``."""
    leader, follower = pty.openpty()
    try:
        proc = subprocess.Popen(
            cli.command(*args),
            cwd=cli.cwd,
            env=cli.environment(),
            stdin=follower,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        os.write(leader, answer)
        out, err = proc.communicate(timeout=30)
    finally:
        os.close(leader)
        os.close(follower)
    return proc.returncode, out.decode(), err.decode()


# -- backup ----------------------------------------------------------------------------


def test_backup_holds_images_database_logs_config_and_a_manifest(
    cli: Cli, data: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "elsewhere.png"
    outside.write_bytes(b"not ours")
    (tmp_path / "outputs" / "link.png").symlink_to(outside)
    (tmp_path / "outputs" / ".tmp-half-written.png").write_bytes(b"half")

    archive = backup(cli)
    assert archive.parent == tmp_path
    assert re.fullmatch(r"llm-pessoal-backup-\d{8}-\d{6}\.tar\.gz", archive.name)
    assert archive.stat().st_mode & 0o777 == 0o600  # the database inside is private
    assert not list(tmp_path.glob(".tmp-*"))
    names = set(members(archive))
    assert names == {
        "manifest.json",
        "config.toml",
        DATABASE_MEMBER,
        "outputs/one.png",
        "outputs/two.png",
        "outputs/sub/three.png",
        "logs/app.jsonl",
        "logs/app.jsonl.1",
        "exports/reverse.md",
    }
    for name in ("outputs/sub/three.png", "logs/app.jsonl.1", "exports/reverse.md"):
        assert read_member(archive, name) == (tmp_path / name).read_bytes()
    assert read_member(archive, "config.toml") == data.read_bytes()
    assert all(m.isfile() for m in members(archive).values())

    manifest = json.loads(read_member(archive, "manifest.json"))
    assert manifest["app"] == "llm-pessoal" and manifest["format"] == 1
    assert manifest["version"] and manifest["created_at"].endswith("+00:00")
    assert manifest["contents"]["outputs"] == {"files": 3, "bytes": 3 * 510}
    assert manifest["contents"]["logs"]["files"] == 2
    assert "database" in manifest["contents"] and "config" in manifest["contents"]
    assert manifest["paths"]["outputs"] == str(tmp_path / "outputs")
    assert manifest["paths"]["database"] == str(tmp_path / "data" / "llm-pessoal.db")
    assert manifest["paths"]["config"] == str(data)

    # --out: a folder gets the default name; a file name is used as given
    (tmp_path / "archives").mkdir()
    assert backup(cli, "--out", "archives").parent == tmp_path / "archives"
    named = backup(cli, "--out", "archives/mine.tar.gz")
    assert named == tmp_path / "archives" / "mine.tar.gz"
    assert set(members(named)) == names

    result = cli.run("backup", "--out", "missing/x.tar.gz")
    assert result.returncode == EXIT_USAGE and "no such folder" in result.stderr


def test_backup_copies_the_database_consistently_during_a_write_transaction(
    cli: Cli, data: Path, tmp_path: Path
) -> None:
    db = tmp_path / "data" / "llm-pessoal.db"
    writer = sqlite3.connect(db, isolation_level=None)
    try:
        assert writer.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        writer.execute("PRAGMA wal_autocheckpoint = 0")  # committed frames stay in the WAL
        writer.execute("CREATE TABLE ledger (n INTEGER NOT NULL)")
        for n in range(200):
            writer.execute("INSERT INTO ledger VALUES (?)", (n,))
        writer.execute("BEGIN IMMEDIATE")  # and a write transaction left open
        writer.execute("INSERT INTO ledger VALUES (-1)")
        writer.execute("DELETE FROM messages")
        wal = Path(f"{db}-wal")
        assert wal.stat().st_size > 0

        # the live file alone does not have the committed rows: they are in the WAL
        naive = tmp_path / "naive.db"
        shutil.copyfile(db, naive)
        with sqlite3.connect(naive) as conn:
            assert not conn.execute(
                "SELECT name FROM sqlite_master WHERE name = 'ledger'"
            ).fetchall()
        naive.unlink()

        archive = backup(cli)
    finally:
        writer.execute("ROLLBACK")
        writer.close()

    copy = tmp_path / "from-archive.db"
    copy.write_bytes(read_member(archive, DATABASE_MEMBER))
    conn = sqlite3.connect(copy)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("SELECT count(*), min(n), max(n) FROM ledger").fetchone() == (
            200,
            0,
            199,
        )
        assert conn.execute("SELECT count(*) FROM messages").fetchone() == (2,)
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    finally:
        conn.close()


# -- restore ---------------------------------------------------------------------------


def test_restore_round_trip(cli: Cli, data: Path, tmp_path: Path) -> None:
    before = tree(tmp_path)
    archive = backup(cli)
    # lose everything but the config
    for folder in ("outputs", "data", "exports"):
        shutil.rmtree(tmp_path / folder)
    (tmp_path / "logs" / "app.jsonl.1").unlink()

    result = cli.run("restore", str(archive), "--yes")
    assert result.returncode == EXIT_OK, result.stderr
    assert "restored the database into" in result.stdout
    assert f"restored 3 file(s) into {tmp_path / 'outputs'}" in result.stdout
    assert "config: " in result.stdout and "already the same" in result.stdout
    # the same bytes and modification times (the database is checked through SQLite below);
    # the live log is kept, the archived one goes beside it
    after = tree(tmp_path)
    assert after.pop("logs/app.jsonl.restored")[0] == b'{"message": "now"}\n'
    assert without(after, "data/", archive.name) == without(before, "data/")
    store = Store.open(tmp_path / "data" / "llm-pessoal.db")
    try:
        (conv,) = store.conversations()
        assert [m.content for m in store.messages(conv.id)] == [
            "How do I reverse a string?",
            "text[::-1]",
        ]
        assert {i.path for i in store.images()} == {
            tmp_path / "outputs" / n for n in ("one.png", "two.png", "sub/three.png")
        }
    finally:
        store.close()
    assert not list((tmp_path / "data").glob(".tmp-*"))

    # again over the restored data: the previous database is kept beside the new one
    result = cli.run("restore", str(archive), "--yes")
    assert result.returncode == EXIT_OK, result.stderr
    assert "(3 already there)" in result.stdout
    assert len(list((tmp_path / "data").glob("llm-pessoal.db.before-restore-*"))) == 1


def test_restore_elsewhere_moves_the_gallery_with_the_images(
    cli: Cli, data: Path, tmp_path: Path
) -> None:
    archive = backup(cli)
    other = tmp_path / "other"
    other.mkdir()
    config = write_toml(
        other / "config.toml",
        {"paths": {"outputs": "pics", "logs": "logs", "database": "db/app.db"}},
    )
    ours = config.read_bytes()
    result = cli.run("--config", str(config), "restore", str(archive), "--yes")
    assert (other / "pics" / "sub" / "three.png").read_bytes() == (
        tmp_path / "outputs" / "sub" / "three.png"
    ).read_bytes()
    assert stored_paths(other / "db" / "app.db") == {
        other / "pics" / n for n in ("one.png", "two.png", "sub/three.png")
    }
    # the archived config would move every folder away from where the data were restored:
    # --yes without a terminal to confirm on leaves this config in place, with the other beside
    assert result.returncode == EXIT_FAIL
    (line,) = result.stderr.splitlines()
    assert "config: not put in place: it moves [paths] outputs, logs, database" in line
    assert config.read_bytes() == ours
    assert (other / "config.toml.restored").read_bytes() == data.read_bytes()
    assert not list(other.glob("config.toml.before-restore-*"))

    # on a terminal, --yes asks, naming where each folder would go; "y" replaces it
    code, out, err = run_on_terminal(
        cli, b"y\n", "--config", str(config), "restore", str(archive), "--yes"
    )
    assert code == EXIT_OK, err
    assert f"puts [paths] outputs at {tmp_path / 'outputs'}, not {other / 'pics'}" in err
    assert "Replace the config with it? [y/N]" in err
    assert f"config: restored into {config}" in out
    assert config.read_bytes() == data.read_bytes()
    assert list(other.glob("config.toml.before-restore-*"))


def test_restore_on_a_terminal_asks_and_keeps_newer_files_and_the_config(
    cli: Cli, data: Path, tmp_path: Path
) -> None:
    archive = backup(cli)
    one = tmp_path / "outputs" / "one.png"
    one.write_bytes(b"redrawn since")  # newer than the archived one
    (tmp_path / "outputs" / "two.png").unlink()
    config_text = data.read_text(encoding="utf-8")
    data.write_text(config_text + "\n[ui]\nscreen = 'image'\n", encoding="utf-8")
    edited = data.read_bytes()

    code, out, err = run_on_terminal(cli, b"n\n", "restore", str(archive))
    assert (code, out) == (EXIT_FAIL, "")
    assert "Go on? [y/N]" in err and "nothing was restored" in err
    assert not (tmp_path / "outputs" / "two.png").exists()

    code, out, err = run_on_terminal(cli, b"y\n", "restore", str(archive))
    assert code == EXIT_OK, err
    assert "the database ->" in err and "config.toml ->" in err
    assert one.read_bytes() == b"redrawn since"  # newer: kept
    assert (tmp_path / "outputs" / "two.png").exists()  # missing: restored
    assert "1 newer kept" in out
    assert data.read_bytes() == edited  # the user's config is never silently replaced
    restored = tmp_path / "config.toml.restored"
    assert restored.read_text(encoding="utf-8") == config_text
    assert f"config: written to {restored}" in out


def test_restore_without_a_terminal_needs_yes(cli: Cli, data: Path, tmp_path: Path) -> None:
    archive = backup(cli)
    shutil.rmtree(tmp_path / "outputs")
    result = cli.run("restore", str(archive))
    assert result.returncode == EXIT_USAGE
    assert "--yes" in result.stderr and "nothing was restored" in result.stderr
    assert not (tmp_path / "outputs").exists()


def test_restore_refuses_a_database_in_use(cli: Cli, data: Path, tmp_path: Path) -> None:
    archive = backup(cli)
    shutil.rmtree(tmp_path / "outputs")
    db = tmp_path / "data" / "llm-pessoal.db"
    running = Store.open(db)  # as the app holds it
    try:
        running.create_conversation("m", ChatOptions(), "made after the backup")
        before = tree(tmp_path)
        result = cli.run("restore", str(archive), "--yes")
        assert result.returncode == EXIT_FAIL
        assert "in use by a running llm-pessoal" in result.stderr
        assert "nothing was restored" in result.stderr
        assert tree(tmp_path) == before
        assert len(running.conversations()) == 2  # the app goes on undisturbed
    finally:
        running.close()
    result = cli.run("restore", str(archive), "--yes")  # closed: now it may
    assert result.returncode == EXIT_OK, result.stderr
    assert (tmp_path / "outputs" / "one.png").exists()
    store = Store.open(db)
    try:
        assert [c.title for c in store.conversations()] == ["Reverse a string"]
    finally:
        store.close()


def _hostile(path: Path, bad: tarfile.TarInfo, bad_data: bytes = b"") -> Path:
    """A real-looking backup (manifest, an image) with one bad member after the good ones."""
    manifest = json.dumps({"format": 1, "app": "llm-pessoal", "version": "0.1.0"}).encode()
    with tarfile.open(path, "w:gz") as tar:
        for name, blob in (("manifest.json", manifest), ("outputs/fine.png", b"fine")):
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
        tar.addfile(bad, io.BytesIO(bad_data) if bad.isfile() else None)
    return path


def _file(name: str, size: int = 4) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    return info


def _link(name: str, kind: bytes, target: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


def _device(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
    return info


def _huge(path: Path) -> Path:
    """A member declaring a terabyte that the (tiny) archive cannot hold."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        tar.addfile(_file("outputs/fine.png"), io.BytesIO(b"fine"))
    header = _file("outputs/huge.png", 10**12).tobuf(tarfile.GNU_FORMAT)
    path.write_bytes(gzip.compress(raw.getvalue()[:1024] + header + b"x" * 4096))
    return path


@pytest.mark.parametrize(
    ("label", "build", "named"),
    [
        ("absolute path", lambda p: _hostile(p, _file("/tmp/evil.png"), b"evil"), "/tmp/evil.png"),
        ("dot-dot", lambda p: _hostile(p, _file("../x"), b"evil"), "../x"),
        (
            "dot-dot inside",
            lambda p: _hostile(p, _file("outputs/../../x"), b"evil"),
            "outputs/../../x",
        ),
        (
            "symlink",
            lambda p: _hostile(p, _link("outputs/l.png", tarfile.SYMTYPE, "/etc")),
            "l.png",
        ),
        (
            "hard link",
            lambda p: _hostile(p, _link("outputs/h.png", tarfile.LNKTYPE, "outputs/fine.png")),
            "h.png",
        ),
        ("device", lambda p: _hostile(p, _device("outputs/null")), "outputs/null"),
        ("unknown top", lambda p: _hostile(p, _file("bin/evil"), b"evil"), "bin/evil"),
        ("huge", _huge, "outputs/huge.png"),
        (
            "damaged database",
            lambda p: _hostile(p, _file(DATABASE_MEMBER, 4096), b"not SQLite" * 409 + b"xxxxxx"),
            DATABASE_MEMBER,
        ),
    ],
)
def test_a_hostile_archive_is_refused_with_nothing_written(
    cli: Cli, data: Path, tmp_path: Path, label: str, build: Any, named: str
) -> None:
    (tmp_path / "archives").mkdir()
    archive = build(tmp_path / "archives" / "hostile.tar.gz")
    before = tree(tmp_path)
    result = cli.run("restore", str(archive), "--yes")
    assert result.returncode == EXIT_USAGE, (label, result.stderr)
    assert repr(named) in result.stderr or named in result.stderr, result.stderr
    assert "nothing was restored" in result.stderr
    assert "Traceback" not in result.stderr
    assert tree(tmp_path) == before
    assert not (tmp_path / "outputs" / "fine.png").exists()
    assert not (tmp_path.parent / "x").exists()


def test_not_a_backup_and_a_damaged_one_are_refused(cli: Cli, data: Path, tmp_path: Path) -> None:
    before = tree(tmp_path)
    junk = tmp_path / "archives" / "junk.tar.gz"
    junk.parent.mkdir()
    junk.write_bytes(b"this is not gzip")
    result = cli.run("restore", str(junk), "--yes")
    assert result.returncode == EXIT_USAGE and "not a .tar.gz backup" in result.stderr

    result = cli.run("restore", str(tmp_path / "archives" / "none.tar.gz"), "--yes")
    assert result.returncode == EXIT_USAGE and "no such file" in result.stderr

    archive = backup(cli, "--out", "archives/good.tar.gz")
    cut = tmp_path / "archives" / "cut.tar.gz"
    blob = archive.read_bytes()
    cut.write_bytes(blob[: len(blob) * 2 // 3])
    shutil.rmtree(tmp_path / "outputs")
    before = tree(tmp_path)
    result = cli.run("restore", str(cut), "--yes")
    assert result.returncode == EXIT_USAGE and "damaged" in result.stderr, result.stderr
    assert tree(tmp_path) == before


# -- clean -----------------------------------------------------------------------------


def test_clean_by_age_dry_run_then_for_real(cli: Cli, data: Path, tmp_path: Path) -> None:
    outputs, logs = tmp_path / "outputs", tmp_path / "logs"
    old_images = [outputs / "one.png", outputs / "sub" / "three.png"]
    for path in [*old_images, outputs / ".gitkeep", outputs / "notes.txt", logs / "app.jsonl.1"]:
        path.touch()
        os.utime(path, (OLD, OLD))
    (logs / "app.jsonl.2").write_text("{}\n", encoding="utf-8")  # rotated, but recent
    os.utime(logs / "app.jsonl", (OLD, OLD))  # the live log is never removed
    outside = tmp_path / "kept-outside.png"
    outside.write_bytes(b"keep me")
    os.utime(outside, (OLD, OLD))
    (outputs / "link.png").symlink_to(outside)
    sizes = {p: p.stat().st_size for p in [*old_images, logs / "app.jsonl.1"]}

    before = tree(tmp_path)
    dry = cli.run("clean", "--images-older-than", "7d", "--logs-older-than", "2w", "--dry-run")
    assert (dry.returncode, dry.stderr) == (EXIT_OK, "")
    assert tree(tmp_path) == before
    listed = dry.stdout.splitlines()
    assert sorted(listed[:-1]) == sorted(
        f"would remove {'log' if p.parent == logs else 'image'} {p} ({n} B)"
        for p, n in sizes.items()
    )
    total = human_bytes(sum(sizes.values()))
    assert listed[-1] == f"would free {total} (3 item(s)); nothing was removed"

    real = cli.run("clean", "--images-older-than", "7d", "--logs-older-than", "30d")
    assert (real.returncode, real.stderr) == (EXIT_OK, ""), real.stderr
    lines = real.stdout.splitlines()
    assert sorted(lines[:-1]) == sorted(
        line.replace("would remove", "removed") for line in listed[:-1]
    )
    assert lines[-1] == f"freed {total} (3 item(s)); 2 image(s) left the gallery"
    for path in sizes:
        assert not path.exists()
    for kept in ("two.png", ".gitkeep", "notes.txt", "link.png"):
        assert (outputs / kept).exists() or (outputs / kept).is_symlink()
    assert outside.read_bytes() == b"keep me"
    assert (logs / "app.jsonl").exists() and (logs / "app.jsonl.2").exists()
    assert stored_paths(tmp_path / "data" / "llm-pessoal.db") == {outputs / "two.png"}

    again = cli.run("clean", "--images-older-than", "7d")
    assert (again.returncode, again.stdout) == (EXIT_OK, "nothing to remove\n")


def test_clean_cache_empties_it_without_following_links(
    cli: Cli, data: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    (cache / "hub" / "models--x" / "blobs").mkdir(parents=True)
    (cache / "hub" / "models--x" / "blobs" / "weights").write_bytes(b"w" * 3000)
    (cache / "token").write_bytes(b"t" * 10)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "precious").write_bytes(b"p")
    (cache / "hub" / "models--x" / "link").symlink_to(elsewhere)
    (cache / "outlink").symlink_to(elsewhere)

    dry = cli.run("clean", "--cache", "--dry-run", env={"HF_HOME": str(elsewhere)})
    assert dry.returncode == EXIT_OK
    assert dry.stdout.splitlines() == [
        f"would remove cache {cache / 'hub' / 'models--x'} (3.0 KB)",
        "would free 3.0 KB (1 item(s)); nothing was removed",
    ]
    assert f"HF_HOME={elsewhere} is not [paths] cache" in dry.stderr
    assert f"left alone in {cache}: outlink, token (not made by" in dry.stderr

    result = cli.run("clean", "--cache")
    assert result.returncode == EXIT_OK, result.stderr
    assert f"removed cache {cache / 'hub' / 'models--x'} (3.0 KB)" in result.stdout
    assert re.search(r"^freed 3\.\d KB \(1 item\(s\)\)$", result.stdout, re.MULTILINE)
    assert sorted(p.name for p in cache.rglob("*")) == ["hub", "outlink", "token"]
    assert (elsewhere / "precious").read_bytes() == b"p"


def test_clean_cache_refuses_a_cache_that_holds_the_data(
    cli: Cli, make_config: MakeConfig, tmp_path: Path
) -> None:
    make_config(paths={"cache": str(tmp_path)})
    before = tree(tmp_path)
    result = cli.run("clean", "--cache")
    assert result.returncode == EXIT_FAIL
    assert "refusing to empty the cache" in result.stderr
    assert tree(tmp_path) == before


def test_clean_attachments_removes_only_copies_no_message_uses(
    cli: Cli, config_file: Path, tmp_path: Path
) -> None:
    from PIL import Image

    from engines.attachments import load_image

    folder = tmp_path / "data" / "attachments"
    copies = []
    for i, colour in enumerate(("red", "green", "blue")):
        source = tmp_path / f"photo{i}.png"
        Image.new("RGB", (8, 8), colour).save(source)
        copies.append(load_image(str(source), folder, 1 << 20))
    used, orphan, fresh = copies
    store = Store.open(tmp_path / "data" / "llm-pessoal.db")
    try:
        conv = store.create_conversation("llava:7b", ChatOptions(), "What is this?")
        store.add_message(conv.id, "user", "what is it?", images=[(used.name, used.path, 1)])
        gone = store.create_conversation("llava:7b", ChatOptions(), "Deleted later")
        store.add_message(gone.id, "user", "and this?", images=[(orphan.name, orphan.path, 1)])
        store.delete(gone.id)
    finally:
        store.close()
    for copy in (used, orphan):
        os.utime(copy.path, (OLD, OLD))  # ``fresh`` may be a prompt being written: kept

    dry = cli.run("clean", "--attachments", "--dry-run")
    assert (dry.returncode, dry.stderr) == (EXIT_OK, "")
    assert dry.stdout.splitlines()[0] == (
        f"would remove attachment {orphan.path} ({human_bytes(orphan.path.stat().st_size)})"
    )
    real = cli.run("clean", "--attachments")
    assert (real.returncode, real.stderr) == (EXIT_OK, ""), real.stderr
    assert sorted(folder.iterdir()) == sorted([used.path, fresh.path])


@pytest.mark.parametrize("value", ["7", "7x", "d", "-1d", "0d", "1.5d", "7 days"])
def test_a_bad_duration_names_the_option_and_the_forms(
    cli: Cli, config_file: Path, value: str
) -> None:
    result = cli.run("clean", f"--logs-older-than={value}")
    assert result.returncode == EXIT_USAGE
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"llm-pessoal: --logs-older-than {value!r}: expected")
    assert "30m, 12h, 7d or 2w" in line


@pytest.mark.parametrize("args", [(), ("--dry-run",)])
def test_clean_with_no_option_says_what_it_could_do(
    cli: Cli, config_file: Path, tmp_path: Path, args: tuple[str, ...]
) -> None:
    result = cli.run("clean", *args)
    assert (result.returncode, result.stdout) == (EXIT_USAGE, "")
    for words in ("--images-older-than", "--logs-older-than", "--cache", str(tmp_path / "cache")):
        assert words in result.stderr


def test_parse_duration() -> None:
    assert parse_duration("30m") == 1800
    assert parse_duration("12h") == 12 * 3600
    assert parse_duration("7d") == 7 * DAY
    assert parse_duration("2W") == 14 * DAY
    for bad in ("", "7", "0h", "1y", "h1"):
        with pytest.raises(ValueError, match="30m, 12h, 7d or 2w"):
            parse_duration(bad)
