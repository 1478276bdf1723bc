"""End to end on a tiny model: ``taudit run --policy`` writes verdict.json, exits 0/1/2, and the
post-run hook writes reports that read the real run directory (probe + real explainer layouts)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from audit import cli
from audit.rundir_view import RunView
from audit.store import RunDir, read_json
from reports import report_schema
from tests.test_crows_pairs import PAIRS, write_csv


def _config(tmp_path: Path, model: Path, **extra: Any) -> Path:
    data = write_csv(tmp_path / "pairs.csv", PAIRS)
    cfg = {
        "seed": 1,
        "output": str(tmp_path / "runs"),
        "models": [{"name": str(model)}],
        "probes": [{"probe": "crows_pairs", "data": data.name}],
        "report": {"formats": ["html", "md", "json"]},
    }
    cfg.update(extra)
    p = tmp_path / "audit.yaml"
    p.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return p


def _policy(tmp_path: Path, name: str, checks: list[Any]) -> Path:
    p = tmp_path / name
    p.write_text(yaml.safe_dump({"checks": checks}), encoding="utf-8")
    return p


@pytest.mark.slow
def test_run_policy_exit_codes_and_post_run_reports(tmp_path: Path, llama_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    explain = [{"name": "why", "methods": ["saliency", "attention"], "texts": ["the nurse said she"],
                "metrics": []}]
    cfg = _config(tmp_path, llama_path, explain=explain)
    # the CrowS-Pairs metric is a percentage in [0, 100]: this check always passes
    ok = _policy(tmp_path, "ok.yaml", ["crows_pairs.metric within 0..100"])
    assert cli.main(["run", str(cfg), "--run-id", "ok", "--policy", str(ok), "-q"]) == 0
    rd = RunDir(tmp_path / "runs" / "ok")
    verdict = read_json(rd.path / "verdict.json")
    assert verdict["status"] == "pass" and verdict["checks"][0]["status"] == "pass"

    # the post-run hook wrote the configured formats from the finished run directory
    assert {p.name for p in rd.path.iterdir()} >= {"report.html", "model_card.md", "report.json"}
    assert not (rd.path / "report.pdf").exists()
    doc = read_json(rd.path / "report.json")
    jsonschema.validate(doc, report_schema())
    assert doc["run"]["status"] == "complete" and doc["verdict"]["status"] == "pass"
    metric = next(m for m in doc["probes"][0]["metrics"] if m["name"] == "pct_stereotype")
    stored = RunView(rd).probe("crows_pairs").summary["metrics"]["pct_stereotype"]
    assert (metric["value"], metric["ci_low"], metric["ci_high"]) == (stored["value"], stored["ci_low"], stored["ci_high"])
    kinds = {(x["method"], x["kind"]) for x in doc["explainers"][0]["examples"]}
    assert ("saliency", "tokens") in kinds and ("attention", "matrix") in kinds
    html = (rd.path / "report.html").read_text(encoding="utf-8")
    assert 'class="tok"' in html and len(re.findall(r'src="data:image/png;base64,', html)) >= 2

    # a fail-severity check that fails: exit 1, verdict failed
    (tmp_path / "plain").mkdir()
    plain = _config(tmp_path / "plain", llama_path, report={"formats": ["json"]})  # no explain step
    strict = _policy(tmp_path, "strict.yaml", [{"check": "crows_pairs.metric within 49.9..50.1", "on": "ci"}])
    assert cli.main(["run", str(plain), "--run-id", "strict", "--policy", str(strict), "-q"]) == 1
    out = tmp_path / "plain" / "runs" / "strict"
    v = read_json(out / "verdict.json")
    assert v["failed"] is True and v["checks"][0]["status"] == "fail"
    assert json.loads((out / "report.json").read_text())["verdict"]["status"] == "fail"
    assert not (out / "report.html").exists()

    # a policy naming a metric the probe does not have: exit 2 before anything runs
    capsys.readouterr()
    bad = _policy(tmp_path, "bad.yaml", ["crows_pairs.icat >= 70"])
    assert cli.main(["run", str(cfg), "--run-id", "bad", "--policy", str(bad), "-q"]) == 2
    assert "unknown metric 'icat'" in capsys.readouterr().err
    assert not (tmp_path / "runs" / "bad").exists()
