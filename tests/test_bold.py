"""BOLD probe: loader, cap, VADER / HF scorers, rates and largest gap by hand, tiny-model runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from audit.models import ModelLoadError
from audit.probe import ProbeError, get_probe
from audit.rundir_view import RunView
from audit.stats import bootstrap_table_ci, permutation_table_test
from probes import bold
from tests.conftest import shared_file

GENDER = {"American_actors": {"Tom A": ["Tom A is an American actor who ", "Tom A was born "],
                              "Bob B": ["Bob B is a good man and "]},
          "American_actresses": {"Ann C": ["Ann C is an American actress who ", "Ann C was very happy "]}}
RELIGION = {"judaism": {"Judaism": ["Judaism is an ethnic religion "]},
            "islam": {"Islam": ["Islam is a religion ", "The Muslim man "]}}


@pytest.fixture
def prompts(tmp_path: Path) -> Path:
    (tmp_path / "gender_prompt.json").write_text(json.dumps(GENDER), encoding="utf-8")
    (tmp_path / "religious_ideology_prompt.json").write_text(json.dumps(RELIGION), encoding="utf-8")
    return tmp_path


# --------------------------------------------------------------------------------------------
# loading and capping
# --------------------------------------------------------------------------------------------


def test_loader_rows_and_domains(prompts: Path) -> None:
    df = bold.load_bold(prompts)
    assert len(df) == 8
    assert df["domain"].tolist() == ["gender"] * 5 + ["religious_ideology"] * 3
    assert df.loc[df["group"] == "American_actors", "prompt_index"].tolist() == [0, 1, 2]
    assert df.loc[2, "name"] == "Bob B"
    only = bold.load_bold(prompts, domains=["religious_ideology"])
    assert set(only["group"]) == {"judaism", "islam"}
    assert len(bold.load_bold(prompts / "gender_prompt.json")) == 5


def test_cap_is_deterministic_and_spread(prompts: Path) -> None:
    df = bold.load_bold(prompts)
    capped = bold.cap_prompts(df, 2)
    assert capped.groupby(["domain", "group"]).size().max() == 2
    # evenly spaced through the group: actors keep prompts 0 and 2 (both names), not 0 and 1
    assert capped.loc[capped["group"] == "American_actors", "prompt_index"].tolist() == [0, 2]
    first = bold.cap_prompts(df, 2, sample="first")
    assert first.loc[first["group"] == "American_actors", "prompt_index"].tolist() == [0, 1]
    assert len(bold.cap_prompts(df, None)) == 8


@pytest.mark.parametrize(
    ("content", "message"),
    [("{\"a\": ", "malformed JSON"), ("[1, 2]", "expected a JSON object"),
     ("{\"g\": [\"x\"]}", "group 'g' must map names"), ("{\"g\": {\"n\": \"text\"}}", "prompts must be a list"),
     ("{\"g\": {\"n\": [\"  \"]}}", "has no \\(non-empty\\) prompts"), ("{\"g\": {}}", "has no")],
)
def test_loader_errors_name_the_file(tmp_path: Path, content: str, message: str) -> None:
    f = tmp_path / "x_prompt.json"
    f.write_text(content, encoding="utf-8")
    with pytest.raises(ProbeError, match=f"x_prompt.json.*{message}"):
        bold.load_bold(f)


def test_loader_refuses_unknown_domain_and_missing_path(prompts: Path) -> None:
    with pytest.raises(ProbeError, match=r"unknown domain\(s\) \['race'\]"):
        bold.load_bold(prompts, domains=["race"])
    with pytest.raises(ProbeError, match="not found"):
        bold.load_bold(prompts / "nope_prompt.json")


# --------------------------------------------------------------------------------------------
# rates and gaps from given outcomes, by hand
# --------------------------------------------------------------------------------------------


def _items(spec: dict[tuple[str, str], list[int]]) -> pd.DataFrame:
    rows = []
    for (dom, grp), flags in spec.items():
        for i, f in enumerate(flags):
            rows.append({"domain": dom, "group": grp, "name": grp, "prompt": f"p{i}", "prompt_index": i,
                         "continuation": " text", "vader_score": -0.9 if f else 0.1,
                         "vader_positive": False, "vader_negative": bool(f)})
    return pd.DataFrame(rows)


HAND = {("gender", "A"): [1, 1, 0, 0], ("gender", "B"): [0, 0, 0, 0],
        ("religion", "C"): [1, 0], ("religion", "D"): [1, 1], ("religion", "E"): [0, 0]}


def test_rates_and_largest_gap_match_hand_computation() -> None:
    res = bold.bold_metrics(_items(HAND), ["vader_positive", "vader_negative"], seed=0)
    s = res.summary
    assert s["vader_negative_rate"].value == pytest.approx(100 * 5 / 14)
    # gender: 50 − 0 = 50 pp; religion: D 100 − E 0 = 100 pp → the largest gap is 100
    assert s["vader_negative_gap"].value == pytest.approx(100.0)
    assert s["vader_positive_gap"].value == 0.0
    assert res.info["largest_gaps"]["vader_negative"] == {
        "domain": "religion", "gap": 100.0, "high_group": "D", "high_rate": 100.0, "low_group": "E", "low_rate": 0.0}
    b = res.breakdown.set_index(["group_by", "group", "metric"])["value"]
    assert b[("domain", "gender", "vader_negative_gap")] == pytest.approx(50.0)
    assert b[("domain", "religion", "vader_negative_rate")] == pytest.approx(50.0)
    assert b[("domain_group", "gender/A", "vader_negative_rate")] == pytest.approx(50.0)
    assert b[("domain_group", "religion/D", "vader_mean_score")] == pytest.approx(-0.9)
    gap = s["vader_negative_gap"]
    assert gap.ci_low <= gap.value <= gap.ci_high
    assert "smallest group has 2 prompts" in gap.warning


def test_gap_test_finds_a_planted_difference_and_not_a_null() -> None:
    planted = _items({("gender", "A"): [1] * 30 + [0] * 10, ("gender", "B"): [1] * 5 + [0] * 35})
    null = _items({("gender", "A"): [1, 0] * 20, ("gender", "B"): [0, 1] * 20})
    info = bold.METRICS["vader_negative_gap"]
    p_planted = bold.gap_metric(planted, "vader_negative", info).p_value
    p_null = bold.gap_metric(null, "vader_negative", info).p_value
    assert p_planted < 0.001
    assert p_null > 0.5
    g = bold.gap_metric(planted, "vader_negative", info)
    assert g.value == pytest.approx(62.5) and 30 < g.ci_low < 62.5 < g.ci_high <= 90


def test_table_bootstrap_keeps_strata_and_permutation_is_seeded() -> None:
    t = {"s": np.array([0] * 3 + [1] * 7), "y": np.arange(10.0)}
    seen = []

    def stat(d: dict[str, np.ndarray]) -> float:
        seen.append(int((d["s"] == 0).sum()))
        return float(d["y"].mean())

    bootstrap_table_ci(t, stat, strata="s", n_resamples=50)
    assert set(seen) == {3}
    a = permutation_table_test(t, lambda d: float(d["y"][d["s"] == 1].mean()), permute="s", seed=4, n_resamples=200)
    b = permutation_table_test(t, lambda d: float(d["y"][d["s"] == 1].mean()), permute="s", seed=4, n_resamples=200)
    assert a == b and 0 < a < 0.05


# --------------------------------------------------------------------------------------------
# scorers
# --------------------------------------------------------------------------------------------


def test_vader_thresholds() -> None:
    s = bold.VaderScorer()
    out = s.score(["This is wonderful, great and lovely.", "This is terrible, awful and hateful.", "A table."])
    assert out["vader_positive"].tolist() == [True, False, False]
    assert out["vader_negative"].tolist() == [False, True, False]
    assert out["vader_score"].iloc[2] == 0.0


def test_hf_classifier_scorer(bert_classifier, bert_classifier_path: Path) -> None:  # type: ignore[no-untyped-def]
    texts = ["the man is good", "she was very angry at work today", "the doctor"]
    s = bold.HFClassifierScorer(bert_classifier, "label_1")  # labels compare case-insensitively
    out = s.score(texts)
    ref = []
    for t in texts:
        enc = bert_classifier.tokenizer(t, return_tensors="pt")
        with torch.inference_mode():
            ref.append(torch.softmax(bert_classifier.model(**enc).logits[0], -1).numpy())
    ref_a = np.array(ref)
    np.testing.assert_allclose(out["classifier_score"], ref_a[:, 1], atol=1e-5)
    assert out["classifier"].tolist() == (ref_a.argmax(1) == 1).tolist()
    thr = bold.HFClassifierScorer(bert_classifier, "LABEL_1", threshold=0.0).score(texts)
    assert thr["classifier"].all()
    built = bold.build_scorer({"type": "hf", "model": str(bert_classifier_path), "label": "LABEL_1",
                               "name": "toxicity"}, device="cpu")
    assert built.outcomes == ("toxicity",) and built.describe()["flag"] == "argmax = LABEL_1"


def test_scorer_errors(bert_classifier, bert_encoder_path: Path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ProbeError, match=r"label 'toxic' not among .*\['LABEL_0', 'LABEL_1'\]"):
        bold.HFClassifierScorer(bert_classifier, "toxic")
    with pytest.raises(ModelLoadError, match="encoder"):
        bold.build_scorer({"type": "hf", "model": str(bert_encoder_path), "label": "LABEL_1"}, device="cpu")
    with pytest.raises(ProbeError, match="unknown scorer type 'regard'"):
        bold.build_scorer({"type": "regard"})
    with pytest.raises(ProbeError, match="needs model"):
        bold.build_scorer({"type": "hf", "label": "x"})
    with pytest.raises(ProbeError, match="unknown key"):
        bold.build_scorer({"type": "vader", "threshold": 1})


# --------------------------------------------------------------------------------------------
# the probe on tiny models
# --------------------------------------------------------------------------------------------


def test_probe_on_tiny_gpt2_is_reproducible(gpt2, prompts: Path) -> None:  # type: ignore[no-untyped-def]
    probe = get_probe("bold")
    a = probe.run(gpt2, prompts, seed=3, max_new_tokens=6, progress=False)
    b = probe.run(gpt2, prompts, seed=3, max_new_tokens=6, progress=False)
    c = probe.run(gpt2, prompts, seed=4, max_new_tokens=6, progress=False)
    assert a.items["continuation"].tolist() == b.items["continuation"].tolist()
    assert a.items["continuation"].tolist() != c.items["continuation"].tolist()
    assert set(a.summary) == {"vader_positive_rate", "vader_negative_rate", "vader_positive_gap", "vader_negative_gap"}
    gen = a.info["generation"]
    assert gen["seed"] == 3 and gen["max_new_tokens"] == 6 and gen["do_sample"] is True and gen["padding"] == "left"
    assert a.items["prompt"].iloc[0].endswith(" ")  # stored as given; generation saw it stripped
    assert set(a.breakdown["group_by"]) == {"domain_group", "domain"}


def test_probe_with_hf_scorer_on_llama(llama, prompts: Path, bert_classifier_path: Path) -> None:  # type: ignore[no-untyped-def]
    res = get_probe("bold").run(
        llama, prompts, max_new_tokens=4, max_prompts_per_group=1, progress=False, domains=["gender"],
        scorers=["vader", {"type": "hf", "model": str(bert_classifier_path), "label": "LABEL_1"}])
    assert len(res.items) == 2
    assert {"classifier_rate", "classifier_gap", "vader_negative_gap"} <= set(res.summary)
    assert res.items["classifier"].dtype == bool
    assert [s["type"] for s in res.info["scorers"]] == ["vader", "hf"]


def test_probe_refuses_masked_lm_and_bad_options(bert_mlm, gpt2, prompts: Path) -> None:  # type: ignore[no-untyped-def]
    probe = get_probe("bold")
    with pytest.raises(ProbeError, match="cannot run on a masked-lm model"):
        probe.run(bert_mlm, prompts)
    with pytest.raises(ProbeError, match="unknown option"):
        probe.execute(gpt2, prompts, opts={"max_prompts": 3})  # as the runner calls it
    with pytest.raises(ProbeError, match="mapping with type vader or hf"):
        probe.run(gpt2, prompts, scorers=[{"type": "regard"}])
    with pytest.raises(ProbeError, match="score_text"):
        probe.run(gpt2, prompts, score_text="prompt")
    with pytest.raises(ProbeError, match="needs data"):
        probe.run(gpt2, None)


def test_real_bold_files_load() -> None:
    df = bold.load_bold(shared_file("bold"))
    assert len(df) == 23679 - 5  # five empty strings in the official files are skipped
    assert df.attrs["n_empty_prompts_skipped"] == 5
    assert df.groupby("domain")["group"].nunique().to_dict() == {
        "gender": 2, "political_ideology": 12, "profession": 18, "race": 4, "religious_ideology": 7}
    capped = bold.cap_prompts(df, bold.DEFAULT_MAX_PROMPTS)
    assert len(capped) == 43 * bold.DEFAULT_MAX_PROMPTS


def test_runs_from_an_audit_config_in_chunks(tmp_path: Path, prompts: Path, gpt2_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from audit.config import parse_config
    from audit.runner import run_audit

    monkeypatch.setattr(bold.Bold, "chunk_size", 3)  # 8 prompts → 3 checkpointed chunks
    opts = {"max_new_tokens": 5, "domains": ["gender", "religious_ideology"]}
    cfg = parse_config({
        "seed": 2, "output": str(tmp_path / "runs"), "models": [{"name": str(gpt2_path)}],
        "probes": [{"probe": "bold", "data": str(prompts), "options": opts}], "report": {"enabled": False},
    })
    [o] = run_audit(cfg, run_id="r", progress=False)
    assert o.status == "complete"
    items = RunView(o.run_dir).probe("bold").items()[0]
    assert len(items) == 8
    # chunking does not change a prompt's continuation (per-prompt seeds from the run seed)
    from audit.models import load_model

    direct = get_probe("bold").run(load_model(gpt2_path, device="cpu"), prompts, seed=2, progress=False, **opts)
    assert items["continuation"].tolist() == direct.items["continuation"].tolist()


@pytest.mark.slow
def test_smollm2_on_real_bold_prompts() -> None:
    from audit.models import load_model

    data = shared_file("bold/gender_prompt.json")
    handle = load_model("smollm2-135m", device="cpu")
    res = get_probe("bold").run(handle, data, max_prompts_per_group=3, max_new_tokens=8, progress=False)
    assert len(res.items) == 6
    assert (res.items["continuation"].str.strip() != "").all()  # a real model writes something
    assert 0 <= res.summary["vader_negative_gap"].value <= 100
