"""Pictures in real terminals under Xvfb: kitty, ``xterm -ti vt340``, mlterm and plain xterm.

For each terminal the app starts on the Image screen, where Ctrl+B (typed with
``xdotool``) opens the gallery with a generated picture (the tiny random-weight pipeline,
through the CLI) as its tile, and on the Monitor with that picture among its recent
images. The test reads the renderer the app chose from
its log, then takes screenshots of the X display until the picture is found and matches
the PNG (its colours, downscaled, and its aspect ratio), so it fails when the picture is not
drawn, is drawn as empty boxes, or is stretched.

Needs Xvfb, xdotool-free ImageMagick ``import`` and the terminals (Debian:
``apt-get install -y xvfb kitty xterm mlterm imagemagick xdotool``); skipped where they are
missing. Debian 12's kitty (0.26.5) has no Unicode placeholders, so the app rightly draws
half-blocks in it; ``kitty-newer`` is a kitty >= 0.28, where the app must draw Kitty
graphics: the command ``$LLM_PESSOAL_KITTY`` (used in kitty's place), else, as root,
``tests/terminals/newer_kitty.sh`` when ``/opt/trixie`` holds Debian 13's kitty (``sudo
tests/terminals/newer_kitty.sh install`` puts it there without touching the host's
packages). Marked ``terminals``; about 20-40 s a terminal on a 2-core machine. Screenshots
are kept under ``$LLM_PESSOAL_SHOTS`` when it is set.

    PYTHONPATH=$PWD .venv/bin/python -m pytest -m terminals tests/test_terminals.py
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, write_toml
from PIL import Image

# One Xvfb display and one generated picture for the whole module: under pytest-xdist
# (``--dist loadgroup``) its tests run on one worker, so the module fixtures are made once.
pytestmark = [pytest.mark.terminals, pytest.mark.xdist_group("terminals")]

WAIT_S = 180.0  # a generous deadline: the app in a terminal shares two busy cores


def _missing(*tools: str) -> list[str]:
    return [t for t in tools if shutil.which(t) is None]


NEWER_KITTY_CHROOT = Path("/opt/trixie/usr/bin/kitty")
NEWER_KITTY_WRAPPER = REPO / "tests" / "terminals" / "newer_kitty.sh"


def newer_kitty() -> str | None:
    """The command to run in place of a kitty >= 0.28, or None when there is none."""
    named = os.environ.get("LLM_PESSOAL_KITTY")
    if named:
        return named
    if NEWER_KITTY_CHROOT.exists() and os.geteuid() == 0:
        return str(NEWER_KITTY_WRAPPER)
    return None


def kitty_version(kitty: str) -> tuple[int, int] | None:
    try:
        out = subprocess.run([kitty, "--version"], capture_output=True, text=True).stdout
    except OSError:
        return None
    match = re.search(r"kitty (\d+)\.(\d+)", out)
    return (int(match.group(1)), int(match.group(2))) if match else None


def kitty_has_placeholders(kitty: str = "kitty") -> bool:
    version = kitty_version(kitty)
    return version is not None and version >= (0, 28)


def terminal_argv(name: str) -> list[str]:
    font = ["-fa", "Monospace", "-fs", "9"]
    kitty = (newer_kitty() or "kitty") if name == "kitty-newer" else "kitty"
    return {
        "kitty": [
            kitty,
            "-o",
            "font_size=9",
            "-o",
            "initial_window_width=120c",
            "-o",
            "initial_window_height=40c",
            "-o",
            "remember_window_size=no",
        ],
        "xterm-vt340": [
            "xterm",
            "-ti",
            "vt340",
            "-xrm",
            "XTerm*decTerminalID: vt340",
            "-xrm",
            "XTerm*numColorRegisters: 256",
            *font,
            "-geometry",
            "120x40+0+0",
            "-e",
        ],
        "mlterm": ["mlterm", "--geometry", "120x40+0+0", "-e"],
        "xterm": ["xterm", *font, "-geometry", "120x40+0+0", "-e"],
    }[name if name != "kitty-newer" else "kitty"]


def expected_renderer(name: str) -> str:
    if name == "kitty-newer":
        return "kitty"
    if name == "kitty":
        return "kitty" if kitty_has_placeholders() else "halfblock"
    return {"xterm-vt340": "sixel", "mlterm": "sixel", "xterm": "halfblock"}[name]


@pytest.fixture(scope="module")
def display() -> Iterator[str]:
    missing = _missing("Xvfb", "import")
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)} (apt-get install xvfb imagemagick)")
    number = 90 + os.getpid() % 100
    proc = subprocess.Popen(
        ["Xvfb", f":{number}", "-screen", "0", "1280x900x24", "+extension", "GLX"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while not Path(f"/tmp/.X11-unix/X{number}").exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            pytest.skip("Xvfb did not start")
        time.sleep(0.1)
    try:
        yield f":{number}"
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory, tiny_sd_folder: Path) -> Path:
    """A config whose outputs hold one picture made by the tiny pipeline (the CLI)."""
    work = tmp_path_factory.mktemp("terminals")
    config = write_toml(
        work / "config.toml",
        {
            "ollama": {"host": "http://127.0.0.1:9"},
            "paths": {
                "outputs": str(work / "outputs"),
                "logs": str(work / "logs"),
                "database": str(work / "data" / "db.sqlite"),
                "cache": str(work / "cache"),
            },
            "diffusion": {
                "model": str(tiny_sd_folder),
                "device": "cpu",
                "width": 64,
                "height": 64,
                "steps": 4,
            },
        },
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    argv = [sys.executable, "-m", "tui.cli", "--config", str(config), "image", "a lighthouse"]
    subprocess.run(argv, env=env, check=True, capture_output=True, timeout=300)
    return config


def chosen_renderer(log: Path, since: int) -> str | None:
    if not log.exists():
        return None
    for line in log.read_text(encoding="utf-8").splitlines()[since:]:
        message = json.loads(line).get("message", "")
        if message.startswith("pictures: "):
            return str(message.split()[1])
    return None


def find_picture(
    shot: Image.Image, top_fraction: float, textured: bool = False
) -> tuple[int, int, int, int] | None:
    """The bounding box of the largest dense block of colourful pixels below
    ``top_fraction`` of the screen (the UI itself is grey but for a few accents), found
    on a grid of 8-pixel blocks."""
    block = 8
    rgb = np.asarray(shot.convert("RGB"), dtype=np.int16)
    h, w = rgb.shape[0] // block * block, rgb.shape[1] // block * block
    sat = (rgb.max(axis=2) - rgb.min(axis=2))[:h, :w]
    blocks = sat.reshape(h // block, block, w // block, block).mean(axis=(1, 3))
    mask = blocks > 6
    if textured:  # a small picture in 16 colours is mostly greys: count texture too
        luma = rgb[:h, :w].mean(axis=2).reshape(h // block, block, w // block, block)
        mask |= luma.std(axis=(1, 3)) > 25
    mask[: int(mask.shape[0] * top_fraction)] = False
    rows = mask.mean(axis=1)
    # the densest band of at least 4 block rows (a bar or a line of text is thinner)
    bands = [(a, b) for a, b in _runs(rows > 0.05) if b - a >= 4]
    if not bands:
        return None
    y0, y1 = max(bands, key=lambda band: rows[band[0] : band[1]].sum())
    cols = mask[y0:y1].mean(axis=0)
    x0, x1 = max(_runs(cols > cols.max() * 0.2), key=lambda run: cols[run[0] : run[1]].sum())
    if x1 - x0 < 4:
        return None
    return x0 * block, y0 * block, x1 * block, y1 * block


def _runs(flags: np.ndarray) -> list[tuple[int, int]]:
    """The [start, end) of each run of True."""
    out, start = [], None
    for i, flag in enumerate([*flags.tolist(), False]):
        if flag and start is None:
            start = i
        elif not flag and start is not None:
            out.append((start, i))
            start = None
    return out


def colour_distance(a: Image.Image, b: Image.Image) -> float:
    size = (8, 8)
    x = np.asarray(a.convert("RGB").resize(size, Image.Resampling.BOX), dtype=np.float32)
    y = np.asarray(b.convert("RGB").resize(size, Image.Resampling.BOX), dtype=np.float32)
    return float(np.abs(x - y).mean())


def press(display: str, key: str) -> None:
    """Type ``key`` into the window under the pointer (no window manager: the focus
    follows the pointer) through XTEST, which xterm accepts, unlike sent events."""
    subprocess.run(
        ["xdotool", "mousemove", "200", "200", "key", key],
        env={**os.environ, "DISPLAY": display},
        check=True,
        capture_output=True,
        timeout=30,
    )


def screenshot(display: str, path: Path) -> Image.Image:
    subprocess.run(
        ["import", "-display", display, "-window", "root", str(path)],
        check=True,
        capture_output=True,
        timeout=30,
    )
    with Image.open(path) as im:
        return im.convert("RGB")


@pytest.mark.parametrize("screen", ["image", "monitor"])
@pytest.mark.parametrize("terminal", ["kitty", "kitty-newer", "xterm-vt340", "mlterm", "xterm"])
def test_the_picture_is_drawn(
    terminal: str, screen: str, display: str, generated: Path, tmp_path: Path
) -> None:
    if terminal == "kitty-newer":
        kitty = newer_kitty()
        if kitty is None:
            pytest.skip(
                "no kitty >= 0.28: set LLM_PESSOAL_KITTY to one, or run (as root) "
                "'tests/terminals/newer_kitty.sh install' for Debian 13's kitty in /opt/trixie"
            )
        if not kitty_has_placeholders(kitty):
            pytest.skip(f"{kitty} --version: {kitty_version(kitty)}, not kitty >= 0.28")
    argv0 = terminal_argv(terminal)[0]
    if _missing(argv0):
        pytest.skip(f"not installed: {argv0}")
    if screen == "image" and _missing("xdotool"):
        pytest.skip("not installed: xdotool (to open the gallery with Ctrl+B)")
    [png] = sorted((generated.parent / "outputs").glob("*.png"))
    log = generated.parent / "logs" / "app.jsonl"
    since = len(log.read_text(encoding="utf-8").splitlines()) if log.exists() else 0
    script = tmp_path / "app.sh"
    script.write_text(
        "#!/bin/sh\n"
        f"export PYTHONPATH={REPO}\n"
        f"exec {sys.executable} -m tui.cli --config {generated} --screen {screen}\n"
    )
    script.chmod(0o755)
    env = {**os.environ, "DISPLAY": display, "LIBGL_ALWAYS_SOFTWARE": "1"}
    for name in ("TMUX", "STY", "SSH_CONNECTION", "SSH_TTY", "COLORTERM", "TERM"):
        env.pop(name, None)
    proc = subprocess.Popen(
        [*terminal_argv(terminal), str(script)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    shot_path = tmp_path / f"{terminal}-{screen}.png"
    try:
        deadline = time.monotonic() + WAIT_S
        renderer = None
        while renderer is None and time.monotonic() < deadline:
            renderer = chosen_renderer(log, since)
            time.sleep(0.2)
        assert renderer == expected_renderer(terminal)
        with Image.open(png) as im:
            picture = im.convert("RGB")
        background = Image.new("RGB", picture.size, (18, 18, 18))
        # 16 colours dither the tiny pipeline's noise to mostly greys: about 0.4 of the way
        # from the background (0.38-0.42 measured); nothing drawn, or boxes, stay near 1
        limit = 0.6 if terminal == "xterm" else 0.4
        best = None
        pressed = 0.0
        while time.monotonic() < deadline:
            if screen == "image" and time.monotonic() - pressed > 2:
                # the gallery (Ctrl+B does nothing there): again while no picture shows,
                # in case the first came before the Image screen took keys
                press(display, "ctrl+b")
                pressed = time.monotonic()
            shot = screenshot(display, shot_path)
            if screen == "image":  # the gallery's tile: in the top half, below the filters
                top = shot.crop((0, 0, shot.width, shot.height // 2))
                box = find_picture(top, top_fraction=0.1, textured=terminal == "xterm")
            else:  # below the panels: the recent images, their label and the footer
                box = find_picture(shot, top_fraction=0.45, textured=True)
            if box is not None:
                # inside a tile's border and caption (a cell of margin)
                small = min(box[2] - box[0], box[3] - box[1]) <= 64
                margin = 16 if screen == "image" and not small else 0
                crop = shot.crop(
                    (box[0] + margin, box[1] + margin, box[2] - margin, box[3] - margin)
                )
                distance = colour_distance(crop, picture)
                aspect = (box[2] - box[0]) / (box[3] - box[1])
                best = (distance, aspect, box)
                if distance < limit * colour_distance(background, picture) and 0.8 < aspect < 1.25:
                    break
            time.sleep(1.0)  # a screenshot costs the busy machine more than the app's frame
        else:
            pytest.fail(f"{terminal}, {screen}: no picture like the PNG drawn (best: {best})")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)
        keep = os.environ.get("LLM_PESSOAL_SHOTS")
        if keep and shot_path.exists():
            Path(keep).mkdir(parents=True, exist_ok=True)
            shutil.copy(shot_path, Path(keep) / shot_path.name)
