"""The one reader of run directories (:mod:`audit.rundir_view`): every bad or partial file becomes a
status from one vocabulary and a message that names the file — never an exception."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from audit.compare import compare_runs
from audit.results import ProbeResult
from audit.rundir_view import OutsideRootError, RunView
from audit.store import RunDir, read_json, write_json
from tests.fixture_runs import (
    crows_result,
    make_failed_run,
    make_run,
    make_running_run,
    update_manifest,
)


@pytest.fixture()
def run(tmp_path: Path) -> RunDir:
    return make_run(tmp_path)


def test_complete_probe_is_typed(run: RunDir) -> None:
    rec = RunView(run.path).probe("crows_pairs")
    assert rec.status == "complete" and rec.reason == "" and rec.probe == "crows_pairs"
    assert rec.metrics["metric"].value == pytest.approx(100 * float(crows_result().items["stereo_preferred"].mean()))
    assert rec.metrics["metric"].ci_low == 30.0 and rec.primary_metric == "metric"
    items, msg = rec.items()
    assert msg is None and items is not None and len(items) == 6
    bd, note = rec.breakdown()
    assert note is None and len(bd) and {"group", "value"} <= set(bd.columns)


def test_missing_summary_of_a_probe_the_manifest_marks_complete_is_incomplete(run: RunDir) -> None:
    (run.probe_dir("crows_pairs") / "summary.json").unlink()
    rec = RunView(run.path).probe("crows_pairs")
    assert rec.status == "incomplete" and not rec.complete and rec.metrics == {}
    assert "run-a/probes/crows_pairs/summary.json does not exist" in rec.reason
    assert "manifest marks it complete" in rec.reason
    assert rec.message.startswith("Probe crows_pairs: incomplete — run-a/probes/crows_pairs/summary.json")


def test_malformed_summary_is_unreadable_and_names_the_file(run: RunDir) -> None:
    (run.probe_dir("crows_pairs") / "summary.json").write_text('{"status": "complete", ', encoding="utf-8")
    rec = RunView(run.path).probe("crows_pairs")
    assert rec.status == "unreadable" and rec.metrics == {}
    assert rec.reason.startswith("run-a/probes/crows_pairs/summary.json is not valid JSON (line 1, column")


def test_summary_that_is_not_an_object_is_unreadable(run: RunDir) -> None:
    (run.probe_dir("crows_pairs") / "summary.json").write_text("[1, 2]", encoding="utf-8")
    rec = RunView(run.path).probe("crows_pairs")
    assert rec.status == "unreadable" and rec.reason == "run-a/probes/crows_pairs/summary.json is not a JSON object"


def test_manifest_that_is_not_an_object(tmp_path: Path) -> None:
    rd = make_run(tmp_path)
    rd.manifest_path.write_text('"complete"', encoding="utf-8")
    view = RunView(rd.path)
    m = view.manifest()
    assert not m.readable and m.status == "unreadable" and m.raw == {} and m.run_id == "run-a"
    assert m.problem == "run-a/manifest.json is not a JSON object"
    # probes are still found from their folders
    assert view.probe_names() == ["crows_pairs", "seat"] and view.probe("crows_pairs").complete


def test_failed_probe_keeps_its_error(tmp_path: Path) -> None:
    rec = RunView(make_failed_run(tmp_path).path).probe("stereoset")
    assert rec.status == "failed" and rec.reason == "ProbeError: dev.json row 12: missing 'gold_label'"
    assert rec.message == "Probe stereoset: failed — ProbeError: dev.json row 12: missing 'gold_label'"


def test_probe_with_only_partial_results_is_running(tmp_path: Path) -> None:
    rd = make_running_run(tmp_path)
    m = rd.manifest()
    m["probes"] = {}  # nothing in the manifest: the partial folder alone says it runs
    rd.write_manifest(m)
    rec = RunView(rd.path).probe("crows_pairs")
    assert rec.status == "running" and "still running" in rec.reason


def test_configured_probe_that_never_started(run: RunDir) -> None:
    update_manifest(run, config={"probes": [{"probe": "crows_pairs"}, {"probe": "bbq", "name": "bbq_ambig"}]})
    view = RunView(run.path)
    assert "bbq_ambig" not in view.probe_names() and view.probe_names(configured=True)[-1] == "bbq_ambig"
    rec = view.probe("bbq_ambig")
    assert rec.status == "not started" and rec.reason == "no results were written"


def test_bad_metric_entry_is_a_problem_not_a_crash(run: RunDir) -> None:
    p = run.probe_dir("crows_pairs") / "summary.json"
    s = json.loads(p.read_text(encoding="utf-8"))
    s["metrics"]["metric"] = 5
    p.write_text(json.dumps(s), encoding="utf-8")
    rec = RunView(run.path).probe("crows_pairs")
    assert rec.complete and "metric" not in rec.metrics and "stereo_score" in rec.metrics
    assert rec.problems == ("run-a/probes/crows_pairs/summary.json: metric 'metric' cannot be read (not an object)",)


def test_corrupt_items_table_names_the_file(run: RunDir) -> None:
    (run.probe_dir("crows_pairs") / "items.parquet").write_bytes(b"not parquet")
    items, msg = RunView(run.path).probe("crows_pairs").items()
    assert items is None and msg is not None
    assert msg.startswith("run-a/probes/crows_pairs/items.parquet is not a readable Parquet file")


def test_explain_step_missing_and_unreadable(run: RunDir) -> None:
    view = RunView(run.path)
    assert view.explain_names() == ["demo"] and view.explain("demo").complete
    (run.explain_dir("demo") / "summary.json").write_text("{", encoding="utf-8")
    rec = RunView(run.path).explain("demo")
    assert rec.status == "unreadable" and "run-a/explain/demo/summary.json is not valid JSON" in rec.reason
    assert rec.message.startswith("Explanation demo: unreadable")


def test_symlink_out_of_the_root_is_refused(tmp_path: Path) -> None:
    root, outside = tmp_path / "runs", tmp_path / "elsewhere"
    rd = make_run(root)
    make_run(outside, "secret")
    (rd.probe_dir("seat") / "summary.json").unlink()
    (rd.probe_dir("seat") / "summary.json").symlink_to(outside / "secret" / "probes" / "seat" / "summary.json")
    view = RunView(rd.path, root=root)
    rec = view.probe("seat")
    assert rec.status == "unreadable" and "refused" in rec.reason and "outside the runs root" in rec.reason
    with pytest.raises(OutsideRootError):
        view.file("probes", "seat", "summary.json")
    assert RunView(rd.path).probe("seat").complete  # without a root the link is followed


def test_verdict_record(run: RunDir) -> None:
    view = RunView(run.path)
    assert view.verdict().raw is None and view.verdict().problem is None  # none written: no problem
    (run.path / "verdict.json").write_text("[]", encoding="utf-8")
    assert RunView(run.path).verdict().problem == "run-a/verdict.json is not a JSON object"
    (run.path / "verdict.json").write_text(json.dumps({"status": "pass", "checks": [{"status": "pass"}, 3]}),
                                           encoding="utf-8")
    rec = RunView(run.path).verdict()
    assert [(c["check"], c["severity"], c["on"], c["status"], c["value"]) for c in rec.checks] \
        == [("", "fail", "value", "pass", None)]  # every field present; the non-object entry dropped
    assert rec.status == "pass" and not rec.failed and rec.problems == []


def test_verdict_status_is_recomputed_from_the_checks(run: RunDir) -> None:
    """The file's own status is not trusted: a disagreement is a problem naming the file."""
    checks = [{"check": "a.x <= 1", "status": "pass"}, {"check": "b.y <= 1", "severity": "warn", "status": "warn"},
              {"check": "c.z <= 1", "status": "bogus", "value": "NaN"}]
    (run.path / "verdict.json").write_text(json.dumps({"status": "warn", "checks": checks}), encoding="utf-8")
    rec = RunView(run.path).verdict()
    assert rec.status == "fail" and rec.failed  # a fail-severity check with an unknown status counts as missing
    assert rec.counts == {"pass": 1, "warn": 1, "fail": 0, "missing": 1, "skipped": 0}
    assert rec.problems == ["run-a/verdict.json says 'warn' but its checks give 'fail'; the checks are shown"]
    assert rec.checks[2]["value"] is None
    checks[2]["severity"] = "warn"
    (run.path / "verdict.json").write_text(json.dumps({"checks": checks}), encoding="utf-8")
    rec = RunView(run.path).verdict()
    assert (rec.status, rec.failed, rec.problems) == ("warn", False, [])  # no stated status: nothing to disagree


def test_probe_result_refuses_bad_item_fields() -> None:
    items = pd.DataFrame({"text": ["a", "b"], "label": ["x", "y"], "effect": [0.5, -1.0]})
    assert ProbeResult("p", {}, items, item_effect="effect", item_text=["text"]).item_effect == "effect"
    with pytest.raises(ValueError, match=r"probe p: item_effect column 'label' is not numeric \((object|str)\)"):
        ProbeResult("p", {}, items, item_effect="label")
    with pytest.raises(ValueError, match="probe p: item_effect must name one item column, not list"):
        ProbeResult("p", {}, items, item_effect=[0.5, -1.0, 2.0])  # type: ignore[arg-type]  # values, not a column
    with pytest.raises(ValueError, match="probe p: item_text must be a list of item column names, not 'text'"):
        ProbeResult("p", {}, items, item_text="text")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="probe p: item_effect is a ProbeResult field, not an info key"):
        ProbeResult("p", {}, items, info={"item_effect": "effect"})


def test_item_fields_are_stored_in_info_and_old_summaries_read_and_compare_the_same(tmp_path: Path) -> None:
    """The fields are written where the info keys were, so a run written before they became fields
    reads the same (one column as a string, a missing key) and compares the same."""
    a, b = make_run(tmp_path, "run-a", with_explain=False), make_run(tmp_path, "run-b", with_explain=False)
    assert read_json(a.probe_dir("crows_pairs") / "summary.json")["info"] == \
        {"item_effect": "score_diff", "item_text": ["sent_more", "sent_less"]}
    new = compare_runs(a, b)
    for name, old_info in (("seat", {"item_effect": "effect_size", "item_text": "test"}),
                           ("crows_pairs", {"item_text": ["sent_more", "sent_less"]})):  # the old writers' forms
        s = read_json(b.probe_dir(name) / "summary.json")
        s["info"] = old_info
        write_json(b.probe_dir(name) / "summary.json", s)
    view = RunView(b.path)
    assert (view.probe("seat").item_effect, view.probe("seat").item_text) == ("effect_size", ["test"])
    assert (view.probe("crows_pairs").item_effect, view.probe("crows_pairs").item_text) == (None, ["sent_more", "sent_less"])
    old = compare_runs(a, b)
    pd.testing.assert_frame_equal(old.table, new.table)
    assert old.item_tests == {k: v for k, v in new.item_tests.items() if k != "crows_pairs"}  # no old item_effect
