"""Crash and resume, and writes the operating system refuses.

``taudit run`` is killed with SIGKILL in the middle of a probe and run again on the same folder:
the finished probe is not recomputed, the finished chunks are reused (not rescored), nothing is
lost or duplicated, the result equals an uninterrupted run, and the manifest's ``history`` shows
both attempts. A full disk or a read-only output folder ends the run with one clear line and exit
code 2 (no traceback), keeps everything written so far and leaves no half-written file; a rerun
once the disk has room completes the run.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from audit import cli, store
from audit.rundir_view import RunView
from audit.store import RunDir
from tests.test_distributed import REPO, assert_same_run
from tests.tiny_models import corpus

N_BIG, CHUNK = 400, 4  # 100 checkpointed chunks: seconds of scoring, so the kill lands mid-probe


def pairs_csv(path: Path, n: int, seed: int = 3) -> Path:
    sents = corpus(n, seed=seed)[:n]
    rows = [(a, a.replace(" is ", " was ", 1) if " is " in a else a + " today", "stereo" if i % 3 else "antistereo",
             ["gender", "race", "age"][i % 3]) for i, a in enumerate(sents)]
    pd.DataFrame(rows, columns=["sent_more", "sent_less", "stereo_antistereo", "bias_type"]).to_csv(path)
    return path


def write_config(tmp: Path, model: Path, n_big: int = N_BIG) -> Path:
    cfg = {
        "seed": 5,
        "models": [{"name": str(model)}],
        "probes": [
            {"probe": "crows_pairs", "name": "cp_small", "data": str(pairs_csv(tmp / "small.csv", 12))},
            {"probe": "crows_pairs", "name": "cp_big", "data": str(pairs_csv(tmp / "big.csv", n_big)),
             "chunk_size": CHUNK},
        ],
        "report": {"enabled": False},
    }
    p = tmp / "audit.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


def chunks(rd: RunDir, name: str) -> list[int]:
    return sorted(int(p.stem.split("-")[1]) for p in (rd.probe_dir(name) / "partial").glob("chunk-*.parquet"))


def run_and_kill(cfg: Path, out: Path, run_id: str, min_chunks: int = 3) -> int:
    """Start ``taudit run`` and SIGKILL it once ``cp_big`` has ``min_chunks`` chunks on disk."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "audit.cli", "run", str(cfg), "--out", str(out), "--run-id", run_id, "-q"]
    proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    rd = RunDir(out / run_id)
    deadline = time.monotonic() + 300
    try:
        while len(chunks(rd, "cp_big")) < min_chunks:
            if proc.poll() is not None:
                pytest.fail(f"taudit exited ({proc.returncode}) before it could be killed: {proc.stderr.read()[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail("cp_big wrote no chunks within 300 s")
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
        if proc.stderr is not None:
            proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    return proc.pid


@pytest.mark.slow
def test_sigkill_mid_probe_then_rerun(tmp_path: Path, llama_path: Path) -> None:
    cfg = write_config(tmp_path, llama_path)
    out = tmp_path / "runs"
    pid = run_and_kill(cfg, out, "crash")
    rd = RunDir(out / "crash")
    n_chunks = N_BIG // CHUNK
    kept = chunks(rd, "cp_big")
    assert 3 <= len(kept) < n_chunks, "the kill did not land mid-probe"
    assert rd.probe_complete("cp_small") and not rd.probe_complete("cp_big")
    m = rd.manifest()
    assert m["status"] == "running" and m["probes"]["cp_big"]["status"] == "running"
    [killed] = m["history"]
    assert killed["status"] == "running" and killed["finished_at"] is None and killed["pid"] == pid
    small = rd.probe_dir("cp_small") / "summary.json"
    small_bytes, small_mtime = small.read_bytes(), small.stat().st_mtime_ns
    small_items_mtime = (rd.probe_dir("cp_small") / "items.parquet").stat().st_mtime_ns
    stale = [p for p in rd.path.rglob(".*.tmp")]  # a write the kill cut short, if any

    rerun = taudit_verbose(cfg, out, "crash")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    # the finished probe was not recomputed: same bytes, same file (mtime), nothing rescored
    assert small.read_bytes() == small_bytes and small.stat().st_mtime_ns == small_mtime
    assert (rd.probe_dir("cp_small") / "items.parquet").stat().st_mtime_ns == small_items_mtime
    assert "probe cp_small already complete" in rerun.stderr
    # the finished chunks were reused, only the others scored — each exactly once
    reused = logged(rerun.stderr, "reused from")
    scored = logged(rerun.stderr, "scoring chunk")
    assert reused == kept
    assert scored == [k for k in range(n_chunks) if k not in kept]
    # nothing lost or duplicated, and the numbers of an uninterrupted run, item for item
    items = RunView(rd).probe("cp_big").items()[0]
    assert items["row"].tolist() == [str(i) for i in range(N_BIG)]
    assert_same_run(uninterrupted(cfg, out), rd)
    assert not (rd.probe_dir("cp_big") / "partial").exists() and not list(rd.path.rglob(".*.tmp"))
    # the manifest tells the story
    m = rd.manifest()
    assert m["status"] == "complete" and m["probes"]["cp_big"]["status"] == "complete"
    first, second = m["history"]
    assert first["status"] == "interrupted" and first["finished_at"] is None and first["interrupted_seen_at"]
    assert first["pid"] == pid and first["argv"][1:] == ["run", str(cfg), "--out", str(out), "--run-id", "crash", "-q"]
    assert second["status"] == "complete" and second["finished_at"] and second["attempt"] == 2
    assert second["pid"] != pid and second["host"] == first["host"]
    assert second["resumed"]["probes_complete"] == ["cp_small"]
    assert second["resumed"]["chunks_reused"] == {"cp_big": {"reused": len(kept), "of": n_chunks}}
    assert second["resumed"]["stale_temp_files"] == len(stale)
    assert m["resumed_at"] == second["started_at"] and m["created_at"] == first["started_at"]


def uninterrupted(cfg: Path, out: Path) -> RunDir:
    """The same config run in one go (in this process, one thread like the subprocesses)."""
    import torch

    from audit.config import load_config
    from audit.runner import run_audit

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        [o] = run_audit(load_config(cfg), out=out, run_id="ref", progress=False)
    finally:
        torch.set_num_threads(threads)
    assert o.status == "complete"
    return o.run_dir


def taudit_verbose(cfg: Path, out: Path, run_id: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "audit.cli", "-v", "run", str(cfg), "--out", str(out), "--run-id", run_id, "-q"]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=REPO)


def logged(stderr: str, what: str) -> list[int]:
    """Chunk numbers of the probe's debug lines ``crows_pairs: <what> ... chunk k of n``."""
    import re

    out = []
    for line in stderr.splitlines():
        if what in line and "audit.probe" in line:
            out.append(int(re.search(r"chunk (\d+) of", line).group(1)))  # type: ignore[union-attr]
    return sorted(out)


# --------------------------------------------------------------------------------------------
# the disk refuses a write
# --------------------------------------------------------------------------------------------


def fail_on(monkeypatch: pytest.MonkeyPatch, code: int, when: Any) -> list[str]:
    """Make every atomic rename whose destination satisfies ``when`` fail with ``code``."""
    real = os.replace
    hits: list[str] = []

    def replace(src: Any, dst: Any) -> None:
        if when(Path(dst)):
            hits.append(str(dst))
            raise OSError(code, os.strerror(code))
        real(src, dst)

    monkeypatch.setattr(store.os, "replace", replace)
    return hits


def test_disk_full_mid_run_is_one_clear_line_then_a_rerun_completes(
    tmp_path: Path, llama_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = write_config(tmp_path, llama_path, n_big=20)
    out = tmp_path / "runs"
    hits = fail_on(monkeypatch, errno.ENOSPC, lambda p: p.name == "items.parquet" and p.parent.name == "cp_big")
    code = cli.main(["run", str(cfg), "--out", str(out), "--run-id", "full", "-q"])  # no exception escapes
    assert code == 2 and len(hits) == 1
    err = capsys.readouterr().err
    target = out / "full" / "probes" / "cp_big" / "items.parquet"
    assert f"error: cannot write {target}: no space left on device — free space or choose --out elsewhere" in err
    assert "Traceback" not in err
    rd = RunDir(out / "full")
    m = rd.manifest()  # the manifest could still be written: it records the cause
    assert m["status"] == "failed" and m["finished_at"]
    assert any("no space left on device" in e for e in m["errors"])
    assert m["history"][-1]["status"] == "failed" and "no space left" in m["history"][-1]["error"]
    # what was finished is kept; the failed write left no file and no temp file
    assert rd.probe_complete("cp_small") and not rd.probe_complete("cp_big")
    assert not target.exists() and not list(rd.path.rglob("*.tmp"))
    assert chunks(rd, "cp_big") == [0, 1, 2, 3, 4]  # the scored checkpoints survive for the rerun

    monkeypatch.undo()  # space freed
    assert cli.main(["run", str(cfg), "--out", str(out), "--run-id", "full", "-q"]) == 0
    m = rd.manifest()
    assert m["status"] == "complete" and m["errors"] == []
    assert [h["status"] for h in m["history"]] == ["failed", "complete"]
    assert m["history"][1]["resumed"]["probes_complete"] == ["cp_small"]
    assert m["history"][1]["resumed"]["chunks_reused"] == {"cp_big": {"reused": 5, "of": 5}}
    assert len(RunView(rd).probe("cp_big").items()[0]) == 20


def test_disk_full_on_a_chunk_checkpoint(tmp_path: Path, llama_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write_config(tmp_path, llama_path, n_big=20)
    out = tmp_path / "runs"
    fail_on(monkeypatch, errno.ENOSPC, lambda p: p.name == "chunk-00002.parquet")
    assert cli.main(["run", str(cfg), "--out", str(out), "--run-id", "c", "-q"]) == 2
    err = capsys.readouterr().err
    assert "chunk-00002.parquet: no space left on device" in err and "Traceback" not in err
    rd = RunDir(out / "c")
    assert chunks(rd, "cp_big") == [0, 1] and not list(rd.path.rglob("*.tmp"))
    assert rd.manifest()["status"] == "failed"


def test_read_only_output_folder(tmp_path: Path, llama_path: Path, monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    """Nothing can be written, not even the manifest: the error says so and which folder to fix.
    Simulated (the suite runs as root in CI, where chmod does not stop writes)."""
    cfg = write_config(tmp_path, llama_path, n_big=20)
    out = tmp_path / "runs"
    out.mkdir()
    real = store.tempfile.mkstemp

    def mkstemp(*a: Any, dir: Any = None, **kw: Any) -> Any:
        if dir is not None and Path(dir).resolve().is_relative_to(out.resolve()):
            raise PermissionError(errno.EACCES, "Permission denied")
        return real(*a, dir=dir, **kw)

    monkeypatch.setattr(store.tempfile, "mkstemp", mkstemp)
    assert cli.main(["run", str(cfg), "--out", str(out), "--run-id", "ro", "-q"]) == 2
    err = capsys.readouterr().err
    assert (f"error: cannot write {out / 'ro' / 'manifest.json'}: permission denied — make {out / 'ro'} writable "
            "or choose --out elsewhere") in err
    assert "Traceback" not in err
    assert [p for p in out.rglob("*") if p.is_file()] == []


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="root writes into read-only folders (test_read_only_output_folder simulates it)")
def test_read_only_output_folder_for_real(tmp_path: Path, llama_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write_config(tmp_path, llama_path, n_big=20)
    out = tmp_path / "runs"
    out.mkdir()
    out.chmod(0o500)
    try:
        assert cli.main(["run", str(cfg), "--out", str(out), "--run-id", "ro", "-q"]) == 2
        err = capsys.readouterr().err
        assert f"permission denied — make {out} writable or choose --out elsewhere" in err and "Traceback" not in err
    finally:
        out.chmod(0o700)


def test_ctrl_c_is_recorded_as_interrupted_with_its_end(tmp_path: Path, llama_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from audit.config import load_config
    from audit.runner import run_audit
    from probes.crows_pairs import CrowsPairs

    cfg = load_config(write_config(tmp_path, llama_path, n_big=20))
    real = CrowsPairs.score_items
    calls: list[int] = []

    def interrupted(self: Any, handle: Any, items: pd.DataFrame, opts: Any, progress: bool) -> pd.DataFrame:
        calls.append(len(items))
        if len(calls) == 3:  # cp_small's one chunk, cp_big's first, then Ctrl-C
            raise KeyboardInterrupt
        return real(self, handle, items, opts, progress)

    monkeypatch.setattr(CrowsPairs, "score_items", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_audit(cfg, out=tmp_path / "runs", run_id="i", progress=False)
    rd = RunDir(tmp_path / "runs" / "i")
    m = rd.manifest()
    assert m["status"] == "interrupted" and m["finished_at"] is None  # unfinished, and not running
    [h] = m["history"]
    assert h["status"] == "interrupted" and h["finished_at"] and "interrupted_seen_at" not in h
    monkeypatch.setattr(CrowsPairs, "score_items", real)
    [o] = run_audit(cfg, out=tmp_path / "runs", run_id="i", progress=False)
    assert o.status == "complete"
    first, second = rd.manifest()["history"]
    assert first == h  # an attempt that recorded its own end is left as it was
    assert second["resumed"]["chunks_reused"] == {"cp_big": {"reused": 1, "of": 5}}


def test_unreadable_manifest_is_refused_not_overwritten(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "audit.yaml"
    cfg.write_text(yaml.safe_dump({"models": ["some/model"], "probes": [], "report": {"enabled": False}}))
    run = tmp_path / "runs" / "x"
    run.mkdir(parents=True)
    (run / "manifest.json").write_text('{"status": "comp')
    assert cli.main(["run", str(cfg), "--out", str(tmp_path / "runs"), "--run-id", "x", "-q"]) == 2
    err = capsys.readouterr().err
    assert f"{run / 'manifest.json'} is not valid JSON" in err and "move it away or choose another --run-id" in err
    assert (run / "manifest.json").read_text() == '{"status": "comp'
