"""``llm-pessoal presets``: list the chat presets, export them to TOML files, import them."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from tui.cli_base import EXIT_FAIL, EXIT_OK, EXIT_USAGE, command_store, err
from tui.text import visible

if TYPE_CHECKING:
    from engines.config import Settings


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    presets = sub.add_parser(
        "presets", help="chat presets: list them, export them to TOML files, import them"
    )
    presets.set_defaults(run=run_presets)
    actions = presets.add_subparsers(dest="presets_command", metavar="ACTION")
    listing = actions.add_parser("list", help="the presets, with what each sets")
    listing.add_argument("--json", action="store_true", help="print JSON")
    export = actions.add_parser("export", help="write every preset to FOLDER/<name>.toml")
    export.add_argument("folder", nargs="?", help="default: [paths] presets")
    imported = actions.add_parser(
        "import", help="read every .toml of FOLDER (a preset of the same name is replaced)"
    )
    imported.add_argument("folder", nargs="?", help="default: [paths] presets")


def run_presets(settings: Settings, args: argparse.Namespace) -> int:
    from engines.chat_options import defaults_from_settings, set_options
    from engines.presets import PresetError, Presets
    from engines.store import StoreError

    store = command_store(settings)
    if store is None:
        return EXIT_FAIL
    presets = Presets(store, defaults_from_settings(settings))
    command = args.presets_command or "list"
    folder = Path(getattr(args, "folder", None) or settings.paths.presets)
    try:
        if command == "list":
            rows = presets.all()
            if getattr(args, "json", False):
                data = [
                    {"name": p.name, "model": p.model, "options": set_options(p.options)}
                    for p in rows
                ]
                print(json.dumps({"presets": data}, indent=2, ensure_ascii=False))
                return EXIT_OK
            for p in rows:
                model = f"  ({visible(p.model)})" if p.model else ""
                first = (p.options.system_prompt.splitlines() or [""])[0][:60]
                print(f"{visible(p.name)}{model}  {visible(first)}")
            return EXIT_OK
        if command == "export":
            written = presets.export(folder)
            print(f"Exported {len(written)} presets to {visible(str(folder))}.")
            return EXIT_OK
        names, refused = presets.import_folder(folder)
        print(f"Imported {len(names)} presets from {visible(str(folder))}: {', '.join(names)}")
        for why in refused:
            err(f"not imported: {why}")
        return EXIT_USAGE if refused else EXIT_OK
    except (PresetError, OSError) as exc:
        err(visible(str(exc)))
        return EXIT_USAGE
    except StoreError as exc:
        err(str(exc))
        return EXIT_FAIL
    finally:
        store.close()
