"""The footer, without the leak of Textual's own.

Textual's Footer binds each of its keys to its ``compact`` reactive, and composes
its keys again whenever the bindings change (a reply starting or ending, a screen
switch, the focus moving). The watchers of the keys it drops are only pruned when
``compact`` changes, which it never does here: each recompose kept a dozen dead
widgets alive. This footer prunes them before composing."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.widgets import Footer


class AppFooter(Footer):
    def compose(self) -> ComposeResult:
        watchers = getattr(self, "__watchers", {})
        for name, bound in watchers.items():
            watchers[name] = [
                (node, cb) for node, cb in bound if not (node._closing or node._closed)
            ]
        yield from super().compose()
