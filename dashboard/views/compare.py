"""Compare page: two runs side by side — each metric's delta and whether it is significant.

Tests (see :mod:`audit.compare`): McNemar's exact test for a percentage metric over the same
items, a two-proportion z-test over different items, otherwise a Wald z-test from the stored 95 %
CIs; Wilcoxon signed-rank on the per-item effect of paired items; Benjamini–Hochberg across the page.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from audit.compare import ALPHA, compare_runs
from dashboard.data import RunInfo, as_dict
from dashboard.render import fmt, fmt_p, md_escape
from dashboard.state import get_root, no_runs, pick_run, run_infos, show_run_state


def identity(info: RunInfo) -> pd.Series:
    model = info.record.model
    shas = as_dict(model.get("weights_sha256"))
    return pd.Series({
        "run": info.run_id, "status": info.status, "verdict": info.verdict.status or "—", "model": info.model,
        "kind": str(model.get("kind") or ""), "source": str(model.get("source") or ""),
        "revision": str(model.get("revision")), "dtype": str(model.get("dtype")),
        "weights sha256": ", ".join(f"{k}: {str(v)[:12]}…" for k, v in shas.items()),
        "seed": str(info.manifest.get("seed")), "created": str(info.manifest.get("created_at")),
    })


st.title("Compare")
rr = get_root()
infos = run_infos(rr)
readable = [i for i in infos if i.record.readable]
if not readable:
    no_runs(rr)
    st.stop()
ca, cb = st.columns(2)
with ca:
    a = pick_run("Run A", infos, 0, "compare_a")
with cb:
    b = pick_run("Run B", infos, 1, "compare_b")
assert a is not None and b is not None
if a.run_id == b.run_id:
    st.info("Choose two different runs to compare (there is only one readable run)."
            if len(readable) < 2 else "Choose two different runs to compare.")
    st.stop()
with ca:
    show_run_state(a)
with cb:
    show_run_state(b)
if a.model != b.model:
    st.warning(f"A and B audit different models ({md_escape(a.model)} vs {md_escape(b.model)}): only metrics "
               "measured the same way on the same data are comparable, and a difference is about the models, "
               "not a change to one. Pick two runs of the same model to compare a change.")
ident = pd.DataFrame({"A": identity(a), "B": identity(b)})
st.dataframe(ident, width="stretch", height=36 * (len(ident) + 1) + 3)

comparison = compare_runs(rr.view(a.run_id, a.manifest), rr.view(b.run_id, b.manifest))
if comparison.only:
    st.caption("In one run only: " + ", ".join(f"{md_escape(n)} ({ab})" for n, ab in comparison.only.items()))
for p in comparison.problems:
    st.warning(md_escape(p))
full = comparison.table
if full.empty:
    st.info("The two runs have no completed probe in common.")
    st.stop()
n_sig = int((full["significant"] == "yes").sum())
c1, c2, c3 = st.columns(3)
c1.metric("Metrics compared", len(full))
c2.metric(f"Significant (BH-adjusted p < {ALPHA})", n_sig)
c3.metric("Closer to ideal in B", int((full["better"] == "B").sum()))
st.caption("Δ = B − A. 'better' uses each metric's declared ideal and direction. p-values are adjusted "
           "across this table with Benjamini–Hochberg; the test used for each row is named in 'test'.")
for name, t in full.groupby("probe", sort=False):
    st.subheader(md_escape(name))
    show = t[["metric", "A", "A CI", "B", "B CI", "delta (B−A)", "ideal", "better", "significant",
              "p_adjusted", "p_value", "test", "detail"]].copy()
    for col in ("A", "B", "delta (B−A)", "ideal"):
        show[col] = show[col].map(fmt)
    for col in ("p_value", "p_adjusted"):
        show[col] = show[col].map(fmt_p)
    st.dataframe(show, hide_index=True, width="stretch", column_config={
        "detail": st.column_config.TextColumn("detail", width="large")})
    if name in comparison.item_tests:
        st.caption(md_escape(comparison.item_tests[str(name)]))
st.download_button("Download comparison as CSV", full.to_csv(index=False).encode("utf-8"),
                   file_name=f"compare_{a.run_id}_vs_{b.run_id}.csv", mime="text/csv")
