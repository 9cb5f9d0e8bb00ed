"""Generated images on disk: safe names, the ``parameters`` PNG text chunk that
AUTOMATIC1111-compatible tools read, and atomic writes. No torch here."""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engines.files import atomic_write_bytes, slugify

if TYPE_CHECKING:
    from PIL import Image

PARAMETERS_KEY = "parameters"


@dataclass(frozen=True)
class ImageParameters:
    """What made an image: enough to make it again."""

    prompt: str
    negative_prompt: str
    width: int
    height: int
    steps: int
    guidance: float
    seed: int
    scheduler: str
    model: str

    def to_text(self) -> str:
        """The de facto ``parameters`` text: prompt, negative prompt, then settings."""
        lines = [self.prompt]
        if self.negative_prompt:
            lines.append(f"Negative prompt: {self.negative_prompt}")
        lines.append(
            f"Steps: {self.steps}, Sampler: {self.scheduler}, CFG scale: {self.guidance:g}, "
            f"Seed: {self.seed}, Size: {self.width}x{self.height}, Model: {_setting(self.model)}"
        )
        return "\n".join(lines)

    @classmethod
    def from_text(cls, text: str) -> ImageParameters:
        """Read the ``parameters`` text back (ours, or AUTOMATIC1111's)."""
        lines = text.strip("\n").split("\n")
        if not lines:
            raise ValueError("empty parameters")
        settings_line = lines[-1]
        settings = _parse_settings(settings_line)
        if "Steps" not in settings:
            raise ValueError("no 'Steps:' line in the parameters")
        body = lines[:-1]
        prompt_lines: list[str] = []
        negative_lines: list[str] = []
        target = prompt_lines
        for line in body:
            if line.startswith("Negative prompt:"):
                target = negative_lines
                # the one space after the colon, not the negative prompt's own whitespace
                line = line[len("Negative prompt:") :].removeprefix(" ")
            target.append(line)
        size = settings.get("Size", "512x512").lower().split("x")
        return cls(
            prompt="\n".join(prompt_lines),
            negative_prompt="\n".join(negative_lines),
            width=int(size[0]),
            height=int(size[1]),
            steps=int(settings["Steps"]),
            guidance=float(settings.get("CFG scale", "7")),
            seed=int(settings.get("Seed", "-1")),
            scheduler=settings.get("Sampler", ""),
            model=settings.get("Model", ""),
        )


def _setting(value: str) -> str:
    """A value fit for the comma-separated settings line."""
    if re.search(r'[,:"\n]', value) or value != value.strip():
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ") + '"'
    return value


_SETTING = re.compile(r'\s*([\w \-/+]+):\s*("(?:\\.|[^\\"])*"|[^,]*)(?:,|$)')


def _parse_settings(line: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in _SETTING.findall(line):
        value = value.strip()
        if value.startswith('"') and value.endswith('"') and len(value) >= 2:
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        out[key.strip()] = value
    return out


def image_filename(when: datetime, seed: int, prompt: str) -> str:
    """``YYYYmmdd-HHMMSS-SEED-slug.png``: never a path taken from user text."""
    return f"{when:%Y%m%d-%H%M%S}-{seed}-{slugify(prompt, 40)}.png"


def unique_path(folder: Path, name: str) -> Path:
    """``folder/name``, or ``name-2``, ``name-3``... when taken; always inside ``folder``."""
    base = Path(name).name  # never a directory part
    stem, suffix = Path(base).stem, Path(base).suffix
    candidate = folder / base
    n = 2
    while candidate.exists():
        candidate = folder / f"{stem}-{n}{suffix}"
        n += 1
    return candidate


def png_bytes(image: Image.Image, parameters: ImageParameters) -> bytes:
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text(PARAMETERS_KEY, parameters.to_text())
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def save_png(image: Image.Image, folder: Path, parameters: ImageParameters, when: datetime) -> Path:
    """Write the image atomically into ``folder``; returns its path."""
    data = png_bytes(image, parameters)
    folder.mkdir(parents=True, exist_ok=True)
    name = image_filename(when, parameters.seed, parameters.prompt)
    while True:  # another process may take the same name between the check and the write
        try:
            return atomic_write_bytes(unique_path(folder, name), data, exclusive=True)
        except FileExistsError:
            continue


def read_parameters(path: Path) -> ImageParameters:
    """The parameters stored in a PNG; ValueError when it has none."""
    from PIL import Image

    with Image.open(path) as im:
        text: Any = im.info.get(PARAMETERS_KEY) or getattr(im, "text", {}).get(PARAMETERS_KEY)
    if not isinstance(text, str):
        raise ValueError(f"{path.name} has no '{PARAMETERS_KEY}' text chunk")
    return ImageParameters.from_text(text)
