"""What every CLI command shares: the exit codes and the one way to report an error.

The codes are the same for every command; ``--help`` and the README print this table.
"""

from __future__ import annotations

import sys
import textwrap
from enum import IntEnum

from tui.text import visible


class Exit(IntEnum):
    """The exit codes of every ``llm-pessoal`` command; :data:`EXIT_MEANINGS` says each."""

    OK = 0
    FAIL = 1
    USAGE = 2
    UNAVAILABLE = 3
    INTERRUPTED = 130


EXIT_MEANINGS = {
    Exit.OK: "Success.",
    Exit.FAIL: "The job failed or was refused (a generation error, the database held by "
    "the app during a restore, a restore larger than [backup] restore_max_mb...).",
    Exit.USAGE: "Bad input: arguments, standard input, the config file, or a backup archive "
    "that is not one (or is inside what a restore replaces).",
    Exit.UNAVAILABLE: "Ollama unreachable, or the model missing.",
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
