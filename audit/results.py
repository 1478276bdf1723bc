"""Result types shared by every probe, explainer, report and dashboard page.

Metrics describe themselves (ferret style): a :class:`MetricInfo` carries the name, what it
means, its ideal value and direction, so reports and the dashboard colour a number from the
metadata instead of hard-coding it twice. Every reported number is a :class:`MetricValue`
with its uncertainty (lm-evaluation-harness style: standard errors / CIs computed centrally
in :mod:`audit.stats`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd

from audit import views


@dataclass(frozen=True)
class MetricInfo:
    """Self-description of a metric.

    ``ideal`` is the value an unbiased / perfectly faithful model would get. ``higher_is_better``
    is ``True`` or ``False`` for monotone metrics and ``None`` when the ideal lies inside the
    range (e.g. CrowS-Pairs' 50 %): then distance to ``ideal`` is what matters.
    """

    name: str
    description: str
    ideal: float | None = None
    higher_is_better: bool | None = None
    unit: str = ""
    range: tuple[float, float] | None = None
    reference: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["range"] = list(self.range) if self.range is not None else None
        return d


def _clean(x: Any) -> Any:
    """JSON-safe float: NaN/inf become None."""
    if x is None or isinstance(x, (bool, str)):
        return x
    try:
        f = float(x)
    except (TypeError, ValueError):
        return x
    if math.isnan(f) or math.isinf(f):
        return None
    if isinstance(x, int) or (hasattr(x, "dtype") and "int" in str(getattr(x, "dtype", ""))):
        return int(x)
    return f


@dataclass
class MetricValue:
    """A number with the uncertainty a reader needs to trust it.

    ``ci_low``/``ci_high`` bound a 95 % interval (method in ``ci_method``); ``p_value`` tests the
    null hypothesis named in ``test`` ("no bias" in the probe's sense).
    """

    value: float
    ci_low: float | None = None
    ci_high: float | None = None
    n: int | None = None
    p_value: float | None = None
    ideal: float | None = None
    higher_is_better: bool | None = None
    test: str = ""
    ci_method: str = ""
    description: str = ""
    unit: str = ""
    warning: str = ""

    @classmethod
    def from_info(cls, info: MetricInfo, value: float, **kw: Any) -> MetricValue:
        return cls(
            value=value,
            ideal=info.ideal,
            higher_is_better=info.higher_is_better,
            description=info.description,
            unit=info.unit,
            **kw,
        )

    def to_dict(self) -> dict[str, Any]:
        return {k: _clean(v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MetricValue:
        kw = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        if kw.get("value") is None:
            kw["value"] = float("nan")
        return cls(**kw)


@dataclass
class ProbeResult:
    """What a probe returns: summary metrics, one row per item, per-category breakdown.

    ``breakdown`` is a long table with columns ``group_by, group, metric, value, ci_low,
    ci_high, n, p_value, p_adjusted`` (p-values corrected across groups, Benjamini–Hochberg).
    ``item_effect`` names the numeric item column that measures each item's bias (reports rank
    items by its magnitude, ``taudit compare`` pairs it); ``item_text`` names the columns that
    identify and show an item. The run directory stores both in the summary's ``info``
    (:meth:`audit.store.RunDir.write_probe`); readers pass over a named column the table lacks.
    """

    probe: str
    summary: dict[str, MetricValue]
    items: pd.DataFrame
    breakdown: pd.DataFrame = field(default_factory=pd.DataFrame)
    warnings: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    item_effect: str | None = None
    item_text: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        """Refuse item fields that are not column names, an item effect column of the items
        table that is not numeric, and the fields given as ``info`` keys."""
        where = f"probe {self.probe}"
        moved = [k for k in ("item_effect", "item_text") if k in self.info]
        if moved:
            raise ValueError(f"{where}: {', '.join(moved)} is a ProbeResult field, not an info key")
        if not (self.item_effect is None or isinstance(self.item_effect, str)):
            raise ValueError(f"{where}: item_effect must name one item column, not {type(self.item_effect).__name__}")
        if not (isinstance(self.item_text, list) and all(isinstance(c, str) for c in self.item_text)):
            raise ValueError(f"{where}: item_text must be a list of item column names, not {self.item_text!r}")
        col = self.items.get(self.item_effect) if self.item_effect is not None else None
        if col is not None and not pd.api.types.is_numeric_dtype(col):
            raise ValueError(f"{where}: item_effect column {self.item_effect!r} is not numeric ({col.dtype}): "
                             "reports rank items by its magnitude")

    def summary_dict(self) -> dict[str, Any]:
        return {k: v.to_dict() for k, v in self.summary.items()}

    def __repr__(self) -> str:  # pragma: no cover - convenience only
        parts = ", ".join(f"{k}={views.fmt_num(v.value)}" for k, v in self.summary.items())
        return f"ProbeResult({self.probe}: {parts}; {len(self.items)} items)"

    def _repr_html_(self) -> str:
        """Jupyter's rich display through the report's own fragments (audit/templates): the
        metrics table (value, 95 % CI, n, p, ideal, reading, meaning, warning), the warnings and
        the per-category breakdown, as in ``report.html``. Every string is escaped (autoescape)."""
        metrics = [views.metric_entry(k, m.to_dict()) for k, m in self.summary.items()]
        breakdown, note = views.breakdown_rows(self.breakdown.to_dict(orient="records"))
        return views.environment().get_template("probe_result.html.j2").render(
            probe=self.probe, n_items=len(self.items), metrics=metrics, breakdown=breakdown,
            top_items=views.top_items(self.items, self.item_effect, self.item_text),
            breakdown_note=note, warnings=views.probe_warnings(self.warnings, metrics))
