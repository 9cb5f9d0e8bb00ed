"""Python's cycle collector, kept off the drawing path.

A full collection walks every object the process holds: with Textual, Rich, pygments,
httpx and the ollama client loaded that is some hundreds of thousands, and it costs
0.1-0.3 s of CPU on a small machine, wherever an allocation happens to trigger it: in
the middle of a streamed reply, or of opening a long conversation. Three of them came
in each 2,000-token reply (about an eighth of the app's CPU for it).

What the app builds as it starts lives as long as the app, so it is moved out of the
collector's sight (``gc.freeze``) a second after the first frame, while the app is idle,
and again once the start-up work that follows it (the first answer from Ollama, code
loaded ahead) is done; each time after one full pass, so that no garbage is frozen. It
also kept the gallery's first opening and page turns from stalling a fifth of a second
on a full pass (issue 13). Frozen objects are still freed when nothing refers to them; only
a reference cycle among them would stay, so nothing made later (a conversation's
widgets, which come and go) is frozen. For the same reason only the one app of a
process does it (``LlmPessoalApp.freeze_heap``, set by ``main()``): tests run many apps
in one process, and one would freeze what the ones before it left.
"""

from __future__ import annotations

import gc
from collections.abc import Awaitable, Callable
from typing import Any

from textual.app import App

FREEZE_AFTER_S = 1.0
"""After the first frame: the app is idle by then."""
FREEZE_AGAIN_S = 4.0
"""After the first frame: the start-up work that follows it is done by then."""
FULL_PASS_EVERY = 100
"""After a freeze, a full pass comes after this many passes of the middle generation
(Python's default is 10). Python also waits until the objects that outlived the last
full pass have grown by a quarter, but after a freeze it counts only those made since,
so full passes came every ten: five in a 2,000-token reply, 14-48 ms each, and the one
that fell on a reply's end held its last words back (the last token 72-136 ms after the
server's, against 31-54 ms with this)."""
BUSY_RETRY_S = 1.0
"""A freeze due while the app is busy (a reply streaming) waits this long, and again."""


def freeze_start_up(
    app: App[Any],
    first: Callable[[], Awaitable[None]] | None = None,
    busy: Callable[[], bool] | None = None,
) -> None:
    """Freeze what the app holds a second after it starts, and again a little later;
    ``first``: work to finish before the first freeze (code to load ahead). ``busy()``:
    whether the app is drawing something that a full pass would stall (a reply sent
    within seconds of start); the freeze waits until it is not."""

    async def freeze(ahead: Callable[[], Awaitable[None]] | None) -> None:
        if busy is not None and busy():
            app.set_timer(BUSY_RETRY_S, lambda: freeze(ahead))
            return
        if ahead is not None:
            await ahead()
        gc.collect()
        gc.freeze()
        young, middle, _ = gc.get_threshold()
        gc.set_threshold(young, middle, FULL_PASS_EVERY)

    app.set_timer(FREEZE_AFTER_S, lambda: freeze(first))
    app.set_timer(FREEZE_AGAIN_S, lambda: freeze(None))
