"""Streamlit dashboard over a runs root (``taudit dashboard RUNS_DIR``).

Pages: Runs, Bias, Explain, Compare (read run directories only, never recompute) and Live (loads
a model and explains a typed text). :mod:`dashboard.data` reads run directories without Streamlit
and never outside the runs root; :mod:`audit.compare` holds the significance tests the Compare
page uses; :mod:`dashboard.render` builds charts and escaped HTML heatmaps.
"""

from __future__ import annotations

RUNS_ENV = "TAUDIT_RUNS_DIR"
#: the shared access token of a dashboard bound to a non-loopback address (set by ``taudit dashboard``)
TOKEN_ENV = "TAUDIT_DASHBOARD_TOKEN"  # nosec B105  # the variable's name, not a secret
#: comma-separated models the Live page may load (``--live-models``); set on a shared dashboard
LIVE_ENV = "TAUDIT_LIVE_MODELS"

__all__ = ["LIVE_ENV", "RUNS_ENV", "TOKEN_ENV"]
