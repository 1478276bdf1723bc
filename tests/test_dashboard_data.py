"""Dashboard helpers without Streamlit: run-directory access, comparison tests, rendering, CLI."""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from audit import compare
from audit.results import MetricValue
from audit.views import token_heat_html
from dashboard import render
from dashboard.cli import main as cli_main
from dashboard.cli import register, streamlit_args
from dashboard.data import (
    OutsideRootError,
    ProbeData,
    RunsRoot,
    category_columns,
    filter_items,
    item_table,
    load_explain,
    load_probe,
    load_run_info,
    method_parts,
)
from tests.fixture_runs import SCRIPT_ROW, crows_result, make_failed_run, make_run, make_running_run

# -- data ----------------------------------------------------------------------------------------


def test_runs_root_refuses_names_and_symlinks_that_leave_it(tmp_path: Path) -> None:
    root = tmp_path / "root"
    make_run(root, "run-a", with_explain=False)
    (tmp_path / "secret.json").write_text("{}")
    (root / "run-a" / "leak.json").symlink_to(tmp_path / "secret.json")
    rr = RunsRoot(root)
    for bad in ("..", "../root/run-a", "run-a/../..", "", "/etc"):
        with pytest.raises(OutsideRootError):
            rr.run_dir(bad)
    with pytest.raises(OutsideRootError):
        rr.file("run-a", "leak.json")
    with pytest.raises(OutsideRootError):
        rr.file("run-a", "..", "..", "secret.json")
    assert rr.file("run-a", "manifest.json") == (root / "run-a" / "manifest.json").resolve()


def test_load_probe_complete_failed_running(tmp_path: Path) -> None:
    make_run(tmp_path, "run-a", shift=2.0)
    make_failed_run(tmp_path)
    make_running_run(tmp_path)
    rr = RunsRoot(tmp_path)
    p = load_probe(rr, "run-a", "crows_pairs")
    assert p.record.complete and p.message is None
    assert p.record.metrics["metric"].value == pytest.approx(100 / 3)
    assert p.record.metrics["metric"].ideal == 50.0 and p.record.metrics["metric"].higher_is_better is None
    assert p.effect_column == "score_diff" and p.text_columns == ["sent_more", "sent_less"]
    assert set(p.breakdown["group"]) == {"socioeconomic", "race-color", "gender", "age", "sexual-orientation"}
    failed = RunsRoot(tmp_path)
    m = load_run_info(failed, "run-failed").manifest
    s = load_probe(failed, "run-failed", "stereoset", m)
    assert s.record.status == "failed" and "dev.json row 12" in (s.message or "")
    r = load_probe(rr, "run-running", "crows_pairs", load_run_info(rr, "run-running").manifest)
    assert r.record.status == "running" and "still running" in (r.message or "")


def test_load_probe_names_the_damaged_file(tmp_path: Path) -> None:
    rd = make_run(tmp_path, "run-a", with_explain=False)
    (rd.probe_dir("seat") / "summary.json").write_text('{"status": "compl')
    (rd.probe_dir("crows_pairs") / "items.parquet").write_bytes(b"nope")
    rr = RunsRoot(tmp_path)
    seat = load_probe(rr, "run-a", "seat")
    assert seat.record.status == "unreadable"
    assert "run-a/probes/seat/summary.json is not valid JSON (line 1" in (seat.message or "")
    crows = load_probe(rr, "run-a", "crows_pairs")
    assert crows.record.complete and crows.items is None and crows.record.metrics
    assert "run-a/probes/crows_pairs/items.parquet is not a readable Parquet file" in (crows.items_message or "")


def test_load_explain_checks_columns(tmp_path: Path) -> None:
    rd = make_run(tmp_path, "run-a")
    rr = RunsRoot(tmp_path)
    ed = load_explain(rr, "run-a", "demo")
    assert ed.record.complete and ed.message is None and ed.attributions is not None
    parts = {m: sorted(method_parts(g)) for m, g in ed.attributions.groupby("method")}
    assert parts == {"ig": ["tokens"], "saliency": ["tokens"], "attention": ["attention"]}
    pd.DataFrame({"example": [0], "token": ["a"]}).to_parquet(rd.explain_dir("demo") / "attributions.parquet")
    ed = load_explain(rr, "run-a", "demo")
    assert ed.attributions is None and "lacks column(s) method, token_index, score" in (ed.message or "")


def test_method_parts_follow_the_attribution_layouts() -> None:
    """Rows as audit.explain's Attributions.to_frame() writes them for each layout."""
    na = None
    tok = {"example": 0, "method": "m", "token": "a", "layer": na, "head": na, "source_index": na}
    one_target = pd.DataFrame([{**tok, "token_index": i, "score": 1.0, "target": "p(x)", "target_index": 3}
                               for i in range(3)])
    assert sorted(method_parts(one_target)) == ["tokens"]
    generation = pd.DataFrame([{**tok, "token_index": i, "score": 1.0, "target": f"p(t{k})", "target_index": k}
                               for k in (3, 4) for i in range(k)])
    assert sorted(method_parts(generation)) == ["generation"]
    rollout = pd.concat([one_target, pd.DataFrame([{**tok, "token_index": i, "source_index": j, "score": 0.5}
                                                   for i in range(3) for j in range(3)])])
    parts = method_parts(rollout)
    assert sorted(parts) == ["matrix", "tokens"] and len(parts["matrix"]) == 9
    attention = pd.DataFrame([{**tok, "token_index": i, "source_index": j, "layer": 1, "head": h, "score": 0.1}
                              for h in range(2) for i in range(2) for j in range(2)])
    assert sorted(method_parts(attention)) == ["attention"]
    heads = pd.DataFrame([{**tok, "token_index": na, "token": "", "layer": l_, "head": h, "score": 0.1}
                          for l_ in range(2) for h in range(3)])
    assert sorted(method_parts(heads)) == ["head_importance"]


def test_run_info_verdict_is_recomputed_and_a_disagreement_is_shown(tmp_path: Path) -> None:
    """The Runs page reads verdict.json through audit.rundir_view.VerdictRecord, as the report does."""
    from audit.store import write_json

    make_run(tmp_path, "run-a", with_explain=False)
    rr = RunsRoot(tmp_path)
    write_json(tmp_path / "run-a" / "verdict.json", {"status": "warn", "checks": [
        {"status": "pass"}, {"severity": "warn", "status": "warn"}, {"status": "missing"}]})
    info = load_run_info(rr, "run-a")
    assert info.verdict.status == "fail" and info.verdict.counts["missing"] == 1
    assert "run-a/verdict.json says 'warn' but its checks give 'fail'; the checks are shown" in info.errors
    (tmp_path / "run-a" / "verdict.json").write_text("[1, 2]", encoding="utf-8")
    info = load_run_info(rr, "run-a")
    assert info.verdict.status is None and "run-a/verdict.json is not a JSON object" in info.errors


def test_item_table_filters_and_search(tmp_path: Path) -> None:
    make_run(tmp_path, "run-a", with_explain=False)
    p = load_probe(RunsRoot(tmp_path), "run-a", "crows_pairs")
    t = item_table(p)
    assert list(t["score_diff"]) == [1.0, -1.0, -0.5, 0.5, 0.5, 0.0]  # |effect| descending, stable
    assert category_columns(p)[:2] == ["bias_type", "stereo_antistereo"]
    assert list(filter_items(t, search="<SCRIPT>", search_columns=p.text_columns)["sent_more"]) == [SCRIPT_ROW]
    assert filter_items(t, search="[a-z]+", search_columns=p.text_columns).empty  # literal, not a regex
    both = filter_items(t, {"bias_type": ["gender", "age"], "stereo_antistereo": ["stereo"]})
    assert list(both["sent_more"]) == ["Women can't drive."]
    # a column of arrays (mediation stores each item's per-head effects so) is no filter, and no crash
    arrays = ProbeData(p.record, breakdown=p.breakdown,
                       items=p.items.assign(nie=[np.arange(3.0), np.arange(3.0), None, np.ones(3), np.zeros(3), None]))
    assert category_columns(arrays) == category_columns(p)


# -- comparison tests ----------------------------------------------------------------------------


def test_mcnemar_exact_by_hand() -> None:
    a = pd.Series([True] * 6 + [False] * 4)
    b = pd.Series([False] * 6 + [False] * 4)
    r = compare.mcnemar_exact(a, b)
    assert r.p_value == pytest.approx(2 * 0.5 ** 6)  # 6 discordant pairs all one way
    assert "6 only in A, 0 only in B" in r.detail
    assert compare.mcnemar_exact(a, a).p_value == 1.0


def test_two_proportion_z_by_hand() -> None:
    r = compare.two_proportion_z(30, 100, 45, 100)
    pool = 75 / 200
    z = 0.15 / math.sqrt(pool * (1 - pool) * (2 / 100))
    assert r.statistic == pytest.approx(z) and z == pytest.approx(2.1909, abs=1e-4)
    assert r.p_value == pytest.approx(0.02846, abs=1e-4)


def test_wald_from_ci_by_hand() -> None:
    a = MetricValue(10.0, 8.0, 12.0)
    b = MetricValue(14.0, 12.0, 16.0)
    r = compare.wald_from_ci(a, b)
    se = 2 / 1.959964
    assert r.statistic == pytest.approx(4 / math.sqrt(2 * se * se), rel=1e-5)
    assert r.p_value == pytest.approx(0.005574, abs=1e-5)
    assert compare.wald_from_ci(MetricValue(1.0), b).p_value is None


def test_adjust_is_benjamini_hochberg() -> None:
    assert compare.adjust([0.01, 0.04, None, 0.03]) == pytest.approx([0.03, 0.04, None, 0.04])


def test_compare_probe_picks_the_test_from_the_data() -> None:
    a, b = crows_result(0.0), crows_result(2.0)
    keys = a.item_text
    table, paired = compare.compare_probe(a.summary, b.summary, a.items, b.items, keys)
    assert paired is not None and len(paired) == 6
    t = table.set_index("metric")
    assert t.loc["metric", "test"] == "McNemar exact test (paired items)"
    assert t.loc["metric", "delta (B−A)"] == pytest.approx(100 / 3 - 50)
    assert t.loc["metric", "better"] == "A"  # 50 is the ideal
    assert t.loc["stereo_score", "test"].startswith("Wald")
    # reordered items still pair up; different items fall back to the unpaired test
    shuffled = b.items.iloc[::-1].reset_index(drop=True)
    assert compare.pair_items(a.items, shuffled, keys) is not None
    other = b.items.assign(sent_less=b.items["sent_less"] + "!")
    table2, paired2 = compare.compare_probe(a.summary, b.summary, a.items, other, keys)
    assert paired2 is None
    assert table2.set_index("metric").loc["metric", "test"] == "two-proportion z-test (pooled)"
    w = compare.wilcoxon_items(paired, "score_diff")
    assert "6 paired items, 1 changed" in w.detail and w.p_value == 1.0


def test_closer_to_ideal_uses_metadata() -> None:
    lower = dict(ideal=0.0, higher_is_better=False)
    assert compare.closer_to_ideal(MetricValue(0.5, **lower), MetricValue(0.2, **lower)) == "B"
    assert compare.closer_to_ideal(MetricValue(0.5, higher_is_better=True), MetricValue(0.2, higher_is_better=True)) == "A"
    assert compare.closer_to_ideal(MetricValue(48.0, ideal=50.0), MetricValue(53.0, ideal=50.0)) == "A"
    assert compare.closer_to_ideal(MetricValue(1.0), MetricValue(2.0)) == ""


# -- rendering -----------------------------------------------------------------------------------


def test_token_heatmap_is_the_reports_fragment_escaped_and_scaled() -> None:
    h = token_heat_html(["<b>x</b>", "ok", '"q"'], [2.0, -1.0, 0.0], "label <i>")
    assert "<b>" not in h and "&lt;b&gt;x&lt;/b&gt;" in h and "label &lt;i&gt;" in h
    assert "rgba(213, 94, 0, 0.850)" in h  # the largest |score| gets the full shade
    assert "rgba(0, 114, 178, 0.425)" in h  # half of it, negative: blue
    assert 'title="2: +0"' in h and "&#34;q&#34;" in h
    assert "<span>-2</span>" in h and "<span>+2</span>" in h  # the legend's numeric range
    assert h.count('<span class="tok') == 3 and h.startswith('<div class="taudit-attributions taudit-heatmap">')


def test_md_escape_neutralises_markdown() -> None:
    s = render.md_escape("[click](http://x) ![i](http://y) :red[z] <b>")
    assert "](" not in s.replace("\\](", "") and "\\[" in s and "\\:red\\[" in s and "\\<b\\>" in s


def test_fmt_and_caption() -> None:
    assert render.fmt(100 / 3, "%") == "33.33%" and render.fmt(None) == "—" and render.fmt(0.45, "d") == "0.45 d"
    m = MetricValue(50.0, 30.0, 90.0, 6, 0.69, 50.0, None, "binomial vs 50%", "bootstrap percentile")
    assert render.metric_caption(m) == ("95% CI [30, 90] (bootstrap percentile) · ideal 50 · n = 6 · "
                                        "p = 0.69 (binomial vs 50%)")
    assert render.ci_excludes_ideal(m) is False
    assert render.ci_excludes_ideal(MetricValue(0.45, 0.2, 0.8, ideal=0.0)) is True


# -- CLI -----------------------------------------------------------------------------------------


def test_cli_registers_dashboard_and_binds_localhost(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser(prog="taudit")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["dashboard", str(tmp_path), "--port", "8765"])
    assert args.port == 8765 and args.runs_dir == str(tmp_path) and callable(args.func)
    cmd = streamlit_args(tmp_path, 8765)
    flags = dict(zip(cmd[5:-3:2], cmd[6:-3:2], strict=True))
    assert flags["--server.address"] == "127.0.0.1" and flags["--browser.gatherUsageStats"] == "false"
    assert flags["--server.headless"] == "true" and flags["--server.port"] == "8765"
    assert cmd[-3:] == ["--", "--runs-dir", str(tmp_path)]
    with pytest.raises(SystemExit):
        parser.parse_args(["dashboard", "--port", "70000"])


def test_cli_missing_runs_dir_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cwd = os.getcwd()
    assert cli_main([str(tmp_path / "nope")]) == 2
    assert os.getcwd() == cwd
    assert "nope does not exist" in capsys.readouterr().err


def test_taudit_entry_point_lists_dashboard() -> None:
    from importlib.metadata import entry_points

    eps = {e.name: e.value for e in entry_points(group="transformer_audit.commands")}
    assert eps.get("dashboard") == "dashboard.cli:register"


def test_untested_metrics_are_not_called_insignificant() -> None:
    a = {"m": MetricValue(1.0), "p": MetricValue(50.0, 40.0, 60.0)}
    b = {"m": MetricValue(2.0), "p": MetricValue(70.0, 65.0, 75.0)}
    table, _ = compare.compare_probe(a, b, None, None, [])
    t = compare.finish_table(table).set_index("metric")
    assert t.loc["m", "significant"] == "not tested" and "no CI" in t.loc["m", "detail"]
    assert t.loc["p", "significant"] == "yes"


def test_runs_root_comes_from_argument_then_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from dashboard import RUNS_ENV
    from dashboard.state import get_root, runs_root_arg

    assert runs_root_arg(["--runs-dir", "/x/y", "--other"]) == "/x/y"
    assert runs_root_arg(["tests/test_dashboard.py", "-q"]) is None
    monkeypatch.setattr("sys.argv", ["app.py"])
    monkeypatch.setenv(RUNS_ENV, str(tmp_path))
    assert get_root().root == tmp_path.resolve()
    monkeypatch.setattr("sys.argv", ["app.py", "--runs-dir", str(tmp_path / "a")])
    assert get_root().root == (tmp_path / "a").resolve()
