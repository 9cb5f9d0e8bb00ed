"""``llm-pessoal models pull|rm|show``: Ollama's models, managed from a shell or a script.

``models pull NAME`` draws a progress bar per layer on stderr (bytes, rate, ETA), rewritten
in place on a terminal and a line now and then otherwise; Ctrl-C stops the download (exit
130) and pulling again resumes it. ``models rm NAME`` asks first on a terminal; elsewhere it
wants ``--yes``. ``models show NAME [--json]`` prints a model's details.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import asdict
from typing import TYPE_CHECKING, Any, TextIO

from tui.cli_base import EXIT_FAIL, EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE, err

if TYPE_CHECKING:
    from engines.chat_types import ChatError, ModelInfo
    from engines.ollama_client import ChatEngine
    from engines.progress import PullProgress

BAR_WIDTH = 24
NON_TTY_EVERY_S = 2.0
TTY_EVERY_S = 0.1


def add_model_commands(models: argparse.ArgumentParser) -> None:
    """``pull``, ``rm`` and ``show`` under ``models`` (which, alone, still lists them)."""
    sub = models.add_subparsers(dest="models_command", metavar="ACTION")
    pull = sub.add_parser(
        "pull", help="download a model from its registry, with a progress bar on stderr"
    )
    pull.add_argument("name", help="the model, e.g. llama3.2:1b")
    rm = sub.add_parser("rm", help="delete a model (asks first on a terminal)")
    rm.add_argument("name", help="the model, as `llm-pessoal models` lists it")
    rm.add_argument("--yes", "-y", action="store_true", help="do not ask (needed off a terminal)")
    show = sub.add_parser(
        "show", help="a model's details: parameters, template, license, context length"
    )
    show.add_argument("name", help="the model")
    show.add_argument("--json", dest="show_json", action="store_true", help="print JSON")


def _failure_code(exc: ChatError) -> int:
    from engines.chat_types import ModelNotFound, OllamaUnavailable

    return EXIT_UNAVAILABLE if isinstance(exc, OllamaUnavailable | ModelNotFound) else EXIT_FAIL


async def run_model_command(engine: ChatEngine, args: argparse.Namespace) -> int:
    if args.models_command == "pull":
        return await cmd_pull(engine, args.name)
    if args.models_command == "rm":
        return await cmd_rm(engine, args.name, args.yes)
    if args.models_command == "show":
        return await cmd_show(engine, args.name, args.show_json or args.json)
    raise AssertionError(args.models_command)  # pragma: no cover


# -- pull ---------------------------------------------------------------------------------


def bar(fraction: float | None, width: int = BAR_WIDTH) -> str:
    filled = int(width * (fraction or 0.0))
    return "[" + "#" * filled + "-" * (width - filled) + "]"


def layer_line(p: PullProgress) -> str:
    """``pulling 4b056eccc7ed [######------]  50%  1.0 GB / 2.0 GB · 50.0 MB/s · ETA 0:20``"""
    percent = f"{100 * (p.fraction or 0.0):3.0f}%"
    return f"{p.status} {bar(p.fraction)} {percent}  {p.figures()}"


class PullDisplay:
    """Progress on a stream: one line per layer, rewritten in place on a terminal (at most
    ten times a second), or written again every few seconds elsewhere; each layer's last
    line (100 %) and every status between layers are always written."""

    def __init__(self, out: TextIO, tty: bool | None = None) -> None:
        self.out = out
        self.tty = out.isatty() if tty is None else tty
        self.open = False  # a layer's line is on screen without its newline (tty only)
        self.digest = ""  # the layer being shown
        self.finished: set[str] = set()
        self.last_status = ""
        self.last_at = 0.0

    def show(self, p: PullProgress) -> None:
        if not p.digest:
            if p.status and p.status != self.last_status:
                self.end_line()
                self.out.write(p.status + "\n")
                self.out.flush()
            self.last_status = p.status
            return
        self.last_status = ""
        if p.digest in self.finished:
            return
        now = time.monotonic()
        finished = p.total > 0 and p.completed >= p.total
        if p.digest != self.digest:
            self.end_line()
            self.digest = p.digest
        elif not finished and now - self.last_at < self.every:
            return
        self.last_at = now
        text = layer_line(p)
        if self.tty:
            self.out.write("\r\x1b[2K" + text)
            self.open = True
        else:
            self.out.write(text + "\n")
        if finished:
            self.finished.add(p.digest)
            self.end_line()
        self.out.flush()

    @property
    def every(self) -> float:
        return TTY_EVERY_S if self.tty else NON_TTY_EVERY_S

    def end_line(self) -> None:
        if self.open:
            self.out.write("\n")
            self.open = False
        self.out.flush()


async def cmd_pull(engine: ChatEngine, name: str) -> int:
    from engines.chat_types import ChatError

    display = PullDisplay(sys.stderr)
    try:
        async for progress in engine.pull(name):
            display.show(progress)
    except ChatError as exc:
        display.end_line()
        err(str(exc))
        return _failure_code(exc)
    except asyncio.CancelledError:  # Ctrl-C: the stream is closed by now
        display.end_line()
        err(f"pull of {name} stopped; pulling it again resumes it")
        raise
    display.end_line()
    return EXIT_OK


# -- rm -----------------------------------------------------------------------------------


def find_model(models: list[ModelInfo], name: str) -> ModelInfo | None:
    """The model called ``name``, or ``name:latest`` when it has no tag."""
    wanted = {name, f"{name}:latest"} if ":" not in name else {name}
    return next((m for m in models if m.name in wanted), None)


async def ask(question: str) -> str:
    """Ask on stderr, read a line from stdin without blocking the loop (so Ctrl-C works)."""
    sys.stderr.write(question)
    sys.stderr.flush()
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()
    fd = sys.stdin.fileno()

    def readable() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(fd, readable)
    try:
        await ready
    finally:
        loop.remove_reader(fd)
    return sys.stdin.readline()


async def cmd_rm(engine: ChatEngine, name: str, yes: bool) -> int:
    from engines.chat_types import ChatError
    from engines.units import human_bytes

    if not yes and not sys.stdin.isatty():
        err(f"not deleting {name}: add --yes to delete without being asked (no terminal to ask on)")
        return EXIT_USAGE
    try:
        model = find_model(await engine.list_models(), name)
    except ChatError as exc:
        err(str(exc))
        return _failure_code(exc)
    if model is None:
        err(
            f"model {name!r} is not installed, so there is nothing to delete "
            "(`llm-pessoal models` lists them)"
        )
        return EXIT_UNAVAILABLE
    if not yes:
        answer = await ask(f"Delete {model.name} ({human_bytes(model.size)})? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            err("nothing deleted")
            return EXIT_FAIL
    try:
        await engine.delete(model.name)
    except ChatError as exc:
        err(str(exc))
        return _failure_code(exc)
    print(f"deleted {model.name}")
    return EXIT_OK


# -- show ---------------------------------------------------------------------------------


async def cmd_show(engine: ChatEngine, name: str, as_json: bool) -> int:
    from engines.chat_types import ChatError
    from tui.text import visible

    try:
        details = await engine.show(name)
    except ChatError as exc:
        err(str(exc))
        return _failure_code(exc)
    if as_json:
        data: dict[str, Any] = asdict(details)
        data["capabilities"] = list(details.capabilities)
        print(json.dumps(data, indent=2, ensure_ascii=False))
        return EXIT_OK
    show = visible if sys.stdout.isatty() else (lambda text: text)
    rows = [
        ("name", details.name),
        ("family", details.family),
        ("parameters", details.parameter_size),
        ("quantization", details.quantization),
        ("context length", str(details.context_length or "-")),
        ("capabilities", ", ".join(details.capabilities) or "-"),
    ]
    width = max(len(label) for label, _ in rows)
    print("Model")
    for label, value in rows:
        print(f"  {label.ljust(width)}  {show(value or '-')}")
    for title, text in (
        ("Parameters", details.parameters),
        ("Template", details.template),
        ("License", details.license),
    ):
        if text.strip():
            print(f"\n{title}")
            for line in text.rstrip("\n").splitlines():
                print(f"  {show(line)}".rstrip())
    return EXIT_OK
