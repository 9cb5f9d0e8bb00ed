"""What every CLI command shares: the exit codes and the one way to report an error.

The codes are the same for every command; ``--help`` and the README print this table.
"""

from __future__ import annotations

import sys
from enum import IntEnum

from tui.text import visible


class Exit(IntEnum):
    """The exit codes of every ``llm-pessoal`` command."""

    OK = 0
    """Success."""
    FAIL = 1
    """The job failed or was refused (a generation error, the database held by the app...)."""
    USAGE = 2
    """Bad input: arguments, standard input or the config file."""
    UNAVAILABLE = 3
    """Ollama unreachable, or the model missing."""
    INTERRUPTED = 130
    """Interrupted (Ctrl-C)."""


EXIT_OK, EXIT_FAIL, EXIT_USAGE = Exit.OK, Exit.FAIL, Exit.USAGE
EXIT_UNAVAILABLE, EXIT_INTERRUPTED = Exit.UNAVAILABLE, Exit.INTERRUPTED


def exit_codes_help() -> str:
    """The table of exit codes, as ``--help`` shows it."""
    lines = ["exit codes:"]
    lines += [f"  {code.value:<4} {(code.__doc__ or '').strip()}" for code in Exit]
    return "\n".join(lines)


def err(message: str) -> None:
    """One line on standard error, prefixed with the program's name. Outside text in it
    (server answers, file names, argv) is shown, never interpreted by the terminal."""
    print(f"llm-pessoal: {visible(message)}", file=sys.stderr)
