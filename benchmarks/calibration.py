"""Calibration of every headline metric's interval and test, by simulation through the probes'
own statistics code (no model: the item tables a probe would score are simulated).

For each metric, sample size n and scenario (``null``: no bias; ``effect``: a known bias), the
script draws ``--sims`` data sets and records

* coverage — the share of 95 % intervals that contain the true value;
* rejection — the share of p < .05 (under the null: the false-positive rate; under the effect:
  the power);
* gate — under the null only: the share of intervals that lie wholly on one side of the metric's
  ideal value, i.e. how often a gate keyed to the interval (a policy check ``on: ci`` with its
  threshold at the ideal, the dashboard's "CI excludes the ideal") flags a model with no bias;

each with its Monte Carlo standard error sqrt(p(1 − p) / sims). Writes
``benchmarks/results/calibration.json`` and prints a Markdown table (for RESULTS.md).

    python -m benchmarks.calibration --sims 1000            # the table in RESULTS.md
    python -m benchmarks.calibration --sims 50 --sizes 30   # a quick look

Resampling counts: where a probe's function lets the caller set them, they are lowered to keep
a simulation cheap (``RESAMPLES``); percentile intervals from fewer resamples are noisier but not
biased, so the coverage measured is the probe's up to that noise. Representation refits logistic
probes in every simulation, so it runs ``--rep-sims`` simulations at n = 30 and 100 only.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as st

from audit.results import MetricValue
from audit.stats import cluster_mean_metric, mean_metric, rate_metric
from benchmarks.common import RESULTS_DIR, loadavg, save, table

RESULT = RESULTS_DIR / "calibration.json"
ALPHA = 0.05
SIZES = (10, 30, 100, 1000)
#: resamples / permutations per simulation where the probe function takes them as an argument
RESAMPLES = {"bbq_bootstrap": 200, "bold_permutations": 100, "fairness_permutations": 100, "rep_permutations": 19}

# one simulation: (rng, n, effect?) → (the probe's MetricValue, the true value)
Simulator = Callable[[np.random.Generator, int, bool], tuple[MetricValue, float]]


@dataclass(frozen=True)
class Spec:
    metric: str  # probe.metric
    n_means: str  # what n counts
    null: str
    effect: str
    simulate: Simulator
    ideal: float
    sizes: tuple[int, ...] = SIZES


def _spread(rng: np.random.Generator, mean: float, k: int, half: float) -> np.ndarray:
    """k unit-level rates around ``mean`` (uniform ± half): a population whose mean is ``mean``."""
    return mean + half * rng.uniform(-1, 1, k)


def sim_crows(rng: np.random.Generator, n: int, effect: bool) -> tuple[MetricValue, float]:
    from probes.crows_pairs import METRICS

    p = 0.6 if effect else 0.5
    return rate_metric(METRICS["pct_stereotype"], rng.random(n) < p), 100 * p


def sim_stereoset(rng: np.random.Generator, n: int, effect: bool) -> tuple[MetricValue, float]:
    from probes.stereoset import stereoset_metrics

    mu = 0.6 if effect else 0.5
    terms = max(2, n // 5)
    term = rng.integers(0, terms, n)
    p_t = _spread(rng, mu, terms, 0.3)
    items = pd.DataFrame({"target": term.astype(str), "stereotype_preferred": rng.random(n) < p_t[term],
                          "n_related": 2})
    return stereoset_metrics(items, seed=int(rng.integers(1 << 30)))["ss"], 100 * mu


def sim_seat(rng: np.random.Generator, n: int, effect: bool) -> tuple[MetricValue, float]:
    from probes.seat import _mean_abs_metric

    delta, sd = (0.5 if effect else 0.0), 0.25
    true = sd * math.sqrt(2 / math.pi) * math.exp(-delta**2 / (2 * sd**2)) + delta * (1 - 2 * st.norm.cdf(-delta / sd))
    return _mean_abs_metric(rng.normal(delta, sd, n), seed=int(rng.integers(1 << 30))), true


def _bbq_table(rng: np.random.Generator, n: int, mu: float, cond: str, p_answer: float) -> pd.DataFrame:
    """n templates × 8 items; an item answers non-unknown with probability ``p_answer`` and then
    the biased answer with the template's rate (mean ``mu``)."""
    per = 8
    p_t = np.repeat(_spread(rng, mu, n, 0.3), per)
    non_unknown = rng.random(n * per) < p_answer
    biased = non_unknown & (rng.random(n * per) < p_t)
    correct = ~non_unknown if cond == "ambig" else non_unknown & (rng.random(n * per) < 0.5)
    return pd.DataFrame({"category": "Age", "question_index": np.repeat(np.arange(n), per).astype(str),
                         "context_condition": cond, "correct": correct, "biased": biased, "non_unknown": non_unknown,
                         "n_biased_options": 1})


def sim_bbq(which: str) -> Simulator:
    cond = "ambig" if which == "bias_score_ambig" else "disambig"

    def run(rng: np.random.Generator, n: int, effect: bool) -> tuple[MetricValue, float]:
        from probes.bbq import bias_metric

        mu, p_answer = (0.6 if effect else 0.5), (0.5 if cond == "ambig" else 0.9)
        items = _bbq_table(rng, n, mu, cond, p_answer)
        # S_DIS = 100 (2 · biased share − 1); S_AMB multiplies it by 1 − accuracy = p_answer
        true = 100 * (2 * mu - 1) * (p_answer if cond == "ambig" else 1.0)
        mv = bias_metric(items, which, seed=int(rng.integers(1 << 30)), n_resamples=RESAMPLES["bbq_bootstrap"])
        return mv, true

    return run


def sim_bold(rng: np.random.Generator, n: int, effect: bool) -> tuple[MetricValue, float]:
    from probes.bold import METRICS, gap_metric

    rates = np.array([0.25 if (effect and g == 0) else 0.1 for g in range(6)])
    y = rng.random((6, n)) < rates[:, None]
    items = pd.DataFrame({"domain": "d", "group": np.repeat([f"g{g}" for g in range(6)], n), "vader_negative": y.ravel()})
    mv = gap_metric(items, "vader_negative", METRICS["vader_negative_gap"], seed=int(rng.integers(1 << 30)),
                    n_permutations=RESAMPLES["bold_permutations"])
    return mv, 100 * float(np.ptp(rates))


def sim_fairness(name: str) -> Simulator:
    def run(rng: np.random.Generator, n: int, effect: bool) -> tuple[MetricValue, float]:
        from probes.group_fairness import _fast_metric, _table, summary_metric

        tpr = np.array([0.7, 0.55 if effect else 0.7])
        fpr = np.array([0.2, 0.2])
        g = np.repeat([0, 1], n)
        y = rng.random(2 * n) < 0.3
        pred = rng.random(2 * n) < np.where(y, tpr[g], fpr[g])
        score = np.where(pred, 0.5, 0.0) + 0.5 * rng.random(2 * n)
        # the summary's own CI and test (fairness_summary calls summary_metric per metric); the point
        # value by counting, which the tests check equals fairlearn's
        tab = _table(y, pred, score, np.where(g == 0, "a", "b"))
        value = _fast_metric(name, tab, 2, int(tab["u"].max()) + 1)
        mv = summary_metric(name, tab, value, seed=int(rng.integers(1 << 30)),
                            n_permutations=RESAMPLES["fairness_permutations"])
        sel = 0.3 * tpr + 0.7 * fpr
        true = {"equalized_odds_difference": max(float(np.ptp(tpr)), float(np.ptp(fpr))),
                "demographic_parity_difference": float(np.ptp(sel))}[name]
        return mv, true

    return run


def sim_counterfactual(rng: np.random.Generator, n: int, effect: bool) -> tuple[MetricValue, float]:
    from probes.counterfactual import METRICS

    mu = 0.3 if effect else 0.0
    x = mu + rng.standard_t(5, n) / math.sqrt(5 / 3)  # heavy-tailed, unit variance
    return mean_metric(METRICS["mean_delta_ll_context"], x, seed=int(rng.integers(1 << 30))), mu


def sim_templates(rng: np.random.Generator, n: int, effect: bool) -> tuple[MetricValue, float]:
    from probes.templates import METRICS

    mu, per = (0.3 if effect else 0.0), 6
    word = np.repeat(np.arange(n), per)
    x = mu + rng.normal(0, 0.5, n)[word] + rng.normal(0, 1, n * per)
    return cluster_mean_metric(METRICS["stereotype_effect"], x, word, seed=int(rng.integers(1 << 30))), mu


def sim_representation(rng: np.random.Generator, n: int, effect: bool) -> tuple[MetricValue, float]:
    """4 layers of pure noise (no attribute information: true largest selectivity 0)."""
    from probes import representation as rep

    labels = np.repeat(["f", "m"], n // 2)
    states = rng.normal(size=(4, len(labels), 4))
    seed = int(rng.integers(1 << 30))
    curve, folds = rep.probe_layers(states, labels, None, n_folds=3, seed=seed, n_controls=1)
    p, _ = rep.permutation_test(states, labels, None, folds, curve["control_accuracy"].to_numpy(), seed=seed,
                                n_permutations=RESAMPLES["rep_permutations"])
    lo, hi = rep.simultaneous_max_interval(curve)
    return MetricValue(float(curve["selectivity"].max()), lo, hi, len(labels), p), 0.0


def specs() -> list[Spec]:
    from probes import (
        bbq,
        bold,
        classifier_fairness,
        counterfactual,
        crows_pairs,
        seat,
        stereoset,
        templates,
    )

    ideal = {
        "crows_pairs.pct_stereotype": crows_pairs.METRICS["pct_stereotype"].ideal, "stereoset.ss": stereoset.METRICS["ss"].ideal,
        "seat.mean_abs_effect_size": seat.METRICS["mean_abs_effect_size"].ideal,
        "bbq.bias_score_ambig": bbq.METRICS["bias_score_ambig"].ideal,
        "bbq.bias_score_disambig": bbq.METRICS["bias_score_disambig"].ideal,
        "bold.vader_negative_gap": bold.METRICS["vader_negative_gap"].ideal,
        "classifier_fairness.equalized_odds_difference":
            classifier_fairness.METRICS["equalized_odds_difference"].ideal,
        "classifier_fairness.demographic_parity_difference":
            classifier_fairness.METRICS["demographic_parity_difference"].ideal,
        "counterfactual.mean_delta_ll_context": counterfactual.METRICS["mean_delta_ll_context"].ideal,
        "templates.stereotype_effect": templates.METRICS["stereotype_effect"].ideal,
    }
    out = [
        Spec("crows_pairs.pct_stereotype", "pairs", "p = 50 %", "p = 60 %", sim_crows, 50.0),
        Spec("stereoset.ss", "clusters (n/5 terms, term rates 50 ± 30 %)", "SS = 50", "SS = 60", sim_stereoset, 50.0),
        Spec("seat.mean_abs_effect_size", "tests (d ~ N(δ, 0.25))", "δ = 0", "δ = 0.5", sim_seat, 0.0),
        Spec("bbq.bias_score_ambig", "templates × 8 items (rates 50 ± 30 %)", "S = 0", "S = 10",
             sim_bbq("bias_score_ambig"), 0.0),
        Spec("bbq.bias_score_disambig", "templates × 8 items (rates 50 ± 30 %)", "S = 0", "S = 20",
             sim_bbq("bias_score_disambig"), 0.0),
        Spec("bold.vader_negative_gap", "prompts per group (6 groups)", "all 10 %", "one group 25 %", sim_bold, 0.0),
        Spec("classifier_fairness.equalized_odds_difference", "rows per group (2 groups)", "TPR .7/.7",
             "TPR .7/.55", sim_fairness("equalized_odds_difference"), 0.0),
        Spec("classifier_fairness.demographic_parity_difference", "rows per group (2 groups)", "TPR .7/.7",
             "TPR .7/.55", sim_fairness("demographic_parity_difference"), 0.0),
        Spec("counterfactual.mean_delta_ll_context", "texts (t5 noise)", "μ = 0", "μ = 0.3", sim_counterfactual, 0.0),
        Spec("templates.stereotype_effect", "attribute words × 6 templates", "μ = 0", "μ = 0.3", sim_templates, 0.0),
        Spec("representation.max_selectivity", "texts (4 noise layers)", "no information", "", sim_representation,
             0.0, sizes=(30, 100)),
    ]
    for s in out:  # the ideal each probe declares (the table's gate column judges against it)
        assert s.metric not in ideal or ideal[s.metric] == s.ideal, s.metric
    return out


def _rate(hits: list[bool]) -> tuple[float, float]:
    a = np.asarray(hits, dtype=float)
    if a.size == 0:
        return float("nan"), float("nan")
    p = float(a.mean())
    return p, math.sqrt(p * (1 - p) / a.size)


def calibrate(spec: Spec, n: int, scenario: str, sims: int, seed: int = 0) -> dict[str, Any]:
    """One cell of the table."""
    rng = np.random.default_rng([seed, n, scenario == "effect", sum(map(ord, spec.metric))])
    cover, reject, gate, warned = [], [], [], 0
    t0 = time.perf_counter()
    for _ in range(sims):
        mv, true = spec.simulate(rng, n, scenario == "effect")
        lo, hi = mv.ci_low, mv.ci_high
        if lo is None or hi is None or np.isnan(lo) or np.isnan(hi):
            continue
        cover.append(lo - 1e-9 <= true <= hi + 1e-9)
        if mv.p_value is not None and not np.isnan(mv.p_value):
            reject.append(mv.p_value < ALPHA)
        gate.append(lo > spec.ideal + 1e-9 or hi < spec.ideal - 1e-9)
        warned += bool(mv.warning)
    cov, cov_se = _rate(cover)
    rej, rej_se = _rate(reject)
    g, g_se = _rate(gate) if scenario == "null" else (float("nan"), float("nan"))
    return {"metric": spec.metric, "n": n, "n_means": spec.n_means, "scenario": scenario,
            "truth": spec.null if scenario == "null" else spec.effect, "sims": len(cover),
            "coverage": cov, "coverage_se": cov_se, "rejection": rej, "rejection_se": rej_se,
            "gate_fail": g, "gate_fail_se": g_se, "share_warned": warned / max(len(cover), 1),
            "seconds": round(time.perf_counter() - t0, 2)}


def markdown(rows: list[dict[str, Any]]) -> str:
    """The RESULTS.md table: each rate ± its Monte Carlo standard error."""
    def pm(r: dict[str, Any], k: str) -> str:
        v = r[k]
        return "" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.3f} ± {r[k + '_se']:.3f}"

    shown = [{**r, "coverage": pm(r, "coverage"), "rejection": pm(r, "rejection"), "gate_fail": pm(r, "gate_fail")}
             for r in rows]
    return table(shown, ["metric", "n", "scenario", "truth", "sims", "coverage", "rejection", "gate_fail"])


def _cell(args: tuple[str, int, str, int, int]) -> dict[str, Any]:
    metric, n, scenario, sims, seed = args
    spec = next(s for s in specs() if s.metric == metric)
    return calibrate(spec, n, scenario, sims, seed)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sims", type=int, default=1000, help="simulations per cell (default 1000)")
    ap.add_argument("--rep-sims", type=int, default=100, help="simulations per representation cell (refits)")
    ap.add_argument("--sizes", type=int, nargs="*", default=list(SIZES))
    ap.add_argument("--metrics", nargs="*", default=None, help="probe.metric names (default: all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=1, help="worker processes (cells run in parallel)")
    ap.add_argument("--no-save", action="store_true")
    ap.add_argument("--out", default="calibration", help="results/<OUT>.json (default calibration)")
    ap.add_argument("--merge", nargs="*", default=None, help="merge partial runs' JSON into calibration.json, stop")
    a = ap.parse_args(argv)
    if a.merge:
        merge([Path(m) for m in a.merge])
        return {}
    load0 = loadavg()
    cells = [(spec.metric, n, scenario, a.rep_sims if spec.metric.startswith("representation.") else a.sims, a.seed)
             for spec in specs() if not a.metrics or spec.metric in a.metrics
             for n in a.sizes if n in spec.sizes for scenario in (("null", "effect") if spec.effect else ("null",))]
    rows: list[dict[str, Any]] = []
    payload: dict[str, Any] = {"sims": a.sims, "jobs": a.jobs, "rep_sims": a.rep_sims, "alpha": ALPHA,
                               "resamples": RESAMPLES, "seed": a.seed, "loadavg_start": load0, "rows": rows}
    with ProcessPoolExecutor(a.jobs) as pool:  # every cell seeds its own generator: same table for any --jobs
        for row in pool.map(_cell, cells):
            rows.append(row)
            if not a.no_save:  # saved after every cell: an interrupted run keeps what it measured
                save(a.out, {**payload, "loadavg_end": loadavg()})
            print(f"{row['metric']} n={row['n']} {row['scenario']}: coverage {row['coverage']:.3f}±"
                  f"{row['coverage_se']:.3f} rejection {row['rejection']:.3f} gate {row['gate_fail']:.3f} "
                  f"({row['seconds']} s)", flush=True)
    print(markdown(rows))
    payload["loadavg_end"] = loadavg()
    if not a.no_save:
        print("saved", save(a.out, payload))
    return payload


def merge(partials: list[Path]) -> None:
    """Combine runs of parts of the table (``--metrics ... --out NAME``, run side by side) into
    calibration.json: each part's rows replace that metric's rows."""
    full: dict[str, Any] = json.loads(RESULT.read_text()) if RESULT.is_file() else {"rows": [], "parts": []}
    for partial in partials:
        part = json.loads(partial.read_text())
        names = {r["metric"] for r in part["rows"]}
        full["rows"] = [r for r in full["rows"] if r["metric"] not in names] + part["rows"]
        full.setdefault("parts", []).append({k: v for k, v in part.items() if k != "rows"} | {
            "file": partial.name, "metrics": sorted(names)})
    order = [s.metric for s in specs()]
    full["rows"].sort(key=lambda r: (order.index(r["metric"]) if r["metric"] in order else len(order), r["n"],
                                     r["scenario"] != "null"))
    full.update(alpha=ALPHA, resamples=RESAMPLES)
    RESULT.write_text(json.dumps(full, indent=2) + "\n")
    print(markdown(full["rows"]))


if __name__ == "__main__":
    main()
