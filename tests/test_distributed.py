"""Data-parallel runs: two gloo processes on CPU (torchrun) give the single-process run directory
item for item (CrowS-Pairs and StereoSet; templates, counterfactual with and without generation,
classifier_fairness on a classifier and zero-shot), and a rank killed mid-run (in crows_pairs, in
counterfactual) loses only its unfinished chunk."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from audit.rundir_view import RunView
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


def probe_folders(rd: RunDir) -> list[str]:
    """The probe folders a run wrote, sorted (whatever its manifest lists)."""
    root = rd.path / "probes"
    return sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []


def assert_same_run(a: RunDir, b: RunDir) -> None:
    for name in probe_folders(a):
        pd.testing.assert_frame_equal(RunView(a).probe(name).items()[0], RunView(b).probe(name).items()[0])
        assert RunView(a).probe(name).summary["metrics"] == RunView(b).probe(name).summary["metrics"]
        assert RunView(a).probe(name).summary["breakdown"] == RunView(b).probe(name).summary["breakdown"]


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
        assert len(RunView(b).probe("crows_pairs").items()[0]) == 23
        assert probe_folders(b) == ["crows_pairs", "stereoset"]
        assert_same_run(a, b)
        assert not (b.probe_dir("crows_pairs") / "partial").exists()


def crash_and_rerun(cfg: Path, runs: Path, probe: str) -> tuple[RunDir, RunDir]:
    """A single-process reference run; a two-process run whose rank 1 dies once it has written
    one chunk of ``probe`` (the config's first probe); the rerun. Returns (reference, rerun)."""
    ref = taudit(cfg, runs, "ref")
    assert ref.returncode == 0, ref.stderr[-3000:]
    crashed = taudit(cfg, runs, "crash", nproc=2, TAUDIT_FAIL_RANK="1", TAUDIT_FAIL_AFTER_CHUNKS="1")
    assert crashed.returncode != 0
    rd = RunDir(runs / "crash")  # one model + a run id: the folder is the id
    assert not rd.probe_complete(probe)
    partial = sorted(p.name for p in (rd.probe_dir(probe) / "partial").glob("chunk-*.parquet"))
    assert "chunk-00001.parquet" in partial  # rank 1's finished chunk survived the crash
    assert "chunk-00003.parquet" not in partial  # its second chunk was never written
    rerun = taudit(cfg, runs, "crash", nproc=2)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert rd.manifest()["status"] == "complete"
    return RunDir(runs / "ref"), rd


@pytest.mark.slow
def test_killed_rank_rerun_completes_without_loss(tmp_path: Path, llama_path: Path) -> None:
    ref, rd = crash_and_rerun(write_config(tmp_path, {"llama": llama_path}), tmp_path / "runs", "crows_pairs")
    items = RunView(rd).probe("crows_pairs").items()[0]
    assert items["row"].tolist() == [str(i) for i in range(23)]  # nothing lost or duplicated
    assert_same_run(ref, rd)


# --------------------------------------------------------------------------------------------
# templates, counterfactual and classifier_fairness: chunked like the other item probes
# --------------------------------------------------------------------------------------------

CF_TEXTS = ["He told his sister about the new job.", "The woman bought a car.", "Her uncle works at the bank.",
            "The sky is blue.", "My brother called his mother.", "She is a doctor.", "The man was late today.",
            "The girl likes her school.", "It rained all day."]


def item_probe_config(tmp: Path, models: dict[str, Path], *, first: str = "templates") -> Path:
    """templates (24 items), counterfactual (9 texts, two without a term; plus sampled
    continuations on the causal LM), classifier_fairness (30 rows; zero-shot on the causal LM) and
    representation (60 built-in texts' hidden states) in small chunks, so every rank scores several
    of each probe's chunks."""
    from tests.test_templates import write_set

    write_set(tmp / "sets", targets=[["he", "she"], ["the man", "the woman"]],
              attributes={"male": ["pilot", "engineer"], "female": ["nurse", "dancer"]},
              templates=["[TARGET] is [A/AN] [ATTRIBUTE].", "[TARGET] works as [A/AN] [ATTRIBUTE].",
                         "[TARGET] became [A/AN] [ATTRIBUTE] ."])
    texts = tmp / "texts.csv"
    pd.DataFrame({"id": [f"t{i}" for i in range(len(CF_TEXTS))], "language": "en", "text": CF_TEXTS}).to_csv(
        texts, index=False)
    words = ["good", "bad", "kind", "cruel", "happy"]
    fair = tmp / "fair.csv"
    pd.DataFrame([{"text": f"{['the man', 'the woman', 'he', 'she', 'my friend', 'the child'][i % 6]} was "
                           f"{words[(i // 6) % 5]} at {['work', 'home', 'school'][i % 3]}",
                   "label": int(words[(i // 6) % 5] in ("good", "kind", "happy")),
                   "gender": ["male", "female"][i % 2]} for i in range(30)]).to_csv(fair, index=False)
    causal = [str(p) for p in models.values() if "llama" in p.name or "gpt2" in p.name]
    heads = [str(p) for p in models.values() if str(p) not in causal]
    stats = {"n_resamples": 40, "n_permutations": 40}
    probes = [
        {"probe": "templates", "data": str(tmp / "sets"), "chunk_size": 5},
        {"probe": "counterfactual", "data": str(texts), "chunk_size": 2},
        {"probe": "counterfactual", "name": "counterfactual_gen", "data": str(texts), "chunk_size": 3,
         "models": causal, "options": {"generate": True, "max_new_tokens": 3, "num_samples": 2}},
        {"probe": "classifier_fairness", "name": "fairness_zero_shot", "data": str(fair), "chunk_size": 7,
         "models": causal, "options": {"prompt": "{text}. It was", "label_words": {0: " bad", 1: " good"}, **stats}},
        {"probe": "representation", "chunk_size": 16,
         "options": {"max_items": 60, "folds": 2, "n_controls": 1, "n_permutations": 5}},
    ]
    if heads:
        probes.append({"probe": "classifier_fairness", "data": str(fair), "chunk_size": 7, "models": heads,
                       "options": stats})
    probes.sort(key=lambda p: p.get("name", p["probe"]) != first)
    cfg = {"seed": 3, "models": [{"name": str(p), "label": label, "device": "cpu"} for label, p in models.items()],
           "probes": probes, "report": {"enabled": False}}
    p = tmp / "audit.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


def assert_same_items(a: RunDir, b: RunDir) -> None:
    """:func:`assert_same_run` plus the probes' info (exclusions, top items, generation settings)."""
    assert probe_folders(a) == probe_folders(b)
    assert_same_run(a, b)
    for name in probe_folders(a):
        sa, sb = RunView(a).probe(name).summary, RunView(b).probe(name).summary
        assert sa["info"] == sb["info"], name
        assert sa["warnings"] == sb["warnings"], name


@pytest.mark.slow
def test_two_process_run_of_templates_counterfactual_fairness_equals_single_process(
    tmp_path: Path, llama_path: Path, bert_classifier_path: Path
) -> None:
    cfg = item_probe_config(tmp_path, {"llama": llama_path, "cls": bert_classifier_path})
    single = taudit(cfg, tmp_path / "runs", "one")
    assert single.returncode == 0, single.stderr[-3000:]
    multi = taudit(cfg, tmp_path / "runs", "two", nproc=2)
    assert multi.returncode == 0, multi.stderr[-3000:]
    expected = {"llama": ["counterfactual", "counterfactual_gen", "fairness_zero_shot", "representation", "templates"],
                "cls": ["classifier_fairness", "counterfactual", "representation"]}  # templates: skipped on a classifier
    for label, names in expected.items():
        a, b = RunDir(tmp_path / "runs" / f"one-{label}"), RunDir(tmp_path / "runs" / f"two-{label}")
        assert a.manifest()["status"] == b.manifest()["status"] == "complete"
        assert b.manifest()["distributed"]["world_size"] == 2
        assert probe_folders(a) == names
        assert_same_items(a, b)
        assert not any((b.probe_dir(n) / "partial").exists() for n in names)
    llama = RunDir(tmp_path / "runs" / "two-llama")
    assert len(RunView(llama).probe("templates").items()[0]) == 24 and len(RunView(llama).probe("fairness_zero_shot").items()[0]) == 30
    cf = RunView(llama).probe("counterfactual").items()[0]
    assert cf["id"].tolist() == [f"t{i}" for i in range(len(CF_TEXTS))]  # chunk order kept, unswapped texts too
    assert (~cf["swapped"]).sum() == 2
    # the causal template effect is centred over every chunk's items of a template and target pair
    tpl = RunView(llama).probe("templates").items()[0]
    for _, g in tpl.groupby(["template_id", "pair"]):
        np.testing.assert_allclose(g["effect"], g["preference"] - g["preference"].mean(), atol=1e-9)
    assert RunView(llama).probe("counterfactual_gen").items()[0]["continuation_original"].notna().sum() == len(CF_TEXTS) - 2


@pytest.mark.slow
def test_killed_rank_in_counterfactual_rerun_completes_without_loss(tmp_path: Path, llama_path: Path) -> None:
    cfg = item_probe_config(tmp_path, {"llama": llama_path}, first="counterfactual")
    ref, rd = crash_and_rerun(cfg, tmp_path / "runs", "counterfactual")
    items = RunView(rd).probe("counterfactual").items()[0]
    assert items["id"].tolist() == [f"t{i}" for i in range(len(CF_TEXTS))]  # nothing lost or duplicated
    assert_same_items(ref, rd)


@pytest.mark.slow
def test_killed_rank_in_representation_rerun_completes_without_loss(tmp_path: Path, llama_path: Path) -> None:
    """The hidden states are sharded and checkpointed like any item probe's scores: rank 1 dies
    after its first chunk, the rerun completes, and the probes over every layer equal a
    one-process run's."""
    cfg = item_probe_config(tmp_path, {"llama": llama_path}, first="representation")
    ref, rd = crash_and_rerun(cfg, tmp_path / "runs", "representation")
    assert len(RunView(rd).probe("representation").items()[0]) == 3  # one row per layer: embeddings + 2
    assert_same_items(ref, rd)


# --------------------------------------------------------------------------------------------
# the abort at exit, a rank that raises, a rank that dies, one process per run directory
# --------------------------------------------------------------------------------------------

#: collectives that take tensors made in Python: a gloo worker thread may drop such a tensor while
#: the interpreter is finalising, which aborts the process (audit/distributed.py's docstring)
TENSOR_COLLECTIVES = ("all_reduce", "broadcast(", "broadcast_object_list", "all_gather", "gather(", "scatter",
                      "reduce(", "reduce_scatter", "all_to_all", "send(", "recv(", "isend", "irecv")


def test_no_collective_takes_a_tensor_made_in_python() -> None:
    offenders = []
    for folder in ("audit", "probes", "reports", "dashboard"):
        for path in (REPO / folder).rglob("*.py"):
            for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                code = line.split("#", 1)[0]
                if "distributed." in code and any(f".{c}" in code for c in TENSOR_COLLECTIVES):
                    offenders.append(f"{path.relative_to(REPO)}:{n}: {line.strip()}")
    assert not offenders, offenders


@pytest.mark.slow
def test_rank_that_raises_mid_probe_ends_the_job_with_a_clear_error_on_both_ranks(
    tmp_path: Path, llama_path: Path
) -> None:
    cfg = write_config(tmp_path, {"llama": llama_path})
    run = taudit(cfg, tmp_path / "runs", "raise", nproc=2, TAUDIT_FAIL_RANK="1", TAUDIT_FAIL_AFTER_CHUNKS="1",
                 TAUDIT_FAIL_MODE="raise")
    assert run.returncode != 0
    err = run.stderr
    # rank 1 says what it met, rank 0 names rank 1 and the probe; no abort, no hang (timeout=600)
    assert "rank 1: probe crows_pairs failed: RuntimeError: injected fault on rank 1" in err, err[-3000:]
    rank0 = [ln for ln in err.splitlines() if ln.strip().startswith("error: crows_pairs:")]
    assert len(rank0) == 1 and "scoring failed on rank 1: RuntimeError: injected fault on rank 1" in rank0[0], err[-3000:]
    assert "SIGABRT" not in err and "terminate called" not in err
    rd = RunDir(tmp_path / "runs" / "raise")
    probes = rd.manifest()["probes"]
    assert probes["crows_pairs"]["status"] == "failed" and "rank 1" in probes["crows_pairs"]["error"]
    # rank 1's first chunk, written before it raised, is kept for a rerun
    assert (rd.probe_dir("crows_pairs") / "partial" / "chunk-00001.parquet").is_file()
    rerun = taudit(cfg, tmp_path / "runs", "raise", nproc=2)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert rd.manifest()["status"] == "complete"


@pytest.mark.slow
def test_killed_rank_is_named_with_its_probe_by_rank_0_and_by_the_rerun(tmp_path: Path, llama_path: Path) -> None:
    cfg = write_config(tmp_path, {"llama": llama_path})
    crashed = taudit(cfg, tmp_path / "runs", "kill", nproc=2, TAUDIT_FAIL_RANK="1", TAUDIT_FAIL_AFTER_CHUNKS="1")
    assert crashed.returncode != 0
    errors = [ln for ln in crashed.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, crashed.stderr[-3000:]
    assert "rank 1 (pid" in errors[0] and "stopped during 'crows_pairs: scoring'" in errors[0], errors
    assert "rerun the same command" in errors[0]
    rerun = taudit(cfg, tmp_path / "runs", "kill", nproc=2)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "the previous attempt's rank 1 (pid" in rerun.stderr
    history = RunDir(tmp_path / "runs" / "kill").manifest()["history"]
    assert history[0]["status"] in ("interrupted", "failed")
    assert any("rank 1" in line and "crows_pairs" in line for line in history[1]["lost_ranks"])


def test_second_run_on_the_same_run_directory_is_refused_at_once(tmp_path: Path, llama_path: Path) -> None:
    import signal
    import time

    from audit.runlock import RunLock

    cfg = write_config(tmp_path, {"llama": llama_path})
    e = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    cli = [sys.executable, "-m", "audit.cli", "run", str(cfg), "--out", str(tmp_path / "runs"), "--run-id", "same", "-q"]
    first = subprocess.Popen(cli, env=e, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lock = RunLock(tmp_path / "runs" / "same")
    deadline = time.monotonic() + 300
    while lock.holder().get("pid") != first.pid:  # the first run holds the lock: freeze it there
        assert first.poll() is None and time.monotonic() < deadline, "the first run never took the lock"
        time.sleep(0.05)
    os.kill(first.pid, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        second = subprocess.run(cli, env=e, cwd=REPO, capture_output=True, text=True, timeout=300)
        waited = time.monotonic() - t0
    finally:
        os.kill(first.pid, signal.SIGCONT)
    out, err = first.communicate(timeout=600)
    assert second.returncode == 2
    assert f"is in use by pid {first.pid} on " in second.stderr, second.stderr
    assert waited < 120  # refused at once, not after waiting for the first run
    assert first.returncode == 0, err[-3000:]
    assert RunDir(tmp_path / "runs" / "same").manifest()["status"] == "complete"
    # the kernel released the lock with the process: a third run takes it (nothing to redo)
    third = subprocess.run(cli, env=e, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert third.returncode == 0, third.stderr[-3000:]


def test_lock_is_released_when_its_holder_is_killed(tmp_path: Path) -> None:
    import json
    import signal

    from audit.runlock import RunDirBusy, RunLock

    (tmp_path / "manifest.json").write_text(json.dumps({"history": [{"status": "interrupted", "pid": 1},
                                                                    {"status": "running", "pid": 4242, "host": "h1",
                                                                     "started_at": "t0"}]}))
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from audit.runlock import RunLock; "
                               f"lock = RunLock({str(tmp_path)!r}); lock.acquire(); print('held', flush=True); "
                               "time.sleep(600)"],
                              env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    with pytest.raises(RunDirBusy, match="in use by pid 4242 on h1 [(]since t0[)]"):  # the manifest's running attempt
        RunLock(tmp_path).acquire()
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait(timeout=60)
    with RunLock(tmp_path):  # stale-lock safe: no cleanup needed after SIGKILL
        with pytest.raises(RunDirBusy):  # and held again while this block runs
            RunLock(tmp_path).acquire()
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]  # the lock adds no file
