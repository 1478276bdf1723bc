"""classifier_fairness: fairlearn metrics and Borkan AUCs by hand, the classifier and zero-shot
paths on tiny models, the built-in data, clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
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
from sklearn.metrics import roc_auc_score

from audit import scoring
from audit.probe import ProbeError, get_probe
from probes import classifier_fairness as cf
from probes import group_fairness as gf

# 12 rows, two groups. a: y 1 1 1 0 0 0 / ŷ 1 1 0 1 0 0; b: y 1 1 0 0 0 0 / ŷ 1 0 0 0 0 0
Y = np.array([1, 1, 1, 0, 0, 0, 1, 1, 0, 0, 0, 0])
P = np.array([1, 1, 0, 1, 0, 0, 1, 0, 0, 0, 0, 0])
G = np.array(["a"] * 6 + ["b"] * 6)
S = np.array([0.9, 0.8, 0.4, 0.7, 0.3, 0.1, 0.6, 0.45, 0.5, 0.2, 0.2, 0.05])


def test_group_rates_by_hand_and_fairlearn() -> None:
    # a: selection 3/6, TPR 2/3, FPR 1/3, accuracy 4/6; b: selection 1/6, TPR 1/2, FPR 0, accuracy 5/6
    r = gf.group_rates(Y, P, G)
    assert r.loc["a"].tolist()[:4] == pytest.approx([4 / 6, 3 / 6, 2 / 3, 1 / 3])
    assert r.loc["b"].tolist()[:4] == pytest.approx([5 / 6, 1 / 6, 1 / 2, 0.0])
    mf = MetricFrame(metrics={"selection_rate": selection_rate, "true_positive_rate": true_positive_rate,
                              "false_positive_rate": false_positive_rate}, y_true=Y, y_pred=P, sensitive_features=G)
    for col in mf.by_group.columns:
        assert r[col].to_numpy() == pytest.approx(mf.by_group[col].to_numpy())
    assert gf.metric_frame(Y, P, G).by_group["accuracy"].tolist() == pytest.approx([4 / 6, 5 / 6])


def test_summary_metrics_by_hand_fairlearn_and_fast_path() -> None:
    hand = {
        "accuracy": 9 / 12,
        "demographic_parity_difference": 3 / 6 - 1 / 6,
        "demographic_parity_ratio": (1 / 6) / (3 / 6),
        "equalized_odds_difference": max(2 / 3 - 1 / 2, 1 / 3 - 0),
        "equalized_odds_ratio": min((1 / 2) / (2 / 3), 0 / (1 / 3)),
        "accuracy_difference": 5 / 6 - 4 / 6,
    }
    ref = gf.summary_from_arrays(Y, P, S, G)
    fast = gf.summary_from_arrays(Y, P, S, G, fast=True)
    for k, v in hand.items():
        assert ref[k] == pytest.approx(v), k
    kw = {"sensitive_features": G}
    assert ref["demographic_parity_difference"] == pytest.approx(demographic_parity_difference(Y, P, **kw))
    assert ref["demographic_parity_ratio"] == pytest.approx(demographic_parity_ratio(Y, P, **kw))
    assert ref["equalized_odds_difference"] == pytest.approx(equalized_odds_difference(Y, P, **kw))
    assert ref["equalized_odds_ratio"] == pytest.approx(equalized_odds_ratio(Y, P, **kw))
    assert ref["auc"] == pytest.approx(roc_auc_score(Y, S))
    for k in ref:
        assert fast[k] == pytest.approx(ref[k], nan_ok=True), k


def test_fast_path_matches_fairlearn_on_random_data() -> None:
    rng = np.random.default_rng(3)
    n = 300
    g = rng.choice(["x", "y", "z"], n)
    y = rng.random(n) < 0.4
    s = np.round(rng.random(n) * 0.7 + 0.3 * y, 2)  # rounded: many ties
    p = s > 0.5
    ref, fast = gf.summary_from_arrays(y, p, s, g), gf.summary_from_arrays(y, p, s, g, fast=True)
    assert fast == pytest.approx(ref)


def test_bpsn_bnsp_by_hand() -> None:
    # a: positives 0.9, 0.5; negatives 0.6, 0.2. b: positives 0.8, 0.4; negatives 0.5 (a tie), 0.1
    y = np.array([1, 1, 0, 0, 1, 1, 0, 0])
    s = np.array([0.9, 0.5, 0.6, 0.2, 0.8, 0.4, 0.5, 0.1])
    g = np.array(["a"] * 4 + ["b"] * 4)
    aucs = gf.bias_aucs(y, s, g)
    # subgroup a: 0.9>0.6, 0.9>0.2, 0.5<0.6, 0.5>0.2 → 3/4; subgroup b: 0.8>0.5, 0.8>0.1, 0.4<0.5, 0.4>0.1 → 3/4
    assert aucs.loc["a", "subgroup_auc"] == pytest.approx(0.75)
    assert aucs.loc["b", "subgroup_auc"] == pytest.approx(0.75)
    # BPSN a: a's negatives {0.6, 0.2} vs b's positives {0.8, 0.4}: 0.8>0.6, 0.8>0.2, 0.4<0.6, 0.4>0.2 → 3/4
    assert aucs.loc["a", "bpsn_auc"] == pytest.approx(0.75)
    # BNSP a: a's positives {0.9, 0.5} vs b's negatives {0.5, 0.1}: 0.9>0.5, 0.9>0.1, 0.5=0.5 (½), 0.5>0.1 → 3.5/4
    assert aucs.loc["a", "bnsp_auc"] == pytest.approx(3.5 / 4)
    # BPSN b: b's negatives {0.5, 0.1} vs a's positives {0.9, 0.5}: same pairs as BNSP a → 3.5/4
    assert aucs.loc["b", "bpsn_auc"] == pytest.approx(3.5 / 4)
    # BNSP b: b's positives {0.8, 0.4} vs a's negatives {0.6, 0.2}: 0.8>0.6, 0.8>0.2, 0.4<0.6, 0.4>0.2 → 3/4
    assert aucs.loc["b", "bnsp_auc"] == pytest.approx(0.75)
    fast = gf.summary_from_arrays(y, s > 0.55, s, g, fast=True)
    assert fast["min_bpsn_auc"] == pytest.approx(0.75)
    assert fast["min_bnsp_auc"] == pytest.approx(0.75)
    # one class only in a group: that group's subgroup AUC is undefined
    y1 = np.array([1, 1, 1, 1, 1, 1, 0, 0])
    assert np.isnan(gf.bias_aucs(y1, s, g).loc["a", "subgroup_auc"])


def test_summary_cis_and_permutation_tests() -> None:
    rng = np.random.default_rng(0)
    n = 400
    g = np.repeat(["a", "b"], n // 2)
    y = rng.random(n) < 0.5
    # biased: group b's positive decisions are much rarer at the same labels
    p_biased = np.where(g == "a", y | (rng.random(n) < 0.3), y & (rng.random(n) < 0.5))
    s = p_biased * 0.5 + rng.random(n) * 0.5
    summ, _ = gf.fairness_summary(y, p_biased, s, g, seed=1, n_resamples=300, n_permutations=300)
    dp = summ["demographic_parity_difference"]
    assert dp.ci_low <= dp.value <= dp.ci_high
    assert dp.p_value == pytest.approx(1 / 301)  # no permutation reaches the observed gap
    again, _ = gf.fairness_summary(y, p_biased, s, g, seed=1, n_resamples=300, n_permutations=300)
    assert again["equalized_odds_difference"].to_dict() == summ["equalized_odds_difference"].to_dict()
    # identical selection rates in both groups: the gap is 0 and every permutation reaches it
    y2 = np.tile([True, False], n // 2)
    p2 = np.tile([True, True, False, False], n // 4)
    summ2, _ = gf.fairness_summary(y2, p2, s, g, seed=1, n_resamples=100, n_permutations=100)
    assert summ2["demographic_parity_difference"].value == 0.0
    assert summ2["demographic_parity_difference"].p_value == 1.0


def test_group_metrics_rates_and_fisher() -> None:
    gm = gf.group_metrics(Y, P, S, G, seed=0, n_resamples=100)
    sel = gm["a"]["selection_rate"]
    assert sel.value == pytest.approx(0.5) and sel.n == 6
    assert sel.ci_low < 0.5 < sel.ci_high
    # a: 3 of 6 selected vs b: 1 of 6 → Fisher exact two-sided
    from scipy.stats import fisher_exact

    assert sel.p_value == pytest.approx(fisher_exact([[3, 3], [1, 5]]).pvalue)
    assert gm["b"]["true_positive_rate"].n == 2  # b has two positives
    assert gm["a"]["bpsn_auc"].value == pytest.approx(gf.bias_aucs(Y, S, G).loc["a", "bpsn_auc"])


def test_breakdown_leaves_out_empty_values() -> None:
    items = pd.DataFrame({"y_true": Y.astype(bool), "y_pred": P.astype(bool), "y_score": S, "gender": G,
                          "race": ["x", "y", ""] * 4, "lang": ["en"] * 12})
    bd = gf.fairness_breakdown(items, ["gender", "race", "lang"], n_resamples=50)
    assert set(bd["group_by"]) == {"gender", "race"}  # lang has one group: skipped
    race = bd[(bd["group_by"] == "race") & (bd["metric"] == "selection_rate")].set_index("group")
    assert set(race.index) == {"x", "y"}
    # x rows: 0, 3, 6, 9 → ŷ 1, 1, 1, 0
    assert race.loc["x", "value"] == pytest.approx(3 / 4) and race.loc["x", "n"] == 4


# --------------------------------------------------------------------------------------------
# data loading and errors
# --------------------------------------------------------------------------------------------


def _csv(tmp_path: Path, rows: list[dict[str, object]], name: str = "d.csv") -> Path:
    p = tmp_path / name
    pd.DataFrame(rows).to_csv(p, index=False)
    return p


def _rows(n: int = 24, labels: tuple[object, ...] = (0, 1)) -> list[dict[str, object]]:
    words = ["good", "bad", "nice", "awful"]
    return [{"text": f"the man was {words[i % 4]} at work" if i % 2 else f"the woman was {words[i % 4]} today",
             "label": labels[i % len(labels)], "gender": "male" if i % 2 else "female", "lang": "en"}
            for i in range(n)]


def test_builtin_data_is_balanced() -> None:
    ds = cf.load_labelled(cf.DEFAULT_DATA, extra_columns=["language"])
    df = ds.frame
    assert ds.positive_label == "1" and ds.labels == ["0", "1"]
    counts = df.groupby(["gender", "label"]).size()
    assert counts.nunique() == 1  # every gender × label cell the same size
    assert set(df["language"]) == {"en", "tr"}
    race = cf.load_labelled(cf.DEFAULT_DATA, attribute_column="race")
    assert race.n_dropped > 0 and set(race.frame["race"]) == {"African-American", "European-American"}
    assert get_probe("classifier_fairness").data_files(None) == [cf.DEFAULT_DATA]


def test_missing_column_names_file_and_column(tmp_path: Path) -> None:
    p = _csv(tmp_path, _rows())
    with pytest.raises(ProbeError, match=r"d\.csv.*attribute_column 'race'"):
        cf.load_labelled(p, attribute_column="race")
    with pytest.raises(ProbeError, match=r"d\.csv.*label_column 'y'"):
        cf.load_labelled(p, label_column="y")


def test_one_group_and_label_errors(tmp_path: Path) -> None:
    rows = _rows()
    for r in rows:
        r["gender"] = "female"
    with pytest.raises(ProbeError, match=r"only one group \('female'\)"):
        cf.load_labelled(_csv(tmp_path, rows))
    with pytest.raises(ProbeError, match="single value"):
        cf.load_labelled(_csv(tmp_path, _rows(labels=(1,)), "one.csv"))
    multi = _csv(tmp_path, _rows(labels=("neg", "neu", "pos")), "multi.csv")
    with pytest.raises(ProbeError, match="3-class .*positive_label"):
        cf.load_labelled(multi)
    with pytest.raises(ProbeError, match="positive_label 'great' is not a value"):
        cf.load_labelled(multi, positive_label="great")
    ds = cf.load_labelled(multi, positive_label="POS")  # one-vs-rest, case-insensitive
    assert ds.positive_label == "pos" and ds.labels == ["neg", "neu", "pos"]
    rows = _rows()
    rows[3]["text"] = " "
    with pytest.raises(ProbeError, match=r"blank\.csv: line 5"):
        cf.load_labelled(_csv(tmp_path, rows, "blank.csv"))


def test_rows_without_attribute_are_left_out(tmp_path: Path) -> None:
    rows = _rows()
    rows[0]["gender"] = ""
    ds = cf.load_labelled(_csv(tmp_path, rows))
    assert ds.n_dropped == 1 and len(ds.frame) == 23 and ds.warnings


def test_parquet_input(tmp_path: Path) -> None:
    p = tmp_path / "d.parquet"
    pd.DataFrame(_rows()).to_parquet(p)
    ds = cf.load_labelled(p)
    assert ds.labels == ["0", "1"] and ds.positive_label == "1" and ds.frame["row"].iloc[0] == 0


def test_wrong_kind(bert_encoder, bert_mlm) -> None:  # type: ignore[no-untyped-def]
    probe = get_probe("classifier_fairness")
    for h in (bert_encoder, bert_mlm):
        with pytest.raises(ProbeError, match="cannot run on a .* model.*classifier, causal-lm"):
            probe.run(h, progress=False)


# --------------------------------------------------------------------------------------------
# models
# --------------------------------------------------------------------------------------------


def test_classifier_path(bert_classifier, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    p = _csv(tmp_path, _rows(32))
    res = get_probe("classifier_fairness").run(bert_classifier, p, progress=False, n_resamples=100,
                                               n_permutations=100, max_batch_tokens=64)
    items = res.items
    assert len(items) == 32 and res.info["label_map"] == {"0": 0, "1": 1}
    # the batched scores equal one unpadded forward per text
    h = bert_classifier
    for i in (0, 7, 31):
        enc = h.tokenizer(items["text"][i], return_tensors="pt")
        with torch.inference_mode():
            probs = torch.softmax(h.model(**enc).logits[0].float(), -1).numpy()
        assert items["y_score"][i] == pytest.approx(probs[1], abs=1e-5)
        assert items["y_pred"][i] == bool(probs.argmax() == 1)
    ref = gf.summary_from_arrays(items["y_true"], items["y_pred"], items["y_score"], items["gender"])
    for k, v in ref.items():
        assert res.summary[k].value == pytest.approx(v, nan_ok=True), k
    assert set(res.breakdown["group_by"]) == {"gender"}
    assert set(res.breakdown["metric"]) == set(gf.GROUP_METRICS)


def test_classifier_label_map(bert_classifier, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    p = _csv(tmp_path, _rows(24, labels=("neg", "pos")))
    probe = get_probe("classifier_fairness")
    with pytest.raises(ProbeError, match=r"cannot match the labels \['neg', 'pos'\].*label_map"):
        probe.run(bert_classifier, p, positive_label="pos", progress=False)
    res = probe.run(bert_classifier, p, positive_label="pos", label_map={"neg": "LABEL_0", "pos": 1},
                    progress=False, n_resamples=50, n_permutations=50)
    assert res.info["label_map"] == {"neg": 0, "pos": 1}
    with pytest.raises(ProbeError, match="causal LMs only"):
        probe.run(bert_classifier, p, positive_label="pos", prompt="{text}", progress=False)


@pytest.mark.parametrize("fixture", ["gpt2", "llama"])
def test_zero_shot_path(fixture: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    h = request.getfixturevalue(fixture)
    p = _csv(tmp_path, _rows(20))
    prompt, words = "Review: {text}\nSentiment:", {0: " bad", 1: " good"}
    res = get_probe("classifier_fairness").run(h, p, prompt=prompt, label_words=words, progress=False,
                                               n_resamples=100, n_permutations=100, max_batch_tokens=200)
    items = res.items
    texts = items["text"].tolist()
    ctx = [prompt.replace("{text}", t) for t in texts]
    lp_bad = [float(x.sum()) for x in scoring.continuation_logprobs(h, ctx, [" bad"] * len(ctx))]
    lp_good = [float(x.sum()) for x in scoring.continuation_logprobs(h, ctx, [" good"] * len(ctx))]
    assert items["score_0"].to_numpy() == pytest.approx(lp_bad, abs=1e-4)
    assert items["score_1"].to_numpy() == pytest.approx(lp_good, abs=1e-4)
    p_good = 1 / (1 + np.exp(np.asarray(lp_bad) - np.asarray(lp_good)))
    assert items["y_score"].to_numpy() == pytest.approx(p_good, abs=1e-6)
    assert (items["y_pred"] == (p_good > 0.5)).all()
    assert res.summary["accuracy"].value == pytest.approx(float((items["y_pred"] == items["y_true"]).mean()))


def test_zero_shot_errors(llama, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    p = _csv(tmp_path, _rows(20))
    probe = get_probe("classifier_fairness")
    with pytest.raises(ProbeError, match="zero-shot classifier: give the options prompt"):
        probe.run(llama, p, progress=False)
    with pytest.raises(ProbeError, match="must contain"):
        probe.run(llama, p, prompt="Sentiment:", label_words={0: " bad", 1: " good"}, progress=False)
    with pytest.raises(ProbeError, match=r"no word for the label\(s\) \['1'\]"):
        probe.run(llama, p, prompt="{text}", label_words={0: " bad"}, progress=False)
    with pytest.raises(ProbeError, match="unknown option"):
        probe.run(llama, p, prompt="{text}", label_words={0: " bad", 1: " good"}, temperature=1, progress=False)


def test_builtin_data_zero_shot_with_breakdown(llama) -> None:  # type: ignore[no-untyped-def]
    res = get_probe("classifier_fairness").run(llama, progress=False, max_items=60, n_resamples=100,
                                               n_permutations=100)
    assert len(res.items) == 60
    assert set(res.breakdown["group_by"]) == {"gender", "language"}
    assert res.info["prompt"] == cf.DEFAULT_PROMPT
    for name, mv in res.summary.items():
        assert name in gf.METRICS and mv.n == 60


@pytest.mark.parametrize("fixture", ["bert_classifier", "llama"])
def test_chunked_scoring_gives_the_same_numbers(fixture: str, request: pytest.FixtureRequest,
                                                tmp_path: Path) -> None:
    """Rows scored in checkpointed chunks of 7 and gathered: the same scores, and the group metrics,
    CIs and permutation tests (computed once over all rows) the same; ``max_items`` samples with the
    run's seed either way."""
    h = request.getfixturevalue(fixture)
    nouns, adjs = ["the man", "the woman", "he", "she", "my friend"], ["good", "bad", "kind", "cruel", "happy", "sad"]
    rows = [{"text": f"{nouns[i % 5]} was {adjs[i // 5]} at {['work', 'home'][i % 2]}", "label": int(i // 5 % 2 == 0),
             "gender": ["male", "female"][i % 2]} for i in range(30)]
    p = _csv(tmp_path, rows)
    kw = {"n_resamples": 50, "n_permutations": 50, "max_items": 26}
    if h.kind == "causal-lm":
        kw.update(prompt="{text}. It was", label_words={0: " bad", 1: " good"})
    probe = get_probe("classifier_fairness")
    whole = probe.run(h, p, seed=4, progress=False, **kw)
    parts = probe.execute(h, p, seed=4, progress=False, opts=kw, chunk_size=7, workdir=tmp_path / "partial")
    assert parts is not None and len(list((tmp_path / "partial").glob("chunk-*.parquet"))) == 4
    assert len(whole.items) == 26
    pd.testing.assert_frame_equal(parts.items, whole.items, check_exact=False, atol=1e-5, rtol=0)
    for k, mv in whole.summary.items():
        a, b = parts.summary[k], mv
        assert (a.value, a.ci_low, a.ci_high, a.p_value) == pytest.approx((b.value, b.ci_low, b.ci_high, b.p_value),
                                                                          abs=1e-6, nan_ok=True), k
    assert parts.info == whole.info


# --------------------------------------------------------------------------------------------
# predictions-file mode (no model)
# --------------------------------------------------------------------------------------------


def test_predictions_file_gives_the_model_runs_numbers(bert_classifier, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A model run's logged decisions, read back as a predictions file without the model: the
    same values, intervals, tests and breakdown."""
    probe = get_probe("classifier_fairness")
    res = probe.run(bert_classifier, _csv(tmp_path, _rows(32)), progress=False, n_resamples=100, n_permutations=100)
    pred = tmp_path / "pred.csv"
    res.items[["y_true", "y_pred", "y_score", "gender"]].to_csv(pred, index=False)
    got = probe.run(None, pred, n_resamples=100, n_permutations=100)
    for k, v in res.summary.items():
        g = got.summary[k]
        assert (g.value, g.ci_low, g.ci_high, g.p_value) == pytest.approx((v.value, v.ci_low, v.ci_high, v.p_value),
                                                                         nan_ok=True), k
    cols = ["group", "metric", "value", "ci_low", "ci_high", "n", "p_value"]
    pd.testing.assert_frame_equal(got.breakdown[cols], res.breakdown[cols])
    assert got.info["mode"] == "predictions file (no model)" and got.info["has_score"] is True


def test_predictions_file_without_scores_and_with_labels(tmp_path: Path) -> None:
    rows = [{"y_true": "pos" if y else "neg", "y_pred": "pos" if p else "neg", "group": g}
            for y, p, g in zip(Y, P, G, strict=True)]
    got = get_probe("classifier_fairness").run(None, _csv(tmp_path, rows), attribute_column="group",
                                               positive_label="pos", n_resamples=50, n_permutations=50)
    ref = gf.summary_from_arrays(Y, P, S, G)
    for k in ("demographic_parity_difference", "equalized_odds_difference", "accuracy_difference"):
        assert got.summary[k].value == pytest.approx(ref[k]), k
    for k in ("auc", "min_subgroup_auc", "min_bpsn_auc", "min_bnsp_auc"):
        assert np.isnan(got.summary[k].value) and got.summary[k].warning == "needs a y_score column"
    assert not set(got.breakdown["metric"]) & set(gf.AUC_KINDS)
    assert any("no 'y_score' column" in w for w in got.warnings)


@pytest.mark.parametrize(("rows", "opts", "match"), [
    ([{"y_pred": 1, "gender": "f"}], {}, r"d\.csv: a predictions file needs the column 'y_true'"),
    ([{"y_true": 1, "y_pred": "maybe", "gender": "f"}, {"y_true": 0, "y_pred": 0, "gender": "m"}], {},
     r"d\.csv: line 2: 'y_pred' is 'maybe'; use 0/1 or true/false"),
    ([{"y_true": 1, "y_pred": 1, "y_score": "high", "gender": "f"},
      {"y_true": 0, "y_pred": 0, "y_score": 0.1, "gender": "m"}], {}, r"d\.csv: line 2: 'y_score' is 'high'"),
    ([{"y_true": 1, "y_pred": 1, "gender": "f"}, {"y_true": 0, "y_pred": 0, "gender": "f"}], {},
     r"d\.csv: the attribute column 'gender' has only one value, so only one group \('f'\)"),
    ([{"y_true": 1, "y_pred": 1, "gender": "f"}, {"y_true": 1, "y_pred": 0, "gender": "m"}], {},
     r"column 'y_true' has a single value"),
    ([{"y_true": 1, "y_pred": 1, "race": "f"}], {}, r"missing the attribute_column 'gender'"),
    ([{"y_true": 1, "y_pred": 1, "gender": "f"}], {"prompt": "{text}"}, r"prompt: needs a model"),
])
def test_predictions_file_errors(tmp_path: Path, rows: list[dict[str, object]], opts: dict[str, object],
                                 match: str) -> None:
    with pytest.raises(ProbeError, match=match):
        get_probe("classifier_fairness").run(None, _csv(tmp_path, rows), **opts)


def test_predictions_mode_needs_data() -> None:
    with pytest.raises(ProbeError, match="needs data= a predictions file"):
        get_probe("classifier_fairness").run(None)
