"""Charts and escaped Markdown for the dashboard pages (no Streamlit calls here, so it is testable).

Colours come from each metric's own metadata (``ideal``, ``higher_is_better`` — ferret style), never
from a per-probe table. Palettes are colour-blind safe (Okabe–Ito for categories; blue–orange
diverging scale for signed attributions, Wong 2011). Every string that came from a model or a
dataset goes through :func:`md_escape` (Markdown); token heat maps are the report's own fragment
(:func:`audit.views.token_heat_html`, autoescaped by Jinja2).
"""

from __future__ import annotations

import math
import re
from typing import Any, cast

import altair as alt
import numpy as np
import pandas as pd

from audit.results import MetricValue
from audit.views import fmt_interval
from audit.views import fmt_num as fmt
from audit.views import fmt_pval as fmt_p

# Okabe–Ito
BLUE = "#0072B2"
VERMILION = "#D55E00"
GREY = "#666666"

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:=&\"'])")


def md_escape(text: Any) -> str:
    """Text safe to put inside Streamlit Markdown: every ASCII punctuation mark backslash-escaped.

    Stops dataset strings from becoming links, images, emphasis, HTML or ``:color[...]`` directives.
    """
    s = str(text).replace("\r", " ").replace("\n", " ")
    return _MD_SPECIAL.sub(r"\\\1", s)


def ci_excludes_ideal(m: MetricValue) -> bool | None:
    """True when the 95 % CI lies wholly on one side of the ideal (None when either is unknown)."""
    if m.ideal is None or m.ci_low is None or m.ci_high is None:
        return None
    return not (m.ci_low <= m.ideal <= m.ci_high)


def metric_caption(m: MetricValue) -> str:
    """One plain-text line: CI, ideal and direction, n, p and the test."""
    parts = []
    if m.ci_low is not None and m.ci_high is not None:
        parts.append(f"95% CI {fmt_interval(m.ci_low, m.ci_high)}" + (f" ({m.ci_method})" if m.ci_method else ""))
    if m.ideal is not None:
        parts.append(f"ideal {fmt(m.ideal)}")
    if m.higher_is_better is not None:
        parts.append("higher is better" if m.higher_is_better else "lower is better")
    if m.n is not None:
        parts.append(f"n = {m.n}")
    if m.p_value is not None:
        parts.append(f"p = {fmt_p(m.p_value)}" + (f" ({m.test})" if m.test else ""))
    return " · ".join(parts)


def metric_delta(m: MetricValue) -> str | None:
    """Distance to the ideal as a signed string for st.metric (None when no ideal is declared)."""
    if m.ideal is None or m.value is None or math.isnan(m.value):
        return None
    return f"{m.value - m.ideal:+.4g} vs ideal {fmt(m.ideal)}"


def metric_chart(metrics: dict[str, MetricValue]) -> alt.VConcatChart | None:
    """One row per metric: point estimate, 95 % CI and the ideal, each row on its own scale."""
    charts = []
    colour = alt.Color("state:N", title="", scale=alt.Scale(
        domain=["CI excludes the ideal", "CI covers the ideal", "no ideal or CI"], range=[VERMILION, BLUE, GREY]))
    for k, m in metrics.items():
        if m.value is None or math.isnan(m.value):
            continue
        off = ci_excludes_ideal(m)
        r: dict[str, Any] = {
            "metric": k, "value": m.value, "ci_low": m.ci_low if m.ci_low is not None else m.value,
            "ci_high": m.ci_high if m.ci_high is not None else m.value, "ideal": m.ideal, "unit": m.unit,
            "state": "CI excludes the ideal" if off else ("CI covers the ideal" if off is False else "no ideal or CI")}
        df = pd.DataFrame([r])
        lo = min(float(v) for v in (r["ci_low"], r["value"], r["ideal"]) if v is not None)
        hi = max(float(v) for v in (r["ci_high"], r["value"], r["ideal"]) if v is not None)
        pad = (hi - lo) * 0.15 or abs(hi) * 0.1 or 1.0
        title = f"{r['metric']}" + (f" ({r['unit']})" if r["unit"] else "")
        scale = alt.Scale(domain=[lo - pad, hi + pad], nice=False)
        base = alt.Chart(df)
        ci = base.mark_rule(strokeWidth=3).encode(x=alt.X("ci_low:Q", scale=scale, title=title),
                                                  x2="ci_high:Q", color=colour)
        pt = base.mark_point(filled=True, size=90).encode(
            x=alt.X("value:Q", scale=scale, title=title), color=colour,
            tooltip=[alt.Tooltip("metric:N"), alt.Tooltip("value:Q", format=".4g"),
                     alt.Tooltip("ci_low:Q", format=".4g"), alt.Tooltip("ci_high:Q", format=".4g"),
                     alt.Tooltip("ideal:Q", format=".4g")])
        layers: list[Any] = [ci, pt]
        if r["ideal"] is not None:
            layers.append(base.mark_rule(strokeDash=[4, 3], color="black").encode(x="ideal:Q"))
        charts.append(alt.layer(*layers).properties(height=40, width="container"))
    if not charts:
        return None
    return alt.vconcat(*charts).resolve_scale(x="independent").configure_legend(orient="top", title=None)


def breakdown_chart(bd: pd.DataFrame, ideal: float | None, title: str) -> alt.LayerChart:
    """Value and CI per group for one metric of the breakdown, with the ideal as a dashed line."""
    df = bd.copy()
    df["group"] = df["group"].astype(str)
    for c in ("ci_low", "ci_high"):
        df[c] = df[c].fillna(df["value"]) if c in df.columns else df["value"]
    if "n" not in df.columns:
        df["n"] = None
    y = alt.Y("group:N", sort=None, title="")
    base = alt.Chart(df)
    layers: list[Any] = [
        base.mark_rule(strokeWidth=3, color=BLUE).encode(x=alt.X("ci_low:Q", title=title), x2="ci_high:Q", y=y),
        base.mark_point(filled=True, size=80, color=BLUE).encode(
            x="value:Q", y=y, tooltip=["group:N", alt.Tooltip("value:Q", format=".4g"), "n:Q"]),
    ]
    if ideal is not None:
        layers.append(alt.Chart(pd.DataFrame({"ideal": [ideal]})).mark_rule(strokeDash=[4, 3], color="black").encode(x="ideal:Q"))
    return cast(alt.LayerChart, alt.layer(*layers).properties(height=alt.Step(26), width="container"))


def matrix_long(mat: pd.DataFrame, row_tokens: dict[int, str], col_tokens: dict[int, str]) -> pd.DataFrame:
    """A matrix (index rows, columns sources) as a long frame with readable, unique axis labels."""
    long = mat.stack().reset_index()
    long.columns = ["row", "col", "score"]
    for side, tokens in (("row", row_tokens), ("col", col_tokens)):
        labels = {i: f"{i}:{t}" for i, t in tokens.items()}
        long[f"{side}_label"] = [labels.get(int(i), str(i)) for i in long[side]]
    return long


def heatmap_chart(long: pd.DataFrame, title: str, row_title: str = "token", col_title: str = "attends to",
                  size: int = 380, diverging: bool = False) -> alt.Chart:
    """One large matrix heatmap with token labels (Vega draws labels as text, not HTML).

    Each row and column gets at least 22 px so every token label is drawn (up to 900 px).
    """
    rows = list(dict.fromkeys(long.sort_values("row")["row_label"]))
    cols = list(dict.fromkeys(long.sort_values("col")["col_label"]))
    width = min(900, max(size, 22 * len(cols)))
    height = min(900, max(size, 22 * len(rows))) if len(rows) > 4 else 40 * len(rows) + 20
    if diverging:
        m = float(np.nanmax(np.abs(long["score"]))) if len(long) else 1.0
        scale = alt.Scale(scheme="blueorange", domain=[-m, m])
    else:
        scale = alt.Scale(scheme="blues")
    return alt.Chart(long).mark_rect().encode(
        x=alt.X("col_label:N", sort=cols, title=col_title, axis=alt.Axis(labelAngle=-60)),
        y=alt.Y("row_label:N", sort=rows, title=row_title),
        color=alt.Color("score:Q", scale=scale, title="score"),
        tooltip=[alt.Tooltip("row_label:N", title=row_title), alt.Tooltip("col_label:N", title=col_title),
                 alt.Tooltip("score:Q", format=".4f")],
    ).properties(title=title, width=width, height=height)


def attention_grid_chart(rows: pd.DataFrame, cell: int = 70) -> alt.FacetChart:
    """Small maps, one per (layer, head): rows are layers, columns heads."""
    df = rows[["layer", "head", "token_index", "source_index", "score"]].astype(
        {"layer": int, "head": int, "token_index": int, "source_index": int})
    return alt.Chart(df).mark_rect().encode(
        x=alt.X("source_index:O", axis=None),
        y=alt.Y("token_index:O", axis=None),
        color=alt.Color("score:Q", scale=alt.Scale(scheme="blues"), legend=None),
        tooltip=["layer:O", "head:O", "token_index:O", "source_index:O", alt.Tooltip("score:Q", format=".3f")],
    ).properties(width=cell, height=cell).facet(
        row=alt.Row("layer:O", title="layer"), column=alt.Column("head:O", title="head"), spacing=4,
    )


def curve_chart(df: pd.DataFrame, title: str) -> alt.Chart:
    """A metric curve (value against k), e.g. comprehensiveness at k = 10 %…100 %; one line per
    target when several targets (generated tokens) have curves."""
    enc: dict[str, Any] = {
        "x": alt.X("k:Q", title="k"), "y": alt.Y("value:Q", title="value"),
        "tooltip": [alt.Tooltip("k:Q", format=".3g"), alt.Tooltip("value:Q", format=".4g")],
    }
    if "target_index" in df.columns and df["target_index"].nunique() > 1:
        enc["color"] = alt.Color("target_index:N", title="target position", legend=alt.Legend(orient="bottom"))
    mark = alt.Chart(df).mark_line(point=True, color=alt.Undefined if "color" in enc else BLUE)
    return mark.encode(**enc).properties(title=title, height=160, width="container")
