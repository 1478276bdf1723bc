"""Is the difference between two runs' metrics significant? Tests on stored numbers only.

The Compare page never reruns a probe. For each metric it picks the strongest test the stored
data allow, and names it:

1. **McNemar's exact test** (McNemar 1947) when the metric is the percentage of ``True`` in a
   boolean item column (found by checking ``value == 100 · mean(column)`` and ``n == rows``) and
   both runs scored the same items: the exact binomial test of the discordant pairs.
2. **Two-proportion z-test** (pooled variance) for such a percentage when the items differ.
3. **Wald z-test from the stored 95 % CIs** otherwise: SE ≈ (ci_high − ci_low) / (2 · 1.96),
   z = Δ / √(SE_A² + SE_B²). It assumes roughly normal, independent estimates; a bootstrap CI of a
   paired design makes it conservative.

For a probe whose item tables hold the same items in both runs, the per-item effect named by its
``item_effect`` is compared with the **Wilcoxon signed-rank test** (zeros dropped, as in
Wilcoxon 1945) — a paired test of whether the items' effects moved. P-values across one comparison
are adjusted with Benjamini–Hochberg (1995).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from scipy import stats

from audit.results import MetricValue
from audit.rundir_view import RunView
from audit.stats import benjamini_hochberg, binomial_test, wilcoxon_test
from audit.store import RunDir
from audit.views import fmt_interval, fmt_num, fmt_pval

Z95 = stats.norm.ppf(0.975)
ALPHA = 0.05


@dataclass
class TestResult:
    test: str
    p_value: float | None
    statistic: float | None = None
    detail: str = ""


def adjust(p: list[float | None]) -> list[float | None]:
    """Benjamini–Hochberg adjusted p-values (:func:`audit.stats.benjamini_hochberg`); None stays None."""
    adj = benjamini_hochberg([float("nan") if v is None else v for v in p])
    return [None if math.isnan(v) else float(v) for v in adj]


def wald_from_ci(a: MetricValue, b: MetricValue) -> TestResult:
    """z-test of B − A with standard errors recovered from the stored 95 % CIs."""
    name = "Wald z-test, SEs from the stored 95% CIs"
    ses = []
    for m in (a, b):
        if m.ci_low is None or m.ci_high is None or any(map(_bad, (m.ci_low, m.ci_high, m.value))):
            return TestResult(name, None, detail="a run stored no CI for this metric: not tested")
        ses.append((m.ci_high - m.ci_low) / (2 * Z95))
    se = math.sqrt(ses[0] ** 2 + ses[1] ** 2)
    delta = b.value - a.value
    if se == 0:
        return TestResult(name, None if delta else 1.0,
                          detail="both CIs have zero width: cannot test" if delta else "identical values, zero-width CIs")
    z = delta / se
    return TestResult(name, float(2 * stats.norm.sf(abs(z))), float(z))


def two_proportion_z(x1: int, n1: int, x2: int, n2: int) -> TestResult:
    """Pooled two-proportion z-test of x1/n1 vs x2/n2 (two-sided)."""
    name = "two-proportion z-test (pooled)"
    if n1 <= 0 or n2 <= 0:
        return TestResult(name, None, detail="a sample is empty")
    p = (x1 + x2) / (n1 + n2)
    se = math.sqrt(p * (1 - p) * (1 / n1 + 1 / n2))
    z = (x2 / n2 - x1 / n1) / se if se else 0.0  # se = 0: both samples all 0 or all 1, no difference
    return TestResult(name, float(2 * stats.norm.sf(abs(z))), float(z), f"{x1}/{n1} vs {x2}/{n2}")


def mcnemar_exact(a: pd.Series, b: pd.Series) -> TestResult:
    """McNemar's exact test on paired booleans: binomial test of the discordant pairs at ½."""
    a = a.astype(bool).to_numpy()
    b = b.astype(bool).to_numpy()
    only_a = int((a & ~b).sum())
    only_b = int((~a & b).sum())
    detail = f"discordant pairs: {only_a} only in A, {only_b} only in B (of {len(a)})"
    p = binomial_test(only_b, only_a + only_b, 0.5) if only_a + only_b else 1.0
    return TestResult("McNemar exact test (paired items)", p, float(only_b - only_a), detail)


def _bad(x: Any) -> bool:
    try:
        return math.isnan(float(x))
    except (TypeError, ValueError):
        return True


def proportion_column(metric: MetricValue, items: pd.DataFrame | None) -> str | None:
    """The boolean item column whose percentage of True the metric is, if one is (exactly)."""
    if items is None or len(items) == 0 or _bad(metric.value):
        return None
    if metric.n is not None and metric.n != len(items):
        return None
    for c in items.columns:
        s = items[c]
        if pd.api.types.is_bool_dtype(s) and s.notna().all():
            if abs(100.0 * float(s.mean()) - float(metric.value)) < 1e-6:
                return str(c)
    return None


def pair_items(a: pd.DataFrame, b: pd.DataFrame, keys: list[str]) -> pd.DataFrame | None:
    """Rows of A and B matched on ``keys`` (duplicates matched in order) when both hold the same items.

    Returns a frame with columns suffixed ``_a``/``_b``, or None when the item sets differ.
    """
    if not keys or len(a) != len(b) or not all(k in a.columns and k in b.columns for k in keys):
        return None
    a = a.assign(_occ=a.groupby(keys, dropna=False).cumcount())
    b = b.assign(_occ=b.groupby(keys, dropna=False).cumcount())
    merged = a.merge(b, on=[*keys, "_occ"], how="inner", suffixes=("_a", "_b"))
    if len(merged) != len(a):
        return None
    return merged


def wilcoxon_items(paired: pd.DataFrame, effect: str) -> TestResult:
    """Wilcoxon signed-rank test of the per-item effect B − A over paired items."""
    name = f"Wilcoxon signed-rank on paired per-item {effect}"
    ca, cb = f"{effect}_a", f"{effect}_b"
    if ca not in paired.columns or cb not in paired.columns:
        return TestResult(name, None, detail=f"column {effect} missing")
    d = (pd.to_numeric(paired[cb], errors="coerce") - pd.to_numeric(paired[ca], errors="coerce")).dropna()
    nz = d[d != 0]
    detail = f"{len(d)} paired items, {len(nz)} changed; median Δ = {fmt_num(d.median() if len(d) else None)}"
    if len(d) == 0:
        return TestResult(name, None, detail="no paired values")
    return TestResult(name, wilcoxon_test(d.to_numpy()), None, detail)


def compare_metric(a: MetricValue, b: MetricValue, items_a: pd.DataFrame | None,
                   items_b: pd.DataFrame | None, paired: pd.DataFrame | None) -> TestResult:
    """The test for one metric of two runs (see the module docstring for the order)."""
    ca, cb = proportion_column(a, items_a), proportion_column(b, items_b)
    if ca is not None and ca == cb:
        if paired is not None and f"{ca}_a" in paired.columns and f"{ca}_b" in paired.columns:
            r = mcnemar_exact(paired[f"{ca}_a"], paired[f"{ca}_b"])
        else:
            assert items_a is not None and items_b is not None
            r = two_proportion_z(int(items_a[ca].sum()), len(items_a), int(items_b[ca].sum()), len(items_b))
        r.detail = f"% of {ca}; " + r.detail
        return r
    return wald_from_ci(a, b)


def closer_to_ideal(a: MetricValue, b: MetricValue) -> str:
    """Which run is better by the metric's own metadata: 'A', 'B', 'same' or '' (unknown)."""
    if _bad(a.value) or _bad(b.value):
        return ""
    if a.higher_is_better is True:
        return "B" if b.value > a.value else "A" if a.value > b.value else "same"
    if a.higher_is_better is False:
        return "B" if b.value < a.value else "A" if a.value < b.value else "same"
    if a.ideal is None:
        return ""
    da, db = abs(a.value - a.ideal), abs(b.value - a.ideal)
    return "B" if db < da else "A" if da < db else "same"


def compare_probe(metrics_a: dict[str, MetricValue], metrics_b: dict[str, MetricValue],
                  items_a: pd.DataFrame | None, items_b: pd.DataFrame | None,
                  keys: list[str]) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """Per-metric comparison table (unadjusted p) and, when items pair up, the paired item table."""
    paired = pair_items(items_a, items_b, keys) if items_a is not None and items_b is not None else None
    rows = []
    for k in [m for m in metrics_a if m in metrics_b]:
        a, b = metrics_a[k], metrics_b[k]
        r = compare_metric(a, b, items_a, items_b, paired)
        rows.append({
            "metric": k, "A": a.value, "A CI": fmt_interval(a.ci_low, a.ci_high), "B": b.value,
            "B CI": fmt_interval(b.ci_low, b.ci_high),
            "delta (B−A)": b.value - a.value, "ideal": a.ideal, "better": closer_to_ideal(a, b),
            "test": r.test, "p_value": r.p_value, "detail": r.detail,
        })
    return pd.DataFrame(rows), paired


def finish_table(df: pd.DataFrame) -> pd.DataFrame:
    """Add BH-adjusted p-values across the whole table and the significance call."""
    if df.empty:
        return df
    adjusted = adjust([None if _bad(p) else float(p) for p in df["p_value"]])
    return df.assign(p_adjusted=adjusted,
                     significant=["not tested" if p is None else ("yes" if p < ALPHA else "no") for p in adjusted])


@dataclass
class Comparison:
    """What :func:`compare_runs` found: the metric ``table`` (empty when no probe compares), the
    paired item test of each probe as one line, the probes not compared and why, and the probes
    that only one run has (name → ``"A"`` or ``"B"``)."""

    table: pd.DataFrame
    item_tests: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    only: dict[str, str] = field(default_factory=dict)


def compare_runs(run_a: RunDir | RunView, run_b: RunDir | RunView) -> Comparison:
    """Every metric of every probe complete in both runs (in run A's order), with the test
    :func:`compare_metric` picks and Benjamini–Hochberg-adjusted p-values across the table, and
    the Wilcoxon test of the probe's ``item_effect`` over paired items (``taudit compare``, the
    dashboard's Compare page). Items pair up by the probe's ``item_text`` columns when both runs
    name the same."""
    va, vb = (rd if isinstance(rd, RunView) else RunView(rd) for rd in (run_a, run_b))
    names_a, names_b = va.probe_names(), vb.probe_names()
    out = Comparison(pd.DataFrame(), only={n: "A" if n in names_a else "B" for n in sorted(set(names_a) ^ set(names_b))})
    frames = []
    for name in [n for n in names_a if n in names_b]:
        a, b = va.probe(name), vb.probe(name)
        if not (a.complete and b.complete):
            out.problems.append(f"{name}: A is {a.status}, B is {b.status} — not compared")
            continue
        items_a, items_b = a.items()[0], b.items()[0]
        keys = a.item_text if a.item_text == b.item_text else []
        table, paired = compare_probe(a.metrics, b.metrics, items_a, items_b, keys)
        if table.empty:
            out.problems.append(f"{name}: no metric in common")
            continue
        frames.append(table.assign(probe=name))
        if paired is not None and a.item_effect and a.item_effect == b.item_effect:
            r = wilcoxon_items(paired, a.item_effect)
            out.item_tests[name] = f"{r.test}: p = {fmt_pval(r.p_value)} ({r.detail})"
        elif items_a is not None and items_b is not None and paired is None:
            out.item_tests[name] = "The runs scored different items: no paired item test."
    if frames:
        df = pd.concat(frames, ignore_index=True)
        out.table = finish_table(df[["probe", *[c for c in df.columns if c != "probe"]]])
    return out
