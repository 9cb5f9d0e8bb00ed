"""The CLI with several Ollama servers (``[ollama] hosts``): ``--host NAME`` on ``chat`` and
on ``models pull|rm|show``, the server of each model in ``models``, and one entry per server
in ``status``.

With one server, every command works as it always did; ``--host`` then may name that one
server (its host name, as ``status --json`` shows it) and nothing else.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from tui.cli_base import UsageError

if TYPE_CHECKING:
    from engines.hosts import HostRegistry
    from engines.ollama_client import ChatEngine

HOST_HELP = "the Ollama server, by its name in [ollama] hosts (default: the one that has it)"


def add_host_option(parser: argparse.ArgumentParser, help: str = HOST_HELP) -> None:
    parser.add_argument("--host", metavar="NAME", help=help)


def chosen(hosts: HostRegistry, name: str | None) -> str | None:
    """``--host NAME`` checked against the configured servers (None: not given)."""
    from engines.hosts import HostUnknown

    if name is None:
        return None
    try:
        return hosts.get(name).name
    except HostUnknown as exc:
        raise UsageError(f"--host {name!r}: {exc}") from None


async def engine_for_model_command(hosts: HostRegistry, args: argparse.Namespace) -> ChatEngine:
    """The server ``models pull|rm|show`` goes to: ``--host``; with one server, that one;
    with several, a pull must say which, and rm or show go to the one that has the model
    (asking each server, each within its timeout)."""
    name = chosen(hosts, getattr(args, "host", None))
    if name is not None:
        return hosts.get(name).engine
    if not hosts.multi:
        return hosts.first.engine
    names = ", ".join(hosts.names)
    if args.models_command == "pull":
        raise UsageError(
            f"several Ollama servers are configured ({names}): say which one to pull onto "
            f"with --host NAME"
        )
    await hosts.check_all()
    having = hosts.with_model(args.name)
    if len(having) > 1 and args.models_command == "rm":
        raise UsageError(
            f"{args.name} is on {', '.join(h.name for h in having)}: say which one to delete "
            "it from with --host NAME"
        )
    return having[0].engine if having else hosts.first.engine
