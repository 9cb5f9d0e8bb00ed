"""The base of every screen and dialog of the app: the app, typed, and worker failures
reported to it.

Textual posts a worker's state changes to the node that started it, and they do not
bubble; the app's one handler (``LlmPessoalApp.on_worker_failed``) hears of a failed
worker through the message posted here."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any, TypeVar, cast

from textual.message import Message
from textual.screen import ModalScreen, Screen
from textual.timer import Timer, TimerCallback
from textual.worker import Worker, WorkerState

from tui.compositor import DrawsSoon

if TYPE_CHECKING:
    from textual.dom import DOMNode

    from tui.app import LlmPessoalApp

ResultT = TypeVar("ResultT")

STYLES = Path(__file__).resolve().parent.parent
"""Where the ``.tcss`` files are (``tui/``)."""
SHORTEST_TIMER_S = 0.001
"""The shortest timer a screen sets (see ``AppScreen.set_timer``)."""


def styles(*names: str) -> list[str | PurePath]:
    """A screen's ``CSS_PATH``: its style files in ``tui/``, read when the screen is first
    shown, so the first frame parses only the rules of the screen it shows."""
    return [STYLES / name for name in names]


@dataclass
class WorkerFailed(Message):
    """A worker of ``screen`` ended with an exception nobody caught."""

    worker: Worker[Any]
    screen: Screen[Any]


def app_of(node: DOMNode) -> LlmPessoalApp:
    """The app, with its settings, store and engines: the one typed cast of ``node.app``."""
    return cast("LlmPessoalApp", node.app)


class ReportsWorkerFailures:
    """For a screen or a widget that starts workers: a worker that fails is reported to
    the app's one handler (Textual tells only the node that started it)."""

    def _on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state is WorkerState.ERROR:
            node = cast("DOMNode", self)
            screen = node if isinstance(node, Screen) else node.screen
            node.app.post_message(WorkerFailed(event.worker, screen))


class AppScreen(ReportsWorkerFailures, DrawsSoon, Screen[ResultT]):
    """A screen of llm-pessoal."""

    def set_timer(
        self,
        delay: float,
        callback: TimerCallback | None = None,
        *,
        name: str | None = None,
        pause: bool = False,
    ) -> Timer:
        """Textual's, never for less than ``SHORTEST_TIMER_S``: Textual 8's timer divides
        by its delay when it starts late (textual#6370). A delay worked out as "what is
        left" (``first_words_due``) can be 0 on a loaded machine; such a timer died
        without calling back, and raised ``ZeroDivisionError`` when stopped (quitting)."""
        return super().set_timer(max(delay, SHORTEST_TIMER_S), callback, name=name, pause=pause)

    @property
    def lp(self) -> LlmPessoalApp:
        """The app, with its settings, store and engines."""
        return app_of(self)


class AppModal(ModalScreen[ResultT], AppScreen[ResultT]):
    """A dialog of llm-pessoal: above a screen, its keys before the app's."""

    CSS_PATH = styles("dialogs.tcss")
