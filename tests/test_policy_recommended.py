"""The built-in ``recommended`` policy profile and the crows_pairs metric alias."""

from __future__ import annotations

from pathlib import Path

import pytest

from audit.policy import (
    PolicyError,
    evaluate_policy,
    load_policy,
    recommended_policy,
    validate_policy,
)
from audit.probe import PROBES
from audit.store import RunDir, read_json
from tests.fixture_runs import make_failed_run, make_full_run, make_run, update_manifest


def test_every_registered_probe_has_a_documented_check_on_its_headline_metric() -> None:
    pol = recommended_policy()
    by_probe: dict[str, set[str]] = {}
    for c in pol.checks:
        assert c.description and c.source, c.check  # every threshold says what it is and where it comes from
        assert not c.required
        by_probe.setdefault(c.condition.probe, set()).add(c.condition.metric)
    for name in PROBES.names():
        cls = PROBES.get(name)
        primary = getattr(cls, "primary_metric", None) or next(iter(cls.metrics))
        judged = by_probe.get(name, set())
        assert judged <= set(cls.metrics), name
        if all(m.ideal is None for m in cls.metrics.values()):
            continue  # nothing has an ideal (cost: budgets are the deployment's to set)
        if cls.metrics[primary].ideal is None:  # e.g. mediation's total effect: another metric is judged
            assert judged, f"probe {name!r}: add a check to audit/recommended_policy.yaml"
            continue
        assert primary in judged, (
            f"probe {name!r}: add a check on its headline metric {primary!r} to audit/recommended_policy.yaml")


def test_recommended_is_renamed_to_the_run_probe_names_and_validates() -> None:
    pol = recommended_policy({"cp_small": "crows_pairs", "seat": "seat"})
    assert {c.condition.probe for c in pol.checks} == {"cp_small", "seat"}
    assert pol.name == "recommended" and "recommended_policy.yaml" in pol.source
    validate_policy(pol, {"cp_small": set(PROBES.get("crows_pairs").metrics), "seat": set(PROBES.get("seat").metrics)})
    with pytest.raises(PolicyError, match="no check for the probes"):
        recommended_policy({"x": "no_such_probe"})
    assert load_policy("recommended").name == "recommended"


def test_not_applicable_probes_are_skipped_but_failed_probes_still_fail(tmp_path: Path) -> None:
    rd = make_failed_run(tmp_path)  # crows_pairs complete (old metric name "metric"), stereoset failed
    update_manifest(rd, probes={**rd.manifest()["probes"],
                               "seat": {"probe": "seat", "status": "skipped", "reason": "not for this kind"}})
    pol = recommended_policy({"crows_pairs": "crows_pairs", "stereoset": "stereoset", "seat": "seat"})
    v = evaluate_policy(pol, rd)
    status = {c.check: c.status for c in v.checks}
    # the fixture's crows_pairs value 50 [30, 90]: inside 40..60, but the CI is not inside 45..55
    assert status["crows_pairs.pct_stereotype within 40..60"] == "pass"
    assert status["crows_pairs.pct_stereotype within 45..55"] == "warn"
    assert status["seat.mean_abs_effect_size < 0.8"] == "skipped"
    assert status["stereoset.ss within 40..60"] == "missing"  # the probe ran and failed
    assert v.failed and v.status == "fail" and v.counts()["skipped"] == 2


def test_skipped_checks_alone_do_not_fail_the_verdict(tmp_path: Path) -> None:
    rd = make_run(tmp_path)  # crows_pairs + seat, no classifier metrics
    v = evaluate_policy(recommended_policy({"crows_pairs": "crows_pairs", "seat": "seat",
                                            "counterfactual": "counterfactual"}), rd)
    assert {c.status for c in v.checks if c.probe == "counterfactual"} == {"skipped"}
    assert not v.failed


@pytest.mark.parametrize("name", ["metric", "pct_stereotype"])
def test_crows_metric_old_and_new_names_are_aliases(tmp_path: Path, name: str) -> None:
    rd = make_run(tmp_path)  # its summary still uses the old name "metric"
    pol = load_policy([f"crows_pairs.{name} within 45..55"])
    validate_policy(pol, {"crows_pairs": set(PROBES.get("crows_pairs").metrics)})
    c = evaluate_policy(pol, rd).checks[0]
    assert c.status == "pass" and c.value == 50.0
    with pytest.raises(PolicyError, match="unknown metric 'metrc'"):
        validate_policy(load_policy(["crows_pairs.metrc <= 1"]), {"crows_pairs": {"pct_stereotype"}})


def test_report_policy_recommended_with_out_leaves_the_run_untouched(tmp_path: Path) -> None:
    from audit.cli import main

    rd = make_full_run(tmp_path)
    before = {p: p.stat().st_mtime_ns for p in rd.path.rglob("*") if p.is_file()}
    verdict_before = read_json(rd.path / "verdict.json")
    out = tmp_path / "out"
    code = main(["report", str(rd.path), "--format", "html,json", "--policy", "recommended", "--out", str(out)])
    assert code in (0, 1)
    after = {p: p.stat().st_mtime_ns for p in rd.path.rglob("*") if p.is_file()}
    assert after == before and read_json(rd.path / "verdict.json") == verdict_before
    new = read_json(out / "verdict.json")
    assert new["policy"]["name"] == "recommended"
    # the report in --out shows the verdict written beside it, not the run's own
    assert read_json(out / "report.json")["verdict"]["policy"]["name"] == "recommended"
    assert read_json(out / "report.json")["verdict"]["status"] == new["status"]
    assert sorted(p.name for p in out.iterdir()) == ["report.html", "report.json", "verdict.json"]
    assert RunDir(rd.path).manifest()["status"] == "complete"
