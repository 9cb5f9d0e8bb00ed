"""What the app remembers between runs (the theme chosen in the palette, say): a small
JSON file beside the database, written atomically. Not settings: config.toml is the
user's file and is never rewritten."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from engines.files import atomic_write_text

log = logging.getLogger(__name__)

IMAGE_MODEL = "image_model"
"""The image model made the default in the Models dialog, in [diffusion] model's place."""


def state_path(database: Path) -> Path:
    """Where the state file is: beside the database."""
    return database.parent / "state.json"


class State:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, Any] = {}
        try:
            loaded = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            log.warning("state file ignored: %s", exc)
            return
        if isinstance(loaded, dict):
            self.data = loaded

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def set(self, key: str, value: Any) -> None:
        if self.data.get(key) == value:
            return
        self.data[key] = value
        try:
            atomic_write_text(self.path, json.dumps(self.data, indent=2), mode=0o600)
        except OSError as exc:
            log.warning("state not saved: %s", exc)
