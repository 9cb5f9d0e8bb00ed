"""Bytes per preview step on the Image screen, 120x40, half-blocks: the real app (headless,
but drawing to a recording driver) generates twice with the tiny pipeline; for the second
generation, Textual's bytes and the output filter's are summed. Prints JSON.

    TEXTUAL_COLOR_SYSTEM=truecolor PYTHONPATH=$PWD .venv/bin/python bench/preview_bytes.py
"""

# ruff: noqa: E401, E402, I001
import asyncio, sys, tempfile, json
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent.parent / "tests")]
import test_output_filter as t
from textual.drivers import headless_driver
from tui.output import OutputFilter
from conftest import write_toml
from sd_fixtures import build_tiny_pipeline_folder
from tui_helpers import make_app, type_text, wait_for

STEPS = 30


async def main():
    t.RecordingDriver.writes = []
    headless_driver.HeadlessDriver = t.RecordingDriver
    d = Path(tempfile.mkdtemp())
    model = build_tiny_pipeline_folder(d / "tiny")
    cfg = write_toml(
        d / "config.toml",
        {
            "ollama": {"host": "http://127.0.0.1:9"},
            "paths": {
                "outputs": str(d / "o"),
                "logs": str(d / "l"),
                "database": str(d / "db.sqlite"),
            },
            "diffusion": {
                "model": str(model),
                "device": "cpu",
                "width": 64,
                "height": 64,
                "steps": STEPS,
                "preview": "halfblock",
            },
        },
    )
    app = make_app(cfg, start_screen="image")
    async with app.run_test(size=(120, 40)) as pilot:
        s = app.screen
        await type_text(pilot, "a lighthouse")
        s.action_generate()
        await wait_for(pilot, lambda: not s.generating, timeout=300)
        await pilot.pause(0.5)
        start = len(t.RecordingDriver.writes)
        s.action_generate()
        await wait_for(pilot, lambda: not s.generating, timeout=300)
        await pilot.pause(0.5)
    writes = t.RecordingDriver.writes
    f = OutputFilter(lambda: (120, 40))
    for w in writes[:start]:
        f.feed(w)
    gen = writes[start:]
    raw = sum(len(w.encode()) for w in gen)
    thin = sum(len(f.feed(w).encode()) for w in gen)
    frames = sum(1 for w in gen if w == "\x1b[?2026h")
    print(
        json.dumps(
            {
                "steps": STEPS,
                "writes": len(gen),
                "frames": frames,
                "bytes_unfiltered": raw,
                "bytes_filtered": thin,
                "per_step_unfiltered": raw // STEPS,
                "per_step_filtered": thin // STEPS,
                "per_frame_unfiltered": raw // max(frames, 1),
                "per_frame_filtered": thin // max(frames, 1),
            }
        )
    )


asyncio.run(main())
