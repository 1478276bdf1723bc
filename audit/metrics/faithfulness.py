"""Faithfulness metrics: do the tokens an attribution ranks highest drive the prediction?

All functions are model-agnostic. A *scorer* maps keep-masks ``(n, T)`` (True = token kept) to
model outputs ``(n,)``; :class:`audit.explain.perturbation.Ablator` is the batched scorer for a
real model. Each metric comes as a mask builder and a reducer so that one batched scorer call can
serve every metric of an example; the plain functions combine the two.

Conventions: tokens are ranked by *signed* score, highest first, ties by position; only
``attributable`` positions are ranked or removed; k % of n tokens is ⌈k·n⌉ tokens.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
from scipy import stats

#: relative IG completeness gap above which an explanation is flagged (README, "Explainers")
GAP_WARNING = 0.05

Scorer = Callable[[np.ndarray], np.ndarray]

#: DeYoung et al. (2020) report AOPC over bins; docs/metrics.md fixes them at 10 %, 20 %, …, 100 %
DEFAULT_BINS: tuple[float, ...] = tuple(round(0.1 * i, 1) for i in range(1, 11))


def completeness_gap(attribution_sum: float, f_input: float, f_baseline: float, eps: float = 1e-12) -> float:
    """|Σ attributions − (f(x) − f(x'))| / |f(x) − f(x')| (Sundararajan et al. 2017, completeness).

    NaN when f(x) = f(x'): then no relative gap is defined.
    """
    denom = abs(f_input - f_baseline)
    if denom < eps:
        return float("nan")
    return abs(attribution_sum - (f_input - f_baseline)) / denom


def _attributable(scores: np.ndarray, attributable: np.ndarray | None) -> np.ndarray:
    if attributable is None:
        return np.isfinite(scores)
    return np.asarray(attributable, dtype=bool) & np.isfinite(scores)


def ranking(scores: np.ndarray, attributable: np.ndarray | None = None) -> np.ndarray:
    """Positions of the attributable tokens, highest score first (ties: earlier position first)."""
    scores = np.asarray(scores, dtype=np.float64)
    idx = np.nonzero(_attributable(scores, attributable))[0]
    return idx[np.argsort(-scores[idx], kind="stable")]


def n_top(fraction: float, n: int) -> int:
    """⌈fraction · n⌉ clipped to [0, n]."""
    return int(min(n, max(0, math.ceil(fraction * n - 1e-9))))


def top_k_masks(scores: np.ndarray, attributable: np.ndarray | None, bins: Sequence[float] = DEFAULT_BINS
                ) -> np.ndarray:
    """(len(bins), T) masks of the top-⌈k·n⌉ tokens for each bin k."""
    return _top_masks(scores, attributable, lambda n: np.array([n_top(b, n) for b in bins]))[0]


def comprehensiveness_masks(scores: np.ndarray, attributable: np.ndarray | None,
                            bins: Sequence[float] = DEFAULT_BINS) -> np.ndarray:
    """Keep-masks with the top-k % tokens removed."""
    return ~top_k_masks(scores, attributable, bins)


def sufficiency_masks(scores: np.ndarray, attributable: np.ndarray | None,
                      bins: Sequence[float] = DEFAULT_BINS) -> np.ndarray:
    """Keep-masks with only the top-k % tokens kept (non-attributable positions always stay)."""
    fixed = ~np.asarray(attributable, dtype=bool) if attributable is not None else np.zeros(len(scores), bool)
    return top_k_masks(scores, attributable, bins) | fixed[None]


def comprehensiveness(scores: np.ndarray, scorer: Scorer, attributable: np.ndarray | None = None,
                      bins: Sequence[float] = DEFAULT_BINS, full: float | None = None) -> np.ndarray:
    """f(x) − f(x ∖ top-k %) for each bin (DeYoung et al. 2020, ERASER)."""
    masks = comprehensiveness_masks(scores, attributable, bins)
    f_x = float(scorer(np.ones((1, len(scores)), bool))[0]) if full is None else full
    return f_x - np.asarray(scorer(masks), dtype=np.float64)


def sufficiency(scores: np.ndarray, scorer: Scorer, attributable: np.ndarray | None = None,
                bins: Sequence[float] = DEFAULT_BINS, full: float | None = None) -> np.ndarray:
    """f(x) − f(top-k % only) for each bin (DeYoung et al. 2020, ERASER)."""
    masks = sufficiency_masks(scores, attributable, bins)
    f_x = float(scorer(np.ones((1, len(scores)), bool))[0]) if full is None else full
    return f_x - np.asarray(scorer(masks), dtype=np.float64)


def aopc(curve: Sequence[float] | np.ndarray) -> float:
    """Area over the perturbation curve: the mean of a comprehensiveness / sufficiency curve over
    its bins (DeYoung et al. 2020, after Samek et al. 2017)."""
    c = np.asarray(curve, dtype=np.float64)
    return float(np.nanmean(c)) if c.size else float("nan")


def curve_steps(n: int, max_points: int | None = None) -> np.ndarray:
    """Numbers of tokens removed / inserted at each curve point: 0 … n (subsampled to max_points)."""
    if max_points is None or n + 1 <= max_points:
        return np.arange(n + 1)
    return np.unique(np.round(np.linspace(0, n, max_points)).astype(int))


def _top_masks(scores: np.ndarray, attributable: np.ndarray | None, counts: Callable[[int], np.ndarray]
               ) -> tuple[np.ndarray, np.ndarray]:
    """Masks of the ``counts(n)`` most important tokens (one row per count), and those counts as
    fractions of the n attributable tokens."""
    order = ranking(scores, attributable)
    rank = np.full(len(scores), len(scores) + 1)
    rank[order] = np.arange(len(order))
    steps = counts(len(order))
    return rank[None, :] < steps[:, None], steps / max(1, len(order))


def deletion_masks(scores: np.ndarray, attributable: np.ndarray | None, max_points: int | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Keep-masks removing the 0, 1, … n most important tokens, and the removed fractions."""
    top, fractions = _top_masks(scores, attributable, lambda n: curve_steps(n, max_points))
    return ~top, fractions


def insertion_masks(scores: np.ndarray, attributable: np.ndarray | None, max_points: int | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Keep-masks holding only the 0, 1, … n most important tokens (fixed positions always kept)."""
    top, fractions = _top_masks(scores, attributable, lambda n: curve_steps(n, max_points))
    fixed = ~_attributable(np.asarray(scores, dtype=np.float64), attributable)
    return top | fixed[None], fractions


def curve_auc(fractions: np.ndarray, values: np.ndarray) -> float:
    """Trapezoidal area under a deletion / insertion curve (x: fraction of tokens)."""
    if len(fractions) < 2:
        return float("nan")
    return float(np.trapezoid(np.asarray(values, dtype=np.float64), np.asarray(fractions, dtype=np.float64)))


def deletion_curve(scores: np.ndarray, scorer: Scorer, attributable: np.ndarray | None = None,
                   max_points: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(fractions, f) as the most important tokens are removed (Petsiuk et al. 2018, RISE)."""
    keep, frac = deletion_masks(scores, attributable, max_points)
    return frac, np.asarray(scorer(keep), dtype=np.float64)


def insertion_curve(scores: np.ndarray, scorer: Scorer, attributable: np.ndarray | None = None,
                    max_points: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(fractions, f) as the most important tokens are restored into the baseline input."""
    keep, frac = insertion_masks(scores, attributable, max_points)
    return frac, np.asarray(scorer(keep), dtype=np.float64)


def loo_masks(attributable: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One keep-mask per attributable token with that token removed, and those positions."""
    idx = np.nonzero(np.asarray(attributable, dtype=bool))[0]
    keep = np.ones((len(idx), len(attributable)), dtype=bool)
    keep[np.arange(len(idx)), idx] = False
    return keep, idx


def leave_one_out(scorer: Scorer, attributable: np.ndarray, full: float | None = None) -> np.ndarray:
    """f(x) − f(x ∖ i) per token (NaN where not attributable)."""
    keep, idx = loo_masks(attributable)
    f_x = float(scorer(np.ones((1, len(attributable)), bool))[0]) if full is None else full
    out = np.full(len(attributable), np.nan)
    if len(idx):
        out[idx] = f_x - np.asarray(scorer(keep), dtype=np.float64)
    return out


def tau_loo(scores: np.ndarray, loo: np.ndarray, attributable: np.ndarray | None = None) -> float:
    """Kendall τ between attributions and leave-one-out effects (Jain & Wallace 2019; ferret's
    ``taucorr_loo``). NaN with fewer than two tokens or constant inputs."""
    m = _attributable(np.asarray(scores, dtype=np.float64), attributable) & np.isfinite(loo)
    if m.sum() < 2:
        return float("nan")
    a, b = np.asarray(scores, dtype=np.float64)[m], np.asarray(loo, dtype=np.float64)[m]
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(stats.kendalltau(a, b).statistic)
