"""Chat presets: a named system prompt with options, and optionally a model.

Kept in the database (three ship with it), made from a conversation, picked for a new
one, edited, and exported and imported as TOML files in a folder (one file a preset),
so people can share them and keep them under version control. A preset's TOML names
its options as Ollama does (``num_ctx``, ``top_p``, ``stop``...), and importing checks
every value by the same rules as the Options dialog::

    name = "Coder"
    model = "qwen2.5-coder:7b"   # optional
    system = "You are a senior software engineer..."
    temperature = 0.2
    stop = ["###"]
"""

from __future__ import annotations

import json
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engines.chat_options import OptionError, from_set_options, set_options
from engines.chat_types import ChatOptions
from engines.files import slugify, write_private_text
from engines.store import Store, StoreError, storable

NAME_MAX = 60


class PresetError(ValueError):
    """A preset cannot be saved, found or read; ``str()`` says why."""


@dataclass(frozen=True)
class Preset:
    id: int
    name: str
    model: str
    """Empty: the conversation keeps the model it has (or the default)."""
    options: ChatOptions


def _name(name: str) -> str:
    name = " ".join(name.split())
    if not name:
        raise PresetError("a preset needs a name")
    if len(name) > NAME_MAX:
        raise PresetError(f"a preset's name has at most {NAME_MAX} characters")
    if any(not ch.isprintable() for ch in name):
        raise PresetError("a preset's name cannot have control characters")
    return name


class Presets:
    """The presets of a :class:`Store`; ``defaults`` fill what a preset does not set."""

    def __init__(self, store: Store, defaults: ChatOptions | None = None) -> None:
        self.store = store
        self.defaults = defaults or ChatOptions()

    def _preset(self, row: Any) -> Preset:
        try:
            data = json.loads(row["options"])
        except ValueError:
            data = {}
        options = ChatOptions.from_dict(data if isinstance(data, dict) else {}, self.defaults)
        return Preset(int(row["id"]), str(row["name"]), str(row["model"]), options)

    def all(self) -> list[Preset]:
        rows = self.store._query("SELECT * FROM presets ORDER BY name COLLATE NOCASE")
        return [self._preset(r) for r in rows]

    def get(self, name: str) -> Preset:
        rows = self.store._query("SELECT * FROM presets WHERE name = ?", (name.strip(),))
        if not rows:
            names = ", ".join(p.name for p in self.all()) or "none yet"
            raise PresetError(f"there is no preset {name!r}; the presets are: {names}")
        return self._preset(rows[0])

    def save(self, name: str, options: ChatOptions, model: str = "") -> Preset:
        """Create the preset ``name``, or replace the one of that name."""
        name = _name(name)
        now = time.time()
        data = json.dumps(options.to_dict(), ensure_ascii=False)
        with self.store._tx() as c:
            c.execute(
                "INSERT INTO presets (name, model, options, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT(name) DO UPDATE SET"
                " model = excluded.model, options = excluded.options,"
                " updated_at = excluded.updated_at",
                (storable(name), model, storable(data), now, now),
            )
        return self.get(name)

    def rename(self, old: str, new: str) -> Preset:
        preset = self.get(old)
        new = _name(new)
        try:
            with self.store._tx() as c:
                c.execute("UPDATE presets SET name = ? WHERE id = ?", (storable(new), preset.id))
        except StoreError as exc:
            if "UNIQUE" in str(exc):
                raise PresetError(f"there is already a preset called {new!r}") from None
            raise
        return self.get(new)

    def delete(self, name: str) -> None:
        preset = self.get(name)
        with self.store._tx() as c:
            c.execute("DELETE FROM presets WHERE id = ?", (preset.id,))

    # -- TOML files -------------------------------------------------------------------

    @staticmethod
    def to_toml(preset: Preset) -> str:
        import tomli_w

        data: dict[str, Any] = {"name": preset.name}
        if preset.model:
            data["model"] = preset.model
        data.update(set_options(preset.options))
        return tomli_w.dumps(data, multiline_strings=True)

    def export(self, folder: Path) -> list[Path]:
        """Write every preset to ``folder/<name>.toml``; returns the files written."""
        written = []
        for preset in self.all():
            path = folder / f"{slugify(preset.name) or f'preset-{preset.id}'}.toml"
            written.append(write_private_text(path, self.to_toml(preset)))
        return written

    def read(self, path: Path) -> tuple[str, str, ChatOptions]:
        """(name, model, options) of a preset file, every value checked."""
        where = path.name
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise PresetError(f"{where}: cannot be read: {exc}") from None
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise PresetError(f"{where}: not valid TOML: {exc}") from None
        name = data.pop("name", path.stem)
        model = data.pop("model", "")
        if not isinstance(name, str) or not isinstance(model, str):
            raise PresetError(f"{where}: name and model must be strings")
        try:
            options = from_set_options(data, self.defaults, where)
        except OptionError as exc:
            raise PresetError(str(exc)) from None
        try:
            return _name(name), model.strip(), options
        except PresetError as exc:
            raise PresetError(f"{where}: {exc}") from None

    def import_folder(self, folder: Path) -> tuple[list[str], list[str]]:
        """Read every ``*.toml`` of ``folder`` (a preset of the same name is replaced).
        Returns (the names imported, the files refused with why); a bad file does not
        stop the others."""
        if not folder.is_dir():
            raise PresetError(f"{folder} is not a folder of presets ([paths] presets)")
        imported: list[str] = []
        refused: list[str] = []
        for path in sorted(folder.glob("*.toml")):
            try:
                name, model, options = self.read(path)
            except PresetError as exc:
                refused.append(str(exc))
                continue
            self.save(name, options, model)
            imported.append(name)
        return imported, refused
