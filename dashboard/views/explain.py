"""Explain page: stored attributions of a run — token heatmaps per method, attention per layer and
head (a grid of small maps and one large selectable map), rollout and other matrices, each beside
its faithfulness metrics."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard.data import (
    ExplainData,
    example_texts,
    explain_names,
    matrix,
    method_shape,
    token_scores,
)
from dashboard.render import (
    attention_grid_chart,
    curve_chart,
    fmt,
    heatmap_chart,
    matrix_long,
    md_escape,
    metric_caption,
    token_heatmap_html,
)
from dashboard.state import explanation, get_root, no_runs, pick_run, run_infos, show_run_state

GRID_MAX_MAPS = 48


def show_method_metrics(ed: ExplainData, example: int, method: str, key: str) -> None:
    """Per-example metrics from metrics.parquet and the method's aggregate metrics from summary.json."""
    shown = False
    agg = ed.method_metrics.get(method) or {}
    for name, m in agg.items():
        st.markdown(f"**{md_escape(name)}** (all examples): {md_escape(fmt(m.value, m.unit))}")
        st.caption(md_escape(metric_caption(m)))
        if m.warning:
            st.warning(md_escape(m.warning))
        shown = True
    if ed.metrics is not None:
        rows = ed.metrics[(ed.metrics["example"] == example) & (ed.metrics["method"].astype(str) == method)]
        has_k = rows["k"].notna() if "k" in rows.columns else pd.Series(False, index=rows.index)
        scalars = rows[~has_k].drop(columns=[c for c in ("example", "method", "k") if c in rows.columns])
        scalars = scalars.dropna(axis=1, how="all")
        if len(scalars):
            st.dataframe(scalars, hide_index=True, width="stretch")
            shown = True
        curves = rows[has_k]
        for metric, df in curves.groupby("metric", sort=False):
            st.altair_chart(curve_chart(df.sort_values("k"), str(metric)), width="stretch")
            shown = True
    if not shown:
        st.caption("No faithfulness metrics stored for this method.")


def token_section(ed: ExplainData, rows: pd.DataFrame, example: int, methods: list[str]) -> None:
    st.subheader("Token attributions")
    for method in methods:
        mrows = rows[rows["method"].astype(str) == method]
        ts = token_scores(mrows)
        left, right = st.columns([3, 2])
        with left:
            targets = sorted({str(t) for t in mrows.get("target", pd.Series(dtype=str)).dropna() if str(t)})
            label = f"{method}" + (f" — target: {', '.join(targets)}" if targets else "")
            st.html(token_heatmap_html(list(ts["token"]), list(ts["score"]), label))
            with st.expander(f"Scores of {md_escape(method)}"):
                st.dataframe(ts, hide_index=True, width="stretch")
        with right:
            show_method_metrics(ed, example, method, f"{example}:{method}")


def _tokens(rows: pd.DataFrame, col: str = "token_index") -> dict[int, str]:
    t = rows.drop_duplicates(col)
    return {int(i): str(x) for i, x in zip(t[col], t["token"], strict=True)}


def matrix_section(ed: ExplainData, rows: pd.DataFrame, example: int, methods: list[str], shapes: dict[str, str]) -> None:
    st.subheader("Rollout and attribution matrices")
    for method in methods:
        mrows = rows[rows["method"].astype(str) == method]
        if shapes[method] == "generation":
            mat = matrix(mrows, "target_index", "token_index")
            row_tokens = {int(i): str(i) for i in mat.index}
            if "target_token" in mrows.columns:
                row_tokens = {int(i): str(t) for i, t in mrows.drop_duplicates("target_index")[["target_index", "target_token"]].itertuples(index=False)}
            chart = heatmap_chart(matrix_long(mat, row_tokens, _tokens(mrows)), method, "generated token",
                                  "source token", diverging=True)
        else:
            if shapes[method] == "layers":
                last = mrows["layer"].max()
                mrows = mrows[mrows["layer"] == last]
            mat = matrix(mrows)
            tok = _tokens(mrows)
            chart = heatmap_chart(matrix_long(mat, tok, tok), method)
        left, right = st.columns([3, 2])
        with left:
            st.altair_chart(chart)
        with right:
            show_method_metrics(ed, example, method, f"{example}:{method}")


def attention_section(ed: ExplainData, rows: pd.DataFrame, example: int, method: str, key: str) -> None:
    st.subheader(f"Attention per layer and head ({method})")
    mrows = rows[rows["method"].astype(str) == method].dropna(subset=["layer", "head", "source_index"])
    layers = sorted(int(x) for x in mrows["layer"].unique())
    heads = sorted(int(x) for x in mrows["head"].unique())
    tok = _tokens(mrows)
    default_layers = layers if len(layers) * len(heads) <= GRID_MAX_MAPS else layers[: max(1, GRID_MAX_MAPS // len(heads))]
    grid_layers = st.multiselect("Layers in the grid", layers, default=default_layers, key=f"{key}:grid_layers")
    if grid_layers:
        st.altair_chart(attention_grid_chart(mrows[mrows["layer"].isin(grid_layers)]))
        st.caption("Each small map: rows are the attending token, columns the token attended to.")
    c1, c2 = st.columns(2)
    layer = c1.selectbox("Layer", layers, key=f"{key}:layer")
    head = c2.selectbox("Head", ["mean over heads", *heads], key=f"{key}:head")
    sel = mrows[mrows["layer"] == layer]
    if head != "mean over heads":
        sel = sel[sel["head"] == head]
    left, right = st.columns([3, 2])
    with left:
        st.altair_chart(heatmap_chart(matrix_long(matrix(sel), tok, tok), f"layer {layer}, head {head}", size=440))
    with right:
        show_method_metrics(ed, example, method, f"{key}:m")


st.title("Explain")
rr = get_root()
infos = run_infos(rr)
info = pick_run("Run", infos, 0, "explain_run")
if info is None:
    no_runs(rr)
    st.stop()
show_run_state(info)
names = explain_names(rr, info.run_id, info.manifest)
if not names:
    st.info("This run stored no explanations (add an `explain:` section to the audit config).")
    st.stop()
name = st.selectbox("Explanation", names, key=f"{info.run_id}:explain_name")
ed = explanation(rr, info.run_id, name)
if not ed.complete:
    (st.info if ed.status in ("running", "pending", "missing") else st.warning)(md_escape(ed.message or ed.status))
    st.stop()
if ed.message:
    st.warning(md_escape(ed.message))
for w in ed.warnings:
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
shapes = {m: method_shape(rows[rows["method"].astype(str) == m]) for m in methods}
token_methods = [m for m in methods if shapes[m] == "tokens"]
matrix_methods = [m for m in methods if shapes[m] in ("matrix", "generation", "layers")]
head_methods = [m for m in methods if shapes[m] == "heads"]

if token_methods:
    token_section(ed, rows, example, token_methods)
if matrix_methods:
    matrix_section(ed, rows, example, matrix_methods, shapes)
if not any("rollout" in m for m in methods):
    st.caption("No attention rollout stored for this example.")
for m in head_methods:
    attention_section(ed, rows, example, m, f"{info.run_id}:{name}:{example}:{m}")
