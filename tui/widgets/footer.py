"""The footer, without the leak of Textual's own.

Textual's Footer binds each of its keys to its ``compact`` reactive, and composes
its keys again whenever the bindings change (a reply starting or ending, a screen
switch, the focus moving). The watchers of the keys it drops are only pruned when
``compact`` changes, which it never does here: each recompose kept a dozen dead
widgets alive. This footer prunes them before composing.

Each key is also made with the footer's ``compact`` already set: a key starts compact and
the binding then sets it back, and each change restyled the key (two style passes a key,
a fifth of the time a screen with a dozen keys took to open). Keys the same as those on
show are not composed again (the start composed the same dozen twice).

When a reply has just been sent, the keys it changes (Esc stops it) are composed 0.3 s
after the send (``first_words_due`` of the app), by when its first words have had their
turn: composed at once, they took 5-10 ms of the event loop just as the first words came,
and their layout went with the words' frame. A footer not composed yet (a dialog just
opened) is composed at once."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import Footer
from textual.widgets._footer import FooterKey


class AppFooter(Footer):
    _recompose_queued = False
    _composed: tuple[object, ...] | None = None
    """What the keys were composed from (``_keys``): the same again is not composed again."""

    def bindings_changed(self, screen: Screen[object]) -> None:
        """Compose the keys again once for the changes made before the next frame (a
        screen opening changes them two or three times: its focus, its stack)."""
        self._bindings_ready = True
        if not screen.app.app_focus or not self.is_attached or screen is not self.screen:
            return
        if not self._recompose_queued:
            self._recompose_queued = True
            self.call_after_refresh(self._recompose_once)

    async def _recompose_once(self) -> None:
        self._recompose_queued = False
        if not self.is_attached:
            return  # its screen closed first (a dialog answered)
        due = getattr(self.app, "first_words_due", None)
        wait = due() if due is not None and self._composed is not None else 0.0
        if wait > 0:  # a reply's first words come first (see the module)
            self._recompose_queued = True
            self.set_timer(wait, self._recompose_once)
            return
        keys = self._keys()
        if keys == self._composed:
            return  # the same keys (the focus moved between widgets with the same bindings)
        if self._switch(keys):
            self._composed = keys
            return
        self._composed = keys
        await self.recompose()

    def _switch(self, keys: tuple[object, ...]) -> bool:
        """Turn the keys shown on or off where ``keys`` differs from what they were
        composed from only in that (a reply starting or ending turns Esc's key on or off):
        the keys' style changes, and nothing is composed or laid out again (composed, the
        dozen keys were mounted and the screen laid out three times, twice per reply).
        False when anything else differs."""
        old = self._composed
        if old is None or len(old) != len(keys) or old[:2] != keys[:2] or old[3] != keys[3]:
            return False
        old_shown, shown = old[2], keys[2]
        assert isinstance(old_shown, tuple) and isinstance(shown, tuple)
        if len(old_shown) != len(shown) or any(
            a[:5] != b[:5] or a[6] != b[6] for a, b in zip(old_shown, shown, strict=True)
        ):
            return False
        enabled: dict[tuple[str, str], bool] = {}
        for key, action, *_, on, _tip in shown:
            enabled.setdefault((key, action), bool(on))
        for widget in self.query(FooterKey):
            on = enabled.get((widget.key, widget.action))
            if on is not None and widget._disabled == on:
                widget._disabled = not on
                widget.set_class(not on, "-disabled")
        return True

    def _keys(self) -> tuple[object, ...]:
        """What ``compose`` makes the keys from: the bindings shown, as the screen has them
        now (key, action, description, group, enabled, tooltip), the palette's key, and
        the footer's own switches."""
        active = self.screen.active_bindings
        shown = tuple(
            (b.key, b.action, b.description, b.key_display, id(b.group), on, tip)
            for (_, b, on, tip) in active.values()
            if b.show
        )
        palette = active.get(self.app.COMMAND_PALETTE_BINDING)
        palette_key = palette[1:] if palette is not None else None
        return (self.compact, self.show_command_palette, shown, palette_key)

    def compose(self) -> ComposeResult:
        watchers = getattr(self, "__watchers", {})
        for name, bound in watchers.items():
            watchers[name] = [
                (node, cb) for node, cb in bound if not (node._closing or node._closed)
            ]
        for widget in super().compose():
            if isinstance(widget, FooterKey):
                # (the palette's key is not bound to the footer: it stays compact)
                palette = widget.has_class("-command-palette")
                compact = True if palette else self.compact
                widget.set_reactive(FooterKey.compact, compact)
                widget.set_class(compact, "-compact", update=False)
            yield widget
