"""``llm-pessoal gallery list``: the image index, newest first, as lines or JSON."""

from __future__ import annotations

import argparse
from datetime import datetime

from engines.config import Settings
from tui.cli_base import EXIT_FAIL, EXIT_OK, EXIT_USAGE, command_store, dumps, err, say


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    gallery = sub.add_parser("gallery", help="the images the app and the CLI made")
    commands = gallery.add_subparsers(dest="gallery_command", metavar="COMMAND", required=True)
    listing = commands.add_parser(
        "list",
        help="list the indexed images, newest first",
        description="The images in the gallery's index, newest first: path, date, size, "
        "seed, model and prompt (one per line), or JSON.",
    )
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.add_argument(
        "--search", metavar="TEXT", default="", help="in the prompt, negative prompt, model or seed"
    )
    listing.add_argument("--model", default="", help="made with this model only")
    listing.add_argument(
        "--date", default="", help="2026-11-30, 2026-11, 2026-11-01..2026-11-15, or 7d"
    )
    listing.add_argument("--trash", action="store_true", help="the trash instead")
    listing.add_argument(
        "--limit", type=int, default=100, help="at most this many (default 100; 0: all)"
    )
    gallery.set_defaults(run=run_gallery)


def run_gallery(settings: Settings, args: argparse.Namespace) -> int:
    from engines import gallery

    try:
        since, until = gallery.parse_date(args.date)
    except ValueError as exc:
        err(f"--date: {exc}")
        return EXIT_USAGE
    if args.limit < 0:
        err(f"--limit {args.limit}: use 0 (all) or more")
        return EXIT_USAGE
    f = gallery.Filter(args.search, args.model, since, until, trash=args.trash)
    store = command_store(settings)
    if store is None:
        return EXIT_FAIL
    try:
        images = gallery.page(store, f, 0, args.limit or -1)
    finally:
        store.close()
    if args.json:
        print(
            dumps(
                [
                    {
                        "id": i.id,
                        "path": str(i.path),
                        "created_at": datetime.fromtimestamp(i.created_at).isoformat(),
                        "exists": i.path.exists(),
                        "prompt": i.parameters.prompt,
                        "negative_prompt": i.parameters.negative_prompt,
                        "width": i.parameters.width,
                        "height": i.parameters.height,
                        "steps": i.parameters.steps,
                        "guidance": i.parameters.guidance,
                        "seed": i.parameters.seed,
                        "sampler": i.parameters.scheduler,
                        "model": i.parameters.model,
                    }
                    for i in images
                ]
            )
        )
        return EXIT_OK
    for i in images:
        p = i.parameters
        when = datetime.fromtimestamp(i.created_at).strftime("%Y-%m-%d %H:%M")
        prompt = p.prompt.splitlines()[0] if p.prompt else ""
        say(f"{i.path}\t{when}\t{p.width}x{p.height}\tseed {p.seed}\t{p.model}\t{prompt}")
    return EXIT_OK
