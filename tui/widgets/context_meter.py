"""How full the context is: the tokens the next request will send (the last reply's
prompt and reply, and what waits in the prompt) against the window, with a warning
before Ollama starts dropping the oldest messages, which it does without a word."""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual.widgets import Static


@dataclass(frozen=True)
class ContextUse:
    used: int
    """Tokens so far: the last reply's prompt and its own tokens."""
    pending: int
    """Estimated tokens of what waits to be sent (the prompt and its files)."""
    window: int
    """The context window in tokens (0: not known yet)."""
    source: str
    """Where the window comes from: num_ctx, loaded, model."""

    @property
    def total(self) -> int:
        return self.used + self.pending

    @property
    def percent(self) -> int:
        return round(100 * self.total / self.window) if self.window else 0


class ContextMeter(Static):
    """One line above the prompt: ``context ▰▰▰▱▱ 1,234 + ~300 / 4,096 (num_ctx) 37%``."""

    DEFAULT_CSS = """
    ContextMeter {
        height: 1;
        padding: 0 1;
        color: $text-muted;
    }
    ContextMeter.-warn {
        color: $warning;
    }
    ContextMeter.-full {
        color: $error;
    }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__("", id=id)
        self.use: ContextUse | None = None
        self.warn_at = 85

    def show(self, use: ContextUse) -> None:
        self.use = use
        self.set_class(bool(use.window) and use.percent >= self.warn_at, "-warn")
        self.set_class(bool(use.window) and use.percent >= 100, "-full")
        text = Text("context ")
        if use.window:
            filled = min(10, use.percent // 10)
            text.append("▰" * filled + "▱" * (10 - filled) + " ")
        text.append(f"{use.used:,}")
        if use.pending:
            text.append(f" + ~{use.pending:,} to send")
        if use.window:
            text.append(f" / {use.window:,} ({use.source}) {use.percent}%")
        if use.window and use.percent >= self.warn_at:
            text.append(
                "  ⚠ Ollama drops the oldest messages when it is full"
                if use.percent < 100
                else "  ⚠ full: the oldest messages are being dropped",
                style="bold",
            )
        self.update(text)
