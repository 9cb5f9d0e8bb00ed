"""The app's key bindings: where each is declared, ``[keys]`` in config.toml (Textual's
keymap) checked for unknown ids and for clashes, and the rows the command palette and
the help are built from (DESIGN decision 10: every action is findable)."""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from textual.binding import Binding

if TYPE_CHECKING:
    from textual.dom import DOMNode


@dataclass(frozen=True)
class Source:
    """A class that declares bindings, and where in the app they act."""

    module: str
    name: str
    place: str
    """How the palette and the help name where the keys work."""
    context: str
    """Bindings of one context are active together: "app" (everywhere), a screen's
    name (the screen and its widgets), or a dialog's own name."""


SOURCES: tuple[Source, ...] = (
    Source("tui.app", "LlmPessoalApp", "Everywhere", "app"),
    Source("tui.screens.chat", "ChatScreen", "Chat", "chat"),
    Source("tui.screens.chat_extras", "ChatExtras", "Chat", "chat"),
    Source("tui.screens.chat_images", "ChatImages", "Chat", "chat"),
    Source("tui.widgets.chat_image", "ChatImage", "Image in the chat", "chat"),
    Source("tui.widgets.prompt", "PromptInput", "Prompt", "chat"),
    Source("tui.widgets.sidebar", "Sidebar", "Conversation search", "chat"),
    Source("tui.widgets.sidebar", "ConversationList", "Conversation list", "chat"),
    Source("tui.screens.image", "ImageScreen", "Image", "image"),
    Source("tui.screens.image_prompts", "ImagePromptActions", "Image", "image"),
    Source("tui.widgets.queue", "QueueList", "Queue", "queue"),
    Source("tui.screens.gallery", "GalleryScreen", "Gallery", "gallery"),
    Source("tui.widgets.gallery", "ThumbnailGrid", "Gallery pages", "gallery"),
    Source("tui.screens.monitor", "MonitorScreen", "Monitor", "monitor"),
    Source("tui.screens.monitor", "LoadedModels", "Loaded models", "monitor"),
    Source("tui.screens.monitor", "Thumbnail", "Recent images", "monitor"),
    Source("tui.widgets.history", "HistoryDialog", "Prompt history", "history"),
    Source("tui.screens.models", "ModelsDialog", "Models dialog", "models"),
    Source("tui.widgets.image_models", "ImageModelsPane", "Image models", "models"),
    Source("tui.widgets.dialogs", "OptionsDialog", "Options dialog", "options"),
    Source("tui.widgets.presets", "PresetsDialog", "Presets", "presets"),
    Source("tui.widgets.attachments", "AttachDialog", "Attach a file", "attach"),
    Source("tui.widgets.dialogs", "ConfirmDialog", "Question", "confirm"),
    Source("tui.widgets.image_prompt", "ImagePromptDialog", "Image prompt", "image_prompt"),
    Source("tui.widgets.dialogs", "TextDialog", "Text dialog", "text"),
    Source("tui.widgets.dialogs", "PickDialog", "Pick dialog", "pick"),
    Source("tui.widgets.image_viewer", "ImageViewer", "Image viewer", "viewer"),
    Source("tui.widgets.search", "SearchDialog", "Search", "search"),
    Source("tui.screens.help", "HelpScreen", "Help", "help"),
)
"""Every class of the app that declares bindings (a test checks none is missing)."""

_BY_CLASS = {(s.module, s.name): s for s in SOURCES}


def source_class(source: Source) -> type:
    cls: type = getattr(importlib.import_module(source.module), source.name)
    return cls


def declared(cls: type) -> list[Binding]:
    """The bindings ``cls`` itself declares (not those it inherits)."""
    return [b for b in cls.__dict__.get("BINDINGS", []) if isinstance(b, Binding)]


def keys_of(binding: Binding, keymap: Mapping[str, str]) -> list[str]:
    """The keys of ``binding`` once ``[keys]`` has remapped it."""
    keys = keymap.get(binding.id or "", binding.key) if binding.id else binding.key
    return [k.strip() for k in keys.split(",") if k.strip()]


def binding_ids() -> dict[str, Binding]:
    """Every binding that has an id, by id."""
    out: dict[str, Binding] = {}
    for source in SOURCES:
        for binding in declared(source_class(source)):
            if binding.id:
                out[binding.id] = binding
    return out


def _name(binding: Binding, source: Source) -> str:
    if binding.id:
        return repr(binding.id)
    return f"{source.place}'s {binding.description or binding.action!r}"


def check_keymap(keymap: Mapping[str, str], source: str) -> str | None:
    """Why ``[keys]`` cannot be used, or None: an unknown id, or a key that two bindings
    active at the same time would share (the second would never run, or would run the
    wrong action), named with both bindings."""
    if not keymap:
        return None
    known = binding_ids()
    for binding_id in keymap:
        if binding_id not in known:
            hint = difflib.get_close_matches(binding_id, list(known), n=1)
            maybe = f" (did you mean {hint[0]!r}?)" if hint else ""
            return (
                f"{source}: [keys] unknown binding {binding_id!r}{maybe}; "
                f"the bindings are: {', '.join(sorted(known))}"
            )
    clash = first_clash(keymap)
    if clash is None:
        return None
    key, (a, a_source), (b, b_source) = clash
    remapped, other = ((a, a_source), (b, b_source))
    if not (a.id and a.id in keymap and key not in keys_of(a, {})):
        remapped, other = other, remapped
    where = "everywhere" if other[1].context == "app" else f"among the {other[1].place} keys"
    return (
        f"{source}: [keys] {_name(*remapped)} = {','.join(keys_of(remapped[0], keymap))!r} "
        f"clashes with {_name(*other)} ({other[0].description or other[0].action}, {where}), "
        f"which also uses {key}: one key cannot do both. Choose another key."
    )


def first_clash(
    keymap: Mapping[str, str],
) -> tuple[str, tuple[Binding, Source], tuple[Binding, Source]] | None:
    """The first key that two bindings active together share once ``keymap`` applies,
    the key new to one of them (the defaults share keys only on purpose: F1 opens and
    closes the help)."""

    def new(binding: Binding, key: str) -> bool:
        return bool(binding.id) and binding.id in keymap and key not in keys_of(binding, {})

    by_context: dict[str, list[tuple[Binding, Source]]] = {}
    for source in SOURCES:
        for binding in declared(source_class(source)):
            by_context.setdefault(source.context, []).append((binding, source))
    everywhere = by_context.pop("app", [])
    contexts = [everywhere] + [everywhere + rows for rows in by_context.values()]
    for rows in contexts:
        seen: dict[str, tuple[Binding, Source]] = {}
        for binding, source in rows:
            for key in keys_of(binding, keymap):
                first = seen.get(key)
                if (
                    first is not None
                    and first[0] is not binding
                    and (new(first[0], key) or new(binding, key))
                ):
                    return key, first, (binding, source)
                seen[key] = (binding, source)
    return None


# -- what the palette and the help show --------------------------------------------


def place_of(node: DOMNode) -> str:
    """How the palette names where ``node``'s keys work."""
    for cls in type(node).__mro__:
        source = _BY_CLASS.get((cls.__module__, cls.__name__))
        if source is not None:
            return source.place
    return type(node).__name__


def own_bindings(node: DOMNode) -> Iterator[Binding]:
    """The bindings the app's own classes give ``node`` (Textual's built-in keys of
    inputs and lists are left out), with a description, in declaration order."""
    seen: set[tuple[str, str]] = set()
    for cls in type(node).__mro__:
        if not cls.__module__.startswith("tui."):
            continue
        for binding in declared(cls):
            if binding.description and (binding.key, binding.action) not in seen:
                seen.add((binding.key, binding.action))
                yield binding


def nodes_of(screen: DOMNode) -> Iterator[DOMNode]:
    """``screen`` and every widget in it that declares bindings of the app."""
    for node in screen.walk_children(with_self=True):
        if any(True for _ in own_bindings(node)):
            yield node
