"""Progress on standard error for the CLI, drawn by ``rich.progress``.

On a terminal the bars are redrawn in place, at most :data:`REFRESH_PER_S` times a second;
elsewhere (a log file, a CI job) each task gets a plain line now and then
(:data:`SPARSE_EVERY_S`) and always its last one. Descriptions are outside text (a model's
name, a server's status) and go through the display function.
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any, TextIO

from tui.text import shown, visible

if TYPE_CHECKING:
    from rich.progress import ProgressColumn, TaskID

REFRESH_PER_S = 4
SPARSE_EVERY_S = 2.0


class Bars:
    """A ``rich.progress.Progress`` on ``out`` that is sparse when ``out`` is not a terminal."""

    def __init__(
        self,
        columns: list[ProgressColumn | str],
        out: TextIO | None = None,
        tty: bool | None = None,
    ) -> None:
        from rich.console import Console
        from rich.progress import Progress

        self.out = sys.stderr if out is None else out
        self.tty = self.out.isatty() if tty is None else tty
        self.console = Console(
            file=self.out,
            force_terminal=self.tty,
            force_interactive=self.tty,
            no_color=not self.tty,
            width=None if self.tty else 120,
            highlight=False,
        )
        self.progress = Progress(
            *columns,
            console=self.console,
            refresh_per_second=REFRESH_PER_S,
            auto_refresh=self.tty,
            disable=not self.tty,
        )
        self.printed_at: dict[TaskID, float] = {}
        self.started = False

    def __enter__(self) -> Bars:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        if self.tty and not self.started:
            self.progress.start()
        self.started = True

    def stop(self) -> None:
        if self.tty and self.started:
            self.progress.stop()
        self.started = False

    def add(self, description: str, total: float | None, **fields: Any) -> TaskID:
        return self.progress.add_task(visible(description), total=total, **fields)

    def update(self, task: TaskID, completed: float, **fields: Any) -> None:
        """Move ``task`` to ``completed``; off a terminal, print its line if it is due."""
        self.progress.update(task, completed=completed, **fields)
        if self.tty:
            return
        t = self.progress.tasks[self.progress.task_ids.index(task)]
        now = time.monotonic()
        last = self.printed_at.get(task)
        if t.finished or last is None or now - last >= SPARSE_EVERY_S:
            self.printed_at[task] = now
            self.console.print(self.progress.make_tasks_table([t]))

    def finish(self, task: TaskID) -> None:
        """``task`` is done: its last line is printed for good (above the bars still
        running, in order with the notes) and it is no longer redrawn."""
        if self.tty:
            t = self.progress.tasks[self.progress.task_ids.index(task)]
            self.console.print(self.progress.make_tasks_table([t]))
            self.progress.remove_task(task)
        else:
            self.progress.stop_task(task)

    def note(self, text: str) -> None:
        """A line of text above the bars (or between the lines, off a terminal)."""
        self.console.print(shown(text), soft_wrap=True)
