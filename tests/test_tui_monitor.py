"""Pilot and snapshot tests of the Monitor screen."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from ollama_server import FakeOllama
from textual.pilot import Pilot
from tui_helpers import make_app, screen_text, wait_for

from engines.monitor import (
    CpuFigures,
    DiskFigures,
    GpuFigures,
    GpuProcess,
    History,
    MemoryFigures,
    ProcessFigures,
    Sample,
)
from engines.store import Store
from tui.screens.monitor import LoadedModels, MonitorScreen, SystemSampled, Thumbnail
from tui.widgets.dialogs import ConfirmDialog
from tui.widgets.image_viewer import ImageViewer

GB = 1_000_000_000


def monitor(app: object) -> MonitorScreen:
    s = app.screen  # type: ignore[attr-defined]
    assert isinstance(s, MonitorScreen)
    return s


async def test_live_figures_and_no_sampling_when_hidden(
    ollama_server: FakeOllama, config_file: Path
) -> None:
    app = make_app(config_file, start_screen="monitor")
    async with app.run_test(size=(80, 24)) as pilot:
        s = monitor(app)
        await wait_for(pilot, lambda: len(s.history.get("cpu")) >= 2, what="two samples")
        text = screen_text(app)
        assert "CPU" in text and "RAM" in text and "llm-pessoal: CPU" in text
        from engines.monitor import Nvml

        nvml = Nvml()  # the machine's own answer: a GPU, no GPU, or no nvidia-ml-py at all
        try:
            assert ("GPU 0" in text) if not nvml.note else (nvml.note.split(" (")[0] in text)
        finally:
            nvml.close()
        await pilot.press("f2")
        await pilot.pause()
        seen = len(s.history.get("cpu"))
        await pilot.pause(2.5)
        assert len(s.history.get("cpu")) == seen, "no sampling while the screen is hidden"
        await pilot.press("f4")
        await wait_for(pilot, lambda: len(s.history.get("cpu")) > seen, what="sampling again")


async def loaded_listed(pilot: Pilot[object]) -> LoadedModels:
    """The Monitor's list of Ollama's loaded models, once it lists one."""
    listing = monitor(pilot.app).query_one(LoadedModels)
    await wait_for(
        pilot,
        lambda: listing.option_count and listing.get_option_at_index(0).id,
        what="loaded model listed",
    )
    return listing


async def test_a_server_that_lists_a_loaded_model_twice_gets_it_listed_once(
    ollama_server: FakeOllama, config_file: Path
) -> None:
    """``/api/ps`` with a model twice: the loaded models' list, keyed by name, shows it
    once (twice, Textual refused the row and the app ended)."""
    ollama_server.set_loaded(["llama3.2:latest"])
    [entry] = ollama_server._ps()["models"]
    ollama_server.fail(200, {"models": [entry, entry]}, path="/api/ps")
    app = make_app(config_file, start_screen="monitor")
    async with app.run_test(size=(120, 40)) as pilot:
        listing = await loaded_listed(pilot)
        assert listing.option_count == 1
        assert screen_text(app).count("llama3.2:latest") >= 1 and app.is_running


async def test_services_unload_an_ollama_model(
    ollama_server: FakeOllama, config_file: Path
) -> None:
    ollama_server.set_loaded(["llama3.2:latest"])
    app = make_app(config_file, start_screen="monitor")
    async with app.run_test(size=(120, 40)) as pilot:
        await loaded_listed(pilot)
        assert "llama3.2:latest" in screen_text(app) and "in VRAM" in screen_text(app)
        await pilot.press("m", "u")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmDialog)
        await pilot.press("y")
        await wait_for(pilot, lambda: "no model loaded" in screen_text(app), what="unloaded")
        unload = [r for r in ollama_server.requests if r.path == "/api/generate"]
        assert unload and unload[-1].body["keep_alive"] == 0


async def test_ollama_offline_is_shown(make_config: Callable[..., Path]) -> None:
    config = make_config(ollama={"host": "http://127.0.0.1:9"})
    app = make_app(config, start_screen="monitor")
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: "cannot reach Ollama" in screen_text(app), what="offline")
        assert "Ollama is offline" in screen_text(app) or "no models" in screen_text(app)


async def test_unload_the_diffusion_pipeline(
    make_config: Callable[..., Path], tiny_sd_folder: Path, ollama_server: FakeOllama
) -> None:
    config = make_config(diffusion={"model": str(tiny_sd_folder), "device": "cpu"})
    app = make_app(config, start_screen="monitor")
    async with app.run_test(size=(120, 40)) as pilot:
        app.diffusion.load()
        monitor(app).refresh_services()
        await pilot.pause()
        assert "ready on cpu in float32" in screen_text(app)
        await pilot.press("x")
        await pilot.pause()
        await pilot.press("y")
        await wait_for(pilot, lambda: not app.diffusion.loaded, what="unloaded")
        await wait_for(pilot, lambda: "not loaded" in screen_text(app), what="shown")


async def test_the_apps_own_work_is_shown(ollama_server: FakeOllama, config_file: Path) -> None:
    app = make_app(config_file, start_screen="monitor")
    async with app.run_test(size=(120, 40)) as pilot:
        app.live.reply_tokens_per_s = 42.0
        app.live.image_steps_per_s = 3.5
        app.live.image_progress = "step 7/20"
        await wait_for(pilot, lambda: "reply 42.0 tok/s" in screen_text(app), what="live figures")
        assert "image step 7/20 · 3.50 steps/s" in screen_text(app)


async def test_recent_images_newest_first_and_viewable(
    ollama_server: FakeOllama, config_file: Path
) -> None:
    from test_tui_image import write_sample

    from engines.config import load_settings
    from engines.images import read_parameters

    settings = load_settings(config_file, env={})
    store = Store.open(settings.paths.database)
    for seed in (1, 2, 3):
        path = write_sample(settings.paths.outputs, seed, time.time() + seed)
        store.add_image(path, read_parameters(path), 1.0)
        time.sleep(0.01)
    store.close()
    app = make_app(config_file, start_screen="monitor")
    async with app.run_test(size=(120, 40)) as pilot:
        s = monitor(app)
        await wait_for(pilot, lambda: len(s.query(Thumbnail)) == 3, what="thumbnails")
        assert [t.stored.parameters.seed for t in s.query(Thumbnail)] == [3, 2, 1]
        await pilot.press("i", "right", "enter")
        await pilot.pause()
        assert isinstance(app.screen, ImageViewer)
        assert app.screen.image.parameters.seed == 2


def fixed_sample(gpus: bool) -> Sample:
    gpu_list = (
        (
            GpuFigures(
                0,
                "NVIDIA H100 80GB HBM3",
                87.0,
                41 * GB,
                80 * GB,
                64.0,
                412.0,
                700.0,
                (
                    GpuProcess(4242, "ollama", 6 * GB, "ollama"),
                    GpuProcess(777, "llm-pessoal", 3 * GB, "this app"),
                ),
            ),
        )
        if gpus
        else ()
    )
    return Sample(
        time=1_790_000_000.0,
        cpu=CpuFigures(37.5, (30.0, 45.0, 20.0, 55.0), (1.25, 0.9, 0.7)),
        memory=MemoryFigures(64 * GB, 20 * GB, 31.2, 8 * GB, 1 * GB, 12.5),
        disk=DiskFigures("/home/user/outputs", 1000 * GB, 420 * GB, 42.0),
        process=ProcessFigures(777, 3.0, 95_000_000, 12),
        gpus=gpu_list,
        gpu_note="" if gpus else "no NVIDIA GPU or driver (NVML Shared Library Not Found)",
    )


def feed_fixed(gpus: bool) -> Callable[[Pilot[object]], object]:
    """Stop the live sampler and show a fixed history, so the snapshot is stable."""

    async def run_before(pilot: Pilot[object]) -> None:
        s = monitor(pilot.app)
        await pilot.pause(0.2)
        s.on_screen_suspend()
        s.workers.cancel_group(s, "monitor")
        await pilot.pause(0.1)
        s.history = History()
        sample = fixed_sample(gpus)
        for i in range(60):
            cpu = 20 + (i * 7) % 60
            s.history.add("cpu", cpu)
            s.history.add("memory", 31.2)
            s.history.add("gpu0", (i * 13) % 100)
            s.history.add("gpu0-memory", 51.0)
        s.post_message(SystemSampled(sample))
        await pilot.pause(0.1)
        s.post_message(SystemSampled(sample))  # the GPU panel shows from its second sample
        await pilot.pause(0.2)

    return run_before


@pytest.mark.parametrize(("size", "gpus"), [((80, 24), False), ((200, 60), True)])
def test_monitor_snapshot(
    snap_compare, make_config: Callable[..., Path], size: tuple[int, int], gpus: bool
) -> None:  # type: ignore[no-untyped-def]
    config = make_config(
        ollama={"host": "http://127.0.0.1:9"},
        diffusion={"model": "stable-diffusion-v1-5/stable-diffusion-v1-5"},
    )
    app = make_app(config, start_screen="monitor")
    assert snap_compare(app, terminal_size=size, run_before=feed_fixed(gpus))
