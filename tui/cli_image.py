"""``llm-pessoal image``: generate images headless, a progress bar on stderr and the
saved path of each PNG on stdout."""

from __future__ import annotations

import argparse
import sys
import threading
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from engines.config import Settings
from engines.limits import IMAGE_COUNT, IMAGE_GUIDANCE, IMAGE_STEPS, image_side_help
from tui.cli_base import (
    EXIT_FAIL,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    err,
    nonempty,
    nonempty_path,
    read_stdin_text,
    say,
)
from tui.cli_completion import DIRECTORY, FILE
from tui.cli_progress import Bars

if TYPE_CHECKING:
    from rich.progress import TaskID

    from engines.diffusion import GenerationResult, StepInfo


def add_parser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], settings_help: str
) -> None:
    image = sub.add_parser("image", help="generate images with Stable Diffusion")
    image.add_argument("prompt", help="what to draw; '-' reads it from standard input")
    image.add_argument("--negative-prompt", "-n", help="what to avoid")
    image.add_argument("--width", "-W", type=int, help=f"pixels: {image_side_help()}")
    image.add_argument("--height", "-H", type=int, help=f"pixels: {image_side_help()}")
    image.add_argument("--steps", type=int, help=f"denoising steps ({IMAGE_STEPS.span()})")
    image.add_argument(
        "--guidance", "--cfg", type=float, help=f"guidance scale ({IMAGE_GUIDANCE.span()})"
    )
    image.add_argument("--seed", type=int, help="seed (default: random, always recorded)")
    image.add_argument(
        "--scheduler",
        "--sampler",
        help="Euler, Euler a, DPM++ 2M, DPM++ 2M Karras, DDIM, UniPC, LMS or Heun",
    )
    image.add_argument(
        "--count", type=int, default=1, help=f"how many images ({IMAGE_COUNT.span()})"
    )
    image.add_argument(
        "--model",
        type=nonempty,
        help=f"hub id, diffusers folder or checkpoint file ({settings_help})",
    ).complete = FILE  # type: ignore[attr-defined]
    image.add_argument(
        "--out", type=nonempty_path, help="folder for the PNGs (default: [paths] outputs)"
    ).complete = DIRECTORY  # type: ignore[attr-defined]
    image.add_argument(
        "--show",
        action="store_true",
        help="draw each image in the terminal (half blocks) when stdout is one",
    )
    from engines.diffusion import (
        HIRES_UPSCALERS,
        MAX_HIRES_SCALE,
        MAX_LORA_WEIGHT,
        MAX_STRENGTH,
        MIN_HIRES_SCALE,
        MIN_STRENGTH,
    )

    strengths = f"{MIN_STRENGTH:g}-{MAX_STRENGTH:g}"
    image.add_argument(
        "--init-image",
        type=Path,
        metavar="FILE",
        help="start from this image (img2img); its size unless --width/--height",
    )
    image.add_argument(
        "--strength",
        type=float,
        default=0.75,
        help=f"img2img: how much of the init image is redrawn ({strengths}, default 0.75)",
    )
    image.add_argument(
        "--hires",
        type=float,
        metavar="FACTOR",
        default=1.0,
        help=f"hires fix: make the image, upscale it by FACTOR ({MIN_HIRES_SCALE:g}-"
        f"{MAX_HIRES_SCALE:g}) and redraw it at that size",
    )
    image.add_argument(
        "--hires-strength",
        type=float,
        default=0.5,
        help=f"hires fix: denoising strength of the second pass ({strengths}, default 0.5)",
    )
    image.add_argument(
        "--hires-steps", type=int, default=0, help="hires fix: its steps (default: as --steps)"
    )
    image.add_argument(
        "--hires-upscaler",
        choices=HIRES_UPSCALERS,
        default=HIRES_UPSCALERS[0],
        help="hires fix: upscale the latents or the image (default: %(default)s)",
    )
    image.add_argument(
        "--lora",
        action="append",
        default=[],
        metavar="NAME[:WEIGHT]",
        help=f"a LoRA from [paths] loras (weight -{MAX_LORA_WEIGHT:g} to {MAX_LORA_WEIGHT:g}, "
        "default 1); repeatable; the same as <lora:NAME:WEIGHT> in the prompt",
    )


class ProgressLine:
    """A bar per image on stderr (``rich.progress``): redrawn in place on a terminal, a few
    times a second; a line now and then elsewhere, and always each image's last."""

    def __init__(self) -> None:
        from rich.progress import BarColumn, TextColumn

        self.bars = Bars(
            [
                TextColumn("{task.description}"),
                BarColumn(bar_width=24),
                TextColumn("step {task.completed:.0f}/{task.total:.0f}"),
                TextColumn("{task.fields[speed]}"),
            ]
        )
        self.tasks: dict[int, TaskID] = {}

    def __call__(self, info: StepInfo) -> None:
        task = self.tasks.get(info.image_index)
        if task is None:
            self.bars.start()
            which = f"image {info.image_index + 1}/{info.count}" if info.count > 1 else "image"
            task = self.tasks[info.image_index] = self.bars.add(which, info.steps, speed="")
        speed = f"{info.steps_per_s:.2f} steps/s ETA {info.eta_s:.0f} s"
        self.bars.update(task, info.step, speed=speed)
        if info.step == info.steps:
            self.bars.finish(task)

    def stop(self) -> None:
        self.bars.stop()


def lora_tag(value: str) -> str:
    """``--lora NAME[:WEIGHT]`` as the prompt's ``<lora:NAME:WEIGHT>``; ValueError names a
    weight that is not a number."""
    name, colon, weight = value.rpartition(":")
    if not colon:
        name, weight = value, "1"
    try:
        number = float(weight)
    except ValueError:
        raise ValueError(
            f"--lora {value!r}: the weight {weight!r} is not a number (NAME or NAME:WEIGHT)"
        ) from None
    if not name.strip() or any(c in name for c in "<>"):
        raise ValueError(f"--lora {value!r}: give a LoRA's file name without its suffix")
    return f"<lora:{name}:{number:g}>"


def init_size(path: Path) -> tuple[int, int]:
    """An init image's size, down to multiples of 8 (the size the image is made at)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path.expanduser()) as im:
            width, height = im.size
    except FileNotFoundError:
        raise ValueError(f"--init-image {path}: no such file") from None
    except (OSError, UnidentifiedImageError) as exc:
        raise ValueError(f"--init-image {path}: not an image PIL can read ({exc})") from None
    return width // 8 * 8, height // 8 * 8


def run_image(settings: Settings, args: argparse.Namespace) -> int:
    from engines.diffusion import (
        ANY_MODEL,
        DiffusionEngine,
        DiffusionError,
        GenerationRequest,
        RequestError,
        validate,
    )
    from engines.store import Store, StoreError

    d = settings.diffusion
    # a piped prompt's final newline is not part of it
    prompt = read_stdin_text("prompt").rstrip("\r\n") if args.prompt == "-" else args.prompt
    try:
        prompt += "".join(f" {lora_tag(value)}" for value in args.lora)
        size = init_size(args.init_image) if args.init_image else None
    except ValueError as exc:
        err(str(exc))
        return EXIT_USAGE
    width = args.width if args.width is not None else size[0] if size else d.width
    height = args.height if args.height is not None else size[1] if size else d.height
    request = GenerationRequest(
        prompt=prompt,
        negative_prompt=args.negative_prompt
        if args.negative_prompt is not None
        else d.negative_prompt,
        # `is not None`, not `or`: --width 0 is refused, not replaced by the default
        width=width,
        height=height,
        steps=args.steps if args.steps is not None else d.steps,
        guidance=args.guidance if args.guidance is not None else d.guidance,
        seed=args.seed,
        scheduler=args.scheduler or d.scheduler,
        count=args.count,
        init_image=str(args.init_image.expanduser()) if args.init_image else "",
        strength=args.strength,
        hires_scale=args.hires,
        hires_strength=args.hires_strength,
        hires_steps=args.hires_steps,
        hires_upscaler=args.hires_upscaler,
    )
    try:
        validate(request, ANY_MODEL)  # the model's own limits are checked once it is loaded
    except RequestError as exc:
        err(str(exc))
        return EXIT_USAGE
    from tui.cli_image_models import DownloadDisplay, current_default

    model = args.model or current_default(settings)  # the Models dialog's default, if set
    settings = replace(settings, diffusion=replace(d, model=model))
    outputs = args.out.expanduser().resolve() if args.out else settings.paths.outputs
    try:
        store: Store | None = Store.open(settings.paths.database, recover=False)
    except StoreError as exc:
        err(f"{exc}; the images will not be in the gallery")
        store = None

    def index(image: object) -> None:
        if store is not None:
            try:
                store.add_image(image.path, image.parameters, image.seconds)  # type: ignore[attr-defined]
            except StoreError as exc:
                err(f"{exc}; {image.path.name} is not in the gallery")  # type: ignore[attr-defined]

    engine = DiffusionEngine(
        settings.diffusion,
        outputs,
        settings.paths.cache,
        on_image=index,
        loras=settings.paths.loras,
        embeddings=settings.paths.embeddings,
    )
    cancel = threading.Event()
    finished = threading.Event()
    outcome: dict[str, object] = {}

    def work() -> None:
        try:
            try:
                say(f"loading {settings.diffusion.model}…", file=sys.stderr)
                engine.load(cancel=cancel, on_progress=DownloadDisplay(sys.stderr).status)
            except DiffusionError as exc:
                outcome["load_error"] = exc
                return
            say(engine.status.describe(), file=sys.stderr)
            try:
                outcome["result"] = engine.generate(request, on_step=progress, cancel=cancel)
            finally:
                progress.stop()
        except DiffusionError as exc:
            outcome["error"] = exc
        except Exception as exc:  # a bug: its traceback goes to stderr, the exit code is 1
            outcome["error"] = exc
            raise
        finally:
            finished.set()

    progress = ProgressLine()
    thread = threading.Thread(target=work, name="image", daemon=True)
    thread.start()
    interrupted = False
    # wait on an Event, not thread.join(): on Python 3.11 a join interrupted by Ctrl-C
    # marks the thread stopped while it still runs, and the process then aborts on exit
    try:
        while not finished.wait(0.2):
            pass
    except KeyboardInterrupt:
        interrupted = True
        cancel.set()
        print("\nstopping after this step…", file=sys.stderr, flush=True)
        finished.wait()
    finally:
        if store is not None:
            store.close()
    result: GenerationResult | None = outcome.get("result")  # type: ignore[assignment]
    if result is not None:
        for image in result.images:
            if args.show and sys.stdout.isatty():
                from tui.cli_show import draw_path

                draw_path(image.path)
            say(str(image.path), exact_when_piped=True)
            sys.stdout.flush()
        for note in result.notes:
            err(note)
    if "load_error" in outcome:
        err(str(outcome["load_error"]))
        return EXIT_INTERRUPTED if interrupted else EXIT_UNAVAILABLE
    if "error" in outcome:
        failure = outcome["error"]
        err(str(failure))
        return EXIT_USAGE if isinstance(failure, RequestError) else EXIT_FAIL
    if interrupted or (result is not None and result.cancelled):
        return EXIT_INTERRUPTED
    return EXIT_OK
