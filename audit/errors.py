"""Errors shared across the layers, and :func:`brief` for quoting a user's value in one.

A leaf module: it imports nothing from ``audit``, so every other module may import it (see
docs/architecture.md, "Layers").
"""

from __future__ import annotations

from typing import Any


class ProbeError(ValueError):
    """Bad input to a probe: the message names the file, row or field."""


def brief(value: Any, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters, for quoting a user's value in an error message
    (a 1 MB field must not become a 1 MB message)."""
    r = repr(value)
    return r if len(r) <= limit else f"{r[:limit]}… ({len(r):,} characters)"


def located(prefix: str, problems: list[tuple[str, str]]) -> list[str]:
    """``prefix.field: message`` lines (``prefix: message`` for a problem without a field)."""
    paths = [".".join(x for x in (prefix, loc) if x) for loc, _ in problems]
    return [f"{p}: {msg}" if p else msg for p, (_, msg) in zip(paths, problems, strict=True)]


class OptionsError(ValueError):
    """Options that do not fit a component's options model (:mod:`audit.options`);
    ``problems`` lists ``(field path, message)``, so a config can name ``probes.0.options.<field>``."""

    def __init__(self, owner: str, problems: list[tuple[str, str]]) -> None:
        self.owner, self.problems = owner, problems
        super().__init__(f"{owner}: " + "; ".join(located("", problems)))


class ProbeOptionsError(OptionsError, ProbeError):
    """A probe's options do not fit its ``Options`` model."""
