"""``taudit`` on bad input: one ``error: …`` line naming what to fix, exit code 2, and no Python
traceback (issue 9). ``--debug`` / ``TAUDIT_DEBUG=1`` re-raise for developers."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from audit import cli

PAIRS = [("the poor family is lazy", "the rich family is lazy", "stereo", "socioeconomic"),
         ("the man is caring", "the woman is caring", "antistereo", "gender")]


@pytest.fixture(autouse=True)
def _fresh_log_handlers():  # type: ignore[no-untyped-def]
    """``main`` configures logging once per process onto the sys.stderr of that moment; under
    capsys that stream is closed after the test, so drop the handler it added."""
    root = logging.getLogger()
    before = list(root.handlers)
    yield
    for h in root.handlers[:]:
        if h not in before:
            root.removeHandler(h)


def _rebind_stream_handlers() -> None:
    """Libraries (transformers) create their StreamHandler on the sys.stderr of the moment; point
    them at the current (captured) one so a log line from an earlier test's stream is not lost."""
    loggers = [logging.getLogger(), *(lg for lg in logging.root.manager.loggerDict.values()
                                      if isinstance(lg, logging.Logger))]
    for lg in loggers:
        for h in lg.handlers:
            if type(h) is logging.StreamHandler and h.stream is not sys.stderr:
                h.stream = sys.stderr  # not setStream: it flushes the old, closed stream
                h.__dict__.pop("flush", None)  # transformers pins flush to the stderr of its import


def taudit(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    _rebind_stream_handlers()
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err, out + err
    return code, out, err


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def crows(path: Path) -> Path:
    pd.DataFrame(PAIRS, columns=["sent_more", "sent_less", "stereo_antistereo", "bias_type"]).to_csv(path)
    return path


def test_run_with_a_missing_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = taudit(capsys, "run", str(tmp_path / "nope.yaml"))
    assert code == 2 and f"audit config not found: {tmp_path / 'nope.yaml'}" in err


def test_run_with_malformed_yaml(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = write(tmp_path / "bad.yaml", "models: [{name: x}\nprobes: [\n")
    code, _, err = taudit(capsys, "run", str(bad))
    assert code == 2 and err.startswith("error: ") and "bad.yaml" in err and "not valid YAML" in err
    assert "line" in err


def test_run_with_an_unknown_probe(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write(tmp_path / "a.yaml", "models: [{name: x}]\nprobes: [nosuchprobe]\n")
    code, _, err = taudit(capsys, "run", str(cfg))
    assert code == 2 and "unknown probe 'nosuchprobe'" in err and "crows_pairs" in err


def test_run_with_a_missing_model_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write(tmp_path / "a.yaml", f"models: [{{name: {tmp_path / 'no-model'}}}]\nprobes: [seat]\n"
                                      "report: {enabled: false}\n")
    code, out, err = taudit(capsys, "run", str(cfg), "--out", str(tmp_path / "runs"), "-q")
    assert code == 2 and "failed" in out
    assert f"model {tmp_path / 'no-model'}: ModelLoadError" in err and "not an existing folder" in err


def test_run_with_a_missing_dataset_file_keeps_the_other_probes(
    tmp_path: Path, llama_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "gone.csv"
    cfg = write(tmp_path / "a.yaml", f"models: [{{name: {llama_path}}}]\n"
                f"probes:\n  - {{probe: crows_pairs, data: {missing}}}\n"
                f"  - {{probe: crows_pairs, name: good, data: {crows(tmp_path / 'c.csv')}}}\n"
                "report: {enabled: false}\n")
    code, out, err = taudit(capsys, "run", str(cfg), "--out", str(tmp_path / "runs"), "--run-id", "r", "-q")
    assert code == 2
    assert f"crows_pairs: ProbeError: CrowS-Pairs file not found: {missing}" in err
    manifest = json.loads((tmp_path / "runs" / "r" / "manifest.json").read_text())
    assert manifest["probes"]["crows_pairs"]["status"] == "failed"
    assert manifest["probes"]["good"]["status"] == "complete"


def test_run_on_a_model_of_the_wrong_kind_skips_with_the_reason(
    tmp_path: Path, bert_classifier_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = write(tmp_path / "a.yaml", f"models: [{{name: {bert_classifier_path}}}]\n"
                f"probes:\n  - {{probe: crows_pairs, data: {crows(tmp_path / 'c.csv')}}}\n"
                "  - {probe: bold, data: prompts.json}\n"
                "  - {probe: seat, options: {n_bootstrap: 20}}\nreport: {enabled: false}\n")
    code, out, _ = taudit(capsys, "run", str(cfg), "--out", str(tmp_path / "runs"), "--run-id", "r", "-q")
    assert code == 0 and out.startswith("complete")
    probes = json.loads((tmp_path / "runs" / "r" / "manifest.json").read_text())["probes"]
    assert probes["crows_pairs"] == {"probe": "crows_pairs", "status": "skipped", "reason":
                                     "crows_pairs does not run on classifier models (supports masked-lm, causal-lm)"}
    assert probes["bold"]["status"] == "skipped" and "supports causal-lm" in probes["bold"]["reason"]
    assert probes["seat"]["status"] == "complete"


def test_validate_and_report_on_bad_paths(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = taudit(capsys, "validate", str(tmp_path / "nope.yaml"))
    assert code == 2 and "audit config not found" in err
    code, _, err = taudit(capsys, "report", str(tmp_path / "no-run"))
    assert code == 2 and "no-run" in err and err.startswith("error: ")


def test_explain_errors(tmp_path: Path, gpt2_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = taudit(capsys, "explain", str(tmp_path / "no-model"), "hello", "-q")
    assert code == 2 and "not found" in err
    code, _, err = taudit(capsys, "explain", str(gpt2_path), "he is kind", " ".join(["he is kind"] * 60),
                          "-m", "saliency", "-q")
    assert code == 2 and "example 1 has" in err and "accepts at most 128" in err
    code, _, err = taudit(capsys, "explain", str(gpt2_path), "  ", "-m", "saliency", "-q")
    assert code == 2 and "example 0 is an empty text" in err


def test_an_unexpected_error_is_one_line_unless_debug(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import audit.runner

    def boom(*a: object, **k: object) -> None:
        raise PermissionError(13, "Permission denied", str(tmp_path / "runs"))

    monkeypatch.setattr(audit.runner, "run_audit", boom)
    cfg = write(tmp_path / "a.yaml", "models: [{name: x}]\nprobes: [seat]\n")
    code, _, err = taudit(capsys, "run", str(cfg))
    assert code == 2
    assert err.splitlines() == [f"error: PermissionError: [Errno 13] Permission denied: '{tmp_path / 'runs'}'",
                                "(rerun with --debug or TAUDIT_DEBUG=1 to see the traceback)"]
    with pytest.raises(PermissionError):
        cli.main(["run", str(cfg), "--debug"])
    monkeypatch.setenv("TAUDIT_DEBUG", "1")
    with pytest.raises(PermissionError):
        cli.main(["run", str(cfg)])


def test_the_installed_command_prints_no_traceback(tmp_path: Path) -> None:
    exe = Path(sys.executable).with_name("taudit")
    if not exe.is_file():
        pytest.skip("taudit is not installed in this environment")
    bad = write(tmp_path / "bad.yaml", "models: [\n")
    env = {**os.environ, "TAUDIT_DEBUG": ""}
    for argv in (["run", str(bad)], ["run", str(tmp_path / "none.yaml")], ["report", str(tmp_path)]):
        p = subprocess.run([str(exe), *argv], capture_output=True, text=True, env=env, timeout=120, check=False)
        assert p.returncode == 2, (argv, p.stderr)
        assert "Traceback" not in p.stdout + p.stderr and p.stderr.startswith("error: "), (argv, p.stderr)
