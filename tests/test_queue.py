"""The persistent image queue (engines/queue.py) with the tiny pipeline, loaded the app's
real way; and a kill -9 while it runs, in a real process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from engines.config import DiffusionSettings
from engines.diffusion import DiffusionEngine, GeneratedImage, GenerationRequest
from engines.images import read_parameters
from engines.queue import ImageQueue, JobEnded, JobStepped, QueueError, QueueEvent
from engines.store import MIGRATIONS, Store

# Its module fixture loads a pipeline: one worker runs the module under pytest-xdist.
pytestmark = pytest.mark.xdist_group("queue")

ROOT = Path(__file__).resolve().parent.parent


def request(**changes: object) -> GenerationRequest:
    base = GenerationRequest(
        "a lighthouse", width=64, height=64, steps=2, seed=7, scheduler="Euler"
    )
    return replace(base, **changes)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def engine(tiny_sd_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> DiffusionEngine:
    e = DiffusionEngine(
        DiffusionSettings(model=str(tiny_sd_folder), device="cpu"), tmp_path_factory.mktemp("o")
    )
    e.load()
    return e


@pytest.fixture
def store(tmp_path: Path, engine: DiffusionEngine) -> Store:
    s = Store.open(tmp_path / "data" / "db.sqlite")
    engine.outputs = tmp_path / "outputs"

    def index(image: GeneratedImage) -> None:
        s.add_image(image.path, image.parameters, image.seconds)

    engine.on_image = index
    return s


def run(queue: ImageQueue, engine: DiffusionEngine) -> None:
    assert queue.want_worker()
    queue.run(engine)


def test_jobs_run_one_at_a_time_in_order_and_their_images_join_the_index(
    store: Store, engine: DiffusionEngine
) -> None:
    queue = ImageQueue(store)
    events: list[QueueEvent] = []
    queue.subscribe(events.append)
    first = queue.add(request(prompt="first", count=2), engine.model)
    second = queue.add(request(prompt="second", seed=None), engine.model)
    assert second.request.seed is not None, "a job gets its seed when queued"
    assert [j.state for j in queue.jobs()] == ["queued", "queued"]
    run(queue, engine)
    done = {j.id: j for j in queue.jobs()}
    assert done[first.id].state == "done" and done[first.id].done == 2
    assert done[second.id].state == "done" and done[second.id].done == 1
    ended = [e.job.id for e in events if isinstance(e, JobEnded)]
    assert ended == [first.id, second.id]
    # steps of the first job all came before any of the second's
    stepped = [e.job_id for e in events if isinstance(e, JobStepped)]
    assert stepped == sorted(stepped) and set(stepped) == {first.id, second.id}
    batch = queue.images_of(first.id)
    assert [read_parameters(p).seed for p in batch] == [7, 8]
    assert {i.path for i in store.images()} == {*batch, *queue.images_of(second.id)}


def test_move_pause_remove_and_a_failing_job_does_not_stop_the_queue(
    store: Store, engine: DiffusionEngine, tmp_path: Path
) -> None:
    queue = ImageQueue(store)
    a = queue.add(request(prompt="a"), engine.model)
    gone = queue.add(request(prompt="b"), str(tmp_path / "deleted-model"))
    c = queue.add(request(prompt="c"), engine.model)
    d = queue.add(request(prompt="d"), engine.model)
    assert queue.move(c.id, -2)
    assert [j.id for j in queue.jobs()] == [c.id, a.id, gone.id, d.id]
    assert queue.pause(d.id)
    queue.remove(a.id)
    run(queue, engine)
    jobs = {j.id: j for j in queue.jobs()}
    assert a.id not in jobs
    assert jobs[c.id].state == "done"
    assert jobs[gone.id].state == "failed"
    assert "does not exist" in (jobs[gone.id].error or "")
    assert jobs[d.id].state == "paused", "a paused job waits"
    assert queue.resume_all() == 1
    run(queue, engine)
    assert queue.job(d.id).state == "done"  # type: ignore[union-attr]
    assert not queue.resume(c.id), "a done job is not made again"


def test_stop_keeps_the_finished_images_and_retry_makes_the_rest(
    store: Store, engine: DiffusionEngine
) -> None:
    queue = ImageQueue(store)
    job = queue.add(request(count=3, steps=3, seed=100), engine.model)

    def stop_after_first(event: QueueEvent) -> None:
        if isinstance(event, JobStepped) and event.info.image_index == 1:
            queue.stop(job.id)

    queue.subscribe(stop_after_first)
    run(queue, engine)
    queue.unsubscribe(stop_after_first)
    stopped = queue.job(job.id)
    assert stopped is not None and stopped.state == "stopped" and stopped.done == 1
    assert queue.resume(job.id)
    run(queue, engine)
    again = queue.job(job.id)
    assert again is not None and again.state == "done" and again.done == 3
    queue.stop(job.id)
    with pytest.raises(QueueError, match="nothing is left"):
        with_state(store, job.id, "stopped")
        queue.resume(job.id)
    seeds = [read_parameters(p).seed for p in queue.images_of(job.id)]
    assert seeds == [100, 101, 102], "retried with the seeds it had not used"


def with_state(store: Store, job_id: int, state: str) -> None:
    import sqlite3

    assert store.path is not None
    with sqlite3.connect(store.path) as conn:
        conn.execute("UPDATE jobs SET state = ? WHERE id = ?", (state, job_id))


def test_jobs_left_by_an_ended_process_come_back_paused_or_stopped(
    tmp_path: Path, engine: DiffusionEngine
) -> None:
    path = tmp_path / "db.sqlite"
    first = Store.open(path)
    queue = ImageQueue(first)
    waiting = queue.add(request(), engine.model)
    ran = queue.add(request(), engine.model)
    queue.claim()
    import sqlite3

    with sqlite3.connect(path) as conn:  # as the worker marks the job it runs
        conn.execute("UPDATE jobs SET state = 'running' WHERE id = ?", (ran.id,))
    first.close()  # the process ends: its owner lock goes
    second = Store.open(path)
    again = ImageQueue(second)
    assert again.recover() == (1, 1)
    assert again.job(waiting.id).state == "paused"  # type: ignore[union-attr]
    stopped = again.job(ran.id)
    assert stopped is not None and stopped.state == "stopped" and "ended" in (stopped.error or "")
    assert again.resume_all() == 1


def test_a_live_process_keeps_its_jobs(tmp_path: Path, engine: DiffusionEngine) -> None:
    path = tmp_path / "db.sqlite"
    live = Store.open(path)
    ImageQueue(live).add(request(), engine.model)
    ImageQueue(live).claim()
    other = Store.open(path)
    assert ImageQueue(other).recover() == (0, 0)
    live.close()
    other.close()


def test_the_queue_migration_upgrades_old_databases(tmp_path: Path) -> None:
    import shutil
    import sqlite3

    old = tmp_path / "v2.db"
    shutil.copy(Path(__file__).parent / "data" / "schema-v2.db", old)
    store = Store.open(old)
    images_before = len(store.images())
    assert ImageQueue(store).jobs() == []
    store.close()
    with sqlite3.connect(old) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        columns = {r[1] for r in conn.execute("PRAGMA table_info(images)")}
    assert {"job_id", "trashed_at", "trashed_from"} <= columns
    assert images_before == len(Store.open(old).images()), "no image row was lost"


KILLED = """
import sys, threading, time
from pathlib import Path
from engines.config import DiffusionSettings
from engines.diffusion import DiffusionEngine, GenerationRequest
from engines.queue import ImageQueue, JobImageSaved, JobStepped
from engines.store import Store

db, outputs, model = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
store = Store.open(db)
engine = DiffusionEngine(DiffusionSettings(model=model, device="cpu"), outputs,
    on_image=lambda i: store.add_image(i.path, i.parameters, i.seconds))
queue = ImageQueue(store)
job = queue.add(GenerationRequest("killed", width=64, height=64, steps=50, seed=3, count=10,
    scheduler="Euler"), model)
queue.add(GenerationRequest("waiting", width=64, height=64, steps=2, seed=3), model)
queue.claim()
saved = 0
def heard(event):
    global saved
    if isinstance(event, JobImageSaved):
        saved += 1
    if isinstance(event, JobStepped) and saved >= 1 and event.info.step > 5:
        print("running", flush=True)
queue.subscribe(heard)
queue.want_worker()
queue.run(engine)
"""


def test_kill_9_while_the_queue_runs_leaves_whole_pngs_and_the_job_stopped(
    tmp_path: Path, tiny_sd_folder: Path
) -> None:
    db, outputs = tmp_path / "db.sqlite", tmp_path / "outputs"
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(KILLED), str(db), str(outputs), str(tiny_sd_folder)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        cwd=tmp_path,
    )
    assert proc.stdout is not None
    try:
        line = proc.stdout.readline()  # an image saved, the next one half made
        assert line.strip() == "running"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    store = Store.open(db)
    queue = ImageQueue(store)
    assert queue.recover() == (1, 1)
    killed, waiting = sorted(queue.jobs(), key=lambda j: j.id)
    assert killed.state == "stopped" and killed.done >= 1 and killed.done < 10
    assert waiting.state == "paused"
    finished = [p for p in outputs.glob("*.png") if not p.name.startswith(".tmp-")]
    assert len(finished) == killed.done
    for png in finished:  # every PNG there is whole, with its settings
        with Image.open(png) as im:
            im.load()
        assert read_parameters(png).prompt == "killed"
    assert {i.path for i in store.images()} == set(finished)


def test_the_list_holds_each_job_once_while_the_worker_ends_one(
    store: Store, engine: DiffusionEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The list is read while the worker runs: a job it stops or finishes meanwhile is
    listed once, as running or as ended (twice, the queue's list on screen raised)."""
    queue = ImageQueue(store)
    ended = queue.add(request(), engine.model)
    running = queue.add(request(), engine.model)
    with_state(store, ended.id, "done")
    with_state(store, running.id, "running")
    query = store._query

    def query_as_the_worker_stops_the_job(sql: str, args: tuple[object, ...] = ()) -> Any:
        rows = query(sql, args)
        with_state(store, running.id, "stopped")  # right after this read
        return rows

    monkeypatch.setattr(store, "_query", query_as_the_worker_stops_the_job)
    jobs = queue.jobs()
    assert [(j.id, j.state) for j in jobs] == [(running.id, "running"), (ended.id, "done")]
    monkeypatch.undo()
    assert [(j.id, j.state) for j in queue.jobs()] == [
        (running.id, "stopped"),
        (ended.id, "done"),
    ], "then as ended, once"


def test_the_queue_claims_one_worker(store: Store) -> None:
    queue = ImageQueue(store)
    assert queue.want_worker()
    assert not queue.want_worker(), "a second caller does not start another worker"
    barrier = threading.Event()

    def worker() -> None:
        queue.run(engine=None)  # type: ignore[arg-type]  # nothing queued: it ends at once
        barrier.set()

    threading.Thread(target=worker).start()
    assert barrier.wait(10)
    assert queue.want_worker(), "once the worker ended, the next job starts one"


def test_quitting_pauses_the_running_job_and_takes_no_other(
    store: Store, engine: DiffusionEngine
) -> None:
    queue = ImageQueue(store)
    running = queue.add(request(steps=20, count=2), engine.model)
    waiting = queue.add(request(), engine.model)

    def quit_midway(event: QueueEvent) -> None:
        if isinstance(event, JobStepped) and event.info.step == 2:
            queue.pause_running()  # the app's unmount

    queue.subscribe(quit_midway)
    run(queue, engine)
    assert queue.job(running.id).state == "paused"  # type: ignore[union-attr]
    assert queue.job(waiting.id).state == "queued", "left for the next start to pause"
    assert not queue.busy
