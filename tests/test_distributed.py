"""Data-parallel runs: two gloo processes on CPU (torchrun) give the single-process run directory
item for item (CrowS-Pairs and StereoSet), and a rank killed mid-run loses only its unfinished chunk."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from audit.store import RunDir
from tests.tiny_models import corpus

REPO = Path(__file__).resolve().parents[1]


def pairs_csv(path: Path, n: int = 23) -> Path:
    sents = corpus(200, seed=1)
    rows = []
    for i in range(n):
        a = sents[i]
        b = a.replace("the ", "a ", 1) if "the " in a else "the " + a
        rows.append((a, b, "stereo" if i % 3 else "antistereo", ["gender", "race", "age"][i % 3]))
    pd.DataFrame(rows, columns=["sent_more", "sent_less", "stereo_antistereo", "bias_type"]).to_csv(path)
    return path


def write_config(tmp: Path, models: dict[str, Path]) -> Path:
    from tests.test_stereoset import write_dataset

    data = pairs_csv(tmp / "pairs.csv")
    stereo = write_dataset(tmp / "dev.json")
    cfg = {
        "seed": 1,
        "models": [{"name": str(p), "label": label} for label, p in models.items()],
        "probes": [{"probe": "crows_pairs", "data": str(data), "chunk_size": 5},
                   {"probe": "stereoset", "data": str(stereo), "chunk_size": 2}],
        "report": {"enabled": False},
    }
    p = tmp / "audit.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


def taudit(cfg: Path, out: Path, run_id: str, nproc: int = 1, **env: str) -> subprocess.CompletedProcess[str]:
    e = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO), **env}
    cli = ["-m", "audit.cli", "run", str(cfg), "--out", str(out), "--run-id", run_id, "-q"]
    if nproc > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", *cli]
    else:
        cmd = [sys.executable, *cli]
    return subprocess.run(cmd, env=e, capture_output=True, text=True, timeout=600, cwd=REPO)


def assert_same_run(a: RunDir, b: RunDir) -> None:
    for name in a.probe_names():
        pd.testing.assert_frame_equal(a.probe_items(name), b.probe_items(name))
        assert a.probe_summary(name)["metrics"] == b.probe_summary(name)["metrics"]
        assert a.probe_summary(name)["breakdown"] == b.probe_summary(name)["breakdown"]


@pytest.mark.slow
def test_two_process_gloo_run_equals_single_process(tmp_path: Path, llama_path: Path, bert_mlm_path: Path) -> None:
    cfg = write_config(tmp_path, {"llama": llama_path, "bert": bert_mlm_path})
    single = taudit(cfg, tmp_path / "runs", "one")
    assert single.returncode == 0, single.stderr[-3000:]
    multi = taudit(cfg, tmp_path / "runs", "two", nproc=2)
    assert multi.returncode == 0, multi.stderr[-3000:]
    for label in ("llama", "bert"):
        a, b = RunDir(tmp_path / "runs" / f"one-{label}"), RunDir(tmp_path / "runs" / f"two-{label}")
        assert a.manifest()["status"] == b.manifest()["status"] == "complete"
        assert b.manifest()["distributed"]["world_size"] == 2
        assert len(b.probe_items("crows_pairs")) == 23
        assert b.probe_names() == ["crows_pairs", "stereoset"]
        assert_same_run(a, b)
        assert not (b.probe_dir("crows_pairs") / "partial").exists()


@pytest.mark.slow
def test_killed_rank_rerun_completes_without_loss(tmp_path: Path, llama_path: Path) -> None:
    cfg = write_config(tmp_path, {"llama": llama_path})
    ref = taudit(cfg, tmp_path / "runs", "ref")
    assert ref.returncode == 0, ref.stderr[-3000:]
    crashed = taudit(cfg, tmp_path / "runs", "crash", nproc=2, TAUDIT_FAIL_RANK="1", TAUDIT_FAIL_AFTER_CHUNKS="1")
    assert crashed.returncode != 0
    rd = RunDir(tmp_path / "runs" / "crash")  # one model + a run id: the folder is the id
    assert not rd.probe_complete("crows_pairs")
    partial = sorted(p.name for p in (rd.probe_dir("crows_pairs") / "partial").glob("chunk-*.parquet"))
    assert "chunk-00001.parquet" in partial  # rank 1's finished chunk survived the crash
    assert "chunk-00003.parquet" not in partial  # its second chunk was never written
    rerun = taudit(cfg, tmp_path / "runs", "crash", nproc=2)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert rd.manifest()["status"] == "complete"
    items = rd.probe_items("crows_pairs")
    assert items["row"].tolist() == [str(i) for i in range(23)]  # nothing lost or duplicated
    assert_same_run(RunDir(tmp_path / "runs" / "ref"), rd)
