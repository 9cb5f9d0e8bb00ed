"""Clean-up: old images (and their gallery rows), old rotated logs, and what the app or
the Hugging Face hub put in the model cache.

Nothing else goes: every removal is checked with :func:`engines.files.inside` right before
it happens (no link out of the configured folders is followed), and the cache keeps
anything the hub did not make there (a token, a file of the user's, a whole system
folder named by mistake).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from engines.config import PathSettings, Settings
from engines.files import OutsideFolder, files_under, inside
from engines.gallery import TRASH_FOLDER
from engines.logs import LOG_FILE

log = logging.getLogger(__name__)

_DURATION = re.compile(r"\s*(\d+)\s*([mhdw])\s*", re.IGNORECASE)
_UNIT_SECONDS = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
DURATION_FORMS = "a whole number and a unit: 30m, 12h, 7d or 2w (minutes, hours, days, weeks)"
_ROTATED_LOG = re.compile(re.escape(LOG_FILE) + r"\.\d+")

HUB_FOLDER = "hub"
"""Where the app points huggingface_hub's downloads: ``[paths] cache``/hub."""
_HUB_ENTRY = re.compile(
    r"(models|datasets|spaces)--.+|\.locks|version\.txt|version_diffusers_cache\.txt"
)
"""What huggingface_hub makes in its hub cache: one folder a repository, its locks, its
layout version."""
_CACHE_ENTRY = re.compile(r"xet")
"""What the hub makes beside ``hub/`` when ``[paths] cache`` is also HF_HOME."""


class CleanError(Exception):
    """The clean-up cannot be done; the message says why, and that nothing was removed."""


def parse_duration(text: str) -> float:
    """Seconds in ``30m``, ``12h``, ``7d`` or ``2w``; ValueError otherwise."""
    match = _DURATION.fullmatch(text)
    if not match or int(match[1]) <= 0:
        raise ValueError(f"expected {DURATION_FORMS}")
    return int(match[1]) * _UNIT_SECONDS[match[2].lower()]


Kind = Literal["image", "log", "cache", "trash", "attachment"]

ATTACHMENT_GRACE_S = 3600.0
"""A copy younger than this may belong to a prompt being written in a running app: kept."""


@dataclass(frozen=True)
class Removal:
    kind: Kind
    path: Path
    size: int


@dataclass
class CleanPlan:
    removals: list[Removal] = field(default_factory=list)
    left_alone: list[Path] = field(default_factory=list)
    """Entries of the cache that neither the app nor the hub made: never removed."""


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
    for path, rel in files_under(root):
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


def _is_real_dir(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink()


def cache_entries(cache: Path) -> tuple[list[Path], list[Path]]:
    """The entries of the cache the app or the hub made (to remove), and the others (to
    leave alone), each sorted. Links are never the hub's."""
    ours: list[Path] = []
    others: list[Path] = []
    if not _is_real_dir(cache):
        return ours, others
    for entry in sorted(cache.iterdir()):
        if entry.name == HUB_FOLDER and _is_real_dir(entry):
            for item in sorted(entry.iterdir()):
                made = _HUB_ENTRY.fullmatch(item.name) and not item.is_symlink()
                (ours if made else others).append(item)
        elif _CACHE_ENTRY.fullmatch(entry.name) and _is_real_dir(entry):
            ours.append(entry)
        else:
            others.append(entry)
    return ours, others


def plan_clean(
    settings: Settings,
    *,
    images_older_than: float | None = None,
    logs_older_than: float | None = None,
    cache: bool = False,
    trash: bool = False,
    attachments: bool = False,
    now: float | None = None,
) -> CleanPlan:
    """What :func:`clean` would remove. CleanError when the cache is unsafe to empty."""
    now = time.time() if now is None else now
    p = settings.paths
    plan = CleanPlan()
    if images_older_than is not None:
        for path, size in _old_files(
            p.outputs,
            images_older_than,
            now,
            lambda rel: rel.lower().endswith(".png") and not rel.startswith(TRASH_FOLDER + "/"),
        ):
            plan.removals.append(Removal("image", path, size))
    if trash:  # the gallery's trash: its files, and the index rows that wait on them
        for path, _rel in files_under(p.outputs / TRASH_FOLDER):
            with contextlib.suppress(OSError):
                plan.removals.append(Removal("trash", path, path.lstat().st_size))
    if attachments:  # copies of attached images that no message uses any more
        used = _used_attachments(settings)
        for path, size in _old_files(p.attachments, ATTACHMENT_GRACE_S, now, lambda rel: True):
            if str(path) not in used and str(path.resolve()) not in used:
                plan.removals.append(Removal("attachment", path, size))
    if logs_older_than is not None:
        for path, size in _old_files(
            p.logs, logs_older_than, now, lambda rel: bool(_ROTATED_LOG.fullmatch(rel))
        ):
            plan.removals.append(Removal("log", path, size))
    if cache:
        problem = cache_refusal(settings)
        if problem:
            raise CleanError(f"refusing to empty the cache: {problem}")
        ours, others = cache_entries(p.cache)
        plan.removals += [Removal("cache", entry, _tree_size(entry)) for entry in ours]
        plan.left_alone = others
    return plan


def _used_attachments(settings: Settings) -> set[str]:
    """The attachment copies the messages refer to. CleanError when the database cannot tell."""
    from engines.store import Store, StoreError

    database = settings.paths.database
    if not database.is_file():
        return set()
    try:
        store = Store.open(database, recover=False)
    except StoreError as exc:
        raise CleanError(
            f"refusing to remove attachments: {exc}, so which ones are used is unknown"
        ) from exc
    try:
        return store.attachment_paths()
    finally:
        store.close()


def _root(removal: Removal, settings: Settings) -> tuple[Path, str]:
    key = {
        "image": "outputs",
        "log": "logs",
        "cache": "cache",
        "trash": "outputs",
        "attachment": "attachments",
    }[removal.kind]
    return getattr(settings.paths, key), f"[paths] {key}"


def clean(
    settings: Settings,
    plan: list[Removal],
    *,
    on_removed: Callable[[Removal], None] | None = None,
) -> CleanSummary:
    """Remove what :func:`plan_clean` found; images leave the gallery index too."""
    summary = CleanSummary()
    store = None
    if any(r.kind in ("image", "trash") for r in plan) and settings.paths.database.is_file():
        from engines.store import Store, StoreError

        try:
            store = Store.open(settings.paths.database, recover=False)
        except StoreError as exc:
            summary.problems.append(f"{exc}; the gallery still lists the removed images")
    try:
        for removal in plan:
            path = removal.path
            root, what = _root(removal, settings)
            try:
                real = inside(root, path, what)
                st = real.lstat()
                if removal.kind == "cache" and stat.S_ISDIR(st.st_mode):
                    shutil.rmtree(real)  # removes links inside, never what they point to
                elif stat.S_ISREG(st.st_mode):
                    real.unlink()
                else:
                    summary.problems.append(f"{path}: left alone: no longer a plain file")
                    continue
            except OutsideFolder as exc:
                summary.problems.append(str(exc))
                continue
            except FileNotFoundError:
                continue
            except OSError as exc:
                summary.problems.append(f"{path}: cannot remove it: {exc.strerror or exc}")
                continue
            if removal.kind in ("image", "trash") and store is not None:
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
