"""``taudit run`` with ``models: []``: an audit of a classifier's logged decisions (no model),
the way fairlearn and Aequitas users work — config check, run directory, reports, dashboard."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pandas as pd
import pytest
import yaml
from streamlit.testing.v1 import AppTest

from audit import cli
from audit.config import ConfigError, parse_config
from audit.probe import PROBES, Probe, ProbeError
from audit.runner import run_audit
from audit.store import RunDir, read_json
from dashboard import RUNS_ENV
from dashboard.data import RunsRoot, load_run_info
from probes import run_probe
from reports import collect_report, report_schema

APP = Path(__file__).resolve().parents[1] / "dashboard" / "app.py"
OPTIONS = {"n_resamples": 200, "n_permutations": 200}


def write_predictions(path: Path, n: int = 90) -> Path:
    """Logged decisions of a classifier that is kinder to group "a": scores shifted up by 0.15."""
    rng = np.random.default_rng(7)
    group = np.where(np.arange(n) % 3 == 0, "b", "a")
    y = rng.random(n) < 0.45
    score = np.clip(np.where(y, 0.65, 0.35) + rng.normal(0, 0.2, n) + np.where(group == "a", 0.15, 0.0), 0, 1)
    pd.DataFrame({"y_true": y.astype(int), "y_pred": (score > 0.5).astype(int), "y_score": score.round(4),
                  "group": group}).to_csv(path, index=False)
    return path


def write_config(tmp_path: Path, **extra: Any) -> Path:
    write_predictions(tmp_path / "decisions.csv")
    cfg = {"seed": 0, "output": str(tmp_path / "runs"), "models": [],
           "probes": [{"probe": "classifier_fairness", "data": "decisions.csv",
                       "options": {"attribute_column": "group", **OPTIONS}}], **extra}
    p = tmp_path / "audit.yaml"
    p.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return p


def _num(x: Any) -> float:
    return float("nan") if x is None else float(x)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> RunDir:
    """``taudit run`` on a models: [] config with a policy (reports on, the default formats)."""
    tmp = tmp_path_factory.mktemp("predictions")
    policy = [{"check": "classifier_fairness.demographic_parity_difference <= 0.05", "severity": "fail"},
              {"check": "classifier_fairness.accuracy >= 0.5", "severity": "warn"}]
    cfg = write_config(tmp, policy=policy)
    assert cli.main(["validate", str(cfg)]) == 0
    code = cli.main(["run", str(cfg), "--run-id", "logged", "-q"])
    rd = RunDir(tmp / "runs" / "logged")
    verdict = read_json(rd.path / "verdict.json")
    assert code == (1 if verdict["status"] == "fail" else 0)
    return rd


def test_cli_run_gives_run_probes_numbers(run: RunDir) -> None:
    """Every summary metric (value, interval, p) and every item of the CLI run equals
    ``run_probe("classifier_fairness", None, data=...)`` on the same file."""
    ref = run_probe("classifier_fairness", None, data=run.path.parent.parent / "decisions.csv",
                    attribute_column="group", **OPTIONS)
    summary = read_json(run.probe_dir("classifier_fairness") / "summary.json")
    assert summary["status"] == "complete" and set(summary["metrics"]) == set(ref.summary)
    for k, v in ref.summary.items():
        got = summary["metrics"][k]
        assert tuple(_num(got[f]) for f in ("value", "ci_low", "ci_high", "p_value")) == pytest.approx(
            tuple(_num(x) for x in (v.value, v.ci_low, v.ci_high, v.p_value)), nan_ok=True), k
    assert not math.isnan(ref.summary["min_bpsn_auc"].value)  # y_score was read: the AUCs are computed
    items = pd.read_parquet(run.probe_dir("classifier_fairness") / "items.parquet")
    pd.testing.assert_frame_equal(items[ref.items.columns].reset_index(drop=True), ref.items, check_dtype=False)
    assert summary["info"]["mode"] == "predictions file (no model)"


def test_run_directory_of_a_model_free_run(run: RunDir) -> None:
    manifest = read_json(run.manifest_path)
    assert manifest["status"] == "complete" and manifest["errors"] == []
    assert manifest["model"] is None and manifest["config"]["models"] == []
    (ds,) = manifest["datasets"]["classifier_fairness"]
    assert Path(ds["path"]).name == "decisions.csv" and ds["rows"] == 90 and len(ds["sha256"]) == 64
    # the verdict judges the run's own numbers
    dp = read_json(run.probe_dir("classifier_fairness") / "summary.json")["metrics"]["demographic_parity_difference"]
    checks = {c["check"]: c for c in read_json(run.path / "verdict.json")["checks"]}
    dp_check = checks["classifier_fairness.demographic_parity_difference <= 0.05"]
    assert dp_check["value"] == pytest.approx(dp["value"])
    assert dp_check["status"] == ("pass" if dp["value"] <= 0.05 else "fail")


def test_reports_say_there_is_no_model(run: RunDir) -> None:
    html = (run.path / "report.html").read_text(encoding="utf-8")
    assert "<h1>Audit report: logged predictions (no model)</h1>" in html
    assert "No model was loaded" in html and "unnamed model" not in html
    card = (run.path / "model_card.md").read_text(encoding="utf-8")
    assert "No model was loaded" in card and "| architecture |" not in card
    doc = collect_report(run)
    jsonschema.validate(json.loads(json.dumps(doc)), report_schema())
    assert doc["model"]["model_free"] is True and doc["probes"][0]["name"] == "classifier_fairness"
    # the headline is the probe's declared primary metric (reports and the console table read info)
    assert doc["probes"][0]["primary_metric"] == "equalized_odds_difference"
    assert json.loads((run.path / "report.json").read_text(encoding="utf-8"))["model"]["model_free"] is True


def test_dashboard_reads_a_model_free_run(run: RunDir, monkeypatch: pytest.MonkeyPatch) -> None:
    info = load_run_info(RunsRoot(run.path.parent), run.path.name)
    assert info.status == "complete" and info.model == "no model (logged predictions: decisions.csv)"
    monkeypatch.setenv(RUNS_ENV, str(run.path.parent))
    at = AppTest.from_file(str(APP), default_timeout=120).run()
    assert not at.exception, at.exception
    assert at.dataframe[0].value.set_index("run").loc["logged", "model"] == info.model
    for name in ("bias", "compare"):
        at.switch_page(f"views/{name}.py").run()
        assert not at.exception, (name, at.exception)


def test_rerun_resumes_without_a_model(run: RunDir, tmp_path: Path) -> None:
    """The same command on the finished directory skips the complete probe; the manifest keeps
    ``"model": null``."""
    cfg = parse_config({"models": [], "probes": [{"probe": "classifier_fairness",
                        "data": str(run.path.parent.parent / "decisions.csv"),
                        "options": {"attribute_column": "group", **OPTIONS}}], "report": {"enabled": False}})
    (out,) = run_audit(cfg, out=run.path.parent, run_id="logged", progress=False)
    manifest = read_json(out.run_dir.manifest_path)
    assert manifest["history"][-1]["resumed"]["probes_complete"] == ["classifier_fairness"]
    assert manifest["model"] is None and out.status == "complete"
    # without a run id the directory is named <time>-predictions
    (fresh,) = run_audit(cfg, out=tmp_path, progress=False)
    assert fresh.run_dir.path.name.endswith("-predictions") and fresh.status == "complete"


# -- refused before anything loads --------------------------------------------------------------


def test_validate_names_the_models_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = write_config(tmp_path)
    cfg = yaml.safe_load(p.read_text(encoding="utf-8"))
    cfg["probes"].append({"probe": "crows_pairs", "data": "decisions.csv"})
    p.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    assert cli.main(["validate", str(p)]) == 2
    assert "models: an empty list needs probes that run without a model; crows_pairs needs one" in capsys.readouterr().err
    assert cli.main(["run", str(p), "--run-id", "x", "-q"]) == 2
    assert "models: an empty list" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(("change", "field"), [
    ({"probes": []}, "models: an empty list needs probes that run without a model; the config lists no probes"),
    ({"probes": ["seat", "bbq"]}, "models: an empty list needs probes that run without a model; seat, bbq need one"),
    ({"probes": [{"probe": "classifier_fairness"}]}, "probes.0.data: needs data= a predictions file"),
    ({"probes": [{"probe": "classifier_fairness", "data": "d.csv", "options": {"prompt": "{text}"}}]},
     "probes.0.options.prompt: needs a model"),
    ({"explain": [{"methods": ["ig"], "texts": ["a"]}]}, "explain: explain steps need a model"),
])
def test_config_without_models_refuses(change: dict[str, Any], field: str) -> None:
    base = {"models": [], "probes": [{"probe": "classifier_fairness", "data": "d.csv"}], **change}
    with pytest.raises(ConfigError) as exc:
        parse_config(base)
    assert field in str(exc.value)


def test_config_without_models_accepts_a_model_free_probe() -> None:
    cfg = parse_config({"models": [], "probes": [{"probe": "classifier_fairness", "data": "d.csv",
                                                  "options": {"positive_label": "yes"}}]})
    assert cfg.models == [] and cfg.probes[0].options == {"positive_label": "yes"}


def test_torchrun_is_refused_with_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    cfg = parse_config({"models": [], "probes": [{"probe": "classifier_fairness", "data": "d.csv"}]})
    with pytest.raises(ValueError, match=r"does not run under torchrun \(WORLD_SIZE=2\)"):
        run_audit(cfg, out=tmp_path, progress=False)
    assert not any(tmp_path.iterdir())


# -- the capability itself ----------------------------------------------------------------------


def test_probes_declaring_a_model_free_mode_implement_it() -> None:
    """``without_model`` is declared on the class; a probe that declares it overrides
    ``score_without_model``, and one that does not refuses ``run_without_model``."""
    free = [n for n in PROBES.names() if PROBES.get(n).without_model is not None]
    assert "classifier_fairness" in free
    for name in free:
        assert PROBES.get(name).score_without_model is not Probe.score_without_model, name
    with pytest.raises(ProbeError, match="'crows_pairs' needs a model; it has no model-free mode"):
        PROBES.get("crows_pairs")().run_without_model("x.csv")
    with pytest.raises(ProbeError, match=r"probe 'crows_pairs' needs a model \(handle is None\)"):
        run_probe("crows_pairs", None, data="x.csv")  # type: ignore[arg-type]
