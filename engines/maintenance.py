"""Maintenance: the specification's backup and clean-up, made safe.

- :func:`backup` writes one ``.tar.gz`` of the images, a consistent copy of the
  database (SQLite's backup API, never the live file), the logs, the exports and
  the config file, with a ``manifest.json``; atomically, and while the app runs.
- :func:`prepare_restore` checks every member of an archive before anything is
  written (names, types, sizes, the data itself, the database's integrity) and
  returns a :class:`RestorePlan` whose :meth:`~RestorePlan.apply` puts the files
  back: the database through a temporary file and a rename, only while no other
  program holds it; images and logs without replacing newer files unless asked;
  the config beside the current one unless asked.
- :func:`plan_clean` and :func:`clean` remove old images (and their gallery rows),
  old rotated logs and the model cache's contents, never following a link out of
  the configured folders.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
import re
import shutil
import sqlite3
import stat
import tarfile
import tempfile
import time
import tomllib
import urllib.parse
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Literal

from engines.config import ConfigError, PathSettings, Settings, settings_from_mapping
from engines.logs import LOG_FILE

log = logging.getLogger(__name__)

FORMAT = 1
APP = "llm-pessoal"
MANIFEST = "manifest.json"
CONFIG_MEMBER = "config.toml"
DATABASE_MEMBER = "data/llm-pessoal.db"
FOLDERS = ("outputs", "logs", "exports")
"""Top-level folders of an archive; each maps to the ``[paths]`` key of the same name."""
SMALL_MEMBER_MAX = 1024 * 1024
"""The most bytes the manifest or the config may have."""
GZIP_MAX_RATIO = 1100
"""Deflate expands at most about 1032 times: a member declaring more than this many
bytes per byte of the archive cannot be real."""
TEMP_PREFIX = ".tmp-"
CHUNK = 1024 * 1024

_DURATION = re.compile(r"\s*(\d+)\s*([mhdw])\s*", re.IGNORECASE)
_UNIT_SECONDS = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
DURATION_FORMS = "a whole number and a unit: 30m, 12h, 7d or 2w (minutes, hours, days, weeks)"
_ROTATED_LOG = re.compile(re.escape(LOG_FILE) + r"\.\d+")


class MaintenanceError(Exception):
    """The job cannot be done; the message says why, and that nothing was changed."""


class BadArchive(MaintenanceError):
    """The archive is not a usable llm-pessoal backup; nothing was written."""


class DatabaseBusy(MaintenanceError):
    """Another program (a running llm-pessoal) has the database open."""


def human_size(n: float) -> str:
    """``1.5 MB``: decimal units, as disks are sold."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError  # pragma: no cover


def _now_stamp(now: datetime) -> str:
    return f"{now:%Y%m%d-%H%M%S}"


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# -- backup ----------------------------------------------------------------------------


@dataclass(frozen=True)
class BackupResult:
    path: Path
    size: int
    contents: dict[str, Any]
    skipped: list[str] = field(default_factory=list)
    """Files that vanished or could not be read while the archive was written."""


def default_backup_name(now: datetime) -> str:
    return f"llm-pessoal-backup-{_now_stamp(now)}.tar.gz"


def _backup_target(out: Path | None, now: datetime, cwd: Path) -> tuple[Path, bool]:
    """Where the archive goes, and whether that name is ours to pick (never replace)."""
    if out is None:
        return cwd / default_backup_name(now), True
    out = out.expanduser()
    if not out.is_absolute():
        out = cwd / out
    if out.is_dir():
        return out / default_backup_name(now), True
    if not out.parent.is_dir():
        raise MaintenanceError(f"{out.parent}: no such folder for the backup")
    return out, False


def _files_under(root: Path) -> Iterator[tuple[Path, str]]:
    """Regular files under ``root`` (sorted, links never followed, temporary files left
    out) with their ``/``-separated names relative to it."""
    if not root.is_dir():
        return
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        here = Path(dirpath)
        for name in sorted(filenames):
            if name.startswith(TEMP_PREFIX):
                continue
            path = here / name
            with contextlib.suppress(OSError):
                if stat.S_ISREG(path.lstat().st_mode):
                    yield path, path.relative_to(root).as_posix()


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
        raise MaintenanceError(f"{live}: cannot open the database to copy it: {exc}") from None
    try:
        dst = sqlite3.connect(dest, isolation_level=None)
        try:
            src.backup(dst)
            dst.execute("PRAGMA journal_mode = DELETE")  # one self-contained file
        finally:
            dst.close()
    except sqlite3.Error as exc:
        raise MaintenanceError(f"{live}: cannot copy the database: {exc}") from None
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
    now: datetime | None = None,
    cwd: Path | None = None,
    version: str | None = None,
) -> BackupResult:
    """Write the backup archive; see the module's docstring."""
    now = now or datetime.now().astimezone()
    cwd = cwd or Path.cwd()
    target, pick_name = _backup_target(out, now, cwd)
    if version is None:
        from engines.system import app_version

        version = app_version()
    p = settings.paths
    contents: dict[str, Any] = {}
    skipped: list[str] = []
    fd, tmp_name = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=".tar.gz", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        os.fchmod(fd, 0o600)  # the database inside is private to its owner
        with (
            os.fdopen(fd, "wb") as raw,
            tempfile.TemporaryDirectory(prefix=TEMP_PREFIX, dir=target.parent) as work,
        ):
            with tarfile.open(
                fileobj=raw, mode="w:gz", compresslevel=6, format=tarfile.PAX_FORMAT
            ) as tar:
                snapshot = Path(work) / "database.db"
                if snapshot_database(p.database, snapshot):
                    _add_file(tar, snapshot, DATABASE_MEMBER, mode=0o600)
                    contents["database"] = {"bytes": snapshot.stat().st_size}
                for folder in FOLDERS:
                    root: Path = getattr(p, folder)
                    count = total = 0
                    for path, rel in _files_under(root):
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
                tar.addfile(info, _bytes_reader(data))
            raw.flush()
            os.fsync(raw.fileno())
        if pick_name:
            target = _link_unique(tmp, target)
        else:
            os.replace(tmp, target)
        _fsync_dir(target.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    size = target.stat().st_size
    log.info("backup written", extra={"path": str(target), "bytes": size})
    return BackupResult(target, size, contents, skipped)


def _bytes_reader(data: bytes) -> IO[bytes]:
    return io.BytesIO(data)


def _link_unique(tmp: Path, target: Path) -> Path:
    """Give ``tmp`` the name ``target`` (or ``-2``, ``-3``... when taken), never replacing."""
    base = target.name.removesuffix(".tar.gz")
    n = 1
    while True:
        candidate = target if n == 1 else target.with_name(f"{base}-{n}.tar.gz")
        try:
            os.link(tmp, candidate)
        except FileExistsError:
            n += 1
            continue
        except OSError:  # no hard links here: check, then rename
            if candidate.exists():
                n += 1
                continue
            os.replace(tmp, candidate)
            return candidate
        tmp.unlink()
        return candidate


# -- restore: checking the archive -----------------------------------------------------


def _member_problem(member: tarfile.TarInfo, limit: int) -> str | None:
    """Why ``member`` may not be restored, or None when it may."""
    name = member.name
    if not name:
        return "an empty name"
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return "a control character in its name"
    if name.startswith("/") or re.match(r"[A-Za-z]:", name):
        return "an absolute path"
    if "\\" in name:
        return "a backslash in its name"
    parts = name.removesuffix("/").split("/") if member.isdir() else name.split("/")
    if ".." in parts:
        return "a '..' in its path"
    if any(part in ("", ".") for part in parts):
        return "an empty or '.' part in its path"
    if member.issym() or member.islnk():
        return f"a link (to {member.linkname!r}), not a file"
    if not (member.type in (tarfile.REGTYPE, tarfile.AREGTYPE) or member.isdir()):
        return "a device, pipe or other special file, not a regular file"
    top = parts[0]
    allowed_files = (MANIFEST, CONFIG_MEMBER, DATABASE_MEMBER)
    if member.isdir():
        if top not in (*FOLDERS, "data") or (top == "data" and len(parts) > 1):
            return f"an unknown top-level name {top!r}"
        return None
    if not (name in allowed_files or (top in FOLDERS and len(parts) > 1)):
        known = ", ".join([*allowed_files, *(f"{f}/..." for f in FOLDERS)])
        return f"an unknown top-level name {top!r} (a backup holds {known})"
    if member.size < 0 or member.size > limit:
        return (
            f"a declared size of {human_size(member.size)}, more than this "
            f"{human_size(limit / GZIP_MAX_RATIO)} archive can hold"
        )
    if name in (MANIFEST, CONFIG_MEMBER) and member.size > SMALL_MEMBER_MAX:
        return f"a size of {human_size(member.size)}, too large for {name}"
    return None


def _read_all(tar: tarfile.TarFile, member: tarfile.TarInfo, sink: IO[bytes] | None) -> bytes:
    """Read a member's data to the end (into ``sink`` when given, else returned)."""
    f = tar.extractfile(member)
    if f is None:  # pragma: no cover - regular files always have data
        return b""
    chunks: list[bytes] = []
    got = 0
    with f:
        while chunk := f.read(CHUNK):
            got += len(chunk)
            if sink is not None:
                sink.write(chunk)
            else:
                chunks.append(chunk)
    if got != member.size:
        raise tarfile.ReadError("unexpected end of data")
    return b"".join(chunks)


_ARCHIVE_ERRORS = (tarfile.TarError, EOFError, zlib.error, OSError)


def _open_archive(archive: Path) -> tarfile.TarFile:
    try:
        return tarfile.open(archive, "r:gz")
    except FileNotFoundError:
        raise BadArchive(f"{archive}: no such file") from None
    except IsADirectoryError:
        raise BadArchive(f"{archive}: a folder, not a backup archive") from None
    except _ARCHIVE_ERRORS as exc:
        raise BadArchive(f"{archive}: not a .tar.gz backup ({exc}); nothing was restored") from None


def check_archive(archive: Path) -> list[tarfile.TarInfo]:
    """Every member's header checked (and the compressed stream read to its end), before
    anything is written. BadArchive names the first bad member."""
    limit = max(archive.stat().st_size, 1) * GZIP_MAX_RATIO if archive.is_file() else 0
    members: list[tarfile.TarInfo] = []
    seen: set[str] = set()
    with _open_archive(archive) as tar:
        last = "(the start)"
        try:
            for member in tar:
                problem = _member_problem(member, limit)
                if problem is None and member.name.removesuffix("/") in seen:
                    problem = "a second member of the same name"
                if problem:
                    raise BadArchive(
                        f"{archive}: member {member.name!r} is refused: {problem}; "
                        "nothing was restored"
                    )
                seen.add(member.name.removesuffix("/"))
                members.append(member)
                last = member.name
            assert tar.fileobj is not None
            while tar.fileobj.read(CHUNK):  # to the end: the gzip checksum is verified there
                pass
        except BadArchive:
            raise
        except _ARCHIVE_ERRORS as exc:
            raise BadArchive(
                f"{archive}: the archive is damaged after member {last!r} ({exc}); "
                "nothing was restored"
            ) from None
    if MANIFEST not in seen:
        raise BadArchive(
            f"{archive}: not an llm-pessoal backup (no {MANIFEST}); nothing was restored"
        )
    return members


def _check_manifest(archive: Path, data: bytes) -> dict[str, Any]:
    try:
        manifest = json.loads(data)
    except ValueError:
        manifest = None
    if not isinstance(manifest, dict) or manifest.get("app") != APP:
        raise BadArchive(
            f"{archive}: member {MANIFEST!r} is not an llm-pessoal manifest; nothing was restored"
        )
    if manifest.get("format") != FORMAT:
        raise BadArchive(
            f"{archive}: backup format {manifest.get('format')!r} is not one this version "
            f"reads ({FORMAT}); upgrade llm-pessoal; nothing was restored"
        )
    return manifest


def _check_database(archive: Path, path: Path, old_outputs: str | None, outputs: Path) -> None:
    """The restored database must be whole and known to this app; image rows are moved
    to the configured outputs folder when the backup came from another one."""
    from engines.store import MIGRATIONS

    problem = None
    try:
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            rows = conn.execute("PRAGMA integrity_check").fetchall()
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if rows != [("ok",)]:
                problem = "it is damaged: " + "; ".join(str(r[0]) for r in rows[:3])
            elif version > len(MIGRATIONS):
                problem = (
                    f"its schema ({version}) is newer than this app knows "
                    f"({len(MIGRATIONS)}); upgrade llm-pessoal"
                )
            elif old_outputs and old_outputs != str(outputs) and version >= 2:
                prefix = old_outputs.rstrip("/") + "/"
                conn.execute(
                    "UPDATE OR REPLACE images SET path = ? || substr(path, ?)"
                    " WHERE substr(path, 1, ?) = ?",
                    (str(outputs).rstrip("/") + "/", len(prefix) + 1, len(prefix), prefix),
                )
            conn.execute("PRAGMA journal_mode = DELETE")
        finally:
            conn.close()
    except sqlite3.Error as exc:
        problem = f"it cannot be read: {exc}"
    if problem:
        raise BadArchive(
            f"{archive}: member {DATABASE_MEMBER!r} is refused: {problem}; nothing was restored"
        )


# -- restore: the plan and its application ---------------------------------------------


@dataclass
class RestoreReport:
    lines: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


@dataclass
class RestorePlan:
    """A checked archive, ready to be restored. Use it as a context manager: leaving it
    removes its temporary files and releases the database."""

    archive: Path
    settings: Settings
    overwrite: bool
    cwd: Path
    manifest: dict[str, Any]
    members: list[tarfile.TarInfo]
    database_temp: Path | None = None
    config_bytes: bytes | None = None
    _lock: sqlite3.Connection | None = None
    _made_db_folder: bool = False

    def __enter__(self) -> RestorePlan:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None
        if self.database_temp is not None:
            for suffix in ("", "-journal", "-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    Path(f"{self.database_temp}{suffix}").unlink()
            self.database_temp = None
        if self._made_db_folder:
            with contextlib.suppress(OSError):
                self.settings.paths.database.parent.rmdir()
            self._made_db_folder = False

    def files(self, folder: str) -> list[tarfile.TarInfo]:
        return [m for m in self.members if m.isfile() and m.name.split("/", 1)[0] == folder]

    def config_target(self) -> tuple[Path, bool]:
        """Where the config goes, and whether that replaces the config in use."""
        current = self.settings.source
        if current is None:
            return self.cwd / "config.toml.restored", False
        if self.overwrite:
            return current, True
        return current.with_name(current.name + ".restored"), False

    def describe(self) -> list[str]:
        """What :meth:`apply` would do, a line a thing."""
        p = self.settings.paths
        made = self.manifest.get("created_at", "?")
        lines = [f"{self.archive} (made {made} by llm-pessoal {self.manifest.get('version', '?')})"]
        if self.database_temp is not None:
            what = "replaces the current one" if p.database.exists() else "new"
            lines.append(f"  the database -> {p.database} ({what})")
        for folder in FOLDERS:
            files = self.files(folder)
            if files:
                keep = "" if self.overwrite else " (newer files there are kept)"
                lines.append(f"  {len(files)} file(s) -> {getattr(p, folder)}{keep}")
        if self.config_bytes is not None:
            target, replaces = self.config_target()
            lines.append(f"  config.toml -> {target}" + (" (replaces it)" if replaces else ""))
        return lines

    def lock_database(self) -> None:
        """Take the live database for ourselves: refused (DatabaseBusy) while another
        program has it open. Held until :meth:`close`."""
        live = self.settings.paths.database
        if self.database_temp is None or not live.exists() or self._lock is not None:
            return
        uri = f"file:{urllib.parse.quote(str(live))}?mode=rw"
        try:
            conn = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=0.5)
        except sqlite3.Error as exc:
            raise MaintenanceError(f"{live}: cannot open the database: {exc}") from None
        try:
            conn.execute("PRAGMA locking_mode = EXCLUSIVE")
            # Leaving WAL needs every other connection gone; then an exclusive lock keeps
            # newcomers out while the file is replaced.
            conn.execute("PRAGMA journal_mode = DELETE")
            conn.execute("BEGIN EXCLUSIVE")
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            conn.close()
            text = str(exc)
            if "locked" in text or "busy" in text:
                raise DatabaseBusy(
                    f"{live}: the database is in use by a running llm-pessoal (or another "
                    "program): close it and run restore again; nothing was restored"
                ) from None
            # A damaged file is what a restore is for: nobody can be using it.
            log.warning("restoring over an unreadable database", extra={"error": text})
            return
        self._lock = conn

    def apply(self, *, now: datetime | None = None) -> RestoreReport:
        """Put everything back; see the module's docstring."""
        now = now or datetime.now()
        report = RestoreReport()
        self.lock_database()
        if self.database_temp is not None:
            self._restore_database(report, now)
        if any(self.files(f) for f in FOLDERS):
            with tarfile.open(self.archive, "r:gz") as tar:
                for folder in FOLDERS:
                    self._restore_folder(tar, folder, report)
        if self.config_bytes is not None:
            self._restore_config(report, now)
        log.info("backup restored", extra={"archive": str(self.archive)})
        return report

    def _restore_database(self, report: RestoreReport, now: datetime) -> None:
        assert self.database_temp is not None
        live = self.settings.paths.database
        live.parent.mkdir(parents=True, exist_ok=True)
        kept = None
        if live.exists():
            kept = live.with_name(f"{live.name}.before-restore-{_now_stamp(now)}")
            try:
                os.link(live, kept)
            except OSError:
                shutil.copy2(live, kept)
        # The old file's WAL (only left when it could not be read, see lock_database) goes
        # with the kept copy: beside the new file it would be replayed into it.
        with contextlib.suppress(FileNotFoundError):
            if kept is not None:
                os.replace(f"{live}-wal", f"{kept}-wal")
            else:
                os.unlink(f"{live}-wal")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{live}-shm")
        os.chmod(self.database_temp, 0o600)
        os.replace(self.database_temp, live)
        self.database_temp = None
        self._made_db_folder = False
        _fsync_dir(live.parent)
        line = f"restored the database into {live}"
        if kept is not None:
            line += f" (the previous one is kept as {kept})"
        report.lines.append(line)

    def _restore_folder(self, tar: tarfile.TarFile, folder: str, report: RestoreReport) -> None:
        members = self.files(folder)
        if not members:
            return
        root: Path = getattr(self.settings.paths, folder)
        written = kept = same = 0
        for member in members:
            parts = member.name.split("/")[1:]
            try:
                parent = _safe_folder(root, parts[:-1])
            except OSError as exc:
                report.problems.append(f"{member.name}: not restored: {exc}")
                continue
            target = parent / parts[-1]
            mtime = _sane_mtime(member.mtime)
            try:
                st = target.lstat()
            except FileNotFoundError:
                st = None
            if st is not None:
                if not stat.S_ISREG(st.st_mode):
                    report.problems.append(
                        f"{target}: not restored: a link or folder is there; left alone"
                    )
                    continue
                if st.st_size == member.size and int(st.st_mtime) == int(mtime):
                    same += 1
                    continue
                if st.st_mtime > mtime and not self.overwrite:
                    kept += 1
                    continue
            fd, tmp_name = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=parent)
            tmp = Path(tmp_name)
            try:
                with os.fdopen(fd, "wb") as out:
                    _read_all(tar, member, out)
                    out.flush()
                    os.fsync(out.fileno())
                os.chmod(tmp, member.mode & 0o666 or 0o600)
                os.utime(tmp, (mtime, mtime))
                os.replace(tmp, target)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()
                raise
            written += 1
        line = f"restored {written} file(s) into {root}"
        notes = []
        if kept:
            notes.append(f"{kept} newer kept; --yes replaces them")
        if same:
            notes.append(f"{same} already there")
        report.lines.append(line + (f" ({', '.join(notes)})" if notes else ""))

    def _restore_config(self, report: RestoreReport, now: datetime) -> None:
        assert self.config_bytes is not None
        data = self.config_bytes
        current = self.settings.source
        if current is not None and current.is_file() and current.read_bytes() == data:
            report.lines.append(f"config: {current} is already the same")
            return
        target, replaces = self.config_target()
        problem = _config_problem(data)
        if problem and replaces:
            assert current is not None
            target, replaces = current.with_name(current.name + ".restored"), False
            report.problems.append(f"config: the archived config is not valid ({problem})")
        from engines.files import atomic_write_bytes

        if replaces:
            assert current is not None
            previous = current.with_name(f"{current.name}.before-restore-{_now_stamp(now)}")
            shutil.copy2(current, previous)
            atomic_write_bytes(target, data, 0o644)
            report.lines.append(
                f"config: restored into {target} (the previous one is kept as {previous})"
            )
        else:
            atomic_write_bytes(target, data, 0o644)
            if current is None:
                report.lines.append(
                    f"config: written to {target}; no config file is in use: review it and "
                    "move it to ./config.toml or ~/.config/llm-pessoal/config.toml to use it"
                )
            else:
                report.lines.append(
                    f"config: written to {target}; compare it with {current} and move it "
                    "into place if you want it (--yes replaces the config)"
                )
        if not problem:
            report.lines += _path_notes(data, target.parent, self.settings.paths)


def _config_problem(data: bytes) -> str | None:
    try:
        settings_from_mapping(tomllib.loads(data.decode("utf-8")), label="config.toml")
    except (UnicodeDecodeError, tomllib.TOMLDecodeError, ConfigError) as exc:
        return str(exc)
    return None


def _path_notes(data: bytes, base: Path, now_paths: PathSettings) -> list[str]:
    """Where the restored config would put each folder, when that is not where the data
    were just restored."""
    settings = settings_from_mapping(tomllib.loads(data.decode("utf-8")))
    notes = []
    for f in fields(PathSettings):
        there = (base / getattr(settings.paths, f.name)).resolve()
        here = getattr(now_paths, f.name)
        if there != here:
            notes.append(
                f"config: note: it puts [paths] {f.name} at {there}, not {here} "
                "where the data were restored"
            )
    return notes


def _sane_mtime(mtime: float) -> float:
    return float(mtime) if math.isfinite(mtime) and 0 <= mtime < 2**37 else time.time()


def _safe_folder(root: Path, parts: list[str]) -> Path:
    """``root/parts...``, created as needed; no step may be a link or a file."""
    root.mkdir(parents=True, exist_ok=True)
    here = root
    for part in parts:
        here = here / part
        try:
            st = here.lstat()
        except FileNotFoundError:
            here.mkdir()
            continue
        if not stat.S_ISDIR(st.st_mode):
            raise NotADirectoryError(f"{here} is a link or a file, not a folder")
    return here


def _free_space_check(plan: RestorePlan) -> None:
    """Refuse when the files would not fit where they go."""
    need: dict[int, tuple[int, Path]] = {}
    p = plan.settings.paths
    for member in plan.members:
        if not member.isfile():
            continue
        top = member.name.split("/", 1)[0]
        dest = getattr(p, top) if top in FOLDERS else p.database if top == "data" else plan.cwd
        existing = dest
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        dev = existing.stat().st_dev
        total, where = need.get(dev, (0, existing))
        need[dev] = (total + member.size, where)
    for total, where in need.values():
        free = shutil.disk_usage(where).free
        if total > free:
            raise MaintenanceError(
                f"{plan.archive}: its files need {human_size(total)} but {where} has "
                f"{human_size(free)} free; nothing was restored"
            )


def prepare_restore(
    settings: Settings, archive: Path, *, overwrite: bool = False, cwd: Path | None = None
) -> RestorePlan:
    """Check the archive from end to end, without writing into the configured folders.

    Raises :class:`BadArchive` naming the first bad member, or :class:`MaintenanceError`.
    """
    cwd = cwd or Path.cwd()
    members = check_archive(archive)
    plan = RestorePlan(archive, settings, overwrite, cwd, {}, members)
    try:
        _free_space_check(plan)
        db_folder = settings.paths.database.parent
        manifest_bytes = b""
        with _open_archive(archive) as tar:
            for member in members:
                if not member.isfile():
                    continue
                try:
                    if member.name == MANIFEST:
                        manifest_bytes = _read_all(tar, member, None)
                    elif member.name == CONFIG_MEMBER:
                        plan.config_bytes = _read_all(tar, member, None)
                    elif member.name == DATABASE_MEMBER:
                        if not db_folder.exists():
                            db_folder.mkdir(parents=True)
                            plan._made_db_folder = True
                        fd, tmp = tempfile.mkstemp(
                            prefix=TEMP_PREFIX + "restore-", suffix=".db", dir=db_folder
                        )
                        plan.database_temp = Path(tmp)
                        with os.fdopen(fd, "wb") as out:
                            _read_all(tar, member, out)
                            out.flush()
                            os.fsync(out.fileno())
                    else:
                        _read_all(tar, member, None)  # the data must all be there
                except _ARCHIVE_ERRORS as exc:
                    raise BadArchive(
                        f"{archive}: member {member.name!r} is damaged or cut short ({exc}); "
                        "nothing was restored"
                    ) from None
        plan.manifest = _check_manifest(archive, manifest_bytes)
        if plan.database_temp is not None:
            old = plan.manifest.get("paths", {})
            old_outputs = old.get("outputs") if isinstance(old, dict) else None
            _check_database(
                archive,
                plan.database_temp,
                old_outputs if isinstance(old_outputs, str) else None,
                settings.paths.outputs,
            )
    except BaseException:
        plan.close()
        raise
    return plan


# -- clean -----------------------------------------------------------------------------


def parse_duration(text: str) -> float:
    """Seconds in ``30m``, ``12h``, ``7d`` or ``2w``; ValueError otherwise."""
    match = _DURATION.fullmatch(text)
    if not match or int(match[1]) <= 0:
        raise ValueError(f"expected {DURATION_FORMS}")
    return int(match[1]) * _UNIT_SECONDS[match[2].lower()]


Kind = Literal["image", "log", "cache"]


@dataclass(frozen=True)
class Removal:
    kind: Kind
    path: Path
    size: int


@dataclass
class CleanSummary:
    removed: list[Removal] = field(default_factory=list)
    freed: int = 0
    forgotten: int = 0
    problems: list[str] = field(default_factory=list)


def _tree_size(path: Path) -> int:
    """Bytes under ``path`` (itself if a file or link), links never followed."""
    try:
        st = path.lstat()
    except OSError:
        return 0
    if not stat.S_ISDIR(st.st_mode):
        return st.st_size
    total = 0
    for dirpath, _dirnames, filenames in os.walk(path, followlinks=False):
        for name in filenames:
            with contextlib.suppress(OSError):
                total += (Path(dirpath) / name).lstat().st_size
    return total


def _old_files(
    root: Path, older_than: float, now: float, keep: Callable[[str], bool]
) -> list[tuple[Path, int]]:
    found = []
    for path, rel in _files_under(root):
        if not keep(rel):
            continue
        with contextlib.suppress(OSError):
            st = path.lstat()
            if now - st.st_mtime > older_than:
                found.append((path, st.st_size))
    return found


def cache_refusal(settings: Settings) -> str | None:
    """Why emptying ``[paths] cache`` would be unsafe, or None."""
    cache = settings.paths.cache
    home = Path.home().resolve()
    if cache == Path(cache.anchor) or cache == home or home.is_relative_to(cache):
        return f"[paths] cache = {cache} is the filesystem root or holds the home folder"
    holds = [settings.source] if settings.source else []
    holds += [getattr(settings.paths, f.name) for f in fields(PathSettings) if f.name != "cache"]
    for other in holds:
        if other is not None and other.resolve().is_relative_to(cache):
            return f"[paths] cache = {cache} holds {other}"
    return None


def plan_clean(
    settings: Settings,
    *,
    images_older_than: float | None = None,
    logs_older_than: float | None = None,
    cache: bool = False,
    now: float | None = None,
) -> list[Removal]:
    """What :func:`clean` would remove. MaintenanceError when the cache is unsafe to empty."""
    now = time.time() if now is None else now
    p = settings.paths
    plan: list[Removal] = []
    if images_older_than is not None:
        for path, size in _old_files(
            p.outputs, images_older_than, now, lambda rel: rel.lower().endswith(".png")
        ):
            plan.append(Removal("image", path, size))
    if logs_older_than is not None:
        for path, size in _old_files(
            p.logs, logs_older_than, now, lambda rel: bool(_ROTATED_LOG.fullmatch(rel))
        ):
            plan.append(Removal("log", path, size))
    if cache:
        problem = cache_refusal(settings)
        if problem:
            raise MaintenanceError(f"refusing to empty the cache: {problem}")
        if p.cache.is_dir() and not p.cache.is_symlink():
            for entry in sorted(p.cache.iterdir()):
                plan.append(Removal("cache", entry, _tree_size(entry)))
    return plan


def _still_inside(removal: Removal, settings: Settings) -> bool:
    """The path is where the plan found it: under its folder, no link on the way."""
    root = {
        "image": settings.paths.outputs,
        "log": settings.paths.logs,
        "cache": settings.paths.cache,
    }[removal.kind]
    try:
        rel = removal.path.relative_to(root)
    except ValueError:
        return False
    here = root
    for part in rel.parts[:-1]:
        here = here / part
        if here.is_symlink() or not here.is_dir():
            return False
    return True


def clean(
    settings: Settings,
    plan: list[Removal],
    *,
    on_removed: Callable[[Removal], None] | None = None,
) -> CleanSummary:
    """Remove what :func:`plan_clean` found; images leave the gallery index too."""
    summary = CleanSummary()
    store = None
    if any(r.kind == "image" for r in plan) and settings.paths.database.is_file():
        from engines.store import Store, StoreError

        try:
            store = Store.open(settings.paths.database, recover=False)
        except StoreError as exc:
            summary.problems.append(f"{exc}; the gallery still lists the removed images")
    try:
        for removal in plan:
            path = removal.path
            if not _still_inside(removal, settings):
                summary.problems.append(f"{path}: left alone: it is no longer inside its folder")
                continue
            try:
                if removal.kind == "cache" and path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)  # removes links inside, never what they point to
                else:
                    if removal.kind != "cache" and not stat.S_ISREG(path.lstat().st_mode):
                        summary.problems.append(f"{path}: left alone: no longer a plain file")
                        continue
                    path.unlink()
            except FileNotFoundError:
                continue
            except OSError as exc:
                summary.problems.append(f"{path}: cannot remove it: {exc.strerror or exc}")
                continue
            if removal.kind == "image" and store is not None:
                summary.forgotten += _forget(store, path, summary)
            summary.removed.append(removal)
            summary.freed += removal.size
            if on_removed is not None:
                on_removed(removal)
    finally:
        if store is not None:
            store.close()
    log.info(
        "clean-up done",
        extra={"removed": len(summary.removed), "bytes": summary.freed},
    )
    return summary


def _forget(store: Any, path: Path, summary: CleanSummary) -> int:
    from engines.store import StoreError

    try:
        image_id = store.image_id_at(path)
        if image_id is None:
            return 0
        store.forget_image(image_id)
    except StoreError as exc:
        summary.problems.append(f"{path}: removed, but the gallery still lists it: {exc}")
        return 0
    return 1
