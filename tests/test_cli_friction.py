"""First-run friction (issue 21, item 9): validate checks paths, `taudit list` columns, file modes
from the umask, `-q` silences the weight-loading bars, verdict.json of a finished run."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from audit.store import RunDir, read_json, write_json
from reports.builder import build_reports
from tests.fixture_runs import make_run
from tests.test_cli_errors import crows, taudit, write


def test_validate_checks_that_paths_exist_and_names_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], bert_mlm_path: Path,
) -> None:
    good = write(tmp_path / "ok.yaml", f"models: [{{name: {bert_mlm_path}}}]\n"
                 f"probes:\n  - {{probe: crows_pairs, data: {crows(tmp_path / 'c.csv')}}}\n")
    code, out, _ = taudit(capsys, "validate", str(good))
    assert code == 0 and out.startswith("ok:")
    bad = write(tmp_path / "bad.yaml", "models: [{name: ./my-bert}, {name: smollm2-135m}, {name: org/model}]\n"
                "probes:\n  - {probe: seat}\n  - {probe: crows_pairs, data: ../shared/nope/crows.csv}\n"
                "explain:\n  - {methods: [ig], data: texts.csv}\n"
                "policy: gate.yaml\n")
    code, _, err = taudit(capsys, "validate", str(bad))
    assert code == 2
    assert f"models.0.name: model folder {tmp_path / 'my-bert'} does not exist" in err
    assert "models.1" not in err and "models.2" not in err  # demo alias and hub id are not paths
    assert "probes.1.data: file" in err and "crows.csv does not exist (probe 'crows_pairs')" in err
    assert "explain.0.data: file" in err and "policy: policy file" in err
    assert "probes.0" not in err  # no data given: the probe's own data


def test_list_columns_never_run_together(capsys: pytest.CaptureFixture[str]) -> None:
    from audit.probe import PROBES

    code, out, _ = taudit(capsys, "list")
    assert code == 0
    lines = out.splitlines()
    start = lines.index("probes:") + 1
    header = lines[start]
    col = header.index("what it measures")
    for name in PROBES.names():
        row = next(ln for ln in lines[start:] if ln.startswith(f"  {name} "))
        assert row[col - 2:col] == "  " and row[col] != " ", row  # the description starts in its column
        assert row[col:].startswith(PROBES.get(name).description[:20])
    explainers = lines[lines.index("explainers:") + 2:lines.index("demo models:")]
    assert explainers and all(len(ln.split(None, 1)) == 2 for ln in explainers)  # every explainer has a description


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_run_files_and_reports_follow_the_umask(tmp_path: Path, mask: int, mode: int) -> None:
    old = os.umask(mask)
    try:
        rd = make_run(tmp_path)
        write_json(tmp_path / "x.json", {"a": 1})
        written = build_reports(rd, ["html", "md", "json"])
    finally:
        os.umask(old)
    for path in [tmp_path / "x.json", rd.manifest_path, rd.probe_dir("crows_pairs") / "summary.json",
                 rd.probe_dir("crows_pairs") / "items.parquet", *written.values()]:
        assert stat.S_IMODE(path.stat().st_mode) == mode, path


def test_quiet_run_has_no_loading_bars_and_a_finished_verdict(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], bert_mlm_path: Path,
) -> None:
    import transformers.utils.logging as tlog

    cfg = write(tmp_path / "a.yaml", f"models: [{{name: {bert_mlm_path}}}]\n"
                f"probes:\n  - {{probe: crows_pairs, data: {crows(tmp_path / 'c.csv')}}}\n"
                "policy: recommended\nreport: {enabled: false}\n")
    try:
        code, out, err = taudit(capsys, "run", str(cfg), "--out", str(tmp_path / "runs"), "--run-id", "q", "-q")
        assert not tlog.is_progress_bar_enabled()
    finally:
        tlog.enable_progress_bar()
    assert code in (0, 1), err
    assert "Loading weights" not in out + err and "it/s" not in err
    v = read_json(tmp_path / "runs" / "q" / "verdict.json")
    assert v["run_status"] == "complete"  # written after the run finished, not while it was "running"
    assert RunDir(tmp_path / "runs" / "q").manifest()["status"] == "complete"
