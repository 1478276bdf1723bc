"""Bias page: per probe, each metric with its CI against the ideal, the per-category breakdown and
the item table (sortable, filterable, searchable, downloadable)."""

from __future__ import annotations

import streamlit as st

from audit.results import MetricValue
from audit.views import probe_warnings
from dashboard.data import (
    ProbeData,
    RunsRoot,
    category_columns,
    filter_items,
    item_table,
    metrics_frame,
)
from dashboard.render import (
    breakdown_chart,
    fmt,
    md_escape,
    metric_caption,
    metric_chart,
    metric_delta,
)
from dashboard.state import page_run, probe


def show_metrics(metrics: dict[str, MetricValue]) -> None:
    cols = st.columns(min(4, max(1, len(metrics))))
    for i, (name, m) in enumerate(metrics.items()):
        with cols[i % len(cols)]:
            # label and value are Markdown in Streamlit (images and links included): the unit is data
            st.metric(md_escape(name), md_escape(fmt(m.value, m.unit)), delta=metric_delta(m), delta_color="off",
                      help=md_escape(m.description) if m.description else None)
            st.caption(md_escape(metric_caption(m)))
    chart = metric_chart(metrics)
    if chart is not None:
        st.altair_chart(chart, width="stretch")
        st.caption("Dot: value; bar: 95% CI; dashed line: the metric's declared ideal. Orange when the CI "
                   "excludes the ideal, blue when it covers it.")
    with st.expander("All metric fields"):
        st.dataframe(metrics_frame(metrics), hide_index=True, width="stretch")


def show_breakdown(p: ProbeData, key: str) -> None:
    bd = p.breakdown
    if bd.empty or not {"group", "metric", "value"} <= set(bd.columns):
        st.caption("No per-category breakdown stored for this probe.")
        return
    st.markdown("**Per category**")
    metrics = [str(m) for m in bd["metric"].dropna().unique()]
    metric = st.selectbox("Breakdown metric", metrics, key=f"{key}:bd_metric") if len(metrics) > 1 else metrics[0]
    sub = bd[bd["metric"].astype(str) == metric]
    if "group_by" in sub.columns and sub["group_by"].nunique() > 1:
        gb = st.selectbox("Grouped by", [str(g) for g in sub["group_by"].dropna().unique()], key=f"{key}:bd_by")
        sub = sub[sub["group_by"].astype(str) == gb]
    ideal = p.record.metrics[metric].ideal if metric in p.record.metrics else None
    st.altair_chart(breakdown_chart(sub, ideal, metric), width="stretch")
    st.dataframe(sub, hide_index=True, width="stretch")


def show_items(p: ProbeData, key: str) -> None:
    if p.items is None:
        st.warning(md_escape(p.items_message or "No item table stored."))
        return
    df = item_table(p)
    st.markdown(f"**Items** ({len(df)})")
    eff = p.effect_column
    if eff:
        st.caption(f"Sorted by |{md_escape(eff)}| (largest first) — the per-item effect this probe declares.")
    filters: dict[str, list] = {}
    cats = category_columns(p)
    fcols = st.columns(max(1, len(cats) + 1))
    search = fcols[0].text_input("Search text", key=f"{key}:search",
                                 help="Case-insensitive substring in the item's text columns")
    for c, col in zip(cats, fcols[1:], strict=False):
        levels = sorted(df[c].dropna().astype(str).unique()) if df[c].dtype != bool else [True, False]
        vals = col.multiselect(md_escape(c), levels, key=f"{key}:f:{c}")
        if vals:
            filters[c] = vals if df[c].dtype == bool else [v for v in df[c].unique() if str(v) in vals]
    view = filter_items(df, filters, search, p.text_columns or None)
    scol, ocol = st.columns([3, 1])
    sort_by = scol.selectbox("Sort by", ["(effect, largest |value| first)"] + list(df.columns),
                             key=f"{key}:sort")
    desc = ocol.toggle("Descending", value=True, key=f"{key}:desc")
    if sort_by in view.columns:
        view = view.sort_values(sort_by, ascending=not desc, kind="stable", na_position="last")
    st.caption(f"{len(view)} of {len(df)} items shown")
    st.dataframe(view, hide_index=True, width="stretch")
    st.download_button("Download items as CSV", view.to_csv(index=False).encode("utf-8"),
                       file_name=f"{p.record.name}_items.csv", mime="text/csv", key=f"{key}:csv")


def show_probe(rr: RunsRoot, run_id: str, name: str) -> None:
    p = probe(rr, run_id, name)
    rec = p.record
    if not rec.complete:
        (st.info if rec.status in ("running", "pending") else st.warning)(md_escape(p.message or rec.status))
        return
    if p.message:
        st.warning(md_escape(p.message))
    notes = probe_warnings(rec.warnings, [{"name": k, "warning": m.warning} for k, m in rec.metrics.items()])
    if notes:  # one compact notice per probe, not one banner per warning and again per metric
        st.warning(f"**{len(notes)} caveat(s) for {md_escape(name)}** (small samples make intervals rough): "
                   + " · ".join(md_escape(w) for w in notes))
    key = f"{run_id}:{name}"
    if rec.metrics:
        show_metrics(rec.metrics)
    else:
        st.info("This probe stored no summary metrics.")
    show_breakdown(p, key)
    show_items(p, key)


rr, info = page_run("Bias", "bias_run")
names = rr.view(info.run_id, info.manifest).probe_names()
if not names:
    st.info("This run has no probe results yet.")
    st.stop()
status = {n: probe(rr, info.run_id, n).record.status for n in names}
tabs = st.tabs([md_escape(f"{n} ({s})" if s != "complete" else n) for n, s in status.items()])
for tab, name in zip(tabs, names, strict=True):
    with tab:
        show_probe(rr, info.run_id, name)
