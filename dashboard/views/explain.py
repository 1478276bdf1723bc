"""Explain page: stored attributions of a run — token heatmaps per method, attention per layer and
head (a grid of small maps and one large selectable map), rollout and other matrices, each beside
its faithfulness metrics."""

from __future__ import annotations

from functools import partial

import pandas as pd
import streamlit as st

from audit.metrics.info import METRICS
from audit.results import MetricValue
from audit.views import direction_text
from dashboard.data import ExplainData, example_texts
from dashboard.explain_view import show_method
from dashboard.render import curve_chart, fmt, fmt_interval, md_escape
from dashboard.state import explanation, page_run


def direction(metric: str, stored: MetricValue | None = None) -> str:
    """'higher' / 'lower' / 'closer to X' from the metric's own declaration (audit.metrics.info),
    else from the ``stored`` value's; "" when neither says."""
    info = METRICS.get(metric.split(":")[0]) or stored
    text = direction_text(info.ideal, info.higher_is_better) if info is not None else ""
    return "" if text == direction_text(None, None) else text


def show_method_metrics(ed: ExplainData, example: int, method: str) -> None:
    """This example's metrics (metrics.parquet), the method's metrics over all examples
    (summary.json, with CIs) and the curves (k = fraction of tokens) in an expander."""
    met = ed.metrics if ed.metrics is not None else pd.DataFrame(columns=["example", "method"])
    rows = met[(met["example"] == example) & (met["method"].astype(str) == method)]
    has_k = rows["k"].notna() if "k" in rows.columns else pd.Series(False, index=rows.index)
    scalars = rows[~has_k].drop(columns=[c for c in ("example", "method", "k") if c in rows.columns])
    scalars = scalars.dropna(axis=1, how="all")
    if len(scalars):
        scalars.insert(2, "better", scalars["metric"].astype(str).map(direction))
        st.markdown("**This example**")
        st.dataframe(scalars, hide_index=True, width="stretch", height=min(400, 36 * (len(scalars) + 1) + 3))
    curves = rows[has_k]
    if len(curves):
        with st.expander(f"Curves of {md_escape(method)} (k = fraction of tokens)"):
            for metric, df in curves.groupby("metric", sort=False):
                st.altair_chart(curve_chart(df.sort_values("k"), f"{metric} ({direction(str(metric))})"),
                                width="stretch")
    agg = ed.record.method_metrics.get(method) or {}
    if agg:
        st.markdown("**All examples** (mean and 95% CI)")
        table = pd.DataFrame([{
            "metric": name, "value": fmt(m.value, m.unit), "95% CI": fmt_interval(m.ci_low, m.ci_high),
            "n": m.n, "better": direction(name, m),
            "warning": m.warning,
        } for name, m in agg.items()])
        st.dataframe(table.loc[:, (table != "").any()], hide_index=True, width="stretch",
                     height=min(400, 36 * (len(table) + 1) + 3))
    if not (len(rows) or agg):
        st.caption("No faithfulness metrics stored for this method.")


rr, info = page_run("Explain", "explain_run")
names = rr.view(info.run_id, info.manifest).explain_names()
if not names:
    st.info("This run stored no explanations (add an `explain:` section to the audit config).")
    st.stop()
name = st.selectbox("Explanation", names, key=f"{info.run_id}:explain_name")
ed = explanation(rr, info.run_id, name)
rec = ed.record
if not rec.complete:
    (st.info if rec.status in ("running", "pending", "not started") else st.warning)(md_escape(ed.message or rec.status))
    st.stop()
if ed.message:
    st.warning(md_escape(ed.message))
for w in rec.warnings:
    st.warning(md_escape(w))
if ed.attributions is None or ed.attributions.empty:
    st.info("No attributions stored in this explanation.")
    st.stop()
attr = ed.attributions
texts = example_texts(attr)
example = st.selectbox("Example", list(texts), key=f"{info.run_id}:{name}:example",
                       format_func=lambda e: f"{e}: {texts[e][:90]}")
st.text(texts[example])
rows = attr[attr["example"] == example]
methods = [str(m) for m in dict.fromkeys(rows["method"].astype(str))]
if not any("rollout" in m for m in methods):
    st.caption("No attention rollout stored for this example.")
for method in methods:
    show_method(method, rows[rows["method"].astype(str) == method], f"{info.run_id}:{name}:{example}:{method}",
                partial(show_method_metrics, ed, example, method))
