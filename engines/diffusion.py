"""Stable Diffusion in-process through diffusers.

torch and diffusers are imported on first use (``load``), never at start-up.
The engine is used from one worker thread at a time; ``cancel`` events and the
step callback are how that thread talks back. Every failure comes out as
:class:`DiffusionError` with a message that says what to change.
"""

from __future__ import annotations

import gc
import logging
import math
import os
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from engines.config import DiffusionSettings
from engines.files import remove_stale_temporaries
from engines.images import ImageParameters, save_png
from engines.limits import (
    IMAGE_COUNT,
    IMAGE_GUIDANCE,
    IMAGE_SEED,
    IMAGE_SIDE,
    IMAGE_SIDE_XL,
    IMAGE_STEPS,
    image_side_help,
)
from engines.loras import Applied, NetworkError, Networks
from engines.prompts import PromptEncoder, PromptError, parse_prompt

if TYPE_CHECKING:
    from PIL import Image

    from engines.hub import DownloadProgress, LocalModel

log = logging.getLogger(__name__)

SCHEDULERS: dict[str, tuple[str, dict[str, Any]]] = {
    "Euler": ("EulerDiscreteScheduler", {}),
    "Euler a": ("EulerAncestralDiscreteScheduler", {}),
    "DPM++ 2M": ("DPMSolverMultistepScheduler", {}),
    "DPM++ 2M Karras": ("DPMSolverMultistepScheduler", {"use_karras_sigmas": True}),
    "DDIM": ("DDIMScheduler", {}),
    "UniPC": ("UniPCMultistepScheduler", {}),
    "LMS": ("LMSDiscreteScheduler", {}),
    "Heun": ("HeunDiscreteScheduler", {}),
}
"""The samplers by the names users know, and the diffusers scheduler behind each."""

MAX_STEPS = int(IMAGE_STEPS.hi)
MAX_GUIDANCE = IMAGE_GUIDANCE.hi
MAX_COUNT = int(IMAGE_COUNT.hi)
MIN_STRENGTH = 0.01
MAX_STRENGTH = 1.0
"""img2img and hires-fix denoising strength: how much of the starting image is redrawn."""
MIN_HIRES_SCALE = 1.0
MAX_HIRES_SCALE = 4.0
"""Hires fix: the factor from the base size to the final one (1 is off)."""
HIRES_UPSCALERS = ("Latent", "Lanczos")
"""Hires fix: upscale the latents (bilinear), or the decoded image (Lanczos)."""
MAX_LORA_WEIGHT = 5.0
"""A LoRA's weight goes from minus this to this."""
MAX_LORAS = 8
VARIATION_STRENGTH = 0.35
VARIATION_COUNT = 4
"""Variations of an image: this many, img2img from it at this strength, new seeds."""
PREVIEW_INTERVAL_S = 0.25
"""At most this often is a step preview made (each one copies the latents to the CPU)."""
ROOM_MARGIN_BYTES = 1_500_000_000
"""GPU memory wanted beyond the weights: activations at 512x512, with some margin."""
ROOM_WAIT_S = 15.0
"""How long to wait for the memory Ollama frees after it was asked to unload."""

# Linear latent -> RGB maps (rows: latent channels; columns: R, G, B), output in [-1, 1].
LATENT_RGB_SD15 = (
    (0.298, 0.207, 0.208),
    (0.187, 0.286, 0.173),
    (-0.158, 0.189, 0.264),
    (-0.184, -0.271, -0.473),
)
LATENT_RGB_SDXL = (
    (0.3651, 0.4232, 0.4341),
    (-0.2533, -0.0042, 0.1068),
    (0.1076, 0.1111, -0.0362),
    (-0.3165, -0.2492, -0.2188),
)

State = Literal["not loaded", "loading", "ready", "failed"]


class DiffusionError(Exception):
    """Generation or loading failed; ``str()`` says what to do."""


class LoadCancelled(DiffusionError):
    """Loading was cancelled: nothing is loaded, and nothing failed."""


class RequestError(DiffusionError):
    """A request was refused before any work started."""


class OutOfMemory(DiffusionError):
    """The GPU ran out of memory; what it held is given back, the engine still works."""


@dataclass(frozen=True)
class GenerationRequest:
    prompt: str
    negative_prompt: str = ""
    width: int = 512
    height: int = 512
    steps: int = 20
    guidance: float = 7.5
    seed: int | None = None
    scheduler: str = "Euler a"
    count: int = 1
    init_image: str = ""
    """A PNG/JPEG to start from (img2img); resized to width x height. Empty: from noise."""
    strength: float = 0.75
    """img2img: how much of ``init_image`` is redrawn (1 is all of it)."""
    hires_scale: float = 1.0
    """Hires fix: above 1, make the image at width x height, upscale it by this factor, then
    redraw it at the larger size with ``hires_strength``."""
    hires_strength: float = 0.5
    hires_steps: int = 0
    """Hires fix: steps of the second pass (0: the same as ``steps``)."""
    hires_upscaler: str = "Latent"

    @property
    def hires(self) -> bool:
        return self.hires_scale > 1.0

    def hires_size(self, multiple: int = 8) -> tuple[int, int]:
        """The hires fix's final size: width and height times the factor, down to a multiple."""
        return (
            int(self.width * self.hires_scale) // multiple * multiple,
            int(self.height * self.hires_scale) // multiple * multiple,
        )


@dataclass(frozen=True)
class SizeLimits:
    """What sizes a loaded model takes."""

    multiple: int = IMAGE_SIDE.multiple_of or 1
    minimum: int = int(IMAGE_SIDE.lo)
    maximum: int = int(IMAGE_SIDE.hi)


ANY_MODEL = SizeLimits(maximum=int(IMAGE_SIDE_XL.hi))
"""What some model takes (SDXL goes to 3072): the check before a model is loaded."""


def validate(request: GenerationRequest, limits: SizeLimits = SizeLimits()) -> GenerationRequest:
    """The request, checked; RequestError says what is wrong and what is allowed."""
    problems = []
    if not request.prompt.strip():
        problems.append("the prompt is empty: describe the image")
    for name in ("width", "height"):
        value = getattr(request, name)
        if not limits.minimum <= value <= limits.maximum or value % limits.multiple:
            allowed = (
                image_side_help()
                if limits == ANY_MODEL
                else f"a multiple of {limits.multiple} from {limits.minimum} to {limits.maximum}"
            )
            problems.append(f"{name} {value} is not allowed: use {allowed}")
    if not 1 <= request.steps <= MAX_STEPS:
        problems.append(f"steps {request.steps} is not allowed: use 1 to {MAX_STEPS}")
    if not (0 <= request.guidance <= MAX_GUIDANCE) or math.isnan(request.guidance):
        problems.append(f"guidance {request.guidance:g} is not allowed: use 0 to {MAX_GUIDANCE:g}")
    if request.seed is not None and not IMAGE_SEED.allows(request.seed):
        problems.append(
            f"seed {request.seed} is not allowed: use {IMAGE_SEED.span()}, or leave it empty"
        )
    if request.scheduler not in SCHEDULERS:
        problems.append(
            f"scheduler {request.scheduler!r} is unknown: use one of {', '.join(SCHEDULERS)}"
        )
    if not 1 <= request.count <= MAX_COUNT:
        problems.append(f"count {request.count} is not allowed: use 1 to {MAX_COUNT}")
    for name in ("prompt", "negative_prompt"):
        if "\x00" in getattr(request, name):
            problems.append(f"the {name.replace('_', ' ')} holds a NUL character: remove it")
    problems.extend(_check_new(request, limits))
    if problems:
        raise RequestError("; ".join(problems))
    return request


def _check_new(request: GenerationRequest, limits: SizeLimits) -> list[str]:
    """img2img, hires fix and LoRAs, checked against the limits above."""
    from engines.prompts import PromptError, take_loras

    problems = []

    def strength(name: str, value: float) -> None:
        if not MIN_STRENGTH <= value <= MAX_STRENGTH or math.isnan(value):
            problems.append(
                f"{name} {value:g} is not allowed: use {MIN_STRENGTH:g} to {MAX_STRENGTH:g}"
            )

    if request.init_image:
        path = Path(request.init_image).expanduser()
        if not path.is_file():
            problems.append(f"init image {request.init_image} is not a file: give a PNG or JPEG")
        strength("strength", request.strength)
        if request.strength * request.steps < 1:
            problems.append(
                f"strength {request.strength:g} of {request.steps} steps leaves no step: "
                f"raise the strength to {1 / request.steps:.2g} or more, or the steps"
            )
    if not MIN_HIRES_SCALE <= request.hires_scale <= MAX_HIRES_SCALE or math.isnan(
        request.hires_scale
    ):
        problems.append(
            f"hires scale {request.hires_scale:g} is not allowed: use {MIN_HIRES_SCALE:g} "
            f"(off) to {MAX_HIRES_SCALE:g}"
        )
    elif request.hires:
        if request.init_image:
            problems.append("hires fix is for text-to-image: leave it off with an init image")
        strength("hires strength", request.hires_strength)
        if not 0 <= request.hires_steps <= MAX_STEPS:
            problems.append(
                f"hires steps {request.hires_steps} is not allowed: use 0 (as steps) to {MAX_STEPS}"
            )
        if request.hires_upscaler not in HIRES_UPSCALERS:
            problems.append(
                f"hires upscaler {request.hires_upscaler!r} is unknown: use "
                + " or ".join(HIRES_UPSCALERS)
            )
        width, height = request.hires_size(limits.multiple)
        if max(width, height) > limits.maximum:
            problems.append(
                f"hires scale {request.hires_scale:g} makes {width}x{height}, over "
                f"{limits.maximum}: lower the scale or the size"
            )
        second = request.hires_steps or request.steps
        if request.hires_strength * second < 1 and not problems:
            problems.append(
                f"hires strength {request.hires_strength:g} of {second} steps leaves no step"
            )
    try:
        _, loras = take_loras(request.prompt)
    except PromptError as exc:
        problems.append(str(exc))
    else:
        if len(loras) > MAX_LORAS:
            problems.append(f"{len(loras)} LoRAs named: use at most {MAX_LORAS}")
        for lora in loras:
            if not -MAX_LORA_WEIGHT <= lora.weight <= MAX_LORA_WEIGHT or math.isnan(lora.weight):
                problems.append(
                    f"LoRA {lora.name!r} weight {lora.weight:g} is not allowed: "
                    f"use {-MAX_LORA_WEIGHT:g} to {MAX_LORA_WEIGHT:g}"
                )
    return problems


@dataclass(frozen=True)
class EngineStatus:
    state: State = "not loaded"
    model: str = ""
    device: str = ""
    dtype: str = ""
    detail: str = ""
    progress: float = 0.0
    memory_bytes: int = 0
    architecture: str = ""
    """What the model is ("SD 1.x", "SD 2.x", "SDXL"), once it is read."""
    download: DownloadProgress | None = None
    """While a hub model downloads: its bytes, rate and ETA, per file and in total."""

    def describe(self) -> str:
        if self.state == "ready":
            what = f"{self.architecture} " if self.architecture else ""
            return f"{what}ready on {self.device} in {self.dtype}"
        if self.state == "loading" and self.download is not None:
            return self.detail  # bytes, rate and ETA say more than a percentage of loading
        if self.state == "loading":
            return f"loading ({self.progress:.0%}): {self.detail}"
        if self.state == "failed":
            return f"failed: {self.detail}"
        return "not loaded"


@dataclass(frozen=True)
class StepInfo:
    """One denoising step done."""

    image_index: int
    count: int
    step: int
    steps: int
    elapsed_s: float
    preview: Image.Image | None = None

    @property
    def steps_per_s(self) -> float:
        return self.step / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def eta_s(self) -> float:
        rate = self.steps_per_s
        remaining = (self.steps - self.step) + (self.count - self.image_index - 1) * self.steps
        return remaining / rate if rate else 0.0


@dataclass(frozen=True)
class GeneratedImage:
    path: Path
    parameters: ImageParameters
    seconds: float


@dataclass
class GenerationResult:
    images: list[GeneratedImage] = field(default_factory=list)
    cancelled: bool = False
    notes: list[str] = field(default_factory=list)


def model_name(model: str) -> str:
    """How an image's metadata names its model: a hub id as it is, a local folder or
    file by its name (no private paths in images people share)."""
    path = Path(model).expanduser()
    if path.is_absolute() or model.startswith((".", "~")) or path.exists():
        return path.stem if path.is_file() else path.name
    return model


def resolve_device(wanted: str) -> str:
    import torch

    if wanted == "auto":
        if torch.cuda.is_available():
            return "cuda"
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return "mps"
        return "cpu"
    if wanted == "cuda" and not torch.cuda.is_available():
        raise DiffusionError("device = 'cuda' but torch sees no CUDA GPU; use 'auto' or 'cpu'")
    if wanted == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise DiffusionError("device = 'mps' but this torch has no MPS; use 'auto' or 'cpu'")
    return wanted


def out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` says the GPU ran out of memory (torch's own error, or cuBLAS/cuDNN
    failing to allocate, which torch reports as a plain RuntimeError)."""
    if type(exc).__name__ == "OutOfMemoryError":
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and (
        "out of memory" in text.lower() or "STATUS_ALLOC_FAILED" in text
    )


def latents_to_rgb(latents: Any, matrix: tuple[tuple[float, ...], ...]) -> Image.Image:
    """A cheap preview of (C, H, W) latents through a linear map, as a PIL image."""
    import torch
    from PIL import Image

    weights = torch.tensor(matrix, dtype=torch.float32, device=latents.device)
    rgb = torch.einsum("chw,cr->hwr", latents.float(), weights)
    pixels = ((rgb.clamp(-1, 1) + 1) * 127.5).to(torch.uint8).cpu().numpy()
    return Image.fromarray(pixels, mode="RGB")


SINGLE_FILE_ARCHITECTURES: dict[str, tuple[str, str]] = {
    "v1": ("StableDiffusionPipeline", "SD 1.x"),
    "v2": ("StableDiffusionPipeline", "SD 2.x"),
    "xl_base": ("StableDiffusionXLPipeline", "SDXL"),
    "playground-v2-5": ("StableDiffusionXLPipeline", "SDXL (Playground v2.5)"),
}
"""diffusers' single-file model types this app makes images with: (pipeline, what to call it)."""

_OTHER_KINDS = {
    "inpainting": "an SD 1.x inpainting model",
    "inpainting_v2": "an SD 2.x inpainting model",
    "xl_inpaint": "an SDXL inpainting model",
    "xl_refiner": "an SDXL refiner (it refines images, it does not make them)",
    "upscale": "an upscaler",
}


def checkpoint_shapes(path: Path) -> dict[str, Any]:
    """Every key of a checkpoint file and an object with its ``shape``, read cheaply: the
    safetensors header only; a ``.ckpt`` is unpickled (weights only, memory-mapped)."""
    from types import SimpleNamespace

    if path.suffix == ".safetensors":
        from safetensors import safe_open

        shapes: dict[str, Any] = {}
        with safe_open(str(path), framework="pt") as f:
            for key in f.keys():  # noqa: SIM118 (a safetensors handle, not a dict)
                shapes[key] = SimpleNamespace(shape=tuple(f.get_slice(key).get_shape()))
        return shapes
    import torch

    data: Any = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    while isinstance(data, dict) and "state_dict" in data:
        data = data["state_dict"]
    if not isinstance(data, dict):
        raise DiffusionError(f"{path.name} holds no weights dictionary")
    return {
        k: SimpleNamespace(shape=tuple(v.shape)) for k, v in data.items() if hasattr(v, "shape")
    }


def detect_single_file(path: Path) -> str:
    """diffusers' model type of a checkpoint file ("v1", "v2", "xl_base"...), found from
    its keys by diffusers' own single-file detection; DiffusionError for one this app does
    not make images with, naming what it is."""
    from diffusers.loaders.single_file_utils import infer_diffusers_model_type

    try:
        shapes = checkpoint_shapes(path)
    except DiffusionError:
        raise
    except Exception as exc:
        raise DiffusionError(f"a weights file of {path.name} is damaged: {exc}") from exc
    if not any(key.startswith("model.diffusion_model.") for key in shapes):
        raise DiffusionError(
            f"{path.name} is not a Stable Diffusion checkpoint (it has no model.diffusion_model "
            "weights); a LoRA goes in [paths] loras, an embedding in [paths] embeddings"
        )
    kind = str(infer_diffusers_model_type(shapes))  # type: ignore[no-untyped-call]
    if kind not in SINGLE_FILE_ARCHITECTURES:
        what = _OTHER_KINDS.get(kind, f"a {kind} model")
        raise DiffusionError(
            f"{path.name} is {what}; single files of SD 1.x, SD 2.x and SDXL make images here"
        )
    return kind


def _check_config_matches(folder: Path, kind: str) -> None:
    """single_file_config must be a folder of the checkpoint's architecture."""
    import json

    try:
        index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return  # diffusers says what is missing
    wanted, label = SINGLE_FILE_ARCHITECTURES[kind]
    found = str(index.get("_class_name", ""))
    if ("XL" in found) != ("XL" in wanted):
        raise DiffusionError(
            f"the checkpoint is {label} but single_file_config ({folder}) is for {found}: "
            f"point it at a {label} folder, or leave it empty"
        )


def architecture_of(pipe: Any) -> str:
    """What a loaded pipeline is: SDXL, SD 2.x (a 1024-wide text encoder, or v-prediction)
    or SD 1.x."""
    if "XL" in type(pipe).__name__:
        return "SDXL"
    encoder = getattr(pipe, "text_encoder", None)
    hidden = getattr(getattr(encoder, "config", None), "hidden_size", 0)
    prediction = getattr(pipe.scheduler.config, "prediction_type", "epsilon")
    return "SD 2.x" if hidden == 1024 or prediction == "v_prediction" else "SD 1.x"


def _steps_run(steps: int, strength: float) -> int:
    """The steps a pass runs: all of them from noise, ``steps x strength`` from an image
    (as diffusers' img2img counts them)."""
    return min(int(steps * strength), steps)


class _Progress:
    """The pipeline's step callback: cancels at the next step, counts the user's steps
    over both passes of a hires fix, and makes a preview at most every PREVIEW_INTERVAL_S."""

    def __init__(
        self,
        request: GenerationRequest,
        index: int,
        total: int,
        on_step: Callable[[StepInfo], None] | None,
        cancel: threading.Event,
        matrix: tuple[tuple[float, ...], ...],
    ) -> None:
        self.request = request
        self.index = index
        self.total = total
        self.on_step = on_step
        self.cancel = cancel
        self.matrix = matrix
        self.started = time.perf_counter()
        self.last_preview = 0.0
        self.reported = 0
        self.offset = 0
        """Steps done by earlier passes."""
        self.planned = total
        """Steps of this pass, as the user counts them."""

    def __call__(self, p: Any, i: int, _t: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        if self.cancel.is_set():
            p._interrupt = True
            return kwargs
        # second-order samplers (Heun) run more model calls than steps: count the
        # user's steps, so that step <= steps and the last one is steps
        calls = max(1, int(getattr(p, "num_timesteps", 0) or self.planned))
        done = self.offset + (i + 1) * self.planned // calls
        if self.on_step is not None and done > self.reported:
            self.reported = done
            now = time.perf_counter()
            preview = None
            if now - self.last_preview >= PREVIEW_INTERVAL_S or done == self.total:
                self.last_preview = now
                preview = latents_to_rgb(kwargs["latents"][0], self.matrix)
            self.on_step(
                StepInfo(
                    self.index, self.request.count, done, self.total, now - self.started, preview
                )
            )
            if self.cancel.is_set():  # cancelled from the callback: no further step
                p._interrupt = True
        return kwargs


class DiffusionEngine:
    """One text-to-image pipeline: load it, generate with it, unload it."""

    def __init__(
        self,
        settings: DiffusionSettings,
        outputs: Path,
        cache: Path | None = None,
        *,
        make_room: Callable[[], list[str]] | None = None,
        on_image: Callable[[GeneratedImage], None] | None = None,
        loras: Path | None = None,
        embeddings: Path | None = None,
    ) -> None:
        self.settings = settings
        self.outputs = outputs
        self.cache = cache
        self.make_room = make_room
        """Called on CUDA when the GPU lacks memory: frees what it can (Ollama's models)
        and returns what it unloaded."""
        self.on_image = on_image
        """Called with every image saved (the app indexes it in its store)."""
        self._pipe: Any = None
        self._img2img: Any = None
        """The image-to-image pipeline over the same modules as ``_pipe`` (``from_pipe``)."""
        self._networks: Networks | None = None
        self._encoder: PromptEncoder | None = None
        self.lora_folder = loras
        self.embedding_folder = embeddings
        self._lock = threading.RLock()
        self._status = EngineStatus(model=settings.model)
        self._matrix = LATENT_RGB_SD15
        self.limits = SizeLimits()
        self.model = settings.model
        self.notes: list[str] = []
        """What the engine did on its own (unloading Ollama's models, say), to tell."""
        for stale in remove_stale_temporaries(outputs):
            log.warning("removed a temporary file left by an interrupted save: %s", stale.name)
        self._base_scheduler: Any = None
        self._scheduler_name = ""

    # -- state ------------------------------------------------------------------

    @property
    def status(self) -> EngineStatus:
        return self._status

    def _set(self, **changes: Any) -> None:
        self._status = replace(self._status, **changes)

    @property
    def loaded(self) -> bool:
        return self._pipe is not None

    # -- loading ----------------------------------------------------------------

    def load(
        self,
        model: str | None = None,
        on_progress: Callable[[EngineStatus], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> EngineStatus:
        """Load ``model`` (default: the configured one). Safe to call when loaded:
        it returns at once for the same model and replaces a different one."""
        with self._lock:
            model = model or self.model
            if self._pipe is not None and model == self.model:
                return self._status
            if self._pipe is not None:
                self.unload()
            self.model = model

            def step(progress: float, detail: str) -> None:
                if cancel is not None and cancel.is_set():
                    raise LoadCancelled("loading cancelled")
                self._set(state="loading", model=model, progress=progress, detail=detail)
                if on_progress is not None:
                    on_progress(self._status)

            pipe: Any = None
            cancelled = ""
            try:
                step(0.05, "importing torch and diffusers")
                # their import-time chatter would land on the terminal
                os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
                os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
                import torch

                device = resolve_device(self.settings.device)
                dtype = self._dtype(device)
                if device == "cpu":
                    # leave a core to the interface: oversubscribed OpenMP threads spin
                    # and slow everything down, the steps included
                    torch.set_num_threads(max(1, (os.cpu_count() or 2) - 1))
                local = self._from_hub(model, dtype, step, cancel)
                step(0.2, f"reading {model}")
                pipe = self._read(
                    str(local.path) if local else model, dtype, local.variant if local else None
                )
                architecture = architecture_of(pipe)
                self._set(architecture=architecture)
                step(0.6, f"preparing for {device}")
                self._prepare(pipe, device, dtype, step)
                self._pipe = pipe
                self._attach(pipe)
                xl = architecture.startswith("SDXL")
                self._matrix = LATENT_RGB_SDXL if xl else LATENT_RGB_SD15
                self._base_scheduler = pipe.scheduler
                self._scheduler_name = ""
                factor = int(getattr(pipe, "vae_scale_factor", 8) or 8)
                self.limits = SizeLimits(
                    multiple=max(8, factor),
                    minimum=int(IMAGE_SIDE.lo),
                    maximum=int((IMAGE_SIDE_XL if xl else IMAGE_SIDE).hi),
                )
                step(
                    0.85,
                    "warming up"
                    + (" (compiling the UNet, a one-off)" if self._fast(device) else ""),
                )
                self._warm_up(device)
                # torch, diffusers and transformers bring millions of long-lived objects:
                # keep them out of the collector's full passes, which otherwise stall the
                # whole process (the interface included) for a third of a second
                gc.collect()
                gc.freeze()
                memory = torch.cuda.memory_allocated() if device == "cuda" else 0
                self._set(
                    state="ready",
                    device=device,
                    dtype=str(dtype).removeprefix("torch."),
                    progress=1.0,
                    detail="",
                    memory_bytes=memory,
                )
                log.info("diffusion pipeline ready", extra={"model": model, "device": device})
            except LoadCancelled as exc:
                failure, cancelled = "", str(exc)  # its words: a download says it resumes
            except OutOfMemory as exc:  # in the warm-up: no size of the user's to blame
                failure = self._explain_load_error(model, exc)
            except DiffusionError as exc:
                failure = str(exc)
            except Exception as exc:
                failure = self._explain_load_error(model, exc)
                log.debug("loading %s failed", model, exc_info=exc)
            else:
                if on_progress is not None:
                    on_progress(self._status)
                return self._status
            # Out of the handler, so that no traceback holds the half-loaded pipeline (its
            # frames do): now _fail can give its memory back. Nothing chained, for the same
            # reason; the log has the original.
            pipe = None
            if not failure:
                self.unload()
                raise LoadCancelled(cancelled or "loading cancelled")
            self._fail(failure)
            raise DiffusionError(failure)

    def _attach(self, pipe: Any) -> None:
        """What works beside the text-to-image pipeline, sharing its modules: img2img,
        the LoRAs and embeddings, the prompt encoder."""
        from diffusers import AutoPipelineForImage2Image

        self._img2img = AutoPipelineForImage2Image.from_pipe(pipe)
        self._img2img.set_progress_bar_config(disable=True)
        self._networks = Networks(pipe, self.lora_folder, self.embedding_folder)
        self._encoder = PromptEncoder(pipe, self._networks.inversions)

    def _fail(self, message: str) -> None:
        self._pipe = self._img2img = self._networks = self._encoder = None
        self._release(dropped=True)
        self._set(state="failed", detail=message, progress=0.0)
        log.error("diffusion pipeline failed to load: %s", message)

    def _dtype(self, device: str) -> Any:
        import torch

        name = self.settings.dtype
        if name == "auto":
            return torch.float16 if device == "cuda" else torch.float32
        return getattr(torch, name)

    def _fast(self, device: str) -> bool:
        return self.settings.fast and device == "cuda"

    def _from_hub(
        self,
        model: str,
        dtype: Any,
        step: Callable[[float, str], None],
        cancel: threading.Event | None,
    ) -> LocalModel | None:
        """A hub id made a folder on disk before it is read: found complete in the cache
        (no network), else downloaded, only the files needed, its progress in the status
        (engines/hub.py). None for a local model."""
        from engines.hub import DownloadCancelled, HubError, HubModels, hub_cache, is_hub_id

        if not is_hub_id(model):
            return None
        import torch

        hub = HubModels(hub_cache(self.cache))

        def progress(p: DownloadProgress) -> None:
            if cancel is None or not cancel.is_set():
                self._set(download=p)
                step(0.05 + 0.15 * p.fraction, p.describe())

        step(0.05, f"looking for {model} in the cache")
        try:
            return hub.ensure(
                model,
                fp16=dtype == torch.float16,
                on_plan=lambda plan: step(0.05, f"downloading {model}: {plan.summary()}"),
                on_progress=progress,
                cancel=cancel,
            )
        except DownloadCancelled as exc:
            raise LoadCancelled(str(exc)) from exc
        except HubError as exc:
            raise DiffusionError(str(exc)) from exc
        finally:
            self._set(download=None)

    def _read(self, model: str, dtype: Any, variant: str | None = None) -> Any:
        """The pipeline from a hub id, a diffusers folder or a single checkpoint file."""
        import diffusers
        import transformers
        from diffusers import AutoPipelineForText2Image

        # no progress bars or chatter on the terminal: the app shows its own progress
        for library in (diffusers, transformers):
            library.utils.logging.disable_progress_bar()
            library.utils.logging.set_verbosity_error()
        path = Path(model).expanduser()
        common: dict[str, Any] = {"dtype": dtype}
        if self.cache is not None and "HF_HOME" not in os.environ:
            # downloads go to [paths] cache (as HF_HOME would), without changing the
            # environment of the whole process
            common["cache_dir"] = str(self.cache / "hub")
        looks_local = path.is_absolute() or model.startswith((".", "~")) or path.exists()
        if looks_local and not path.exists():
            raise DiffusionError(f"model path {path} does not exist")
        if path.is_file():
            return self._read_single_file(path, common)
        if path.is_dir():
            if not (path / "model_index.json").is_file():
                raise DiffusionError(
                    f"{path} is not a diffusers model folder (no model_index.json in it)"
                )
            common["local_files_only"] = True
        return AutoPipelineForText2Image.from_pretrained(  # type: ignore[no-untyped-call]
            str(path) if path.is_dir() else model,
            safety_checker=None,
            requires_safety_checker=False,
            variant=variant,
            **common,
        )

    def _read_single_file(self, path: Path, common: dict[str, Any]) -> Any:
        """One checkpoint file: its architecture found from its keys, then the pipeline of
        that architecture, configured from ``single_file_config`` when set (else from the
        hub's configs of the architecture's reference model)."""
        import diffusers

        if path.suffix not in (".safetensors", ".ckpt"):
            raise DiffusionError(f"{path.name}: a single-file model must be .safetensors or .ckpt")
        kind = detect_single_file(path)
        class_name, _label = SINGLE_FILE_ARCHITECTURES[kind]
        cls = getattr(diffusers, class_name)
        kwargs = dict(common)
        config = self.settings.single_file_config
        if config:
            local = Path(config).expanduser()
            if local.exists():
                _check_config_matches(local, kind)
            kwargs["config"] = str(local) if local.exists() else config
            kwargs["local_files_only"] = local.exists()
        if class_name == "StableDiffusionPipeline":
            kwargs.update(safety_checker=None, requires_safety_checker=False)
        return cls.from_single_file(str(path), **kwargs)

    def _prepare(
        self, pipe: Any, device: str, dtype: Any, step: Callable[[float, str], None]
    ) -> None:
        import torch

        s = self.settings
        if s.memory_efficient_attention:
            try:
                import xformers  # type: ignore[import-not-found]  # noqa: F401
            except ImportError:
                pass  # torch's scaled-dot-product attention is already memory-efficient
            else:
                pipe.enable_xformers_memory_efficient_attention()
        if s.attention_slicing:
            pipe.enable_attention_slicing()
        if s.vae_slicing:
            pipe.vae.enable_slicing()
        if s.vae_tiling:
            pipe.vae.enable_tiling()
        if self._fast(device):
            pipe.unet.to(memory_format=torch.channels_last)
            pipe.vae.to(memory_format=torch.channels_last)
            if hasattr(pipe, "fuse_qkv_projections"):
                pipe.fuse_qkv_projections()
        if device == "cuda":
            self._ensure_room(pipe, dtype, step)
        if s.cpu_offload == "model" and device != "cpu":
            pipe.enable_model_cpu_offload(device=device)
        elif s.cpu_offload == "sequential" and device != "cpu":
            pipe.enable_sequential_cpu_offload(device=device)
        else:
            pipe.to(device)
        if self._fast(device):
            pipe.unet = torch.compile(pipe.unet)
        pipe.set_progress_bar_config(disable=True)

    def _ensure_room(self, pipe: Any, dtype: Any, step: Callable[[float, str], None]) -> None:
        """On CUDA, make room by asking Ollama to unload its models, when allowed, and
        wait (up to ROOM_WAIT_S) for the memory to come back: Ollama answers the unload
        at once but its runner frees the GPU a moment later."""
        import torch

        free = self._gpu_free_bytes()
        size = sum(
            p.numel() * p.element_size()
            for name in ("unet", "vae", "text_encoder", "text_encoder_2")
            if getattr(pipe, name, None) is not None
            for p in getattr(pipe, name).parameters()
        )
        if dtype == torch.float16 and next(pipe.unet.parameters()).dtype == torch.float32:
            size //= 2
        need = size + ROOM_MARGIN_BYTES
        if free >= need or not self.settings.unload_ollama_models or self.make_room is None:
            return
        step(0.65, "asking Ollama to unload its models to make room on the GPU")
        unloaded = self.make_room()
        if not unloaded:
            return
        note = f"unloaded Ollama models to make room on the GPU: {', '.join(unloaded)}"
        deadline = time.monotonic() + ROOM_WAIT_S
        while (free := self._gpu_free_bytes()) < need and time.monotonic() < deadline:
            step(0.7, f"{note}; waiting for the memory to be free")
            time.sleep(0.2)
        if free < need:
            note += (
                f" (still only {free / 2**30:.1f} GiB free of the {need / 2**30:.1f} GiB wanted)"
            )
        self.notes.append(note)
        step(0.75, note)
        log.info(note)

    def _gpu_free_bytes(self) -> int:
        import torch

        free, _total = torch.cuda.mem_get_info()
        return int(free)

    def _warm_up(self, device: str) -> None:
        """One short run, so the first real image is not slowed by one-off work."""
        size = self.limits.minimum if device == "cpu" else 512
        steps = 1 if not self._fast(device) else 2
        request = GenerationRequest("warm-up", width=size, height=size, steps=steps, seed=0)
        assert self._encoder is not None
        self._make(
            request,
            self._encoder.encode(request.prompt, ""),
            None,
            seed=0,
            cancel=threading.Event(),
            on_step=None,
            index=0,
            decode=device != "cpu",
        )

    def use(self, model: str) -> None:
        """Make ``model`` the one the next load reads (a loaded different one is unloaded
        first; a generation in progress finishes before)."""
        with self._lock:
            if model != self.model:
                self.unload()
                self.model = model
                self._set(model=model)

    def unload(self) -> None:
        """Free the pipeline and the memory it held."""
        with self._lock:
            self._pipe = None
            self._img2img = self._networks = self._encoder = None
            self._release(dropped=True)
            self._set(
                state="not loaded",
                device="",
                dtype="",
                detail="",
                progress=0.0,
                memory_bytes=0,
                architecture="",
            )

    @staticmethod
    def _release(dropped: bool = False) -> None:
        """Give memory back. ``dropped``: the pipeline was let go; load froze the
        collector's view of it (gc.freeze), and a frozen reference cycle (accelerate's
        offload hooks make one, module -> forward -> module) is never collected: unfreeze
        first, or unloading frees nothing and the GPU memory stays taken for good."""
        if dropped:
            gc.unfreeze()
        gc.collect()
        try:
            import torch
        except ImportError:  # pragma: no cover
            return
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    @staticmethod
    def _explain_load_error(model: str, exc: Exception) -> str:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        name = type(exc).__name__
        if isinstance(exc, OutOfMemory) or out_of_memory(exc):
            return (
                f'not enough GPU memory to load {model}: set cpu_offload = "model" '
                "or close what else uses the GPU"
            )
        if name in (
            "OSError",
            "EnvironmentError",
            "LocalEntryNotFoundError",
            "RepositoryNotFoundError",
        ):
            return f"cannot load {model}: {text}"
        if "safetensors" in name.lower() or "SafetensorError" in name or "HeaderTooLarge" in text:
            return f"a weights file of {model} is damaged: {text}"
        return f"cannot load {model}: {name}: {text}"

    # -- generating ----------------------------------------------------------------

    def prompt_tokens(self, prompt: str) -> tuple[int, int]:
        """(tokens in the prompt without its syntax, the tokens of one chunk). Longer
        prompts are read in chunks, none of it is dropped."""
        tokenizer = getattr(self._pipe, "tokenizer", None)
        if tokenizer is None or self._encoder is None:
            return 0, 0
        try:
            used = self._encoder.token_count(prompt)
        except PromptError:
            used = 0
        return used, int(tokenizer.model_max_length) - 2

    def lora_names(self) -> list[str]:
        """The LoRAs in [paths] loras, by the names a prompt uses."""
        return Networks(None, self.lora_folder, None).lora_names()

    def generate(
        self,
        request: GenerationRequest,
        on_step: Callable[[StepInfo], None] | None = None,
        cancel: threading.Event | None = None,
        on_image: Callable[[GeneratedImage], None] | None = None,
    ) -> GenerationResult:
        """Make ``request.count`` images and save each as PNG. Cancelling stops within
        one step; images finished before it are kept and returned. ``on_image`` hears of
        each image once it is saved and indexed (a queue counts its job's images)."""
        cancel = cancel or threading.Event()
        with self._lock:
            # refuse a bad request before any work, loading included
            request = validate(request, self.limits if self.loaded else ANY_MODEL)
            if self._pipe is None:
                self.load(cancel=cancel)
            request = validate(request, self.limits)
            result = GenerationResult(notes=list(self.notes))
            self.notes.clear()
            applied, conditioning = self._condition(request)
            init = self._init_image(request)
            base = (
                request.seed if request.seed is not None else secrets.randbelow(2**32 - MAX_COUNT)
            )
            self._use_scheduler(request.scheduler)
            for index in range(request.count):
                if cancel.is_set():
                    result.cancelled = True
                    break
                seed = (base + index) % 2**32
                started = time.perf_counter()
                image = self._make(
                    request,
                    conditioning,
                    init,
                    seed=seed,
                    cancel=cancel,
                    on_step=on_step,
                    index=index,
                )
                if image is None:
                    result.cancelled = True
                    break
                parameters = self._parameters(request, seed, applied)
                try:
                    path = save_png(image, self.outputs, parameters, datetime.now())
                except OSError as exc:
                    raise DiffusionError(
                        f"cannot save the image in {self.outputs}: {exc.strerror or exc}"
                    ) from exc
                done = GeneratedImage(path, parameters, time.perf_counter() - started)
                result.images.append(done)
                if self.on_image is not None:
                    self.on_image(done)
                if on_image is not None:
                    on_image(done)
                # no prompt text above DEBUG: the file name holds a slug of it
                log.info("image generated", extra={"seed": seed, "seconds": done.seconds})
                log.debug("image saved", extra={"path": str(path)})
            return result

    def _condition(self, request: GenerationRequest) -> tuple[Applied, dict[str, Any]]:
        """The prompt's LoRAs and embeddings applied, and its text embeddings (made once
        for all the request's images)."""
        assert self._networks is not None and self._encoder is not None
        try:
            parsed = parse_prompt(request.prompt)
            loras = self._networks.use_loras(parsed.loras)
            embeddings = self._networks.use_embeddings(request.prompt, request.negative_prompt)
            conditioning = self._encoder.encode(request.prompt, request.negative_prompt)
        except (PromptError, NetworkError) as exc:
            raise RequestError(str(exc)) from exc
        return Applied(loras, embeddings), conditioning

    def _init_image(self, request: GenerationRequest) -> Image.Image | None:
        if not request.init_image:
            return None
        from PIL import Image, UnidentifiedImageError

        path = Path(request.init_image).expanduser()
        try:
            with Image.open(path) as im:
                image = im.convert("RGB")
        except (OSError, UnidentifiedImageError) as exc:
            raise RequestError(f"init image {path.name} cannot be read: {exc}") from exc
        if image.size != (request.width, request.height):
            image = image.resize((request.width, request.height), Image.Resampling.LANCZOS)
        return image

    def _parameters(
        self, request: GenerationRequest, seed: int, applied: Applied
    ) -> ImageParameters:
        hires = request.hires
        return ImageParameters(
            prompt=request.prompt,
            negative_prompt=request.negative_prompt,
            width=request.width,
            height=request.height,
            steps=request.steps,
            guidance=request.guidance,
            seed=seed,
            scheduler=request.scheduler,
            model=model_name(self.model),
            denoising_strength=(
                request.hires_strength
                if hires
                else request.strength
                if request.init_image
                else None
            ),
            hires_upscale=request.hires_scale if hires else None,
            hires_steps=request.hires_steps if hires and request.hires_steps else None,
            hires_upscaler=request.hires_upscaler if hires else "",
            lora_hashes=applied.lora_hashes,
            ti_hashes=applied.ti_hashes,
        )

    def _use_scheduler(self, name: str) -> None:
        """Switch the pipeline's sampler, built from the model's own scheduler config."""
        if name == self._scheduler_name:
            return
        import diffusers

        class_name, extra = SCHEDULERS[name]
        cls = getattr(diffusers, class_name)
        scheduler = cls.from_config(self._base_scheduler.config, **extra)
        self._pipe.scheduler = scheduler
        if self._img2img is not None:
            self._img2img.scheduler = scheduler
        self._scheduler_name = name

    def _make(
        self,
        request: GenerationRequest,
        conditioning: dict[str, Any],
        init: Image.Image | None,
        *,
        seed: int,
        cancel: threading.Event,
        on_step: Callable[[StepInfo], None] | None,
        index: int,
        decode: bool = True,
    ) -> Image.Image | None:
        """One image (img2img, text-to-image, or text-to-image then the hires fix), or
        None when cancelled."""
        import torch

        generator = torch.Generator("cpu").manual_seed(seed)
        first = _steps_run(request.steps, request.strength if init is not None else 1.0)
        second = _steps_run(request.hires_steps or request.steps, request.hires_strength)
        total = first + (second if request.hires else 0)
        progress = _Progress(request, index, total, on_step, cancel, self._matrix)
        size = {"width": request.width, "height": request.height}
        if init is not None:
            latents = self._run(
                self._img2img,
                dict(conditioning, image=init, strength=request.strength),
                request, generator, progress, planned=first,
            )  # fmt: skip
        else:
            latents = self._run(
                self._pipe, dict(conditioning, **size), request, generator, progress, planned=first
            )
        if latents is None:
            return None
        if request.hires:
            upscaled = self._upscale(latents, request)
            progress.offset = first
            latents = self._run(
                self._img2img,
                dict(conditioning, image=upscaled, strength=request.hires_strength),
                replace(request, steps=request.hires_steps or request.steps),
                generator, progress, planned=second,
            )  # fmt: skip
            if latents is None:
                return None
        if not decode:
            return None
        return self._decode(latents)

    def _upscale(self, latents: Any, request: GenerationRequest) -> Any:
        """The hires fix's upscale: of the latents (bilinear), or of the decoded image
        (Lanczos), to the final size."""
        from PIL import Image

        width, height = request.hires_size(self.limits.multiple)
        if request.hires_upscaler == "Latent":
            import torch

            factor = int(getattr(self._pipe, "vae_scale_factor", 8) or 8)
            return torch.nn.functional.interpolate(
                latents, size=(height // factor, width // factor), mode="bilinear"
            )
        return self._decode(latents).resize((width, height), Image.Resampling.LANCZOS)

    def _run(
        self,
        pipe: Any,
        inputs: dict[str, Any],
        request: GenerationRequest,
        generator: Any,
        progress: _Progress,
        *,
        planned: int,
    ) -> Any:
        """One pass of ``pipe``: its latents, or None when cancelled."""

        progress.planned = planned
        try:
            out = pipe(
                num_inference_steps=request.steps,
                guidance_scale=request.guidance,
                generator=generator,
                output_type="latent",
                callback_on_step_end=progress,
                callback_on_step_end_tensor_inputs=["latents"],
                **inputs,
            )
            if progress.cancel.is_set():
                return None
            return out.images
        except DiffusionError:
            raise
        except Exception as exc:
            oom = out_of_memory(exc)
            if oom:
                log.warning("out of memory: %s", str(exc).strip().split("\n")[0])
                failure = (
                    f"the GPU ran out of memory at {request.width}x{request.height}: "
                    "try a smaller size, attention_slicing = true, vae_tiling = true, "
                    'or cpu_offload = "model" in config.toml'
                )
            else:
                log.error("the pipeline failed", exc_info=exc)
                failure = f"the pipeline failed: {type(exc).__name__}: {exc}"
        finally:
            pipe._interrupt = False
        # Out of the handler: the exception's traceback held every frame of the pipeline's
        # call, and with them its intermediate tensors. Gone now, they can be given back
        # (an error kept by the caller, as a worker keeps it, holds none of them).
        del pipe
        self._release()
        raise (OutOfMemory if oom else DiffusionError)(failure)

    def _decode(self, latents: Any) -> Image.Image:
        """Latents to a PIL image as the pipeline's own decode does it (run only when not
        cancelled): SDXL's upcast of a float16 VAE, per-channel latent statistics and
        watermark; SD's plain scaling."""
        import torch

        pipe = self._pipe
        vae = pipe.vae
        with torch.no_grad():
            if "XL" in type(pipe).__name__:
                upcast = vae.dtype == torch.float16 and vae.config.force_upcast
                if upcast:
                    vae.to(dtype=torch.float32)
                    latents = latents.to(next(iter(vae.post_quant_conv.parameters())).dtype)
                try:
                    mean = getattr(vae.config, "latents_mean", None)
                    std = getattr(vae.config, "latents_std", None)
                    if mean is not None and std is not None:
                        shape = (1, 4, 1, 1)
                        m = torch.tensor(mean).view(shape).to(latents.device, latents.dtype)
                        s = torch.tensor(std).view(shape).to(latents.device, latents.dtype)
                        latents = latents * s / vae.config.scaling_factor + m
                    else:
                        latents = latents / vae.config.scaling_factor
                    image = vae.decode(latents.to(vae.device), return_dict=False)[0]
                finally:
                    if upcast:
                        vae.to(dtype=torch.float16)
                if getattr(pipe, "watermark", None) is not None:
                    image = pipe.watermark.apply_watermark(image)
            else:
                image = vae.decode(latents / vae.config.scaling_factor, return_dict=False)[0]
            images = pipe.image_processor.postprocess(image, output_type="pil")
        first: Image.Image = images[0]
        return first
