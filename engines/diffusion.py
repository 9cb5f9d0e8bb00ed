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

MAX_STEPS = 150
MAX_GUIDANCE = 30.0
MAX_COUNT = 16
PREVIEW_INTERVAL_S = 0.25
"""At most this often is a step preview made (each one copies the latents to the CPU)."""

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


@dataclass(frozen=True)
class SizeLimits:
    """What sizes a loaded model takes."""

    multiple: int = 8
    minimum: int = 64
    maximum: int = 2048


ANY_MODEL = SizeLimits(maximum=3072)
"""What some model takes (SDXL goes to 3072): the check before a model is loaded."""


def validate(request: GenerationRequest, limits: SizeLimits = SizeLimits()) -> GenerationRequest:
    """The request, checked; RequestError says what is wrong and what is allowed."""
    problems = []
    if not request.prompt.strip():
        problems.append("the prompt is empty: describe the image")
    for name in ("width", "height"):
        value = getattr(request, name)
        if not limits.minimum <= value <= limits.maximum or value % limits.multiple:
            problems.append(
                f"{name} {value} is not allowed: use a multiple of {limits.multiple} "
                f"from {limits.minimum} to {limits.maximum}"
            )
    if not 1 <= request.steps <= MAX_STEPS:
        problems.append(f"steps {request.steps} is not allowed: use 1 to {MAX_STEPS}")
    if not (0 <= request.guidance <= MAX_GUIDANCE) or math.isnan(request.guidance):
        problems.append(f"guidance {request.guidance:g} is not allowed: use 0 to {MAX_GUIDANCE:g}")
    if request.seed is not None and not 0 <= request.seed < 2**32:
        problems.append(
            f"seed {request.seed} is not allowed: use 0 to {2**32 - 1}, or leave it empty"
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
    if problems:
        raise RequestError("; ".join(problems))
    return request


@dataclass(frozen=True)
class EngineStatus:
    state: State = "not loaded"
    model: str = ""
    device: str = ""
    dtype: str = ""
    detail: str = ""
    progress: float = 0.0
    memory_bytes: int = 0
    download: DownloadProgress | None = None
    """While a hub model downloads: its bytes, rate and ETA, per file and in total."""

    def describe(self) -> str:
        if self.state == "ready":
            return f"ready on {self.device} in {self.dtype}"
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


def latents_to_rgb(latents: Any, matrix: tuple[tuple[float, ...], ...]) -> Image.Image:
    """A cheap preview of (C, H, W) latents through a linear map, as a PIL image."""
    import torch
    from PIL import Image

    weights = torch.tensor(matrix, dtype=torch.float32, device=latents.device)
    rgb = torch.einsum("chw,cr->hwr", latents.float(), weights)
    pixels = ((rgb.clamp(-1, 1) + 1) * 127.5).to(torch.uint8).cpu().numpy()
    return Image.fromarray(pixels, mode="RGB")


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
        self._lock = threading.RLock()
        self._status = EngineStatus(model=settings.model)
        self._matrix = LATENT_RGB_SD15
        self.limits = SizeLimits()
        self.model = settings.model
        self.notes: list[str] = []
        for stale in remove_stale_temporaries(outputs):
            log.warning("removed a temporary file left by an interrupted save: %s", stale.name)
        """What the engine did on its own (unloading Ollama's models, say), to tell."""
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
                step(0.6, f"preparing for {device}")
                self._prepare(pipe, device, dtype, step)
                self._pipe = pipe
                self._matrix = LATENT_RGB_SDXL if "XL" in type(pipe).__name__ else LATENT_RGB_SD15
                self._base_scheduler = pipe.scheduler
                self._scheduler_name = ""
                factor = int(getattr(pipe, "vae_scale_factor", 8) or 8)
                self.limits = SizeLimits(
                    multiple=max(8, factor),
                    minimum=64,
                    maximum=ANY_MODEL.maximum if "XL" in type(pipe).__name__ else 2048,
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
            except LoadCancelled:
                self.unload()
                raise
            except DiffusionError as exc:
                self._fail(str(exc))
                raise
            except Exception as exc:
                message = self._explain_load_error(model, exc)
                self._fail(message)
                raise DiffusionError(message) from exc
            if on_progress is not None:
                on_progress(self._status)
            return self._status

    def _fail(self, message: str) -> None:
        self._pipe = None
        self._release()
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
            if path.suffix not in (".safetensors", ".ckpt"):
                raise DiffusionError(
                    f"{path.name}: a single-file model must be .safetensors or .ckpt"
                )
            from diffusers import StableDiffusionPipeline

            config = self.settings.single_file_config
            kwargs = dict(common)
            if config:
                local = Path(config).expanduser()
                kwargs["config"] = str(local) if local.exists() else config
                kwargs["local_files_only"] = local.exists()
            return StableDiffusionPipeline.from_single_file(
                str(path), safety_checker=None, requires_safety_checker=False, **kwargs
            )
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
            self._ensure_room(pipe, dtype)
        if s.cpu_offload == "model" and device != "cpu":
            pipe.enable_model_cpu_offload(device=device)
        elif s.cpu_offload == "sequential" and device != "cpu":
            pipe.enable_sequential_cpu_offload(device=device)
        else:
            pipe.to(device)
        if self._fast(device):
            pipe.unet = torch.compile(pipe.unet)
        pipe.set_progress_bar_config(disable=True)

    def _ensure_room(self, pipe: Any, dtype: Any) -> None:
        """On CUDA, make room by asking Ollama to unload its models, when allowed."""
        import torch

        free, _total = torch.cuda.mem_get_info()
        size = sum(
            p.numel() * p.element_size()
            for name in ("unet", "vae", "text_encoder", "text_encoder_2")
            if getattr(pipe, name, None) is not None
            for p in getattr(pipe, name).parameters()
        )
        if dtype == torch.float16 and next(pipe.unet.parameters()).dtype == torch.float32:
            size //= 2
        need = size + 1_500_000_000  # activations at 512x512 with some margin
        if free >= need or not self.settings.unload_ollama_models or self.make_room is None:
            return
        unloaded = self.make_room()
        if unloaded:
            note = f"unloaded Ollama models to make room on the GPU: {', '.join(unloaded)}"
            self._set(detail=note)
            self.notes.append(note)
            log.info(note)

    def _warm_up(self, device: str) -> None:
        """One short run, so the first real image is not slowed by one-off work."""
        size = self.limits.minimum if device == "cpu" else 512
        steps = 1 if not self._fast(device) else 2
        self._run(
            GenerationRequest("warm-up", width=size, height=size, steps=steps, seed=0),
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
            self._release()
            self._set(
                state="not loaded", device="", dtype="", detail="", progress=0.0, memory_bytes=0
            )

    @staticmethod
    def _release() -> None:
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
        if "OutOfMemory" in name:
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
        """(tokens in the prompt, the most the text encoder reads)."""
        tokenizer = getattr(self._pipe, "tokenizer", None)
        if tokenizer is None:
            return 0, 0
        ids = tokenizer(prompt, truncation=False).input_ids
        return len(ids), int(tokenizer.model_max_length)

    def generate(
        self,
        request: GenerationRequest,
        on_step: Callable[[StepInfo], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> GenerationResult:
        """Make ``request.count`` images and save each as PNG. Cancelling stops within
        one step; images finished before it are kept and returned."""
        cancel = cancel or threading.Event()
        with self._lock:
            # refuse a bad request before any work, loading included
            request = validate(request, self.limits if self.loaded else ANY_MODEL)
            if self._pipe is None:
                self.load(cancel=cancel)
            request = validate(request, self.limits)
            result = GenerationResult(notes=list(self.notes))
            self.notes.clear()
            used, most = self.prompt_tokens(request.prompt)
            if most and used > most:
                result.notes.append(
                    f"the prompt is {used} tokens long; the text encoder reads the first {most}, "
                    "the rest is ignored"
                )
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
                image = self._run(request, seed=seed, cancel=cancel, on_step=on_step, index=index)
                if image is None:
                    result.cancelled = True
                    break
                parameters = ImageParameters(
                    prompt=request.prompt,
                    negative_prompt=request.negative_prompt,
                    width=request.width,
                    height=request.height,
                    steps=request.steps,
                    guidance=request.guidance,
                    seed=seed,
                    scheduler=request.scheduler,
                    model=model_name(self.model),
                )
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
                # no prompt text above DEBUG: the file name holds a slug of it
                log.info("image generated", extra={"seed": seed, "seconds": done.seconds})
                log.debug("image saved", extra={"path": str(path)})
            return result

    def _use_scheduler(self, name: str) -> None:
        """Switch the pipeline's sampler, built from the model's own scheduler config."""
        if name == self._scheduler_name:
            return
        import diffusers

        class_name, extra = SCHEDULERS[name]
        cls = getattr(diffusers, class_name)
        self._pipe.scheduler = cls.from_config(self._base_scheduler.config, **extra)
        self._scheduler_name = name

    def _run(
        self,
        request: GenerationRequest,
        *,
        seed: int,
        cancel: threading.Event,
        on_step: Callable[[StepInfo], None] | None,
        index: int,
        decode: bool = True,
    ) -> Image.Image | None:
        """One image, or None when cancelled."""
        import torch

        pipe = self._pipe
        started = time.perf_counter()
        last_preview = 0.0
        reported = 0
        matrix = self._matrix

        def step_end(p: Any, i: int, _t: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
            nonlocal last_preview, reported
            if cancel.is_set():
                p._interrupt = True
                return kwargs
            # second-order samplers (Heun) run more model calls than steps: count the
            # user's steps, so that step <= steps and the last one is steps
            calls = max(1, int(getattr(p, "num_timesteps", 0) or request.steps))
            done = (i + 1) * request.steps // calls
            if on_step is not None and done > reported:
                reported = done
                now = time.perf_counter()
                preview = None
                if now - last_preview >= PREVIEW_INTERVAL_S or done == request.steps:
                    last_preview = now
                    preview = latents_to_rgb(kwargs["latents"][0], matrix)
                on_step(StepInfo(index, request.count, done, request.steps, now - started, preview))
                if cancel.is_set():  # cancelled from the callback: no further step
                    p._interrupt = True
            return kwargs

        generator = torch.Generator("cpu").manual_seed(seed)
        try:
            out = pipe(
                prompt=request.prompt,
                negative_prompt=request.negative_prompt or None,
                width=request.width,
                height=request.height,
                num_inference_steps=request.steps,
                guidance_scale=request.guidance,
                generator=generator,
                output_type="latent",
                callback_on_step_end=step_end,
                callback_on_step_end_tensor_inputs=["latents"],
            )
            if cancel.is_set():
                return None
            if not decode:
                return None
            return self._decode(out.images)
        except torch.OutOfMemoryError as exc:
            self._release()
            raise DiffusionError(
                f"the GPU ran out of memory at {request.width}x{request.height}: "
                "try a smaller size, attention_slicing = true, vae_tiling = true, "
                'or cpu_offload = "model" in config.toml'
            ) from exc
        except DiffusionError:
            raise
        except Exception as exc:
            raise DiffusionError(f"the pipeline failed: {type(exc).__name__}: {exc}") from exc
        finally:
            pipe._interrupt = False

    def _decode(self, latents: Any) -> Image.Image:
        """Latents to a PIL image, as the pipeline would (but only when not cancelled)."""
        import torch

        pipe = self._pipe
        vae = pipe.vae
        upcast = vae.dtype == torch.float16 and getattr(vae.config, "force_upcast", False)
        if upcast:
            vae.to(torch.float32)
        try:
            scaled = latents.to(vae.dtype) / vae.config.scaling_factor
            shift = getattr(vae.config, "shift_factor", None)
            if shift:
                scaled = scaled + shift
            with torch.no_grad():
                image = vae.decode(scaled, return_dict=False)[0]
            images = pipe.image_processor.postprocess(image, output_type="pil")
        finally:
            if upcast:
                vae.to(torch.float16)
        first: Image.Image = images[0]
        return first
