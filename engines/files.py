"""File primitives: safe names, atomic writes, private files, and the one check that a
path lies inside its folder. Nothing half-written is ever left behind."""

from __future__ import annotations

import contextlib
import io
import os
import re
import stat
import tempfile
import unicodedata
from collections.abc import Iterator
from pathlib import Path

TEMP_PREFIX = ".tmp-"
"""Every temporary file or folder the app writes starts so; backups and restores skip them."""
PRIVATE_MODE = 0o600
"""Conversation text (the database, exports, logs) is readable by its owner only."""


def slugify(text: str, max_len: int = 40) -> str:
    """A short ASCII name part from user text; never a path (no '/', '.', NUL...)."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    return slug[:max_len].rstrip("-") or "untitled"


def atomic_write_bytes(
    path: Path, data: bytes, mode: int = 0o644, *, exclusive: bool = False
) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder, then
    rename it into place; on any failure the temporary file is removed. With
    ``exclusive``, never replace an existing file: FileExistsError instead."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=path.suffix, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode & ~_umask())
        if exclusive:
            try:
                os.link(tmp, path)  # fails if the name was taken meanwhile
            except FileExistsError:
                raise
            except OSError:  # a filesystem without hard links: check, then rename
                if path.exists():
                    raise FileExistsError(path) from None
                os.replace(tmp, path)
            else:
                os.unlink(tmp)
        else:
            os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: Path, text: str, mode: int = 0o644) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"), mode)


def file_mode(mode: int) -> int:
    """``mode`` less the process umask: what a file the app creates gets."""
    return mode & ~_umask()


def _umask() -> int:
    """The process umask, read without changing it (``os.umask`` would set it for a
    moment, racing with other threads creating files)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o077  # unknown: the safe side


def remove_stale_temporaries(folder: Path, older_than_s: float = 60.0) -> list[Path]:
    """Remove what a killed writer left: our own temporary files (``.tmp-*``) older
    than a minute (younger ones may belong to a writer still at work)."""
    import time

    removed: list[Path] = []
    try:
        candidates = list(folder.glob(TEMP_PREFIX + "*"))
    except OSError:
        return removed
    now = time.time()
    for path in candidates:
        try:
            if (
                path.is_file()
                and not path.is_symlink()
                and now - path.stat().st_mtime > older_than_s
            ):
                path.unlink()
                removed.append(path)
        except OSError:
            continue
    return removed


def write_private_text(path: Path, text: str) -> Path:
    """Write ``text`` atomically into a file only its owner can read (:data:`PRIVATE_MODE`):
    exports hold conversation text, as the database does."""
    return atomic_write_bytes(path, text.encode("utf-8"), PRIVATE_MODE)


def open_private(path: Path, *, encoding: str = "utf-8") -> io.TextIOWrapper:
    """``path`` opened for appending text, created :data:`PRIVATE_MODE` from its first byte
    and made so when it already was there (logs hold conversation text too)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, PRIVATE_MODE)
    with contextlib.suppress(OSError):
        os.fchmod(fd, PRIVATE_MODE)
    return os.fdopen(fd, "a", encoding=encoding)


def fsync_dir(folder: Path) -> None:
    """Make a rename inside ``folder`` durable (where the system allows it)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _numbered(target: Path, n: int) -> Path:
    """``name-2.tar.gz``, ``name-3.png``...: the ``n``-th choice of a name like ``target``."""
    if n == 1:
        return target
    name = target.name
    for ext in (".tar.gz", *([target.suffix] if target.suffix else [])):
        if name.endswith(ext) and len(name) > len(ext):
            return target.with_name(f"{name.removesuffix(ext)}-{n}{ext}")
    return target.with_name(f"{name}-{n}")


def link_unique(tmp: Path, target: Path) -> Path:
    """Give the finished file ``tmp`` the name ``target`` (or ``-2``, ``-3``... when taken),
    never replacing a file; returns the name it got."""
    n = 1
    while True:
        candidate = _numbered(target, n)
        try:
            os.link(tmp, candidate)
        except FileExistsError:
            n += 1
            continue
        except OSError:  # no hard links here: check, then rename
            if os.path.lexists(candidate):
                n += 1
                continue
            os.replace(tmp, candidate)
            return candidate
        tmp.unlink()
        return candidate


def files_under(root: Path) -> Iterator[tuple[Path, str]]:
    """Regular files under ``root`` (sorted, links never followed, the app's temporary files
    and folders left out) with their ``/``-separated names relative to it."""
    if not root.is_dir():
        return
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(TEMP_PREFIX))
        here = Path(dirpath)
        for name in sorted(filenames):
            if name.startswith(TEMP_PREFIX):
                continue
            path = here / name
            with contextlib.suppress(OSError):
                if stat.S_ISREG(path.lstat().st_mode):
                    yield path, path.relative_to(root).as_posix()


class OutsideFolder(ValueError):
    """A path that is not inside the folder it should be in; the message names both."""


def inside(root: Path, path: Path, what: str = "its folder") -> Path:
    """``path`` as it really lies (its folders' links and ``..`` resolved, the last part
    kept as it is), when that is inside ``root``; :class:`OutsideFolder` otherwise.

    Every delete asks this first: a gallery row or a clean-up plan may name a file
    anywhere (a restored database, a folder swapped for a link meanwhile)."""
    real_root = root.resolve()
    name = path.name
    if not path.is_absolute() or name in ("", ".", ".."):
        raise OutsideFolder(f"{path}: not inside {what} {real_root}; left alone")
    real = path.parent.resolve() / name
    if real == real_root or not real.is_relative_to(real_root):
        raise OutsideFolder(f"{path}: not inside {what} {real_root}; left alone")
    return real


def remove_inside(root: Path, path: Path, what: str = "its folder") -> bool:
    """Remove the file at ``path`` only if it lies inside ``root`` (see :func:`inside`);
    a link is removed itself, never what it points to. False when it was already gone;
    :class:`OutsideFolder` or OSError (a folder, a permission) when it cannot go."""
    real = inside(root, path, what)
    try:
        st = real.lstat()
    except FileNotFoundError:
        return False
    if stat.S_ISDIR(st.st_mode):
        raise IsADirectoryError(21, "a folder, not a file", str(real))
    real.unlink()
    return True
