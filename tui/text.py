"""Show text exactly as written: control characters become visible symbols.

Model replies and prompts may hold ANSI escape sequences, Rich markup or other
control characters. They are stored as they are, and drawn with this mapping so
the terminal never interprets them: C0 controls become Unicode Control Pictures
(ESC shows as ␛), DEL as ␡ and C1 controls as their escaped code.
"""

from __future__ import annotations

_TABLE: dict[int, str] = {c: chr(0x2400 + c) for c in range(0x20) if c not in (0x09, 0x0A)}
_TABLE[0x7F] = "\u2421"
_TABLE.update({c: f"\\x{c:02x}" for c in range(0x80, 0xA0)})
# Bidirectional overrides and isolates could reorder what the user sees; show them too.
_TABLE.update({c: f"\\u{c:04x}" for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A))})


def visible(text: str) -> str:
    """``text`` with every control character replaced by a visible stand-in."""
    return text.translate(_TABLE)


def shorten(text: str, limit: int) -> str:
    """At most ``limit`` characters, saying how much was left out."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}\n… ({len(text) - limit:,} more characters not shown)"
