"""The sampler on this machine, for real: psutil, and NVML's absence."""

from __future__ import annotations

import json
import os
from pathlib import Path

import psutil

from engines.monitor import HISTORY_SECONDS, GpuFigures, History, Nvml, Sampler, role_of


def test_sample_reads_this_machine(tmp_path: Path) -> None:
    sampler = Sampler(tmp_path / "outputs")
    try:
        sample = sampler.sample()
    finally:
        sampler.close()
    assert len(sample.cpu.per_core) == psutil.cpu_count()
    assert 0 <= sample.cpu.total <= 100
    assert (
        sample.cpu.load_average == tuple(sample.cpu.load_average)
        and len(sample.cpu.load_average) == 3
    )
    assert sample.memory.total == psutil.virtual_memory().total
    assert 0 < sample.memory.used <= sample.memory.total
    assert sample.disk is not None and sample.disk.path == str(tmp_path / "outputs")
    assert sample.disk.total == psutil.disk_usage(str(tmp_path)).total, "measured where it would be"
    assert sample.process.pid == os.getpid() and sample.process.rss > 10_000_000
    assert sample.process.threads >= 1
    json.dumps(sample.to_dict())  # the CLI prints it as JSON


def test_no_gpu_is_said_once_and_plainly() -> None:
    nvml = Nvml()
    try:
        if nvml.read():  # pragma: no cover - a machine with an NVIDIA GPU
            return
        assert nvml.note, "the absence of a GPU is explained"
        assert "NVIDIA" in nvml.note or "nvidia" in nvml.note
    finally:
        nvml.close()
    sampler = Sampler(None)
    first, second = sampler.sample(), sampler.sample()
    sampler.close()
    assert first.gpus == () and first.gpu_note == second.gpu_note == sampler.gpu_note
    assert first.disk is None


def test_cpu_percent_measures_between_samples() -> None:
    sampler = Sampler(None, gpus=False)
    end = psutil.cpu_times().user + 0.2
    while psutil.cpu_times().user < end:  # keep a core busy for a moment
        pass
    sample = sampler.sample()
    assert sample.process.cpu_percent > 10, "this process's busy loop shows"
    assert sample.gpu_note == "GPU sampling is off"


def test_history_keeps_two_minutes() -> None:
    history = History()
    sampler = Sampler(None, gpus=False)
    sample = sampler.sample()
    for _ in range(HISTORY_SECONDS + 30):
        history.record(sample)
    assert len(history.get("cpu")) == HISTORY_SECONDS
    assert history.get("memory")[-1] == sample.memory.percent
    assert history.get("gpu0") == []


def test_gpu_roles_and_memory_share() -> None:
    assert role_of("ollama_llama_server", 12345) == "ollama"
    assert role_of("ollama", 12345) == "ollama"
    assert role_of("python3", os.getpid()) == "this app"
    assert role_of("Xorg", 1) == ""
    gpu = GpuFigures(0, "H100", 50.0, 40 * 2**30, 80 * 2**30)
    assert gpu.memory_percent == 50.0
    assert GpuFigures(1, "x", 0, 0, 0).memory_percent == 0.0


def test_image_renderer_is_chosen_without_asking_the_terminal() -> None:
    from tui.widgets.picture import choose_renderer, prepare_renderer

    assert choose_renderer("auto", {"TERM": "xterm-256color"}) == "halfblock"
    assert choose_renderer("auto", {"TERM": "xterm-kitty"}) == "kitty"
    assert choose_renderer("auto", {"KITTY_WINDOW_ID": "1", "TERM": "xterm"}) == "kitty"
    assert choose_renderer("auto", {"TERM_PROGRAM": "WezTerm", "TERM": "xterm"}) == "kitty"
    assert choose_renderer("auto", {"TERM": "xterm-kitty", "TMUX": "/tmp/x"}) == "halfblock"
    assert choose_renderer("auto", {"TERM": "screen-256color"}) == "halfblock"
    assert choose_renderer("auto", {"TERM": "mlterm-sixel"}) == "sixel"
    assert choose_renderer("sixel", {"TERM": "xterm"}) == "sixel", "the setting wins"
    assert choose_renderer("off", {"TERM": "xterm-kitty"}) == "off"
    assert prepare_renderer("halfblock") == "halfblock"
