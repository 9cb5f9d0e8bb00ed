"""Python's cycle collector, kept off the drawing path.

A full collection walks every object the process holds: with Textual, Rich, pygments,
httpx and the ollama client loaded that is some hundreds of thousands, and it costs
0.1-0.3 s of CPU on a small machine, wherever an allocation happens to trigger it: in
the middle of a streamed reply, or of opening a long conversation. Three of them came
in each 2,000-token reply (about an eighth of the app's CPU for it).

What the app builds as it starts lives as long as the app, so it is moved out of the
collector's sight (``gc.freeze``) once the first frame is drawn, and again once the
start-up work that follows it (the first answer from Ollama, the code highlighters
loaded ahead) is done. Frozen objects are still freed when nothing refers to them; only
a reference cycle among them would stay, so nothing made later (a conversation's
widgets, which come and go) is frozen. For the same reason only the one app of a
process does it (``LlmPessoalApp.freeze_heap``, set by ``main()``): tests run many apps
in one process, and one would freeze what the ones before it left.
"""

from __future__ import annotations

import gc
from typing import Any

from textual.app import App

FREEZE_AGAIN_S = 3.0
"""After the first frame: the start-up work that follows it is done by then."""


def freeze_start_up(app: App[Any]) -> None:
    """Freeze what the app holds once its first frame is drawn, and again a little later."""
    app.call_after_refresh(gc.freeze)
    app.set_timer(FREEZE_AGAIN_S, gc.freeze)
