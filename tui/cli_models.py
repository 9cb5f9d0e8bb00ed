"""``llm-pessoal models pull|rm|show``: Ollama's models, managed from a shell or a script.

``models pull NAME`` draws a progress bar per layer on stderr (bytes, rate, ETA) with
``rich.progress``, redrawn in place on a terminal and a line now and then otherwise; Ctrl-C
stops the download (exit 130) and pulling again resumes it. ``models rm NAME`` asks first on a terminal; elsewhere it
wants ``--yes``. ``models show NAME [--json]`` prints a model's details.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from dataclasses import asdict
from typing import TYPE_CHECKING, Any, TextIO

from tui.cli_base import EXIT_FAIL, EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE, dumps, err, say
from tui.cli_hosts import add_host_option
from tui.cli_progress import Bars

if TYPE_CHECKING:
    from rich.progress import TaskID

    from engines.chat_types import ChatError, ModelInfo
    from engines.ollama_client import ChatEngine
    from engines.progress import PullProgress

BAR_WIDTH = 24


def add_model_commands(models: argparse.ArgumentParser) -> None:
    """``pull``, ``rm`` and ``show`` under ``models`` (which, alone, still lists them)."""
    sub = models.add_subparsers(dest="models_command", metavar="ACTION")
    pull = sub.add_parser(
        "pull", help="download a model from its registry, with a progress bar on stderr"
    )
    pull.add_argument("name", help="the model, e.g. llama3.2:1b")
    add_host_option(pull, "the Ollama server to pull onto (needed with several in [ollama] hosts)")
    rm = sub.add_parser("rm", help="delete a model (asks first on a terminal)")
    rm.add_argument("name", help="the model, as `llm-pessoal models` lists it")
    rm.add_argument("--yes", "-y", action="store_true", help="do not ask (needed off a terminal)")
    add_host_option(rm, "the Ollama server to delete it from (default: the one that has it)")
    show = sub.add_parser(
        "show", help="a model's details: parameters, template, license, context length"
    )
    show.add_argument("name", help="the model")
    show.add_argument("--json", dest="show_json", action="store_true", help="print JSON")
    add_host_option(show)


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


class PullDisplay:
    """A pull's progress through ``rich.progress``: a bar per layer (redrawn in place on a
    terminal, a few times a second; a line now and then elsewhere, and always its last), and
    every status between layers ("pulling manifest", "success") as a line of its own."""

    def __init__(self, out: TextIO, tty: bool | None = None) -> None:
        from rich.progress import BarColumn, TaskProgressColumn, TextColumn

        self.bars = Bars(
            [
                TextColumn("{task.description}"),
                BarColumn(bar_width=BAR_WIDTH),
                TaskProgressColumn(),
                TextColumn("{task.fields[figures]}"),
            ],
            out,
            tty,
        )
        self.tasks: dict[str, TaskID] = {}
        self.finished: set[str] = set()
        self.last_status = ""

    def show(self, p: PullProgress) -> None:
        if not p.digest:
            if p.status and p.status != self.last_status:
                self.bars.note(p.status)
            self.last_status = p.status
            return
        self.last_status = ""
        if p.digest in self.finished:
            return
        task = self.tasks.get(p.digest)
        if task is None:
            self.bars.start()
            task = self.tasks[p.digest] = self.bars.add(
                f"pulling {p.layer}", total=p.total or None, figures=""
            )
        self.bars.update(task, p.completed, total=p.total or None, figures=p.figures())
        if p.total > 0 and p.completed >= p.total:
            self.finished.add(p.digest)
            self.bars.finish(task)

    def end_line(self) -> None:
        self.bars.stop()


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
    say(question, file=sys.stderr, end="")
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
    say(f"deleted {model.name}")
    return EXIT_OK


# -- show ---------------------------------------------------------------------------------


async def cmd_show(engine: ChatEngine, name: str, as_json: bool) -> int:
    from engines.chat_types import ChatError

    try:
        details = await engine.show(name)
    except ChatError as exc:
        err(str(exc))
        return _failure_code(exc)
    if as_json:
        data: dict[str, Any] = asdict(details)
        data["capabilities"] = list(details.capabilities)
        say(dumps(data))
        return EXIT_OK
    rows = [
        ("name", details.name),
        ("family", details.family),
        ("parameters", details.parameter_size),
        ("quantization", details.quantization),
        ("context length", str(details.context_length or "-")),
        ("capabilities", ", ".join(details.capabilities) or "-"),
    ]
    width = max(len(label) for label, _ in rows)
    say("Model")
    for label, value in rows:
        say(f"  {label.ljust(width)}  {value or '-'}")
    for title, text in (
        ("Parameters", details.parameters),
        ("Template", details.template),
        ("License", details.license),
    ):
        if text.strip():
            say(f"\n{title}")
            for line in text.rstrip("\n").splitlines():
                say(f"  {line}".rstrip())
    return EXIT_OK
