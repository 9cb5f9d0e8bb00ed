"""The turns a test reads: those of the conversation on screen, in order, not the turns the
view holds hidden for the next send (``ConversationView.make_ready``)."""

from __future__ import annotations

from typing import TypeVar

from textual.dom import DOMNode

from tui.widgets.conversation import ConversationView, Turn

T = TypeVar("T", bound=Turn)


def shown_turns(node: DOMNode, kind: type[T]) -> list[T]:
    """The turns of ``kind`` shown in the conversation view under ``node`` (a screen, or
    the app: its screen's)."""
    from textual.app import App

    screen = node.screen if isinstance(node, App) else node
    view = screen.query_one(ConversationView)
    return [turn for turn in view.turns() if isinstance(turn, kind)]


def shown_turn(node: DOMNode, kind: type[T]) -> T:
    """The one turn of ``kind`` shown (the test fails if there are more, or none)."""
    [turn] = shown_turns(node, kind)
    return turn
