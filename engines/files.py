"""Safe file names and atomic writes: nothing half-written is ever left behind."""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import unicodedata
from pathlib import Path


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


TEMP_PREFIX = ".tmp-"


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
