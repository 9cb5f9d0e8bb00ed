"""Units as people read them: bytes and durations.

One place for both, used by the CLI, the screens and every engine that reports progress.
"""

from __future__ import annotations

from rich.filesize import pick_unit_and_suffix

_BYTE_UNITS = ["B", "KB", "MB", "GB", "TB", "PB"]


def human_bytes(n: float) -> str:
    """``96 B``, ``1.4 KB``, ``2.0 GB``: decimal units, as Ollama and the hub show sizes."""
    unit, suffix = pick_unit_and_suffix(int(abs(n)), _BYTE_UNITS, 1000)
    if unit == 1:
        return f"{n:.0f} B"
    return f"{n / unit:.1f} {suffix}"


def duration_text(seconds: float) -> str:
    """``0:07``, ``12:34``, ``1:02:03``: seconds as a clock shows them."""
    whole = max(0, round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
