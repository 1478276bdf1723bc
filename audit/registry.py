"""Small name → object registries (inseq style) for probes and explainers.

``audit`` never imports ``probes``: built-in and third-party probes announce themselves through
the ``transformer_audit.probes`` entry-point group, loaded the first time a probe is looked up.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from importlib.metadata import entry_points
from typing import Generic, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")


class UnknownNameError(KeyError):
    """A name that no registered probe / explainer / metric carries."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0])


class Registry(Generic[T]):
    """A name → object map with a decorator, lazy plugin loading and clear errors."""

    def __init__(self, what: str, entry_point_group: str | None = None) -> None:
        self.what = what
        self._items: dict[str, T] = {}
        self._group = entry_point_group
        self._plugins_loaded = entry_point_group is None

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items and self._items[name] is not obj:
                logger.debug("%s %r re-registered", self.what, name)
            self._items[name] = obj
            return obj

        return deco

    def _load_plugins(self) -> None:
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        assert self._group is not None
        for ep in entry_points(group=self._group):
            try:
                ep.load()
            except Exception as exc:  # a broken plugin must not hide the others
                logger.warning("could not load %s plugin %s: %s", self.what, ep.name, exc)

    def get(self, name: str) -> T:
        self._load_plugins()
        try:
            return self._items[name]
        except (KeyError, TypeError):  # TypeError: an unhashable "name" (a list from a config)
            # imported here: audit.datafiles imports audit.probe, which imports this module
            from audit.datafiles import brief

            known = ", ".join(sorted(self._items)) or "(none registered)"
            raise UnknownNameError(f"unknown {self.what} {brief(name)}; known: {known}") from None

    def names(self) -> list[str]:
        self._load_plugins()
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        self._load_plugins()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
