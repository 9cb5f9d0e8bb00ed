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

The app started from the command line also keeps the parsed rules from one start to the
next (``RulesOnDisk``): the 25 sources took 13 ms to parse before the first frame, and
their rules take 1.5 ms to load.
"""

from __future__ import annotations

import logging
import os
import pickle
import stat
from pathlib import Path
from typing import Any

from textual.app import App
from textual.css.model import RuleSet
from textual.css.stylesheet import Stylesheet

from engines.files import PRIVATE_MODE, atomic_write_bytes
from tui.compositor import WRITTEN_FOR, textual_version

log = logging.getLogger(__name__)


RULES_FILE = "css-rules.pickle"
"""In the database's folder, beside ``state.json``."""
FORMAT = 1
"""Of the file: a new one makes older files unread (and replaced)."""

SourceKey = tuple[str, Any, bool, int, str]
"""A source as Textual's parse cache names it: CSS, where it was read from, whether it
is a widget's default CSS, its tie breaker and its scope."""


class RulesOnDisk:
    """The rules parsed from each CSS source with one set of variables (the theme's),
    kept in a file from one start of the app to the next.

    The file is a pickle, so it is read only where nobody but this user could have
    written it: a regular file, not a link, owned by the user, in a folder owned by the
    user, neither writable by anyone else (as ssh treats its keys). Textual's version is
    in it: another version's rules are not used. A file that cannot be used is set
    aside silently and replaced at the end. It is written at the app's end, in one
    piece, and only when a source was parsed that the file did not have."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.variables: dict[str, str] = {}
        self.rules: dict[SourceKey, list[RuleSet]] = {}
        self.changed = False

    @classmethod
    def open(cls, path: Path) -> RulesOnDisk:
        disk = cls(path)
        try:
            disk.variables, disk.rules = _read(path)
        except FileNotFoundError:
            pass
        except Exception as exc:  # a cache: never a reason not to start
            log.info("CSS rules in %s not used: %s", path, exc)
        return disk

    def get(self, variables: dict[str, str], key: SourceKey) -> list[RuleSet] | None:
        return self.rules.get(key) if variables == self.variables else None

    def put(self, variables: dict[str, str], key: SourceKey, rules: list[RuleSet]) -> None:
        if variables != self.variables:  # another theme: the rules of this one from now
            self.variables, self.rules = dict(variables), {}
        self.rules[key] = rules
        self.changed = True

    def save(self) -> None:
        if not self.changed:
            return
        data = pickle.dumps((FORMAT, textual_version(), self.variables, self.rules))
        try:
            atomic_write_bytes(self.path, data, PRIVATE_MODE)
        except OSError as exc:
            log.info("CSS rules not kept in %s: %s", self.path, exc)
        self.changed = False


def _read(path: Path) -> tuple[dict[str, str], dict[SourceKey, list[RuleSet]]]:
    """The variables and rules in ``path``, if it is this user's alone and was written by
    this Textual."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)  # never a link, nor a wait
    with os.fdopen(fd, "rb") as f:
        uid, own = os.getuid(), os.fstat(f.fileno())
        if not stat.S_ISREG(own.st_mode):
            raise PermissionError("not a regular file")
        for st in (own, os.stat(path.parent)):
            if st.st_uid != uid or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
                raise PermissionError("not this user's alone")
        data = pickle.load(f)
    form, version, variables, rules = data
    if form != FORMAT or version != textual_version():
        raise ValueError(f"written for Textual {version}, format {form}")
    if not isinstance(variables, dict) or not isinstance(rules, dict):
        raise ValueError("not rules")
    return variables, rules


class CachedStylesheet(Stylesheet):
    """A stylesheet whose parsed rules outlive ``reparse`` and an unchanged
    ``set_variables``, and with ``disk``, the app's end."""

    disk: RulesOnDisk | None = None

    def set_variables(self, variables: dict[str, str]) -> None:
        if variables == self._variables:
            return  # the same values: the rules parsed with them stand
        super().set_variables(variables)

    def _parse_rules(
        self,
        css: str,
        read_from: Any,
        is_default_rules: bool = False,
        tie_breaker: int = 0,
        scope: str = "",
    ) -> list[RuleSet]:
        key: SourceKey = (css, read_from, is_default_rules, tie_breaker, scope)
        disk = self.disk
        if disk is None or self._parse_cache.get(key) is not None:
            return super()._parse_rules(css, read_from, is_default_rules, tie_breaker, scope)
        rules = disk.get(self._variables, key)
        if rules is not None:
            self._parse_cache[key] = rules
            return rules
        rules = super()._parse_rules(css, read_from, is_default_rules, tie_breaker, scope)
        if not any(rule.errors for rule in rules):
            disk.put(self._variables, key, rules)
        return rules

    def reparse(self) -> None:
        """Textual's ``reparse``: the sources parsed again in a new stylesheet (so that an
        error leaves this one as it was), which here shares this one's parsed rules."""
        fresh = CachedStylesheet(variables=self._variables)
        fresh._parse_cache = self._parse_cache  # the same variables: the same rules
        fresh.disk = self.disk
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


def keep_css_rules(app: App[Any], path: Path) -> RulesOnDisk | None:
    """Give ``app``'s stylesheet the rules kept in ``path`` (read now), and keep what it
    parses there (``save()`` at the end); None where the app has Textual's own."""
    if not isinstance(app.stylesheet, CachedStylesheet):
        return None
    app.stylesheet.disk = disk = RulesOnDisk.open(path)
    return disk
