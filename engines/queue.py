"""The image queue: generation jobs kept in SQLite, run one at a time by one worker.

A job is a validated :class:`~engines.diffusion.GenerationRequest` (its seed fixed when it
is queued, so that a job taken up again goes on with the seeds it would have used) and
the model it was queued for. Its ``state``:

- ``queued``: waiting its turn; ``paused``: waiting until resumed;
- ``running``: being made now, by the process whose owner token it holds;
- ``done``; ``failed`` (``error`` says why: out of memory, a model that no longer exists…);
- ``stopped``: stopped by the user, or by the end of the process that ran it (a kill):
  the images it finished are kept, and retrying makes the rest.

Jobs left by a process that ended are found when the queue opens (:meth:`recover`): what
waited is ``paused``, what ran is ``stopped``. One call (:meth:`resume_all`) queues them
again. Each saved image joins the index with its job's id, so a batch can be shown as a
grid. Listeners hear every change from the worker's thread.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from engines.diffusion import (
    MAX_COUNT,
    DiffusionError,
    EngineStatus,
    GeneratedImage,
    GenerationRequest,
    GenerationResult,
    LoadCancelled,
    StepInfo,
)
from engines.store import Store, StoreError

if TYPE_CHECKING:
    from engines.diffusion import DiffusionEngine

log = logging.getLogger(__name__)

JobState = Literal["queued", "running", "paused", "done", "failed", "stopped"]
WAITING: tuple[JobState, ...] = ("queued", "paused")
FINISHED: tuple[JobState, ...] = ("done", "failed", "stopped")
FINISHED_SHOWN = 20
"""How many finished jobs the queue lists under the waiting ones."""


class QueueError(Exception):
    """A queue action that cannot be done now; the message says why."""


@dataclass(frozen=True)
class Job:
    id: int
    request: GenerationRequest
    model: str
    state: JobState
    done: int
    """Images saved so far."""
    error: str | None
    position: float
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None

    @property
    def count(self) -> int:
        return self.request.count

    @property
    def remaining(self) -> int:
        return max(0, self.count - self.done)

    def rest(self) -> GenerationRequest:
        """The request for the images not made yet: the next seeds, the remaining count."""
        seed = self.request.seed
        return dataclasses.replace(
            self.request,
            count=max(1, self.remaining),
            seed=None if seed is None else (seed + self.done) % 2**32,
        )

    def describe(self) -> str:
        images = f"{self.done}/{self.count} image{'s' if self.count != 1 else ''}"
        if self.state == "failed":
            return f"failed ({images}): {self.error or 'unknown error'}"
        if self.state == "stopped":
            why = f": {self.error}" if self.error else ""
            return f"stopped ({images}){why}"
        return f"{self.state} ({images})"


@dataclass(frozen=True)
class QueueChanged:
    """Jobs were added, moved, removed or changed state."""


@dataclass(frozen=True)
class JobStepped:
    job_id: int
    info: StepInfo


@dataclass(frozen=True)
class JobImageSaved:
    job_id: int
    image: GeneratedImage


@dataclass(frozen=True)
class JobEnded:
    job: Job
    result: GenerationResult | None
    error: str | None


@dataclass(frozen=True)
class PipelineStatus:
    status: EngineStatus


QueueEvent = QueueChanged | JobStepped | JobImageSaved | JobEnded | PipelineStatus
Listener = Callable[[QueueEvent], None]


def request_to_json(request: GenerationRequest) -> str:
    return json.dumps(dataclasses.asdict(request))


def request_from_json(text: str) -> GenerationRequest:
    """A stored request; keys of another version of the app are left out."""
    data = json.loads(text)
    names = {f.name for f in dataclasses.fields(GenerationRequest)}
    return GenerationRequest(**{k: v for k, v in data.items() if k in names})


def model_missing(model: str) -> str | None:
    """Why a job's model cannot be used (a local folder or file that is gone), or None.
    A hub id is left to loading to judge."""
    path = Path(model).expanduser()
    looks_local = (
        path.is_absolute()
        or model.startswith((".", "~"))
        or model.endswith((".safetensors", ".ckpt"))
    )
    if looks_local and not path.exists():
        return f"the model {model} does not exist (moved or deleted?): queue the job with another"
    return None


@dataclass
class _Running:
    job_id: int
    cancel: threading.Event = field(default_factory=threading.Event)
    pausing: bool = False
    """Cancelled to be taken up again later (the app quits), not stopped by the user."""
    step: StepInfo | None = None


class ImageQueue:
    """The persistent queue. Safe to use from the UI thread and the worker's."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._lock = threading.RLock()
        self._listeners: list[Listener] = []
        self._running: _Running | None = None
        self._worker_alive = False
        self._closing = False
        self.recovered: tuple[int, int] = (0, 0)
        """(jobs paused, jobs stopped) by :meth:`recover`."""

    # -- listeners ----------------------------------------------------------------

    def subscribe(self, listener: Listener) -> None:
        with self._lock:
            self._listeners.append(listener)

    def unsubscribe(self, listener: Listener) -> None:
        with self._lock, contextlib.suppress(ValueError):
            self._listeners.remove(listener)

    def _emit(self, event: QueueEvent) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            try:
                listener(event)
            except Exception:  # a listener's bug must not stop the queue
                log.exception("queue listener failed")

    # -- reading ------------------------------------------------------------------

    @staticmethod
    def _job(row: sqlite3.Row) -> Job:
        return Job(
            id=row["id"],
            request=request_from_json(row["request"]),
            model=row["model"],
            state=row["state"],
            done=row["done"],
            error=row["error"],
            position=row["position"],
            created_at=row["created_at"],
            started_at=row["started_at"],
            finished_at=row["finished_at"],
        )

    def jobs(self, finished: int = FINISHED_SHOWN) -> list[Job]:
        """The running job, the waiting ones in their order, then the latest ``finished``.
        One statement, so one state of the table: read in two, a job that ended between
        them (the worker stopping it) was listed twice, and the queue's list, which keys
        its rows by job, raised and ended the app."""
        rows = self.store._query(
            "SELECT * FROM jobs WHERE state IN ('running', 'queued', 'paused')"
            " OR id IN (SELECT id FROM jobs WHERE state IN ('done', 'failed', 'stopped')"
            " ORDER BY finished_at DESC, id DESC LIMIT ?)",
            (finished,),
        )
        active: list[Job] = []
        ended: list[Job] = []
        for row in rows:
            job = self._job(row)
            (ended if job.state in ("done", "failed", "stopped") else active).append(job)
        active.sort(key=lambda j: (j.state != "running", j.position, j.id))
        ended.sort(key=lambda j: (j.finished_at or 0.0, j.id), reverse=True)
        return active + ended

    def job(self, job_id: int) -> Job | None:
        rows = self.store._query("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return self._job(rows[0]) if rows else None

    def images_of(self, job_id: int) -> list[Path]:
        """The images a job saved that are still in the gallery, in the order made."""
        rows = self.store._query(
            "SELECT path FROM images WHERE job_id = ? AND trashed_at IS NULL ORDER BY id",
            (job_id,),
        )
        return [Path(r["path"]) for r in rows]

    def counts(self) -> dict[str, int]:
        rows = self.store._query("SELECT state, COUNT(*) AS n FROM jobs GROUP BY state")
        return {str(r["state"]): int(r["n"]) for r in rows}

    def step_of(self, job_id: int) -> StepInfo | None:
        """The newest step of the job being made, if it is ``job_id``."""
        running = self._running
        return running.step if running is not None and running.job_id == job_id else None

    @property
    def running_id(self) -> int | None:
        running = self._running
        return running.job_id if running is not None else None

    # -- changing -----------------------------------------------------------------

    def add(
        self,
        request: GenerationRequest,
        model: str,
        *,
        origin: tuple[int | None, int | None] = (None, None),
    ) -> Job:
        """Queue ``request`` (already validated) for ``model``, last in the queue. A
        request with no seed gets one now, so its images can be made again. ``origin``:
        the conversation and the message it came from (the chat asked for it); its
        images are linked to them."""
        if request.seed is None:
            request = dataclasses.replace(request, seed=secrets.randbelow(2**32 - MAX_COUNT))
        now = time.time()
        with self.store._tx() as c:
            row = c.execute("SELECT COALESCE(MAX(position), 0) + 1 FROM jobs").fetchone()
            cur = c.execute(
                "INSERT INTO jobs (position, request, model, state, created_at,"
                " conversation_id, message_id) VALUES (?, ?, ?, 'queued', ?, ?, ?)",
                (row[0], request_to_json(request), model, now, *origin),
            )
        job = self.job(int(cur.lastrowid or 0))
        assert job is not None
        self._emit(QueueChanged())
        return job

    def _set_state(self, job_id: int, state: JobState, *, where: tuple[JobState, ...]) -> bool:
        marks = ",".join("?" * len(where))
        with self.store._tx() as c:
            changed = c.execute(
                f"UPDATE jobs SET state = ?, error = NULL WHERE id = ? AND state IN ({marks})",
                (state, job_id, *where),
            ).rowcount
        if changed:
            self._emit(QueueChanged())
        return bool(changed)

    def pause(self, job_id: int) -> bool:
        """A queued job waits until resumed."""
        return self._set_state(job_id, "paused", where=("queued",))

    def resume(self, job_id: int) -> bool:
        """A paused job is queued again; a stopped or failed one is retried for the images
        it did not make."""
        job = self.job(job_id)
        if job is None:
            return False
        if job.state in ("stopped", "failed") and job.remaining == 0:
            raise QueueError(f"job {job_id} made all its images: nothing is left to retry")
        with self.store._tx() as c:
            row = c.execute("SELECT COALESCE(MAX(position), 0) + 1 FROM jobs").fetchone()
            changed = c.execute(
                "UPDATE jobs SET state = 'queued', error = NULL, finished_at = NULL,"
                " position = CASE WHEN state = 'paused' THEN position ELSE ? END"
                " WHERE id = ? AND state IN ('paused', 'stopped', 'failed')",
                (row[0], job_id),
            ).rowcount
        if changed:
            self._emit(QueueChanged())
        return bool(changed)

    def resume_all(self) -> int:
        """Queue every paused job again; how many."""
        with self.store._tx() as c:
            changed = c.execute("UPDATE jobs SET state = 'queued' WHERE state = 'paused'").rowcount
        if changed:
            self._emit(QueueChanged())
        return int(changed)

    def stop(self, job_id: int) -> bool:
        """Stop a job: the running one within a step (its finished images are kept), a
        waiting one before it starts."""
        running = self._running
        if running is not None and running.job_id == job_id:
            running.cancel.set()
            return True
        with self.store._tx() as c:
            changed = c.execute(
                "UPDATE jobs SET state = 'stopped', error = 'stopped before it started',"
                " finished_at = ? WHERE id = ? AND state IN ('queued', 'paused')",
                (time.time(), job_id),
            ).rowcount
        if changed:
            self._emit(QueueChanged())
        return bool(changed)

    def remove(self, job_id: int) -> None:
        """Take a job off the list (its images stay in the gallery). The running job must
        be stopped first."""
        if self.running_id == job_id:
            raise QueueError("the job is running: stop it first (s), then remove it")
        with self.store._tx() as c:
            c.execute("DELETE FROM jobs WHERE id = ? AND state != 'running'", (job_id,))
        self._emit(QueueChanged())

    def clear_finished(self) -> int:
        with self.store._tx() as c:
            n = c.execute("DELETE FROM jobs WHERE state IN ('done', 'failed', 'stopped')").rowcount
        if n:
            self._emit(QueueChanged())
        return int(n)

    def move(self, job_id: int, delta: int) -> bool:
        """Move a waiting job ``delta`` places (negative: sooner) among the waiting jobs."""
        with self.store._tx() as c:
            rows = c.execute(
                "SELECT id, position FROM jobs WHERE state IN ('queued', 'paused')"
                " ORDER BY position, id"
            ).fetchall()
            ids = [r[0] for r in rows]
            if job_id not in ids:
                return False
            i = ids.index(job_id)
            j = max(0, min(len(ids) - 1, i + delta))
            if i == j:
                return False
            ids.insert(j, ids.pop(i))
            for position, jid in enumerate(ids, start=1):
                c.execute("UPDATE jobs SET position = ? WHERE id = ?", (position, jid))
        self._emit(QueueChanged())
        return True

    def recover(self) -> tuple[int, int]:
        """Jobs left by a process that ended: the waiting ones are paused, the one it ran
        is stopped (its finished images are kept; no partial file is left, images are
        written whole or not at all). Jobs of a live process (another window) are left."""
        store = self.store
        paused = stopped = 0
        rows = store._query(
            "SELECT id, state, owner FROM jobs WHERE state IN ('running', 'queued')"
        )
        for r in rows:
            if store._owner_alive(r["owner"]):
                continue
            with store._tx() as c:
                if r["state"] == "running":
                    stopped += c.execute(
                        "UPDATE jobs SET state = 'stopped', finished_at = ?, error ="
                        " 'the app ended while it ran' WHERE id = ? AND state = 'running'",
                        (time.time(), r["id"]),
                    ).rowcount
                else:
                    paused += c.execute(
                        "UPDATE jobs SET state = 'paused' WHERE id = ? AND state = 'queued'",
                        (r["id"],),
                    ).rowcount
        self.recovered = (paused, stopped)
        if paused or stopped:
            log.warning(
                "image jobs left by an earlier exit", extra={"paused": paused, "stopped": stopped}
            )
        return paused, stopped

    def claim(self) -> None:
        """Mark every queued job as this process's (the worker runs them)."""
        with self.store._lock:
            owner = self.store._claim()
        with self.store._tx() as c:
            c.execute("UPDATE jobs SET owner = ? WHERE state = 'queued'", (owner,))

    # -- running ------------------------------------------------------------------

    def want_worker(self) -> bool:
        """True when the caller must start a worker to run :meth:`run` (none is running);
        the worker's end and this check cannot miss each other."""
        with self._lock:
            if self._worker_alive:
                return False
            self._worker_alive = True
            return True

    @property
    def busy(self) -> bool:
        """Whether the worker is at work (a job runs, or it is taking the next one)."""
        return self._worker_alive

    def _next(self) -> Job | None:
        with self._lock:
            rows = self.store._query(
                "SELECT * FROM jobs WHERE state = 'queued' ORDER BY position, id LIMIT 1"
            )
            if not rows or self._closing:
                self._worker_alive = False
                self._running = None
                return None
            job = self._job(rows[0])
            with self.store._lock:
                owner = self.store._claim()
            with self.store._tx() as c:
                c.execute(
                    "UPDATE jobs SET state = 'running', owner = ?, started_at = ?, error = NULL"
                    " WHERE id = ?",
                    (owner, time.time(), job.id),
                )
            self._running = _Running(job.id)
            return dataclasses.replace(job, state="running")

    def run(self, engine: DiffusionEngine) -> None:
        """Run queued jobs one at a time until none is left (the worker's body). Claim it
        with :meth:`want_worker` first."""
        try:
            while (job := self._next()) is not None:
                self._emit(QueueChanged())
                self._run_job(engine, job)
        except StoreError as exc:  # the database went away (the app is closing, say)
            log.error("the image queue stopped: %s", exc)
        finally:
            with self._lock:
                self._worker_alive = False
                self._running = None
            self._emit(QueueChanged())  # the worker's end: nothing runs now

    def pause_running(self) -> None:
        """The app is quitting: the running job stops within a step and waits, paused, to
        be taken up at the next start; the worker takes no other job (those left queued
        are paused at the next start)."""
        self._closing = True  # the worker takes no other job
        running = self._running
        if running is not None:
            running.pausing = True
            running.cancel.set()

    def _run_job(self, engine: DiffusionEngine, job: Job) -> None:
        running = self._running
        assert running is not None
        cancel = running.cancel
        result: GenerationResult | None = None
        error = model_missing(job.model)
        if error is None:
            try:
                if not engine.loaded or engine.model != job.model:
                    engine.load(
                        job.model,
                        on_progress=lambda s: self._emit(PipelineStatus(s)),
                        cancel=cancel,
                    )
                    self._emit(PipelineStatus(engine.status))

                def on_step(info: StepInfo) -> None:
                    running.step = info
                    self._emit(JobStepped(job.id, info))

                def on_image(image: GeneratedImage) -> None:
                    self._image_saved(job.id, image)

                result = engine.generate(
                    job.rest(), on_step=on_step, cancel=cancel, on_image=on_image
                )
            except LoadCancelled as exc:  # asked for, not a failure; its words say what
                result = GenerationResult(cancelled=True, notes=[str(exc)])
                self._emit(PipelineStatus(engine.status))
            except DiffusionError as exc:
                error = str(exc)
                self._emit(PipelineStatus(engine.status))
        ended = self._finish(job.id, result, error, pausing=running.pausing)
        with self._lock:
            self._running = None
        self._emit(QueueChanged())
        self._emit(JobEnded(ended, result, error))

    def _image_saved(self, job_id: int, image: GeneratedImage) -> None:
        with self.store._tx() as c:
            c.execute("UPDATE jobs SET done = done + 1 WHERE id = ?", (job_id,))
            c.execute(
                "UPDATE images SET job_id = ?1, conversation_id = (SELECT conversation_id"
                " FROM jobs WHERE id = ?1), message_id = (SELECT message_id FROM jobs"
                " WHERE id = ?1) WHERE path = ?2",
                (job_id, str(image.path)),
            )
        self._emit(JobImageSaved(job_id, image))

    def _finish(
        self, job_id: int, result: GenerationResult | None, error: str | None, *, pausing: bool
    ) -> Job:
        state: JobState
        if error is not None:
            state = "failed"
        elif result is not None and result.cancelled:
            state = "paused" if pausing else "stopped"
        else:
            state = "done"
        with self.store._tx() as c:
            c.execute(
                "UPDATE jobs SET state = ?, error = ?, finished_at = ? WHERE id = ?",
                (
                    state,
                    error
                    if state == "failed"
                    else ("stopped by you" if state == "stopped" else None),
                    None if state == "paused" else time.time(),
                    job_id,
                ),
            )
        if error is not None:
            log.warning("image job failed", extra={"job": job_id, "error": error})
        job = self.job(job_id)
        assert job is not None
        return job
