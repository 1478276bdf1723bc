"""Dashboard pages under ``streamlit.testing.v1.AppTest`` on fixture run directories."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from audit.policy import evaluate_policy, load_policy, write_verdict
from audit.store import RunDir, write_json, write_parquet
from dashboard import RUNS_ENV
from tests.fixture_runs import (
    SCRIPT_ROW,
    explain_tables,
    make_failed_run,
    make_run,
    make_running_run,
)

APP = Path(__file__).resolve().parents[1] / "dashboard" / "app.py"
POLICY = load_policy(["crows_pairs.metric within 45..55",
                      {"check": "seat.mean_abs_effect_size <= 0.2", "severity": "warn"}])


def make_corrupt_manifest_run(root: Path, run_id: str = "run-bad-manifest") -> Path:
    d = root / run_id
    d.mkdir(parents=True)
    (d / "manifest.json").write_text('{"run_id": "x", "status": ', encoding="utf-8")
    return d


def make_corrupt_parquet_run(root: Path, run_id: str = "run-bad-parquet") -> RunDir:
    """A complete run whose crows_pairs items.parquet is damaged (summary still readable)."""
    rd = make_run(root, run_id, with_explain=False)
    (rd.probe_dir("crows_pairs") / "items.parquet").write_bytes(b"PAR1 this is not parquet")
    return rd


def make_hostile_explain_run(root: Path, run_id: str = "run-hostile") -> RunDir:
    """Explanation tokens that are HTML, to check they are shown as text."""
    rd = make_run(root, run_id, with_explain=False)
    attr, metrics = explain_tables()
    attr.loc[attr["token"] == "nurse", "token"] = "<script>alert(1)</script>"
    d = rd.explain_dir("demo")
    write_parquet(d / "attributions.parquet", attr)
    write_parquet(d / "metrics.parquet", metrics)
    write_json(d / "summary.json", {"status": "complete", "methods": ["ig", "saliency", "attention"]})
    return rd


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    r = tmp_path_factory.mktemp("runs")
    a = make_run(r, "run-a")
    b = make_run(r, "run-b", shift=2.0)
    write_verdict(a, evaluate_policy(POLICY, a))
    write_verdict(b, evaluate_policy(POLICY, b))
    make_failed_run(r)
    make_running_run(r)
    make_corrupt_manifest_run(r)
    make_corrupt_parquet_run(r)
    return r


@pytest.fixture
def app(root: Path, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    monkeypatch.setenv(RUNS_ENV, str(root))
    return AppTest.from_file(str(APP), default_timeout=120)


def texts(elements) -> list[str]:  # type: ignore[no-untyped-def]
    return [str(e.value) for e in elements]


def unescape(s: str) -> str:
    """Drop the Markdown backslash escapes the pages add to data strings."""
    return s.replace("\\", "")


def page(at: AppTest, name: str) -> AppTest:
    at.run()
    at.switch_page(f"views/{name}.py").run()
    assert not at.exception, at.exception
    return at


def metric_values(at: AppTest) -> dict[str, str]:
    return {unescape(m.label): unescape(m.value) for m in at.metric}


# -- Runs ----------------------------------------------------------------------------------------


def test_runs_page_lists_every_run_with_status_and_verdict(app: AppTest) -> None:
    at = app.run()
    assert not at.exception
    table = at.dataframe[0].value.set_index("run")
    assert set(table.index) == {"run-a", "run-b", "run-failed", "run-running", "run-bad-manifest",
                                "run-bad-parquet"}
    assert table.loc["run-a", "status"] == "complete"
    assert table.loc["run-failed", "status"] == "failed"
    assert table.loc["run-running", "status"] == "running"
    assert table.loc["run-bad-manifest", "status"] == "unreadable"
    # verdicts come from verdict.json written by audit.policy: run-a 50 % passes, seat warns;
    # run-b's 33.3 % fails the 45..55 check
    assert table.loc["run-a", "verdict"] == "warn"
    assert table.loc["run-b", "verdict"] == "fail"
    assert table.loc["run-failed", "verdict"] == "—"
    assert table.loc["run-a", "model"] == "tiny-bert"
    assert "stereoset (failed)" in table.loc["run-failed", "probes"]
    # the corrupt manifest is a message naming the file, not a traceback
    errs = [unescape(e) for e in texts(at.error)]
    assert any("run-bad-manifest/manifest.json is not valid JSON" in e for e in errs)
    assert at.multiselect(key="runs_pick") is not None


def test_runs_selection_is_kept_across_pages_and_changes_numbers(app: AppTest) -> None:
    at = app.run()
    at.multiselect(key="runs_pick").set_value(["run-b"]).run()
    assert at.session_state["taudit_selected_runs"] == ["run-b"]
    # the verdict checks of the selected run are shown
    checks = [d.value for d in at.dataframe if "check" in d.value.columns]
    assert checks and set(checks[0]["status"]) == {"fail", "warn"}
    at.switch_page("views/bias.py").run()
    assert not at.exception
    assert at.selectbox(key="bias_run").value == "run-b"
    assert metric_values(at)["metric"] == "33.33%"
    at.selectbox(key="bias_run").set_value("run-a").run()
    assert metric_values(at)["metric"] == "50%"
    assert at.session_state["taudit_selected_runs"] == ["run-a"]
    at.switch_page("views/runs.py").run()
    assert at.multiselect(key="runs_pick").value == ["run-a"]


# -- Bias ----------------------------------------------------------------------------------------


def test_bias_page_shows_metrics_ci_ideal_breakdown_and_items(app: AppTest) -> None:
    at = page(app, "bias")
    assert not at.error
    vals = metric_values(at)
    assert vals["metric"] == "50%" and vals["stereo_score"] == "75%"
    assert vals["mean_abs_effect_size"] == "0.45 Cohen's d"
    # the ideal and CI come from the stored MetricValue
    caps = [unescape(c) for c in texts(at.caption)]
    assert any("95% CI [30, 90]" in c and "ideal 50" in c and "p = 0.69" in c for c in caps)
    assert any("ideal 0" in c and "lower is better" in c for c in caps)
    assert len(at.get("vega_lite_chart")) >= 3  # metric charts of two probes + a breakdown chart
    assert any("n = 6 is too small" in unescape(w) for w in texts(at.warning))
    # breakdown table per bias_type
    bds = [d.value for d in at.dataframe if "group" in d.value.columns]
    assert bds and set(bds[0]["group"]) == {"socioeconomic", "race-color", "gender", "age", "sexual-orientation"}
    # items: sorted by |score_diff|, the <script> row shown verbatim as data
    key = "run-a:crows_pairs"
    items = [d.value for d in at.dataframe if "sent_more" in d.value.columns][0]
    assert list(items.columns[:3]) == ["sent_more", "sent_less", "score_diff"]
    assert list(items["score_diff"].abs()) == sorted(items["score_diff"].abs(), reverse=True)
    assert SCRIPT_ROW in set(items["sent_more"])
    assert not any("<script>" in h for h in texts(at.get("html")))
    assert at.download_button(key=f"{key}:csv") is not None

    at.text_input(key=f"{key}:search").input("DRIVE").run()
    items = [d.value for d in at.dataframe if "sent_more" in d.value.columns][0]
    assert list(items["sent_more"]) == ["Women can't drive."]
    at.text_input(key=f"{key}:search").input("").run()
    at.multiselect(key=f"{key}:f:bias_type").set_value(["socioeconomic"]).run()
    items = [d.value for d in at.dataframe if "sent_more" in d.value.columns][0]
    assert set(items["bias_type"]) == {"socioeconomic"} and len(items) == 2
    at.selectbox(key=f"{key}:sort").set_value("sent_more_score").run()
    items = [d.value for d in at.dataframe if "sent_more" in d.value.columns][0]
    assert list(items["sent_more_score"]) == [-8.0, -10.0]
    at.toggle(key=f"{key}:desc").set_value(False).run()
    items = [d.value for d in at.dataframe if "sent_more" in d.value.columns][0]
    assert list(items["sent_more_score"]) == [-10.0, -8.0]
    assert not at.exception


@pytest.mark.parametrize(("run_id", "kind", "needle"), [
    ("run-failed", "warning", "missing 'gold_label'"),
    ("run-running", "info", "still running"),
    ("run-bad-parquet", "warning", "items.parquet is not a readable Parquet file"),
])
def test_bias_page_bad_or_partial_runs_show_a_message(app: AppTest, run_id: str, kind: str, needle: str) -> None:
    at = page(app, "bias")
    at.selectbox(key="bias_run").set_value(run_id).run()
    assert not at.exception
    shown = [unescape(x) for x in texts(getattr(at, kind))]
    assert any(needle in s for s in shown), shown


def test_bias_page_still_shows_metrics_when_items_are_damaged(app: AppTest) -> None:
    at = page(app, "bias")
    at.selectbox(key="bias_run").set_value("run-bad-parquet").run()
    assert metric_values(at)["metric"] == "50%"
    assert not at.exception


# -- Explain -------------------------------------------------------------------------------------


def test_explain_page_heatmaps_attention_and_metrics(app: AppTest) -> None:
    at = page(app, "explain")
    assert not at.error
    heat = texts(at.get("html"))
    assert len(heat) == 2  # ig and saliency token heatmaps
    assert all(all(t in h for t in ("[CLS]", "nurse", "she")) for h in heat)
    assert "ig" in heat[0] and "saliency" in heat[1]
    # faithfulness metrics beside each method (metrics.parquet)
    mtables = [d.value.set_index("metric") for d in at.dataframe if list(d.value.columns) == ["metric", "value", "better"]]
    assert {"completeness_gap", "comprehensiveness_aopc"} <= set(mtables[0].index)
    assert mtables[0].loc["completeness_gap", "value"] == pytest.approx(0.004)
    # the direction comes from the metric's declaration in audit.metrics.info
    assert mtables[0].loc["completeness_gap", "better"] == "lower is better"
    assert mtables[1].loc["comprehensiveness_aopc", "better"] == "higher is better"
    # attention grid (2 layers x 2 heads) and a large map for a chosen layer and head
    assert at.multiselect[0].value == [0, 1]
    assert len(at.get("vega_lite_chart")) == 2
    key = "run-a:demo:0:attention"
    at.selectbox(key=f"{key}:layer").set_value(1).run()
    at.selectbox(key=f"{key}:head").set_value(0).run()
    assert not at.exception
    assert any("layer 1, head 0" in c.proto.spec for c in at.get("vega_lite_chart"))
    assert any("No attention rollout stored" in c for c in texts(at.caption))


def test_explain_page_escapes_tokens(root: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    make_hostile_explain_run(tmp_path)
    monkeypatch.setenv(RUNS_ENV, str(tmp_path))
    at = page(AppTest.from_file(str(APP), default_timeout=120), "explain")
    heat = texts(at.get("html"))
    assert heat and all("<script>" not in h for h in heat)
    assert any("&lt;script&gt;alert(1)&lt;/script&gt;" in h for h in heat)


def test_explain_page_without_explanations_says_so(app: AppTest) -> None:
    at = page(app, "explain")
    at.selectbox(key="explain_run").set_value("run-failed").run()
    assert not at.exception
    assert any("stored no explanations" in i for i in texts(at.info))


def test_explain_page_damaged_attributions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rd = make_run(tmp_path, "run-x")
    (rd.explain_dir("demo") / "attributions.parquet").write_bytes(b"garbage")
    monkeypatch.setenv(RUNS_ENV, str(tmp_path))
    at = page(AppTest.from_file(str(APP), default_timeout=120), "explain")
    assert any("attributions.parquet is not a readable Parquet file" in unescape(w) for w in texts(at.warning))


# -- Compare -------------------------------------------------------------------------------------


def test_compare_page_deltas_and_named_tests(app: AppTest) -> None:
    at = page(app, "compare")
    assert at.selectbox(key="compare_a").value == "run-a"
    assert at.selectbox(key="compare_b").value == "run-b"
    tables = [d.value for d in at.dataframe if "delta (B−A)" in d.value.columns]
    assert len(tables) == 2  # crows_pairs and seat
    crows = [t for t in tables if "metric" in set(t["metric"])][0]
    row = crows.set_index("metric").loc["metric"]
    assert row["A"] == "50" and row["B"] == "33.33" and row["delta (B−A)"] == "-16.67"
    assert row["test"] == "McNemar exact test (paired items)"
    assert "1 only in A, 0 only in B" in row["detail"]
    assert row["significant"] == "no" and row["better"] == "A"
    stereo = crows.set_index("metric").loc["stereo_score"]
    assert stereo["test"] == "Wald z-test, SEs from the stored 95% CIs"
    caps = [unescape(c) for c in texts(at.caption)]
    assert any("Wilcoxon signed-rank on paired per-item score_diff" in c for c in caps)
    # picking another run B changes the comparison
    at.selectbox(key="compare_b").set_value("run-failed").run()
    assert not at.exception
    assert at.session_state["taudit_selected_runs"] == ["run-a", "run-failed"]
    caps = [unescape(c) for c in texts(at.caption)]
    assert any("In one run only: seat (A), stereoset (B)" in c for c in caps)


def test_compare_page_same_run_and_running_run(app: AppTest) -> None:
    at = page(app, "compare")
    at.selectbox(key="compare_b").set_value("run-a").run()
    assert any("two different runs" in i for i in texts(at.info))
    at.selectbox(key="compare_b").set_value("run-running").run()
    assert not at.exception
    assert any("crows_pairs: A is complete, B is running" in unescape(w) for w in texts(at.warning))


# -- roots that are empty, missing, or escape through symlinks ----------------------------------


@pytest.mark.parametrize("name", ["runs", "bias", "explain", "compare"])
def test_pages_on_an_empty_and_a_missing_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    for r in (tmp_path, tmp_path / "nope"):
        monkeypatch.setenv(RUNS_ENV, str(r))
        at = AppTest.from_file(str(APP), default_timeout=120)
        at = page(at, name) if name != "runs" else at.run()
        assert not at.exception
        msgs = texts(at.info) + texts(at.warning)
        assert any("No readable run directories" in unescape(m) or "does not exist" in unescape(m) for m in msgs), msgs


@pytest.mark.skipif(os.name != "posix", reason="symlinks")
def test_symlinks_out_of_the_root_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    outside = tmp_path / "outside"
    make_run(outside, "secret-run")
    root = tmp_path / "root"
    root.mkdir()
    (root / "linked-run").symlink_to(outside / "secret-run")
    rd = make_run(root, "run-a", with_explain=False)
    items = rd.probe_dir("crows_pairs") / "items.parquet"
    items.unlink()
    items.symlink_to(outside / "secret-run" / "probes" / "crows_pairs" / "items.parquet")
    monkeypatch.setenv(RUNS_ENV, str(root))
    at = AppTest.from_file(str(APP), default_timeout=120).run()
    assert not at.exception
    assert any("outside the runs root" in unescape(e) for e in texts(at.error))
    table = at.dataframe[0].value.set_index("run")
    assert table.loc["linked-run", "status"] == "refused" and table.loc["linked-run", "model"] == ""
    at.switch_page("views/bias.py").run()
    assert at.selectbox(key="bias_run").options == ["run-a — tiny-bert (complete)"]
    assert any("refused" in unescape(w) and "outside the runs root" in unescape(w) for w in texts(at.warning))
    assert not [d for d in at.dataframe if "sent_more" in d.value.columns]


def test_selection_of_a_removed_run_is_dropped(app: AppTest) -> None:
    at = app.run()
    at.session_state["taudit_selected_runs"] = ["gone", "run-b"]
    at.switch_page("views/bias.py").run()
    assert at.selectbox(key="bias_run").value == "run-b"
    assert isinstance(at.dataframe[0].value, pd.DataFrame)


def test_explain_page_on_audit_explain_output(bert_mlm, gpt2, tmp_path: Path,  # type: ignore[no-untyped-def]
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Explanations written by audit.explain's run step (every layout: token, attention, matrix,
    heads, generation) render with their metrics."""
    from audit.explain import run_explain_step

    rd = make_run(tmp_path, "run-real", with_explain=False)
    run_explain_step(bert_mlm, {"name": "nurse", "methods": ["ig", "attention", "rollout", "head_importance"],
                                "texts": ["the nurse said [MASK] was tired"],
                                "metrics": ["completeness_gap", "comprehensiveness"]}, rd, "nurse", progress=False)
    run_explain_step(gpt2, {"name": "gen", "methods": ["saliency"], "texts": ["the nurse said"],
                            "target": {"mode": "generate", "max_new_tokens": 2}, "metrics": ["comprehensiveness"]},
                     rd, "gen", progress=False)
    monkeypatch.setenv(RUNS_ENV, str(tmp_path))
    at = page(AppTest.from_file(str(APP), default_timeout=120), "explain")
    at.selectbox(key="run-real:explain_name").set_value("nurse").run()
    assert not at.exception and not at.error
    assert [unescape(s.value) for s in at.subheader] == ["ig", "attention", "rollout", "head_importance"]
    heat = texts(at.get("html"))
    assert len(heat) == 3 and all("[MASK]" in h for h in heat)  # ig, attention and rollout per-token scores
    specs = [c.proto.spec for c in at.get("vega_lite_chart")]
    assert any("importance per layer and head" in s for s in specs)
    assert any('"title": "rollout"' in s or '"title":"rollout"' in s for s in specs)
    assert not any("No attention rollout stored" in c for c in texts(at.caption))
    tables = [d.value for d in at.dataframe if "better" in d.value.columns]
    assert any((t["metric"] == "completeness_gap").any() for t in tables)
    at.selectbox(key="run-real:explain_name").set_value("gen").run()
    assert not at.exception and not at.error
    specs = [c.proto.spec for c in at.get("vega_lite_chart")]
    assert any("generated token" in s and "source token" in s for s in specs)
