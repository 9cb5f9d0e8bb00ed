"""Image models from the Hugging Face hub: what to download, the download, and the cache.

A hub id (``owner/name``) becomes a folder on disk the way an Ollama model does: the app
works out which files the pipeline needs (:func:`choose_files`), says how big they are,
checks the free space, then downloads them with progress (bytes, rate and ETA per file and
in total), cancellable with an Event and resumable: an interrupted file stays in the cache
as ``blobs/<etag>.incomplete`` and the next try asks the hub for the rest (an HTTP Range).

Everything goes through huggingface_hub's own machinery and cache layout: the model info
(``HfApi.model_info``), the file metadata (``get_hf_file_metadata``), the transfer
(``http_get``, which also retries a dropped connection from where it stopped), the snapshot
links (``hf_hub_download``), the listing and deletion (``scan_cache_dir``). A model already
complete in the cache is used with no network call at all.

Only what is needed is downloaded: the components of ``model_index.json`` (no safety checker
when it is off), their configs and tokenizer files, and one set of weights each:
safetensors when the repo has them (never ``.ckpt``, ``.bin`` beside them, Flax, ONNX...),
the ``fp16`` variant when the dtype is float16 and the repo has it, never the EMA or
``non_ema`` copies, never the single-file checkpoints at the repo's root.

Every failure is a :class:`HubError` whose text is one line that says what to do.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlparse

from engines.progress import PullProgress, PullTracker
from engines.units import human_bytes

if TYPE_CHECKING:
    from huggingface_hub import HFCacheInfo

log = logging.getLogger(__name__)

DEFAULT_ENDPOINT = "https://huggingface.co"
WEIGHTS = (".safetensors", ".bin")
"""Weights a pipeline component is loaded from (one format and one variant are kept)."""
KEPT = (".json", ".txt", ".model")
"""Configs and tokenizer files: always kept (they are small)."""
SINGLE_FILES = (".safetensors", ".ckpt")
PROGRESS_EVERY_S = 0.2
"""Progress is reported at most this often (5 times a second), and at each file's end."""
CHUNK_SIZE = 1024 * 1024
"""Bytes between two progress updates (and two looks at the cancel event)."""
WORKERS = 8
HALT_WAIT_S = 15.0
"""How long a failed download waits for its other transfers to stop (they look between
chunks; a stalled one gives up after huggingface_hub's read timeout)."""
"""Files downloaded at once (as ``snapshot_download`` and ``hf download`` do)."""
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
NETWORK_ERRORS = frozenset(
    {
        "ConnectError",
        "ConnectTimeout",
        "ReadTimeout",
        "TimeoutException",
        "NetworkError",
        "RemoteProtocolError",
        "ProxyError",
        "ConnectionError",
        "OfflineModeIsEnabled",
    }
)
DISK_FULL = {errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC)}


class HubError(Exception):
    """A download or a cache operation failed; ``str()`` is one line that says what to do."""


class HubOffline(HubError):
    """The hub cannot be reached (no network, HF_HUB_OFFLINE, a proxy in the way)."""


class DownloadCancelled(HubError):
    """Stopped by the cancel event; what was downloaded stays in the cache for a resume."""


class NotEnoughSpace(HubError):
    """The disk lacks the room for the download (before it starts, or as it runs)."""


def is_hub_id(model: str) -> bool:
    """Whether ``model`` names a hub repo (``owner/name``) rather than a local path: the
    test the diffusion engine makes (an existing path, an absolute one, or one starting
    with ``.`` or ``~`` is local)."""
    path = Path(model).expanduser()
    if path.is_absolute() or model.startswith((".", "~")) or path.exists():
        return False
    return bool(HUB_ID.match(model))


def hub_cache(cache: Path | None) -> Path:
    """Where hub models are cached: ``[paths] cache``/hub, unless HF_HOME or HF_HUB_CACHE
    says otherwise (as the diffusion engine and huggingface_hub agree)."""
    if "HF_HUB_CACHE" in os.environ:
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if cache is not None and "HF_HOME" not in os.environ:
        return cache / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def disk_free(path: Path) -> int:
    """Free bytes on the filesystem that holds ``path`` (or its nearest existing parent)."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return shutil.disk_usage(probe).free


def repo_folder(cache: Path, repo: str) -> Path:
    return cache / ("models--" + repo.replace("/", "--"))


# -- which files -------------------------------------------------------------------------


def weight_variant(name: str) -> str | None:
    """The variant of a weights file or weights index: ``fp16`` for
    ``diffusion_pytorch_model.fp16.safetensors``, ``model.fp16-00001-of-00002.safetensors``
    and ``model.safetensors.index.fp16.json``; ``non_ema`` for ``…non_ema.bin``; None for
    the plain weights."""
    base = name.rsplit("/", 1)[-1]
    parts = base.split(".")
    if base.endswith(".json") and "index" in parts:
        middle = parts[parts.index("index") + 1 : -1]
    else:
        middle = [re.sub(r"-\d+-of-\d+$", "", p) for p in parts[1:-1]]
    return ".".join(p for p in middle if p) or None


def _index_format(name: str) -> str | None:
    """``safetensors`` or ``bin`` for a sharded weights index (``X.safetensors.index.json``)."""
    parts = name.rsplit("/", 1)[-1].split(".")
    if name.endswith(".json") and "index" in parts:
        at = parts.index("index")
        return parts[at - 1] if at >= 1 and parts[at - 1] in ("safetensors", "bin") else None
    return None


def pipeline_components(
    model_index: Mapping[str, Any], *, safety_checker: bool = False
) -> list[str]:
    """The component folders a pipeline loads, from its ``model_index.json``."""
    names = []
    for key, value in model_index.items():
        if key.startswith("_") or not isinstance(value, list) or len(value) != 2:
            continue
        if value[0] is None or value[1] is None:
            continue
        if key == "safety_checker" and not safety_checker:
            continue
        names.append(key)
    return names


def choose_files(
    files: Iterable[str],
    model_index: Mapping[str, Any],
    *,
    fp16: bool,
    safety_checker: bool = False,
) -> tuple[list[str], str | None]:
    """The files a pipeline needs out of a repo's ``files``, and the weights variant to
    load them with (``"fp16"`` or None).

    Per component: its configs and tokenizer files, and one set of weights: safetensors if
    it has any (else ``.bin``), the ``fp16`` variant if ``fp16`` and it has one (or if it
    has nothing else), else the plain weights. EMA copies, other formats (``.ckpt``,
    Flax, ONNX) and everything outside the components are left out."""
    names = sorted(set(files))
    chosen = ["model_index.json"] if "model_index.json" in names else []
    variant: str | None = None
    for component in pipeline_components(model_index, safety_checker=safety_checker):
        prefix = component + "/"
        inside = [n for n in names if n.startswith(prefix)]
        weights = [n for n in inside if n.endswith(WEIGHTS)]
        indexes = [n for n in inside if _index_format(n)]
        fmt = "safetensors" if any(n.endswith(".safetensors") for n in weights) else "bin"
        weights = [n for n in weights if n.endswith("." + fmt)]
        indexes = [n for n in indexes if _index_format(n) == fmt]
        variants = {weight_variant(n) for n in weights}
        if "fp16" in variants and (fp16 or None not in variants):
            pick: str | None = "fp16"
        else:
            pick = None
        if pick is not None:
            variant = pick
        chosen += [n for n in weights + indexes if weight_variant(n) == pick]
        chosen += [n for n in inside if n.endswith(KEPT) and not _index_format(n)]
    return sorted(set(chosen)), variant


# -- plans, progress and results ------------------------------------------------------------


@dataclass(frozen=True)
class PlannedFile:
    path: str
    size: int
    etag: str
    have: int = 0
    """Bytes already on disk: ``size`` when it is in the cache, a resumable part, or 0."""


@dataclass(frozen=True)
class DownloadPlan:
    """What a download of ``repo`` at ``commit`` takes, decided before it starts."""

    repo: str
    commit: str
    files: tuple[PlannedFile, ...]
    variant: str | None
    skipped: tuple[str, ...] = ()
    skipped_bytes: int = 0

    @property
    def total(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def have(self) -> int:
        return sum(min(f.have, f.size) for f in self.files)

    @property
    def missing(self) -> int:
        """Bytes still to download."""
        return self.total - self.have

    def summary(self) -> str:
        """``12 files, 2.1 GB (1.0 GB to download); 9 files (5.3 GB) not needed``."""
        text = f"{len(self.files)} files, {human_bytes(self.total)}"
        if self.have:
            text += f" ({human_bytes(self.missing)} to download)"
        if self.variant:
            text += f", the {self.variant} weights"
        if self.skipped:
            text += f"; {len(self.skipped)} files ({human_bytes(self.skipped_bytes)}) not needed"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {
            "repo": self.repo,
            "commit": self.commit,
            "variant": self.variant,
            "total_bytes": self.total,
            "missing_bytes": self.missing,
            "files": [{"path": f.path, "size": f.size, "have": f.have} for f in self.files],
            "skipped": list(self.skipped),
            "skipped_bytes": self.skipped_bytes,
        }


@dataclass(frozen=True)
class DownloadProgress:
    """A download as it goes: ``overall`` has the totals (``overall_*``: bytes, rate, ETA)
    and ``active`` the files being transferred (each with its own bytes, rate and ETA;
    ``digest`` is the file's path in the repo)."""

    repo: str
    overall: PullProgress
    active: tuple[PullProgress, ...]
    files_done: int
    files: int
    done: bool = False

    @property
    def fraction(self) -> float:
        return self.overall.overall_fraction or (1.0 if self.done else 0.0)

    def figures(self) -> str:
        """``1.2 GB / 4.3 GB · 35.2 MB/s · ETA 1:23``."""
        return self.overall.overall_figures()

    def describe(self) -> str:
        """One line, the figures first (they matter most on a narrow terminal):
        ``downloading 1.2 GB / 4.3 GB · 35.2 MB/s · ETA 1:23 · 3/12 files``."""
        return f"downloading {self.figures()} · {self.files_done}/{self.files} files"

    def file_lines(self, most: int = 3) -> list[str]:
        """The files in flight, largest first: ``unet/…fp16.safetensors 1.0 GB / 1.7 GB · …``."""
        ordered = sorted(self.active, key=lambda p: -p.total)[:most]
        return [f"{p.digest} {p.figures()}" for p in ordered]


@dataclass(frozen=True)
class LocalModel:
    """A hub model complete in the cache: the snapshot folder to load, and its variant."""

    repo: str
    path: Path
    variant: str | None
    commit: str = ""


@dataclass(frozen=True)
class ImageModel:
    """One image model on disk, as the manager lists it."""

    name: str
    """The hub id, or the local path."""
    kind: Literal["hub", "folder", "file"]
    path: Path
    size: int
    last_used: float | None = None
    """Seconds since the epoch (the hub cache's last access), or None when unknown."""
    default: bool = False
    partial: int = 0
    """Bytes of interrupted downloads kept for a resume."""
    complete: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "path": str(self.path),
            "size": self.size,
            "last_used": self.last_used,
            "default": self.default,
            "partial_bytes": self.partial,
            "complete": self.complete,
        }


class _Stop(BaseException):
    """Raised inside huggingface_hub's transfer loop to stop it (not an Exception, so no
    retry logic swallows it)."""


class _Silent:
    """A tqdm stand-in that shows nothing (huggingface_hub's own bars would write on the
    terminal, under the TUI)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.n = 0

    def update(self, n: float | None = 1) -> None:
        return None

    def __enter__(self) -> _Silent:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def close(self) -> None:
        return None


class _Meter:
    """Collects bytes per file from the transfer threads and reports them (throttled)."""

    def __init__(
        self,
        plan: DownloadPlan,
        on_progress: Callable[[DownloadProgress], None] | None,
        clock: Callable[[], float],
    ) -> None:
        self.plan = plan
        self.on_progress = on_progress
        self.clock = clock
        self.lock = threading.Lock()
        self.tracker = PullTracker(plan.repo, clock=clock)
        self.latest: dict[str, PullProgress] = {}
        self.active: set[str] = set()
        self.done: set[str] = set()
        self.reported = 0.0
        self.dirty = False
        self.last = self.tracker.update("starting")
        for f in plan.files:
            self.last = self.latest[f.path] = self.tracker.update(
                "downloading", f.path, f.size, f.have
            )
            if f.have >= f.size:
                self.done.add(f.path)

    def advance(self, path: str, completed: int, *, finished: bool = False) -> None:
        with self.lock:
            planned = self.latest[path]
            total = max(planned.total, completed)
            self.last = self.latest[path] = self.tracker.update(
                "downloading", path, total, completed
            )
            if finished:
                self.active.discard(path)
                self.done.add(path)
            elif path not in self.done:
                self.active.add(path)
            now = self.clock()
            if not finished and now - self.reported < PROGRESS_EVERY_S:
                self.dirty = True  # reported by the next advance, or by tick()
                return
            self.report(now)

    def tick(self) -> None:
        """Report what the transfers did since the last report, if they went quiet: a
        stalled connection shows its last bytes, and its rate falling."""
        with self.lock:
            now = self.clock()
            if now - self.reported < PROGRESS_EVERY_S or not (self.dirty or self.active):
                return
            for path in sorted(self.active):
                p = self.latest[path]
                self.last = self.latest[path] = self.tracker.update(
                    "downloading", path, p.total, p.completed
                )
            self.report(now)

    def report(self, now: float, done: bool = False) -> None:
        """Call ``on_progress`` (with the lock held: reports come one at a time, in order)."""
        self.reported = now
        self.dirty = False
        overall = self.tracker.update("success") if done else self.last
        progress = DownloadProgress(
            repo=self.plan.repo,
            overall=overall,
            active=tuple(self.latest[p] for p in sorted(self.active)),
            files_done=len(self.done),
            files=len(self.plan.files),
            done=done,
        )
        if self.on_progress is not None:
            self.on_progress(progress)

    def start(self) -> None:
        with self.lock:
            self.report(self.clock())

    def finish(self) -> None:
        with self.lock:
            self.done.update(f.path for f in self.plan.files)
            self.active.clear()
            self.report(self.clock(), done=True)


def _bar_class(meter: _Meter, path: str, stopped: Callable[[], bool]) -> type:
    """A tqdm look-alike for huggingface_hub's ``http_get``: it feeds ``meter`` and stops
    the transfer when ``cancel`` is set."""

    class Bar:
        def __init__(self, *args: Any, total: int | None = None, initial: int = 0, **kw: Any):
            self.n = initial
            if stopped():
                raise _Stop
            meter.advance(path, self.n)

        def update(self, n: float | None = 1) -> None:
            self.n += int(n or 0)
            meter.advance(path, self.n)
            if stopped():
                raise _Stop

        def __enter__(self) -> Bar:
            return self

        def __exit__(self, *exc: object) -> None:
            return None

        def close(self) -> None:
            return None

        def set_postfix_str(self, *args: Any, **kwargs: Any) -> None:
            return None

        def refresh(self) -> None:
            return None

    return Bar


@dataclass
class HubModels:
    """The image models of the hub cache at ``cache`` (a ``hub`` folder, as
    :func:`hub_cache` gives): plan, download, list and delete them."""

    cache: Path
    endpoint: str | None = None
    """The hub's address; default: HF_ENDPOINT, else huggingface.co."""
    token: str | None = None
    """Default: what huggingface_hub finds (HF_TOKEN, or ``hf auth login``'s file)."""
    workers: int = WORKERS
    chunk_size: int = CHUNK_SIZE
    clock: Callable[[], float] = time.monotonic
    _locks: dict[str, threading.Lock] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.endpoint is None:
            self.endpoint = (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")

    @property
    def offline(self) -> bool:
        """HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) is set: the cache only."""
        return any(
            os.environ.get(name, "").upper() in ("1", "ON", "YES", "TRUE")
            for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
        )

    # -- the cache -------------------------------------------------------------------------

    def snapshot(self, repo: str) -> tuple[Path, str] | None:
        """The cached snapshot of ``repo``'s main branch, and its commit, if there is one."""
        storage = repo_folder(self.cache, repo)
        ref = storage / "refs" / "main"
        try:
            commit = ref.read_text(encoding="utf-8").strip()
        except OSError:
            snapshots = sorted(
                (p for p in (storage / "snapshots").glob("*") if p.is_dir()),
                key=lambda p: p.stat().st_mtime,
            )
            if not snapshots:
                return None
            return snapshots[-1], snapshots[-1].name
        folder = storage / "snapshots" / commit
        return (folder, commit) if folder.is_dir() else None

    def local(self, repo: str, *, fp16: bool, safety_checker: bool = False) -> LocalModel | None:
        """``repo`` if it is complete in the cache (no network used), else None."""
        found = self.snapshot(repo)
        if found is None:
            return None
        folder, commit = found
        problems, variant = check_folder(folder, fp16=fp16, safety_checker=safety_checker)
        if problems:
            log.info("cached %s is incomplete: %s", repo, "; ".join(problems))
            return None
        return LocalModel(repo, folder, variant, commit)

    # -- planning --------------------------------------------------------------------------

    def plan(self, repo: str, *, fp16: bool, safety_checker: bool = False) -> DownloadPlan:
        """Ask the hub what ``repo`` holds and decide what to download (``model_index.json``
        is fetched into the cache on the way: the choice depends on it)."""
        if self.offline:
            raise HubOffline(self._offline_text(repo, "HF_HUB_OFFLINE is set"))
        _quiet_library()
        from huggingface_hub import HfApi

        try:
            info = HfApi(endpoint=self.endpoint, token=self.token).model_info(
                repo, files_metadata=True
            )
        except Exception as exc:
            raise self.explain(repo, exc) from exc
        siblings = {s.rfilename: s for s in info.siblings or []}
        commit = info.sha or "main"
        if "model_index.json" not in siblings:
            single = sorted(n for n in siblings if n.endswith(SINGLE_FILES) and "/" not in n)
            hint = (
                f"; for a single-file checkpoint such as {single[0]}, download it and set "
                "[diffusion] model to its path"
                if single
                else ""
            )
            raise HubError(f"{repo} is not a diffusers pipeline: it has no model_index.json{hint}")
        index_file = self._fetch_small(repo, commit, "model_index.json")
        try:
            model_index = json.loads(index_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise HubError(f"{repo}: its model_index.json cannot be read: {exc}") from exc
        names, variant = choose_files(
            siblings, model_index, fp16=fp16, safety_checker=safety_checker
        )
        storage = repo_folder(self.cache, repo)
        planned = []
        for name in names:
            s = siblings[name]
            etag = s.lfs.sha256 if s.lfs is not None else (s.blob_id or "")
            size = int(s.size or (s.lfs.size if s.lfs is not None else 0) or 0)
            planned.append(
                PlannedFile(name, size, etag, self._have(storage, commit, name, etag, size))
            )
        skipped = sorted(set(siblings) - set(names))
        skipped_bytes = sum(int(siblings[n].size or 0) for n in skipped)
        return DownloadPlan(repo, commit, tuple(planned), variant, tuple(skipped), skipped_bytes)

    @staticmethod
    def _have(storage: Path, commit: str, name: str, etag: str, size: int) -> int:
        if (storage / "snapshots" / commit / name).is_file():
            return size
        if etag:
            blob = storage / "blobs" / etag
            if blob.is_file():
                return size
            try:
                return min((storage / "blobs" / (etag + ".incomplete")).stat().st_size, size)
            except OSError:
                return 0
        return 0

    def _fetch_small(self, repo: str, commit: str, filename: str) -> Path:
        from huggingface_hub import hf_hub_download

        try:
            return Path(
                hf_hub_download(
                    repo,
                    filename,
                    revision=commit,
                    cache_dir=self.cache,
                    endpoint=self.endpoint,
                    token=self.token,
                    tqdm_class=_Silent,
                )
            )
        except Exception as exc:
            raise self.explain(repo, exc) from exc

    # -- downloading -----------------------------------------------------------------------

    def check_space(self, plan: DownloadPlan) -> None:
        """Refuse, with the numbers, a download the disk has no room for."""
        free = disk_free(self.cache)
        if plan.missing > free:
            raise NotEnoughSpace(
                f"not enough disk space for {plan.repo}: it needs {human_bytes(plan.missing)} "
                f"more and {self.cache} has {human_bytes(free)} free; free some space "
                "(llm-pessoal image-models rm …) or point [paths] cache at a bigger disk"
            )

    def download(
        self,
        plan: DownloadPlan,
        on_progress: Callable[[DownloadProgress], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> LocalModel:
        """Download what ``plan`` lists into the cache; the snapshot folder to load."""
        cancel = cancel or threading.Event()
        self.check_space(plan)
        _quiet_library()
        meter = _Meter(plan, on_progress, self.clock)
        meter.start()
        todo = [f for f in plan.files if not self._linked(plan, f)]
        failures: list[BaseException] = []
        queue = sorted(todo, key=lambda f: -f.size)  # the biggest first
        lock = threading.Lock()
        halt = threading.Event()  # the transfers stop: cancelled, or another one failed
        discard = threading.Event()  # ... and their parts go too (a full disk)

        def stopped() -> bool:
            return cancel.is_set() or halt.is_set()

        def worker() -> None:
            while not stopped():
                with lock:
                    if not queue:
                        return
                    item = queue.pop(0)
                try:
                    self._fetch(plan, item, meter, stopped, discard)
                except _Stop:
                    return
                except BaseException as exc:  # handed to the caller's thread
                    with lock:
                        failures.append(exc)
                    halt.set()
                    return

        threads = [
            threading.Thread(target=worker, name=f"hub-download-{i}", daemon=True)
            for i in range(max(1, min(self.workers, len(todo))))
        ]
        for t in threads:
            t.start()
        # wait here, not in a join: the transfer threads look at the cancel event only
        # between chunks, and a stalled connection must not hold a cancel back
        while (alive := [t for t in threads if t.is_alive()]) and not stopped():
            alive[0].join(0.05)
            meter.tick()
        if cancel.is_set():
            halt.set()  # for good: the caller may clear and reuse its event
            raise DownloadCancelled(
                f"stopped downloading {plan.repo}; what came stays in the cache and the "
                "next try goes on from it"
            )
        if failures:
            exc = failures[0]
            if isinstance(exc, NotEnoughSpace):
                discard.set()  # nothing half-written stays on a full disk
                for t in threads:
                    t.join(HALT_WAIT_S / len(threads))
                storage = repo_folder(self.cache, plan.repo)
                for f in plan.files:
                    if f.etag:
                        (storage / "blobs" / (f.etag + ".incomplete")).unlink(missing_ok=True)
            raise exc if isinstance(exc, HubError) else self.explain(plan.repo, exc) from exc
        meter.finish()
        folder = repo_folder(self.cache, plan.repo) / "snapshots" / plan.commit
        return LocalModel(plan.repo, folder, plan.variant, plan.commit)

    def _linked(self, plan: DownloadPlan, f: PlannedFile) -> bool:
        return (repo_folder(self.cache, plan.repo) / "snapshots" / plan.commit / f.path).is_file()

    def _lock(self, key: str) -> threading.Lock:
        return self._locks.setdefault(key, threading.Lock())

    def _fetch(
        self,
        plan: DownloadPlan,
        item: PlannedFile,
        meter: _Meter,
        stopped: Callable[[], bool],
        discard: threading.Event,
    ) -> None:
        """One file into the cache: resumed from its ``.incomplete`` part if there is one,
        then linked into the snapshot by huggingface_hub."""
        from huggingface_hub import (
            constants,
            get_hf_file_metadata,
            hf_hub_download,
            hf_hub_url,
        )
        from huggingface_hub.file_download import http_get

        # public names of huggingface_hub.utils, exported lazily (hence the ignore)
        from huggingface_hub.utils import (  # type: ignore[attr-defined]
            WeakFileLock,
            build_hf_headers,
        )

        storage = repo_folder(self.cache, plan.repo)
        if not self._linked(plan, item):
            url = hf_hub_url(plan.repo, item.path, revision=plan.commit, endpoint=self.endpoint)
            # the model info gave the etag and size (the same the file's HEAD would) and the
            # URL names the commit: the GET goes straight out, and a redirect to the CDN is
            # followed without the token (httpx drops it across origins)
            location, etag, size = url, item.etag, item.size
            if not etag:
                meta = get_hf_file_metadata(url, token=self.token, endpoint=self.endpoint)
                location, etag = meta.location, meta.etag or ""
                size = meta.size if meta.size is not None else size
            blob = storage / "blobs" / etag
            if not blob.is_file():
                partial = blob.with_name(etag + ".incomplete")
                lock_file = self.cache / ".locks" / storage.name / (etag + ".incomplete.lock")
                lock_file.parent.mkdir(parents=True, exist_ok=True)
                partial.parent.mkdir(parents=True, exist_ok=True)
                headers = build_hf_headers(token=self.token)
                headers["Accept-Encoding"] = "identity"
                if urlparse(location).netloc != urlparse(url).netloc:
                    headers.pop("authorization", None)  # a CDN gets no token
                # one writer per part, in this process and in others (a second app)
                with self._lock(str(partial)), WeakFileLock(lock_file):
                    if not blob.is_file():
                        constants.DOWNLOAD_CHUNK_SIZE = self.chunk_size
                        try:
                            with partial.open("ab") as out:
                                http_get(
                                    location,
                                    out,
                                    resume_size=out.tell(),
                                    headers=headers,
                                    expected_size=size,
                                    displayed_filename=item.path,
                                    tqdm_class=_bar_class(meter, item.path, stopped),
                                )
                        except _Stop:
                            if discard.is_set():
                                partial.unlink(missing_ok=True)
                            raise
                        except OSError as exc:
                            if exc.errno in DISK_FULL:
                                partial.unlink(missing_ok=True)
                                raise NotEnoughSpace(
                                    f"the disk filled up while downloading {plan.repo} "
                                    f"({item.path}); the part was removed, nothing half-written "
                                    f"is left: free some space in {self.cache} and pull it again"
                                ) from exc
                            if "Consistency check failed" in str(exc):
                                partial.unlink(missing_ok=True)
                            raise
                        os.replace(partial, blob)
            hf_hub_download(
                plan.repo,
                item.path,
                revision=plan.commit,
                cache_dir=self.cache,
                endpoint=self.endpoint,
                token=self.token,
                tqdm_class=_Silent,
            )
        meter.advance(item.path, item.size, finished=True)

    # -- the whole job ------------------------------------------------------------------------

    def ensure(
        self,
        repo: str,
        *,
        fp16: bool,
        on_plan: Callable[[DownloadPlan], None] | None = None,
        on_progress: Callable[[DownloadProgress], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> LocalModel:
        """``repo`` on disk, ready to load: from the cache with no network when it is
        complete there, else planned and downloaded."""
        found = self.local(repo, fp16=fp16)
        if found is not None:
            return found
        return self.pull(repo, fp16=fp16, on_plan=on_plan, on_progress=on_progress, cancel=cancel)

    def pull(
        self,
        repo: str,
        *,
        fp16: bool,
        on_plan: Callable[[DownloadPlan], None] | None = None,
        on_progress: Callable[[DownloadProgress], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> LocalModel:
        """Download ``repo`` (what is missing of it) from the hub, always asking it."""
        try:
            plan = self.plan(repo, fp16=fp16)
        except HubOffline as exc:
            found = self.local(repo, fp16=fp16)
            if found is not None:  # pulled before: the cached copy serves
                log.info("hub unreachable, using the cached %s: %s", repo, exc)
                return found
            raise
        if on_plan is not None:
            on_plan(plan)
        log.info("downloading %s: %s", repo, plan.summary())
        return self.download(plan, on_progress, cancel)

    # -- errors --------------------------------------------------------------------------------

    def _offline_text(self, repo: str, why: str) -> str:
        partly = self.snapshot(repo) is not None
        where = "is only partly in the cache" if partly else "is not in the cache"
        return (
            f"{repo} {where} and the hub cannot be reached ({why}): connect to the network "
            f"and run `llm-pessoal image-models pull {repo}`, or set [diffusion] model to a "
            "local folder or file"
        )

    def explain(self, repo: str, exc: BaseException) -> HubError:
        """``exc`` from huggingface_hub or the network as one line that says what to do."""
        if isinstance(exc, HubError):
            return exc
        from huggingface_hub.errors import (
            GatedRepoError,
            HfHubHTTPError,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )

        chain: list[BaseException] = []
        seen: BaseException | None = exc
        while seen is not None and len(chain) < 8:
            chain.append(seen)
            seen = seen.__cause__ or seen.__context__
        for e in chain:
            if isinstance(e, GatedRepoError):
                return HubError(
                    f"{repo} is gated: accept its terms at {self.endpoint}/{repo} while logged "
                    "in, then give the app your token: set HF_TOKEN, or run `hf auth login` "
                    "(`huggingface-cli login` in older versions)"
                )
            if isinstance(e, RepositoryNotFoundError):
                return HubError(
                    f"there is no model {repo} on the hub ({self.endpoint}): check the id "
                    "(owner/name); if it is private, set HF_TOKEN or run `hf auth login`"
                )
            if isinstance(e, RevisionNotFoundError):
                return HubError(f"{repo} has no main branch on the hub: name a revision")
            if isinstance(e, OSError) and e.errno in DISK_FULL:
                return NotEnoughSpace(
                    f"the disk filled up while downloading {repo}: free some space in "
                    f"{self.cache} and pull it again"
                )
        for e in chain:
            if any(c.__name__ in NETWORK_ERRORS for c in type(e).__mro__):
                text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                return HubOffline(self._offline_text(repo, f"{self.endpoint}: {text}"))
        for e in chain:
            if isinstance(e, HfHubHTTPError) and e.response is not None:
                code = e.response.status_code
                if code in (401, 403):
                    return HubError(
                        f"the hub refused {repo} (HTTP {code}): if it is gated or private, "
                        "set HF_TOKEN or run `hf auth login` with an account that has access"
                    )
                return HubError(f"the hub answered HTTP {code} for {repo}: try again later")
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return HubError(f"cannot download {repo}: {type(exc).__name__}: {text}")

    # -- the manager -------------------------------------------------------------------------

    def scan(self) -> HFCacheInfo | None:
        from huggingface_hub import scan_cache_dir

        if not self.cache.is_dir():
            return None
        try:
            return scan_cache_dir(self.cache)
        except Exception as exc:  # a cache huggingface_hub cannot read
            log.warning("the hub cache at %s cannot be read: %s", self.cache, exc)
            return None

    def models(
        self, folders: Sequence[Path] = (), default: str = "", skip: Sequence[Path] = ()
    ) -> list[ImageModel]:
        """The image models on disk: hub pipelines in the cache (with size and last use),
        then diffusers folders and single files in ``folders``."""
        out: list[ImageModel] = []
        info = self.scan()
        if info is not None:
            partial: dict[Path, int] = {}
            for inc in getattr(info, "incomplete_files", ()):
                repo_path = Path(inc.file_path).parent.parent
                partial[repo_path] = partial.get(repo_path, 0) + int(inc.size_on_disk)
            for repo in sorted(info.repos, key=lambda r: r.repo_id.lower()):
                if repo.repo_type != "model":
                    continue
                found = self.snapshot(repo.repo_id)
                if (
                    found is None or not (found[0] / "model_index.json").is_file()
                ) and repo.repo_path not in partial:
                    continue
                complete = found is not None and not check_folder(found[0], fp16=True)[0]
                out.append(
                    ImageModel(
                        name=repo.repo_id,
                        kind="hub",
                        path=repo.repo_path,
                        size=int(repo.size_on_disk),
                        last_used=float(repo.last_accessed),
                        default=repo.repo_id == default,
                        partial=partial.get(repo.repo_path, 0),
                        complete=complete,
                    )
                )
        wanted = _resolved(default)
        for folder in folders:
            for path in local_models(folder, skip):
                size = (
                    path.stat().st_size
                    if path.is_file()
                    else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
                )
                out.append(
                    ImageModel(
                        name=str(path),
                        kind="file" if path.is_file() else "folder",
                        path=path,
                        size=size,
                        last_used=path.stat().st_atime,
                        default=wanted is not None and path.resolve() == wanted,
                    )
                )
        return out

    def remove(self, name: str, folders: Sequence[Path] = ()) -> int:
        """Delete the model ``name`` (a hub id in the cache, or a model inside one of
        ``folders``); the bytes freed."""
        if is_hub_id(name):
            storage = repo_folder(self.cache, name)
            if not storage.is_dir():
                raise HubError(f"{name} is not in the cache ({self.cache})")
            info = self.scan()
            repo = next((r for r in (info.repos if info else ()) if r.repo_path == storage), None)
            freed = 0
            if repo is not None and repo.revisions:
                strategy = info.delete_revisions(*(r.commit_hash for r in repo.revisions))  # type: ignore[union-attr]
                freed = int(strategy.expected_freed_size)
                strategy.execute()
            if storage.exists():  # parts of interrupted downloads, refs
                freed += sum(
                    p.stat().st_size
                    for p in storage.rglob("*")
                    if p.is_file() and not p.is_symlink()
                )
                shutil.rmtree(storage, ignore_errors=True)
            shutil.rmtree(self.cache / ".locks" / storage.name, ignore_errors=True)
            return freed
        path = Path(name).expanduser().resolve()
        roots = [f.resolve() for f in folders]
        if not any(path != root and path.is_relative_to(root) for root in roots):
            shown = ", ".join(str(r) for r in roots) or "none set"
            raise HubError(
                f"{path} is not inside a [paths] models folder ({shown}): it is not deleted"
            )
        if not path.exists():
            raise HubError(f"{path} does not exist")
        if path.is_dir():
            freed = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
            shutil.rmtree(path)
        else:
            freed = path.stat().st_size
            path.unlink()
        return freed


def _quiet_library() -> None:
    """huggingface_hub's own messages ("Trying to resume download...") go to the app's log,
    not straight to the terminal, where they would land on the TUI's screen."""
    from huggingface_hub.utils import logging as hub_logging

    library = hub_logging.get_logger()  # configures it first, so the handler is there
    for handler in list(library.handlers):
        if type(handler) is logging.StreamHandler:
            library.removeHandler(handler)


def _resolved(model: str) -> Path | None:
    if not model or is_hub_id(model):
        return None
    return Path(model).expanduser().resolve()


def local_models(folder: Path, skip: Sequence[Path] = ()) -> list[Path]:
    """Diffusers folders (with a ``model_index.json``) and single ``.safetensors``/``.ckpt``
    files in ``folder`` and its subfolders (two levels, as A1111's ``models/`` has them),
    leaving out the folders in ``skip`` (the LoRAs and embeddings kept under it)."""
    found: list[Path] = []
    if not folder.is_dir():
        return found
    skipped = {p.expanduser().resolve() for p in skip}

    def walk(here: Path, depth: int) -> None:
        try:
            entries = sorted(here.iterdir(), key=lambda p: p.name.lower())
        except OSError:
            return
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.is_dir():
                if entry.resolve() in skipped:
                    continue
                if (entry / "model_index.json").is_file():
                    found.append(entry)
                elif depth < 2:
                    walk(entry, depth + 1)
            elif entry.suffix in SINGLE_FILES and entry.is_file():
                found.append(entry)

    walk(folder, 0)
    return found


def check_folder(
    folder: Path, *, fp16: bool, safety_checker: bool = False
) -> tuple[list[str], str | None]:
    """What a diffusers folder lacks to load (empty when complete), and the variant its
    weights would be read with."""
    index_path = folder / "model_index.json"
    try:
        model_index = json.loads(index_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ["model_index.json"], None
    files = [p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()]
    chosen, variant = choose_files(files, model_index, fp16=fp16, safety_checker=safety_checker)
    problems = []
    for component in pipeline_components(model_index, safety_checker=safety_checker):
        here = folder / component
        if not here.is_dir():
            problems.append(f"{component}/ is missing")
            continue
        weights = [c for c in chosen if c.startswith(component + "/") and c.endswith(WEIGHTS)]
        if (here / "config.json").is_file() and not weights:
            problems.append(f"{component}/ has no weights")
        for index in (c for c in chosen if c.startswith(component + "/") and _index_format(c)):
            try:
                shards = set(
                    json.loads((folder / index).read_text(encoding="utf-8"))["weight_map"].values()
                )
            except (OSError, ValueError, KeyError, AttributeError):
                problems.append(f"{index} cannot be read")
                continue
            problems += [
                f"{component}/{s} is missing" for s in sorted(shards) if not (here / s).is_file()
            ]
    return problems, variant


def wants_fp16(dtype: str) -> bool:
    """Whether ``[diffusion] dtype`` loads float16 weights (``auto`` does on CUDA): then the
    fp16 variant is the one to download."""
    if dtype == "float16":
        return True
    if dtype != "auto":
        return False
    import torch

    return bool(torch.cuda.is_available())


def default_model(configured: str, remembered: object) -> str:
    """The image model the app starts with: the one made default in the manager (kept in
    state.json) when there is one, else ``[diffusion] model``."""
    return remembered if isinstance(remembered, str) and remembered.strip() else configured
