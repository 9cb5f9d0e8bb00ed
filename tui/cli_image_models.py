"""``llm-pessoal image-models list|pull|rm``: the image models on disk, managed from a shell.

``list`` shows the hub models in the cache (size, last use) and the diffusers folders and
single files in ``[paths] models``, marking the default. ``pull ID`` downloads what a hub
model needs, with the size first and progress on stderr (bytes, rate, ETA, per file and in
total, at most five redraws a second on a terminal, a line every few seconds elsewhere);
Ctrl-C stops it (exit 130) and pulling again goes on from what came. ``rm ID`` frees the
space, after asking on a terminal (elsewhere it wants ``--yes``). ``--json`` for scripts.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from engines.config import Settings
from tui.cli_base import EXIT_FAIL, EXIT_INTERRUPTED, EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE, err
from tui.text import visible

if TYPE_CHECKING:
    from engines.diffusion import EngineStatus
    from engines.hub import DownloadPlan, DownloadProgress, HubModels, ImageModel

TTY_EVERY_S = 0.2
"""At most five redraws a second on a terminal."""
NON_TTY_EVERY_S = 2.0
BAR_WIDTH = 24


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "image-models",
        help="image models on disk (hub cache and [paths] models): list, pull or rm one",
    )
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(run=run_image_models)
    actions = parser.add_subparsers(dest="image_models_command", metavar="ACTION")
    listing = actions.add_parser("list", help="the models, their size, last use and the default")
    pull = actions.add_parser(
        "pull", help="download a hub model (only the files it needs), with progress on stderr"
    )
    pull.add_argument("id", help="the hub id, e.g. stable-diffusion-v1-5/stable-diffusion-v1-5")
    pull.add_argument(
        "--dtype",
        choices=("auto", "float16", "float32"),
        default="",
        help="which weights to fetch: float16 takes the fp16 variant where there is one "
        "(default: [diffusion] dtype)",
    )
    rm = actions.add_parser("rm", help="delete a model and free its space (asks first)")
    rm.add_argument("id", help="a hub id, or a path inside [paths] models")
    rm.add_argument("--yes", "-y", action="store_true", help="do not ask (needed off a terminal)")
    for action in (listing, pull, rm):
        action.add_argument("--json", action="store_true", default=argparse.SUPPRESS)


def hub_models(settings: Settings) -> HubModels:
    from engines.hub import HubModels, hub_cache

    return HubModels(hub_cache(settings.paths.cache))


def current_default(settings: Settings) -> str:
    from engines.hub import default_model
    from engines.state import IMAGE_MODEL, State, state_path

    remembered = State(state_path(settings.paths.database)).get(IMAGE_MODEL)
    return default_model(settings.diffusion.model, remembered)


def run_image_models(settings: Settings, args: argparse.Namespace) -> int:
    command = args.image_models_command or "list"
    if command == "list":
        return cmd_list(settings, args.json)
    if command == "pull":
        return cmd_pull(settings, args.id, args.dtype or settings.diffusion.dtype, args.json)
    if command == "rm":
        return cmd_rm(settings, args.id, args.yes, args.json)
    raise AssertionError(command)  # pragma: no cover


# -- list -------------------------------------------------------------------------------------


def when(seconds: float | None) -> str:
    if not seconds:
        return "-"
    return datetime.fromtimestamp(seconds).strftime("%Y-%m-%d %H:%M")


def cmd_list(settings: Settings, as_json: bool) -> int:
    from engines.units import human_bytes

    hub = hub_models(settings)
    default = current_default(settings)
    found = hub.models([settings.paths.models], default, not_models(settings))
    if as_json:
        print(
            json.dumps(
                {
                    "default": default,
                    "cache": str(hub.cache),
                    "folders": [str(settings.paths.models)],
                    "models": [m.to_dict() for m in found],
                },
                indent=2,
                ensure_ascii=False,
            )
        )
        return EXIT_OK
    show = visible if sys.stdout.isatty() else (lambda text: text)
    if not found:
        print(
            f"No image models on disk yet (hub cache {hub.cache}, folder {settings.paths.models}).\n"
            f"The default, {show(default)}, is downloaded on the first image, or now with:\n"
            f"  llm-pessoal image-models pull {show(default)}"
        )
        return EXIT_OK
    header = ("", "NAME", "KIND", "SIZE", "LAST USED")
    rows = [header]
    for m in found:
        size = human_bytes(m.size)
        if not m.complete:
            size += " (incomplete)" if not m.partial else f" (+{human_bytes(m.partial)} partial)"
        rows.append(("*" if m.default else "", show(m.name), m.kind, size, when(m.last_used)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    if not any(m.default for m in found):
        print(f"\n* the default, {show(default)}, is not on disk: it downloads on first use")
    else:
        print("\n* the default")
    return EXIT_OK


# -- pull -------------------------------------------------------------------------------------


def bar(fraction: float, width: int = BAR_WIDTH) -> str:
    filled = int(width * min(max(fraction, 0.0), 1.0))
    return "[" + "#" * filled + "-" * (width - filled) + "]"


class DownloadDisplay:
    """A download on a stream: on a terminal, the total and the files in flight, redrawn
    in place at most five times a second; elsewhere a line every few seconds. Repo ids and
    file names go through the display function."""

    def __init__(self, out: TextIO, tty: bool | None = None) -> None:
        self.out = out
        self.tty = out.isatty() if tty is None else tty
        self.drawn = 0  # lines of the last frame (tty)
        self.last_at = 0.0
        self.said = ""

    def plan(self, plan: DownloadPlan) -> None:
        self.out.write(visible(f"pulling {plan.repo}: {plan.summary()}") + "\n")
        self.out.flush()

    def show(self, p: DownloadProgress) -> None:
        now = time.monotonic()
        every = TTY_EVERY_S if self.tty else NON_TTY_EVERY_S
        if not p.done and now - self.last_at < every:
            return
        self.last_at = now
        total = f"{bar(p.fraction)} {100 * p.fraction:3.0f}%  {p.files_done}/{p.files} files  "
        lines = [total + p.figures()]
        if self.tty:
            lines += ["  " + visible(line) for line in p.file_lines()]
            self.clear()
            self.out.write("\n".join(lines) + "\n")
            self.drawn = len(lines)
        else:
            self.out.write(lines[0] + "\n")
        self.out.flush()

    def status(self, status: EngineStatus) -> None:
        """For the diffusion engine's ``on_progress``: draws its download, if any (and the
        plan's size before it starts)."""
        if status.download is not None:
            self.show(status.download)
        elif status.detail.startswith("downloading") and status.detail != self.said:
            self.said = status.detail
            self.out.write(visible(status.detail) + "\n")
            self.out.flush()

    def clear(self) -> None:
        if self.tty and self.drawn:
            self.out.write(f"\x1b[{self.drawn}F\x1b[J")
            self.drawn = 0


def cmd_pull(settings: Settings, repo: str, dtype: str, as_json: bool) -> int:
    from engines.hub import DownloadCancelled, HubError, HubOffline, is_hub_id, wants_fp16

    if not is_hub_id(repo):
        err(
            f"{repo!r} is not a hub id: give owner/name, e.g. stable-diffusion-v1-5/stable-diffusion-v1-5"
        )
        return EXIT_USAGE
    hub = hub_models(settings)
    display = DownloadDisplay(sys.stderr)
    cancel = threading.Event()
    finished = threading.Event()
    outcome: dict[str, Any] = {}

    def planned(plan: DownloadPlan) -> None:
        outcome["plan"] = plan
        display.plan(plan)

    def work() -> None:
        try:
            outcome["model"] = hub.pull(
                repo,
                fp16=wants_fp16(dtype),
                on_plan=planned,
                on_progress=display.show,
                cancel=cancel,
            )
        except HubError as exc:
            outcome["error"] = exc
        finally:
            finished.set()

    thread = threading.Thread(target=work, name="image-models-pull", daemon=True)
    thread.start()
    interrupted = False
    try:  # an Event, not join(): see tui/cli_image.py
        while not finished.wait(0.2):
            pass
    except KeyboardInterrupt:
        interrupted = True
        cancel.set()
        finished.wait()
    error = outcome.get("error")
    if interrupted or isinstance(error, DownloadCancelled):
        err(f"pull of {repo} stopped; what came stays in the cache and pulling it again goes on")
        return EXIT_INTERRUPTED
    if error is not None:
        err(str(error))
        return EXIT_UNAVAILABLE if isinstance(error, HubOffline) else EXIT_FAIL
    model = outcome["model"]
    if as_json:
        plan = outcome.get("plan")
        print(
            json.dumps(
                {
                    "repo": repo,
                    "path": str(model.path),
                    "variant": model.variant,
                    "commit": model.commit,
                    "plan": plan.to_dict() if plan is not None else None,
                },
                indent=2,
            )
        )
    else:
        print(visible(f"{repo} is ready: {model.path}") if sys.stdout.isatty() else model.path)
    return EXIT_OK


# -- rm ---------------------------------------------------------------------------------------


def find(found: list[ImageModel], name: str) -> ImageModel | None:
    from pathlib import Path

    for m in found:
        if m.name == name or (m.kind != "hub" and m.path == Path(name).expanduser().resolve()):
            return m
    return None


def cmd_rm(settings: Settings, name: str, yes: bool, as_json: bool) -> int:
    from engines.hub import HubError
    from engines.units import human_bytes

    hub = hub_models(settings)
    folders = [settings.paths.models]
    model = find(hub.models(folders, current_default(settings), not_models(settings)), name)
    if model is None:
        err(
            f"{name} is not on disk, so there is nothing to delete (`llm-pessoal image-models` lists them)"
        )
        return EXIT_UNAVAILABLE
    if not yes:
        if not sys.stdin.isatty():
            err(
                f"not deleting {name}: add --yes to delete without being asked (no terminal to ask on)"
            )
            return EXIT_USAGE
        sys.stderr.write(
            visible(f"Delete {model.name} ({human_bytes(model.size)}) from {model.path}? [y/N] ")
        )
        sys.stderr.flush()
        if sys.stdin.readline().strip().lower() not in ("y", "yes"):
            err("nothing deleted")
            return EXIT_FAIL
    try:
        freed = hub.remove(model.name, folders)
    except HubError as exc:
        err(str(exc))
        return EXIT_FAIL
    except OSError as exc:
        err(f"{model.path} is not deleted: {exc.strerror or exc}")
        return EXIT_FAIL
    if as_json:
        print(json.dumps({"deleted": model.name, "freed_bytes": freed}))
    else:
        print(visible(f"deleted {model.name}, {human_bytes(freed)} freed"))
    return EXIT_OK


def not_models(settings: Settings) -> list[Path]:
    """The folders under ``[paths] models`` that hold LoRAs and embeddings, not models."""
    return [settings.paths.loras, settings.paths.embeddings]
