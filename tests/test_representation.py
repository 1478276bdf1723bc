"""representation: control task, per-layer probes on planted arrays, a planted signal in a tiny
model's embeddings (and none without it, none under shuffled labels), every model kind, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from audit import scoring
from audit.models import load_model
from audit.probe import ProbeError, get_probe
from probes import representation as rep


def test_control_labels_are_type_level_and_balanced() -> None:
    types = np.repeat([f"t{i}" for i in range(10)], 4)
    labels = np.where(np.repeat(np.arange(10), 4) < 5, "f", "m")
    ctrl = rep.control_labels(labels, types, seed=0)
    per_type = pd.Series(ctrl).groupby(types).nunique()
    assert (per_type == 1).all()  # one label per type, every occurrence
    assert (ctrl == "f").sum() == (labels == "f").sum()  # the balance is kept exactly
    assert (ctrl != labels).any()  # not the real mapping
    assert (rep.control_labels(labels, types, seed=0) == ctrl).all()
    assert not (rep.control_labels(labels, types, seed=1) == ctrl).all()


def test_t_interval_and_majority_by_hand() -> None:
    lo, hi = rep.t_interval(np.array([0.8, 0.9, 1.0]))
    half = 4.302652729911275 * 0.1 / np.sqrt(3)  # t(0.975, df=2) · sd / √3
    assert (lo, hi) == pytest.approx((0.9 - half, 0.9 + half))
    assert rep.t_interval(np.array([0.5, 0.5])) == (0.5, 0.5)
    assert rep.t_interval(np.array([0.9, 1.0, 1.0]), bounds=(0.0, 1.0))[1] == 1.0
    y = np.array(["a", "a", "a", "b", "a", "b"])
    folds = [(np.array([0, 1, 2, 3]), np.array([4, 5])), (np.array([2, 3, 4, 5]), np.array([0, 1]))]
    # fold 1 trains on a,a,a,b → predicts a: 1 of 2 right; fold 2 trains on a,b,a,b → tie, first (a): 2 of 2
    assert rep.majority_accuracy(y, folds) == pytest.approx((0.5 + 1.0) / 2)


def _planted_arrays(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    n_types, per, h = 20, 12, 32
    types = np.repeat(np.arange(n_types), per).astype(str)
    labels = np.where(np.repeat(np.arange(n_types), per) < n_types // 2, "f", "m")
    v = rng.normal(size=h)
    v /= np.linalg.norm(v)
    group = np.where(labels == "f", 1.0, -1.0)[:, None] * v * 3 + rng.normal(size=(len(types), h))
    lexical = (rng.normal(size=(n_types, h)) * 2)[np.repeat(np.arange(n_types), per)] + rng.normal(size=(len(types), h))
    noise = rng.normal(size=(len(types), h))
    return np.stack([noise, group, lexical]), labels, types


def test_probe_layers_on_planted_arrays() -> None:
    states, labels, types = _planted_arrays()
    curve, folds = rep.probe_layers(states, labels, types, seed=0)
    c = curve.set_index("layer")
    assert len(folds) == 5 and c["majority_baseline"].iloc[0] == pytest.approx(0.5)
    # layer 0, noise: nothing to read
    assert c.loc[0, "accuracy"] < 0.65
    # layer 1, a shared group direction: the attribute is read, the type-level control is not
    assert c.loc[1, "accuracy"] > 0.95 and c.loc[1, "selectivity"] > 0.3
    assert c.loc[1, "ci_low"] <= c.loc[1, "accuracy"] <= c.loc[1, "ci_high"]
    # layer 2, only a random vector per word type: the probe memorises types, so the control
    # task is solved as well as the real one and selectivity is near 0 (Hewitt & Liang's point)
    assert c.loc[2, "accuracy"] > 0.9 and abs(c.loc[2, "selectivity"]) < 0.1
    assert int(curve.loc[curve["selectivity"].idxmax(), "layer"]) == 1
    # held-out types: memorised identities do not generalise
    held, _ = rep.probe_layers(states, labels, types, split="type", seed=0)
    assert held.loc[1, "accuracy"] > 0.95 and held.loc[2, "accuracy"] < 0.7


def test_permutation_test_uses_type_level_null() -> None:
    states, labels, types = _planted_arrays()
    folds = rep.make_folds(labels, types, seed=0)
    zero = np.zeros(1)  # one layer, control accuracy 0: the statistic is the accuracy itself
    p, null = rep.permutation_test(states[1:2], labels, types, folds, zero, n_permutations=20)
    assert p == pytest.approx(1 / 21) and len(null) == 20  # the group direction beats every relabelling
    assert rep.permutation_test(states[0:1], labels, types, folds, zero, n_permutations=20)[0] > 0.1  # noise
    # type identities only: random type-level labellings are memorised as well as the real one
    p_lex, null_lex = rep.permutation_test(states[2:3], labels, types, folds, zero, n_permutations=20)
    assert p_lex > 0.3 and null_lex.mean() > 0.9
    # without types the null shuffles texts, and the memorised identities are far above it
    assert rep.permutation_test(states[2:3], labels, None, folds, zero, n_permutations=20)[0] == pytest.approx(1 / 21)


# --------------------------------------------------------------------------------------------
# a tiny model with a planted embedding direction
# --------------------------------------------------------------------------------------------

FEMALE = ["she", "woman", "girl", "nurse", "teacher", "friend"]
MALE = ["he", "man", "boy", "doctor", "engineer", "worker"]
ADJS = ["good", "bad", "lazy", "smart", "kind", "angry", "rich", "poor", "strong", "weak"]


def _planted_handle(path: Path, planted: bool):  # type: ignore[no-untyped-def]
    """A fresh copy of the tiny encoder whose 12 term embeddings are one shared vector, plus
    ±a·v for the two groups when ``planted``; without it the terms are indistinguishable."""
    h = load_model(path, device="cpu")
    emb = h.input_embeddings().weight
    g = torch.Generator().manual_seed(0)
    base = torch.randn(emb.shape[1], generator=g)
    v = torch.randn(emb.shape[1], generator=g)
    v = v / v.norm()
    with torch.no_grad():
        for words, sign in ((FEMALE, 1.0), (MALE, -1.0)):
            for w in words:
                (tid,) = h.tokenizer(w, add_special_tokens=False)["input_ids"]
                emb[tid] = base + (sign * 4.0 * v if planted else 0.0)
    return h


def _planted_texts() -> tuple[list[str], np.ndarray, np.ndarray]:
    rows = [(f"{w} was {a} at work", "f" if w in FEMALE else "m", w) for w in FEMALE + MALE for a in ADJS]
    texts, labels, types = zip(*rows, strict=True)
    return list(texts), np.array(labels), np.array(types)


def test_planted_signal_in_tiny_model(bert_encoder_path: Path) -> None:
    texts, labels, types = _planted_texts()
    planted = _planted_handle(bert_encoder_path, planted=True)
    states = scoring.hidden_states(planted, texts)
    curve, _ = rep.probe_layers(states, labels, types, seed=0)
    assert curve.loc[0, "accuracy"] > 0.95  # the embedding layer carries the planted direction
    assert curve["selectivity"].max() > 0.3  # and it is not type memorisation
    # the same states with the labels shuffled across texts (one type per text): chance
    shuffled = np.random.default_rng(0).permutation(labels)
    sh, _ = rep.probe_layers(states, shuffled, None, seed=0)
    assert sh["accuracy"].max() < 0.7
    # without the plant the two groups' terms are the same vector: nothing to find at any layer
    blank = _planted_handle(bert_encoder_path, planted=False)
    none, _ = rep.probe_layers(scoring.hidden_states(blank, texts), labels, types, seed=0)
    assert none["accuracy"].max() < 0.7


@pytest.mark.parametrize("fixture", ["bert_mlm", "bert_encoder", "bert_classifier", "gpt2", "llama"])
def test_probe_runs_on_every_kind(fixture: str, request: pytest.FixtureRequest) -> None:
    h = request.getfixturevalue(fixture)
    res = get_probe("representation").run(h, progress=False, max_items=60, folds=3, n_permutations=9)
    curve = res.items
    assert curve["layer"].tolist() == list(range(h.model.config.num_hidden_layers + 1))
    best = curve.loc[curve["selectivity"].idxmax()]
    assert res.summary["best_layer"].value == best["layer"]
    assert res.summary["max_selectivity"].value == pytest.approx(best["selectivity"])
    assert res.summary["best_layer_accuracy"].value == pytest.approx(best["accuracy"])
    assert 1 / 10 <= res.summary["best_layer_accuracy"].p_value <= 1
    assert 0 <= res.summary["best_layer_accuracy"].ci_low <= res.summary["best_layer_accuracy"].ci_high <= 1
    assert res.summary["max_accuracy"].value == pytest.approx(curve["accuracy"].max())
    assert set(res.breakdown["group_by"]) == {"gender", "language"}
    assert res.info["n_layers"] == h.model.config.num_hidden_layers


def test_builtin_data() -> None:
    df, dropped = rep.load_attribute_texts(rep.DEFAULT_DATA, extra_columns=["language"])
    assert dropped == 0
    assert df.groupby(["language", "gender"]).size().nunique() == 1
    assert df.groupby("type")["gender"].nunique().max() == 1  # a term has one gender
    assert get_probe("representation").data_files(None) == [rep.DEFAULT_DATA]


def test_errors(tmp_path: Path, bert_encoder) -> None:  # type: ignore[no-untyped-def]
    p = tmp_path / "g.csv"
    pd.DataFrame({"text": [f"text {i}" for i in range(12)], "sex": ["f", "m"] * 6}).to_csv(p, index=False)
    probe = get_probe("representation")
    with pytest.raises(ProbeError, match=r"g\.csv: missing the attribute_column 'gender'"):
        probe.run(bert_encoder, p, progress=False)
    with pytest.raises(ProbeError, match=r"g\.csv: missing the type_column 'term'"):
        probe.run(bert_encoder, p, attribute_column="sex", progress=False)
    one = tmp_path / "one.csv"
    pd.DataFrame({"text": ["a", "b", "c"], "gender": ["f", "f", ""]}).to_csv(one, index=False)
    with pytest.raises(ProbeError, match=r"one\.csv: the attribute column 'gender' has only one value"):
        probe.run(bert_encoder, one, type_column=None, progress=False)
    with pytest.raises(ProbeError, match="'f' has 6 text.*needs at least 8"):
        probe.run(bert_encoder, p, attribute_column="sex", type_column=None, folds=8, progress=False)
    with pytest.raises(ProbeError, match="distinct type"):
        probe.run(bert_encoder, p, attribute_column="sex", type_column="sex", split="type", folds=3, progress=False)
    with pytest.raises(ProbeError, match="split: Input should be 'random' or 'type'"):
        probe.run(bert_encoder, p, attribute_column="sex", type_column=None, split="loo", folds=3, progress=False)
    with pytest.raises(ProbeError, match="pooling: Input should be 'mean', 'cls' or 'last'"):
        probe.run(bert_encoder, p, attribute_column="sex", type_column=None, pooling="pooler", progress=False)
    res = probe.run(bert_encoder, p, attribute_column="sex", type_column=None, folds=3, n_permutations=9,
                    progress=False)
    assert res.info["control"].startswith("per-text") and len(res.items) == 3


def test_interrupted_then_resumed_run_equals_an_uninterrupted_one(
    bert_encoder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch  # type: ignore[no-untyped-def]
) -> None:
    """The hidden states are checkpointed chunk by chunk (audit.probe.ItemProbe): a run that fails
    after two chunks keeps them, the rerun scores only the rest, and its result (per-layer curve,
    metrics, breakdown, info) equals a run in one go with the same chunks, to the bit."""
    kw = {"max_items": 100, "folds": 3, "n_permutations": 9}
    probe = get_probe("representation")
    whole = probe.execute(bert_encoder, None, seed=2, progress=False, opts=kw, chunk_size=16)
    assert whole is not None
    work = tmp_path / "partial"
    monkeypatch.setenv("TAUDIT_FAIL_RANK", "0")
    monkeypatch.setenv("TAUDIT_FAIL_AFTER_CHUNKS", "2")
    monkeypatch.setenv("TAUDIT_FAIL_MODE", "raise")
    with pytest.raises(RuntimeError, match="injected fault on rank 0 after 2 chunk"):
        probe.execute(bert_encoder, None, seed=2, progress=False, opts=kw, chunk_size=16, workdir=work)
    assert sorted(p.name for p in work.glob("chunk-*.parquet")) == ["chunk-00000.parquet", "chunk-00001.parquet"]
    monkeypatch.delenv("TAUDIT_FAIL_RANK")
    resumed = probe.execute(bert_encoder, None, seed=2, progress=False, opts=kw, chunk_size=16, workdir=work)
    assert resumed is not None and probe.resumed == {"chunks_total": 7, "chunks_reused": 2}  # type: ignore[attr-defined]
    assert len(list(work.glob("chunk-*.parquet"))) == 7
    pd.testing.assert_frame_equal(resumed.items, whole.items, check_exact=True)
    pd.testing.assert_frame_equal(resumed.breakdown, whole.breakdown, check_exact=True)
    assert resumed.summary_dict() == whole.summary_dict()
    assert resumed.info == whole.info and resumed.warnings == whole.warnings
    # and the chunks do not move a number here: a single-call run of the same texts agrees
    one = probe.run(bert_encoder, seed=2, progress=False, **kw)
    pd.testing.assert_frame_equal(one.items, whole.items, check_exact=False, atol=1e-9, rtol=0)
