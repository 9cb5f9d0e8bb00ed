"""A widget whose new size needs no second layout (the conversation and its Markdown use
it), and a container laid out once per change (``OwnHeights``: a turn and its Markdown);
apart from Markdown so the conversation can be drawn before Markdown is imported."""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.css.scalar import Scalar, Unit
from textual.geometry import Size
from textual.widget import Widget

if TYPE_CHECKING:
    from textual.layout import DockArrangeResult


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
        """Every row of this widget is drawn the same at any height: no bottom edge (a
        top edge, a turn's title, stays where it is, over rows drawn alike)."""
        styles = self.styles
        return (
            not styles.padding.bottom
            and not styles.border_bottom[0]
            and not styles.outline_bottom[0]
            and self.border_subtitle is None
        )


_OWN = (Unit.AUTO, Unit.CELLS)
"""Heights that do not depend on the container's: set in cells, or the content's."""


def _own(scalar: Scalar | None) -> bool:
    return scalar is None or scalar.unit in _OWN


class OwnHeights(Widget):
    """A container whose children each take the height of their own content (or a set
    number of rows), none a share of the container's, nor docked, and aligned at its
    top: laid out alike at any height.

    Textual measures a container of auto height by arranging its children at one height
    (its parent's), then places it by arranging them again at its own, which differs, so
    its cache of arrangements never served the second: each write of a streamed reply
    arranged the reply's Markdown two or three times, and its turn twice (121 and 84
    arrangements in 45 frames). Arranged here at height 0 whatever the height asked,
    the second is the first, from the cache."""

    def arrange(self, size: Size, optimal: bool = False) -> DockArrangeResult:
        if (
            size.height
            and self.styles.align_vertical == "top"
            and all(
                _own(styles.height)
                and _own(styles.min_height)
                and _own(styles.max_height)
                and not styles.is_docked
                for styles in (child.styles for child in self.displayed_children)
            )
        ):
            size = Size(size.width, 0)
        return super().arrange(size, optimal)
