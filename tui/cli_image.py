"""``llm-pessoal image``: generate images headless, a progress bar on stderr and the
saved path of each PNG on stdout."""

from __future__ import annotations

import argparse
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from engines.config import Settings
from tui.cli_base import EXIT_FAIL, EXIT_INTERRUPTED, EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE, err

if TYPE_CHECKING:
    from engines.diffusion import GenerationResult, StepInfo


def add_parser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], settings_help: str
) -> None:
    image = sub.add_parser("image", help="generate images with Stable Diffusion")
    image.add_argument("prompt", help="what to draw; '-' reads it from standard input")
    image.add_argument("--negative-prompt", "-n", help="what to avoid")
    image.add_argument("--width", "-W", type=int, help="pixels, a multiple of 8")
    image.add_argument("--height", "-H", type=int, help="pixels, a multiple of 8")
    image.add_argument("--steps", type=int, help="denoising steps (1-150)")
    image.add_argument("--guidance", "--cfg", type=float, help="guidance scale (0-30)")
    image.add_argument("--seed", type=int, help="seed (default: random, always recorded)")
    image.add_argument(
        "--scheduler",
        "--sampler",
        help="Euler, Euler a, DPM++ 2M, DPM++ 2M Karras, DDIM, UniPC, LMS or Heun",
    )
    image.add_argument("--count", type=int, default=1, help="how many images (1-16)")
    image.add_argument(
        "--model", help=f"hub id, diffusers folder or checkpoint file ({settings_help})"
    )
    image.add_argument("--out", type=Path, help="folder for the PNGs (default: [paths] outputs)")


class ProgressLine:
    """One line on stderr, rewritten in place on a terminal, sparse otherwise."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.last = 0.0

    def __call__(self, info: StepInfo) -> None:
        now = time.monotonic()
        final = info.step == info.steps
        if not self.tty and not final and now - self.last < 2:
            return
        if self.tty and not final and now - self.last < 0.1:
            return
        self.last = now
        width = 24
        filled = int(width * info.step / info.steps)
        bar = "#" * filled + "-" * (width - filled)
        which = f"image {info.image_index + 1}/{info.count} " if info.count > 1 else ""
        text = (
            f"{which}[{bar}] step {info.step}/{info.steps} "
            f"{info.steps_per_s:.2f} steps/s ETA {info.eta_s:.0f} s"
        )
        if self.tty:
            sys.stderr.write("\r\x1b[2K" + text + ("\n" if final else ""))
        else:
            sys.stderr.write(text + "\n")
        sys.stderr.flush()


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
    prompt = sys.stdin.read().rstrip("\r\n") if args.prompt == "-" else args.prompt
    request = GenerationRequest(
        prompt=prompt,
        negative_prompt=args.negative_prompt
        if args.negative_prompt is not None
        else d.negative_prompt,
        # `is not None`, not `or`: --width 0 is refused, not replaced by the default
        width=args.width if args.width is not None else d.width,
        height=args.height if args.height is not None else d.height,
        steps=args.steps if args.steps is not None else d.steps,
        guidance=args.guidance if args.guidance is not None else d.guidance,
        seed=args.seed,
        scheduler=args.scheduler or d.scheduler,
        count=args.count,
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

    engine = DiffusionEngine(settings.diffusion, outputs, settings.paths.cache, on_image=index)
    cancel = threading.Event()
    finished = threading.Event()
    outcome: dict[str, object] = {}

    def work() -> None:
        try:
            try:
                print(f"loading {settings.diffusion.model}…", file=sys.stderr, flush=True)
                engine.load(cancel=cancel, on_progress=DownloadDisplay(sys.stderr).status)
            except DiffusionError as exc:
                outcome["load_error"] = exc
                return
            print(f"{engine.status.describe()}", file=sys.stderr, flush=True)
            outcome["result"] = engine.generate(request, on_step=ProgressLine(), cancel=cancel)
        except DiffusionError as exc:
            outcome["error"] = exc
        except Exception as exc:  # a bug: its traceback goes to stderr, the exit code is 1
            outcome["error"] = exc
            raise
        finally:
            finished.set()

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
            print(image.path, flush=True)
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
