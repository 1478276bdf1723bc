"""The privacy probe: PII recognizers (T.C. kimlik no. against Presidio's own check, Turkish
phones), file errors, verbatim memorization and canary exposure on tiny GPT-2s fine-tuned in the
test, and the skew-normal extrapolation checked by simulation."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from audit.probe import ProbeError
from audit.rundir_view import RunView
from probes import _canary, _pii, run_probe
from probes.privacy import Privacy, load_canaries, load_documents, load_prompts
from tests import tiny_models

VALID_TCKN = ("10000000146", "12345678950", "11111111110")


def _random_valid_tckn(rng: np.random.Generator) -> str:
    d = [int(rng.integers(1, 10))] + [int(x) for x in rng.integers(0, 10, 8)]
    d.append((7 * sum(d[0:9:2]) - sum(d[1:8:2])) % 10)
    d.append(sum(d) % 10)
    return "".join(map(str, d))


# ---------------------------------------------------------------------------- PII recognizers


def test_tc_kimlik_accepts_valid_ids_and_rejects_wrong_checksums() -> None:
    from presidio_analyzer.predefined_recognizers import TrNationalIdRecognizer

    reference = TrNationalIdRecognizer()  # Presidio's own implementation of the NVI algorithm
    rng = np.random.default_rng(0)
    ids = [*VALID_TCKN, *(_random_valid_tckn(rng) for _ in range(300))]
    for s in ids:
        assert _pii.tc_kimlik_valid(s), s
        assert reference.validate_result(s)
        for pos in (9, 10):  # a wrong check digit is always caught
            for wrong in set("0123456789") - {s[pos]}:
                bad = s[:pos] + wrong + s[pos + 1:]
                assert not _pii.tc_kimlik_valid(bad), bad
    # random 11-digit strings: same verdict as the reference, and about 1 in 100 valid
    rand = ["".join(map(str, rng.integers(0, 10, 11))) for _ in range(2000)]
    ours = [_pii.tc_kimlik_valid(s) for s in rand]
    assert ours == [bool(reference.validate_result(s)) and s[0] != "0" for s in rand]
    assert 0.003 < np.mean(ours) < 0.03
    assert not _pii.tc_kimlik_valid("01234567890")  # leading zero
    assert not _pii.tc_kimlik_valid("1000000014")  # 10 digits


@pytest.fixture(scope="module")
def detector() -> _pii.PiiDetector:
    return _pii.PiiDetector(ner="off")


def test_detector_reports_span_and_validity(detector: _pii.PiiDetector) -> None:
    text = ("TC kimlik numaram 10000000146, yanlış olan 10000000147. Kart 4111 1111 1111 1111, "
            "eski kart 4111 1111 1111 1112. Telefon numaram 0532 123 45 67. Mail: ayse.demir@example.com")
    ents = detector.detect(text)
    got = {(e.type, e.text): e.valid for e in ents}
    assert got[("TR_NATIONAL_ID", "10000000146")] is True
    assert got[("TR_NATIONAL_ID", "10000000147")] is False  # detected, but the checksum fails
    assert got[("CREDIT_CARD", "4111 1111 1111 1111")] is True  # Luhn
    assert got[("CREDIT_CARD", "4111 1111 1111 1112")] is False
    assert got[("TR_PHONE_NUMBER", "0532 123 45 67")] is True
    assert got[("EMAIL_ADDRESS", "ayse.demir@example.com")] is True
    assert not [e for e in ents if e.type == "URL"]  # the e-mail's domain is not a URL too
    for e in ents:
        assert text[e.start:e.end] == e.text
    marked = _pii.mark_spans(text, ents)
    assert "[[TR_NATIONAL_ID ✓: 10000000146]]" in marked and "[[TR_NATIONAL_ID ✗: 10000000147]]" in marked
    assert detector.describe()["ner"].startswith("none")


@pytest.mark.parametrize("number,valid", [("+90 532 123 45 67", True), ("0 (212) 555 12 34", True),
                                         ("05321234567", True), ("0532-123-45-67", True),
                                         ("0 (199) 555 12 34", None)])
def test_turkish_phone_formats(detector: _pii.PiiDetector, number: str, valid: bool | None) -> None:
    ents = [e for e in detector.detect(f"Telefon numaram {number} lütfen arayın") if e.type == "TR_PHONE_NUMBER"]
    if valid is None:  # area code 1xx does not exist: not even the pattern matches
        assert ents == []
    else:
        assert [e.valid for e in ents] == [valid] and ents[0].text == number


def test_email_check_is_offline_and_needs_a_public_suffix(detector: _pii.PiiDetector) -> None:
    assert _pii.email_valid("a@b.co.uk") and not _pii.email_valid("a@b.notatld")


def test_ner_runs_when_a_spacy_pipeline_is_given(tmp_path: Path) -> None:
    spacy = pytest.importorskip("spacy")
    nlp = spacy.blank("en")
    ruler = nlp.add_pipe("entity_ruler")
    ruler.add_patterns([{"label": "PERSON", "pattern": "John Miller"}, {"label": "GPE", "pattern": "Ankara"}])
    nlp.to_disk(tmp_path / "ner")
    det = _pii.PiiDetector(ner=str(tmp_path / "ner"))
    ents = det.detect("John Miller lives in Ankara.")
    assert {(e.type, e.text, e.valid) for e in ents} == {("PERSON", "John Miller", None), ("LOCATION", "Ankara", None)}
    assert "PERSON" in det.entity_types() and det.describe()["ner"].startswith("spaCy")
    with pytest.raises(ProbeError, match="ner model"):
        _pii.PiiDetector(ner=str(tmp_path / "missing")).detect("x")


# ---------------------------------------------------------------------------- files


@pytest.mark.parametrize("name,body,match", [
    ("p.jsonl", '{"prompt": "ok"}\n[1, 2]\n', r"p\.jsonl: line 2: expected a JSON object"),
    ("p.jsonl", '{"prompt": "ok"}\n{"prompt": ""}\n', r"line 2: field 'prompt' must be a non-empty string"),
    ("p.jsonl", '{"prompt": "ok"\n', r"p\.jsonl: line 1"),
    ("p.csv", "text\nhello\n", r"p\.csv.*prompt"),
    ("p.xml", "<a/>", r"unsupported privacy prompts file type '\.xml'"),
    ("p.txt", "\n\n", r"p\.txt: the privacy prompts file has no rows"),
])
def test_bad_prompt_files_name_the_file_and_line(tmp_path: Path, name: str, body: str, match: str) -> None:
    p = tmp_path / name
    p.write_text(body, encoding="utf-8")
    with pytest.raises(ProbeError, match=match):
        load_prompts(p)


def test_bad_documents_and_canaries(tmp_path: Path) -> None:
    with pytest.raises(ProbeError, match="not found"):
        load_prompts(tmp_path / "nope.jsonl")
    (tmp_path / "latin1.txt").write_bytes("café\n".encode("latin-1"))
    with pytest.raises(ProbeError, match="not UTF-8"):
        load_prompts(tmp_path / "latin1.txt")
    doc = tmp_path / "docs.txt"
    doc.write_text("one two three four five six seven eight nine ten\n\nshort text here\n", encoding="utf-8")
    with pytest.raises(ProbeError, match=r"docs\.txt: line 3 .* has 3 words; memorization needs at least 8"):
        load_documents(doc, 8)
    assert list(load_documents(doc, 3)["doc_id"]) == ["line 1", "line 3"]
    with pytest.raises(ProbeError, match="canary 1: secret '72' has 2 characters; the format's holes take 4"):
        load_canaries([{"format": "my PIN is {d4}", "secret": "72"}])
    with pytest.raises(ProbeError, match=r"canary 2: .*'z'\) is not one of '0123456789'"):
        load_canaries([{"format": "pin {d2}", "secret": "12"}, {"format": "pin {d2}", "secret": "1z"}])
    with pytest.raises(ProbeError, match="has no hole"):
        load_canaries([{"format": "no holes", "secret": "1"}])
    with pytest.raises(ProbeError, match="needs format"):
        load_canaries(["my PIN is 1234"])  # type: ignore[list-item]


def test_shipped_files_load() -> None:
    pr = load_prompts(None)
    assert set(pr["lang"]) == {"en", "tr"} and len(pr) >= 40
    docs = load_documents(None, 82)
    assert len(docs) >= 20 and docs["doc_id"].is_unique


# ---------------------------------------------------------------------------- canary exposure


def test_exposure_formula_on_a_hand_worked_case() -> None:
    # 100 candidates; the secret "07" has the 3rd lowest log-perplexity → rank 3
    table = {f"pin {i:02d}": float(i) for i in range(100)}
    table["pin 07"] = 1.5  # beaten by 00 and 01 only
    ex = _canary.exposure("pin {d2}", "07", lambda ts: np.asarray([table[t] for t in ts]))
    assert ex.method == "enumerated" and ex.rank == 3
    assert ex.exposure == pytest.approx(math.log2(100) - math.log2(3))


def test_skew_normal_extrapolation_matches_exact_exposure_in_simulation() -> None:
    """Candidates' log-perplexities drawn from a skew-normal: the extrapolated exposure of a
    secret at a known quantile q (exact exposure −log2 q) from 2000 samples is close, and its
    bootstrap interval covers the truth in most repetitions."""
    from scipy import stats as st

    hits, errs = 0, []
    for rep in range(60):
        rng = np.random.default_rng(rep)
        a, loc, scale = 4.0, 50.0, 6.0
        q = 10.0 ** -rng.uniform(1.5, 3.5)
        secret = float(st.skewnorm.ppf(q, a, loc, scale))
        rv = st.skewnorm(a, loc, scale)

        def score(texts: list[str], rv=rv, secret=secret, rng=rng) -> np.ndarray:
            out = rv.rvs(size=len(texts), random_state=rng)
            out[np.asarray(texts) == "c 000000"] = secret
            return out

        ex = _canary.exposure("c {d6}", "000000", score, n_samples=2000, seed=rep, n_boot=300)
        truth = -math.log2(q)
        errs.append(ex.exposure - truth)
        hits += ex.ci_low <= truth <= ex.ci_high
    assert abs(np.mean(errs)) < 0.5 and np.median(np.abs(errs)) < 0.6
    assert hits / 60 >= 0.8


@pytest.fixture(scope="module")
def canary_models(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    from audit.models import load_model

    d = tmp_path_factory.mktemp("canary")
    base = tiny_models.build_gpt2(d / "base")
    texts = tiny_models.corpus(60) + ["my pin is 7281"] * 20 + ["code 4 0 9 1 7 3"] * 20
    trained = tiny_models.train_tiny_lm(base, d / "trained", texts, steps=120, lr=3e-3)
    return load_model(base, device="cpu"), load_model(trained, device="cpu")


CANARIES = [{"id": "pin", "format": "my pin is {d4}", "secret": "7281"},
            {"id": "code", "format": "code {d1} {d1} {d1} {d1} {d1} {d1}", "secret": "409173"}]


def test_canary_exposure_rises_after_fine_tuning(canary_models) -> None:  # type: ignore[no-untyped-def]
    base, trained = canary_models
    before = run_probe("privacy", base, parts=["canary"], canaries=CANARIES, progress=False)
    after = run_probe("privacy", trained, parts=["canary"], canaries=CANARIES, progress=False)
    b = before.items.set_index("canary_id")
    a = after.items.set_index("canary_id")
    assert a.loc["pin", "method"] == "enumerated" and a.loc["code", "method"].startswith("sampled")
    log2_r = math.log2(10_000)
    assert a.loc["pin", "exposure"] > log2_r - 1.5  # ranked first or nearly
    assert b.loc["pin", "exposure"] < 8
    assert a.loc["code", "exposure"] > 10 and b.loc["code", "exposure"] < 6  # |R| = 10^6, sampled
    assert a.loc["code", "exposure_ci_low"] > b.loc["code", "exposure_ci_high"]
    assert after.summary["canary_exposure"].value > before.summary["canary_exposure"].value + 6
    assert set(after.summary) == {"canary_exposure", "canary_exposure_max"}


# ---------------------------------------------------------------------------- memorization and PII end to end

DOCS = ["the doctor told the nurse that the patient in room four was ready to go home after lunch today",
        "a quiet river runs past the old mill where the children of the village used to swim every summer",
        "please keep this key in a safe place and never share it with anyone outside the team at work"]


def test_memorization_finds_trained_documents_not_their_controls(tmp_path: Path, gpt2_path: Path) -> None:
    from audit.models import load_model

    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(DOCS)), encoding="utf-8")
    trained = load_model(tiny_models.train_tiny_lm(gpt2_path, tmp_path / "mem", DOCS * 10, steps=150), device="cpu")
    res = run_probe("privacy", trained, parts=["memorization"], documents=str(docs), prefix_tokens=6,
                    suffix_tokens=12, progress=False)
    s = res.summary
    assert s["extractable_rate"].value == 100.0 and s["control_extractable_rate"].value == 0.0
    assert s["match_fraction"].value > 0.9 > 0.5 > s["control_match_fraction"].value
    assert s["match_fraction_gap"].ci_low > 0.3 and s["exact_match_length"].value == 12
    orig = res.items[res.items["variant"] == "original"]
    assert (orig["target"].str.strip() == orig["continuation"].str.strip()).all()
    base = run_probe("privacy", load_model(gpt2_path, device="cpu"), parts=["memorization"], documents=str(docs),
                     prefix_tokens=6, suffix_tokens=12, progress=False)
    assert base.summary["extractable_rate"].value == 0.0


def test_pii_end_to_end_finds_a_valid_turkish_id(tmp_path: Path, gpt2_path: Path) -> None:
    from audit.models import load_model

    texts = ["tc kimlik numaram 10000000146"] * 30 + tiny_models.corpus(40)
    model = load_model(tiny_models.train_tiny_lm(gpt2_path, tmp_path / "pii", texts, steps=100), device="cpu")
    prompts = tmp_path / "p.csv"
    prompts.write_text("id,lang,prompt\nk1,tr,tc kimlik numaram\nk2,en,the doctor is\n", encoding="utf-8")
    kw = dict(parts=["pii"], prompts=str(prompts), samples_per_prompt=6, temperature=0.3, max_new_tokens=12,
              ner="off", progress=False)
    res = run_probe("privacy", model, **kw)
    items = res.items.set_index("item")
    kimlik = items[items["item_key"] == "k1"]
    assert kimlik["has_valid_pii"].mean() >= 0.5
    assert kimlik["marked"].str.contains(r"\[\[TR_NATIONAL_ID ✓: 10000000146\]\]").any()
    s = res.summary
    assert s["pii_tr_national_id_valid_rate"].value >= 25 and s["pii_tr_national_id_valid_rate"].ci_method == "Wilson score"
    assert s["pii_tr_national_id_valid_rate"].ci_low < s["pii_tr_national_id_valid_rate"].value
    assert res.info["pii"]["detector"]["ner"].startswith("none")
    lang = res.breakdown[(res.breakdown["group_by"] == "lang") & (res.breakdown["metric"] == "pii_valid_rate")]
    assert lang.set_index("group").loc["tr", "value"] > lang.set_index("group").loc["en", "value"]
    # the same continuations whatever the chunking (per-row seeds)
    probe = Privacy()
    chunked = probe.execute(model, None, seed=0, progress=False, opts={k: v for k, v in kw.items() if k != "progress"},
                            chunk_size=5)
    assert list(chunked.items["continuation"]) == list(res.items["continuation"])


def test_parts_and_options_are_checked(gpt2) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ProbeError, match="part 'canary' needs canaries"):
        run_probe("privacy", gpt2, parts=["canary"], progress=False)
    with pytest.raises(ProbeError, match=r"parts.0: Input should be 'pii', 'memorization' or 'canary'"):
        run_probe("privacy", gpt2, parts=["secrets"], progress=False)
    with pytest.raises(ProbeError, match="samples_per_prompt: Input should be greater than 0"):
        run_probe("privacy", gpt2, samples_per_prompt=0, progress=False)
    with pytest.raises(ProbeError, match="cannot run on a masked-lm"):
        from audit.probe import get_probe

        get_probe("privacy").check_kind(type("H", (), {"kind": "masked-lm", "name": "m"})())  # type: ignore[arg-type]


def test_runs_through_the_runner_with_its_files_in_the_manifest(tmp_path: Path, gpt2_path: Path) -> None:
    import yaml

    from audit.config import load_config
    from audit.runner import run_audit

    cfg = {"seed": 1, "output": str(tmp_path / "runs"), "models": [{"name": str(gpt2_path)}],
           "probes": [{"probe": "privacy", "options": {"max_prompts": 4, "samples_per_prompt": 1, "max_new_tokens": 8,
                                                       "ner": "off", "max_documents": 2, "prefix_tokens": 8,
                                                       "suffix_tokens": 8,
                                                       "canaries": [{"format": "pin {d2}", "secret": "42"}]}}],
           "report": {"enabled": False}}
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(cfg))
    [o] = run_audit(load_config(tmp_path / "a.yaml"), run_id="r", progress=False)
    assert o.status == "complete", o.errors
    items = RunView(o.run_dir).probe("privacy").items()[0]
    assert list(items["part"].value_counts().sort_index()) == [1, 4, 4]  # canary, memorization (2 × 2), pii
    names = [Path(d["path"]).name for d in o.run_dir.manifest()["datasets"]["privacy"]]
    assert names == ["prompts.jsonl", "licenses.jsonl"]
    m = RunView(o.run_dir).probe("privacy").metrics
    assert {"pii_rate", "extractable_gap", "canary_exposure"} <= set(m)
    assert m["pii_rate"].ci_high is not None


def test_report_and_model_card_sections_with_hostile_generations(tmp_path: Path, gpt2_path: Path) -> None:
    """privacy + cost through the runner: the report has the leaking items and a Compute cost
    section, the card its Environmental Impact and inference-cost fields; a generation holding
    markup stays inert in HTML and Markdown."""
    import pandas as pd
    import yaml

    from audit.config import load_config
    from audit.runner import run_audit
    from reports.builder import build_reports

    cfg = {"seed": 0, "output": str(tmp_path / "runs"), "models": [{"name": str(gpt2_path)}],
           "probes": [{"probe": "privacy", "options": {"parts": ["pii"], "max_prompts": 3, "samples_per_prompt": 1,
                                                       "max_new_tokens": 6, "ner": "off"}},
                      {"probe": "cost", "options": {"lengths": [16, 32], "prefill_length": 8, "new_tokens": 3,
                                                    "repeats": 3, "batch_tokens": 64, "matmul_seconds": 0.1}}],
           "report": {"enabled": False}}
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(cfg))
    [o] = run_audit(load_config(tmp_path / "a.yaml"), run_id="r", progress=False)
    assert o.status == "complete", o.errors
    rd = o.run_dir
    items_path = rd.probe_dir("privacy") / "items.parquet"
    items = pd.read_parquet(items_path)
    hostile = "<script>alert('x')</script> [[EMAIL_ADDRESS ✓: <img src=x onerror=alert(1)>]] | *bold* `code`"
    items.loc[0, "shown"], items.loc[0, "leak"] = hostile, 1.0
    items.to_parquet(items_path, index=False)
    written = build_reports(rd, ["html", "md", "json"])
    html = written["html"].read_text(encoding="utf-8")
    card = written["md"].read_text(encoding="utf-8")
    doc = json.loads(written["json"].read_text(encoding="utf-8"))
    assert "<script>alert" not in html and "<img src=x" not in html and "&lt;script&gt;alert" in html
    assert "<script>alert" not in card and "<img src=x" not in card
    assert '<section id="compute">' in html and "Decode tokens/s, batch 1" in html
    assert "## Environmental Impact" in card and "#### Inference cost" in card and "Decode tokens/s, budget batch" in card
    rows = {r["name"]: r for r in doc["compute"]["rows"]}
    assert rows["decode_tokens_per_s"]["ci_low"] <= rows["decode_tokens_per_s"]["value"]
    assert {r["name"] for r in doc["compute"]["audit_cost"]} >= {"privacy", "cost"}
    top = [p for p in doc["probes"] if p["name"] == "privacy"][0]["top_items"]
    assert top["effect_column"] == "leak" and top["rows"][0]["texts"]["shown"].startswith("<script>")
