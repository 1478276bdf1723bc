"""Entry point of the Streamlit app: ``streamlit run dashboard/app.py -- --runs-dir ROOT``.

``taudit dashboard ROOT`` starts it bound to 127.0.0.1 with usage statistics off. The runs root
comes from ``--runs-dir``, else ``$TAUDIT_RUNS_DIR``, else ``./runs``.

The page scripts live in ``views/``, not ``pages/``: a ``pages/`` folder beside the entry script
puts Streamlit in its older multipage mode, which runs a page's file without this entry script
(no navigation titles, no error guard).
"""

from __future__ import annotations

import logging
from pathlib import Path

import streamlit as st

from dashboard.render import md_escape
from dashboard.state import get_root

logger = logging.getLogger("dashboard")
HERE = Path(__file__).resolve().parent

st.set_page_config(page_title="transformer-audit", layout="wide")

PAGES = [
    st.Page(HERE / "views" / "runs.py", title="Runs", url_path="runs", default=True),
    st.Page(HERE / "views" / "bias.py", title="Bias", url_path="bias"),
    st.Page(HERE / "views" / "explain.py", title="Explain", url_path="explain"),
    st.Page(HERE / "views" / "compare.py", title="Compare", url_path="compare"),
    st.Page(HERE / "views" / "live.py", title="Live", url_path="live"),
]

page = st.navigation(PAGES)
root = get_root()
with st.sidebar:
    st.caption(f"Runs root: {md_escape(root.root)}")
    if st.button("Reload runs", help="Read the run directories again"):
        st.cache_data.clear()
try:
    page.run()
except Exception as exc:  # a page must show a message, never a traceback
    logger.exception("dashboard page %s failed", page.title)
    st.error(f"This page could not be drawn: {md_escape(type(exc).__name__)}: {md_escape(exc)}")
