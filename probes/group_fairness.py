"""Group fairness of a classifier's decisions, from arrays of labels, decisions, scores and groups
alone (no model): the statistics of the ``classifier_fairness`` probe.

Per group of the attribute column (``fairlearn.metrics.MetricFrame``): accuracy, selection rate
P(ŷ=1), true-positive rate P(ŷ=1 | y=1) and false-positive rate P(ŷ=1 | y=0). Summary:

* demographic parity difference / ratio — max − min and min / max of the group selection
  rates (fairlearn ``demographic_parity_difference`` / ``_ratio``);
* equalized odds difference / ratio (Hardt et al. 2016, "Equality of Opportunity in Supervised
  Learning") — the larger of the TPR and FPR differences, the smaller of the two ratios
  (fairlearn ``equalized_odds_difference`` / ``_ratio``, worst case);
* accuracy difference — max − min group accuracy;
* subgroup AUC, BPSN AUC and BNSP AUC (Borkan et al. 2019, "Nuanced Metrics for Measuring
  Unintended Bias with Real Data for Text Classification", WWW '19 Companion), computed with
  scikit-learn's ``roc_auc_score`` on the score of the positive class: subgroup AUC on the
  group's rows only; BPSN (background positive, subgroup negative) on the group's negatives and
  everyone else's positives — low when the group's negatives score higher than the background's
  positives (false-positive bias); BNSP on the group's positives and everyone else's negatives —
  low for false-negative bias. The summary reports the worst (minimum) group of each.

Conventions, as fairlearn defines them: a rate whose denominator is empty (a group without
positives has no TPR) is 0, and a ratio with a zero maximum is undefined (NaN); the probe warns
in both cases. An AUC needs both classes among its rows; otherwise it is NaN with a warning.

Uncertainty: the three differences (demographic parity, equalized odds, accuracy) are a largest
gap between group rates, whose percentile bootstrap sits above 0 when no group differs; they get
a simultaneous interval instead (every pairwise difference of the group rates — for equalized
odds of the TPRs and of the FPRs — an Agresti–Caffo interval, simultaneous by the Tukey–Kramer
studentized range, the gap's bounds derived from them; ``audit.stats.simultaneous_gap_ci``; a
rate with an empty denominator is left out of it). Every other summary and per-group metric has
a 95 % percentile bootstrap interval, rows resampled with replacement within each group (group
sizes kept; ``audit.stats.bootstrap_table_ci``, seeded). The group-dependent summary metrics have a Monte Carlo permutation test of "no
difference between groups": the attribute column is shuffled and the metric recomputed
(``audit.stats.permutation_table_test``; one-sided — a gap at least as large, a ratio or minimum
AUC at least as small). The shuffle matches each metric's null: demographic parity's is "the
decision is independent of the group", so labels are shuffled over all rows; for equalized odds,
the accuracy difference and the subgroup / BPSN / BNSP AUCs it is "independent of the group
*given the true label*" (a group with more positives may be selected more), so the attribute is
shuffled within the rows of each true label — a global shuffle would also break the link between
group and label and reject a fair classifier far above the nominal rate. Per-group rates are tested against the rest of the data with Fisher's
exact test, Benjamini–Hochberg adjusted across groups.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from fairlearn.metrics import (
    MetricFrame,
    demographic_parity_difference,
    demographic_parity_ratio,
    equalized_odds_difference,
    equalized_odds_ratio,
    false_positive_rate,
    selection_rate,
    true_positive_rate,
)
from scipy import stats as st
from sklearn.metrics import accuracy_score, roc_auc_score

from audit.results import MetricInfo, MetricValue
from audit.stats import (
    MIN_N,
    Interval,
    bootstrap_table_ci,
    group_breakdown,
    permutation_table_test,
    simultaneous_gap_ci,
    small_n_warning,
    wilson_ci,
)

REF_FAIRLEARN = "fairlearn MetricFrame (Weerts et al. 2023)"
REF_HARDT = "Hardt et al. 2016"
REF_BORKAN = "Borkan et al. 2019"


def _unit_metric(name: str, description: str, ideal: float, reference: str = "") -> MetricInfo:
    """A metric on [0, 1] whose best value is ``ideal`` (1.0: higher is better, 0.0: lower)."""
    return MetricInfo(name, description, ideal=ideal, higher_is_better=ideal == 1.0, range=(0, 1), reference=reference)


METRICS = {m.name: m for m in (
    _unit_metric("accuracy", "share of rows whose positive/negative decision is correct (all groups)", 1.0),
    _unit_metric("auc", "ROC AUC of the positive-class score (all groups)", 1.0),
    _unit_metric("demographic_parity_difference", "largest − smallest group selection rate P(ŷ=1 | group)", 0.0,
                 REF_FAIRLEARN),
    _unit_metric("demographic_parity_ratio", "smallest / largest group selection rate", 1.0, REF_FAIRLEARN),
    _unit_metric("equalized_odds_difference", "larger of the between-group TPR and FPR differences", 0.0, REF_HARDT),
    _unit_metric("equalized_odds_ratio", "smaller of the between-group TPR and FPR ratios", 1.0, REF_HARDT),
    _unit_metric("accuracy_difference", "largest − smallest group accuracy", 0.0, REF_FAIRLEARN),
    _unit_metric("min_subgroup_auc", "worst group's AUC on its own rows", 1.0, REF_BORKAN),
    _unit_metric("min_bpsn_auc", "worst group's BPSN AUC (group negatives vs background positives; low: "
                 "false-positive bias)", 1.0, REF_BORKAN),
    _unit_metric("min_bnsp_auc", "worst group's BNSP AUC (group positives vs background negatives; low: "
                 "false-negative bias)", 1.0, REF_BORKAN),
)}

GROUP_METRICS = {
    "accuracy": "share of correct decisions in the group",
    "selection_rate": "P(ŷ=1 | group)",
    "true_positive_rate": "P(ŷ=1 | y=1, group)",
    "false_positive_rate": "P(ŷ=1 | y=0, group)",
    "subgroup_auc": "AUC on the group's rows",
    "bpsn_auc": "AUC on the group's negatives and the background's positives",
    "bnsp_auc": "AUC on the group's positives and the background's negatives",
}
# metrics whose permutation null is "decision independent of group" (global shuffle); every other
# tested metric's null holds given the true label, so the shuffle stays within each label
_GLOBAL_NULL = ("demographic_parity_difference", "demographic_parity_ratio")
# which one-sided alternative of the permutation test says "bias" for each summary metric
_PERMUTATION_ALTERNATIVE = {
    "demographic_parity_difference": "greater", "equalized_odds_difference": "greater",
    "accuracy_difference": "greater", "demographic_parity_ratio": "less", "equalized_odds_ratio": "less",
    "min_subgroup_auc": "less", "min_bpsn_auc": "less", "min_bnsp_auc": "less",
}


def _code_auc(y: np.ndarray, codes: np.ndarray, k: int) -> float:
    """AUC from scores given as tie codes (index of each score among the sorted distinct
    scores): P(score₊ > score₋) + ½ P(tie), by counting per distinct score, no sort."""
    pos = np.bincount(codes, weights=y, minlength=k)
    neg = np.bincount(codes, weights=~y, minlength=k)
    n1, n0 = pos.sum(), neg.sum()
    if n1 == 0 or n0 == 0:
        return float("nan")
    below = np.cumsum(neg) - neg  # negatives with a strictly lower score
    return float((pos * (below + 0.5 * neg)).sum() / (n1 * n0))


def _sk_auc(y_true: np.ndarray, y_score: np.ndarray) -> float:
    if len(np.unique(y_true)) < 2:
        return float("nan")
    return float(roc_auc_score(y_true, y_score))


def _auc_rows(y: np.ndarray, ing: np.ndarray, which: str) -> np.ndarray:
    """Rows of a group's subgroup / BPSN / BNSP AUC (Borkan et al. 2019)."""
    if which == "subgroup_auc":
        return ing
    if which == "bpsn_auc":  # subgroup negatives, background positives
        return (ing & ~y) | (~ing & y)
    return (ing & y) | (~ing & ~y)  # bnsp: subgroup positives, background negatives


AUC_KINDS = ("subgroup_auc", "bpsn_auc", "bnsp_auc")


def bias_aucs(y_true: np.ndarray, y_score: np.ndarray, groups: np.ndarray) -> pd.DataFrame:
    """Subgroup, BPSN and BNSP AUC of every group (Borkan et al. 2019), one row per group."""
    y = np.asarray(y_true, dtype=bool)
    s = np.asarray(y_score, dtype=np.float64)
    g = np.asarray(groups)
    rows = []
    for grp in sorted(pd.unique(g)):
        ing = g == grp
        rows.append({"group": grp, **{k: _sk_auc(y[m], s[m]) for k in AUC_KINDS for m in [_auc_rows(y, ing, k)]}})
    return pd.DataFrame(rows).set_index("group")


def _fast_rates(y: np.ndarray, p: np.ndarray, codes: np.ndarray, k: int) -> dict[str, np.ndarray]:
    n = np.bincount(codes, minlength=k).astype(np.float64)
    pos = np.bincount(codes, weights=y, minlength=k)
    neg = n - pos
    tp = np.bincount(codes, weights=y & p, minlength=k)
    fp = np.bincount(codes, weights=~y & p, minlength=k)
    correct = np.bincount(codes, weights=y == p, minlength=k)

    def div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.divide(a, b, out=np.zeros_like(a), where=b > 0)

    return {"accuracy": div(correct, n), "selection_rate": div(tp + fp, n), "true_positive_rate": div(tp, pos),
            "false_positive_rate": div(fp, neg), "n": n, "n_positive": pos, "n_negative": neg}


def group_rates(y_true: np.ndarray, y_pred: np.ndarray, groups: np.ndarray) -> pd.DataFrame:
    """Accuracy, selection rate, TPR and FPR per group by counting, with fairlearn's convention
    that an empty denominator gives 0 — the fast path of the bootstrap; equal to MetricFrame."""
    keys, codes = np.unique(np.asarray(groups), return_inverse=True)
    r = _fast_rates(np.asarray(y_true, dtype=bool), np.asarray(y_pred, dtype=bool), codes, len(keys))
    return pd.DataFrame(r, index=pd.Index(keys, name="group"))


def _ratio(x: np.ndarray) -> float:
    mx = float(np.max(x))
    return float(np.min(x)) / mx if mx > 0 else float("nan")


def _fast_metric(name: str, c: dict[str, np.ndarray], k: int, n_scores: int) -> float:
    """One summary metric by counting; ``c`` holds the :func:`_table` columns y, p, u, g of rows
    from ``k`` groups and ``n_scores`` distinct scores."""
    y, p, u, g = c["y"], c["p"], c["u"], c["g"]
    if name == "accuracy":
        return float((y == p).mean())
    if name == "auc":
        return _code_auc(y, u, n_scores)
    if name.startswith("min_"):
        which = name[4:]
        return _nanmin([_code_auc(y[m], u[m], n_scores) for j in range(k) for m in [_auc_rows(y, g == j, which)]])
    r = _fast_rates(y, p, g, k)
    tpr, fpr = r["true_positive_rate"], r["false_positive_rate"]
    if name == "demographic_parity_difference":
        return float(np.ptp(r["selection_rate"]))
    if name == "demographic_parity_ratio":
        return _ratio(r["selection_rate"])
    if name == "equalized_odds_difference":
        return max(float(np.ptp(tpr)), float(np.ptp(fpr)))
    if name == "equalized_odds_ratio":
        # fairlearn's worst case is Python's min() over (TPR ratio, FPR ratio), NaN included
        return min(_ratio(tpr), _ratio(fpr))
    if name == "accuracy_difference":
        return float(np.ptp(r["accuracy"]))
    raise KeyError(name)


def summary_from_arrays(
    y_true: np.ndarray, y_pred: np.ndarray, y_score: np.ndarray, groups: np.ndarray, *, fast: bool = False
) -> dict[str, float]:
    """Every summary metric's point value. ``fast=False`` computes them with fairlearn and
    scikit-learn (the reference); ``fast=True`` by counting and rank AUCs (the code inside the
    bootstrap and permutation loops; the tests check both agree)."""
    if fast:
        tab = _table(y_true, y_pred, y_score, groups)
        k, n_scores = int(tab["g"].max()) + 1, int(tab["u"].max()) + 1
        return {name: _fast_metric(name, tab, k, n_scores) for name in METRICS}
    y = np.asarray(y_true, dtype=int)
    p = np.asarray(y_pred, dtype=int)
    s = np.asarray(y_score, dtype=np.float64)
    g = np.asarray(groups)
    kw = {"sensitive_features": g}
    mf = MetricFrame(metrics=accuracy_score, y_true=y, y_pred=p, sensitive_features=g)
    aucs = bias_aucs(y, s, g)
    return {
        "accuracy": float(accuracy_score(y, p)),
        "auc": _sk_auc(y, s),
        "demographic_parity_difference": float(demographic_parity_difference(y, p, **kw)),
        "demographic_parity_ratio": float(demographic_parity_ratio(y, p, **kw)),
        "equalized_odds_difference": float(equalized_odds_difference(y, p, **kw)),
        "equalized_odds_ratio": float(equalized_odds_ratio(y, p, **kw)),
        "accuracy_difference": float(mf.difference()),
        **{f"min_{k}": float(aucs[k].min()) for k in AUC_KINDS},
    }


def metric_frame(y_true: np.ndarray, y_pred: np.ndarray, groups: np.ndarray) -> MetricFrame:
    """fairlearn's per-group table: accuracy, selection rate, TPR, FPR."""
    return MetricFrame(
        metrics={"accuracy": accuracy_score, "selection_rate": selection_rate,
                 "true_positive_rate": true_positive_rate, "false_positive_rate": false_positive_rate},
        y_true=np.asarray(y_true, dtype=int), y_pred=np.asarray(y_pred, dtype=int),
        sensitive_features=np.asarray(groups),
    )


def _table(y_true: np.ndarray, y_pred: np.ndarray, y_score: np.ndarray, groups: np.ndarray) -> dict[str, np.ndarray]:
    """Column arrays for the resampling loops: y, p (bool), s (score), u (tie code of the score,
    see :func:`_code_auc`), g (integer group code, groups in sorted order)."""
    _, codes = np.unique(np.asarray(groups).astype(str), return_inverse=True)
    s = np.asarray(y_score, dtype=np.float64)
    _, u = np.unique(s, return_inverse=True)
    return {"y": np.asarray(y_true, dtype=bool), "p": np.asarray(y_pred, dtype=bool), "s": s,
            "u": u.astype(np.int64), "g": codes.astype(np.int64)}


_RESAMPLED = ["y", "p", "u", "g"]


def _nanmin(values: list[float]) -> float:
    v = np.asarray(values, dtype=np.float64)
    v = v[~np.isnan(v)]
    return float(v.min()) if v.size else float("nan")


# the rate families whose largest between-group gap each difference metric is: (event, denominator)
_GAP_FAMILIES: dict[str, list[tuple[str, str]]] = {
    "demographic_parity_difference": [("selected", "all")],
    "equalized_odds_difference": [("tp", "positive"), ("fp", "negative")],
    "accuracy_difference": [("correct", "all")],
}


def _gap_ci(name: str, tab: dict[str, np.ndarray], k: int) -> Interval:
    """Simultaneous CI of a difference metric from the group counts (empty denominators left out)."""
    y, p, g = tab["y"], tab["p"], tab["g"]
    events = {"selected": p, "tp": y & p, "fp": ~y & p, "correct": y == p}
    dens = {"all": np.ones_like(y), "positive": y, "negative": ~y}
    hits, totals, family = [], [], []
    for f, (ev, den) in enumerate(_GAP_FAMILIES[name]):
        n = np.bincount(g, weights=dens[den], minlength=k)
        keep = n > 0
        hits.append(np.bincount(g, weights=events[ev], minlength=k)[keep])
        totals.append(n[keep])
        family.append(np.full(int(keep.sum()), f))
    return simultaneous_gap_ci(np.concatenate(hits), np.concatenate(totals), np.concatenate(family))


def summary_metric(
    name: str, tab: dict[str, np.ndarray], value: float, *, seed: int = 0, n_resamples: int = 1000,
    n_permutations: int = 1000,
) -> MetricValue:
    """One summary metric of the :func:`_table` columns ``tab`` with its point ``value``: the CI
    (simultaneous for the gaps, stratified bootstrap otherwise) and the permutation test (the
    attribute shuffled within each true label, except for demographic parity)."""
    k, n_scores = int(tab["g"].max()) + 1, int(tab["u"].max()) + 1

    def stat(c: dict[str, np.ndarray]) -> float:
        return _fast_metric(name, c, k, n_scores)

    if name in _GAP_FAMILIES:
        ci = _gap_ci(name, tab, k)
    else:
        ci = bootstrap_table_ci(tab, stat, columns=_RESAMPLED, strata="g", n_resamples=n_resamples, seed=seed)
    alt = _PERMUTATION_ALTERNATIVE.get(name)
    pval, test = None, ""
    if alt is not None and not np.isnan(value):
        within = name not in _GLOBAL_NULL
        pval = permutation_table_test(tab, stat, permute="g", columns=_RESAMPLED, alternative=alt,
                                      strata="y" if within else None, n_resamples=n_permutations, seed=seed)
        test = (f"permutation of group labels{' within each true label' if within else ''} "
                f"({n_permutations}), one-sided ({alt})")
    warn = "" if not np.isnan(value) else "undefined on this data"
    return MetricValue.from_info(METRICS[name], value, ci_low=ci.low, ci_high=ci.high, n=int(tab["y"].size),
                                 p_value=pval, test=test, ci_method=ci.method, warning=warn)


def fairness_summary(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    y_score: np.ndarray,
    groups: np.ndarray,
    *,
    seed: int = 0,
    n_resamples: int = 1000,
    n_permutations: int = 1000,
) -> tuple[dict[str, MetricValue], list[str]]:
    """Summary metrics (fairlearn / scikit-learn values) with CIs (simultaneous for the gaps,
    stratified bootstrap otherwise) and group-permutation p-values, from arrays alone — no model
    needed."""
    tab = _table(y_true, y_pred, y_score, groups)
    point = summary_from_arrays(y_true, y_pred, y_score, np.asarray(groups).astype(str))
    out = {name: summary_metric(name, tab, point[name], seed=seed, n_resamples=n_resamples,
                                n_permutations=n_permutations) for name in METRICS}
    warnings: list[str] = []
    for grp, r in group_rates(tab["y"], tab["p"], np.asarray(groups).astype(str)).iterrows():
        if r["n"] < MIN_N:
            warnings.append(small_n_warning(int(r["n"]), f"group {grp!r}"))
        if r["n_positive"] == 0:
            warnings.append(f"group {grp!r} has no positive rows: its TPR is set to 0 (fairlearn) and its "
                            "subgroup and BNSP AUC are undefined")
        if r["n_negative"] == 0:
            warnings.append(f"group {grp!r} has no negative rows: its FPR is set to 0 (fairlearn) and its "
                            "subgroup and BPSN AUC are undefined")
    if tab["p"].all() or not tab["p"].any():
        warnings.append("the model gives every row the same decision: the selection-rate ratio is undefined")
    return out, warnings


def group_metrics(
    y_true: np.ndarray, y_pred: np.ndarray, y_score: np.ndarray, groups: np.ndarray, *, seed: int = 0,
    n_resamples: int = 1000,
) -> dict[str, dict[str, MetricValue]]:
    """Per-group metrics {group: {metric: MetricValue}}: the MetricFrame rates with Wilson
    intervals, each tested against the rest of the data (Fisher exact); the Borkan AUCs with
    stratified-bootstrap intervals."""
    names = np.asarray(groups).astype(str)
    tab = _table(y_true, y_pred, y_score, names)
    y, p = tab["y"], tab["p"]
    n_scores = int(tab["u"].max()) + 1
    mf = metric_frame(y, p, names).by_group
    aucs = bias_aucs(y, tab["s"], names)
    # rows that count for each rate (denominator) and the event counted (numerator)
    denominators = {"accuracy": np.ones_like(y), "selection_rate": np.ones_like(y), "true_positive_rate": y,
                    "false_positive_rate": ~y}
    events = {"accuracy": y == p, "selection_rate": p, "true_positive_rate": p, "false_positive_rate": p}
    out: dict[str, dict[str, MetricValue]] = {}
    for code, grp in enumerate(np.unique(names)):
        ing = tab["g"] == code
        out[grp] = {}
        for name, desc in GROUP_METRICS.items():
            if name in AUC_KINDS:

                def stat(c: dict[str, np.ndarray], code: int = code, name: str = name) -> float:
                    rows = _auc_rows(c["y"], c["g"] == code, name)
                    return _code_auc(c["y"][rows], c["u"][rows], n_scores)

                ci = bootstrap_table_ci(tab, stat, columns=_RESAMPLED, strata="g", n_resamples=n_resamples,
                                        seed=seed)
                out[grp][name] = MetricValue(value=float(aucs.loc[grp, name]), ci_low=ci.low, ci_high=ci.high,
                                             n=int(_auc_rows(y, ing, name).sum()), ci_method=ci.method,
                                             description=desc)
                continue
            den = denominators[name].astype(bool)
            a, b = ing & den, ~ing & den
            hit = events[name].astype(bool)
            k_in, n_in = int((a & hit).sum()), int(a.sum())
            ci = wilson_ci(k_in, n_in)
            pval, test = None, ""
            if n_in and b.any():
                table = [[k_in, n_in - k_in], [int((b & hit).sum()), int((b & ~hit).sum())]]
                pval, test = float(st.fisher_exact(table).pvalue), "Fisher exact, group vs rest"
            out[grp][name] = MetricValue(value=float(mf.loc[grp, name]), ci_low=ci.low, ci_high=ci.high, n=n_in,
                                         p_value=pval, test=test, ci_method=ci.method, description=desc)
    return out


def fairness_breakdown(
    items: pd.DataFrame, by: list[str], *, seed: int = 0, n_resamples: int = 1000
) -> pd.DataFrame:
    """The long breakdown table: every :data:`GROUP_METRICS` metric per group of each column.
    Rows with an empty value in a column are left out of that column's breakdown (e.g. ``race``
    in the built-in data, which only first names carry); a column with fewer than two groups
    left is skipped."""
    frames = []
    for col in by:
        sub = items[items[col].astype(str).str.strip() != ""]
        sub = sub.assign(**{col: sub[col].astype(str)})
        if sub[col].nunique() < 2:
            continue
        per = group_metrics(sub["y_true"].to_numpy(), sub["y_pred"].to_numpy(), sub["y_score"].to_numpy(),
                            sub[col].to_numpy(), seed=seed, n_resamples=n_resamples)
        fns = {name: (lambda d, name=name, col=col, per=per: per[str(d[col].iloc[0])][name]) for name in GROUP_METRICS}
        frames.append(group_breakdown(sub, col, fns))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
