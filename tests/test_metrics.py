"""audit.metrics: every metric against a value worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from audit.explain.evaluate import summarize
from audit.metrics import (
    METRICS,
    aopc,
    attention_entropy,
    completeness_gap,
    comprehensiveness,
    curve_auc,
    deletion_curve,
    infidelity_tokens,
    insertion_curve,
    leave_one_out,
    metric_info,
    plausibility_auprc,
    plausibility_token_f1,
    rank_agreement,
    rationale_mask,
    sufficiency,
    tau_loo,
)
from audit.metrics.faithfulness import n_top, ranking
from audit.results import MetricInfo

# A toy "model": f(keep) = (Σ wᵢ keepᵢ)² / 100. Position 5 (weight 10) is not attributable
# (a special token): it is never removed.
W = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 10.0])
ATTRIBUTABLE = np.array([True, True, True, True, True, False])
SCORES = np.array([0.5, -0.1, 0.9, 0.2, 0.0, 7.0])  # the 7.0 sits on the fixed position
CALLS: list[int] = []


def scorer(keep: np.ndarray) -> np.ndarray:
    keep = np.asarray(keep, dtype=bool) | ~ATTRIBUTABLE
    CALLS.append(len(keep))
    return (keep * W).sum(1) ** 2 / 100.0


def test_every_metric_declares_direction_and_best_value() -> None:
    for name, info in METRICS.items():
        assert isinstance(info, MetricInfo) and info.name == name and info.description and info.reference
    assert metric_info("completeness_gap").ideal == 0.0
    assert metric_info("completeness_gap").higher_is_better is False
    assert metric_info("comprehensiveness_aopc").higher_is_better is True
    assert metric_info("sufficiency_aopc").higher_is_better is False
    assert metric_info("tau_loo").ideal == 1.0
    with pytest.raises(KeyError, match="unknown metric 'nope'"):
        metric_info("nope")


def test_completeness_gap_by_hand() -> None:
    # attributions sum to 0.45 while f(x) − f(x') = 0.5: 10 % missing
    assert completeness_gap(0.45, 0.7, 0.2) == pytest.approx(0.1)
    assert completeness_gap(-0.5, 0.2, 0.7) == pytest.approx(0.0)
    assert math.isnan(completeness_gap(0.1, 0.3, 0.3))


def test_ranking_and_bin_sizes() -> None:
    # signed scores, highest first, fixed position excluded
    assert ranking(SCORES, ATTRIBUTABLE).tolist() == [2, 0, 3, 4, 1]
    assert [n_top(k, 5) for k in (0.1, 0.2, 0.5, 1.0)] == [1, 1, 3, 5]


def test_comprehensiveness_and_sufficiency_by_hand() -> None:
    bins = (0.2, 0.5, 1.0)
    # f(x): S = 25 → 6.25. Top-20 % = {2} (w 3); top-50 % = {2, 0, 3} (w 8); top-100 % = all (w 15)
    comp = comprehensiveness(SCORES, scorer, ATTRIBUTABLE, bins)
    # removing them: S = 22, 17, 10 → f = 4.84, 2.89, 1.00
    assert comp == pytest.approx([6.25 - 4.84, 6.25 - 2.89, 6.25 - 1.00])
    suff = sufficiency(SCORES, scorer, ATTRIBUTABLE, bins)
    # keeping only them (+ the fixed token): S = 13, 18, 25 → f = 1.69, 3.24, 6.25
    assert suff == pytest.approx([6.25 - 1.69, 6.25 - 3.24, 0.0])
    assert aopc(comp) == pytest.approx((1.41 + 3.36 + 5.25) / 3)
    assert aopc(suff) == pytest.approx((4.56 + 3.01 + 0.0) / 3)


def test_batched_scorer_calls() -> None:
    CALLS.clear()
    comprehensiveness(SCORES, scorer, ATTRIBUTABLE, (0.1, 0.5, 1.0), full=6.25)
    assert CALLS == [3]  # every bin in one call: no per-token loop


def test_deletion_and_insertion_curves_by_hand() -> None:
    frac, vals = deletion_curve(SCORES, scorer, ATTRIBUTABLE)
    # remove 2, 0, 3, 4, 1 in turn: S = 25, 22, 21, 17, 12, 10
    assert frac.tolist() == pytest.approx([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    assert vals == pytest.approx([6.25, 4.84, 4.41, 2.89, 1.44, 1.0])
    area = 0.2 * ((6.25 + 4.84) + (4.84 + 4.41) + (4.41 + 2.89) + (2.89 + 1.44) + (1.44 + 1.0)) / 2
    assert curve_auc(frac, vals) == pytest.approx(area)
    frac, vals = insertion_curve(SCORES, scorer, ATTRIBUTABLE)
    # insert 2, 0, 3, 4, 1 into the baseline (fixed token only): S = 10, 13, 14, 18, 23, 25
    assert vals == pytest.approx([1.0, 1.69, 1.96, 3.24, 5.29, 6.25])
    # subsampled curves keep both ends
    frac, vals = deletion_curve(SCORES, scorer, ATTRIBUTABLE, max_points=3)
    assert frac.tolist() == pytest.approx([0.0, 0.4, 1.0]) and vals[0] == pytest.approx(6.25)


def test_tau_loo_by_hand() -> None:
    loo = leave_one_out(scorer, ATTRIBUTABLE)
    # f(x) − f(x∖i) = 6.25 − (25 − wᵢ)²/100
    assert loo[:5] == pytest.approx([0.49, 0.96, 1.41, 1.84, 2.25])
    assert math.isnan(loo[5])
    # loo grows with the index, so a pair is concordant iff its scores grow too: 4 of 10 pairs
    assert tau_loo(SCORES, loo, ATTRIBUTABLE) == pytest.approx((4 - 6) / 10)
    assert tau_loo(loo, loo, ATTRIBUTABLE) == pytest.approx(1.0)


def test_rank_agreement_by_hand() -> None:
    a = np.array([3.0, 1.0, 2.0, 0.5, 4.0])
    r = rank_agreement(a, a * 10, k=2)
    assert r == {"rank_spearman": pytest.approx(1.0), "rank_kendall": pytest.approx(1.0), "topk_overlap": 1.0}
    r = rank_agreement(a, -a, k=2)  # magnitudes agree
    assert r["rank_spearman"] == pytest.approx(1.0)
    r = rank_agreement(a, -a, k=2, absolute=False)
    assert r["rank_spearman"] == pytest.approx(-1.0) and r["topk_overlap"] == 0.0
    # top-2 of a: {4, 0}; of b: {4, 2} → overlap 1/2; ranks a = (4,2,3,1,5), b = (2,3,4,1,5):
    # Σd² = 4+1+1+0+0 = 6 → ρ = 1 − 6·6/(5·24) = 0.7
    b = np.array([1.0, 2.0, 3.0, 0.5, 4.0])
    r = rank_agreement(a, b, k=2)
    assert r["topk_overlap"] == 0.5
    assert r["rank_spearman"] == pytest.approx(0.7)
    # masked positions are ignored
    r = rank_agreement(a, b, np.array([True, False, False, True, True]), k=1)
    assert r["rank_spearman"] == pytest.approx(1.0)


def test_attention_entropy_by_hand() -> None:
    uniform = np.full((1, 1, 4, 4), 0.25)
    onehot = np.zeros((1, 1, 4, 4))
    onehot[..., 0] = 1.0
    causal = np.tril(np.ones((4, 4))) / np.arange(1, 5)[:, None]
    ent, norm = attention_entropy(np.concatenate([uniform, onehot, causal[None, None]], 1), causal=True)
    assert ent[0] == pytest.approx([math.log(4), 0.0, (math.log(2) + math.log(3) + math.log(4)) / 4])
    # normalised by log(q + 1) (causal), the row with one visible key left out: the uniform head's
    # rows give ln4/ln2, ln4/ln3, ln4/ln4; the causal head's are uniform over what they see (1)
    assert norm[0] == pytest.approx([(math.log(4) / math.log(2) + math.log(4) / math.log(3) + 1) / 3, 0.0, 1.0])
    ent, norm = attention_entropy(causal[None, None])  # bidirectional reading: 4 keys visible to every row
    assert norm[0, 0] == pytest.approx((0 + math.log(2) + math.log(3) + math.log(4)) / 4 / math.log(4))
    half = np.full((1, 1, 4, 4), 0.0)
    half[..., :2] = 0.5
    ent, norm = attention_entropy(half, valid=np.array([True, True, False, False]))
    assert ent[0, 0] == pytest.approx(math.log(2)) and norm[0, 0] == pytest.approx(1.0)


def test_plausibility_by_hand() -> None:
    scores = np.array([0.9, 0.1, 0.8, 0.2])
    gold = np.array([True, False, False, True])
    # ranking 0 (hit), 2, 3 (hit), 1 → AP = (1/1 + 2/3) / 2
    assert plausibility_auprc(scores, gold) == pytest.approx((1 + 2 / 3) / 2)
    # top-2 = {0, 2}: one hit → P = R = 1/2
    assert plausibility_token_f1(scores, gold) == pytest.approx(0.5)
    assert math.isnan(plausibility_auprc(scores, np.zeros(4, bool)))
    text = "The nurse said she was tired"
    offsets = [(0, 0), (0, 3), (4, 9), (10, 14), (15, 18), (19, 22), (23, 28), (0, 0)]
    assert rationale_mask(text, ["NURSE", "she"], offsets).tolist() == [False, False, True, False, True, False,
                                                                        False, False]
    # word boundaries: "he" does not match inside "she"
    assert not rationale_mask(text, ["he"], offsets).any()


def test_infidelity_is_zero_for_a_linear_model_with_exact_attributions() -> None:
    w = torch.tensor([1.0, -2.0, 3.0, 0.5])

    def forward_z(z: torch.Tensor) -> torch.Tensor:
        return z @ w

    mask = np.ones(4, bool)
    exact = infidelity_tokens(forward_z, w.numpy().astype(np.float64), mask, n_perturb_samples=8)
    wrong = infidelity_tokens(forward_z, np.array([3.0, 1.0, -2.0, 0.0]), mask, n_perturb_samples=8)
    assert exact == pytest.approx(0.0, abs=1e-6)  # float32
    assert wrong > 1e-3


def test_summarize_means_with_t_interval() -> None:
    import pandas as pd

    df = pd.DataFrame({"example": [0, 1, 2, 0], "method": ["ig"] * 4, "metric": ["tau_loo"] * 3 + ["comprehensiveness"],
                       "value": [0.2, 0.4, 0.6, 9.0], "k": [None, None, None, 0.1], "target_index": None,
                       "other_method": None, "layer": None, "head": None})
    s = summarize(df)
    mv = s["ig"]["tau_loo"]
    assert mv["value"] == pytest.approx(0.4) and mv["n"] == 3
    half = 4.302652729911275 * 0.2 / math.sqrt(3)  # t(0.975, 2) · sd / √n
    assert mv["ci_low"] == pytest.approx(0.4 - half) and mv["ci_high"] == pytest.approx(0.4 + half)
    assert mv["ideal"] == 1.0 and mv["higher_is_better"] is True
    assert "comprehensiveness" not in s["ig"]  # curve points are not summarised
