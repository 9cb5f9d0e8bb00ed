"""What every CLI command shares: the exit codes and the one way to write to the terminal.

The codes are the same for every command; ``--help`` and the README print this table.
Outside text (server answers, PNG metadata, file names, argv) reaches the terminal only
through :func:`err`, :func:`say` or :func:`dumps`, which show it and never let the terminal
interpret it. The one exception is ``chat``'s reply on a pipe, which stays byte-exact.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from collections.abc import Sequence
from enum import IntEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TextIO

from tui.text import JSON_ESCAPES, visible

if TYPE_CHECKING:
    from engines.config import Settings
    from engines.store import Store


class Exit(IntEnum):
    """The exit codes of every ``llm-pessoal`` command; :data:`EXIT_MEANINGS` says each."""

    OK = 0
    FAIL = 1
    USAGE = 2
    UNAVAILABLE = 3
    INTERRUPTED = 130


EXIT_MEANINGS: dict[Exit, str] = {
    Exit.OK: "Success.",
    Exit.FAIL: "The job failed or was refused (a generation error, the database held by "
    "the app during a restore, a restore larger than [backup] restore_max_mb...).",
    Exit.USAGE: "Bad input: arguments, standard input, the config file, or a backup archive "
    "that is not one (or is inside what a restore replaces).",
    Exit.UNAVAILABLE: "Ollama unreachable, the model missing, or the image model not loadable.",
    Exit.INTERRUPTED: "Interrupted (Ctrl-C).",
}
"""What each exit code means (member docstrings are not kept by ``enum``)."""


EXIT_OK, EXIT_FAIL, EXIT_USAGE = Exit.OK, Exit.FAIL, Exit.USAGE
EXIT_UNAVAILABLE, EXIT_INTERRUPTED = Exit.UNAVAILABLE, Exit.INTERRUPTED


def exit_codes_help() -> str:
    """The table of exit codes, as ``--help`` shows it."""
    lines = ["exit codes:"]
    for code in Exit:
        lines += textwrap.wrap(
            EXIT_MEANINGS[code],
            width=79,
            initial_indent=f"  {code.value:<4} ",
            subsequent_indent=" " * 7,
        )
    return "\n".join(lines)


def err(message: str) -> None:
    """One line on standard error, prefixed with the program's name. Outside text in it
    (server answers, file names, argv) is shown, never interpreted by the terminal."""
    print(f"llm-pessoal: {visible(message)}", file=sys.stderr)


def open_command_store(settings: Settings) -> Store:
    """The database for a command (``StoreError`` if it cannot be opened). A command may
    run beside the app: a reply the app streams is not marked interrupted."""
    from engines.store import Store

    return Store.open(settings.paths.database, recover=False)


def command_store(settings: Settings) -> Store | None:
    """:func:`open_command_store`, or None after saying why it cannot be opened."""
    from engines.store import StoreError

    try:
        return open_command_store(settings)
    except StoreError as exc:
        err(str(exc))
        return None


def say(
    line: str = "", *, file: TextIO | None = None, end: str = "\n", exact_when_piped: bool = False
) -> None:
    """A line of human-readable output (stdout unless ``file``), outside text in it shown
    and never interpreted: on a terminal and in a file that is later ``cat``-ed alike.
    ``exact_when_piped``: written as it is when the stream is not a terminal (a saved
    image's path, for the script that reads it)."""
    out = sys.stdout if file is None else file
    exact = exact_when_piped and not out.isatty()
    out.write((line if exact else visible(line)) + end)


def dumps(data: Any) -> str:
    """``data`` as indented JSON that is safe to print: every control character escaped."""
    return json.dumps(data, indent=2, ensure_ascii=False).translate(JSON_ESCAPES)


class UsageError(Exception):
    """Bad input found after parsing (standard input, an option's value): exit 2, one line."""


class Parser(argparse.ArgumentParser):
    """argparse, with its errors as one line like every other error of the CLI (exit 2)."""

    def error(self, message: str) -> NoReturn:
        err(f"{message} (see: {self.prog} --help)")
        self.exit(Exit.USAGE)


def nonempty(value: str) -> str:
    """An option's value that cannot be empty (``--model ""``)."""
    if not value.strip():
        raise argparse.ArgumentTypeError(f"{value!r} is empty: give a non-empty value")
    return value


def nonempty_path(value: str) -> Path:
    """A path option's value that cannot be empty (``--out ""`` is not ``--out .``)."""
    return Path(nonempty(value))


def check_arguments(args: argparse.Namespace, argv: Sequence[str]) -> None:
    """What argparse lets through on Python 3.11: ``--opt=--`` becomes an empty list instead
    of a value, and argv that is not UTF-8 arrives as lone surrogates."""
    for token in argv:
        if token == "--":  # what follows is not options
            break
        option, equals, value = token.partition("=")
        if option.startswith("--") and equals and value == "--":
            raise UsageError(
                f"{option}=-- has no value: '--' ends the options and cannot be a value; "
                f"give {option} a value of its own"
            )
    for dest, value in vars(args).items():
        values = value if isinstance(value, list) else [value]
        for one in values:
            text = str(one) if isinstance(one, str | Path) else ""
            if any("\udc80" <= c <= "\udcff" for c in text):
                shown = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
                raise UsageError(f"{dest.replace('_', ' ')} {shown!r} is not UTF-8 text")


def read_stdin_text(what: str) -> str:
    """Standard input, decoded as UTF-8; UsageError (naming the byte) when it is not."""
    data = sys.stdin.buffer.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(
            f"the {what} on standard input is not UTF-8 text (byte 0x{data[exc.start]:02x} at "
            f"offset {exc.start}); convert it first, e.g. with: iconv -f LATIN1 -t UTF-8"
        ) from None
