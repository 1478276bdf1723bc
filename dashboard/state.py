"""Streamlit glue shared by the pages: the runs root, cached loaders and the run selection.

The selection (up to two run ids) lives in ``st.session_state["taudit_selected_runs"]`` — a plain
key, not a widget key, so it survives page switches (Streamlit drops widget state of widgets a
page does not draw). Loaders are cached on the modification stamps of the files they read, so a
run that is still being written shows new results on the next rerun.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any

import streamlit as st

from dashboard import RUNS_ENV
from dashboard.data import (
    ExplainData,
    ProbeData,
    RunInfo,
    RunsRoot,
    load_explain,
    load_probe,
    load_run_info,
)
from dashboard.render import md_escape

logger = logging.getLogger(__name__)

SELECTED = "taudit_selected_runs"
DEFAULT_ROOT = "runs"


def runs_root_arg(argv: list[str] | None = None) -> str | None:
    """``--runs-dir`` from the script arguments (``streamlit run app.py -- --runs-dir ROOT``)."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--runs-dir", default=None)
    ns, _ = p.parse_known_args(sys.argv[1:] if argv is None else argv)
    return ns.runs_dir


def get_root() -> RunsRoot:
    """The runs root: ``--runs-dir`` script argument, else $TAUDIT_RUNS_DIR, else ./runs."""
    return RunsRoot(runs_root_arg() or os.environ.get(RUNS_ENV) or DEFAULT_ROOT)


@st.cache_data(show_spinner=False, max_entries=512)
def _run_info(root: str, run_id: str, stamp: tuple[Any, ...]) -> RunInfo:
    return load_run_info(RunsRoot(root), run_id)


@st.cache_data(show_spinner=False, max_entries=256)
def _probe(root: str, run_id: str, name: str, stamp: tuple[Any, ...]) -> ProbeData:
    return load_probe(RunsRoot(root), run_id, name)


@st.cache_data(show_spinner=False, max_entries=64)
def _explain(root: str, run_id: str, name: str, stamp: tuple[Any, ...]) -> ExplainData:
    return load_explain(RunsRoot(root), run_id, name)


def run_infos(rr: RunsRoot) -> list[RunInfo]:
    """Every run under the root (:func:`load_run_info`, which refuses a run outside the root)."""
    return [_run_info(str(rr.root), run_id, rr.stamp(run_id, "manifest.json") + rr.stamp(run_id, "verdict.json"))
            for run_id in rr.run_ids()]


def probe(rr: RunsRoot, run_id: str, name: str) -> ProbeData:
    stamp = rr.stamp(run_id, "manifest.json") + rr.stamp(run_id, "probes", name)
    return _probe(str(rr.root), run_id, name, stamp)


def explanation(rr: RunsRoot, run_id: str, name: str) -> ExplainData:
    stamp = rr.stamp(run_id, "manifest.json") + rr.stamp(run_id, "explain", name)
    return _explain(str(rr.root), run_id, name, stamp)


# --------------------------------------------------------------------------------------------
# Selection
# --------------------------------------------------------------------------------------------


def selected(valid: list[str]) -> list[str]:
    """The selected run ids that still exist (at most two)."""
    sel = [r for r in st.session_state.get(SELECTED, []) if r in valid][:2]
    st.session_state[SELECTED] = sel
    return sel


def set_selected(runs: list[str]) -> None:
    st.session_state[SELECTED] = list(runs)[:2]


def pick_run(label: str, infos: list[RunInfo], slot: int, key: str) -> RunInfo | None:
    """A run selectbox bound to slot ``slot`` (0 or 1) of the selection; None when there are no runs.

    The widget's key is set from the selection before it is drawn, and its callback writes the
    choice back, so every page shows the same selected runs.
    """
    readable = [r for r in infos if r.record.readable]
    if not readable:
        return None
    ids = [r.run_id for r in readable]
    by_id = {r.run_id: r for r in readable}

    def shown(i: int, sel: list[str]) -> str:
        if len(sel) > i and sel[i] in ids:
            return sel[i]
        taken = [shown(j, sel) for j in range(i)]
        free = [r for r in ids if r not in taken]
        # unselected: a run of the same model as the first slot (the only comparable one), else any other
        same = [r for r in free if taken and by_id[r].model == by_id[taken[0]].model]
        return next(iter(same or free), ids[0])

    def _store() -> None:
        sel = selected(ids)
        cur = [shown(i, sel) for i in range(slot)] + [st.session_state[key]]
        cur += sel[slot + 1:]
        set_selected(cur)

    st.session_state[key] = shown(slot, selected(ids))
    choice = st.selectbox(label, ids, key=key, on_change=_store,
                          format_func=lambda i: f"{i} — {by_id[i].model} ({by_id[i].status})")
    return by_id[choice]


def page_run(title: str, key: str, caption: str = "") -> tuple[RunsRoot, RunInfo]:
    """A one-run page's title, caption and run picker (selectbox ``key``, slot 0) with the run's
    state banner; stops the page when there is no readable run."""
    st.title(title)
    if caption:
        st.caption(caption)
    rr = get_root()
    info = pick_run("Run", run_infos(rr), 0, key)
    if info is None:
        no_runs(rr)
        st.stop()
    show_run_state(info)
    return rr, info


def show_run_state(info: RunInfo) -> None:
    """A banner for a run that is still running or failed."""
    if info.status == "running":
        st.info("This run is still running: showing what has been written so far. Rerun the page "
                "(press R) to refresh.")
    elif info.status == "failed":
        errs = "; ".join(info.errors) or "no error recorded"
        st.warning(f"This run failed: {md_escape(errs)}")
    elif info.status not in ("complete",):
        st.warning(f"Run status: {md_escape(info.status)}")


def no_runs(rr: RunsRoot) -> None:
    if not rr.exists():
        st.warning(f"The runs root {md_escape(rr.root)} does not exist. Start the dashboard with "
                   "`taudit dashboard RUNS_DIR`.")
    else:
        st.info(f"No readable run directories under {md_escape(rr.root)} (a run directory holds a manifest.json).")
