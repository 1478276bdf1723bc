"""HTML fragments shared by the reports and the notebook views (Jinja2, autoescaped).

One probe's metrics table (value, 95 % CI, n, p, ideal, reading, meaning and warning), its
warnings, its per-category breakdown table and a token heat map are macros in
``audit/templates/fragments.html.j2``. ``reports`` renders its probe and explanation sections
through them, and :meth:`audit.results.ProbeResult._repr_html_` and
:meth:`audit.explain.attributions.Attributions._repr_html_` render through the same macros, so a
number reads the same in a notebook as in ``report.html``. This module holds the row builders
(stored ``MetricValue`` / breakdown records → display rows) and the filters the macros use; it
lives in ``audit`` because ``audit`` may not import ``reports``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd
from jinja2 import BaseLoader, ChoiceLoader, Environment, PackageLoader, StrictUndefined

MAX_BREAKDOWN_ROWS = 300
TOP_ITEMS = 10
MAX_TEXT = 400

_METRIC_FIELDS = ("value", "ci_low", "ci_high", "n", "p_value", "ideal", "higher_is_better", "test",
                  "ci_method", "description", "unit", "warning")
_BREAKDOWN_FIELDS = ("group_by", "group", "metric", "value", "ci_low", "ci_high", "n", "p_value", "p_adjusted")


# -- values ------------------------------------------------------------------------------------

def py(x: Any) -> Any:
    """A JSON-safe Python value: numpy scalars unwrapped, NaN/inf → None, containers recursed."""
    if isinstance(x, Mapping):
        return {str(k): py(v) for k, v in x.items()}
    if isinstance(x, (list, tuple, set)):
        return [py(v) for v in x]
    if hasattr(x, "tolist") and not isinstance(x, (str, bytes)):
        return py(x.tolist())
    if isinstance(x, bool) or x is None or isinstance(x, str):
        return x
    if isinstance(x, int):
        return int(x)
    if isinstance(x, float):
        return None if math.isnan(x) or math.isinf(x) else float(x)
    if x is pd.NA or x is pd.NaT:
        return None
    return str(x)


def finite(x: Any) -> float | None:
    """``x`` as a float, or ``None`` when it is missing, not a number, NaN or infinite."""
    try:
        f = float(x)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) or math.isinf(f) else f


def clip(s: Any, n: int = MAX_TEXT) -> str:
    """``s`` as text of at most ``n`` characters (an ellipsis marks a cut)."""
    t = "" if s is None else str(s)
    return t if len(t) <= n else t[: n - 1] + "…"


def direction_text(ideal: float | None, hib: bool | None) -> str:
    """How to read a metric, from its stored ``ideal`` and ``higher_is_better``."""
    if hib is True:
        return "higher is better"
    if hib is False:
        return "lower is better"
    if ideal is not None:
        return f"closer to {ideal:g} is better"
    return "no ideal declared"


def metric_entry(name: str, d: Mapping[str, Any]) -> dict[str, Any]:
    """A stored MetricValue dict as a display row (with its reading direction spelled out)."""
    m = {k: py(d.get(k)) for k in _METRIC_FIELDS}
    m["name"] = name
    for k in ("value", "ci_low", "ci_high", "p_value", "ideal"):
        m[k] = finite(m[k])
    m["n"] = int(m["n"]) if finite(m["n"]) is not None else None
    hib = m["higher_is_better"]
    m["higher_is_better"] = hib if isinstance(hib, bool) else None
    for k in ("test", "ci_method", "description", "unit", "warning"):
        m[k] = "" if m[k] is None else str(m[k])
    m["direction"] = direction_text(m["ideal"], m["higher_is_better"])
    return m


def breakdown_row(r: Mapping[str, Any]) -> dict[str, Any]:
    """A stored breakdown row (parquet or summary.json) with numbers as floats/ints and labels as text."""
    row = {k: py(r.get(k)) for k in _BREAKDOWN_FIELDS}
    for k in ("value", "ci_low", "ci_high", "p_value", "p_adjusted"):
        row[k] = finite(row[k])
    row["n"] = int(row["n"]) if finite(row["n"]) is not None else None
    for k in ("group_by", "group", "metric"):
        row[k] = "" if row[k] is None else str(row[k])
    return row


def breakdown_rows(records: Iterable[Mapping[str, Any]], note: str = "") -> tuple[list[dict[str, Any]], str]:
    """Display rows of a breakdown, at most :data:`MAX_BREAKDOWN_ROWS`, and the note that says so."""
    rows = [breakdown_row(r) for r in records]
    if len(rows) > MAX_BREAKDOWN_ROWS:
        note = f"{len(rows)} breakdown rows; the first {MAX_BREAKDOWN_ROWS} are shown"
        rows = rows[:MAX_BREAKDOWN_ROWS]
    return rows, note


def probe_warnings(warnings: Iterable[Any], metrics: Iterable[Mapping[str, Any]]) -> list[str]:
    """A probe's warnings, then each metric's own warning as ``name: warning``, without repeats."""
    out = [str(w) for w in warnings] + [f"{m['name']}: {m['warning']}" for m in metrics if m["warning"]]
    return list(dict.fromkeys(out))


def category_columns(items: pd.DataFrame, exclude: set[str]) -> list[str]:
    """Short categorical string columns (e.g. bias_type) worth showing beside an item."""
    cols = []
    for c in items.columns:
        if c in exclude or not (items[c].dtype == object or pd.api.types.is_string_dtype(items[c])):
            continue
        s = items[c].dropna()
        if len(s) and all(isinstance(v, str) for v in s) and s.nunique() <= 20 and s.str.len().max() <= 40:
            cols.append(str(c))
    return cols[:2]


def top_items(items: pd.DataFrame | None, effect: str | None, text_cols: list[str],
              missing: str = "no item table") -> dict[str, Any]:
    """The :data:`TOP_ITEMS` items with the largest |effect| (the probe's ``item_effect`` column),
    with their texts (its ``item_text`` columns) and up to two category columns; ``missing`` is the
    note when ``items`` is None."""
    out: dict[str, Any] = {"effect_column": effect, "text_columns": text_cols, "category_columns": [],
                           "rows": [], "n_items": None, "note": ""}
    if items is None:
        out["note"] = missing
        return out
    out["n_items"] = int(len(items))
    if not effect:
        out["note"] = "the probe names no item effect column (item_effect), so items are not ranked"
        return out
    if effect not in items.columns:
        out["note"] = f"item effect column {effect!r} is not in items.parquet"
        return out
    text_cols = [c for c in text_cols if c in items.columns]
    out["text_columns"] = text_cols
    cats = category_columns(items, {effect, *text_cols})
    out["category_columns"] = cats
    eff = pd.to_numeric(items[effect], errors="coerce")
    order = eff.abs().sort_values(ascending=False, na_position="last").index[:TOP_ITEMS]
    for rank, idx in enumerate(order, 1):
        row = items.loc[idx]
        out["rows"].append({
            "rank": rank,
            "index": py(idx),
            "effect": finite(eff.loc[idx]),
            "texts": {c: clip(row[c]) for c in text_cols},
            "categories": {c: clip(row[c], 60) for c in cats},
        })
    return out


# -- numbers: the one formatter of reports, dashboard, console and ``taudit compare`` -----------

def fmt_num(x: Any, unit: str = "") -> str:
    """A number as every output prints it: 4 significant digits, integers with thousands
    separators, ``—`` when missing or NaN, then ``unit`` (``%`` without a space); text as it is."""
    if x is None or isinstance(x, str):
        return x or "—"
    if isinstance(x, bool):
        return str(x)
    if isinstance(x, numbers.Integral):
        s = f"{x:,}"
    else:
        try:
            f = float(x)
        except (TypeError, ValueError):
            return str(x)
        if math.isnan(f):
            return "—"
        s = f"{f:.4g}"
    return s + (unit if unit in ("", "%") else f" {unit}")


def fmt_pval(x: Any) -> str:
    """A p-value: ``< 0.001`` below that, else 3 significant digits (``—`` when missing or NaN)."""
    try:
        f = float(x)
    except (TypeError, ValueError):
        return "—" if x is None else str(x)
    return "—" if math.isnan(f) else "< 0.001" if f < 0.001 else f"{f:.3g}"


def fmt_interval(lo: Any, hi: Any) -> str:
    """``[lo, hi]`` by :func:`fmt_num` (``—`` when a bound is missing)."""
    return "—" if lo is None or hi is None else f"[{fmt_num(lo)}, {fmt_num(hi)}]"


def fmt_ci(d: Mapping[str, Any]) -> str:
    """The 95 % interval of a metric or breakdown row (its ``ci_low`` and ``ci_high``)."""
    return fmt_interval(d.get("ci_low"), d.get("ci_high"))


def absmax(xs: Iterable[float | None]) -> float:
    vals = [abs(v) for v in xs if v is not None and math.isfinite(v)]
    return max(vals) if vals else 0.0


def token_colour(score: float | None, scale: float) -> str:
    """CSS background for one token: vermillion for positive, blue for negative attribution
    (Okabe–Ito colours, readable with colour-vision deficiency); transparent without a score."""
    if score is None or not math.isfinite(score) or scale <= 0:
        return "background-color: transparent"
    a = min(abs(score) / scale, 1.0) * 0.85
    rgb = (213, 94, 0) if score > 0 else (0, 114, 178)
    fg = "#ffffff" if a > 0.55 else "#000000"
    return f"background-color: rgba({rgb[0]}, {rgb[1]}, {rgb[2]}, {a:.3f}); color: {fg}"


def token_heat_html(tokens: Iterable[Any], scores: Iterable[float | None], label: str = "") -> str:
    """One labelled token heat map (the dashboard's stored attributions): the report's
    ``token_heat`` fragment with its colour legend and numeric range, scaled by max |score|; its
    CSS applies inside the block only, and every token and the label are escaped."""
    vals = [finite(v) for v in scores]
    scale = absmax(vals)
    return environment().get_template("token_heat.html.j2").render(
        tokens=[str(t) for t in tokens], scores=vals, scale=scale, label=label,
        low=f"{-scale:+.3g}", high=f"{scale:+.3g}")


def environment(*loaders: BaseLoader) -> Environment:
    """An autoescaping environment that finds ``loaders``' templates first, then
    ``audit/templates`` (the shared fragments), with the filters the fragments use."""
    env = Environment(loader=ChoiceLoader([*loaders, PackageLoader("audit", "templates")]), autoescape=True,
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(num=fmt_num, pval=fmt_pval, ci=fmt_ci, absmax=absmax)
    env.globals["token_style"] = token_colour
    return env
