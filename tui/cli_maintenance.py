"""``llm-pessoal backup``, ``restore`` and ``clean``: the original web app's maintenance (referencia-tecnica.md).

The work is done in :mod:`engines.backup`, :mod:`engines.restore` and
:mod:`engines.clean`; this module parses the options, asks for confirmation and prints
what was done. Outside text (the archive's manifest, file names) is shown through the
display function.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from engines.config import Settings
from tui.cli_base import EXIT_FAIL, EXIT_OK, EXIT_USAGE, err, exit_codes_help
from tui.text import visible

COMMANDS = ("backup", "restore", "clean")


class _OneValue(argparse.Action):
    """Store the option's one value. Python 3.11's argparse turns ``--out=--`` into an
    empty list (it drops the ``--``); that is refused here in one line, exit code 2."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        if not isinstance(values, str) or values == "--":
            err(f"{option_string} needs a value ({self.metavar}), not '--'")
            sys.exit(EXIT_USAGE)
        setattr(namespace, self.dest, values)


def _subparser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], name: str, **kwargs: Any
) -> argparse.ArgumentParser:
    return sub.add_parser(
        name,
        epilog=exit_codes_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        **kwargs,
    )


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    backup = _subparser(
        sub,
        "backup",
        help="one .tar.gz of the images, the database, the logs, the exports and the config",
        description="Write one .tar.gz of the images, a consistent copy of the database, "
        "the logs, the exports and the config. It never replaces the database, the config "
        "or anything inside the data folders; an existing file only with --force.",
    )
    backup.add_argument(
        "--out",
        action=_OneValue,
        metavar="FILE",
        help="archive to write, or a folder for it "
        "(default: ./llm-pessoal-backup-YYYYmmdd-HHMMSS.tar.gz)",
    )
    backup.add_argument(
        "--force", action="store_true", help="replace the file --out names if it exists"
    )

    restore = _subparser(
        sub,
        "restore",
        help="put a backup back into the configured folders (checked first)",
        description="Check a backup from end to end, then put it back. Images and exports "
        "newer than the archived ones are kept, logs already there are kept (the archived "
        "ones go beside as *.restored), the config goes beside the current one; a restore "
        "larger than [backup] restore_max_mb is refused.",
    )
    restore.add_argument("archive", type=Path, metavar="FILE", help="a backup .tar.gz")
    restore.add_argument(
        "--yes",
        "-y",
        action="store_true",
        help="do not ask; replace newer images and exports, and the config file itself "
        "(one that moves the data folders only after a yes on a terminal)",
    )

    clean = _subparser(
        sub,
        "clean",
        help="remove old images, old logs, the model cache, the trash or unused attachments",
        description="Remove old images (and their gallery entries), old rotated logs, or "
        "what the app and the Hugging Face hub put in the model cache. Nothing is removed "
        "without one of the options below: there is no default age.",
    )
    clean.add_argument(
        "--images-older-than",
        action=_OneValue,
        metavar="AGE",
        help="PNGs in [paths] outputs older than AGE, e.g. 7d",
    )
    clean.add_argument(
        "--logs-older-than",
        action=_OneValue,
        metavar="AGE",
        help="rotated logs older than AGE, e.g. 30d",
    )
    clean.add_argument(
        "--cache",
        action="store_true",
        help="what the app and the Hugging Face hub put in [paths] cache",
    )
    clean.add_argument(
        "--trash",
        action="store_true",
        help="empty the gallery's trash (deleted images wait there until this)",
    )
    clean.add_argument(
        "--attachments",
        action="store_true",
        help="copies of attached images that no message uses any more (older than an hour)",
    )
    clean.add_argument(
        "--dry-run", "-n", action="store_true", help="list what would go, remove nothing"
    )


def run_maintenance(settings: Settings, args: argparse.Namespace) -> int:
    from engines.backup import BackupError, BackupTargetRefused
    from engines.clean import CleanError
    from engines.restore import BadArchive, RestoreError

    try:
        if args.command == "backup":
            return cmd_backup(settings, args.out, args.force)
        if args.command == "restore":
            return cmd_restore(settings, args.archive, args.yes)
        return cmd_clean(settings, args)
    except (BackupError, RestoreError, CleanError) as exc:
        err(str(exc))
        return EXIT_USAGE if isinstance(exc, BadArchive | BackupTargetRefused) else EXIT_FAIL
    except OSError as exc:
        err(f"{exc.filename or ''}: {exc.strerror or exc}".lstrip(": "))
        return EXIT_FAIL


def cmd_backup(settings: Settings, out: str | None, force: bool) -> int:
    from engines.backup import backup
    from engines.units import human_bytes

    result = backup(settings, Path(out) if out is not None else None, force=force)
    for path in result.skipped:
        err(f"{path}: left out (gone or unreadable while the archive was written)")
    print(f"{visible(str(result.path))} ({human_bytes(result.size)})")
    return EXIT_OK


def _ask(question: str) -> bool:
    print(f"{question} [y/N] ", end="", file=sys.stderr, flush=True)
    return sys.stdin.readline().strip().lower() in ("y", "yes")


def _confirm_config(moves: list[str]) -> bool:
    """With --yes on a terminal, when the archived config moves the data folders: ask."""
    print("The archived config.toml would replace the one in use, and it:", file=sys.stderr)
    for move in moves:
        print(f"  {visible(move)}", file=sys.stderr)
    return _ask("Replace the config with it?")


def cmd_restore(settings: Settings, archive: Path, yes: bool) -> int:
    from engines.restore import prepare_restore

    on_terminal = sys.stdin.isatty()
    with prepare_restore(settings, archive.expanduser(), overwrite=yes) as plan:
        plan.lock_database()
        if not yes:
            if not on_terminal:
                err(
                    "restore replaces the database: add --yes to go on without a terminal "
                    "to ask on; nothing was restored"
                )
                return EXIT_USAGE
            print(visible("Restore from " + "\n".join(plan.describe())), file=sys.stderr)
            if not _ask("Go on?"):
                err("nothing was restored")
                return EXIT_FAIL
        confirm: Callable[[list[str]], bool] | None = None
        moves = plan.config_moves() if plan.config_target()[1] else []
        if moves and on_terminal:  # asked before anything is changed
            answer = _confirm_config(moves)
            confirm = lambda _moves: answer  # noqa: E731
        report = plan.apply(confirm_config=confirm)
    for line in report.lines:
        print(visible(line))
    for problem in report.problems:
        err(problem)
    return EXIT_FAIL if report.problems else EXIT_OK


def cmd_clean(settings: Settings, args: argparse.Namespace) -> int:
    import os

    from engines.clean import DURATION_FORMS, Removal, clean, parse_duration, plan_clean
    from engines.units import human_bytes

    ages: dict[str, float | None] = {}
    for option, value in (
        ("--images-older-than", args.images_older_than),
        ("--logs-older-than", args.logs_older_than),
    ):
        ages[option] = None
        if value is not None:
            try:
                ages[option] = parse_duration(value)
            except ValueError:
                err(f"{option} {value!r}: expected {DURATION_FORMS}")
                return EXIT_USAGE
    p = settings.paths
    if (
        ages["--images-older-than"] is None
        and ages["--logs-older-than"] is None
        and not args.cache
        and not args.trash
        and not args.attachments
    ):
        err(
            "clean: say what to remove: --images-older-than AGE (PNGs in "
            f"{p.outputs} and their gallery entries), --logs-older-than AGE (rotated logs "
            f"in {p.logs}), --cache (what the app and the hub put in {p.cache}), --trash "
            "(the gallery's deleted images), --attachments (attached images no message "
            "uses); "
            "--dry-run lists them first"
        )
        return EXIT_USAGE

    plan = plan_clean(
        settings,
        images_older_than=ages["--images-older-than"],
        logs_older_than=ages["--logs-older-than"],
        cache=args.cache,
        trash=args.trash,
        attachments=args.attachments,
    )
    hf_home = os.environ.get("HF_HOME")
    if args.cache and hf_home and Path(hf_home).expanduser().resolve() != p.cache:
        err(f"HF_HOME={hf_home} is not [paths] cache ({p.cache}); it is left alone")
    if plan.left_alone:
        names = ", ".join(entry.name for entry in plan.left_alone)
        err(f"left alone in {p.cache}: {names} (not made by llm-pessoal or the Hugging Face hub)")

    def line(verb: str, removal: Removal) -> str:
        return visible(f"{verb} {removal.kind} {removal.path} ({human_bytes(removal.size)})")

    removals = plan.removals
    if not removals:
        print("nothing to remove")
        return EXIT_OK
    if args.dry_run:
        for removal in removals:
            print(line("would remove", removal))
        total = sum(r.size for r in removals)
        print(f"would free {human_bytes(total)} ({len(removals)} item(s)); nothing was removed")
        return EXIT_OK
    summary = clean(settings, removals, on_removed=lambda r: print(line("removed", r), flush=True))
    forgotten = f"; {summary.forgotten} image(s) left the gallery" if summary.forgotten else ""
    print(f"freed {human_bytes(summary.freed)} ({len(summary.removed)} item(s)){forgotten}")
    for problem in summary.problems:
        err(problem)
    return EXIT_FAIL if summary.problems else EXIT_OK
