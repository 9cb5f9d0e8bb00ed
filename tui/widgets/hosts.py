"""Several Ollama servers as the screens show them: the status line, the model picker's
entries labelled by server, and the server a pull or a resend goes to. Pure functions of
the registry's states (engines/hosts.py); the screens call them and draw."""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text

from engines.chat_types import ModelInfo
from engines.hosts import HostRegistry, HostState, model_key, same_model
from tui.text import visible


def status_line(states: Sequence[HostState]) -> Text:
    """``● gpu-box  ● laptop  ✕ spare``: each server, reachable or not (its version and
    models are in the tooltip and the Monitor; the line fits 80 columns)."""
    text = Text()
    for index, state in enumerate(states):
        if index:
            text.append("  ")
        if state.online is None:
            text.append("◌ ", style="dim")
            text.append(visible(state.name), style="dim")
        elif state.online:
            text.append("● ", style="green")
            text.append(visible(state.name))
        else:
            text.append("✕ ", style="red")
            text.append(visible(state.name), style="red")
    return text


def status_tooltip(states: Sequence[HostState]) -> str:
    lines = []
    for s in states:
        if s.online:
            loaded = ", ".join(m.name for m in s.loaded) or "no model loaded"
            lines.append(f"{s.name} ({s.url}): Ollama {s.version}; {loaded}")
        elif s.online is None:
            lines.append(f"{s.name} ({s.url}): checking…")
        else:
            lines.append(f"{s.name} ({s.url}): unreachable, retrying: {s.error}")
    return visible("\n".join(lines))


def picker_entry(model: ModelInfo, loaded: bool) -> Text:
    """The server, the model and its size in parameters, and whether it is loaded: short,
    so that it fits the picker at 80 columns (the Models dialog has the details)."""
    return Text.assemble(
        (visible(model.host), "bold"),
        " › ",
        visible(model.name),
        (f"  {visible(model.parameter_size)}", "dim") if model.parameter_size else "",
        (" · loaded", "green") if loaded else "",
    )


def picker_options(
    hosts: HostRegistry, models: Sequence[ModelInfo], model: str, host: str
) -> tuple[list[tuple[Text, str]], str | None]:
    """The picker's entries (one per server and model) and the one to select: the
    conversation's server when it has one, else the one the rule would pick."""
    loaded = {(s.name, m.name) for s in hosts.states for m in s.loaded}
    options = [
        (picker_entry(m, (m.host, m.name) in loaded), model_key(m.host, m.name)) for m in models
    ]
    if not model:
        return options, None
    chosen = host or hosts.choice(model)
    for m in models:
        if m.host == chosen and same_model(m.name, model):
            return options, model_key(m.host, m.name)
    where = chosen or ", ".join(hosts.names)
    note = "unreachable" if chosen and hosts.get(chosen).state.online is False else "not on it"
    missing = Text.assemble(
        (visible(chosen or "?"), "bold"), " › ", visible(model), (f"  ({note}: {where})", "dim")
    )
    value = model_key(chosen, model)
    return [(missing, value), *options], value


def reachable_names(hosts: HostRegistry) -> list[str]:
    return [s.name for s in hosts.states if s.online]


def monitor_lines(states: Sequence[HostState]) -> Text:
    """The Monitor's line per server: reachable or not, its version and address, or why
    it is not reachable; the loaded models follow in the Monitor's list."""
    text = Text()
    for index, s in enumerate(states):
        if index:
            text.append("\n")
        if s.online is None:
            text.append("◌ ", style="dim")
            text.append(f"Ollama {visible(s.name)}", style="bold")
            text.append(f": checking {visible(s.url)}…", style="dim")
        elif s.online:
            text.append("● ", style="green")
            text.append(f"Ollama {visible(s.name)} ", style="bold")
            loaded = len(s.loaded)
            text.append(
                visible(f"{s.version} at {s.url}") + f" · {len(s.models)} models, {loaded} loaded"
            )
        else:
            text.append("✕ ", style="red")
            text.append(f"Ollama {visible(s.name)} ", style="bold")
            text.append(visible(f"unreachable, retrying: {s.error}"), style="red")
    return text
