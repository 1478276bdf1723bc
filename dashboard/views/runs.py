"""Runs page: every run directory under the root, with status and verdict; pick one or two."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard.data import as_dict, runs_table
from dashboard.render import md_escape
from dashboard.state import get_root, no_runs, run_infos, selected, set_selected

st.title("Runs")
rr = get_root()
infos = run_infos(rr)
if not infos:
    no_runs(rr)
    st.stop()

table = runs_table(infos)
counts = table["status"].value_counts().to_dict()
st.caption(" · ".join(f"{md_escape(k)}: {v}" for k, v in counts.items()) + f" — {len(infos)} run(s)")
st.dataframe(table, hide_index=True, width="stretch", column_config={
    "run": st.column_config.TextColumn("run", pinned=True),
    "top finding": st.column_config.TextColumn("top finding", width="large"),
    "problem": st.column_config.TextColumn("problem", width="large"),
})

ids = [r.run_id for r in infos if r.record.readable]

st.session_state["runs_pick"] = list(dict.fromkeys(selected(ids)))
st.multiselect("Selected runs (one for Bias and Explain, two for Compare)", ids, key="runs_pick",
               max_selections=2, on_change=lambda: set_selected(st.session_state["runs_pick"]))
sel = selected(ids)
if sel:
    st.caption("Selected: " + ", ".join(md_escape(s) for s in sel))

for info in infos:
    if info.record.problem:
        st.error(f"Run {md_escape(info.run_id)} cannot be read: {md_escape(info.record.problem)}")

for info in [i for i in infos if i.run_id in sel]:
    with st.expander(f"Run {md_escape(info.run_id)}", expanded=True):
        model, m = info.record.model, info.manifest
        c1, c2, c3 = st.columns(3)
        c1.metric("Status", md_escape(info.status))
        c2.metric("Verdict", info.verdict.status or "—")
        c3.metric("Probes", len(info.record.probes))
        if info.top_finding:
            st.markdown(f"**Top finding:** {md_escape(info.top_finding)}")
        if info.verdict.checks:
            st.caption(" · ".join(f"{k}: {v}" for k, v in info.verdict.counts.items() if v))
            checks = pd.DataFrame(info.verdict.checks)
            st.dataframe(checks[["check", "severity", "on", "status", "value", "ci_low", "ci_high", "reason"]],
                         hide_index=True, width="stretch")
        st.text(f"model: {info.model}  kind: {model.get('kind') or ''}\nsource: {model.get('source') or ''}\n"
                f"revision: {model.get('revision')}  dtype: {model.get('dtype')}  device: {model.get('device')}\n"
                f"created: {m.get('created_at')}  finished: {m.get('finished_at')}")
        shas = as_dict(model.get("weights_sha256"))
        if shas:
            st.text("\n".join(f"sha256 {k}: {v}" for k, v in shas.items()))
        for e in info.errors:
            st.warning(md_escape(e))
