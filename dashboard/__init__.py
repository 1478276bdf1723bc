"""Streamlit dashboard over a runs root (``taudit dashboard RUNS_DIR``).

Pages: Runs, Bias, Explain, Compare (read run directories only, never recompute) and Live (loads
a model and explains a typed text). :mod:`dashboard.data` reads run directories without Streamlit
and never outside the runs root; :mod:`dashboard.compare` holds the significance tests the Compare
page uses; :mod:`dashboard.render` builds charts and escaped HTML heatmaps.
"""

from __future__ import annotations

RUNS_ENV = "TAUDIT_RUNS_DIR"

__all__ = ["RUNS_ENV"]
