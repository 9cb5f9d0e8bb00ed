"""Restore: put a backup (see :mod:`engines.backup`) back, after checking all of it.

- :func:`prepare_restore` opens the archive once and reads it from end to end before
  anything is written into the configured folders: every member's name, type and size;
  the total against ``[backup] restore_max_mb``; the data itself (streamed, never held in
  memory); the database, opened with the app's own :class:`~engines.store.Store` and its
  migrations, then compared with the schema the app makes (a wrong schema, a trigger or
  a table of its own is refused), its gallery rows kept inside ``[paths] outputs``.
- :meth:`RestorePlan.apply` puts the files back from that same open file: the database
  through a temporary file and a rename, only while no other program holds it; images
  and exports without replacing newer files unless asked; logs beside the current ones
  (the live log is never replaced); the config beside the current one unless asked, and
  even then only with the user's yes when it would move the data folders. Every file
  gets the app's own mode, whatever the archive says; ``.tmp-*`` members are skipped.
"""

from __future__ import annotations

import contextlib
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
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from engines.backup import (
    APP,
    CONFIG_MEMBER,
    DATABASE_MEMBER,
    DATABASE_SIDE_FILES,
    FOLDERS,
    FORMAT,
    MANIFEST,
    kept_place,
    now_stamp,
)
from engines.config import ConfigError, PathSettings, Settings, settings_from_mapping
from engines.files import (
    PRIVATE_MODE,
    TEMP_PREFIX,
    atomic_write_bytes,
    file_mode,
    fsync_dir,
    link_unique,
)
from engines.units import human_bytes

log = logging.getLogger(__name__)

SMALL_MEMBER_MAX = 1024 * 1024
"""The most bytes the manifest or the config may have."""
GZIP_MAX_RATIO = 1100
"""Deflate expands at most about 1032 times: a member declaring more than this many
bytes per byte of the archive cannot be real."""
CHUNK = 1024 * 1024
FILE_MODES = {
    "outputs": 0o644,
    "logs": PRIVATE_MODE,
    "exports": PRIVATE_MODE,
    "attachments": PRIVATE_MODE,  # images people attached to their messages
}
"""The modes the app gives the files of each folder (less the umask), whatever the
archive says: conversation text (logs, exports) is private."""

ConfirmConfig = Callable[[list[str]], bool]
"""Asked, with the reasons, before a restored config replaces the one in use when it
would move the data folders; True lets it."""


class RestoreError(Exception):
    """The restore cannot be done; the message says why, and that nothing was restored."""


class BadArchive(RestoreError):
    """The archive is not a usable llm-pessoal backup, or may not be used from where it
    is (bad input: exit code 2); nothing was written."""


class DatabaseBusy(RestoreError):
    """Another program (a running llm-pessoal) has the database open."""


class TooLarge(RestoreError):
    """The archive's files add up to more than ``[backup] restore_max_mb``."""


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
            f"a declared size of {human_bytes(member.size)}, more than this "
            f"{human_bytes(limit / GZIP_MAX_RATIO)} archive can hold"
        )
    if name in (MANIFEST, CONFIG_MEMBER) and member.size > SMALL_MEMBER_MAX:
        return f"a size of {human_bytes(member.size)}, too large for {name}"
    return None


def _is_temporary(member: tarfile.TarInfo) -> bool:
    return any(part.startswith(TEMP_PREFIX) for part in member.name.split("/"))


def _copy_member(tar: tarfile.TarFile, member: tarfile.TarInfo, sink: IO[bytes] | None) -> bytes:
    """Stream a member's data to the end, a chunk at a time, into ``sink`` when given
    (else nowhere); small members (the manifest, the config) come back as bytes."""
    f = tar.extractfile(member)
    if f is None:  # pragma: no cover - regular files always have data
        return b""
    keep = sink is None and member.size <= SMALL_MEMBER_MAX
    chunks: list[bytes] = []
    got = 0
    with f:
        while chunk := f.read(CHUNK):
            got += len(chunk)
            if sink is not None:
                sink.write(chunk)
            elif keep:
                chunks.append(chunk)
    if got != member.size:
        raise tarfile.ReadError("unexpected end of data")
    return b"".join(chunks)


_ARCHIVE_ERRORS = (tarfile.TarError, EOFError, zlib.error, OSError)


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


def _schema(conn: sqlite3.Connection) -> set[tuple[str, str, str, str | None]]:
    """Every table, index, view and trigger (SQLite's statistics tables left out)."""
    return {
        (r[0], r[1], r[2], r[3])
        for r in conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master")
        if not str(r[1]).startswith("sqlite_stat")
    }


def _app_schema() -> set[tuple[str, str, str, str | None]]:
    """What the app's migrations make in a new database."""
    from engines.store import Store

    store = Store.memory()
    try:
        return _schema(store._conn)
    finally:
        store.close()


def _inside_text(path: str, outputs: Path) -> bool:
    """The stored ``path`` names a file inside ``outputs`` (read as text: the files may
    not be there yet)."""
    if not path or "\x00" in path or not os.path.isabs(path):
        return False
    norm = Path(os.path.normpath(path))
    return norm != outputs and norm.is_relative_to(outputs)


def _check_database(archive: Path, path: Path, old_outputs: str | None, outputs: Path) -> list[str]:
    """The restored database must be whole and the app's own: opened (and migrated) with
    the app's Store, its schema then exactly what the migrations make. Image rows move to
    the configured outputs folder when the backup came from another one; rows that would
    still point outside it are dropped. Returns notes for the report."""
    from engines.store import Store, StoreError

    def refuse(problem: str) -> BadArchive:
        return BadArchive(
            f"{archive}: member {DATABASE_MEMBER!r} is refused: {problem}; nothing was restored"
        )

    try:
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            rows = conn.execute("PRAGMA integrity_check").fetchall()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise refuse(f"it cannot be read: {exc}") from None
    if rows != [("ok",)]:
        raise refuse("it is damaged: " + "; ".join(str(r[0]) for r in rows[:3]))
    try:
        Store.open(path, recover=False).close()
    except StoreError as exc:
        text = str(exc).removeprefix(f"{path}: ")
        raise refuse(f"it is not a database this app can use ({text})") from None
    notes: list[str] = []
    try:
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("PRAGMA recursive_triggers = ON")  # REPLACE's deletes reach the search index
        try:
            extra = _schema(conn) ^ _app_schema()
            if extra:
                kind, name = sorted(extra, key=lambda e: (e[0], e[1]))[0][:2]
                raise refuse(
                    f"its schema is not the one this app makes ({kind} {name!r} differs or is "
                    "not the app's)"
                )
            prefix = None
            if old_outputs and old_outputs != str(outputs):
                prefix = old_outputs.rstrip("/") + "/"
                conn.execute(
                    "UPDATE OR REPLACE images SET path = ? || substr(path, ?)"
                    " WHERE substr(path, 1, ?) = ?",
                    (str(outputs).rstrip("/") + "/", len(prefix) + 1, len(prefix), prefix),
                )
            outside = [
                row[0]
                for row in conn.execute("SELECT id, path FROM images")
                if not isinstance(row[1], str) or not _inside_text(row[1], outputs)
            ]
            if outside:
                conn.execute("BEGIN")
                conn.executemany("DELETE FROM images WHERE id = ?", [(i,) for i in outside])
                conn.execute("COMMIT")
                notes.append(
                    f"the database: {len(outside)} gallery entr{'y' if len(outside) == 1 else 'ies'}"
                    f" named a file outside {outputs} and {'was' if len(outside) == 1 else 'were'}"
                    " dropped"
                )
            conn.execute("PRAGMA journal_mode = DELETE")
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise refuse(f"it cannot be read: {exc}") from None
    return notes


@dataclass
class RestoreReport:
    lines: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


@dataclass
class RestorePlan:
    """A checked archive, ready to be restored. Use it as a context manager: leaving it
    closes the archive, removes its temporary files and releases the database."""

    archive: Path
    settings: Settings
    overwrite: bool
    cwd: Path
    file: IO[bytes]
    """The archive, opened once: checked and applied from this same open file."""
    manifest: dict[str, Any] = field(default_factory=dict)
    members: list[tarfile.TarInfo] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    """Temporary (``.tmp-*``) members, never restored."""
    notes: list[str] = field(default_factory=list)
    database_temp: Path | None = None
    config_bytes: bytes | None = None
    _lock: sqlite3.Connection | None = None
    _made_db_folder: bool = False
    _counts: dict[str, dict[str, int]] = field(default_factory=dict)

    def __enter__(self) -> RestorePlan:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.file.close()
        if self._lock is not None:
            self._lock.close()
            self._lock = None
        if self.database_temp is not None:
            for suffix in ("", *DATABASE_SIDE_FILES):
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

    def config_moves(self) -> list[str]:
        """Each ``[paths]`` folder the archived config puts somewhere else than the one in
        use (where the data are restored), in words; empty when it moves none or cannot
        be read."""
        if self.config_bytes is None or _config_problem(self.config_bytes):
            return []
        target, _ = self.config_target()
        return _path_moves(self.config_bytes, target.parent, self.settings.paths)

    def describe(self) -> list[str]:
        """What :meth:`apply` would do, a line a thing. Outside text (the manifest's
        fields) is as the archive has it: the caller shows it through the display
        function."""
        p = self.settings.paths
        made = self.manifest.get("created_at", "?")
        version = self.manifest.get("version", "?")
        lines = [f"{self.archive} (made {made} by llm-pessoal {version})"]
        if self.database_temp is not None:
            what = "replaces the current one" if p.database.exists() else "new"
            lines.append(f"  the database -> {p.database} ({what})")
        for folder in FOLDERS:
            files = self.files(folder)
            if files:
                if folder == "logs":
                    keep = " (a log that is there already is kept; the archived one goes beside)"
                else:
                    keep = "" if self.overwrite else " (newer files there are kept)"
                lines.append(f"  {len(files)} file(s) -> {getattr(p, folder)}{keep}")
        if self.config_bytes is not None:
            target, replaces = self.config_target()
            lines.append(f"  config.toml -> {target}" + (" (replaces it)" if replaces else ""))
            lines += [f"    it {move}" for move in self.config_moves()]
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
            raise RestoreError(f"{live}: cannot open the database: {exc}") from None
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

    def apply(
        self, *, now: datetime | None = None, confirm_config: ConfirmConfig | None = None
    ) -> RestoreReport:
        """Put everything back; see the module's docstring. ``confirm_config`` is asked
        before a config that moves the data folders replaces the one in use; without it
        such a config is written beside."""
        now = now or datetime.now()
        report = RestoreReport()
        self.lock_database()
        if self.database_temp is not None:
            self._restore_database(report, now)
        report.lines += self.notes
        if any(self.files(f) for f in FOLDERS):
            wanted = {m.name: m for f in FOLDERS for m in self.files(f)}
            try:
                with _gzip_tar(self) as tar:
                    for member in tar:
                        checked = wanted.pop(member.name, None)
                        if checked is not None:
                            top = member.name.split("/", 1)[0]
                            self._restore_member(tar, top, checked, member, report)
            except _ARCHIVE_ERRORS as exc:
                if isinstance(exc, OSError) and exc.filename is not None:
                    raise  # writing, not reading the archive
                report.problems.append(
                    f"{self.archive}: the archive changed on disk since it was checked "
                    f"({exc}); the restore stopped"
                )
            if wanted:
                report.problems.append(
                    f"{self.archive}: {len(wanted)} checked file(s) were not found again "
                    "(the archive changed on disk since it was checked); not restored"
                )
            for folder in FOLDERS:
                self._folder_line(folder, report)
        if self.skipped:
            report.lines.append(
                f"skipped {len(self.skipped)} temporary file(s) of the archive (.tmp-*)"
            )
        if self.config_bytes is not None:
            self._restore_config(report, now, confirm_config)
        log.info("backup restored", extra={"archive": str(self.archive)})
        return report

    def _restore_database(self, report: RestoreReport, now: datetime) -> None:
        assert self.database_temp is not None
        live = self.settings.paths.database
        live.parent.mkdir(parents=True, exist_ok=True)
        kept = None
        if live.exists():
            kept = live.with_name(f"{live.name}.before-restore-{now_stamp(now)}")
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
        os.chmod(self.database_temp, PRIVATE_MODE)
        os.replace(self.database_temp, live)
        self.database_temp = None
        self._made_db_folder = False
        fsync_dir(live.parent)
        line = f"restored the database into {live}"
        if kept is not None:
            line += f" (the previous one is kept as {kept})"
        report.lines.append(line)

    def _count(self, folder: str, what: str) -> None:
        counts = self._counts.setdefault(folder, {})
        counts[what] = counts.get(what, 0) + 1

    def _restore_member(
        self,
        tar: tarfile.TarFile,
        folder: str,
        checked: tarfile.TarInfo,
        member: tarfile.TarInfo,
        report: RestoreReport,
    ) -> None:
        if (member.size, member.type) != (checked.size, checked.type):
            raise RestoreError(
                f"{self.archive}: member {member.name!r} changed since it was checked; "
                "restore stopped"
            )
        root: Path = getattr(self.settings.paths, folder)
        parts = member.name.split("/")[1:]
        try:
            parent = _safe_folder(root, parts[:-1])
        except OSError as exc:
            report.problems.append(f"{member.name}: not restored: {exc}")
            return
        target = parent / parts[-1]
        mtime = _sane_mtime(member.mtime)
        beside = False
        try:
            st = target.lstat()
        except FileNotFoundError:
            st = None
        if st is not None:
            if not stat.S_ISREG(st.st_mode):
                report.problems.append(
                    f"{target}: not restored: a link or folder is there; left alone"
                )
                return
            if st.st_size == member.size and int(st.st_mtime) == int(mtime):
                self._count(folder, "same")
                return
            if folder == "logs":  # the live log, or one rotated since: never replaced
                beside = True
            elif st.st_mtime > mtime and not self.overwrite:
                self._count(folder, "kept")
                return
        fd, tmp_name = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=parent)
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out:
                _copy_member(tar, member, out)
                out.flush()
                os.fsync(out.fileno())
            os.chmod(tmp, file_mode(FILE_MODES[folder]))
            os.utime(tmp, (mtime, mtime))
            if beside:
                link_unique(tmp, target.with_name(f"{target.name}.restored"))
                self._count(folder, "beside")
            else:
                os.replace(tmp, target)
                self._count(folder, "written")
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise

    def _folder_line(self, folder: str, report: RestoreReport) -> None:
        if not self.files(folder):
            return
        counts = self._counts.get(folder, {})
        root: Path = getattr(self.settings.paths, folder)
        written = counts.get("written", 0) + counts.get("beside", 0)
        notes = []
        if counts.get("beside"):
            notes.append(f"{counts['beside']} beside the file already there, as *.restored")
        if counts.get("kept"):
            notes.append(f"{counts['kept']} newer kept; --yes replaces them")
        if counts.get("same"):
            notes.append(f"{counts['same']} already there")
        line = f"restored {written} file(s) into {root}"
        report.lines.append(line + (f" ({', '.join(notes)})" if notes else ""))

    def _restore_config(
        self, report: RestoreReport, now: datetime, confirm: ConfirmConfig | None
    ) -> None:
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
        moves = [] if problem else _path_moves(data, target.parent, self.settings.paths)
        if replaces and moves and not (confirm is not None and confirm(moves)):
            assert current is not None
            target, replaces = current.with_name(current.name + ".restored"), False
            keys = ", ".join(move.split()[2] for move in moves)
            report.problems.append(
                f"config: not put in place: it moves [paths] {keys} away from where the data "
                f"were restored; it is written to {target}: review it and move it into place "
                "yourself"
            )
        if replaces:
            assert current is not None
            previous = current.with_name(f"{current.name}.before-restore-{now_stamp(now)}")
            shutil.copy2(current, previous)
            atomic_write_bytes(target, data, 0o644)
            report.lines.append(
                f"config: restored into {target} (the previous one is kept as {previous})"
            )
            return
        atomic_write_bytes(target, data, 0o644)
        if current is None:
            report.lines.append(
                f"config: written to {target}; no config file is in use: review it and "
                "move it to ./config.toml or ~/.config/llm-pessoal/config.toml to use it"
            )
        else:
            asks = ", after asking: it moves the data folders" if moves else ""
            report.lines.append(
                f"config: written to {target}; compare it with {current} and move it "
                f"into place if you want it (--yes replaces the config{asks})"
            )


def _config_problem(data: bytes) -> str | None:
    try:
        settings_from_mapping(tomllib.loads(data.decode("utf-8")), label="config.toml")
    except (UnicodeDecodeError, tomllib.TOMLDecodeError, ConfigError) as exc:
        return str(exc)
    return None


def _path_moves(data: bytes, base: Path, now_paths: PathSettings) -> list[str]:
    """Where the archived config would put each folder, when that is not where the data
    are restored."""
    settings = settings_from_mapping(tomllib.loads(data.decode("utf-8")))
    moves = []
    for f in fields(PathSettings):
        there = (base / getattr(settings.paths, f.name)).resolve()
        here = getattr(now_paths, f.name)
        if there != here:
            moves.append(f"puts [paths] {f.name} at {there}, not {here}")
    return moves


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
    """Refuse when the files would not fit where they go (the database is already
    written, as the temporary file beside the live one)."""
    need: dict[int, tuple[int, Path]] = {}
    p = plan.settings.paths
    for member in plan.members:
        top = member.name.split("/", 1)[0]
        if not member.isfile() or top not in FOLDERS:
            continue
        dest: Path = getattr(p, top)
        existing = dest
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        dev = existing.stat().st_dev
        total, where = need.get(dev, (0, existing))
        need[dev] = (total + member.size, where)
    for total, where in need.values():
        free = shutil.disk_usage(where).free
        if total > free:
            raise RestoreError(
                f"{plan.archive}: its files need {human_bytes(total)} but {where} has "
                f"{human_bytes(free)} free; nothing was restored"
            )


def _refuse_archive_place(settings: Settings, archive: Path) -> None:
    """An archive inside what a restore replaces would be overwritten while it is read."""
    where = kept_place(settings, archive, FOLDERS)
    if where:
        raise BadArchive(
            f"{archive}: the archive is {where}, which the restore replaces: move it "
            "elsewhere first; nothing was restored"
        )


def _open(archive: Path) -> IO[bytes]:
    try:
        fd = os.open(archive, os.O_RDONLY)
    except FileNotFoundError:
        raise BadArchive(f"{archive}: no such file") from None
    except OSError as exc:
        raise BadArchive(f"{archive}: cannot open it: {exc.strerror or exc}") from None
    f = os.fdopen(fd, "rb")
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        f.close()
        raise BadArchive(f"{archive}: a folder or special file, not a backup archive")
    return f


def prepare_restore(
    settings: Settings,
    archive: Path,
    *,
    overwrite: bool = False,
    cwd: Path | None = None,
    max_bytes: int | None = None,
) -> RestorePlan:
    """Check the archive from end to end, without writing into the configured folders
    (the database goes to a temporary file beside the live one).

    ``max_bytes`` (default: ``[backup] restore_max_mb``) caps the total size of the files
    it would restore. Raises :class:`BadArchive` naming the first bad member,
    :class:`TooLarge`, or :class:`RestoreError`.
    """
    cwd = cwd or Path.cwd()
    archive = archive if archive.is_absolute() else cwd / archive
    if max_bytes is None:
        max_bytes = settings.backup.restore_max_mb * 1_000_000
    _refuse_archive_place(settings, archive)
    plan = RestorePlan(archive, settings, overwrite, cwd, _open(archive))
    try:
        _read_archive(plan, max_bytes)
        _free_space_check(plan)
    except BaseException:
        plan.close()
        raise
    return plan


def _gzip_tar(plan: RestorePlan) -> tarfile.TarFile:
    """The archive read as a .tar.gz, from the start of the plan's one open file."""
    plan.file.seek(0)
    try:
        return tarfile.open(fileobj=plan.file, mode="r:gz")
    except _ARCHIVE_ERRORS as exc:
        raise BadArchive(
            f"{plan.archive}: not a .tar.gz backup ({exc}); nothing was restored"
        ) from None


def _read_archive(plan: RestorePlan, max_bytes: int) -> None:
    """The one checking pass: headers, sizes, data, the gzip stream to its end."""
    archive = plan.archive
    limit = max(os.fstat(plan.file.fileno()).st_size, 1) * GZIP_MAX_RATIO
    db_folder = plan.settings.paths.database.parent
    seen: set[str] = set()
    manifest_bytes = b""
    total = 0
    with _gzip_tar(plan) as tar:
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
                last = member.name
                if _is_temporary(member):
                    if member.isfile():
                        plan.skipped.append(member.name)
                    continue
                plan.members.append(member)
                if not member.isfile():
                    continue
                if member.name != MANIFEST:
                    total += member.size
                    if total > max_bytes:
                        raise TooLarge(
                            f"{archive}: its files add up to more than {human_bytes(max_bytes)} "
                            f"([backup] restore_max_mb in the config); refused at member "
                            f"{member.name!r}: raise the limit to restore it; nothing was "
                            "restored"
                        )
                try:
                    if member.name == MANIFEST:
                        manifest_bytes = _copy_member(tar, member, None)
                    elif member.name == CONFIG_MEMBER:
                        plan.config_bytes = _copy_member(tar, member, None)
                    elif member.name == DATABASE_MEMBER:
                        if not db_folder.exists():
                            db_folder.mkdir(parents=True)
                            plan._made_db_folder = True
                        fd, tmp = tempfile.mkstemp(
                            prefix=TEMP_PREFIX + "restore-", suffix=".db", dir=db_folder
                        )
                        plan.database_temp = Path(tmp)
                        with os.fdopen(fd, "wb") as out:
                            _copy_member(tar, member, out)
                            out.flush()
                            os.fsync(out.fileno())
                    else:
                        _copy_member(tar, member, None)  # the data must all be there
                except _ARCHIVE_ERRORS as exc:
                    raise BadArchive(
                        f"{archive}: member {member.name!r} is damaged or cut short ({exc}); "
                        "nothing was restored"
                    ) from None
            assert tar.fileobj is not None
            while tar.fileobj.read(CHUNK):  # to the end: the gzip checksum is verified there
                pass
        except RestoreError:
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
    plan.manifest = _check_manifest(archive, manifest_bytes)
    if plan.database_temp is not None:
        old = plan.manifest.get("paths", {})
        old_outputs = old.get("outputs") if isinstance(old, dict) else None
        plan.notes += _check_database(
            archive,
            plan.database_temp,
            old_outputs if isinstance(old_outputs, str) else None,
            plan.settings.paths.outputs,
        )
