"""The model card's YAML front matter is Hugging Face model-card metadata (issue 21, item 5):
parsed offline with huggingface_hub's ModelCard, its model-index matches what
``metadata_eval_result`` builds and the run's stored values."""

from __future__ import annotations

from pathlib import Path

import pytest

from reports.content import collect_report
from reports.markdown import front_matter, render_model_card
from tests.fixture_runs import make_full_run, make_run

hf = pytest.importorskip("huggingface_hub")


def test_card_parses_as_a_hub_card_with_model_index(tmp_path: Path) -> None:
    rd = make_full_run(tmp_path)
    doc = collect_report(rd)
    card = hf.ModelCard(render_model_card(doc), ignore_metadata_errors=False)
    data = card.data
    assert data.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct"  # the demo's original
    assert "nyu-mll/crows_pairs" in data.datasets and "McGill-NLP/stereoset" in data.datasets
    assert "bias-audit" in data.tags
    results = {r.metric_type: r for r in data.eval_results}
    crows = results["metric"]  # the fixture's summary still uses the old name
    assert crows.metric_value == 50.0 and crows.task_type == "text-generation"
    assert crows.dataset_name == "CrowS-Pairs" and crows.dataset_type == "nyu-mll/crows_pairs"
    assert crows.dataset_revision == "sha256:" + "cd" * 32  # the data file's hash from the manifest
    assert "[30, 90]" in crows.metric_name and "ideal 50" in crows.metric_name
    # one result per probe with a headline value, each equal to the stored metric
    for p in doc["probes"]:
        m = next(x for x in p["metrics"] if x["name"] == p["primary_metric"])
        if m["value"] is not None:
            assert any(r.metric_value == m["value"] and r.metric_name.startswith(p["name"]) for r in data.eval_results)
    # re-serialised by huggingface_hub, the model-index survives
    assert data.to_dict()["model-index"][0]["name"] == "smollm2-135m"


def test_model_index_has_the_layout_of_metadata_eval_result(tmp_path: Path) -> None:
    meta = front_matter(collect_report(make_run(tmp_path)))
    first = meta["model-index"][0]["results"][0]
    ref = hf.metadata_eval_result(
        model_pretty_name=meta["model-index"][0]["name"], task_pretty_name=first["task"]["name"],
        task_id=first["task"]["type"], metrics_pretty_name=first["metrics"][0]["name"],
        metrics_id=first["metrics"][0]["type"], metrics_value=first["metrics"][0]["value"],
        dataset_pretty_name=first["dataset"]["name"], dataset_id=first["dataset"]["type"],
        dataset_revision=first["dataset"].get("revision"))
    got = {"model-index": [{"name": meta["model-index"][0]["name"], "results": [first]}]}
    assert got == ref
    assert "base_model" not in meta  # a local folder ("/models/tiny-bert") has no Hub id
