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
    denoising_strength: float | None = None
    """img2img's strength, or the hires fix's second pass's."""
    hires_upscale: float | None = None
    hires_steps: int | None = None
    hires_upscaler: str = ""
    lora_hashes: str = ""
    """``name: hash, name: hash`` of the LoRAs used, as AUTOMATIC1111 writes them."""
    ti_hashes: str = ""

    def to_text(self) -> str:
        """The de facto ``parameters`` text: prompt, negative prompt, then settings
        (AUTOMATIC1111's names and order for the hires fix, img2img and LoRAs)."""
        lines = [self.prompt]
        if self.negative_prompt:
            lines.append(f"Negative prompt: {self.negative_prompt}")
        settings = (
            f"Steps: {self.steps}, Sampler: {self.scheduler}, CFG scale: {self.guidance:g}, "
            f"Seed: {self.seed}, Size: {self.width}x{self.height}, Model: {_setting(self.model)}"
        )
        extra = [
            ("Denoising strength", _number(self.denoising_strength)),
            ("Hires upscale", _number(self.hires_upscale)),
            ("Hires steps", "" if self.hires_steps is None else str(self.hires_steps)),
            ("Hires upscaler", self.hires_upscaler),
            ("Lora hashes", self.lora_hashes and _quoted(self.lora_hashes)),
            ("TI hashes", self.ti_hashes and _quoted(self.ti_hashes)),
        ]
        settings += "".join(f", {key}: {value}" for key, value in extra if value)
        lines.append(settings)
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
            scheduler=_sampler(settings.get("Sampler", ""), settings.get("Schedule type", "")),
            model=settings.get("Model", ""),
            denoising_strength=_float(settings.get("Denoising strength")),
            hires_upscale=_float(settings.get("Hires upscale")),
            hires_steps=int(settings["Hires steps"]) if "Hires steps" in settings else None,
            hires_upscaler=settings.get("Hires upscaler", ""),
            lora_hashes=settings.get("Lora hashes", ""),
            ti_hashes=settings.get("TI hashes", ""),
        )


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:g}"


def _float(value: str | None) -> float | None:
    return None if value is None else float(value)


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ") + '"'


def _sampler(name: str, schedule: str) -> str:
    """AUTOMATIC1111 1.9+ writes "DPM++ 2M" with "Schedule type: Karras"; the app's
    sampler names join them."""
    if schedule == "Karras" and not name.endswith("Karras"):
        return f"{name} Karras"
    return name


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


COMFY_SAMPLERS = {
    "euler": "Euler",
    "euler_ancestral": "Euler a",
    "dpmpp_2m": "DPM++ 2M",
    "ddim": "DDIM",
    "uni_pc": "UniPC",
    "uni_pc_bh2": "UniPC",
    "lms": "LMS",
    "heun": "Heun",
}
"""ComfyUI's sampler names, as the app names them (with scheduler "karras", DPM++ 2M
becomes "DPM++ 2M Karras")."""

_COMFY_WIDGETS = {
    "KSampler": ("seed", "control_after_generate", "steps", "cfg", "sampler_name", "scheduler", "denoise"),
    "KSamplerAdvanced": (
        "add_noise", "noise_seed", "control_after_generate", "steps", "cfg", "sampler_name",
        "scheduler", "start_at_step", "end_at_step", "return_with_leftover_noise",
    ),
    "CLIPTextEncode": ("text",),
    "EmptyLatentImage": ("width", "height", "batch_size"),
    "CheckpointLoaderSimple": ("ckpt_name",),
}  # fmt: skip


def read_settings(path: Path) -> tuple[ImageParameters, str]:
    """The settings a PNG was made with, and who made it ("AUTOMATIC1111-style" for the
    ``parameters`` text this app writes too, or "ComfyUI" for its ``prompt``/``workflow``
    JSON, of which what maps is taken). ValueError when it holds neither."""
    import json

    from PIL import Image

    with Image.open(path) as im:
        found: Any = getattr(im, "text", None) or im.info
        chunks: dict[str, Any] = {str(k): v for k, v in found.items()}
    text = chunks.get(PARAMETERS_KEY)
    if isinstance(text, str):
        return ImageParameters.from_text(text), "AUTOMATIC1111-style"
    graph: dict[str, Any] | None = None
    for key in ("prompt", "workflow"):
        raw = chunks.get(key)
        if not isinstance(raw, str):
            continue
        try:
            data = json.loads(raw)
        except ValueError:
            continue
        if isinstance(data, dict):
            graph = data if key == "prompt" else _workflow_as_prompt(data)
            if graph:
                break
    if graph is None:
        raise ValueError(
            f"{path.name} holds no generation settings (no AUTOMATIC1111 'parameters' text "
            "and no ComfyUI 'prompt' or 'workflow')"
        )
    return _from_comfy(graph), "ComfyUI"


def _workflow_as_prompt(workflow: dict[str, Any]) -> dict[str, Any]:
    """A ComfyUI UI workflow (nodes with widget values, links by id) as the API graph."""
    links = {
        link[0]: (str(link[1]), link[2])
        for link in workflow.get("links", [])
        if isinstance(link, list) and len(link) >= 3
    }
    graph: dict[str, Any] = {}
    for node in workflow.get("nodes", []):
        if not isinstance(node, dict):
            continue
        kind = str(node.get("type", ""))
        inputs: dict[str, Any] = {}
        values = node.get("widgets_values") or []
        names = _COMFY_WIDGETS.get(kind, ())
        if isinstance(values, list):
            inputs.update(zip(names, values, strict=False))
        for slot in node.get("inputs") or []:
            if isinstance(slot, dict) and slot.get("link") in links:
                inputs[str(slot.get("name"))] = list(links[slot["link"]])
        graph[str(node.get("id"))] = {"class_type": kind, "inputs": inputs}
    return graph


def _from_comfy(graph: dict[str, Any]) -> ImageParameters:
    def node(link: Any) -> dict[str, Any]:
        if isinstance(link, list) and link and isinstance(graph.get(str(link[0])), dict):
            found: dict[str, Any] = graph[str(link[0])]
            return found
        return {}

    def find(start: dict[str, Any], key: str, depth: int = 0) -> Any:
        """``key`` in ``start``'s inputs, or in the nodes it is fed from (first found)."""
        inputs = start.get("inputs") or {}
        if key in inputs and not isinstance(inputs[key], list):
            return inputs[key]
        if depth > 20:
            return None
        for value in inputs.values():
            found = find(node(value), key, depth + 1) if isinstance(value, list) else None
            if found is not None:
                return found
        return None

    samplers = [
        n for n in graph.values()
        if isinstance(n, dict) and str(n.get("class_type", "")).startswith("KSampler")
    ]  # fmt: skip
    if not samplers:
        raise ValueError("the ComfyUI graph has no KSampler node")
    sampler = samplers[0]
    inputs = sampler.get("inputs") or {}

    def text(which: str) -> str:
        feeding = node(inputs.get(which))
        value = find(feeding, "text") if feeding else None
        if value is None and feeding:
            value = find(feeding, "text_g")
        return str(value) if value is not None else ""

    latent = node(inputs.get("latent_image"))
    width = find(latent, "width") if latent else None
    height = find(latent, "height") if latent else None
    name = str(inputs.get("sampler_name", ""))
    scheduler = COMFY_SAMPLERS.get(name, name)
    if inputs.get("scheduler") == "karras" and scheduler == "DPM++ 2M":
        scheduler = "DPM++ 2M Karras"
    seed = inputs.get("seed", inputs.get("noise_seed", -1))
    denoise = inputs.get("denoise")
    model = find(node(inputs.get("model")), "ckpt_name") if inputs.get("model") else None
    return ImageParameters(
        prompt=text("positive"),
        negative_prompt=text("negative"),
        width=int(width) if isinstance(width, int | float) else 512,
        height=int(height) if isinstance(height, int | float) else 512,
        steps=int(inputs.get("steps", 20)),
        guidance=float(inputs.get("cfg", 7.0)),
        seed=int(seed) if isinstance(seed, int | float) else -1,
        scheduler=scheduler,
        model=Path(str(model)).stem if model else "",
        denoising_strength=float(denoise)
        if isinstance(denoise, int | float) and denoise < 1
        else None,
    )
