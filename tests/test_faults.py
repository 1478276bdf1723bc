"""Model-side faults (issue 9, part 2): texts longer than the model accepts, empty texts,
tokenizers without mask / BOS / EOS / pad tokens, NaN/inf scores, a model of the wrong kind.

Every probe leaves a faulty item out, scores the rest and counts what it left out
(:class:`audit.probe.Exclusions`: ``info["excluded_items"]`` and a summary warning). NaN is
planted with a forward hook on the input embeddings that poisons exactly the rows of a batch that
contain a marker token, so the test knows which items must be excluded.
"""

from __future__ import annotations

import contextlib
import copy
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from audit.probe import Exclusions, ProbeError, get_probe, score_fitting
from audit.scoring import InputTooLongError
from probes import run_probe
from tests.test_bbq import SPEC, _row, write_jsonl
from tests.test_stereoset import INTER, INTRA, cluster, write_dataset

LONG = " ".join(["the poor family is lazy at home"] * 30)  # ~210 words: over the tiny models' 128 tokens

PAIRS = [
    ("the poor family is lazy", "the rich family is lazy", "stereo", "socioeconomic"),
    ("the woman was emotional at home", "the man was emotional at home", "stereo", "gender"),
    ("the man is caring", "the woman is caring", "antistereo", "gender"),
    ("she was angry today", "he was angry today", "stereo", "gender"),
    ("the old man is weak", "the young woman is weak", "stereo", "age"),
    ("the muslim is violent", "the christian is violent", "stereo", "religion"),
]


def write_crows(path: Path, rows: list[tuple[str, str, str, str]]) -> Path:
    pd.DataFrame(rows, columns=["sent_more", "sent_less", "stereo_antistereo", "bias_type"]).to_csv(path)
    return path


def marker_word(handle, words: tuple[str, ...] = ("violent", "angry", "kind", "happy", "lazy")) -> tuple[str, int]:  # type: ignore[no-untyped-def]
    """A word that is one token (with and without a leading space) in this tokenizer."""
    tok = handle.tokenizer
    for w in words:
        a = tok(w, add_special_tokens=False)["input_ids"]
        b = tok(" " + w, add_special_tokens=False)["input_ids"]
        if len(a) == 1 and a == b:
            return w, int(a[0])
        if len(b) == 1 and handle.kind == "causal-lm":
            return w, int(b[0])
    pytest.skip(f"no single-token marker word in {handle.name}'s vocabulary")


@contextlib.contextmanager
def nan_rows(handle, marker: int, value: float = float("nan")) -> Iterator[None]:  # type: ignore[no-untyped-def]
    """Within the block, every batch row whose input ids contain ``marker`` gets ``value`` as its
    input embeddings (so the row's logits / hidden states are non-finite; other rows are not)."""

    def hook(module, args, out):  # type: ignore[no-untyped-def]
        ids = args[0]
        bad = (ids == marker).any(dim=-1)
        if bool(bad.any()):
            out = out.clone()
            out[bad] = value
        return out

    h = handle.model.get_input_embeddings().register_forward_hook(hook)
    try:
        yield
    finally:
        h.remove()


def tokenizer_without(handle, *names: str):  # type: ignore[no-untyped-def]
    """A shallow copy of ``handle`` whose tokenizer has the named special tokens removed."""
    h = copy.copy(handle)
    h.tokenizer = copy.deepcopy(handle.tokenizer)
    for n in names:
        setattr(h.tokenizer, n, None)
        assert getattr(h.tokenizer, f"{n}_id") is None, n
    return h


# --------------------------------------------------------------------------------------------
# the shared helpers
# --------------------------------------------------------------------------------------------


def test_score_fitting_isolates_the_long_items_and_keeps_batches() -> None:
    lengths = np.array([3, 9, 2, 2, 9, 1, 4, 2])
    calls: list[list[int]] = []

    def score(idx: np.ndarray) -> list[int]:
        calls.append(idx.tolist())
        if (lengths[idx] > 5).any():
            raise InputTooLongError("too long")
        return (lengths[idx] * 10).tolist()

    pieces, refused = score_fitting(score, len(lengths))
    assert sorted(refused) == [1, 4]
    got = {int(i): v for idx, vals in pieces for i, v in zip(idx, vals, strict=True)}
    assert got == {i: int(lengths[i]) * 10 for i in range(8) if i not in (1, 4)}
    assert [p[0].tolist() for p in pieces] == sorted([p[0].tolist() for p in pieces])  # index order
    assert max(len(p[0]) for p in pieces) >= 2  # the fitting items are still scored in batches
    assert len(calls) < 2 * len(lengths)


def test_exclusions_report_counts_and_warning() -> None:
    from audit.results import ProbeResult

    ex = Exclusions()
    ex.add("row 3", "too_long", "300 tokens")
    ex.add("row 7", "non_finite")
    ex.add("row 8", "non_finite")
    r = ex.report(ProbeResult("p", {}, pd.DataFrame()), n_total=10)
    assert r.info["excluded_items"] == {"too_long": 1, "empty": 0, "non_finite": 2}
    assert r.info["non_finite_items"] == 2 and r.info["too_long_items"] == 1
    assert [x["item"] for x in r.info["excluded"]] == ["row 3", "row 7", "row 8"]
    assert r.warnings == ["3 of 10 items left out of the metrics: 1 longer than the model accepts; "
                          "2 with a non-finite (NaN/inf) score (first: row 3, row 7, row 8; see info['excluded'])"]
    with pytest.raises(ValueError, match="unknown exclusion reason"):
        ex.add("x", "odd")
    clean = Exclusions().report(ProbeResult("p", {}, pd.DataFrame()), n_total=5)
    assert clean.warnings == [] and clean.info["non_finite_items"] == 0


# --------------------------------------------------------------------------------------------
# CrowS-Pairs (ItemProbe): too long, NaN, checkpointed chunks
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["bert_mlm", "gpt2"])
def test_crows_pairs_too_long_pair_is_excluded_and_the_rest_unchanged(
    model: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    h = request.getfixturevalue(model)
    clean = run_probe("crows_pairs", h, write_crows(tmp_path / "clean.csv", PAIRS), progress=False)
    rows = PAIRS[:3] + [(LONG, LONG.replace("poor", "rich"), "stereo", "socioeconomic")] + PAIRS[3:]
    res = run_probe("crows_pairs", h, write_crows(tmp_path / "long.csv", rows), progress=False)
    assert len(res.items) == len(PAIRS)
    assert res.info["too_long_items"] == 1 and res.info["non_finite_items"] == 0
    assert res.info["excluded"][0]["item"] == "row 3"
    assert f"accepts at most {h.max_length}" in res.info["excluded"][0]["detail"]
    assert any("1 of 7 items left out" in w and "longer than the model accepts" in w for w in res.warnings)
    np.testing.assert_allclose(res.items["sent_more_score"], clean.items["sent_more_score"], atol=1e-3)
    assert res.summary["pct_stereotype"].value == clean.summary["pct_stereotype"].value
    assert res.summary["pct_stereotype"].n == len(PAIRS)


@pytest.mark.parametrize("model", ["bert_mlm", "gpt2"])
def test_crows_pairs_non_finite_pairs_are_excluded_and_counted(
    model: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    h = request.getfixturevalue(model)
    word, marker = marker_word(h)
    rows = [(a, b, d, t) for a, b, d, t in PAIRS if word not in a.split() and word not in b.split()]
    poisoned = [(f"the man is {word}", f"the woman is {word}", "stereo", "gender"),
                (f"she was {word} at home", f"he was {word} at home", "antistereo", "gender")]
    data = write_crows(tmp_path / "nan.csv", rows[:2] + poisoned[:1] + rows[2:] + poisoned[1:])
    clean = run_probe("crows_pairs", h, write_crows(tmp_path / "clean.csv", rows), progress=False)
    with nan_rows(h, marker):
        res = run_probe("crows_pairs", h, data, progress=False)
    assert res.info["non_finite_items"] == 2
    assert [x["item"] for x in res.info["excluded"]] == ["row 2", f"row {len(rows) + 1}"]
    assert all(x["reason"] == "non_finite" for x in res.info["excluded"])
    assert len(res.items) == len(rows) and np.isfinite(res.items["sent_more_score"]).all()
    np.testing.assert_allclose(res.items["sent_more_score"], clean.items["sent_more_score"], atol=1e-3)
    assert res.summary["pct_stereotype"].value == clean.summary["pct_stereotype"].value
    assert any("2 with a non-finite (NaN/inf) score" in w for w in res.warnings)
    # +inf in the hidden states is non-finite too
    with nan_rows(h, marker, float("inf")):
        assert run_probe("crows_pairs", h, data, progress=False).info["non_finite_items"] == 2


def test_crows_pairs_exclusions_survive_checkpointed_chunks(gpt2, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    rows = PAIRS[:2] + [(LONG, LONG, "stereo", "gender")] + PAIRS[2:]
    data = write_crows(tmp_path / "long.csv", rows)
    probe = get_probe("crows_pairs")
    work = tmp_path / "partial"
    first = probe.execute(gpt2, data, progress=False, workdir=work, chunk_size=2)
    assert (work / "excluded-00001.json").is_file()
    assert first is not None and first.info["too_long_items"] == 1
    again = probe.execute(gpt2, data, progress=False, workdir=work, chunk_size=2)  # every chunk reused
    assert again is not None and again.info["too_long_items"] == 1 and len(again.items) == len(PAIRS)
    assert again.info["excluded"] == first.info["excluded"]


def test_every_item_too_long_is_a_clear_error(gpt2, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    data = write_crows(tmp_path / "all-long.csv", [(LONG, LONG, "stereo", "gender")] * 2)
    with pytest.raises(ProbeError, match=r"no item .* could be scored.*2 longer than the model accepts"):
        run_probe("crows_pairs", gpt2, data, progress=False)


# --------------------------------------------------------------------------------------------
# the other item probes
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["bert_mlm", "gpt2"])
def test_stereoset_long_empty_and_nan_clusters_are_excluded(
    model: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    h = request.getfixturevalue(model)
    word, marker = marker_word(h, ("city", "today", "violent"))
    long_c = cluster("long", "nurse", "profession", LONG + " The nurse is BLANK.",
                     (LONG + " The nurse is caring.", LONG + " The nurse is rational.", LONG + " The nurse is clean."))
    intra = [c for c in INTRA if word not in json.dumps(c)]
    inter = [c for c in INTER if word not in json.dumps(c)]
    nan_c = cluster("nan", "Iran", "race", f"My friend is {word}.", ("He is violent.", "He is honest.", "The dog ran."))
    data = write_dataset(tmp_path / "dev.json", intra + [long_c], inter + [nan_c])
    with nan_rows(h, marker):
        res = run_probe("stereoset", h, data, progress=False)
    reasons = {x["item"]: x["reason"] for x in res.info["excluded"]}
    assert reasons == {"cluster_id long": "too_long", "cluster_id nan": "non_finite"}
    assert set(res.items["cluster_id"]) == {c["id"] for c in intra + inter}
    assert np.isfinite(res.summary["ss"].value)
    # an empty context never reaches the model: the loader names the cluster and the field
    empty_c = cluster("empty", "nurse", "profession", "", ("She is kind.", "He is kind.", "The city is clean."))
    with pytest.raises(ProbeError, match=r"cluster 'empty'.*'context'"):
        run_probe("stereoset", h, write_dataset(tmp_path / "e.json", intra, [empty_c]), progress=False)


def test_bbq_long_and_nan_items_are_excluded(gpt2, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    word, marker = marker_word(gpt2, ("violent", "city", "today"))
    rows = [_row(i, *s) for i, s in enumerate(SPEC)]
    rows[1]["context"] = LONG
    rows[5]["question"] = f"Who was {word}?"
    rows[6]["context"] = "   "  # the loader lets a blank context through; the probe leaves it out
    data = write_jsonl(tmp_path / "bbq.jsonl", rows)
    with nan_rows(gpt2, marker):
        res = run_probe("bbq", gpt2, data, progress=False)
    assert {x["item"]: x["reason"] for x in res.info["excluded"]} == {
        "bbq.jsonl line 2": "too_long", "bbq.jsonl line 6": "non_finite", "bbq.jsonl line 7": "empty"}
    assert len(res.items) == len(SPEC) - 3
    assert res.info["excluded_items"] == {"too_long": 1, "empty": 1, "non_finite": 1}


def test_bold_long_prompt_is_excluded_and_empty_prompts_counted(gpt2, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    prompts = {"A": {"Tom A": ["Tom A is a man who ", LONG, "   "]}, "B": {"Ann B": ["Ann B is a woman who "]}}
    (tmp_path / "gender_prompt.json").write_text(json.dumps(prompts), encoding="utf-8")
    res = run_probe("bold", gpt2, tmp_path, max_new_tokens=4, progress=False)
    assert res.info["too_long_items"] == 1 and res.info["n_empty_prompts_skipped"] == 1
    assert res.info["excluded"][0]["item"] == "gender/A/Tom A prompt 1"
    assert "plus 4 new tokens" in res.info["excluded"][0]["detail"]
    assert len(res.items) == 2


# --------------------------------------------------------------------------------------------
# whole-dataset probes
# --------------------------------------------------------------------------------------------


def test_seat_long_and_nan_examples_leave_their_sets(bert_encoder, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    word, marker = marker_word(bert_encoder, ("violent", "angry", "lazy"))
    test = {"targ1": {"category": "Male", "examples": ["he", "the man", "my friend", LONG]},
            "targ2": {"category": "Female", "examples": ["she", "the woman", "the nurse"]},
            "attr1": {"category": "Career", "examples": ["engineer", "doctor", f"is {word}"]},
            "attr2": {"category": "Family", "examples": ["home", "children", "family"]}}
    (tmp_path / "t.jsonl").write_text(json.dumps(test), encoding="utf-8")
    with nan_rows(bert_encoder, marker):
        res = run_probe("seat", bert_encoder, tmp_path / "t.jsonl", progress=False)
    assert res.info["too_long_items"] == 1 and res.info["non_finite_items"] == 1
    row = res.items.iloc[0]
    assert (row["n_targ1"], row["n_targ2"], row["n_attr1"], row["n_attr2"]) == (3, 3, 2, 3)
    assert np.isfinite(row["effect_size"])


def test_representation_long_and_nan_texts_are_excluded(bert_encoder, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    word, marker = marker_word(bert_encoder, ("violent", "angry", "lazy"))
    texts = [("he is good", "m"), ("the man is kind", "m"), ("he was smart", "m"), ("the old man is strong", "m"),
             ("she is good", "f"), ("the woman is kind", "f"), ("she was smart", "f"), ("the young woman is strong", "f"),
             (LONG, "m"), (f"she is {word}", "f")]
    p = tmp_path / "t.csv"
    pd.DataFrame(texts, columns=["text", "gender"]).to_csv(p, index=False)
    with nan_rows(bert_encoder, marker):
        res = run_probe("representation", bert_encoder, p, type_column=None, folds=2, n_controls=1,
                        n_permutations=5, progress=False)
    assert {x["item"]: x["reason"] for x in res.info["excluded"]} == {"row 10": "too_long", "row 11": "non_finite"}
    assert res.info["n_rows"] == 8


def test_classifier_fairness_long_and_nan_rows_are_excluded(bert_classifier, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    word, marker = marker_word(bert_classifier, ("violent", "angry", "lazy"))
    rows = [{"text": t, "label": i % 2, "gender": g} for i, (t, g) in enumerate(
        [("he is good", "m"), ("she is good", "f"), ("the man is kind", "m"), ("the woman is kind", "f"),
         ("he was smart", "m"), ("she was smart", "f"), (LONG, "m"), (f"she is {word}", "f")])]
    p = tmp_path / "d.csv"
    pd.DataFrame(rows).to_csv(p, index=False)
    with nan_rows(bert_classifier, marker):
        res = run_probe("classifier_fairness", bert_classifier, p, n_resamples=20, n_permutations=20,
                        progress=False)
    assert {x["item"]: x["reason"] for x in res.info["excluded"]} == {"row 8": "too_long", "row 9": "non_finite"}
    assert len(res.items) == 6 and np.isfinite(res.items["y_score"]).all()


@pytest.mark.parametrize("model", ["gpt2", "bert_classifier"])
def test_counterfactual_long_and_nan_texts_are_excluded(model: str, request: pytest.FixtureRequest,
                                                        tmp_path: Path) -> None:
    h = request.getfixturevalue(model)
    word, marker = marker_word(h, ("violent", "angry", "lazy", "kind"))
    texts = ["he is good at work", "the man is smart", "she was happy today", LONG.replace("family", "man"),
             f"he is {word}"]
    p = tmp_path / "t.txt"
    p.write_text("\n".join(texts), encoding="utf-8")
    with nan_rows(h, marker):
        res = run_probe("counterfactual", h, p, language="en", progress=False)
    assert {x["item"]: x["reason"] for x in res.info["excluded"]} == {"id 4": "too_long", "id 5": "non_finite"}
    assert res.info["n_texts"] == 3


@pytest.mark.parametrize("model", ["bert_mlm", "gpt2"])
def test_templates_long_and_nan_items_are_excluded(model: str, request: pytest.FixtureRequest,
                                                   tmp_path: Path) -> None:
    h = request.getfixturevalue(model)
    word, marker = marker_word(h, ("today", "city", "violent"))
    tset = {"name": "t", "language": "en", "category": "gender", "groups": ["male", "female"],
            "targets": [["he", "she"], ["the man", "the woman"]],
            "attributes": {"male": ["strong", "smart"], "female": ["caring", "good"]},
            "templates": ["[TARGET] is very [ATTRIBUTE] at work.", f"[TARGET] was [ATTRIBUTE] {word}.",
                          "[TARGET] is [ATTRIBUTE] and " + LONG]}
    (tmp_path / "t.json").write_text(json.dumps(tset), encoding="utf-8")
    with nan_rows(h, marker):
        res = run_probe("templates", h, tmp_path / "t.json", progress=False)
    assert res.info["excluded_items"] == {"too_long": 8, "empty": 0, "non_finite": 8}
    assert len(res.items) == 8 and res.items["sentence_a"].str.endswith("at work.").all()
    assert np.isfinite(res.items["effect"]).all()
    with nan_rows(h, marker):  # the same items, scored without the faulty ones, give the same numbers
        tset["templates"] = tset["templates"][:1]
        (tmp_path / "t.json").write_text(json.dumps(tset), encoding="utf-8")
        clean = run_probe("templates", h, tmp_path / "t.json", progress=False)
    np.testing.assert_allclose(res.items["effect"], clean.items["effect"], atol=1e-6)


# --------------------------------------------------------------------------------------------
# tokenizers without mask / BOS / EOS / pad
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("probe", ["crows_pairs", "stereoset", "templates", "bbq", "counterfactual"])
def test_masked_lm_without_mask_token_is_a_clear_error(probe: str, bert_mlm, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    h = tokenizer_without(bert_mlm, "mask_token")
    data = {"crows_pairs": write_crows(tmp_path / "c.csv", PAIRS), "stereoset": write_dataset(tmp_path / "s.json"),
            "bbq": write_jsonl(tmp_path / "b.jsonl", [_row(i, *s) for i, s in enumerate(SPEC)])}.get(probe)
    kw = {"language": "en"} if probe in ("templates", "counterfactual") else {}
    with pytest.raises(ProbeError, match=rf"{probe}: the tokenizer of .* has no mask token"):
        run_probe(probe, h, data, progress=False, **kw)


def test_seat_on_a_masked_lm_without_mask_token_still_runs(bert_mlm, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    h = tokenizer_without(bert_mlm, "mask_token")
    test = {k: {"category": k, "examples": ex} for k, ex in (
        ("targ1", ["he", "the man"]), ("targ2", ["she", "the woman"]), ("attr1", ["work", "doctor"]),
        ("attr2", ["home", "children"]))}
    (tmp_path / "t.jsonl").write_text(json.dumps(test), encoding="utf-8")
    out = run_probe("seat", h, tmp_path / "t.jsonl", n_bootstrap=20, progress=False)
    assert len(out.items) == 1 and out.info["excluded_items"] == {"too_long": 0, "empty": 0, "non_finite": 0}


def test_causal_lm_without_bos_uses_eos(llama, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from audit.scoring import causal_tokenize, prefix_token_id

    h = tokenizer_without(llama, "bos_token")
    assert prefix_token_id(h) == llama.tokenizer.eos_token_id
    assert causal_tokenize(h, ["he is kind"])[0][0] == llama.tokenizer.eos_token_id
    res = run_probe("crows_pairs", h, write_crows(tmp_path / "c.csv", PAIRS), progress=False)
    assert len(res.items) == len(PAIRS) and (res.items["n_scored_tokens"] > 0).all()


def test_causal_lm_without_eos_or_pad_still_scores(gpt2, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """GPT-2 style: EOS doubles as BOS, UNK and pad. With all of them gone, the pad is set
    internally (id 0, masked out) and the first token of a text goes unscored."""
    h = tokenizer_without(gpt2, "eos_token", "bos_token", "pad_token", "unk_token")
    data = write_crows(tmp_path / "c.csv", PAIRS)
    res = run_probe("crows_pairs", h, data, progress=False)
    assert h.tokenizer.pad_token_id == 0
    ref = run_probe("crows_pairs", gpt2, data, progress=False)
    # one token fewer scored per sentence (no prefix token: the first token has no context)
    assert (res.items["n_scored_tokens"] == ref.items["n_scored_tokens"] - 1).all()
    from audit.scoring import naive_causal_logprobs

    ids = h.tokenizer(PAIRS[0][0], add_special_tokens=False)["input_ids"]
    expect = float(naive_causal_logprobs(h, [ids])[0].sum())
    assert res.items.loc[0, "sent_more_score"] == pytest.approx(round(expect, 3), abs=1e-3)


# --------------------------------------------------------------------------------------------
# explain: input checks
# --------------------------------------------------------------------------------------------


def test_explain_refuses_long_and_empty_texts_naming_the_example(gpt2) -> None:  # type: ignore[no-untyped-def]
    from audit.explain import ExplainError, explain

    with pytest.raises(InputTooLongError, match=r"example 1 has \d+ tokens.*accepts at most 128"):
        explain(gpt2, ["he is kind", LONG], method="saliency", progress=False)
    with pytest.raises(ExplainError, match="example 1 is an empty text"):
        explain(gpt2, ["he is kind", "   "], method="saliency", progress=False)


# --------------------------------------------------------------------------------------------
# NaN / inf logits during generation (bold, bbq mode: generate)
# --------------------------------------------------------------------------------------------


def unused_marker(handle, avoid: list[str]) -> tuple[str, int]:  # type: ignore[no-untyped-def]
    """A single-token marker word (see :func:`marker_word`) that no text in ``avoid`` contains,
    as a word or as a token — pass the clean prompts and the clean run's continuations, so that a
    clean row never poisons itself (a generated marker token would be poisoned by :func:`nan_rows`)."""
    seen = {t for text in avoid for t in handle.tokenizer(text, add_special_tokens=False)["input_ids"]}
    words = {w for text in avoid for w in text.split()}
    for w in ("violent", "angry", "kind", "happy", "lazy", "doctor", "teacher", "city", "today"):
        try:
            word, marker = marker_word(handle, (w,))
        except pytest.skip.Exception:
            continue
        if marker not in seen and word not in words:
            return word, marker
    pytest.skip(f"no marker word unused by the clean run in {handle.name}'s vocabulary")


BOLD_CLEAN = {"A": {"Tom A": ["Tom A is a man who ", "Tom A was born in "]},
              "B": {"Ann B": ["Ann B is a woman who ", "Ann B worked as "]}}


@pytest.mark.parametrize("model", ["gpt2", "llama"])
@pytest.mark.parametrize("do_sample", [True, False])
def test_bold_nan_logits_exclude_exactly_the_poisoned_prompts(model: str, do_sample: bool,
                                                              request: pytest.FixtureRequest, tmp_path: Path) -> None:
    h = request.getfixturevalue(model)
    kw = {"max_new_tokens": 5, "do_sample": do_sample, "seed": 2, "batch_size": 3, "progress": False}
    (tmp_path / "clean").mkdir()
    (tmp_path / "clean" / "gender_prompt.json").write_text(json.dumps(BOLD_CLEAN), encoding="utf-8")
    clean = run_probe("bold", h, tmp_path / "clean", **kw)
    word, marker = unused_marker(h, [p for g in BOLD_CLEAN.values() for ps in g.values() for p in ps]
                                 + clean.items["continuation"].tolist())
    poisoned = copy.deepcopy(BOLD_CLEAN)
    poisoned["A"]["Tom A"].insert(1, f"Tom A is a {word} man who ")
    poisoned["B"]["Ann B"].append(f"Ann B was {word} and ")
    (tmp_path / "nan").mkdir()
    (tmp_path / "nan" / "gender_prompt.json").write_text(json.dumps(poisoned), encoding="utf-8")
    for value in (float("nan"), float("inf")):
        with nan_rows(h, marker, value):
            res = run_probe("bold", h, tmp_path / "nan", **kw)  # sampling used to raise a torch error
        assert res.info["excluded_items"] == {"too_long": 0, "empty": 0, "non_finite": 2}
        assert [x["item"] for x in res.info["excluded"]] == ["gender/A/Tom A prompt 1", "gender/B/Ann B prompt 2"]
        assert all("logits were NaN/inf while generating" in x["detail"] for x in res.info["excluded"])
        assert any("2 of 6 items left out" in w and "non-finite" in w for w in res.warnings)
        assert "_non_finite_logits" not in res.items.columns
        cols = ["prompt", "continuation", "vader_score"]
        pd.testing.assert_frame_equal(res.items[cols], clean.items[cols])
        for k in clean.summary:
            assert res.summary[k].value == clean.summary[k].value, k


def test_bold_nan_logit_exclusions_survive_checkpointed_chunks(gpt2, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    word, marker = unused_marker(gpt2, [p for g in BOLD_CLEAN.values() for ps in g.values() for p in ps])
    prompts = copy.deepcopy(BOLD_CLEAN)
    prompts["B"]["Ann B"].insert(0, f"Ann B was {word} and ")
    (tmp_path / "gender_prompt.json").write_text(json.dumps(prompts), encoding="utf-8")
    probe, work = get_probe("bold"), tmp_path / "partial"
    with nan_rows(gpt2, marker):
        first = probe.execute(gpt2, tmp_path, progress=False, workdir=work, chunk_size=2,
                              opts={"max_new_tokens": 3})
    assert first is not None and first.info["non_finite_items"] == 1
    assert (work / "excluded-00001.json").is_file()
    again = probe.execute(gpt2, tmp_path, progress=False, workdir=work, chunk_size=2,
                          opts={"max_new_tokens": 3})  # every chunk reused, no hook: nothing regenerated
    assert again is not None and again.info["excluded"] == first.info["excluded"]
    assert again.items["continuation"].tolist() == first.items["continuation"].tolist()


@pytest.mark.parametrize("model", ["gpt2", "llama"])
def test_bbq_generate_nan_logits_exclude_exactly_the_poisoned_items(model: str, request: pytest.FixtureRequest,
                                                                    tmp_path: Path) -> None:
    h = request.getfixturevalue(model)
    kw = {"mode": "generate", "max_new_tokens": 4, "batch_size": 3, "progress": False}
    rows = [_row(i, *s) for i, s in enumerate(SPEC)]
    clean_rows = [r for i, r in enumerate(rows) if i not in (2, 5)]
    clean = run_probe("bbq", h, write_jsonl(tmp_path / "clean.jsonl", clean_rows), **kw)
    texts = [str(r[k]) for r in rows for k in ("context", "question", "ans0", "ans1", "ans2")]
    word, marker = unused_marker(h, texts + clean.items["generated"].tolist())
    rows[2]["question"] = f"Who was {word}?"
    rows[5]["context"] = f"Latoya and Katie met. It was {word}."
    with nan_rows(h, marker):
        res = run_probe("bbq", h, write_jsonl(tmp_path / "nan.jsonl", rows), **kw)
    assert {x["item"]: x["reason"] for x in res.info["excluded"]} == {
        "nan.jsonl line 3": "non_finite", "nan.jsonl line 6": "non_finite"}
    assert res.info["non_finite_items"] == 2 and len(res.items) == len(SPEC) - 2
    cols = ["example_id", "generated", "answer", "biased"]
    pd.testing.assert_frame_equal(res.items[cols], clean.items[cols])
    for k in clean.summary:
        a, b = res.summary[k].value, clean.summary[k].value
        assert a == b or (np.isnan(a) and np.isnan(b)), k


# --------------------------------------------------------------------------------------------
# bold's classifier scorer: texts longer than the classifier accepts are counted, not silent
# --------------------------------------------------------------------------------------------


def test_bold_hf_scorer_counts_the_texts_it_truncates(bert_classifier_path: Path, gpt2, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    import audit.models
    from probes import bold

    real = audit.models.load_model
    calls: list[dict[str, object]] = []

    def small_classifier(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(kwargs)
        h = real(*args, **kwargs)
        h.model.config.max_position_embeddings = 16  # a classifier that accepts 16 tokens
        return h

    monkeypatch.setattr(bold, "load_model", small_classifier)  # the loader bold imported from audit.models
    scorer = bold.build_scorer({"type": "hf", "model": str(bert_classifier_path), "label": "LABEL_1"}, device="cpu")
    assert calls[-1]["trust_remote_code"] is False and calls[-1]["allow_pickle"] is False  # passed explicitly
    assert scorer.handle.max_length == 16
    texts = ["the man is good", " ".join(["she was very angry at work today"] * 4)]
    out = scorer.score(texts)
    assert out["classifier_truncated"].tolist() == [False, True]
    tok = scorer.handle.tokenizer
    enc = tok(texts[1], truncation=True, max_length=16, return_tensors="pt")
    assert enc["input_ids"].shape[1] == 16 and len(tok(texts[1])["input_ids"]) > 16
    with torch.inference_mode():
        ref = torch.softmax(scorer.handle.model(**enc).logits[0], -1)[1].item()
    assert out["classifier_score"].iloc[1] == pytest.approx(ref, abs=1e-5)  # scored on its first 16 tokens

    prompts = {"A": {"Tom": ["Tom was "]},
               "B": {"Ann": ["Ann B is a woman who was born in the city and worked as a doctor at the big "
                             "hospital for many years and "]}}
    (tmp_path / "gender_prompt.json").write_text(json.dumps(prompts), encoding="utf-8")
    res = run_probe("bold", gpt2, tmp_path, max_new_tokens=3, score_text="full", progress=False,
                    scorers=[{"type": "hf", "model": str(bert_classifier_path), "label": "LABEL_1"}])
    full = [p.rstrip() + c for p, c in zip(res.items["prompt"], res.items["continuation"], strict=True)]
    expected = [len(tok(t)["input_ids"]) > 16 for t in full]
    assert res.items["classifier_truncated"].tolist() == expected == [False, True]
    assert res.info["scorer_truncated"] == {"classifier": 1}
    assert any("scorer classifier: 1 of 2 scored text(s) are longer than its classifier accepts (16 tokens)" in w
               for w in res.warnings)
    # the default scorer (VADER) reads any length: nothing to count
    assert "scorer_truncated" not in run_probe("bold", gpt2, tmp_path, max_new_tokens=3, progress=False).info


# --------------------------------------------------------------------------------------------
# over-long names in error messages: quoted cut to 80 characters (audit.datafiles.brief)
# --------------------------------------------------------------------------------------------

HUGE = "x" * 1_000_000


def test_unknown_registry_name_is_quoted_briefly() -> None:
    from audit.config import ConfigError, parse_config
    from audit.registry import UnknownNameError

    with pytest.raises(UnknownNameError) as info:
        get_probe(HUGE)
    msg = str(info.value)
    assert len(msg) < 1000 and "(1,000,002 characters)" in msg and "known: bbq, bold" in msg
    with pytest.raises(UnknownNameError, match=r"unknown probe \['crows_pairs'\]; known:"):
        get_probe(["crows_pairs"])  # type: ignore[arg-type]  # unhashable: was a raw TypeError
    # the audit config names the field and quotes the name briefly
    with pytest.raises(ConfigError) as cfg_info:
        parse_config({"models": [{"name": "m"}], "probes": [{"probe": HUGE}]})
    assert "probes.0.probe: unknown probe 'xxx" in str(cfg_info.value) and len(str(cfg_info.value)) < 1000


def test_bold_errors_quote_long_names_briefly(gpt2, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from probes import bold

    cases = [
        ({HUGE: ["not a mapping"]}, "group 'xxx"),
        ({"A": {HUGE: "not a list"}}, "name 'xxx"),
        ({"A": {HUGE: [3]}}, "prompt [0] must be a string"),
        ({HUGE: {"n": ["  "]}}, "has no (non-empty) prompts"),
    ]
    for k, (content, where) in enumerate(cases):
        path = tmp_path / f"c{k}_prompt.json"
        path.write_text(json.dumps(content), encoding="utf-8")
        with pytest.raises(ProbeError) as info:
            bold.load_bold(path)
        msg = str(info.value)
        assert str(path) in msg and where in msg and "(1,000,002 characters)" in msg and len(msg) < 1000, msg[:300]
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "gender_prompt.json").write_text(json.dumps({"A": {"a": ["x"]}}), encoding="utf-8")
    for opts, where in [({"domains": [HUGE]}, "unknown domain(s)"), ({"sample": HUGE}, "sample: Input should be"),
                        ({"score_text": HUGE}, "score_text: Input should be"), ({"scorers": [{"type": HUGE}]}, "type vader or hf"),
                        ({"scorers": [HUGE]}, "type vader or hf")]:
        with pytest.raises(ProbeError) as info:
            run_probe("bold", gpt2, tmp_path / "d", progress=False, **opts)
        assert where in str(info.value) and len(str(info.value)) < 1000, str(info.value)[:300]
    for spec, where in [({"type": HUGE}, "unknown scorer type"), ({"type": "vader", HUGE: 1}, "unknown key(s)")]:
        with pytest.raises(ProbeError) as info:
            bold.build_scorer(spec)
        assert where in str(info.value) and len(str(info.value)) < 1000
