"""Agreement between two attribution methods on the same example (Krishna et al. 2022, "The
Disagreement Problem in Explainable Machine Learning"): rank correlations and top-k overlap of
the tokens' absolute attributions."""

from __future__ import annotations

import math

import numpy as np
from scipy import stats


def top_k(n: int, fraction: float = 0.2) -> int:
    """Top-k size used for overlap: ⌈fraction · n⌉, at least 1."""
    return max(1, math.ceil(fraction * n - 1e-9))


def rank_agreement(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None, *, k: int | None = None,
                   fraction: float = 0.2, absolute: bool = True) -> dict[str, float]:
    """Spearman ρ, Kendall τ and top-k overlap |top_k(a) ∩ top_k(b)| / k of two score vectors.

    Only positions where ``mask`` is true and both scores are finite count. Magnitudes are compared
    by default (a token pushing the prediction down matters as much as one pushing it up).
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    m = np.isfinite(a) & np.isfinite(b)
    if mask is not None:
        m &= np.asarray(mask, dtype=bool)
    x, y = a[m], b[m]
    if absolute:
        x, y = np.abs(x), np.abs(y)
    n = len(x)
    out = {"rank_spearman": float("nan"), "rank_kendall": float("nan"), "topk_overlap": float("nan")}
    if n == 0:
        return out
    kk = min(n, k if k is not None else top_k(n, fraction))
    top_x = set(np.argsort(-x, kind="stable")[:kk].tolist())
    top_y = set(np.argsort(-y, kind="stable")[:kk].tolist())
    out["topk_overlap"] = len(top_x & top_y) / kk
    if n >= 2 and np.ptp(x) > 0 and np.ptp(y) > 0:
        out["rank_spearman"] = float(stats.spearmanr(x, y).statistic)
        out["rank_kendall"] = float(stats.kendalltau(x, y).statistic)
    return out
