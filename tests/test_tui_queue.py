"""The queue in the app: Ctrl+G queues while a job runs and the form stays editable, a
batch is shown as a grid and saved as a contact sheet, jobs left by an ended app come
back paused and F9 resumes them, the Monitor lists the queue."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PIL import Image
from textual.widgets import Input, TextArea
from tui_helpers import make_app, screen_text, type_text, wait_for

from engines.diffusion import GenerationRequest
from engines.images import read_parameters
from engines.queue import ImageQueue
from engines.store import Store
from tui.screens.image import ImageScreen
from tui.screens.monitor import MonitorScreen
from tui.widgets.queue import QueueList

SIZE = (120, 40)


def image_config(make_config: Callable[..., Path], model: Path, **diffusion: object) -> Path:
    return make_config(
        diffusion={"model": str(model), "device": "cpu", "width": 64, "height": 64, **diffusion}
    )


def screen(app: object) -> ImageScreen:
    s = app.screen  # type: ignore[attr-defined]
    assert isinstance(s, ImageScreen)
    return s


async def test_queue_more_while_a_job_runs_and_see_the_batch_as_a_grid(
    make_config: Callable[..., Path], tiny_sd_folder: Path
) -> None:
    config = image_config(make_config, tiny_sd_folder, steps=150, width=128, height=128)
    app = make_app(config, start_screen="image")
    async with app.run_test(size=SIZE) as pilot:
        s = screen(app)
        await type_text(pilot, "a slow lighthouse")
        await pilot.press("ctrl+g")
        await wait_for(
            pilot, lambda: s.last_step is not None, timeout=60, what="the first job runs"
        )
        # the form stays editable: a batch of two is queued behind it
        prompt = s.query_one("#image-prompt", TextArea)
        prompt.load_text("a pair of herons")
        for field, value in (("count", "2"), ("steps", "2"), ("seed", "40"), ("width", "64")):
            s.query_one(f"#image-{field}", Input).value = value
        s.query_one("#image-height", Input).value = "64"
        await pilot.press("ctrl+g")
        queue = s.query_one(QueueList)
        await wait_for(
            pilot,
            lambda: [j.state for j in queue.jobs] == ["running", "queued"],
            what="one running, one waiting",
        )
        assert "▶ #1 running" in screen_text(app) and "… #2 queued" in screen_text(app)
        assert prompt.text == "a pair of herons", "the form kept what was typed"
        # the first one is stopped from the queue; the next one runs
        await pilot.press("f8", "s")
        await wait_for(pilot, lambda: not s.generating, timeout=120, what="both jobs")
        assert [(j.id, j.state) for j in queue.jobs] == [(2, "done"), (1, "stopped")]
        # the batch of two is shown as a grid, and saved as one contact sheet
        await wait_for(pilot, lambda: len(s.shown_batch) == 2, what="the batch's grid")
        assert [read_parameters(p).seed for p in s.shown_batch] == [40, 41]
        await pilot.press("ctrl+s")
        grids = app.settings.paths.outputs / "grids"
        await wait_for(pilot, lambda: grids.is_dir() and any(grids.glob("*.png")), what="grid")
        [sheet] = grids.glob("*.png")
        with Image.open(sheet) as im:
            assert im.width > 2 * 64 and im.height > 64
        assert app.store.image_id_at(sheet) is None, "a contact sheet is not a gallery image"
        # the Monitor lists the queue too
        await pilot.press("f4")
        await wait_for(pilot, lambda: isinstance(app.screen, MonitorScreen))
        await wait_for(pilot, lambda: "✓ #2 done 2/2 a pair of herons" in screen_text(app))


async def test_jobs_left_by_an_ended_app_come_back_paused_and_f9_resumes_them(
    make_config: Callable[..., Path], tiny_sd_folder: Path
) -> None:
    config = image_config(make_config, tiny_sd_folder, steps=2)
    from engines.config import load_settings

    settings = load_settings(config, env={})
    earlier = Store.open(settings.paths.database)
    queue = ImageQueue(earlier)
    request = GenerationRequest("left behind", width=64, height=64, steps=2, seed=9)
    job = queue.add(request, str(tiny_sd_folder))
    queue.claim()
    earlier.close()  # that app ended without running it
    app = make_app(config, start_screen="image")
    async with app.run_test(size=SIZE) as pilot:
        s = screen(app)
        await wait_for(
            pilot, lambda: any("paused (F9 resumes)" in str(n.message) for n in app.notices)
        )
        lst = s.query_one(QueueList)
        await wait_for(pilot, lambda: [j.state for j in lst.jobs] == ["paused"])
        assert not s.generating, "a paused job waits for the user"
        await pilot.press("f9")
        await wait_for(pilot, lambda: app.image_queue.job(job.id).state == "done", timeout=60)  # type: ignore[union-attr]
        [png] = app.image_queue.images_of(job.id)
        assert read_parameters(png).prompt == "left behind"


async def test_a_job_with_a_missing_model_fails_and_the_next_one_runs(
    make_config: Callable[..., Path], tiny_sd_folder: Path, tmp_path: Path
) -> None:
    app = make_app(image_config(make_config, tiny_sd_folder, steps=2), start_screen="image")
    async with app.run_test(size=SIZE) as pilot:
        s = screen(app)
        queue = app.image_queue
        gone = queue.add(
            GenerationRequest("x", width=64, height=64, steps=2), str(tmp_path / "gone")
        )
        await type_text(pilot, "still made")
        await pilot.press("ctrl+g")
        await wait_for(pilot, lambda: not s.generating and s.query_one(QueueList).jobs, timeout=60)
        await wait_for(pilot, lambda: "✗ #1 failed" in screen_text(app))
        failed = queue.job(gone.id)
        assert failed is not None and "does not exist" in (failed.error or "")
        assert queue.job(gone.id + 1).state == "done"  # type: ignore[union-attr]
        assert any("does not exist" in str(n.message) for n in app.notices)
