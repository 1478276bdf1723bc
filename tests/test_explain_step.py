"""The explain step of an audit run, the link to bias items, metrics on a real (tiny) model and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from audit.explain import (
    explain,
    explain_bias_items,
    prepare,
    run_explain_step,
    validate_explain_spec,
)
from audit.explain.evaluate import evaluate
from audit.rundir_view import RunView
from audit.store import RunDir, read_json
from tests.fixture_runs import SCRIPT_ROW, make_run

MLM_TEXT = "the nurse said [MASK] was tired"


# ---------------------------------------------------------------------------------------------
# spec validation
# ---------------------------------------------------------------------------------------------


def test_validate_normalises_a_good_spec() -> None:
    spec = validate_explain_spec({"name": "nurse", "method": "ig", "texts": ["a [MASK] b"],
                                  "options": {"n_steps": 16}, "metrics": ["comprehensiveness", "tau_loo"]})
    assert spec["methods"] == ["ig"] and spec["texts"] == ["a [MASK] b"] and spec["target"] == {}
    spec = validate_explain_spec({"name": "n", "methods": ["ig", "occlusion"], "data": "x.txt",
                                  "options": {"n_steps": 16, "occlusion": {"removal": "mask"}}})
    assert spec["methods"] == ["ig", "occlusion"] and spec["metrics"] is None


@pytest.mark.parametrize("spec,message", [
    ({"name": "e", "methods": ["shap"], "texts": ["x"]}, "field 'methods'.*unknown method 'shap'"),
    ({"name": "e", "texts": ["x"]}, "give 'methods'"),
    ({"name": "e", "method": "ig"}, "exactly one of 'texts' and 'data'"),
    ({"name": "e", "method": "ig", "texts": ["x"], "metrics": ["aopc"]}, "field 'metrics'.*unknown metric 'aopc'"),
    ({"name": "e", "method": "ig", "texts": ["x"], "options": {"steps": 3}}, r"\['steps'\] fit none of the methods"),
    ({"name": "e", "method": "ig", "texts": ["x"], "options": {"ig": {"window": 3}}},
     r"field 'options.ig': unknown option\(s\) \['window'\] for method 'ig'"),
    ({"name": "e", "method": "ig", "texts": ["x"], "options": {"occlusion": {"removal": "mask"}}},
     r"options: \['occlusion'\] fit none of the methods \['ig'\]"),
    ({"name": "e", "method": "ig", "texts": ["x"], "colour": "red"}, "field 'colour'.*[Ee]xtra"),
    ({"name": "../up", "method": "ig", "texts": ["x"]}, "field 'name'.*plain folder name"),
    ({"name": "", "method": "ig", "texts": ["x"]}, "field 'name'"),
    ({"name": "e", "method": "ig", "texts": ["x"], "max_examples": 0}, "field 'max_examples'"),
])
def test_validate_names_the_field(spec: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        validate_explain_spec(spec)


# ---------------------------------------------------------------------------------------------
# the step writes the run-directory contract
# ---------------------------------------------------------------------------------------------


def test_run_explain_step_writes_the_contract(tmp_path: Path, bert_mlm) -> None:  # type: ignore[no-untyped-def]
    rd = RunDir(tmp_path / "run")
    spec = {"name": "nurse", "methods": ["ig", "occlusion", "attention"],
            "texts": [MLM_TEXT, "the doctor said [MASK] was rich"], "target": {"token": "she"},
            "options": {"n_steps": 16, "attention": {"layers": [1]}},
            "rationales": [["nurse"], ["doctor", "rich"]],
            "metrics": ["completeness_gap", "comprehensiveness", "sufficiency", "deletion_auc", "insertion_auc",
                        "tau_loo", "rank_agreement", "attention_entropy", "plausibility", "infidelity"]}
    status = run_explain_step(bert_mlm, spec, rd, "nurse", seed=0, progress=False)
    assert status["status"] == "complete" and status["n_examples"] == 2
    d = rd.explain_dir("nurse")
    assert rd.explain_complete("nurse")
    # summary.json is the completion marker: written after both tables
    assert (d / "summary.json").stat().st_mtime_ns >= (d / "metrics.parquet").stat().st_mtime_ns
    assert (d / "metrics.parquet").stat().st_mtime_ns >= (d / "attributions.parquet").stat().st_mtime_ns
    attr = pd.read_parquet(d / "attributions.parquet")
    assert {"example", "text", "method", "target", "token_index", "token", "score", "layer", "head", "source_index",
            "target_index"} <= set(attr.columns)
    assert set(attr["method"]) == {"ig", "occlusion", "attention"} and set(attr["example"]) == {0, 1}
    assert set(attr.loc[attr["method"] == "attention", "layer"].dropna()) == {1}
    met = pd.read_parquet(d / "metrics.parquet")
    assert {"example", "method", "metric", "value", "k"} <= set(met.columns)
    names = set(met["metric"])
    for m in ("completeness_gap", "comprehensiveness", "comprehensiveness_aopc", "sufficiency_aopc", "deletion_auc",
              "insertion_auc", "tau_loo", "rank_spearman", "topk_overlap", "attention_entropy",
              "plausibility_auprc", "plausibility_token_f1", "infidelity"):
        assert m in names, m
    assert met.loc[met["metric"] == "comprehensiveness", "k"].notna().all()
    summary = read_json(d / "summary.json")
    assert summary["status"] == "complete" and summary["methods"] == ["ig", "occlusion", "attention"]
    assert summary["texts"][0] == MLM_TEXT
    gap = summary["metrics"]["ig"]["completeness_gap"]
    assert gap["value"] < 0.05 and gap["ideal"] == 0.0 and gap["higher_is_better"] is False and gap["n"] == 2
    assert "rank_spearman:occlusion" in summary["metrics"]["ig"]
    assert summary["metrics"]["occlusion"]["tau_loo"]["value"] == pytest.approx(1.0)
    # each IG target's gap, steps and met, for the report and dashboard
    comp = summary["completeness"]
    assert [(r["method"], r["example"]) for r in comp] == [("ig", 0), ("ig", 1)]
    assert all(r["steps"] >= 16 and r["met"] == (r["gap"] <= 0.05) and r["evaluations"] == r["steps"] for r in comp)


def test_step_reads_csv_and_reports_a_missing_column(tmp_path: Path, bert_classifier) -> None:  # type: ignore[no-untyped-def]
    csv = tmp_path / "texts.csv"
    pd.DataFrame({"sentence": ["the nurse is kind", "the doctor is rich", SCRIPT_ROW]}).to_csv(csv, index=False)
    rd = RunDir(tmp_path / "run")
    spec = {"name": "cls", "method": "occlusion", "data": str(csv), "text_column": "sentence", "target": {"class": 1},
            "metrics": ["comprehensiveness"], "max_examples": 3}
    run_explain_step(bert_classifier, spec, rd, "cls", progress=False)
    attr = pd.read_parquet(rd.explain_dir("cls") / "attributions.parquet")
    assert set(attr["text"]) == {"the nurse is kind", "the doctor is rich", SCRIPT_ROW}
    bad = {**spec, "text_column": "text"}
    with pytest.raises(ValueError, match=r"texts.csv: no column 'text' \(columns: sentence\)"):
        run_explain_step(bert_classifier, bad, rd, "bad", progress=False)
    assert read_json(rd.explain_dir("bad") / "summary.json")["status"] == "failed"
    assert not rd.explain_complete("bad")


def test_step_refuses_a_method_invalid_for_the_kind_before_any_work(tmp_path: Path, gpt2) -> None:  # type: ignore[no-untyped-def]
    rd = RunDir(tmp_path / "run")
    spec = {"name": "s", "methods": ["ig", "rollout"], "texts": ["the nurse is kind"], "target": {"mode": "sentence"}}
    with pytest.raises(ValueError, match="'rollout' is not valid for a causal-lm model with target mode 'sentence'"):
        run_explain_step(gpt2, spec, rd, "s", progress=False)
    assert not (rd.explain_dir("s") / "attributions.parquet").exists()


# ---------------------------------------------------------------------------------------------
# metrics on a real model agree with their definitions
# ---------------------------------------------------------------------------------------------


def test_metrics_on_a_model_match_direct_computation(gpt2) -> None:  # type: ignore[no-untyped-def]
    text = "the nurse is kind"
    preps = prepare(gpt2, text)
    occ = explain(gpt2, text, "occlusion")
    ig = explain(gpt2, text, "ig", n_steps=16)
    df = evaluate(gpt2, preps, [occ, ig], ["comprehensiveness", "sufficiency", "tau_loo", "deletion_auc",
                                           "sensitivity_max"], bins=(0.5, 1.0))
    p = preps[0]
    vis = p.attributable.cpu().numpy()
    from audit.explain.perturbation import Ablator

    abl = Ablator(gpt2, p)
    f_x = abl.full()[0]
    f_empty = abl(~vis[None])[0, 0]

    def val(method: str, metric: str, k: float | None = None) -> float:
        rows = df[(df["method"] == method) & (df["metric"] == metric)]
        rows = rows[rows["k"].isna()] if k is None else rows[np.isclose(rows["k"], k)]
        assert len(rows) == 1
        return float(rows["value"].iloc[0])

    # removing everything / keeping everything
    assert val("ig", "comprehensiveness", 1.0) == pytest.approx(f_x - f_empty)
    assert val("ig", "sufficiency", 1.0) == pytest.approx(0.0, abs=1e-12)
    # occlusion scores are leave-one-out effects: τ with themselves is 1
    assert val("occlusion", "tau_loo") == pytest.approx(1.0)
    # deletion curve starts at f(x) and ends at f(baseline)
    dele = df[(df["method"] == "ig") & (df["metric"] == "deletion")].sort_values("k")
    assert dele["value"].iloc[0] == pytest.approx(f_x) and dele["value"].iloc[-1] == pytest.approx(f_empty)
    # sensitivity-max only for gradient methods
    assert set(df.loc[df["metric"] == "sensitivity_max", "method"]) == {"ig"}
    assert (df.loc[df["metric"] == "sensitivity_max", "value"] >= 0).all()


# ---------------------------------------------------------------------------------------------
# link to bias: explain both sentences of the most biased items
# ---------------------------------------------------------------------------------------------


def test_explain_bias_items_ranks_by_effect(tmp_path: Path, gpt2) -> None:  # type: ignore[no-untyped-def]
    rd = make_run(tmp_path)
    status = explain_bias_items(gpt2, rd, "crows_pairs", top_k=2, method="ig", n_steps=8)
    assert status["status"] == "complete" and status["n_items"] == 2
    d = rd.explain_dir("crows_pairs-items")
    assert rd.explain_complete("crows_pairs-items")
    items = RunView(rd).probe("crows_pairs").items()[0]
    top = items["score_diff"].abs().sort_values(ascending=False, kind="stable").index[:2].tolist()
    attr = pd.read_parquet(d / "attributions.parquet")
    assert sorted(set(attr["item"])) == sorted(top) and set(attr["side"]) == {"sent_more", "sent_less"}
    for item in top:
        for side in ("sent_more", "sent_less"):
            texts = set(attr.loc[(attr["item"] == item) & (attr["side"] == side), "text"])
            assert texts == {items.at[item, side]}
    summary = read_json(d / "summary.json")
    assert [r["item"] for r in summary["items"]] == top
    # the explained score is the sentence log-likelihood the probe compares
    from audit.scoring import sentence_logprob

    first = summary["items"][0]
    assert first["score"]["sent_more"] == pytest.approx(float(sentence_logprob(gpt2, [first["texts"]["sent_more"]])[0]),
                                                        abs=1e-4)
    met = pd.read_parquet(d / "metrics.parquet")
    assert {"item", "side"} <= set(met.columns) and set(met["metric"]) == {"completeness_gap"}


def test_explain_bias_items_masked_lm_and_errors(tmp_path: Path, bert_mlm, bert_encoder) -> None:  # type: ignore[no-untyped-def]
    rd = make_run(tmp_path)
    explain_bias_items(bert_mlm, rd, "crows_pairs", top_k=1, method="occlusion")
    attr = pd.read_parquet(rd.explain_dir("crows_pairs-items") / "attributions.parquet")
    assert set(attr["side"]) == {"sent_more", "sent_less"} and attr["target"].iloc[0] == "pseudo-log-likelihood"
    with pytest.raises(ValueError, match="needs a causal or masked LM"):
        explain_bias_items(bert_encoder, rd, "crows_pairs")
    with pytest.raises(ValueError, match="probe 'stereoset' has no complete result"):
        explain_bias_items(bert_mlm, rd, "stereoset")


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------


def test_cli_prints_a_token_table_and_writes_escaped_html(tmp_path: Path, bert_mlm_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    from audit.cli import main

    out = tmp_path / "x.html"
    code = main(["explain", str(bert_mlm_path), "<b>the</b> nurse said [MASK] was tired", "--method", "ig",
                 "-m", "occlusion", "--target", "token=she", "--option", "n_steps=8", "--html", str(out), "-q"])
    text = capsys.readouterr().out
    assert code == 0
    assert "method: ig" in text and "method: occlusion" in text and "completeness gap" in text
    assert "'nurse'" in text and "█" in text
    html = out.read_text()
    assert "<b>the</b>" not in html and "&lt;b&gt;" in html and "<script" not in html


def test_cli_errors_exit_2(bert_mlm_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from audit.cli import main

    assert main(["explain", str(bert_mlm_path), "[MASK] is kind", "--target", "mask_index=3", "-q"]) == 2
    assert "mask_index 3 out of range" in capsys.readouterr().err
    assert main(["explain", str(bert_mlm_path), "[MASK] is kind", "--target", "oops", "-q"]) == 2
    assert "must look like key=value" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["explain", str(bert_mlm_path), "x", "--method", "nope"])


def test_parse_pairs() -> None:
    from audit.explain.cli import parse_pairs

    assert parse_pairs(["token=she", "mask_index=1", "attribute_generated=false", '{"pair": "x"}'], "t") == {
        "token": "she", "mask_index": 1, "attribute_generated": False, "pair": "x"}
    assert json.dumps(parse_pairs(["token=,"], "t")) == '{"token": ","}'
