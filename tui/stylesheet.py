"""Textual's stylesheet, each CSS source parsed once for a set of variables.

Textual 8 parses its sources again whenever a widget type is first mounted: ``reparse``
parses every source in a new stylesheet, without the parsed rules the old one had, and
``set_variables`` forgets them even when the variables are the same ones. A start of the
app parsed 25 distinct sources 35 times (21 ms, the largest piece of the 80 ms between
``App.run`` and the first frame); the first parse also used the default theme's
variables, before the theme read from the state took over. Here the parsed rules are
kept as long as the variables do not change, and a new stylesheet takes them along, so
each source is parsed once.

``CachedStylesheet.install(app)`` replaces the app's stylesheet before any source is
added. ``reparse`` follows Textual's (a private method's behaviour), so it checks the
version it was written for and otherwise leaves Textual as it is.
"""

from __future__ import annotations

import logging
from typing import Any

from textual.app import App
from textual.css.stylesheet import Stylesheet

from tui.compositor import WRITTEN_FOR, textual_version

log = logging.getLogger(__name__)


class CachedStylesheet(Stylesheet):
    """A stylesheet whose parsed rules outlive ``reparse`` and an unchanged
    ``set_variables``."""

    def set_variables(self, variables: dict[str, str]) -> None:
        if variables == self._variables:
            return  # the same values: the rules parsed with them stand
        super().set_variables(variables)

    def reparse(self) -> None:
        """Textual's ``reparse``: the sources parsed again in a new stylesheet (so that an
        error leaves this one as it was), which here shares this one's parsed rules."""
        fresh = CachedStylesheet(variables=self._variables)
        fresh._parse_cache = self._parse_cache  # the same variables: the same rules
        for read_from, (css, is_defaults, tie_breaker, scope) in self.source.items():
            fresh.add_source(
                css,
                read_from=read_from,
                is_default_css=is_defaults,
                tie_breaker=tie_breaker,
                scope=scope,
            )
        try:
            fresh.parse()
        except Exception:
            self._invalid_css.update(fresh._invalid_css)
            raise
        self._rules = fresh.rules
        self._rules_map = None
        self.source = fresh.source
        self._require_parse = False

    @staticmethod
    def install(app: App[Any]) -> bool:
        """Give ``app`` this stylesheet, with the variables of its theme as it is now;
        False (Textual's left) where the app has sources already or Textual is not the
        version this was written for."""
        installed = textual_version()
        if not installed.startswith(WRITTEN_FOR) or app.stylesheet.source:
            log.info("stylesheet left as it is (textual %s)", installed)
            return False
        app.stylesheet = CachedStylesheet(variables=app.get_css_variables())
        return True
