"""Entry point of the Streamlit app: ``streamlit run dashboard/app.py -- --runs-dir ROOT``.

``taudit dashboard ROOT`` starts it bound to 127.0.0.1 with usage statistics off. The runs root
comes from ``--runs-dir``, else ``$TAUDIT_RUNS_DIR``, else ``./runs``.

The page scripts live in ``views/``, not ``pages/``: a ``pages/`` folder beside the entry script
puts Streamlit in its older multipage mode, which runs a page's file without this entry script
(no navigation titles, no error guard).
"""

from __future__ import annotations

import hmac
import logging
import os
from pathlib import Path

import streamlit as st

from dashboard import TOKEN_ENV
from dashboard.render import md_escape
from dashboard.state import get_root

logger = logging.getLogger("dashboard")
HERE = Path(__file__).resolve().parent

st.set_page_config(page_title="transformer-audit", layout="wide")

PAGES = [
    st.Page(HERE / "views" / "runs.py", title="Runs", url_path="runs", default=True),
    st.Page(HERE / "views" / "bias.py", title="Bias", url_path="bias"),
    st.Page(HERE / "views" / "explain.py", title="Explain", url_path="explain"),
    st.Page(HERE / "views" / "mechanism.py", title="Mechanism", url_path="mechanism"),
    st.Page(HERE / "views" / "compare.py", title="Compare", url_path="compare"),
    st.Page(HERE / "views" / "live.py", title="Live", url_path="live"),
]


def _authenticated() -> bool:
    """On a dashboard started with an access token, whether this session has given it: once as
    ``?token=…`` in the URL (then removed from it) or typed into the form. Compared in constant
    time. Always true on a dashboard without a token (bound to loopback)."""
    secret = os.environ.get(TOKEN_ENV, "")
    if not secret or st.session_state.get("taudit_authenticated"):
        return True
    given = st.query_params.get("token", "")
    if given:
        del st.query_params["token"]
    if given and hmac.compare_digest(given.encode("utf-8"), secret.encode("utf-8")):
        st.session_state["taudit_authenticated"] = True
        return True
    st.session_state["taudit_token_wrong"] = bool(given)
    return False


def _token_form() -> None:
    """The only thing an unauthenticated visitor sees; no page script runs."""
    st.title("transformer-audit")
    given = st.text_input("Access token", type="password", key="taudit_token_input",
                          help="Ask whoever started this dashboard for its access token.")
    secret = os.environ.get(TOKEN_ENV, "")
    if given and hmac.compare_digest(given.encode("utf-8"), secret.encode("utf-8")):
        st.session_state["taudit_authenticated"] = True
        st.rerun()
    if given or st.session_state.get("taudit_token_wrong"):
        st.error("Wrong access token.")
    st.stop()


authenticated = _authenticated()
# navigation first (so the URL's page is kept through the gate), hidden until the token is given
page = st.navigation(PAGES, position="sidebar" if authenticated else "hidden")
if not authenticated:
    _token_form()
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
