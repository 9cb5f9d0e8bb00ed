"""Typed messages the workers post to the UI (named in the past tense)."""

from __future__ import annotations

from dataclasses import dataclass

from textual.message import Message

from engines.chat_types import ModelInfo, ServerStatus


@dataclass
class OllamaStatusChanged(Message):
    """The reachability check found the server up, or down."""

    status: ServerStatus


@dataclass
class ModelsListed(Message):
    """The server's models were (re)read."""

    models: list[ModelInfo]
