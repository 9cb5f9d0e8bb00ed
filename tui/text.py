"""The one way outside text becomes display text (DESIGN decision 9).

Model replies, Ollama's answers (version, model names, errors), PNG metadata, archives,
config values, argv and file names may hold ANSI/OSC escape sequences, Rich markup or other
control characters. They are stored as they are, and shown through this module so the
terminal never interprets them:

- :func:`visible` for plain strings (CLI lines, ``notify``, a TextArea's text): C0 controls
  become Unicode Control Pictures (ESC shows as ␛, BEL as ␇), DEL as ␡, C1 controls as their
  escaped code (``\\x9b``) and bidirectional overrides as ``\\u202e``;
- :func:`shown` for Rich renderables (``Static``/``Label`` content, table cells): the same
  text as a :class:`rich.text.Text`, so ``[brackets]`` are never read as markup.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.style import Style
    from rich.text import Text

_TABLE: dict[int, str] = {c: chr(0x2400 + c) for c in range(0x20) if c not in (0x09, 0x0A)}
_TABLE[0x7F] = "\u2421"
_TABLE.update({c: f"\\x{c:02x}" for c in range(0x80, 0xA0)})
# Bidirectional overrides and isolates could reorder what the user sees; show them too.
_TABLE.update({c: f"\\u{c:04x}" for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A))})

JSON_ESCAPES: dict[int, str] = {
    c: f"\\u{c:04x}"
    for c in (0x7F, *range(0x80, 0xA0), *range(0x202A, 0x202F), *range(0x2066, 0x206A))
}
"""What ``json.dumps(ensure_ascii=False)`` leaves raw that a terminal would act on, as JSON
escapes (the document means the same; C0 controls are escaped by ``json`` already)."""


def visible(text: str) -> str:
    """``text`` with every control character replaced by a visible stand-in."""
    return text.translate(_TABLE)


def shown(text: str, style: str | Style = "") -> Text:
    """``text`` as a Rich renderable: controls visible, markup not interpreted."""
    from rich.text import Text

    return Text(visible(text), style=style)


def shorten(text: str, limit: int) -> str:
    """At most ``limit`` characters, saying how much was left out."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}\n… ({len(text) - limit:,} more characters not shown)"
