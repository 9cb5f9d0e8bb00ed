"""Backup: one ``.tar.gz`` of the images, a consistent copy of the database (SQLite's
backup API, never the live file), the logs, the exports and the config file, with a
``manifest.json``; written atomically, and while the app runs.

The archive never lands on something the app keeps: an existing file is replaced only
when asked (``force``), and never the database (or its ``-wal``/``-shm``), the config
file, or anything inside the data folders.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import sqlite3
import stat
import tarfile
import tempfile
import urllib.parse
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from engines.config import PathSettings, Settings
from engines.files import PRIVATE_MODE, TEMP_PREFIX, files_under, fsync_dir, link_unique

log = logging.getLogger(__name__)

FORMAT = 1
APP = "llm-pessoal"
MANIFEST = "manifest.json"
CONFIG_MEMBER = "config.toml"
DATABASE_MEMBER = "data/llm-pessoal.db"
FOLDERS = ("outputs", "logs", "exports", "attachments")
"""Top-level folders of an archive; each maps to the ``[paths]`` key of the same name."""
DATABASE_SIDE_FILES = ("-wal", "-shm", "-journal")


class BackupError(Exception):
    """The backup cannot be written; the message says why. Nothing was changed."""


class BackupTargetRefused(BackupError):
    """``--out`` names a place the archive may not go (bad input: exit code 2)."""


@dataclass(frozen=True)
class BackupResult:
    path: Path
    size: int
    contents: dict[str, Any]
    skipped: list[str] = field(default_factory=list)
    """Files that vanished or could not be read while the archive was written."""


def now_stamp(now: datetime) -> str:
    return f"{now:%Y%m%d-%H%M%S}"


def default_backup_name(now: datetime) -> str:
    return f"llm-pessoal-backup-{now_stamp(now)}.tar.gz"


def kept_files(settings: Settings) -> dict[Path, str]:
    """The files the app keeps (the database and its side files, the config), resolved,
    each with the words that name it."""
    p = settings.paths
    db = p.database.resolve()
    kept = {db: "the database"}
    kept.update({Path(f"{db}{s}"): f"the database's {s[1:]} file" for s in DATABASE_SIDE_FILES})
    if settings.source is not None:
        kept[settings.source.resolve()] = "the config file"
    return kept


def data_folders(settings: Settings) -> dict[str, Path]:
    """The folders the app writes into, resolved, by their ``[paths]`` key."""
    p = settings.paths
    return {
        f.name: getattr(p, f.name).resolve() for f in fields(PathSettings) if f.name != "database"
    }


def kept_place(
    settings: Settings, path: Path, folders: tuple[str, ...] | None = None
) -> str | None:
    """What the app keeps at ``path`` (resolved), in words, or None when it keeps nothing
    there: the database, its side files, the config file, or the contents of a data
    folder (of those named by their ``[paths]`` key in ``folders``; default: all)."""
    real = path.resolve()
    what = kept_files(settings).get(real)
    if what:
        return what
    for key, folder in data_folders(settings).items():
        if folders is not None and key not in folders:
            continue
        if real == folder or real.is_relative_to(folder):
            return f"inside [paths] {key} ({folder})"
    return None


def _backup_target(
    settings: Settings, out: Path | None, now: datetime, cwd: Path, force: bool
) -> tuple[Path, bool]:
    """Where the archive goes, and whether that name is ours to pick (never replacing)."""
    if out is None:
        target, pick = cwd / default_backup_name(now), True
    else:
        out = out.expanduser()
        if not out.is_absolute():
            out = cwd / out
        if out.is_dir():
            target, pick = out / default_backup_name(now), True
        else:
            if not out.parent.is_dir():
                raise BackupTargetRefused(f"{out.parent}: no such folder for the backup")
            target, pick = out, False
    where = kept_place(settings, target)
    if where:
        raise BackupTargetRefused(
            f"{target}: refusing to write the backup there: it is {where}, which the app "
            "keeps; choose a file outside the data folders"
        )
    if not pick and os.path.lexists(target):
        st = target.stat() if target.exists() else target.lstat()
        if not stat.S_ISREG(st.st_mode):
            raise BackupTargetRefused(f"{target}: not a regular file; the backup is not written")
        if not force:
            raise BackupTargetRefused(
                f"{target}: the file exists; --force replaces it (or give another name)"
            )
    return target, pick


def snapshot_database(live: Path, dest: Path) -> bool:
    """Copy the database at ``live`` into ``dest`` with SQLite's backup API: a consistent
    snapshot of what was committed, whatever another connection is doing (an open write
    transaction, frames not yet checkpointed from the WAL). False when there is none."""
    if not live.is_file():
        return False
    uri = f"file:{urllib.parse.quote(str(live))}?mode=ro"
    try:
        src = sqlite3.connect(uri, uri=True, timeout=10)
    except sqlite3.Error as exc:
        raise BackupError(f"{live}: cannot open the database to copy it: {exc}") from None
    try:
        dst = sqlite3.connect(dest, isolation_level=None)
        try:
            src.backup(dst)
            dst.execute("PRAGMA journal_mode = DELETE")  # one self-contained file
        finally:
            dst.close()
    except sqlite3.Error as exc:
        raise BackupError(f"{live}: cannot copy the database: {exc}") from None
    finally:
        src.close()
    return True


def _add_file(
    tar: tarfile.TarFile, path: Path, arcname: str, mode: int | None = None
) -> int | None:
    """Add one file, its size read from the open file; None when it is gone or not a file."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            return None
        info = tarfile.TarInfo(arcname)
        info.size = st.st_size
        info.mtime = st.st_mtime  # a float: PAX keeps the fraction
        info.mode = (st.st_mode & 0o777) if mode is None else mode
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        tar.addfile(info, f)  # reads exactly info.size bytes, even if the file grows
    return st.st_size


def backup(
    settings: Settings,
    out: Path | None = None,
    *,
    force: bool = False,
    now: datetime | None = None,
    cwd: Path | None = None,
    version: str | None = None,
) -> BackupResult:
    """Write the backup archive; see the module's docstring."""
    now = now or datetime.now().astimezone()
    cwd = cwd or Path.cwd()
    target, pick_name = _backup_target(settings, out, now, cwd, force)
    if version is None:
        from engines.system import app_version

        version = app_version()
    p = settings.paths
    contents: dict[str, Any] = {}
    skipped: list[str] = []
    fd, tmp_name = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=".tar.gz", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        os.fchmod(fd, PRIVATE_MODE)  # the database inside is private to its owner
        with (
            os.fdopen(fd, "wb") as raw,
            tempfile.TemporaryDirectory(prefix=TEMP_PREFIX, dir=target.parent) as work,
        ):
            with tarfile.open(
                fileobj=raw, mode="w:gz", compresslevel=6, format=tarfile.PAX_FORMAT
            ) as tar:
                snapshot = Path(work) / "database.db"
                if snapshot_database(p.database, snapshot):
                    _add_file(tar, snapshot, DATABASE_MEMBER, mode=PRIVATE_MODE)
                    contents["database"] = {"bytes": snapshot.stat().st_size}
                for folder in FOLDERS:
                    root: Path = getattr(p, folder)
                    count = total = 0
                    for path, rel in files_under(root):
                        size = _add_file(tar, path, f"{folder}/{rel}")
                        if size is None:
                            skipped.append(str(path))
                            continue
                        count, total = count + 1, total + size
                    contents[folder] = {"files": count, "bytes": total}
                if settings.source is not None and settings.source.is_file():
                    size = _add_file(tar, settings.source, CONFIG_MEMBER)
                    if size is not None:
                        contents["config"] = {"bytes": size}
                manifest = {
                    "format": FORMAT,
                    "app": APP,
                    "version": version,
                    "created_at": now.astimezone(UTC).isoformat(timespec="seconds"),
                    "contents": contents,
                    "paths": {
                        **{f.name: str(getattr(p, f.name)) for f in fields(PathSettings)},
                        "config": str(settings.source) if settings.source else None,
                    },
                }
                data = json.dumps(manifest, indent=2).encode("utf-8") + b"\n"
                info = tarfile.TarInfo(MANIFEST)
                info.size, info.mtime, info.mode = len(data), int(now.timestamp()), 0o644
                tar.addfile(info, io.BytesIO(data))
            raw.flush()
            os.fsync(raw.fileno())
        if pick_name:
            target = link_unique(tmp, target)
        else:
            os.replace(tmp, target)
        fsync_dir(target.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    size = target.stat().st_size
    log.info("backup written", extra={"path": str(target), "bytes": size})
    return BackupResult(target, size, contents, skipped)
