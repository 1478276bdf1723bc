"""Policy checks: parsing, validation against the registry's metrics, verdicts on run directories.

Fixture values (tests/fixture_runs.py): crows_pairs.metric = 50, CI [30, 90]; seat
mean_abs_effect_size = 0.45, CI [0.2, 0.8]; the failed run lacks stereoset (ProbeError).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from audit.policy import (
    PolicyError,
    evaluate_policy,
    known_metrics,
    load_policy,
    parse_condition,
    validate_policy,
    write_verdict,
)
from audit.results import MetricInfo, MetricValue, ProbeResult
from audit.store import RunDir, read_json
from tests.fixture_runs import make_failed_run, make_run


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> RunDir:
    return make_run(tmp_path_factory.mktemp("policy"))


@pytest.fixture(scope="module")
def failed(tmp_path_factory: pytest.TempPathFactory) -> RunDir:
    return make_failed_run(tmp_path_factory.mktemp("policy-failed"))


def _one(run: RunDir, check: str | dict, **kw: str):
    item = {"check": check, **kw} if isinstance(check, str) else check
    verdict = evaluate_policy(load_policy([item]), run)
    return verdict, verdict.checks[0]


def test_parse_condition_forms() -> None:
    c = parse_condition("crows_pairs.metric within 45..55")
    assert (c.probe, c.metric, c.op, c.low, c.high) == ("crows_pairs", "metric", "within", 45.0, 55.0)
    c = parse_condition("seat.mean_abs_effect_size<=0.2")
    assert (c.probe, c.metric, c.op, c.threshold) == ("seat", "mean_abs_effect_size", "<=", 0.2)
    c = parse_condition("stereoset.icat >= 7e1")
    assert (c.op, c.threshold) == (">=", 70.0)
    c = parse_condition("bbq.s_dis within [-0.1, 0.1]")
    assert (c.low, c.high) == (-0.1, 0.1)
    # a metric name may itself contain dots: the probe is the part before the first one
    c = parse_condition("seat.weat6.effect_size < 1")
    assert (c.probe, c.metric, c.op) == ("seat", "weat6.effect_size", "<")


@pytest.mark.parametrize("text", ["crows_pairs.metric = 50", "metric <= 1", "a.b within 5..1", "a.b <= x"])
def test_unparseable_check_names_check_and_field(text: str) -> None:
    with pytest.raises(PolicyError) as e:
        load_policy([text, "a.b <= 1"])
    msg = str(e.value)
    assert "check 1" in msg and repr(text) in msg and "field 'check'" in msg


def test_bad_fields_are_named(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match=r"check 2 .*field 'severity'.*'error'"):
        load_policy(["a.b <= 1", {"check": "a.b <= 1", "severity": "error"}])
    with pytest.raises(PolicyError, match=r"field 'on'.*'bound'"):
        load_policy([{"check": "a.b <= 1", "on": "bound"}])
    with pytest.raises(PolicyError, match=r"field 'sevrity'"):
        load_policy([{"check": "a.b <= 1", "sevrity": "warn"}])
    with pytest.raises(PolicyError, match="non-empty list"):
        load_policy({"checks": []})
    with pytest.raises(PolicyError, match="does not exist"):
        load_policy(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("checks: [a.b <= 1\n", encoding="utf-8")
    with pytest.raises(PolicyError, match=r"bad\.yaml is not valid YAML"):
        load_policy(bad)


def test_yaml_file_with_bare_on_key_and_config_section(tmp_path: Path) -> None:
    # PyYAML reads the bare key `on` as True: the loader must still see it as the field `on`
    f = tmp_path / "policy.yaml"
    f.write_text("name: gate\nchecks:\n  - check: crows_pairs.metric within 45..55\n    on: ci\n"
                 "    severity: warn\n  - seat.mean_abs_effect_size <= 0.2\n", encoding="utf-8")
    p = load_policy(f)
    assert p.name == "gate" and p.source == str(f)
    assert [(c.severity, c.on) for c in p.checks] == [("warn", "ci"), ("fail", "value")]
    cfg = tmp_path / "audit.yaml"
    cfg.write_text("models: [x]\npolicy:\n  - stereoset.icat >= 70\n", encoding="utf-8")
    assert load_policy(cfg).checks[0].condition.metric == "icat"


def test_validate_unknown_probe_and_metric() -> None:
    p = load_policy(["crows_pairs.metric within 45..55", "crows_pairs.icat >= 1", "stereoset.icat >= 70"])
    known = {"crows_pairs": {"metric", "stereo_score"}, "seat": {"mean_abs_effect_size"}}
    with pytest.raises(PolicyError) as e:
        validate_policy(p, known)
    msg = str(e.value)
    assert "2 check(s)" in msg
    assert "unknown metric 'icat' for probe 'crows_pairs'; its metrics: metric, stereo_score" in msg
    assert "unknown probe 'stereoset'; known probes: crows_pairs, seat" in msg
    validate_policy(load_policy(["crows_pairs.metric within 45..55"]), known)  # no error


def test_known_metrics_from_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    from audit.probe import PROBES, Probe

    class Fake(Probe):
        metrics = {"score": MetricInfo("score", "a score", ideal=0.0), "gap": MetricInfo("gap", "a gap")}

    PROBES.names()  # load the plug-ins first so the fake is not overwritten
    monkeypatch.setitem(PROBES._items, "_policy_fake", Fake)
    assert known_metrics({"fake_en": "_policy_fake", "ghost": "_not_registered"}) == {"fake_en": {"score", "gap"}}
    assert known_metrics(["_policy_fake"]) == {"_policy_fake": {"score", "gap"}}


def test_value_mode_pass_and_fail(run: RunDir) -> None:
    v, c = _one(run, "crows_pairs.metric within 45..55")
    assert (c.status, c.value, c.ci_low, c.ci_high, c.judged) == ("pass", 50.0, 30.0, 90.0, [50.0])
    assert v.status == "pass" and not v.failed
    assert _one(run, "seat.mean_abs_effect_size <= 0.45")[1].status == "pass"
    v, c = _one(run, "seat.mean_abs_effect_size < 0.45")  # strict: 0.45 < 0.45 is false
    assert c.status == "fail" and v.failed and v.status == "fail"
    assert "value 0.45 is not < 0.45" in c.reason
    assert _one(run, "seat.mean_abs_effect_size > 0.44")[1].status == "pass"


def test_ci_mode_uses_the_right_bound(run: RunDir) -> None:
    # value 50 is inside 45..55 but the CI [30, 90] is not
    c = _one(run, "crows_pairs.metric within 45..55", on="ci")[1]
    assert c.status == "fail" and c.judged == [30.0, 90.0]
    assert _one(run, "crows_pairs.metric within 25..95", on="ci")[1].status == "pass"
    # <= judges ci_high (0.8), >= judges ci_low (0.2)
    c = _one(run, "seat.mean_abs_effect_size <= 0.5", on="ci")[1]
    assert c.status == "fail" and c.judged == [0.8] and "upper bound" in c.reason
    assert _one(run, "seat.mean_abs_effect_size <= 0.8", on="ci")[1].status == "pass"
    c = _one(run, "seat.mean_abs_effect_size >= 0.3", on="ci")[1]
    assert c.status == "fail" and c.judged == [0.2] and "lower bound" in c.reason
    assert _one(run, "seat.mean_abs_effect_size >= 0.2", on="ci")[1].status == "pass"


def test_warn_severity_does_not_fail_the_verdict(run: RunDir) -> None:
    v = evaluate_policy(load_policy([
        {"check": "crows_pairs.metric within 45..55", "on": "ci", "severity": "warn"},
        "seat.mean_abs_effect_size <= 0.5",
    ]), run)
    assert [c.status for c in v.checks] == ["warn", "pass"]
    assert not v.failed and v.status == "warn"
    assert v.counts() == {"pass": 1, "warn": 1, "fail": 0, "missing": 0, "skipped": 0}


def test_missing_probe_counts_as_fail_for_fail_severity(failed: RunDir) -> None:
    v = evaluate_policy(load_policy(["crows_pairs.metric within 45..55", "stereoset.icat >= 70"]), failed)
    crows, stereo = v.checks
    assert crows.status == "pass"
    assert stereo.status == "missing" and v.failed and v.status == "fail"
    assert "failed" in stereo.reason and "gold_label" in stereo.reason
    v = evaluate_policy(load_policy([{"check": "stereoset.icat >= 70", "severity": "warn"}]), failed)
    assert v.checks[0].status == "missing" and not v.failed and v.status == "warn"
    v = evaluate_policy(load_policy(["bold.max_gap <= 0.1"]), failed)
    assert v.checks[0].status == "missing" and "not in this run" in v.checks[0].reason and v.failed


def test_missing_metric_and_missing_ci(tmp_path: Path, run: RunDir) -> None:
    c = _one(run, "crows_pairs.icat >= 1")[1]
    assert c.status == "missing" and "antistereo_score, metric, stereo_score" in c.reason
    rd = RunDir(tmp_path / "r")
    rd.write_manifest({"run_id": "r", "status": "complete", "probes": {"crows_en": {"probe": "crows_pairs", "status": "complete"}}})
    rd.write_probe("crows_en", ProbeResult("crows_pairs", {"metric": MetricValue(52.0)}, pd.DataFrame({"a": [1]})))
    # the registry name resolves to the one run probe of that kind
    assert _one(rd, "crows_pairs.metric within 45..55")[1].status == "pass"
    c = _one(rd, "crows_en.metric within 45..55", on="ci")[1]
    assert c.status == "missing" and "no confidence interval" in c.reason


def test_write_verdict_round_trips(tmp_path: Path, run: RunDir) -> None:
    v = evaluate_policy(load_policy({"name": "gate", "checks": ["seat.mean_abs_effect_size <= 0.2"]}), run)
    path = write_verdict(run, v)
    d = read_json(path)
    assert path == run.path / "verdict.json"
    assert d["status"] == "fail" and d["failed"] is True and d["policy"]["name"] == "gate"
    assert d["checks"][0]["value"] == 0.45 and d["checks"][0]["threshold"] == "<= 0.2"
    assert d["run_id"] == "run-a" and d["counts"]["fail"] == 1
