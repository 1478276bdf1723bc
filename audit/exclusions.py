"""Items a probe leaves out of its metrics — longer than the model accepts, empty, with a
non-finite score — each recorded with its reason, never dropped silently (docs/architecture.md,
"Faults of single items"). A leaf of the probe layer: :mod:`audit.probe` and
:mod:`audit.generation` both use it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from audit.results import ProbeResult

logger = logging.getLogger(__name__)

TOO_LONG, EMPTY, NON_FINITE = "too_long", "empty", "non_finite"
#: what each exclusion reason means, as a summary warning says it
REASONS = {TOO_LONG: "longer than the model accepts", EMPTY: "with an empty text",
           NON_FINITE: "with a non-finite (NaN/inf) score"}
#: at most this many excluded items are listed by name in ``info["excluded"]``
MAX_LISTED = 200


@dataclass
class Exclusions:
    """Items a probe left out of its metrics, each with its reason — never silently.

    An audit must not die on item 1,207 because that one item is too long for the model or its
    score came out NaN: the item is left out, the rest is scored, and :meth:`report` puts the
    counts into the result (``info["excluded_items"]``, ``info["too_long_items"]``,
    ``info["empty_items"]``, ``info["non_finite_items"]``, the first :data:`MAX_LISTED` items in
    ``info["excluded"]``) and a summary warning that reports and the dashboard show.
    """

    rows: list[dict[str, Any]] = field(default_factory=list)

    def add(self, item: Any, reason: str, detail: str = "") -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown exclusion reason {reason!r}; use one of {sorted(REASONS)}")
        self.rows.append({"item": str(item), "reason": reason, "detail": detail})

    def extend(self, other: Exclusions | Sequence[dict[str, Any]]) -> None:
        rows = other.rows if isinstance(other, Exclusions) else other
        for r in rows:
            self.add(r["item"], r["reason"], r.get("detail", ""))

    def __len__(self) -> int:
        return len(self.rows)

    def drop(self, df: pd.DataFrame, mask: np.ndarray, labels: Sequence[str], reason: str,
             detail: str = "") -> pd.DataFrame:
        """Record the rows of ``df`` where ``mask`` holds (named by ``labels``); return the others."""
        for label in np.asarray(labels, dtype=object)[mask]:
            self.add(label, reason, detail)
        return df[~mask].reset_index(drop=True) if mask.any() else df

    def counts(self) -> dict[str, int]:
        return {r: sum(1 for x in self.rows if x["reason"] == r) for r in REASONS}

    def describe(self, n_total: int, unit: str = "items") -> str:
        """One line: how many of ``n_total`` were left out and why (empty string when none)."""
        if not self.rows:
            return ""
        parts = [f"{n} {REASONS[r]}" for r, n in self.counts().items() if n]
        first = ", ".join(x["item"] for x in self.rows[:10])
        more = ", …" if len(self.rows) > 10 else ""
        return (f"{len(self.rows)} of {n_total} {unit} left out of the metrics: {'; '.join(parts)} "
                f"(first: {first}{more}; see info['excluded'])")

    def report(self, result: ProbeResult, *, n_total: int, unit: str = "items") -> ProbeResult:
        """Record the exclusions in ``result`` (info counts and a warning); returns it."""
        c = self.counts()
        result.info.update(excluded_items=c, **{f"{reason}_items": n for reason, n in c.items()})
        if self.rows:
            result.info["excluded"] = self.rows[:MAX_LISTED]
            result.warnings.append(self.describe(n_total, unit))
            logger.warning("%s: %s", result.probe, result.warnings[-1])
        return result
