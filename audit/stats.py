"""Confidence intervals, significance tests and multiple-comparison correction, all seeded.

Every probe computes its uncertainty here so it is computed one way (lm-evaluation-harness
keeps its standard errors central for the same reason). Built on ``scipy.stats``.

* :func:`bootstrap_ci` — percentile bootstrap of a mean (Efron & Tibshirani 1993) over items, or
  over clusters of items (the cluster bootstrap).
* :func:`binomial_test` — exact binomial test of a preference rate against 50 % (pair probes).
* :func:`sign_test`, :func:`wilcoxon_test`, :func:`mann_whitney` — paired / unpaired location tests.
* :func:`bootstrap_table_ci`, :func:`permutation_table_test` — CI and test of any statistic of an
  item table (ratios, largest gaps), rows resampled / labels permuted within strata.
* :func:`cluster_proportion_test` — a proportion against a null rate when items come in clusters.
* :func:`simultaneous_gap_ci` — a CI for the largest gap between group rates that stays valid
  after taking the maximum (simultaneous Tukey–Kramer intervals of every pairwise difference).
* :func:`benjamini_hochberg` — false-discovery-rate adjustment (Benjamini & Hochberg 1995).
* :func:`small_n_warning` — says when n is too small for an interval to mean much.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pandas as pd
from scipy import stats as st
from scipy.optimize import brentq

from audit.results import MetricInfo, MetricValue

MIN_N = 30  # below this a bootstrap CI of a mean is unreliable (rule of thumb; warned, not refused)
CONFIDENCE = 0.95
N_RESAMPLES = 2000


@dataclass(frozen=True)
class Interval:
    low: float
    high: float
    method: str


#: coverage of nominal 95 % intervals measured at n = 10 by ``benchmarks/calibration.py`` (1,000
#: simulations each; RESULTS.md): the percentile bootstrap of a mean (SEAT |d| 0.877, counterfactual
#: Δ log-likelihood 0.887) and the cluster bootstrap over 10 BBQ templates (0.887–0.917)
MEASURED_COVERAGE_AT_10 = {"bootstrap": "88–89 %", "cluster bootstrap": "89–92 %"}


def small_n_warning(n: int, what: str = "", min_n: int = MIN_N, method: str | None = None) -> str:
    """A warning string when ``n`` is below ``min_n`` (empty otherwise); with ``method`` (a key of
    :data:`MEASURED_COVERAGE_AT_10`) it quotes the coverage that interval method was measured to
    have at n = 10."""
    if n < min_n:
        label = f" for {what}" if what else ""
        measured = (f"; simulated at n = 10, its 95 % interval covered the true value only "
                    f"{MEASURED_COVERAGE_AT_10[method]} of the time" if method else "")
        return f"n = {n}{label} is below {min_n}: treat the interval as a rough indication{measured}"
    return ""


def _percentile_bootstrap(seed: int, n: int, n_resamples: int, confidence: float,
                          stat: Callable[[np.ndarray], np.ndarray]) -> tuple[float, float]:
    """Percentile interval of ``stat(idx)`` over resamples of n indices with replacement: ``idx``
    is a (resamples × n) block, drawn in blocks of about 2M indices so memory stays bounded."""
    rng = np.random.default_rng(seed)
    vals = np.empty(n_resamples)
    chunk = max(1, 2_000_000 // n)
    for s in range(0, n_resamples, chunk):
        e = min(n_resamples, s + chunk)
        vals[s:e] = stat(rng.integers(0, n, size=(e - s, n)))
    a = (1 - confidence) / 2
    lo, hi = np.quantile(vals, [a, 1 - a])
    return float(lo), float(hi)


def bootstrap_ci(
    data: Sequence[float] | np.ndarray,
    *,
    clusters: Sequence[object] | np.ndarray | None = None,
    confidence: float = CONFIDENCE,
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
    scale: float = 1.0,
) -> Interval:
    """Percentile bootstrap CI of the mean of items (rows resampled with replacement, vectorised).

    With ``clusters`` (an id per item) the items come in correlated clusters (e.g. one attribute
    word filled into several templates): whole clusters are resampled with replacement and the
    statistic is the mean over all items of the drawn clusters (the cluster bootstrap, Davison &
    Hinkley 1997 §3.8). Degenerate data (fewer than two items or clusters, or all values equal)
    give the mean as both bounds. ``scale`` multiplies the bounds (e.g. 100 for %).
    """
    x = np.asarray(data, dtype=np.float64)
    ok = ~np.isnan(x)
    x = x[ok]
    if len(x) == 0:
        return Interval(float("nan"), float("nan"), "none (no data)")
    point = float(x.mean())
    if clusters is None:
        if len(x) < 2 or np.all(x == x[0]):
            return Interval(point * scale, point * scale, "degenerate (all items equal)")
        lo, hi = _percentile_bootstrap(seed, len(x), n_resamples, confidence, lambda idx: x[idx].mean(axis=1))
        return Interval(lo * scale, hi * scale, "bootstrap percentile")
    _, inv = np.unique(np.asarray(clusters, dtype=object)[ok].astype(str), return_inverse=True)
    k = int(inv.max()) + 1
    if k < 2 or np.all(x == x[0]):
        return Interval(point * scale, point * scale, f"degenerate ({k} cluster(s) or all items equal)")
    sums = np.bincount(inv, weights=x, minlength=k)
    counts = np.bincount(inv, minlength=k).astype(np.float64)
    lo, hi = _percentile_bootstrap(seed, k, n_resamples, confidence,
                                   lambda idx: sums[idx].sum(axis=1) / counts[idx].sum(axis=1))
    return Interval(lo * scale, hi * scale, f"cluster bootstrap percentile ({k} clusters)")


def binomial_test(k: int, n: int, p: float = 0.5, alternative: str = "two-sided") -> float:
    """Exact binomial test p-value of k successes in n trials against rate p."""
    if n == 0:
        return float("nan")
    return float(st.binomtest(int(k), int(n), p, alternative=alternative).pvalue)


def wilson_ci(k: int, n: int, confidence: float = CONFIDENCE) -> Interval:
    """Wilson score interval of a proportion (Wilson 1927)."""
    if n == 0:
        return Interval(float("nan"), float("nan"), "none (no data)")
    ci = st.binomtest(int(k), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return Interval(float(ci.low), float(ci.high), "Wilson score")


def sign_test(diffs: Sequence[float] | np.ndarray) -> float:
    """Two-sided sign test of paired differences (zeros dropped)."""
    d = np.asarray(diffs, dtype=np.float64)
    d = d[~np.isnan(d) & (d != 0)]
    if len(d) == 0:
        return float("nan")
    return binomial_test(int((d > 0).sum()), len(d))


def wilcoxon_test(diffs: Sequence[float] | np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank test of paired differences against 0."""
    d = np.asarray(diffs, dtype=np.float64)
    d = d[~np.isnan(d)]
    if len(d) == 0 or np.all(d == 0):
        return float("nan") if len(d) == 0 else 1.0
    return float(st.wilcoxon(d, zero_method="wilcox").pvalue)


def one_sample_t(x: Sequence[float] | np.ndarray) -> float:
    """Two-sided one-sample t-test of the mean against 0."""
    a = np.asarray(x, dtype=np.float64)
    a = a[~np.isnan(a)]
    if len(a) < 2 or np.all(a == a[0]):
        return float("nan")
    return float(st.ttest_1samp(a, 0.0).pvalue)


def benjamini_hochberg(pvalues: Sequence[float]) -> np.ndarray:
    """BH-adjusted p-values (NaN kept as NaN)."""
    p = np.asarray(pvalues, dtype=np.float64)
    out = np.full_like(p, np.nan)
    ok = ~np.isnan(p)
    m = int(ok.sum())
    if m == 0:
        return out
    pv = p[ok]
    order = np.argsort(pv)
    ranked = pv[order] * m / np.arange(1, m + 1)
    adj = np.minimum.accumulate(ranked[::-1])[::-1]
    res = np.empty(m)
    res[order] = np.minimum(adj, 1.0)
    out[ok] = res
    return out


def _table_columns(
    table: pd.DataFrame | Mapping[str, Sequence[object] | np.ndarray], columns: Sequence[str] | None,
    *extra: str | None,
) -> dict[str, np.ndarray]:
    """``columns`` of ``table`` (all when ``None``) as arrays, then the ``extra`` ones not among them."""
    names = list(columns) if columns is not None else list(table.keys())
    return {k: np.asarray(table[k]) for k in dict.fromkeys([*names, *(e for e in extra if e is not None)])}


def _strata_indices(cols: dict[str, np.ndarray], n: int, strata: str | None) -> list[np.ndarray]:
    if strata is None:
        return [np.arange(n)]
    key = cols[strata]
    return [np.flatnonzero(key == v) for v in pd.unique(key)]


def _cluster_rows(rows: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``rows`` ordered by cluster, each cluster's start in that order and its size."""
    _, inv = np.unique(ids.astype(str), return_inverse=True)
    order = np.argsort(inv, kind="stable")
    sizes = np.bincount(inv)
    return rows[order], np.concatenate([[0], np.cumsum(sizes)[:-1]]), sizes


def _draw_clusters(rng: np.random.Generator, ordered: np.ndarray, starts: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Rows of as many clusters as there are, drawn with replacement (vectorised)."""
    pick = rng.integers(0, len(sizes), len(sizes))
    size = sizes[pick]
    offset = np.arange(int(size.sum())) - np.repeat(np.cumsum(size) - size, size)
    return ordered[np.repeat(starts[pick], size) + offset]


def bootstrap_table_ci(
    table: pd.DataFrame | Mapping[str, Sequence[object] | np.ndarray],
    statistic: Callable[[dict[str, np.ndarray]], float],
    *,
    columns: Sequence[str] | None = None,
    strata: str | None = None,
    clusters: str | None = None,
    confidence: float = CONFIDENCE,
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
) -> Interval:
    """Percentile bootstrap of a statistic of a whole item table (Efron & Tibshirani 1993).

    For metrics that are not a mean of per-item values — ratios such as BBQ's bias scores, a
    largest between-group gap — the rows are resampled with replacement (within each value of
    the column ``strata``, so that every stratum keeps its size) and ``statistic`` is recomputed
    on a dict of column arrays. ``columns`` limits the columns copied per resample (speed).
    Resamples on which the statistic is NaN are dropped. With ``clusters`` (a column of cluster
    ids, e.g. the template an item was filled from) whole clusters are resampled instead of rows
    (the cluster bootstrap, Davison & Hinkley 1997 §3.8): items of one template are not
    independent evidence.
    """
    cols = _table_columns(table, columns, strata, clusters)
    n = len(next(iter(cols.values()))) if cols else 0
    if n == 0:
        return Interval(float("nan"), float("nan"), "none (no data)")
    point = float(statistic(cols))
    if n < 2:
        return Interval(point, point, "degenerate (n < 2)")
    groups = _strata_indices(cols, n, strata)
    units = None if clusters is None else [_cluster_rows(g, cols[clusters][g]) for g in groups]
    rng = np.random.default_rng(seed)
    vals = np.empty(n_resamples)
    for r in range(n_resamples):
        if units is None:
            idx = np.concatenate([g[rng.integers(0, len(g), len(g))] for g in groups])
        else:
            idx = np.concatenate([_draw_clusters(rng, *u) for u in units])
        vals[r] = statistic({k: v[idx] for k, v in cols.items()})
    vals = vals[~np.isnan(vals)]
    if vals.size == 0:
        return Interval(float("nan"), float("nan"), "bootstrap percentile (statistic undefined)")
    if np.all(vals == vals[0]):
        return Interval(float(vals[0]), float(vals[0]), "degenerate (all resamples equal)")
    a = (1 - confidence) / 2
    lo, hi = np.quantile(vals, [a, 1 - a])
    method = "bootstrap percentile" + (f" (stratified by {strata})" if strata else "")
    if units is not None:
        method = f"cluster bootstrap percentile ({sum(len(u[2]) for u in units)} clusters)"
    return Interval(float(lo), float(hi), method)


def permutation_table_test(
    table: pd.DataFrame | Mapping[str, Sequence[object] | np.ndarray],
    statistic: Callable[[dict[str, np.ndarray]], float],
    *,
    permute: str,
    columns: Sequence[str] | None = None,
    strata: str | None = None,
    alternative: str = "greater",
    n_resamples: int = 5000,
    seed: int = 0,
) -> float:
    """Monte Carlo permutation test of a table statistic: the column ``permute`` (group labels)
    is shuffled, within each value of ``strata``, and the statistic recomputed.

    ``alternative="greater"`` counts permuted statistics ≥ the observed one (e.g. a max − min
    gap); ``"two-sided"`` compares absolute values. p = (1 + hits) / (1 + n_resamples)
    (Phipson & Smyth 2010), so it is never 0.
    """
    if alternative not in ("greater", "less", "two-sided"):
        raise ValueError(f"alternative must be greater, less or two-sided, got {alternative!r}")
    cols = _table_columns(table, columns, permute, strata)
    n = len(cols[permute])
    if n == 0:
        return float("nan")
    observed = float(statistic(cols))
    if np.isnan(observed):
        return float("nan")
    groups = _strata_indices(cols, n, strata)
    rng = np.random.default_rng(seed)
    labels = cols[permute]
    vals = np.empty(n_resamples)
    for r in range(n_resamples):
        shuffled = labels.copy()
        for g in groups:
            shuffled[g] = labels[g[rng.permutation(len(g))]]
        vals[r] = statistic({**cols, permute: shuffled})
    hits = {"greater": vals >= observed - 1e-12, "less": vals <= observed + 1e-12,
            "two-sided": np.abs(vals) >= abs(observed) - 1e-12}[alternative]
    return (1 + int(hits.sum())) / (1 + n_resamples)


def cluster_proportion_test(
    hits: Sequence[bool] | np.ndarray, clusters: Sequence[object] | np.ndarray, null: float = 0.5
) -> tuple[float, str]:
    """Two-sided test of a pooled proportion k / n against ``null`` when the items come in
    clusters (e.g. BBQ templates): the ratio estimator's cluster-robust (sandwich) standard error
    sqrt(C / (C − 1) · Σ_c (k_c − r·n_c)²) / n, referred to Student's t with C − 1 degrees of
    freedom (Cameron & Miller 2015, "A Practitioner's Guide to Cluster-Robust Inference"). With
    one item per cluster, or no spread between clusters, it is the exact binomial test.
    Returns (p, test description)."""
    h = np.asarray(hits, dtype=bool)
    c = np.asarray(clusters, dtype=object).astype(str)
    n, k = int(h.size), int(h.sum())
    if n == 0:
        return float("nan"), ""
    _, inv = np.unique(c, return_inverse=True)
    n_c = np.bincount(inv).astype(np.float64)
    k_c = np.bincount(inv, weights=h.astype(np.float64))
    m = len(n_c)
    exact = (binomial_test(k, n, null), f"exact binomial ({k}/{n}) vs {null:g}")
    if m == n or m < 2:
        return exact
    r = k / n
    se = float(np.sqrt(m / (m - 1) * np.sum((k_c - r * n_c) ** 2)) / n)
    if se == 0:
        return exact
    t = (r - null) / se
    return float(2 * st.t.sf(abs(t), m - 1)), f"cluster-robust t ({k}/{n} in {m} clusters) vs {null:g}"


@lru_cache(maxsize=256)
def _max_range_quantile(sizes: tuple[int, ...], confidence: float) -> float:
    """c such that P(every family's studentized range ≤ c·√2) = ``confidence`` for independent
    families of ``sizes`` normal means (df = ∞)."""
    ks = [int(k) for k in sizes if k >= 2]

    def cover(c: float) -> float:
        return float(np.prod([st.studentized_range.cdf(c * np.sqrt(2), k, np.inf) for k in ks])) - confidence

    return float(brentq(cover, 0.5, 12.0, xtol=1e-6))


def simultaneous_gap_ci(
    k: Sequence[int] | np.ndarray, n: Sequence[int] | np.ndarray, family: Sequence[int] | np.ndarray, *,
    confidence: float = CONFIDENCE, scale: float = 1.0,
) -> Interval:
    """CI for the largest between-group gap in a rate, max over families (e.g. BOLD domains) of
    max − min of the family's group rates, valid although the gap is a maximum.

    A percentile bootstrap of a max − min is biased upward (its lower bound sits above 0 when every
    group has the same rate). Here every pairwise difference pᵢ − pⱼ within a family gets an
    Agresti–Caffo interval (each rate (kᵢ + 1) / (nᵢ + 2); Agresti & Caffo 2000) whose critical
    value makes them simultaneous over every pair of every family — the Tukey–Kramer studentized
    range (Hayter 1984), families independent. When all of them hold, the true gap max |pᵢ − pⱼ|
    lies between the largest lower bound of |pᵢ − pⱼ| (0 for an interval containing 0) and the
    largest upper bound, so the interval covers it with at least ``confidence`` (the calibration
    benchmark measures how much more)."""
    k_ = np.asarray(k, dtype=np.float64)
    n_ = np.asarray(n, dtype=np.float64)
    fam = np.asarray(family)
    sizes = [int((fam == f).sum()) for f in pd.unique(fam)]
    if max(sizes, default=0) < 2:
        return Interval(float("nan"), float("nan"), "none (no family with two groups)")
    c = _max_range_quantile(tuple(sorted(sizes)), confidence)
    p = (k_ + 1) / (n_ + 2)
    v = p * (1 - p) / (n_ + 2)
    lo_all, hi_all = 0.0, 0.0
    for f in pd.unique(fam):
        idx = np.flatnonzero(fam == f)
        if len(idx) < 2:
            continue
        i, j = np.triu_indices(len(idx), 1)
        d = p[idx[i]] - p[idx[j]]
        h = c * np.sqrt(v[idx[i]] + v[idx[j]])
        lo_all = max(lo_all, float(np.max(np.maximum(np.abs(d) - h, 0.0))))
        hi_all = max(hi_all, float(np.max(np.abs(d) + h)))
    return Interval(lo_all * scale, min(hi_all, 1.0) * scale,
                    f"simultaneous Tukey–Kramer/Agresti–Caffo pairwise intervals ({sum(sizes)} groups)")


# --------------------------------------------------------------------------------------------
# metric builders: one way to turn item scores into a MetricValue
# --------------------------------------------------------------------------------------------


def _location_test(test: str, values: Sequence[float] | np.ndarray, against: str) -> tuple[float, str]:
    """(p, name) of the ``test`` (``wilcoxon``, ``sign``, ``t`` or ``none``) of ``values`` vs 0."""
    if test == "none":
        return float("nan"), ""
    fn, label = {"wilcoxon": (wilcoxon_test, "Wilcoxon signed-rank"), "sign": (sign_test, "sign test"),
                 "t": (one_sample_t, "one-sample t")}[test]
    return fn(values), f"{label} {against}"


def rate_metric(
    info: MetricInfo,
    hits: Sequence[bool] | np.ndarray,
    *,
    seed: int = 0,
    scale: float = 100.0,
    null_rate: float = 0.5,
) -> MetricValue:
    """A preference rate in % with a Wilson score CI (never zero width, also at 0/n and n/n) and an
    exact binomial test against ``null_rate``."""
    h = np.asarray(hits, dtype=bool)
    n = int(h.size)
    if n == 0:
        return MetricValue.from_info(info, float("nan"), n=0, warning="no items")
    k = int(h.sum())
    ci = wilson_ci(k, n)
    return MetricValue.from_info(
        info,
        scale * k / n,
        ci_low=ci.low * scale,
        ci_high=ci.high * scale,
        n=n,
        p_value=binomial_test(k, n, null_rate),
        test=f"exact binomial vs {scale * null_rate:g}{info.unit}",
        ci_method=ci.method,
        warning=small_n_warning(n),
    )


def mean_metric(
    info: MetricInfo,
    values: Sequence[float] | np.ndarray,
    *,
    seed: int = 0,
    test: str = "wilcoxon",
    transform: Callable[[np.ndarray], np.ndarray] | None = None,
) -> MetricValue:
    """Mean of item values with a bootstrap CI; ``test`` is run on the raw values against 0
    (``wilcoxon``, ``sign``, ``t`` or ``none``). ``transform`` (e.g. ``np.abs``) is applied before
    averaging, not before testing."""
    raw = np.asarray(values, dtype=np.float64)
    raw = raw[~np.isnan(raw)]
    n = int(raw.size)
    if n == 0:
        return MetricValue.from_info(info, float("nan"), n=0, warning="no items")
    x = transform(raw) if transform is not None else raw
    ci = bootstrap_ci(x, seed=seed)
    p, tname = _location_test(test, raw, "vs 0")
    return MetricValue.from_info(
        info, float(x.mean()), ci_low=ci.low, ci_high=ci.high, n=n, p_value=p, test=tname,
        ci_method=ci.method, warning=small_n_warning(n, method="bootstrap" if ci.method.startswith("bootstrap") else None),
    )


def group_breakdown(
    items: pd.DataFrame,
    by: str,
    metrics: Mapping[str, Callable[[pd.DataFrame], MetricValue]],
) -> pd.DataFrame:
    """Per-group metrics as the long ``breakdown`` table, p-values BH-adjusted per metric."""
    rows = []
    for group, df in items.groupby(by, sort=True, dropna=False):
        for name, fn in metrics.items():
            mv = fn(df)
            rows.append({"group_by": by, "group": str(group), "metric": name, "value": mv.value,
                         "ci_low": mv.ci_low, "ci_high": mv.ci_high, "n": mv.n, "p_value": mv.p_value})
    out = pd.DataFrame(rows, columns=["group_by", "group", "metric", "value", "ci_low", "ci_high", "n", "p_value"])
    out["p_adjusted"] = out.groupby("metric", sort=False)["p_value"].transform(
        lambda p: benjamini_hochberg(p.to_numpy(dtype=float)))
    return out


def cluster_mean_metric(
    info: MetricInfo,
    values: Sequence[float] | np.ndarray,
    clusters: Sequence[object] | np.ndarray,
    *,
    seed: int = 0,
    test: str = "wilcoxon",
    null: float = 0.0,
    scale: float = 1.0,
    transform: Callable[[np.ndarray], np.ndarray] | None = None,
) -> MetricValue:
    """Mean of item values with a cluster-bootstrap CI; the test (``wilcoxon``, ``sign``, ``t`` or
    ``none``) runs on the per-cluster means minus ``null``, so correlated items inside a cluster
    are not counted as independent evidence. ``transform`` (e.g. ``np.abs``) applies before
    averaging, ``scale`` (e.g. 100 for a rate of 0/1 items) multiplies value and bounds. ``n`` is
    the number of items; the small-n warning looks at the number of clusters."""
    raw = np.asarray(values, dtype=np.float64)
    cl = np.asarray(clusters, dtype=object)
    ok = ~np.isnan(raw)
    raw, cl = raw[ok], cl[ok]
    n = int(raw.size)
    if n == 0:
        return MetricValue.from_info(info, float("nan"), n=0, warning="no items")
    x = transform(raw) if transform is not None else raw
    ci = bootstrap_ci(x, clusters=cl, seed=seed, scale=scale)
    _, inv = np.unique(cl.astype(str), return_inverse=True)
    means = np.bincount(inv, weights=raw) / np.bincount(inv)
    k = len(means)
    p, tname = _location_test(test, (means - null).tolist(), f"of {k} cluster means vs {null * scale:g}")
    return MetricValue.from_info(
        info, float(x.mean()) * scale, ci_low=ci.low, ci_high=ci.high, n=n, p_value=p, test=tname,
        ci_method=ci.method, warning=small_n_warning(k, "clusters", method="cluster bootstrap"),
    )
