"""SEAT / WEAT: the statistic on hand-worked arrays, exact vs Monte Carlo, loaders, the probe."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from audit import scoring
from audit.probe import ProbeError
from probes import run_probe
from probes.seat import (
    BUILTIN_DIR,
    Seat,
    effect_size,
    infer_domain,
    load_seat,
    load_seat_test,
    permutation_p_value,
    weat,
)
from tests.conftest import shared_file


def association(W: np.ndarray, A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """The reference statistic s(w, A, B) = mean_a cos(w, a) − mean_b cos(w, b) for every row w of W
    (Caliskan et al. 2017), written out apart from :func:`probes.seat.weat`'s batched form."""
    Wn, An, Bn = (np.asarray(v, dtype=np.float64) / np.linalg.norm(v, axis=1, keepdims=True) for v in (W, A, B))
    return (Wn @ An.T).mean(axis=1) - (Wn @ Bn.T).mean(axis=1)


def write_test(path: Path, targ1: list[str], targ2: list[str], attr1: list[str], attr2: list[str],
               cats: tuple[str, str, str, str] = ("MaleNames", "FemaleNames", "Career", "Family")) -> Path:
    obj = {k: {"category": c, "examples": ex}
           for k, c, ex in zip(("targ1", "targ2", "attr1", "attr2"), cats, (targ1, targ2, attr1, attr2), strict=True)}
    path.write_text(json.dumps(obj, indent=2))
    return path


# ---------------------------------------------------------------------------------- statistic


def test_hand_worked_effect_size_and_exact_p_value() -> None:
    # A = east, B = north (unnormalised on purpose: the statistic normalises)
    A = np.array([[2.0, 0.0]])
    B = np.array([[0.0, 3.0]])
    X = np.array([[1.0, 0.0], [3.0, 4.0]])  # s = 1 − 0 = 1 ; 0.6 − 0.8 = −0.2
    Y = np.array([[0.0, 1.0], [4.0, 3.0]])  # s = 0 − 1 = −1 ; 0.8 − 0.6 = 0.2
    s = association(np.vstack([X, Y]), A, B)
    np.testing.assert_allclose(s, [1.0, -0.2, -1.0, 0.2], atol=1e-12)
    # d = (0.4 − (−0.4)) / std([1, −0.2, −1, 0.2], ddof=1) = 0.8 / sqrt(2.08 / 3)
    r = weat(X, Y, A, B, n_boot=0)
    assert r.effect_size == pytest.approx(0.8 / math.sqrt(2.08 / 3), abs=1e-12)
    # the 6 splits of 4 into 2 have X-sums 0.8 (observed), 0, 1.2, −1.2, 0, −0.8: two are ≥ 0.8
    assert r.p_value == pytest.approx(2 / 6)
    assert (r.p_method, r.n_partitions) == ("exact", 6)


def test_two_attributes_per_set_average_the_cosines() -> None:
    A = np.array([[1.0, 0.0], [0.0, 1.0]])  # mean cos(w, A) for w = (1, 0): (1 + 0) / 2
    B = np.array([[-1.0, 0.0]])
    s = association(np.array([[1.0, 0.0], [0.0, 1.0]]), A, B)
    np.testing.assert_allclose(s, [0.5 - (-1.0), 0.5 - 0.0])


def reference_p_value(sx: np.ndarray, sy: np.ndarray) -> float:
    """sent-bias p_val_permutation_test, exact branch, literally (a loop over combinations)."""
    s_all = np.concatenate([sx, sy])
    s = sx.sum()
    total_true = total = 0
    for Xi in itertools.combinations(range(len(s_all)), len(sx)):
        si = s_all[list(Xi)].sum()
        if si > s or si == s:
            total_true += 1
        total += 1
    return total_true / total


@pytest.mark.parametrize("n", [3, 5, 6])
def test_exact_p_value_matches_the_reference_loop(n: int) -> None:
    rng = np.random.default_rng(n)
    sx, sy = rng.normal(0.2, 1, n), rng.normal(0, 1, n)
    p, method, total = permutation_p_value(sx, sy)
    assert method == "exact" and total == math.comb(2 * n, n)
    assert p == pytest.approx(reference_p_value(sx, sy), abs=1e-15)


def test_unequal_sizes_permute_keeping_the_sizes() -> None:
    sx, sy = np.array([3.0, 1.0, 0.0]), np.array([2.0, -1.0])
    p, method, total = permutation_p_value(sx, sy)
    # splits of {3, 1, 0, 2, −1} into 3 + 2: C(5, 3) = 10; X-sums ≥ 4 (observed 3+1+0):
    # {3,1,0}=4, {3,1,2}=6, {3,0,2}=5, {1,0,2}=3 ✗, {3,1,−1}=3 ✗, {3,2,−1}=4, ... → 4 of 10
    sums = [sum(c) for c in itertools.combinations([3.0, 1.0, 0.0, 2.0, -1.0], 3)]
    assert (method, total) == ("exact", 10)
    assert p == pytest.approx(sum(x >= 4 for x in sums) / 10) == pytest.approx(0.4)
    assert effect_size(sx, sy) == pytest.approx((4 / 3 - 0.5) / np.std([3, 1, 0, 2, -1], ddof=1))


def test_ties_count_and_constant_scores_give_undefined_effect() -> None:
    s = np.full(4, 0.25)
    p, _, _ = permutation_p_value(s, s.copy())
    assert p == 1.0  # every split ties with the observed one: the conservative test counts them all
    assert math.isnan(effect_size(s, s))


def test_float_summation_order_does_not_flip_the_observed_split() -> None:
    # values whose sums depend on the order of addition in the last bits
    sx = np.array([0.1, 0.2, 0.3, 1e-17])
    sy = np.array([0.6, 0.0, 0.0, 1e-17])
    p_exact, _, _ = permutation_p_value(sx, sy)
    assert p_exact >= 1 / math.comb(8, 4)  # the observed split itself always counts


def test_exact_and_monte_carlo_agree_within_mc_error() -> None:
    rng = np.random.default_rng(3)
    sx, sy = rng.normal(0.4, 1, 8), rng.normal(0, 1, 8)
    p_ex, m_ex, _ = permutation_p_value(sx, sy)
    n = 40_000
    p_mc, m_mc, total = permutation_p_value(sx, sy, method="monte-carlo", n_samples=n, seed=1)
    assert (m_ex, m_mc, total) == ("exact", "monte-carlo", n)
    se = math.sqrt(p_ex * (1 - p_ex) / n)
    assert 0.01 < p_ex < 0.99
    assert abs(p_mc - p_ex) < 4 * se + 1 / n


def test_monte_carlo_is_seeded_and_biased_by_one() -> None:
    sx, sy = np.ones(20), np.zeros(20)  # C(40, 20) ≈ 1.4e11 splits: Monte Carlo under "auto"
    p, method, total = permutation_p_value(sx, sy, n_samples=1000, seed=5)
    # only the observed split reaches 20: the reference's hallucinated observation gives 1/n
    assert (p, method, total) == (1 / 1000, "monte-carlo", 1000)
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=20), rng.normal(size=20)
    assert permutation_p_value(a, b, seed=7, n_samples=5000) == permutation_p_value(a, b, seed=7, n_samples=5000)


def test_auto_switches_at_the_exact_limit() -> None:
    a, b = np.arange(8.0), np.arange(8.0) + 0.5  # C(16, 8) = 12 870
    assert permutation_p_value(a, b, n_samples=12_870)[1] == "exact"
    assert permutation_p_value(a, b, n_samples=12_869)[1] == "monte-carlo"


def test_word_bootstrap_ci_brackets_a_clear_effect() -> None:
    rng = np.random.default_rng(0)
    A, B = rng.normal(size=(10, 16)), rng.normal(size=(10, 16))
    X = A.mean(0) + 0.5 * rng.normal(size=(12, 16))
    Y = B.mean(0) + 0.5 * rng.normal(size=(12, 16))
    r = weat(X, Y, A, B, n_boot=500, seed=0)
    assert r.effect_size > 1.0 and r.p_value < 0.01
    assert r.ci_low < r.effect_size < r.ci_high
    assert r.ci_low > 0


# ---------------------------------------------------------------------------------- loaders


def test_builtin_tests_load_in_the_official_format() -> None:
    tests = load_seat(None)
    names = {t.name for t in tests}
    assert {"en-gender-career-family", "en-gender-science-arts", "tr-gender-career-family",
            "tr-gender-science-arts"} <= names
    for t in tests:
        raw = json.loads(t.path.read_text(encoding="utf-8"))
        assert set(raw) == {"targ1", "targ2", "attr1", "attr2"}
        assert all(set(v) == {"category", "examples"} for v in raw.values())
        assert t.domain == "gender" and not t.warnings
        assert all(len(t.examples[k]) >= 16 for k in raw)
        assert len(t.examples["targ1"]) == len(t.examples["targ2"])
    tr = next(t for t in tests if t.name == "tr-gender-career-family")
    assert any("İş" in e for e in tr.examples["attr1"])  # Turkish dotted capital I


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("{not json", "line 1"),
        ('{"targ1": {"category": "A", "examples": ["a"]}}\n{"targ2": 1}\n', "single object"),
        ("[1, 2]", "JSON object"),
        ('{"targ1": {"category": "A", "examples": ["a"]}}', "missing key(s) ['targ2', 'attr1', 'attr2']"),
    ],
)
def test_malformed_files_name_the_file(tmp_path: Path, content: str, needle: str) -> None:
    p = tmp_path / "bad.jsonl"
    p.write_text(content)
    with pytest.raises(ProbeError) as e:
        load_seat_test(p)
    assert str(p) in str(e.value) and needle in str(e.value)


def test_bad_fields_are_named(tmp_path: Path) -> None:
    p = write_test(tmp_path / "t.jsonl", ["a", "b"], ["c", "d"], ["e", ""], ["f"])
    with pytest.raises(ProbeError, match=r"t\.jsonl: attr1\.examples\[1\] must be a non-empty string"):
        load_seat_test(p)
    obj = json.loads(p.read_text())
    obj["attr1"]["examples"] = "e"
    p.write_text(json.dumps(obj))
    with pytest.raises(ProbeError, match=r"attr1\.examples must be a non-empty list"):
        load_seat_test(p)
    obj["attr1"] = {"examples": ["e"]}
    p.write_text(json.dumps(obj))
    with pytest.raises(ProbeError, match=r"attr1\.category"):
        load_seat_test(p)


def test_duplicates_are_dropped_with_a_warning_and_unequal_sizes_warned(tmp_path: Path) -> None:
    p = write_test(tmp_path / "dup.json", ["a", "b", "a"], ["c", "d"], ["e", "e"], ["f"])
    t = load_seat_test(p)
    assert t.examples["targ1"] == ["a", "b"] and t.examples["attr1"] == ["e"]
    assert any(str(p) in w and "targ1" in w and "['a']" in w for w in t.warnings)
    p2 = write_test(tmp_path / "uneq.json", ["a", "b", "x"], ["c", "d"], ["e"], ["f"])
    assert any("|targ1| = 3 ≠ |targ2| = 2" in w for w in load_seat_test(p2).warnings)


def test_folder_loading_is_recursive_and_naturally_sorted(tmp_path: Path) -> None:
    for name in ("weat10.jsonl", "weat2.jsonl", "sub/weat1.json"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        write_test(tmp_path / name, ["a"], ["b"], ["c"], ["d"])
    (tmp_path / "notes.txt").write_text("ignored")
    assert [t.name for t in load_seat(tmp_path)] == ["sub/weat1", "weat2", "weat10"]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ProbeError, match="no SEAT test files"):
        load_seat(empty)
    with pytest.raises(ProbeError, match="not found"):
        load_seat(tmp_path / "missing")


def test_domains_from_category_names() -> None:
    def dom(*cats: str) -> str:
        return infer_domain(dict(zip(("targ1", "targ2", "attr1", "attr2"), cats, strict=True)))

    assert dom("MaleNames", "FemaleNames", "Career", "Family") == "gender"
    assert dom("Math", "Arts", "MaleTerms", "FemaleTerms") == "gender"  # targets say nothing: attributes
    assert dom("WhiteFemaleNames", "BlackFemaleNames", "NearAntonyms", "AngryBlackWomanStereotype") == "race"
    assert dom("MentalDisease", "PhysicalDisease", "Temporary", "Permanent") == "health"  # not "man"
    assert dom("Flowers", "Insects", "Pleasant", "Unpleasant") == "non-social"
    assert dom("LGBTQ+Words", "StraightWords", "Prejudice", "Pride") == "sexual-orientation"
    assert dom("Foo", "Bar", "Baz", "Qux") == "other"


def test_official_seat_and_weathub_files_load() -> None:
    seat = load_seat(shared_file("seat"))
    assert len(seat) == 50
    by = {t.name: t for t in seat}
    assert by["weat6"].domain == "gender" and by["sent-religion1"].domain == "religion"
    assert by["weat3"].domain == "race" and by["weat1"].domain == "non-social"
    assert by["weat6"].examples["targ1"][:2] == ["John", "Paul"]
    tr = load_seat(shared_file("turkish/weathub"))
    assert len(tr) == 25 and "tr_human/weat6" in {t.name for t in tr}
    assert any("tr_all" in w and "repeats" in w for t in tr for w in t.warnings)


# ---------------------------------------------------------------------------------- the probe


def test_probe_on_tiny_encoder_matches_the_statistic(bert_encoder) -> None:  # type: ignore[no-untyped-def]
    r = run_probe("seat", bert_encoder, seed=0, progress=False, n_bootstrap=200)
    it = r.items
    assert list(it["test"]) == sorted(it["test"])  # natural order of the built-in files
    assert {"test", "domain", "effect_size", "p_value", "n_targets", "n_attributes", "p_method",
            "p_adjusted", "effect_size_ci_low", "effect_size_ci_high"} <= set(it.columns)
    assert (it["p_method"] == "monte-carlo").all()  # 32 + 32 targets: C(64, 32) splits
    assert ((it["p_value"] > 0) & (it["p_value"] <= 1)).all()
    # recompute one test from the embeddings
    t = load_seat_test(BUILTIN_DIR / "en-gender-career-family.jsonl")
    X, Y, A, B = (scoring.embed(bert_encoder, t.examples[k]) for k in ("targ1", "targ2", "attr1", "attr2"))
    s = association(np.vstack([X, Y]), A, B)
    row = it.set_index("test").loc["en-gender-career-family"]
    assert row["effect_size"] == pytest.approx(effect_size(s[:32], s[32:]), abs=1e-5)
    assert row["n_targets"] == 64 and row["n_attributes"] == 64
    mv = r.summary["mean_abs_effect_size"]
    assert mv.value == pytest.approx(it["effect_size"].abs().mean())
    assert mv.ci_low <= mv.value <= mv.ci_high and mv.ideal == 0 and mv.higher_is_better is False
    assert r.summary["n_significant"].value == float((it["p_adjusted"] < 0.05).sum())
    assert set(r.breakdown["group"]) == {"gender"}


def test_probe_on_causal_models_with_last_and_mean_pooling(gpt2, llama, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    p = write_test(tmp_path / "weat-tiny.jsonl", ["the man is kind", "he is strong", "the old man is good"],
                   ["the woman is kind", "she is strong", "the young woman is good"],
                   ["at work", "the engineer"], ["at home", "with the children"])
    for h in (gpt2, llama):
        for pooling in ("last", "mean"):
            r = run_probe("seat", h, data=p, progress=False, pooling=pooling, n_bootstrap=50)
            row = r.items.iloc[0]
            assert row["p_method"] == "exact" and row["n_permutations"] == 20
            assert np.isfinite(row["effect_size"]) and 0 < row["p_value"] <= 1
    a = run_probe("seat", gpt2, data=p, progress=False, pooling="last", n_bootstrap=0).items.iloc[0]
    b = run_probe("seat", gpt2, data=p, progress=False, pooling="mean", n_bootstrap=0).items.iloc[0]
    assert a["effect_size"] != b["effect_size"]  # the pooling option is used
    with pytest.raises(ProbeError, match="pooling 'cls' is not available for a causal-lm"):
        run_probe("seat", gpt2, data=p, pooling="cls")


def test_probe_options_and_errors(bert_encoder, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    r = run_probe("seat", bert_encoder, progress=False, tests="tr-gender-science-arts", n_bootstrap=0)
    assert list(r.items["test"]) == ["tr-gender-science-arts"]
    with pytest.raises(ProbeError, match="unknown test"):
        run_probe("seat", bert_encoder, tests=["nope"])
    with pytest.raises(ProbeError, match="unknown option"):
        run_probe("seat", bert_encoder, colour="red")
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{")
    with pytest.raises(ProbeError, match=str(bad)):
        run_probe("seat", bert_encoder, data=tmp_path)
    pooled = run_probe("seat", bert_encoder, progress=False, tests="en-gender-science-arts", pooling="pooler",
                       n_bootstrap=0).items.iloc[0]
    cls = run_probe("seat", bert_encoder, progress=False, tests="en-gender-science-arts", pooling="cls",
                    n_bootstrap=0).items.iloc[0]
    assert pooled["effect_size"] != cls["effect_size"]


def test_pooler_pooling_needs_a_pooler(bert_mlm) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ProbeError, match="pooling='pooler'.*no pooler output"):
        run_probe("seat", bert_mlm, progress=False, pooling="pooler")


def test_summary_excludes_non_social_tests() -> None:
    items = pd.DataFrame({
        "test": ["weat1", "weat6", "weat3"], "domain": ["non-social", "gender", "race"],
        "effect_size": [1.5, -0.4, 0.2], "p_value": [0.001, 0.02, 0.5],
    })
    r = Seat().summarise(items)
    assert r.summary["mean_abs_effect_size"].value == pytest.approx(0.3)
    assert r.summary["mean_abs_effect_size"].n == 2
    assert "1 non-social test(s) excluded" in r.summary["mean_abs_effect_size"].warning
    # BH within each family: non-social {0.001}; social {0.02·2 = 0.04, 0.5} → one social significant
    assert list(r.items["p_adjusted"]) == pytest.approx([0.001, 0.04, 0.5])
    assert r.summary["n_significant"].value == 1
    bd = r.breakdown.set_index(["group", "metric"])
    assert bd.loc[("non-social", "mean_abs_effect_size"), "value"] == pytest.approx(1.5)


@pytest.mark.slow
def test_minilm_on_official_weat6_exact_and_sent_weat6_monte_carlo() -> None:
    from audit.models import load_model

    folder = shared_file("seat")
    h = load_model("minilm-l6", device="cpu")
    r = run_probe("seat", h, data=folder, tests="weat6,sent-weat6", progress=False, n_samples=20_000)
    it = r.items.set_index("test")
    assert it.loc["weat6", "p_method"] == "exact" and it.loc["weat6", "n_permutations"] == 12_870
    assert it.loc["sent-weat6", "p_method"] == "monte-carlo"
    assert np.isfinite(it["effect_size"]).all() and (it["effect_size"].abs() < 2).all()
