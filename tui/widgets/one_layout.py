"""A widget whose new size needs no second layout (the conversation and its Markdown use
it); apart from Markdown so the conversation can be drawn before Markdown is imported."""

from __future__ import annotations

from textual.geometry import Size
from textual.widget import Widget


class OneLayout(Widget):
    """A widget whose new size needs no second layout.

    After each layout, Textual gives every widget whose size changed its new "virtual
    size", a reactive that asks for another layout of the whole screen. For a turn that
    grows as its reply streams, that is a second full layout (and paint) per update that
    changes nothing: the first one has placed every widget, and kept an anchored view at
    its end. A scrollbar that appears or goes still asks for its own layout."""

    def _size_updated(
        self, size: Size, virtual_size: Size, container_size: Size, layout: bool = True
    ) -> bool:
        cache = self._styles_cache
        keep = self.is_container and size.width == self._size.width and self._plain_rows()
        lines, dirty = dict(cache._cache), set(cache._dirty_lines)
        resized = super()._size_updated(size, virtual_size, container_size, layout=False)
        if keep:
            # A container's rows are its background (and left/right edges): one that only
            # grew or shrank draws the same rows again, so they stay cached
            cache._cache.update({y: line for y, line in lines.items() if y < size.height})
            cache._dirty_lines = {y for y in dirty if y < size.height}
        return resized

    def _plain_rows(self) -> bool:
        """Every row of this widget is drawn alike: no top or bottom edge, no title."""
        styles = self.styles
        return (
            not styles.padding.top
            and not styles.padding.bottom
            and not styles.border_top[0]
            and not styles.border_bottom[0]
            and not styles.outline_top[0]
            and not styles.outline_bottom[0]
            and self.border_title is None
            and self.border_subtitle is None
        )
