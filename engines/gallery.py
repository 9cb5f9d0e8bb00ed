"""The gallery's engine: the image index read a page at a time under filters, an on-disk
thumbnail cache beside the database, the trash under ``[paths] outputs``, export, and
checks for PNGs changed or deleted outside the app.

Every filter is answered by SQLite (indexes on time and model); a page is ``LIMIT`` rows
from an offset, so 50,000 images cost what one page costs.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import re
import shutil
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from engines.files import inside
from engines.images import read_parameters
from engines.store import Store, StoredImage, storable

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger(__name__)

TRASH_FOLDER = ".trash"
"""Deleted images wait here, under ``[paths] outputs``, until ``clean --trash``."""
THUMBNAIL_FOLDER = "thumbnails"
"""Beside the database: ``<database folder>/thumbnails``."""
THUMBNAIL_PX = 96
DATE_FORMS = "a day (2026-11-30), a month (2026-11), a range (2026-11-01..2026-11-15), or a span back from now (7d, 12h, 2w)"
_SPAN = re.compile(r"(\d+)\s*([hdw])", re.IGNORECASE)


class GalleryError(Exception):
    """A gallery action that cannot be done; the message names what and why."""


@dataclass(frozen=True)
class Filter:
    text: str = ""
    """In the prompt, the negative prompt, the model or the seed (literal, any case)."""
    model: str = ""
    since: float | None = None
    until: float | None = None
    trash: bool = False
    """The trash instead of the gallery."""

    @property
    def active(self) -> bool:
        return bool(self.text.strip() or self.model or self.since or self.until)


def parse_date(text: str, now: datetime | None = None) -> tuple[float | None, float | None]:
    """(since, until) timestamps of a date filter; ValueError naming the forms allowed."""
    text = text.strip()
    if not text:
        return None, None
    now = now or datetime.now()
    if span := _SPAN.fullmatch(text):
        hours = {"h": 1, "d": 24, "w": 24 * 7}[span[2].lower()] * int(span[1])
        return (now - timedelta(hours=hours)).timestamp(), None
    if text.lower() == "today":
        day = now.replace(hour=0, minute=0, second=0, microsecond=0)
        return day.timestamp(), None
    if ".." in text:
        first, _, last = text.partition("..")
        since = _day_span(first)[0] if first.strip() else None
        until = _day_span(last)[1] if last.strip() else None
        if since is not None and until is not None and since >= until:
            raise ValueError(f"date {text!r}: the range ends before it starts")
        return since, until
    return _day_span(text)


def _day_span(text: str) -> tuple[float, float]:
    text = text.strip()
    for fmt, step in (("%Y-%m-%d", "day"), ("%Y-%m", "month"), ("%Y", "year")):
        try:
            start = datetime.strptime(text, fmt)
        except ValueError:
            continue
        if step == "day":
            end = start + timedelta(days=1)
        elif step == "month":
            end = start.replace(year=start.year + start.month // 12, month=start.month % 12 + 1)
        else:
            end = start.replace(year=start.year + 1)
        return start.timestamp(), end.timestamp()
    raise ValueError(f"date {text!r} is not understood: use {DATE_FORMS}")


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _where(f: Filter) -> tuple[str, list[Any]]:
    clauses = ["trashed_at IS NOT NULL" if f.trash else "trashed_at IS NULL"]
    args: list[Any] = []
    text = f.text.strip()
    if text:
        # LIKE folds ASCII case in C (fast on 50,000 rows); fold() any other script
        if text.isascii():
            pattern = f"%{_escape_like(text)}%"
            # a seed is digits: a text with anything else is not looked for in it
            seed = " OR CAST(seed AS TEXT) LIKE ? ESCAPE '\\'" if text.isdigit() else ""
            clauses.append(
                "(prompt LIKE ? ESCAPE '\\' OR negative_prompt LIKE ? ESCAPE '\\'"
                f" OR model LIKE ? ESCAPE '\\'{seed})"
            )
            args += [pattern] * (4 if seed else 3)
        else:
            clauses.append(
                "(instr(fold(prompt), ?) > 0 OR instr(fold(negative_prompt), ?) > 0"
                " OR instr(fold(model), ?) > 0)"
            )
            args += [text.casefold()] * 3
    if f.model:
        clauses.append("model = ?")
        args.append(f.model)
    if f.since is not None:
        clauses.append("created_at >= ?")
        args.append(f.since)
    if f.until is not None:
        clauses.append("created_at < ?")
        args.append(f.until)
    return " AND ".join(clauses), args


def page(store: Store, f: Filter, offset: int, limit: int) -> list[StoredImage]:
    """Images newest first under ``f``, ``limit`` of them from ``offset``."""
    where, args = _where(f)
    order = "trashed_at DESC, id DESC" if f.trash else "created_at DESC, id DESC"
    query = f"SELECT * FROM images WHERE {where} ORDER BY {order} LIMIT ? OFFSET ?"
    if f.text.strip() and not f.trash:
        # the text is looked for in the index of the columns it reads (images_text),
        # in time order; only the page's rows are then read whole
        query = (
            f"SELECT * FROM images WHERE id IN (SELECT id FROM images WHERE {where}"
            f" ORDER BY {order} LIMIT ? OFFSET ?) ORDER BY {order}"
        )
    rows = store._query(query, (*args, limit, max(0, offset)))
    return [store.stored_image(r) for r in rows]


def count(store: Store, f: Filter) -> int:
    where, args = _where(f)
    rows = store._query(f"SELECT COUNT(*) AS n FROM images WHERE {where}", tuple(args))
    return int(rows[0]["n"])


def by_ids(store: Store, ids: set[int]) -> list[StoredImage]:
    if not ids:
        return []
    marks = ",".join("?" * len(ids))
    rows = store._query(f"SELECT * FROM images WHERE id IN ({marks}) ORDER BY id", tuple(ids))
    return [store.stored_image(r) for r in rows]


def models(store: Store) -> list[str]:
    """The models images were made with (read from the model index: no table scan)."""
    rows = store._query("SELECT DISTINCT model FROM images ORDER BY model")
    return [str(r["model"]) for r in rows]


def trashed_from(store: Store, image_id: int) -> Path | None:
    rows = store._query("SELECT trashed_from FROM images WHERE id = ?", (image_id,))
    return Path(rows[0]["trashed_from"]) if rows and rows[0]["trashed_from"] else None


# -- trash ---------------------------------------------------------------------------


def _free_name(folder: Path, name: str) -> Path:
    target = folder / name
    n = 1
    while target.exists() or target.is_symlink():
        n += 1
        target = folder / f"{Path(name).stem}-{n}{Path(name).suffix}"
    return target


def trash(store: Store, outputs: Path, image: StoredImage) -> Path:
    """Move the image's file into the trash and mark its row; restorable until
    ``clean --trash``. A file already gone is only marked."""
    folder = outputs / TRASH_FOLDER
    source = image.path
    target = _free_name(folder, source.name)
    if source.exists():
        try:
            real = inside(outputs, source, "[paths] outputs")
        except ValueError as exc:
            raise GalleryError(str(exc)) from None
        try:
            folder.mkdir(parents=True, exist_ok=True)
            os.replace(real, target)
        except OSError as exc:
            raise GalleryError(
                f"{source}: cannot move it to the trash: {exc.strerror or exc}"
            ) from None
    with store._tx() as c:
        c.execute(
            "UPDATE images SET path = ?, trashed_at = ?, trashed_from = ? WHERE id = ?",
            (str(target), time.time(), storable(str(source)), image.id),
        )
    return target


def restore(store: Store, outputs: Path, image: StoredImage) -> Path:
    """Put a trashed image back where it was (beside it, if that name is taken now)."""
    original = trashed_from(store, image.id)
    if original is None:
        raise GalleryError(f"{image.path.name} is not in the trash")
    if not image.path.exists():
        raise GalleryError(f"{image.path}: the trashed file is gone: forget it instead")
    target = original if not original.exists() else _free_name(original.parent, original.name)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(image.path, target)
    except OSError as exc:
        raise GalleryError(f"{target}: cannot restore it: {exc.strerror or exc}") from None
    with store._tx() as c:
        c.execute(
            "UPDATE images SET path = ?, trashed_at = NULL, trashed_from = NULL WHERE id = ?",
            (str(target), image.id),
        )
    return target


def trashed_paths(store: Store) -> list[tuple[int, Path]]:
    rows = store._query("SELECT id, path FROM images WHERE trashed_at IS NOT NULL ORDER BY id")
    return [(int(r["id"]), Path(r["path"])) for r in rows]


# -- export ----------------------------------------------------------------------------


def export(images: list[StoredImage], folder: Path) -> list[Path]:
    """Copy the images (their metadata included) into ``folder``; names never collide."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise GalleryError(f"{folder}: cannot create it: {exc.strerror or exc}") from None
    copied: list[Path] = []
    for image in images:
        target = _free_name(folder, image.path.name)
        try:
            shutil.copy2(image.path, target)
        except OSError as exc:
            raise GalleryError(
                f"{image.path}: not exported ({exc.strerror or exc}); {len(copied)} copied before it"
            ) from None
        copied.append(target)
    return copied


# -- the state of a file, and thumbnails ---------------------------------------------

FileState = Literal["ok", "missing", "changed"]


def check_file(image: StoredImage) -> tuple[FileState, str]:
    """Whether the PNG is still what the index says: there, readable, and with the same
    prompt and seed in its metadata."""
    if not image.path.exists():
        return "missing", "this PNG was deleted or moved outside the app"
    try:
        found = read_parameters(image.path)
    except (OSError, ValueError, SyntaxError):
        return (
            "changed",
            f"{image.path} was changed outside the app: it has no readable settings now",
        )
    p = image.parameters
    if found.prompt != p.prompt or found.seed != p.seed:
        return (
            "changed",
            f"{image.path} was changed outside the app: its settings are not the indexed ones",
        )
    return "ok", ""


class Thumbnails:
    """Small copies of the gallery's images, in ``folder`` (beside the database), keyed by
    the file's path, size and modification time (a changed PNG gets a new one). Made in the
    caller's thread: the gallery calls this from a worker, never from the event loop. A
    cache that cannot be written or read still gives thumbnails, made each time."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.problem: str | None = None
        """Why the cache is not used (unwritable), once found; shown once."""

    def _key(self, path: Path) -> tuple[Path, os.stat_result]:
        st = path.stat()
        digest = hashlib.sha1(
            f"{path}\0{st.st_size}\0{st.st_mtime_ns}".encode(), usedforsecurity=False
        ).hexdigest()
        return self.folder / digest[:2] / f"{digest}.png", st

    def get(self, path: Path) -> Image.Image:
        """The thumbnail of ``path``; OSError when the image itself cannot be read."""
        from PIL import Image, UnidentifiedImageError

        cached, _st = self._key(path)
        with (
            contextlib.suppress(OSError, UnidentifiedImageError, ValueError, SyntaxError),
            Image.open(cached) as im,
        ):
            im.load()
            return im.copy()
        if cached.exists():  # corrupt: made again below, written over
            log.warning("thumbnail cache file damaged, made again: %s", cached.name)
            with contextlib.suppress(OSError):
                cached.unlink()
        try:
            with Image.open(path) as im:
                im.draft("RGB", (THUMBNAIL_PX, THUMBNAIL_PX))
                small = im.convert("RGB")
        except (UnidentifiedImageError, ValueError, SyntaxError) as exc:
            raise OSError(f"{path.name} is not a readable image: {exc}") from None
        small.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
        if self.problem is None:
            buffer = io.BytesIO()
            small.save(buffer, format="PNG")
            try:
                _write_cache_file(cached, buffer.getvalue())
            except OSError as exc:
                self.problem = (
                    f"the thumbnail cache {self.folder} cannot be written "
                    f"({exc.strerror or exc}): thumbnails are made each time"
                )
                log.warning(self.problem)
        return small


def _write_cache_file(path: Path, data: bytes) -> None:
    """Whole or not at all (a temporary file renamed into place), without the fsync of
    :func:`~engines.files.atomic_write_bytes`: a cache file lost to a power cut is made
    again, and a page of them should not wait on the disk."""
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".png", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def thumbnail_folder(database: Path) -> Path:
    return database.parent / THUMBNAIL_FOLDER
