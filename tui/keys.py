"""The app's key bindings by id, for ``[keys]`` in config.toml (Textual's keymap)."""

from __future__ import annotations

import importlib
from collections.abc import Mapping

from textual.binding import Binding

SOURCES = (
    ("tui.app", "LlmPessoalApp"),
    ("tui.screens.chat", "ChatScreen"),
    ("tui.widgets.prompt", "PromptInput"),
    ("tui.widgets.sidebar", "ConversationList"),
    ("tui.widgets.history", "HistoryDialog"),
    ("tui.screens.models", "ModelsDialog"),
    ("tui.screens.image", "ImageScreen"),
    ("tui.widgets.gallery", "Gallery"),
    ("tui.screens.monitor", "MonitorScreen"),
    ("tui.screens.monitor", "LoadedModels"),
    ("tui.screens.monitor", "Thumbnail"),
)


def binding_ids() -> dict[str, Binding]:
    """Every binding that has an id, by id."""
    out: dict[str, Binding] = {}
    for module, name in SOURCES:
        cls = getattr(importlib.import_module(module), name)
        for binding in cls.__dict__.get("BINDINGS", []):
            if isinstance(binding, Binding) and binding.id:
                out[binding.id] = binding
    return out


def check_keymap(keymap: Mapping[str, str], source: str) -> str | None:
    """Why ``[keys]`` cannot be used (an unknown id), or None."""
    if not keymap:
        return None
    known = binding_ids()
    for binding_id in keymap:
        if binding_id not in known:
            import difflib

            hint = difflib.get_close_matches(binding_id, list(known), n=1)
            maybe = f" (did you mean {hint[0]!r}?)" if hint else ""
            return (
                f"{source}: [keys] unknown binding {binding_id!r}{maybe}; "
                f"the bindings are: {', '.join(sorted(known))}"
            )
    return None
