"""The app on a real terminal, driven through its screens for the palette snapshots
(``tests/test_palette_snapshots.py``).

Run under a pty by that test: the app as ``tui.cli`` builds it, with Textual's real Linux
driver and the output filter, so the bytes on the pty are those a 16- or 256-colour
terminal would get. Only what varies from run to run is held still: the Monitor's one
sample of the machine (and no timer for more), text cursors that do not blink. An
autopilot walks Chat (a streamed reply), Image (the newest picture), Monitor and Help,
waits for each screen's state, draws it, and then writes a marker into the output
(``ESC ] 7777 ; snapshot=NAME BEL``, an OSC that terminals ignore) so the test knows that
everything before it is that screen.

    python tests/terminals/palette_app.py --config CONFIG --theme textual-dark
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE.parent.parent)]

MARKER = "\x1b]7777;snapshot={}\x07"
PROMPT = "Show me a table and some code"
GB = 1_000_000_000


def hold_still() -> None:
    """What would differ between runs: the machine's figures, blinking cursors."""
    from textual.widgets import Input, TextArea

    from engines import monitor
    from tui.screens import monitor as monitor_screen

    sample = monitor.Sample(
        time=1_790_000_000.0,
        cpu=monitor.CpuFigures(37.5, (30.0, 45.0, 20.0, 55.0), (1.25, 0.9, 0.7)),
        memory=monitor.MemoryFigures(64 * GB, 20 * GB, 31.2, 8 * GB, 1 * GB, 12.5),
        disk=monitor.DiskFigures("/home/user/outputs", 1000 * GB, 420 * GB, 42.0),
        process=monitor.ProcessFigures(777, 3.0, 95_000_000, 12),
        gpus=(),
        gpu_note="no NVIDIA GPU or driver (NVML Shared Library Not Found)",
    )
    monitor.Sampler.sample = lambda self: sample  # type: ignore[method-assign]
    monitor_screen.SAMPLE_EVERY_S = 3600.0  # the one sample at resume
    monitor_screen.SERVICES_EVERY_S = 3600.0
    TextArea._toggle_cursor_blink_visible = lambda self: None  # type: ignore[method-assign]
    Input._toggle_cursor = lambda self: None  # type: ignore[method-assign]


async def walk(pilot: object) -> None:
    """Chat, Image, Monitor, Help: each waited for, drawn, and marked in the output."""
    from textual.pilot import Pilot
    from tui_helpers import screen_text, type_text
    from waiting import wait_for

    from tui.app import LlmPessoalApp
    from tui.screens.monitor import MonitorScreen, Thumbnail
    from tui.widgets.picture import Picture

    assert isinstance(pilot, Pilot)
    app = pilot.app
    assert isinstance(app, LlmPessoalApp)
    timeout = 60.0

    async def mark(name: str) -> None:
        await pilot.pause()
        await pilot.wait_for_scheduled_animations()
        app.screen._on_timer_update()  # the frame written before the marker
        driver = app._driver
        assert driver is not None
        driver.write(MARKER.format(name))
        driver.flush()

    await wait_for(pilot, lambda: app.ollama is not None and app.models, timeout, "online")
    await type_text(pilot, PROMPT)
    await pilot.press("enter")
    await wait_for(
        pilot,
        lambda: "It does not change" in screen_text(app) and not app.conversations.busy,
        timeout,
        "the reply, finished",
    )
    await mark("chat")

    await pilot.press("f3")
    await wait_for(
        pilot,
        lambda: any(p.image is not None for p in app.screen.query(Picture)),
        timeout,
        "the newest picture on the Image screen",
    )
    await mark("image")

    await pilot.press("f4")
    await wait_for(
        pilot,
        lambda: (
            isinstance(app.screen, MonitorScreen)
            and "37.5" in screen_text(app)
            and "unloads in" in screen_text(app)  # the loaded model (after the streamed reply)
            and all(t.image is not None for t in app.screen.query(Thumbnail))
            and len(app.screen.query(Thumbnail)) == 1
        ),
        timeout,
        "the Monitor's sample, loaded model and recent image",
    )
    await mark("monitor")

    await pilot.press("f1")
    await wait_for(pilot, lambda: "Help" in type(app.screen).__name__, timeout, "the help")
    await mark("help")
    app.exit(0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--theme", default="textual-dark")
    args = parser.parse_args()

    from engines.config import load_settings
    from tui.app import LlmPessoalApp, open_store

    hold_still()
    settings = load_settings(args.config, env={})
    store, warnings = open_store(settings)
    try:
        app = LlmPessoalApp(settings, store, warnings=warnings, image_renderer="halfblock")
        app.theme = args.theme
        app.run(auto_pilot=walk)
    finally:
        store.close()
    return int(app.return_code or 0)


if __name__ == "__main__":
    sys.exit(main())
