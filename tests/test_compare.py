"""``taudit compare RUN_A RUN_B`` (issue 14, item 3): the comparison tests of :mod:`audit.compare`
(McNemar, two-proportion z, Wald from CIs, Benjamini–Hochberg) from the command line, on stored
numbers only."""

from __future__ import annotations

from pathlib import Path

import pytest

from audit import cli
from audit.compare import compare_runs, mcnemar_exact
from audit.rundir_view import RunView
from tests.fixture_runs import make_failed_run, make_run


def test_compare_runs_tests_every_shared_metric(tmp_path: Path) -> None:
    a, b = make_run(tmp_path, "a"), make_run(tmp_path, "b", shift=1.0)
    df = compare_runs(a, b).table
    assert set(df["probe"]) == {"crows_pairs", "seat"}
    crows = df[df["probe"] == "crows_pairs"].set_index("metric")
    ma, mb = RunView(a).probe("crows_pairs").metrics, RunView(b).probe("crows_pairs").metrics
    for m in crows.index:
        assert crows.loc[m, "delta (B−A)"] == pytest.approx(mb[m].value - ma[m].value, nan_ok=True)
    # the same items in both runs: the stereotype rate is compared pair by pair (McNemar)
    items_a, items_b = RunView(a).probe("crows_pairs").items()[0], RunView(b).probe("crows_pairs").items()[0]
    assert crows.loc["metric", "test"] == "McNemar exact test (paired items)"
    assert crows.loc["metric", "p_value"] == pytest.approx(
        mcnemar_exact(items_a["stereo_preferred"], items_b["stereo_preferred"]).p_value)
    assert crows.loc["stereo_score", "test"].startswith("Wald z-test")
    assert set(df["significant"]) <= {"yes", "no", "not tested"}


def test_taudit_compare_prints_each_metric(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = make_run(tmp_path, "a"), make_run(tmp_path, "b", shift=1.0)
    assert cli.main(["compare", str(a.path), str(b.path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:5] == ["probe", "metric", "A", "B", "B"]
    body = [line.split()[:2] for line in out[1:]]
    assert ["crows_pairs", "metric"] in body and any(p == "seat" for p, _ in body)
    assert any(line.startswith("crows_pairs items: Wilcoxon signed-rank on paired per-item score_diff") for line in out)


def test_taudit_compare_only_complete_probes_and_bad_paths(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, failed = make_run(tmp_path, "a"), make_failed_run(tmp_path)
    assert cli.main(["compare", str(a.path), str(failed.path)]) == 0
    out = capsys.readouterr().out
    assert "crows_pairs" in out and "stereoset" not in out and "seat" not in out
    assert cli.main(["compare", str(a.path), str(tmp_path / "nope")]) == 2
    assert "is not a run directory" in capsys.readouterr().err


def test_compare_runs_walks_the_probes_once_for_page_and_cli(tmp_path: Path) -> None:
    """The Compare page renders this result: the paired item test, the probes not compared and
    the probes of one run only come from the same walk as the metric table."""
    a, b = make_run(tmp_path, "a"), make_run(tmp_path, "b", shift=1.0)
    c = compare_runs(a, b)
    assert list(dict.fromkeys(c.table["probe"])) == ["crows_pairs", "seat"]  # run A's order
    assert c.item_tests["crows_pairs"].startswith("Wilcoxon signed-rank on paired per-item score_diff: p = ")
    assert c.problems == [] and c.only == {}
    c = compare_runs(a, make_failed_run(tmp_path))
    assert set(c.table["probe"]) == {"crows_pairs"} and c.only == {"seat": "A", "stereoset": "B"}
