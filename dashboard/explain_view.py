"""Draw one method's attributions of one example — shared by the Explain and Live pages.

Input is the long table of the run-directory contract (``Attributions.to_frame()`` /
``explain/<name>/attributions.parquet``) restricted to one example and method; the caller draws
the metrics beside it through ``show_metrics``.
"""

from __future__ import annotations

from collections.abc import Callable

import altair as alt
import pandas as pd
import streamlit as st

from audit.views import token_heat_html
from dashboard.data import matrix, method_parts, token_scores
from dashboard.render import (
    attention_grid_chart,
    heatmap_chart,
    matrix_long,
    md_escape,
)

GRID_MAX_MAPS = 48


def _tokens(rows: pd.DataFrame, col: str = "token_index") -> dict[int, str]:
    t = rows.dropna(subset=[col]).drop_duplicates(col)
    return {int(i): str(x) for i, x in zip(t[col], t["token"], strict=True)}


def show_tokens(method: str, rows: pd.DataFrame, key: str) -> None:
    ts = token_scores(rows)
    targets = ", ".join(sorted({str(t) for t in rows["target"].dropna() if str(t)})) if "target" in rows.columns else ""
    label = f"{method}" + (f" — target: {targets}" if targets else "")
    st.html(token_heat_html(list(ts["token"]), list(ts["score"]), label))
    with st.expander(f"Scores of {md_escape(method)}"):
        st.dataframe(ts, hide_index=True, width="stretch", key=f"{key}:scores")


def show_generation(method: str, rows: pd.DataFrame, tokens: dict[int, str]) -> None:
    """Target × source matrix: each generated token's attribution to the tokens before it."""
    names = rows["target"].astype(str) if "target" in rows.columns else pd.Series("", index=rows.index)
    if "target_index" in rows.columns and rows["target_index"].notna().all():
        order = rows["target_index"].astype(int)
    else:
        order = names.map({t: i for i, t in enumerate(dict.fromkeys(names))})
    rows = rows.assign(_t=order.to_numpy())
    mat = matrix(rows, "_t", "token_index")
    first = rows.drop_duplicates("_t").set_index("_t")
    # a generated token's row is named by its target ("prob('d' @ 14)"); the last one is no source
    row_tokens = {int(i): (str(first.loc[i, "target"]) if "target" in first.columns else tokens.get(int(i), str(i)))
                  for i in mat.index}
    st.altair_chart(heatmap_chart(matrix_long(mat, row_tokens, tokens), f"{method}: generated token × source",
                                  "generated token", "source token", diverging=True))


def show_matrix(method: str, rows: pd.DataFrame, key: str) -> None:
    """One token × token matrix (rollout); per-layer matrices get a layer picker."""
    if "layer" in rows.columns and rows["layer"].notna().any():
        layers = sorted(int(x) for x in rows["layer"].dropna().unique())
        layer = st.selectbox("Layer", layers, index=len(layers) - 1, key=f"{key}:mlayer")
        rows = rows[rows["layer"] == layer]
    tok = _tokens(rows)
    st.altair_chart(heatmap_chart(matrix_long(matrix(rows), tok, tok), method, "token", "draws on"))
    st.caption("Row: a token's representation; column: how much of it comes from that input token.")


def show_head_importance(method: str, rows: pd.DataFrame) -> None:
    df = rows[["layer", "head", "score"]].astype({"layer": int, "head": int, "score": float})
    chart = alt.Chart(df).mark_rect().encode(
        x=alt.X("head:O", title="head"), y=alt.Y("layer:O", title="layer"),
        color=alt.Color("score:Q", scale=alt.Scale(scheme="blues"), title="importance"),
        tooltip=["layer:O", "head:O", alt.Tooltip("score:Q", format=".4g")],
    ).properties(title=f"{method}: importance per layer and head", width=alt.Step(28), height=alt.Step(28))
    st.altair_chart(chart)


def show_attention(method: str, rows: pd.DataFrame, key: str) -> None:
    """A grid of small maps (layers × heads) and one large map of a chosen layer and head."""
    layers = sorted(int(x) for x in rows["layer"].unique())
    heads = sorted(int(x) for x in rows["head"].unique())
    tok = _tokens(rows)
    per_layer = max(1, GRID_MAX_MAPS // max(1, len(heads)))
    default = layers if len(layers) * len(heads) <= GRID_MAX_MAPS else layers[:per_layer]
    grid_layers = st.multiselect("Layers in the grid", layers, default=default, key=f"{key}:grid_layers")
    if grid_layers:
        st.altair_chart(attention_grid_chart(rows[rows["layer"].isin(grid_layers)]))
        st.caption("Each small map: rows are the attending token, columns the token attended to.")
    c1, c2 = st.columns(2)
    layer = c1.selectbox("Layer", layers, key=f"{key}:layer")
    head = c2.selectbox("Head", ["mean over heads", *heads], key=f"{key}:head")
    sel = rows[rows["layer"] == layer]
    if head != "mean over heads":
        sel = sel[sel["head"] == head]
    st.altair_chart(heatmap_chart(matrix_long(matrix(sel), tok, tok), f"layer {layer}, head {head}", size=440))


def show_method(method: str, rows: pd.DataFrame, key: str, show_metrics: Callable[[], None]) -> None:
    """Everything stored for one method of one example, with its metrics beside it."""
    parts = method_parts(rows)
    st.subheader(md_escape(method))
    if not parts:
        st.caption("No scores stored for this method.")
        return
    tokens = _tokens(rows[rows["source_index"].isna()] if "source_index" in rows.columns else rows)
    left, right = st.columns([3, 2])
    with left:
        if "tokens" in parts:
            show_tokens(method, parts["tokens"], key)
        if "generation" in parts:
            show_generation(method, parts["generation"], tokens)
        if "matrix" in parts:
            show_matrix(method, parts["matrix"], key)
        if "layers" in parts:
            show_matrix(method, parts["layers"], key)
        if "head_importance" in parts:
            show_head_importance(method, parts["head_importance"])
    with right:
        show_metrics()
    if "attention" in parts:
        show_attention(method, parts["attention"], key)
