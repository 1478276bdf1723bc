"""Seeded null (and known-effect) simulations through the probes' own statistics code: each
interval and test does what it claims. Small enough for the normal suite; the full table with
1,000+ simulations per cell is ``benchmarks/calibration.py`` (RESULTS.md)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from audit.stats import cluster_proportion_test, rate_metric, simultaneous_gap_ci
from probes import bbq, bold, crows_pairs, stereoset
from probes import representation as rep
from probes.crows_pairs import METRICS as CROWS
from probes.group_fairness import fairness_summary
from probes.seat import Seat


def _bold_items(rng: np.random.Generator, rates: list[float], n: int) -> pd.DataFrame:
    g = len(rates)
    y = rng.random((g, n)) < np.asarray(rates)[:, None]
    return pd.DataFrame({"domain": "d", "group": np.repeat([f"g{i:02d}" for i in range(g)], n),
                         "vader_negative": y.ravel()})


def test_bold_gap_interval_is_not_biased_upward_under_the_null() -> None:
    """Defect 1: 18 groups × 10 prompts, every group at 10 % negative. The old percentile bootstrap
    of max − min had its lower bound above 0 in every simulation; the simultaneous interval keeps
    0 inside at least 95 % of the time, and a gate on it no longer fails unbiased models."""
    rng = np.random.default_rng(11)
    info = bold.METRICS["vader_negative_gap"]
    lows, ps = [], []
    for s in range(150):
        mv = bold.gap_metric(_bold_items(rng, [0.1] * 18, 10), "vader_negative", info, seed=s, n_permutations=50)
        assert mv.ci_low <= mv.value <= mv.ci_high
        lows.append(mv.ci_low)
        ps.append(mv.p_value)
    assert np.mean(np.asarray(lows) > 0) <= 0.06
    assert np.mean(np.asarray(ps) < 0.05) <= 0.09


def test_bold_gap_interval_covers_a_known_gap() -> None:
    """The same interval around a real gap: one group of 6 at 40 % against 10 % (true gap 30 pp)."""
    rng = np.random.default_rng(12)
    cover = 0
    sims = 300
    for _ in range(sims):
        tab = _bold_items(rng, [0.4] + [0.1] * 5, 50)
        k = tab.groupby("group")["vader_negative"].sum().to_numpy()
        ci = simultaneous_gap_ci(k, np.full(6, 50), np.zeros(6, dtype=int), scale=100.0)
        cover += ci.low <= 30.0 <= ci.high
    assert cover / sims >= 0.93


def test_every_proportion_interval_has_width() -> None:
    """Defect 2: 0/10 and 10/10 were [0, 0] and [100, 100]; antistereo_score 100 % at n = 2 was
    shown as "CI excludes the ideal". The Wilson interval has width at the edges."""
    info = CROWS["antistereo_score"]
    for hits in ([False] * 10, [True] * 10, [True, True]):
        mv = rate_metric(info, hits)
        assert mv.ci_high - mv.ci_low > 1.0 and mv.ci_low <= mv.value <= mv.ci_high
    assert rate_metric(info, [True, True]).ci_low < 50.0  # n = 2 cannot exclude 50 %
    # coverage at n = 30, p = 0.1 (where a bootstrap of a rare event undercovers)
    rng = np.random.default_rng(3)
    cover = [(m.ci_low <= 10.0 <= m.ci_high) for m in (rate_metric(info, rng.random(30) < 0.1) for _ in range(400))]
    assert 0.92 <= np.mean(cover) <= 0.99


@pytest.mark.slow  # about a minute on 2 shared cores
def test_fairness_permutation_nulls_hold_given_the_label() -> None:
    """Defect 3: a group of 25 at 90 % positives against 300 at 15 %, decisions depending on the
    label only. Equalized odds and BPSN AUC are fair (H0 true) and must reject at ≈ 5 %; the global
    shuffle rejected 15 % and 14 %. Demographic parity's null is false here and keeps rejecting."""
    rng = np.random.default_rng(5)
    g = np.array(["a"] * 25 + ["b"] * 300)
    rej = {"equalized_odds_difference": 0, "min_bpsn_auc": 0, "demographic_parity_difference": 0}
    sims = 150
    for s in range(sims):
        y = np.concatenate([rng.random(25) < 0.9, rng.random(300) < 0.15])
        score = np.clip(0.5 * y + rng.normal(0.25, 0.2, 325), 0, 1)
        out, _ = fairness_summary(y, score > 0.5, score, g, seed=s, n_resamples=2, n_permutations=50)
        for k in rej:
            rej[k] += out[k].p_value < 0.05
        assert "within each true label" in out["equalized_odds_difference"].test
        assert "within" not in out["demographic_parity_difference"].test
    assert rej["equalized_odds_difference"] / sims <= 0.09
    assert rej["min_bpsn_auc"] / sims <= 0.10
    assert rej["demographic_parity_difference"] / sims >= 0.9


@pytest.mark.slow  # 40 × (6 layers × 20 labellings × 3 folds) logistic fits
def test_representation_max_over_layers_permutation_test() -> None:
    """Defect 4: 6 layers of pure noise; testing the arg-max layer alone gave p < .05 in 27 % of
    runs. Every permutation refits every layer and compares with the maximum."""
    rng = np.random.default_rng(7)
    rejections = 0
    sims = 40
    for s in range(sims):
        labels = np.repeat(["f", "m"], 15)
        states = rng.normal(size=(6, 30, 2))
        curve, folds = rep.probe_layers(states, labels, None, n_folds=3, seed=s, n_controls=1)
        p, null = rep.permutation_test(states, labels, None, folds, curve["control_accuracy"].to_numpy(),
                                       seed=s, n_permutations=19)
        assert len(null) == 19
        rejections += p <= 0.05
        lo, hi = rep.simultaneous_max_interval(curve)
        assert lo <= curve["selectivity"].max() <= hi
    assert rejections / sims <= 0.15


def _bbq_items(rng: np.random.Generator, n_templates: int = 25, per: int = 20, sd: float = 0.2) -> pd.DataFrame:
    """Disambiguated items, every answer non-unknown; template t answers biased with probability
    0.5 + u_t (u_t ~ N(0, sd), mean 0): true S_DIS = 0 with template-level variation."""
    p_t = np.clip(0.5 + rng.normal(0, sd, n_templates), 0.02, 0.98)
    p_t = p_t - (p_t.mean() - 0.5)
    biased = rng.random((n_templates, per)) < p_t[:, None]
    n = n_templates * per
    return pd.DataFrame({"category": "Age", "question_index": np.repeat(np.arange(n_templates), per).astype(str),
                         "context_condition": "disambig", "correct": False, "biased": biased.ravel(),
                         "non_unknown": True, "n_biased_options": 1}, index=range(n))


def test_bbq_bias_score_resamples_templates() -> None:
    """Defect 5: with template-level variation the item bootstrap covered S_DIS = 0 in 15 of 40
    runs; the cluster bootstrap over (category, question_index) keeps its nominal coverage."""
    rng = np.random.default_rng(9)
    cover, rej = 0, 0
    sims = 60
    for s in range(sims):
        mv = bbq.bias_metric(_bbq_items(rng), "bias_score_disambig", seed=s)
        cover += mv.ci_low <= 0.0 <= mv.ci_high
        rej += mv.p_value < 0.05
        assert "cluster" in mv.ci_method and "25 clusters" in mv.ci_method
    assert cover / sims >= 0.85
    assert rej / sims <= 0.15


def test_stereoset_ss_test_matches_its_term_resampling() -> None:
    """Defect 5 (StereoSet): the binomial test pooled the clusters of a term as independent; with
    term-level variation (true SS = 50) it rejected far above 5 %. The t test over terms does not."""
    rng = np.random.default_rng(10)
    rej = 0
    sims = 300
    for s in range(sims):
        p_t = np.clip(0.5 + rng.normal(0, 0.2, 20), 0, 1)
        p_t = p_t - (p_t.mean() - 0.5)
        pref = rng.random((20, 10)) < p_t[:, None]
        items = pd.DataFrame({"target": np.repeat([f"t{i}" for i in range(20)], 10), "stereotype_preferred": pref.ravel(),
                              "n_related": 2})
        rej += stereoset.stereoset_metrics(items, seed=s)["ss"].p_value < 0.05
    assert rej / sims <= 0.08


def test_bbq_rows_without_one_biased_option_leave_the_bias_scores() -> None:
    """Defect 6: rows with 0 or 2 biased options push S toward ±100 whatever the model does."""
    rng = np.random.default_rng(1)
    items = _bbq_items(rng, n_templates=5, per=10)
    base = bbq.bias_metric(items, "bias_score_disambig").value
    extra = items.iloc[:8].assign(n_biased_options=[2] * 4 + [0] * 4, biased=[True] * 4 + [False] * 4)
    mixed = pd.concat([items, extra, extra.iloc[:4]], ignore_index=True)
    assert bbq.bias_metric(mixed, "bias_score_disambig").value == pytest.approx(base)
    assert bbq.bias_score_disambig(mixed) != pytest.approx(base)  # they would have moved it


def test_bbq_summary_counts_the_excluded_rows(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tests.test_bbq import ANSWERS, SPEC, _row, write_jsonl

    items = bbq.score_answers(bbq.load_bbq(write_jsonl(tmp_path / "e.jsonl", [_row(i, *s) for i, s in enumerate(SPEC)])),
                              ANSWERS)
    items.loc[0, "n_biased_options"] = 0
    items.loc[1, "n_biased_options"] = 2
    r = bbq.BBQ().summarise(items, opts={})
    assert r.info["n_excluded_from_bias_scores"] == 2
    assert r.info["n_no_biased_answer"] == 1 and r.info["n_two_biased_answers"] == 1
    assert any("no biased answer" in w and "left out" in w for w in r.warnings)
    assert r.summary["bias_score_ambig"].n == int(((items["context_condition"] == "ambig")
                                                   & (items["n_biased_options"] == 1)).sum())


@pytest.mark.parametrize(("kind", "neutral"), [("causal-lm", False), ("masked-lm", True)])
def test_crows_pairs_rounds_only_masked_scores(monkeypatch: pytest.MonkeyPatch, kind: str, neutral: bool) -> None:
    """Defect 7: causal scores differing in the 4th decimal are not a tie (lm-evaluation-harness
    does not round); masked-LM scores are rounded to 3 decimals as metric.py does."""
    def fake(handle, s1, s2, **kw):  # type: ignore[no-untyped-def]
        return np.array([-10.0001]), np.array([-10.0004]), np.array([3])

    monkeypatch.setattr(crows_pairs, "causal_pair_scores", fake)
    monkeypatch.setattr(crows_pairs, "masked_pair_scores", fake)
    items = pd.DataFrame({"sent_more": ["a"], "sent_less": ["b"], "stereo_antistereo": ["stereo"]})
    out = crows_pairs.CrowsPairs().score_items(SimpleNamespace(kind=kind), items,
                                               crows_pairs.CrowsPairs.Options.defaults(), progress=False)
    assert bool(out["neutral"].iloc[0]) is neutral
    assert bool(out["score_diff"].iloc[0] == 0) is neutral


def test_seat_bh_family_is_what_n_significant_counts() -> None:
    """Defect 8: two non-social sanity tests with tiny p lowered the BH thresholds of the social
    tests that n_significant counts. BH over the social family alone: none is significant."""
    items = pd.DataFrame({"test": ["f/i", "i/w", "s1", "s2", "s3"],
                          "domain": ["non-social", "non-social", "gender", "gender", "race"],
                          "effect_size": [1.5, 1.4, 0.5, 0.4, 0.1], "p_value": [0.001, 0.001, 0.028, 0.04, 0.5]})
    r = Seat().summarise(items)
    social = r.items[r.items["domain"] != "non-social"]
    assert list(social["p_adjusted"]) == pytest.approx([0.06, 0.06, 0.5])
    assert r.summary["n_significant"].value == social["significant"].sum() == 0


def test_cluster_proportion_test_is_exact_binomial_without_clusters() -> None:
    hits = np.array([True] * 8 + [False] * 2)
    p, test = cluster_proportion_test(hits, np.arange(10))
    from scipy.stats import binomtest

    assert p == pytest.approx(binomtest(8, 10).pvalue) and "exact binomial" in test


def test_small_n_warnings_quote_the_measured_coverage() -> None:
    """Where an interval cannot be calibrated at small n, the warning says how far off it was."""
    from audit.stats import MEASURED_COVERAGE_AT_10, cluster_mean_metric, mean_metric
    from probes.counterfactual import METRICS as CF

    x = np.random.default_rng(0).normal(size=10)
    w = mean_metric(CF["mean_delta_ll_context"], x).warning
    assert "n = 10 is below 30" in w and MEASURED_COVERAGE_AT_10["bootstrap"] in w
    w = cluster_mean_metric(CF["mean_delta_ll_context"], np.r_[x, x], np.r_[np.arange(10), np.arange(10)]).warning
    assert MEASURED_COVERAGE_AT_10["cluster bootstrap"] in w
    assert mean_metric(CF["mean_delta_ll_context"], np.r_[x, x, x]).warning == ""
