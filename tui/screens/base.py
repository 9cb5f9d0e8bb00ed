"""The base of every screen and dialog of the app: the app, typed, and worker failures
reported to it.

Textual posts a worker's state changes to the node that started it, and they do not
bubble; the app's one handler (``LlmPessoalApp.on_worker_failed``) hears of a failed
worker through the message posted here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar, cast

from textual.message import Message
from textual.screen import ModalScreen, Screen
from textual.worker import Worker, WorkerState

if TYPE_CHECKING:
    from tui.app import LlmPessoalApp

ResultT = TypeVar("ResultT")


@dataclass
class WorkerFailed(Message):
    """A worker of ``screen`` ended with an exception nobody caught."""

    worker: Worker[Any]
    screen: Screen[Any]


class AppScreen(Screen[ResultT]):
    """A screen of llm-pessoal."""

    @property
    def lp(self) -> LlmPessoalApp:
        """The app, with its settings, store and engines."""
        return cast("LlmPessoalApp", self.app)

    def _on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state is WorkerState.ERROR:
            self.app.post_message(WorkerFailed(event.worker, self))


class AppModal(ModalScreen[ResultT], AppScreen[ResultT]):
    """A dialog of llm-pessoal: above a screen, its keys before the app's."""
