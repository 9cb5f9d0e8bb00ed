"""Make the README's screenshots: the real app, at 120x40, saved as SVG by Textual.

    .venv/bin/python docs/screenshots.py        # writes docs/screenshots/*.svg

The app runs against the tests' fake Ollama server (tests/ollama_server.py) with a
conversation and a few pictures seeded in a temporary data folder, so the screenshots
are the same on every machine and need no model.
"""

from __future__ import annotations

import asyncio
import math
import sys
import tempfile
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from PIL import Image, ImageDraw  # noqa: E402

from engines.chat_types import ChatOptions, ReplyStats  # noqa: E402
from engines.config import load_settings  # noqa: E402
from engines.images import ImageParameters, save_png  # noqa: E402
from engines.store import Store  # noqa: E402

OUT = REPO / "docs" / "screenshots"
SIZE = (120, 40)

REPLY = """\
Slicing with a step of -1 walks the string backwards:

```python
def reverse(text: str) -> str:
    return text[::-1]
```

| input | output |
|-------|--------|
| abc   | cba    |

- It works on **any** string, including Unicode text.
- It returns a new string; the original is unchanged.
"""


def picture(seed: int, size: int = 256) -> Image.Image:
    """A dusk sky over the sea, with a lighthouse: something to look at, drawn by PIL."""
    img = Image.new("RGB", (size, size))
    draw = ImageDraw.Draw(img)
    for y in range(size):
        t = y / size
        sky = (int(40 + 200 * t), int(30 + 90 * t * (1 - t) * 4), int(90 + 60 * (1 - t)))
        draw.line([(0, y), (size, y)], fill=sky)
    horizon = int(size * (0.62 + 0.04 * math.sin(seed)))
    draw.rectangle([0, horizon, size, size], fill=(20, 40 + 5 * seed, 70))
    sun = size // 2 + 40 * ((seed % 3) - 1)
    draw.ellipse([sun - 28, horizon - 28, sun + 28, horizon + 28], fill=(255, 170, 60))
    x = size // 5 + 12 * seed
    draw.rectangle([x, horizon - 90, x + 14, horizon], fill=(235, 235, 225))
    draw.rectangle([x - 3, horizon - 100, x + 17, horizon - 90], fill=(200, 40, 40))
    draw.rectangle([0, horizon, size, horizon + 3], fill=(255, 200, 120))
    return img


def seed_data(config: Path) -> None:
    settings = load_settings(config, env={})
    store = Store.open(settings.paths.database)
    for title in ("Plan a trip to Porto", "Explain WAL mode in SQLite", "A haiku about GPUs"):
        store.create_conversation("qwen2.5-coder:7b", ChatOptions(), title)
    a = store.create_conversation("llama3.2:latest", ChatOptions(), "Reverse a string")
    store.add_message(a.id, "user", "How do I reverse a string in Python?")
    rid = store.add_message(a.id, "assistant", "", model="llama3.2:latest")
    stats = ReplyStats("llama3.2:latest", 31, 74, 48.2, 0.21, 1.5, 0.0, "stop")
    store.update_message(rid, REPLY, status="done", stats=stats)
    settings.paths.outputs.mkdir(parents=True, exist_ok=True)
    for seed in range(4):
        params = ImageParameters(
            "a lighthouse at dusk, oil painting",
            "blurry",
            256,
            256,
            30,
            7.5,
            1000 + seed,
            "DPM++ 2M Karras",
            "stable-diffusion-v1-5",
        )
        when = datetime(2026, 11, 30, 9, 0, seed)
        path = save_png(picture(seed), settings.paths.outputs, params, when)
        store.add_image(path, params, 3.2)
    store.close()


async def shoot_one(config: Path, screen: str) -> None:
    from tui_helpers import make_app, wait_for

    app = make_app(config, start_screen=screen)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.ollama is not None and app.models, what="online")
        if screen == "chat":
            newest = app.store.conversations()[0]
            app.screen.open_conversation(newest.id)  # type: ignore[attr-defined]
            await wait_for(pilot, lambda: "Slicing" in _text(app), what="the reply")
        else:
            await pilot.pause(1.5)  # the Monitor's first samples; the gallery's thumbnails
        app.save_screenshot(f"{screen}.svg", str(OUT))
        print(OUT / f"{screen}.svg")


async def shoot(config: Path) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for screen in ("chat", "image", "monitor"):
        await shoot_one(config, screen)


def _text(app: object) -> str:
    from tui_helpers import screen_text

    return screen_text(app)  # type: ignore[arg-type]


def main() -> None:
    from conftest import write_toml
    from ollama_server import FakeOllama

    server = FakeOllama().start()
    server.set_loaded(["llama3.2:latest"])
    try:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            config = write_toml(
                root / "config.toml",
                {
                    "ollama": {"host": server.url},
                    "diffusion": {"model": "stable-diffusion-v1-5/stable-diffusion-v1-5"},
                    "paths": {
                        "outputs": root / "outputs",
                        "logs": root / "logs",
                        "database": root / "data" / "llm-pessoal.db",
                        "exports": root / "exports",
                        "cache": root / "cache",
                    },
                },
            )
            seed_data(config)
            asyncio.run(shoot(config))
    finally:
        server.stop()


if __name__ == "__main__":
    main()
