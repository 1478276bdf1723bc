"""What ``taudit run`` prints at the end and its CI outputs (audit/console.py): the per-model table,
failed checks with value / CI / threshold, JUnit XML (parsed with junitparser) and GitHub
Actions annotations; ``taudit --version``; one-line runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from audit.console import failed_check_lines, github_annotations, junit_xml, model_table
from audit.policy import evaluate_policy, load_policy
from tests.fixture_runs import make_run
from tests.test_cli_errors import crows, taudit, write


def _verdict(rd):  # type: ignore[no-untyped-def]
    pol = load_policy({"name": "gate", "checks": [
        {"check": "crows_pairs.pct_stereotype within 45..55", "on": "ci"},   # CI [30, 90]: fail
        {"check": "seat.mean_abs_effect_size <= 0.5", "severity": "warn"},   # fixture value 0.4: pass
        {"check": "seat.mean_abs_effect_size <= 0.1", "severity": "warn"},   # warn
        {"check": "stereoset.ss within 40..60", "required": False},          # not in the run: skipped
        "bbq.bias_score_ambig <= 5",                                           # not in the run: missing, fails
    ]})
    return evaluate_policy(pol, rd)


def test_model_table_and_failed_checks(tmp_path: Path) -> None:
    rd = make_run(tmp_path)
    v = _verdict(rd)
    table = model_table(rd, v)
    lines = table.splitlines()
    assert lines[0].split() == ["probe", "headline", "metric", "value", "[95%", "CI]", "ideal", "policy"]
    crow = next(x for x in lines if x.startswith("crows_pairs"))
    assert crow.split()[1] == "metric" and "50% [30, 90]" in crow and crow.split()[-1] == "fail"
    bad = failed_check_lines(v)
    assert len(bad) == 3  # fail, warn, missing; pass and skipped are left out
    fail = next(b for b in bad if b.startswith("FAIL"))
    assert "value 50% [30, 90]" in fail and "threshold within 45..55" in fail and "judged on the 95% CI" in fail
    assert any(b.startswith("MISSING") and "bbq" in b for b in bad)


def test_junit_parses_with_junitparser_and_maps_statuses(tmp_path: Path) -> None:
    junitparser = pytest.importorskip("junitparser")
    rd = make_run(tmp_path)
    path = tmp_path / "policy.xml"
    path.write_text(junit_xml([("run-a", {"run_dir": str(rd.path)}, _verdict(rd))]), encoding="utf-8")
    xml = junitparser.JUnitXml.fromfile(str(path))
    suites = list(xml)
    assert len(suites) == 1 and suites[0].name == "run-a"
    s = suites[0]
    assert (s.tests, s.failures, s.skipped, s.errors) == (5, 2, 1, 0)
    cases = {c.name: c for c in s}
    failed = cases["crows_pairs.pct_stereotype within 45..55"]
    assert not failed.is_passed and isinstance(failed.result[0], junitparser.Failure)
    assert "value 50% [30, 90]" in failed.result[0].message and "within 45..55" in failed.result[0].message
    assert isinstance(cases["stereoset.ss within 40..60"].result[0], junitparser.Skipped)
    assert isinstance(cases["bbq.bias_score_ambig <= 5"].result[0], junitparser.Failure)
    assert cases["seat.mean_abs_effect_size <= 0.5"].is_passed
    assert cases["seat.mean_abs_effect_size <= 0.1"].is_passed
    assert "WARNING" in cases["seat.mean_abs_effect_size <= 0.1"].system_out


def test_github_annotations_are_escaped_workflow_commands(tmp_path: Path) -> None:
    rd = make_run(tmp_path)
    lines = github_annotations(_verdict(rd), "run-a")
    kinds = [ln.split(" ", 1)[0] for ln in lines]
    assert kinds == ["::error", "::warning", "::error"]
    assert lines[0].startswith("::error title=taudit run-a%3A crows_pairs.pct_stereotype within 45..55::")
    assert all("\n" not in ln for ln in lines)
    v = _verdict(rd)
    v.checks[0].reason = "50%\nnext"
    v.checks[0].status = "missing"
    assert "50%25%0Anext" in github_annotations(v, "r")[0]


def test_cli_run_prints_table_verdict_junit_and_annotations(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, bert_mlm_path: Path,
) -> None:
    cfg = write(tmp_path / "a.yaml", f"models: [{{name: {bert_mlm_path}}}]\n"
                f"probes:\n  - {{probe: crows_pairs, data: {crows(tmp_path / 'c.csv')}}}\n"
                "policy:\n  - check: crows_pairs.pct_stereotype within 45..55\n    on: ci\n"
                "report: {formats: [html, md, json]}\n")
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    junit = tmp_path / "ci" / "junit.xml"
    code, out, _ = taudit(capsys, "run", str(cfg), "--out", str(tmp_path / "runs"), "--run-id", "r", "-q",
                          "--junit", str(junit))
    assert code == 1  # two pairs: the CI cannot lie inside 45..55
    assert out.startswith("complete") and "verdict: fail" in out
    assert "crows_pairs  pct_stereotype" in out
    assert "FAIL    crows_pairs.pct_stereotype within 45..55: value" in out
    assert "::error title=taudit r%3A crows_pairs.pct_stereotype within 45..55::" in out
    assert f"report.html    {tmp_path / 'runs' / 'r' / 'report.html'}" in out
    assert f"model_card.md  {tmp_path / 'runs' / 'r' / 'model_card.md'}" in out
    assert f"taudit dashboard {tmp_path / 'runs'}" in out
    assert "not a crash" in out
    assert junit.is_file() and "<failure" in junit.read_text(encoding="utf-8")


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    from audit import cli

    with pytest.raises(SystemExit) as exc:
        cli.main(["--version"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("taudit ") and out.split()[1][0].isdigit()


def test_help_texts_state_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    from audit import cli

    for cmd in ("run", "validate", "report"):
        with pytest.raises(SystemExit):
            cli.main([cmd, "--help"])
        out = " ".join(capsys.readouterr().out.split())
        assert "Exit codes: 0" in out, cmd


def test_one_line_run_without_yaml(tmp_path: Path, capsys: pytest.CaptureFixture[str], bert_mlm_path: Path) -> None:
    code, out, _ = taudit(capsys, "run", "--model", str(bert_mlm_path), "--probes", "seat", "--out",
                          str(tmp_path / "runs"), "--run-id", "one", "-q", "--no-report")
    assert code in (0, 1), out
    assert "seat  " in out and "verdict:" in out  # the recommended policy judged it
    manifest = (tmp_path / "runs" / "one" / "manifest.json").read_text(encoding="utf-8")
    assert '"seat"' in manifest and "why-next-token" not in manifest  # no explain steps
    code, _, err = taudit(capsys, "run", "--model", str(bert_mlm_path), "--probes", "seat", "--limit", "5")
    assert code == 2 and "probe 'seat' has no max_items option" in err
    code, _, err = taudit(capsys, "run", str(tmp_path / "x.yaml"), "--model", "m")
    assert code == 2 and "not both" in err
