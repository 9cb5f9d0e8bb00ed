"""``llm-pessoal backup``, ``restore`` and ``clean``: the specification's maintenance.

The work is done in :mod:`engines.maintenance`; this module parses the options, asks
for confirmation and prints what was done.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from engines.config import Settings
from tui.cli_base import EXIT_FAIL, EXIT_OK, EXIT_USAGE, err

COMMANDS = ("backup", "restore", "clean")


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    backup = sub.add_parser(
        "backup",
        help="one .tar.gz of the images, the database, the logs, the exports and the config",
    )
    backup.add_argument(
        "--out",
        type=Path,
        metavar="FILE",
        help="archive to write, or a folder for it "
        "(default: ./llm-pessoal-backup-YYYYmmdd-HHMMSS.tar.gz)",
    )

    restore = sub.add_parser(
        "restore", help="put a backup back into the configured folders (checked first)"
    )
    restore.add_argument("archive", type=Path, metavar="FILE", help="a backup .tar.gz")
    restore.add_argument(
        "--yes",
        "-y",
        action="store_true",
        help="do not ask; replace newer images and logs, and the config file itself",
    )

    clean = sub.add_parser("clean", help="remove old images, old logs or the model cache")
    clean.add_argument(
        "--images-older-than", metavar="AGE", help="PNGs in [paths] outputs older than AGE (7d)"
    )
    clean.add_argument("--logs-older-than", metavar="AGE", help="rotated logs older than AGE (30d)")
    clean.add_argument(
        "--cache", action="store_true", help="everything in [paths] cache (the model cache)"
    )
    clean.add_argument(
        "--dry-run", "-n", action="store_true", help="list what would go, remove nothing"
    )


def run_maintenance(settings: Settings, args: argparse.Namespace) -> int:
    from engines.maintenance import MaintenanceError

    try:
        if args.command == "backup":
            return cmd_backup(settings, args.out)
        if args.command == "restore":
            return cmd_restore(settings, args.archive, args.yes)
        return cmd_clean(settings, args)
    except MaintenanceError as exc:
        from engines.maintenance import BadArchive

        err(str(exc))
        return EXIT_USAGE if isinstance(exc, BadArchive) else EXIT_FAIL
    except OSError as exc:
        err(f"{exc.filename or ''}: {exc.strerror or exc}".lstrip(": "))
        return EXIT_FAIL


def cmd_backup(settings: Settings, out: Path | None) -> int:
    from engines.maintenance import backup, human_size

    result = backup(settings, out)
    for path in result.skipped:
        err(f"{path}: left out (gone or unreadable while the archive was written)")
    print(f"{result.path} ({human_size(result.size)})")
    return EXIT_OK


def cmd_restore(settings: Settings, archive: Path, yes: bool) -> int:
    from engines.maintenance import prepare_restore

    with prepare_restore(settings, archive.expanduser(), overwrite=yes) as plan:
        plan.lock_database()
        if not yes:
            if not sys.stdin.isatty():
                err(
                    "restore replaces the database: add --yes to go on without a terminal "
                    "to ask on; nothing was restored"
                )
                return EXIT_USAGE
            print("Restore from " + "\n".join(plan.describe()), file=sys.stderr)
            print("Go on? [y/N] ", end="", file=sys.stderr, flush=True)
            answer = sys.stdin.readline().strip().lower()
            if answer not in ("y", "yes"):
                err("nothing was restored")
                return EXIT_FAIL
        report = plan.apply()
    for line in report.lines:
        print(line)
    for problem in report.problems:
        err(problem)
    return EXIT_FAIL if report.problems else EXIT_OK


def cmd_clean(settings: Settings, args: argparse.Namespace) -> int:
    import os

    from engines.maintenance import DURATION_FORMS, Removal, clean, human_size, parse_duration

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
    if ages["--images-older-than"] is None and ages["--logs-older-than"] is None and not args.cache:
        err(
            "clean: say what to remove: --images-older-than AGE (PNGs in "
            f"{p.outputs} and their gallery entries), --logs-older-than AGE (rotated logs "
            f"in {p.logs}), --cache (everything in {p.cache}); --dry-run lists them first"
        )
        return EXIT_USAGE

    from engines.maintenance import plan_clean

    plan = plan_clean(
        settings,
        images_older_than=ages["--images-older-than"],
        logs_older_than=ages["--logs-older-than"],
        cache=args.cache,
    )
    hf_home = os.environ.get("HF_HOME")
    if args.cache and hf_home and Path(hf_home).expanduser().resolve() != p.cache:
        err(f"HF_HOME={hf_home} is not [paths] cache ({p.cache}); it is left alone")

    def line(verb: str, removal: Removal) -> str:
        return f"{verb} {removal.kind} {removal.path} ({human_size(removal.size)})"

    if not plan:
        print("nothing to remove")
        return EXIT_OK
    if args.dry_run:
        for removal in plan:
            print(line("would remove", removal))
        total = sum(r.size for r in plan)
        print(f"would free {human_size(total)} ({len(plan)} item(s)); nothing was removed")
        return EXIT_OK
    summary = clean(settings, plan, on_removed=lambda r: print(line("removed", r), flush=True))
    forgotten = f"; {summary.forgotten} image(s) left the gallery" if summary.forgotten else ""
    print(f"freed {human_size(summary.freed)} ({len(summary.removed)} item(s)){forgotten}")
    for problem in summary.problems:
        err(problem)
    return EXIT_FAIL if summary.problems else EXIT_OK
