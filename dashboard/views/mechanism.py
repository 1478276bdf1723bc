"""Mechanism page: where the bias is carried — each mediation probe's layer × head map of natural
indirect effects (Vig et al. 2020), its top heads with intervals, attention and MLP effects per
layer, and the ablation check (a diagnostic, not a debiasing method). Read from the probe's
summary.json; reports/mechanism.py shapes the same numbers for the report."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from dashboard.render import fmt, fmt_interval, md_escape
from dashboard.state import page_run, probe
from reports.mechanism import entry


def heat_chart(values: list[list[float]]) -> alt.Chart:
    df = pd.DataFrame([{"layer": i, "head": j, "nie": v} for i, r in enumerate(values) for j, v in enumerate(r)])
    lim = float(df["nie"].abs().max() or 1.0)
    return alt.Chart(df).mark_rect().encode(
        x=alt.X("head:O", title="head"), y=alt.Y("layer:O", title="layer"),
        color=alt.Color("nie:Q", scale=alt.Scale(scheme="blueorange", domain=[-lim, lim]), title="NIE"),
        tooltip=["layer:O", "head:O", alt.Tooltip("nie:Q", format=".4g")],
    ).properties(title="Natural indirect effect per layer and head", width=alt.Step(22), height=alt.Step(14))


rr, info = page_run("Mechanism", "mechanism_run", caption=(
    "Causal mediation analysis (Vig et al. 2020): each head, attention layer and MLP is set, one at a time, to its "
    "value when the profession is swapped for a gendered word; its natural indirect effect (NIE) is how much that "
    "alone moves p(anti-stereotypical) / p(stereotypical pronoun)."))
names = [n for n in rr.view(info.run_id, info.manifest).probe_names() if probe(rr, info.run_id, n).record.probe == "mediation"]
if not names:
    st.info("This run has no completed mediation probe (add `- probe: mediation` to the config).")
    st.stop()
for name in names:
    p = probe(rr, info.run_id, name).record
    e = entry(p)
    st.subheader(md_escape(name))
    for w in p.warnings:
        st.warning(md_escape(w))
    if e["heat"]:
        st.altair_chart(heat_chart(e["heat"]["matrix"]))
    if e["top_heads"]:
        st.markdown("**Top mediating heads** (95% bootstrap CI over items)")
        st.dataframe(pd.DataFrame([{"head": t["head"], "NIE": fmt(t["nie"]),
                                    "95% CI": fmt_interval(t["ci_low"], t["ci_high"])} for t in e["top_heads"]]),
                     hide_index=True)
    per_layer = {k: v for k, v in e["layers"].items() if v}
    if per_layer:
        st.markdown("**Attention and MLP per layer**")
        st.line_chart(pd.DataFrame(per_layer))
    ab = e["ablation"]
    if ab:
        st.markdown(f"**Ablation check (diagnostic)** — heads mean-ablated: {md_escape(ab['heads'])}")
        st.caption(md_escape(ab["note"]))
        st.dataframe(pd.DataFrame([{"measure": r["what"], "before": fmt(r["before"]), "after": fmt(r["after"]),
                                    "change": fmt(r["change"]), "95% CI": fmt_interval(r["ci_low"], r["ci_high"]),
                                    "n": r["n"]} for r in ab["rows"]]), hide_index=True)
    for c in e["caveats"]:
        st.caption(md_escape(c))
