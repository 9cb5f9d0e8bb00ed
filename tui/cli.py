"""The ``llm-pessoal`` command: the TUI, or a headless job for scripts.

The exit codes are one table for every command (``tui.cli_base.Exit``, shown by ``--help``).
Everything it writes to the terminal goes through ``tui.cli_base`` (``say``, ``err``,
``dumps``), so outside text is shown and never interpreted.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from engines.config import SCREENS, ConfigError, Settings, ignored_host_variable, load_settings
from engines.ollama_client import lean_client_imports
from tui.cli_base import (
    EXIT_FAIL,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    Parser,
    UsageError,
    check_arguments,
    dumps,
    err,
    exit_codes_help,
    nonempty,
    say,
)
from tui.cli_completion import FILE

if TYPE_CHECKING:
    from tui.graphics import Picking


def _version() -> str:
    from engines.system import app_version

    return app_version()


class _Version(argparse.Action):
    """--version, read only when asked for (not at every start)."""

    def __call__(self, parser: argparse.ArgumentParser, *args: object, **kwargs: object) -> None:
        say(f"llm-pessoal {_version()}")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = Parser(
        prog="llm-pessoal",
        description="A terminal workstation for local AI: chat with Ollama models, "
        "generate images, watch the machine. With no command it starts the TUI.",
        epilog=exit_codes_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--config", metavar="PATH", type=nonempty, help="config file (default: ./config.toml)"
    ).complete = FILE  # type: ignore[attr-defined]
    parser.add_argument("--screen", choices=SCREENS, help="screen to start on")
    parser.add_argument("--version", action=_Version, nargs=0, help="show the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    chat = sub.add_parser("chat", help="send one message and print the reply")
    chat.add_argument("message", nargs="?", help="the message; '-' reads it from standard input")
    chat.add_argument(
        "--model", "-m", type=nonempty, help="model (default: [ollama] default_model)"
    )
    chat.add_argument("--system", "-s", help="system prompt")
    chat.add_argument("--no-stream", action="store_true", help="print the reply when complete")
    chat.add_argument("--stats", action="store_true", help="print the reply's figures on stderr")
    from tui.cli_conversations import add_chat_options
    from tui.cli_conversations import add_parser as add_conversations_parser
    from tui.cli_hosts import add_host_option

    add_chat_options(chat)
    add_host_option(
        chat,
        "the Ollama server, by its name in [ollama] hosts (default: the "
        "conversation's, else the first that has the model loaded, else has it)",
    )
    add_conversations_parser(sub)
    from tui.cli_presets import add_parser as add_presets_parser

    add_presets_parser(sub)

    models = sub.add_parser(
        "models", help="list the models Ollama has, with their details; pull, rm or show one"
    )
    models.add_argument("--json", action="store_true", help="print JSON")
    from tui.cli_models import add_model_commands

    add_model_commands(models)

    status = sub.add_parser("status", help="services, versions and system figures")
    status.add_argument("--json", action="store_true", help="print JSON")

    sub.add_parser("health", help="a health check as JSON; exit 0 when healthy")

    from tui.cli_completion import add_parser as add_completion_parser
    from tui.cli_image import add_parser as add_image_parser

    add_image_parser(sub, "default: [diffusion] model")
    from tui.cli_maintenance import add_parser as add_maintenance_parser

    add_maintenance_parser(sub)
    from tui.cli_show import add_parser as add_show_parser

    add_show_parser(sub)
    from tui.cli_image_models import add_parser as add_image_models_parser

    add_image_models_parser(sub)  # its commands set args.run
    from tui.cli_gallery import add_parser as add_gallery_parser

    add_gallery_parser(sub)  # sets args.run
    from tui.cli_search import add_parser as add_search_parser

    add_search_parser(sub)  # sets args.run
    add_completion_parser(sub)
    return parser


def tui_arguments(argv: Sequence[str]) -> argparse.Namespace | None:
    """The arguments of a plain start of the TUI (nothing, ``--config PATH``, ``--screen
    NAME``), read without building the whole parser, whose subcommands import what they
    describe (about 20 ms of every start); None for anything else: the parser reads it,
    errors and all. (A new top-level option makes this None until it is added here, and
    a test compares the two readings.)"""
    values: dict[str, str] = {}
    tokens = list(argv)
    while tokens:
        option, equals, value = tokens.pop(0).partition("=")
        if option not in ("--config", "--screen") or option in values:
            return None
        if not equals:
            if not tokens:
                return None
            value = tokens.pop(0)
        if not value.strip() or value.startswith("-"):
            return None
        if option == "--screen" and value not in SCREENS:
            return None
        values[option] = value
    return argparse.Namespace(
        config=values.get("--config"), screen=values.get("--screen"), version=None, command=None
    )


def main(argv: Sequence[str] | None = None) -> int:
    lean_client_imports()
    args = tui_arguments(sys.argv[1:] if argv is None else argv)
    if args is None:
        args = build_parser().parse_args(argv)
    try:
        check_arguments(args, sys.argv[1:] if argv is None else argv)
    except UsageError as exc:
        err(str(exc))
        return EXIT_USAGE
    if args.command == "completion":  # needs no config
        from tui.cli_completion import script

        sys.stdout.write(script(build_parser(), args.shell))
        return EXIT_OK
    if args.command == "show":  # needs no config
        from tui.cli_show import run_show

        return run_show(args)
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        err(str(exc))
        return EXIT_USAGE
    from engines.logs import setup_logging

    log_warning = setup_logging(settings.paths.logs, settings.logging.level)
    try:
        if args.command is None:
            return run_tui(settings, args.screen, log_warning)
        if log_warning:
            err(log_warning)
        if args.command == "image":
            from tui.cli_image import run_image

            return run_image(settings, args)
        if args.command == "conversations":
            from tui.cli_conversations import run_conversations

            return run_conversations(settings, args)
        if hasattr(args, "run"):
            return int(args.run(settings, args))
        if args.command in ("backup", "restore", "clean"):
            from tui.cli_maintenance import run_maintenance

            return run_maintenance(settings, args)
        return asyncio.run(run_command(settings, args))
    except UsageError as exc:  # standard input that is not UTF-8, ...
        err(str(exc))
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # Whoever read the output went away (`| head`): stop quietly, as other tools do,
        # and let the final flush of stdout go nowhere instead of failing again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAIL


def run_tui(settings: Settings, screen: str | None, log_warning: str | None) -> int:
    # No garbage collection until the first frame is on screen (the app turns it back on
    # then): the start allocates some 100,000 objects that live as long as the app, and
    # scanning them again and again cost about a third of the CPU time to the first frame.
    gc.disable()
    try:
        return _run_tui(settings, screen, log_warning)
    finally:
        gc.enable()


def _run_tui(settings: Settings, screen: str | None, log_warning: str | None) -> int:
    from tui.graphics import Picking

    # the terminal is asked what it draws now, and answers while the app's code loads
    picking = Picking(settings.diffusion.preview)
    try:
        return _start_app(settings, screen, log_warning, picking)
    finally:
        picking.close()


def _start_app(
    settings: Settings, screen: str | None, log_warning: str | None, picking: Picking
) -> int:
    from tui.app import LlmPessoalApp, open_store
    from tui.stylesheet import RULES_FILE, keep_css_rules
    from tui.widgets.picture import renderer_for

    if settings.keys:
        from tui.keys import check_keymap

        problem = check_keymap(settings.keys, str(settings.source or "config"))
        if problem:
            picking.close()  # the terminal as it was, for the message
            err(problem)
            return EXIT_USAGE

    renderer, typed = renderer_for(picking.choice())
    store, warnings = open_store(settings)
    if log_warning:
        warnings.append(log_warning)
    ignored = ignored_host_variable(settings, os.environ)
    if ignored:
        logging.getLogger(__name__).warning("%s", ignored)
        warnings.append(ignored)
    try:
        app = LlmPessoalApp(
            settings,
            store,
            start_screen=screen,
            warnings=warnings,
            image_renderer=renderer,
            typed_at_start=typed,
        )
        app.freeze_heap = True  # the one app of this process (tui/heap.py)
        rules = keep_css_rules(app, settings.paths.database.parent / RULES_FILE)
        try:
            result = app.run()
        finally:
            if rules is not None:
                rules.save()
    finally:
        store.close()
    return int(result or app.return_code or 0)


async def run_command(settings: Settings, args: argparse.Namespace) -> int:
    from engines.hosts import HostRegistry

    hosts = HostRegistry.from_settings(settings)  # [ollama] hosts, or the one host
    engine = hosts.first.engine
    try:
        if args.command == "chat":
            from tui.cli_conversations import run_chat

            return await run_chat(settings, engine, args, hosts)
        if args.command == "models" and args.models_command:
            from tui.cli_hosts import engine_for_model_command
            from tui.cli_models import run_model_command

            return await run_model_command(await engine_for_model_command(hosts, args), args)
        if args.command == "models":
            return await cmd_models(hosts, args.json)
        if args.command == "status":
            return await cmd_status(settings, hosts, args.json)
        if args.command == "health":
            return await cmd_health(
                settings, engine, [(h.name, h.engine, h.spec.timeout) for h in hosts.hosts]
            )
        raise AssertionError(args.command)  # pragma: no cover
    finally:
        await hosts.aclose()


def _failure_code(exc: Exception) -> int:
    from engines.chat_types import ModelNotFound, OllamaUnavailable

    return EXIT_UNAVAILABLE if isinstance(exc, OllamaUnavailable | ModelNotFound) else EXIT_FAIL


async def _host_models(host: Any) -> list[tuple[Any, Any]]:
    """(model, its details or the exception) for each model of one server."""
    engine = host.engine
    models = await engine.list_models()
    details = await asyncio.gather(*(engine.show(m.name) for m in models), return_exceptions=True)
    return list(zip(models, details, strict=True))


async def cmd_models(hosts: Any, as_json: bool) -> int:
    from engines.chat_types import ChatError
    from engines.units import human_bytes
    from tui.text import visible

    found = await asyncio.gather(
        *(asyncio.wait_for(_host_models(h), h.spec.timeout) for h in hosts.hosts),
        return_exceptions=True,
    )
    listed: list[tuple[str, Any, Any]] = []
    failures: list[Exception] = []
    for host, result in zip(hosts.hosts, found, strict=True):
        if isinstance(result, TimeoutError):
            result = ChatError(
                f"Ollama at {host.engine.where} did not answer within {host.spec.timeout:g} s"
            )
        if isinstance(result, ChatError):
            failures.append(result)
            if hosts.multi:
                err(str(result) if host.name in str(result) else f"{host.name}: {result}")
            continue
        if isinstance(result, BaseException):
            raise result
        listed += [(host.name, model, detail) for model, detail in result]
    if failures and len(failures) == len(hosts.hosts):
        if not hosts.multi:
            err(str(failures[0]))
        return _failure_code(failures[0])
    rows = []
    for host_name, model, detail in listed:
        context = (
            getattr(detail, "context_length", None)
            if not isinstance(detail, BaseException)
            else None
        )
        capabilities = (
            list(getattr(detail, "capabilities", ()))
            if not isinstance(detail, BaseException)
            else []
        )
        rows.append(
            {
                "host": host_name,
                "name": model.name,
                "size": model.size,
                "family": model.family,
                "parameter_size": model.parameter_size,
                "quantization": model.quantization,
                "context_length": context,
                "capabilities": capabilities,
                "modified_at": model.modified_at.isoformat() if model.modified_at else None,
            }
        )
    if as_json:
        say(dumps({"models": rows}))
        return EXIT_OK
    if not rows:
        say("No models yet. Get one with: ollama pull llama3.2")
        return EXIT_OK
    header: tuple[str, ...] = ("NAME", "PARAMS", "QUANT", "FAMILY", "CONTEXT", "SIZE")
    if hosts.multi:
        header = ("HOST", *header)
    table = [header] + [
        (
            *((r["host"],) if hosts.multi else ()),
            r["name"],
            r["parameter_size"],
            r["quantization"],
            r["family"],
            str(r["context_length"] or "-"),
            human_bytes(r["size"]),
        )
        for r in rows
    ]
    table = [tuple(visible(cell) for cell in row) for row in table]  # widths as shown
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        say("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return EXIT_OK


async def cmd_status(settings: Settings, hosts: Any, as_json: bool) -> int:
    from engines.system import status_report
    from engines.units import human_bytes

    report = await status_report(settings, hosts.first.engine, hosts)
    if as_json:
        say(dumps(report))
    else:
        o, s = report["ollama"], report["system_info"]
        state = (
            f"online, version {o['version']}" if report["ollama_status"] == "online" else o["error"]
        )
        say(f"llm-pessoal {report['version']}")
        if len(report["hosts"]) == 1:
            say(f"Ollama ({o['host']}): {state}")
            for m in o["loaded_models"]:
                say(f"  loaded: {m['name']}")
        for h in report["hosts"] if len(report["hosts"]) > 1 else ():
            online = h["status"] == "online"
            say(
                f"Ollama {h['name']} ({h['host']}): "
                + (
                    f"online, version {h['version']}, {h['models']} models"
                    if online
                    else h["error"]
                )
            )
            for m in h["loaded_models"]:
                say(f"  loaded: {m['name']} ({human_bytes(m['size_vram'])} in VRAM)")
        say(f"Stable Diffusion: {report['stable_diffusion']['state']} ({settings.diffusion.model})")
        gpu = f"{s['gpu_usage']:.0f}%" if s["gpu_usage"] is not None else s["gpu_note"]
        say(f"CPU {s['cpu_usage']:.0f}% · RAM {s['memory_usage']:.0f}% · GPU {gpu}")
    online = any(h["status"] == "online" for h in report["hosts"])
    return EXIT_OK if online else EXIT_UNAVAILABLE


async def cmd_health(settings: Settings, engine: Any, servers: list[tuple[str, Any, float]]) -> int:
    from engines.system import health_report

    report = await health_report(settings, engine, servers if len(servers) > 1 else ())
    say(dumps(report))
    if report["status"] == "healthy":
        return EXIT_OK
    return EXIT_UNAVAILABLE if report["checks"]["ollama"] != "ok" else EXIT_FAIL


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
