"""Small name → object registries (inseq style, lm-evaluation-harness' ``Registry[T]``) for
probes and explainers.

``audit`` never imports ``probes``: built-in and third-party probes announce themselves through
the ``transformer_audit.probes`` entry-point group, third-party explainers through
``transformer_audit.explainers``; a group is loaded the first time a name is looked up.
Registering a name twice raises :class:`DuplicateNameError` (a plug-in cannot silently replace a
built-in), unless it is the same definition executed again (a module reloaded, or run as
``python -m``).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Iterator
from importlib.metadata import entry_points
from typing import Generic, TypeVar

from audit.errors import brief

logger = logging.getLogger(__name__)

T = TypeVar("T")


class UnknownNameError(KeyError):
    """A name that no registered probe / explainer / metric carries."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0])


class DuplicateNameError(ValueError):
    """A name registered twice for two different definitions."""


def _origin(obj: object) -> tuple[str, str]:
    """(source file, qualified name) of a registered class or of an explainer's function."""
    target = getattr(obj, "fn", obj)
    try:
        where = inspect.getfile(target)  # type: ignore[arg-type]
    except TypeError:
        where = getattr(target, "__module__", "?")
    return where, getattr(target, "__qualname__", repr(target))


class Registry(Generic[T]):
    """A name → object map with a decorator, lazy plugin loading and clear errors."""

    def __init__(self, what: str, entry_point_group: str | None = None) -> None:
        self.what = what
        self._items: dict[str, T] = {}
        self._group = entry_point_group
        self._plugins_loaded = entry_point_group is None

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            old = self._items.get(name)
            if old is not None and old is not obj:
                if _origin(old) != _origin(obj):
                    a, b = (":".join(_origin(x)) for x in (old, obj))
                    raise DuplicateNameError(f"{self.what} {name!r} is registered twice: by {a} and by {b}; "
                                             "give one another name")
            self._items[name] = obj  # new, or the same definition run again (reloaded, or run as python -m)
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
