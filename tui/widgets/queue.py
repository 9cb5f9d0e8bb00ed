"""The image queue as a list: each job with its state and progress; stop, pause or
resume, move, remove. Shown on the Image screen and the Monitor."""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual.binding import Binding
from textual.message import Message
from textual.widgets import OptionList
from textual.widgets.option_list import Option

from engines.queue import ImageQueue, Job, QueueError, QueueEvent
from engines.store import StoreError
from tui.text import visible

STATE_STYLE = {
    "running": "bold green",
    "queued": "cyan",
    "paused": "yellow",
    "done": "dim",
    "failed": "red",
    "stopped": "yellow",
}
STATE_MARK = {
    "running": "▶",
    "queued": "…",
    "paused": "⏸",
    "done": "✓",
    "failed": "✗",
    "stopped": "■",
}


ERROR_SHOWN = 80
"""Characters of a job's error in the list (the notice and the log have all of it)."""


class QueueList(OptionList):
    """The jobs: the running one, the waiting ones in order, then the latest finished."""

    BINDINGS = [
        Binding(
            "s",
            "stop",
            "Stop",
            tooltip="Stop the job (the running one within a step)",
            id="queue.stop",
        ),
        Binding(
            "p",
            "pause",
            "Pause/resume",
            tooltip="Pause a waiting job, or queue a paused one again",
            id="queue.pause",
        ),
        Binding(
            "r",
            "retry",
            "Resume/retry",
            tooltip="Queue a paused, stopped or failed job again (the images it did not make)",
            id="queue.retry",
        ),
        Binding("[", "move(-1)", "Move up", tooltip="Run the job sooner", id="queue.up"),
        Binding("]", "move(1)", "Move down", tooltip="Run the job later", id="queue.down"),
        Binding(
            "x,delete",
            "remove",
            "Remove",
            tooltip="Take the job off the list (its images stay)",
            id="queue.remove",
        ),
        Binding(
            "g",
            "grid",
            "Show batch",
            tooltip="Show the job's images as a grid (or its image)",
            id="queue.grid",
        ),
    ]

    @dataclass
    class Changed(Message):
        """The queue changed (posted from any thread; the newest one is enough)."""

        def can_replace(self, message: Message) -> bool:
            return isinstance(message, QueueList.Changed)

    @dataclass
    class ShowJob(Message):
        job: Job

    def __init__(self, queue: ImageQueue, *, id: str | None = None, compact: bool = False) -> None:
        super().__init__(id=id)
        self.queue = queue
        self.compact = compact
        self.jobs: list[Job] = []

    def on_mount(self) -> None:
        self.queue.subscribe(self._heard)
        self.refresh_jobs()

    def on_unmount(self) -> None:
        self.queue.unsubscribe(self._heard)

    def _heard(self, event: QueueEvent) -> None:
        """From the queue's thread: ask for a redraw (steps included, coalesced)."""
        self.post_message(self.Changed())

    def on_queue_list_changed(self, event: Changed) -> None:
        event.stop()
        self.refresh_jobs()

    def refresh_jobs(self) -> None:
        try:
            jobs = self.queue.jobs()
        except StoreError as exc:
            self.notify(str(exc), title="Queue", severity="error")
            return
        current = self.current()
        self.jobs = jobs
        self.clear_options()
        if not jobs:
            self.add_option(
                Option(Text("No jobs. Ctrl+G queues the form.", style="dim"), disabled=True)
            )
            return
        self.add_options(Option(self._label(job), id=str(job.id)) for job in jobs)
        ids = [j.id for j in jobs]
        self.highlighted = ids.index(current.id) if current and current.id in ids else 0

    def _label(self, job: Job) -> Text:
        step = self.queue.step_of(job.id)
        text = Text(no_wrap=True, overflow="ellipsis")
        text.append(f"{STATE_MARK[job.state]} #{job.id} ", style=STATE_STYLE[job.state])
        progress = f"{job.done}/{job.count}"
        if job.state == "running" and step is not None:
            progress += f" · step {step.step}/{step.steps}"
        text.append(f"{job.state} {progress} ", style=STATE_STYLE[job.state])
        prompt = job.request.prompt.splitlines()[0] if job.request.prompt else ""
        text.append(visible(prompt))
        if job.state in ("failed", "stopped") and job.error and not self.compact:
            error = (
                job.error if len(job.error) <= ERROR_SHOWN else job.error[: ERROR_SHOWN - 1] + "…"
            )
            text.append(f"\n  {visible(error)}", style=STATE_STYLE[job.state])
        return text

    def current(self) -> Job | None:
        if self.highlighted is None or not 0 <= self.highlighted < len(self.jobs):
            return None
        return self.jobs[self.highlighted]

    def _do(self, what: str, call: object) -> None:
        try:
            call()  # type: ignore[operator]
        except (QueueError, StoreError) as exc:
            self.notify(str(exc), title=what, severity="warning")

    def action_stop(self) -> None:
        if (job := self.current()) is not None:
            self._do("Stop", lambda: self.queue.stop(job.id))

    def action_pause(self) -> None:
        if (job := self.current()) is None:
            return
        if job.state == "queued":
            self._do("Pause", lambda: self.queue.pause(job.id))
        elif job.state == "paused":
            self._do("Resume", lambda: self.queue.resume(job.id))
            self.post_message(self.Resumed())

    def action_retry(self) -> None:
        if (job := self.current()) is not None and job.state in ("paused", "stopped", "failed"):
            self._do("Resume", lambda: self.queue.resume(job.id))
            self.post_message(self.Resumed())

    def action_move(self, delta: int) -> None:
        if (job := self.current()) is not None:
            self._do("Move", lambda: self.queue.move(job.id, delta))

    def action_remove(self) -> None:
        if (job := self.current()) is not None:
            self._do("Remove", lambda: self.queue.remove(job.id))

    def action_grid(self) -> None:
        if (job := self.current()) is not None:
            self.post_message(self.ShowJob(job))

    @dataclass
    class Resumed(Message):
        """Jobs were queued again: the screen makes sure the worker runs."""

    def _on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        self.action_grid()
