"""Determinism: the same config and seed, run twice in two processes (with different Python hash
seeds, so nothing may depend on set or dict-of-str iteration order), gives identical item tables
and summaries on CPU — including the probes that sample (bootstrap CIs, permutation tests, sampled
generation). The manifest records what a third person needs to reproduce the run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from audit.models import file_sha256
from audit.rundir_view import RunView
from audit.store import RunDir
from tests.test_bold import GENDER, RELIGION
from tests.test_distributed import REPO, pairs_csv, probe_folders
from tests.test_stereoset import INTER, INTRA, write_dataset

#: summary fields that legitimately differ between two runs
VOLATILE = {"finished_at", "duration_s"}


def write_config(tmp: Path, model: Path) -> tuple[Path, dict[str, list[Path]]]:
    prompts = tmp / "bold"
    prompts.mkdir()
    (prompts / "gender_prompt.json").write_text(json.dumps(GENDER), encoding="utf-8")
    (prompts / "religious_ideology_prompt.json").write_text(json.dumps(RELIGION), encoding="utf-8")
    swaps = tmp / "my_swaps.csv"  # a user's own swap list: must be hashed with the data
    swaps.write_text("language,category,type,group_a,term_a,group_b,term_b\n"
                     "en,gender,pronoun,male,he,female,she\nen,gender,pronoun,male,his,female,her\n"
                     "en,gender,noun,male,man,female,woman\n", encoding="utf-8")
    texts = tmp / "texts.csv"
    pd.DataFrame({"id": ["t1", "t2", "t3"], "language": "en", "category": "gender",
                  "text": ["he said the man was kind", "his work is good today", "the man is smart at home"]}
                 ).to_csv(texts, index=False)
    files = {
        "crows_pairs": [pairs_csv(tmp / "pairs.csv", n=30)],
        "stereoset": [write_dataset(tmp / "dev.json")],
        "bold": sorted(prompts.glob("*_prompt.json")),
        "counterfactual": [texts, swaps],
    }
    cfg = {
        "seed": 7,
        "models": [{"name": str(model), "device": "cpu"}],  # the claim is for CPU (a GPU would be picked)
        "probes": [
            {"probe": "crows_pairs", "data": str(files["crows_pairs"][0]), "chunk_size": 7},
            {"probe": "stereoset", "data": str(files["stereoset"][0]), "chunk_size": 2},
            {"probe": "seat", "options": {"n_bootstrap": 200}},  # built-in tests: exact permutations + bootstrap
            {"probe": "bold", "data": str(prompts), "chunk_size": 3,
             "options": {"max_new_tokens": 6, "do_sample": True, "temperature": 1.0}},
            {"probe": "counterfactual", "data": str(texts),
             "options": {"swaps": str(swaps), "generate": True, "num_samples": 2, "max_new_tokens": 4}},
        ],
        "report": {"enabled": False},
    }
    p = tmp / "audit.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p, files


def run(cfg: Path, out: Path, run_id: str, hash_seed: str) -> RunDir:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO),
           "PYTHONHASHSEED": hash_seed}
    cmd = [sys.executable, "-m", "audit.cli", "run", str(cfg), "--out", str(out), "--run-id", run_id, "-q"]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert r.returncode == 0, r.stderr[-3000:]
    return RunDir(out / run_id)


@pytest.mark.slow
def test_same_seed_same_results_and_the_manifest_says_how(tmp_path: Path, llama_path: Path) -> None:
    cfg, files = write_config(tmp_path, llama_path)
    a = run(cfg, tmp_path / "runs", "a", hash_seed="1")
    b = run(cfg, tmp_path / "runs", "b", hash_seed="2")
    names = ["bold", "counterfactual", "crows_pairs", "seat", "stereoset"]
    assert probe_folders(a) == probe_folders(b) == names
    for name in names:
        ia, ib = RunView(a).probe(name).items()[0], RunView(b).probe(name).items()[0]
        assert len(ia) > 0
        pd.testing.assert_frame_equal(ia, ib, check_exact=True)
        sa, sb = RunView(a).probe(name).summary, RunView(b).probe(name).summary
        assert sa["status"] == "complete"
        assert {k: v for k, v in sa.items() if k not in VOLATILE} == {k: v for k, v in sb.items() if k not in VOLATILE}
    # the sampling really sampled (a broken generator giving "" everywhere would also be "identical")
    cont = RunView(a).probe("bold").items()[0]["continuation"]
    assert cont.str.len().gt(0).all() and cont.nunique() > 1
    assert RunView(a).probe("crows_pairs").metrics["pct_stereotype"].ci_low < RunView(a).probe("crows_pairs").metrics["pct_stereotype"].ci_high

    ma, mb = a.manifest(), b.manifest()
    assert ma["status"] == mb["status"] == "complete"
    # config as run and the seed
    raw = yaml.safe_load(cfg.read_text())
    assert ma["seed"] == 7 and ma["config"]["seed"] == 7 and ma["config"] == mb["config"]
    assert [p["probe"] for p in ma["config"]["probes"]] == [p["probe"] for p in raw["probes"]]
    assert ma["config"]["probes"][3]["options"]["do_sample"] is True
    # model identity: weights and tokenizer files by hash
    model = ma["model"]
    assert model["weights_sha256"] == {"model.safetensors": file_sha256(llama_path / "model.safetensors")}
    assert model["files_sha256"]["tokenizer.json"] == file_sha256(llama_path / "tokenizer.json")
    assert model["files_sha256"]["config.json"] == file_sha256(llama_path / "config.json")
    assert model["kind"] == "causal-lm" and model["dtype"] == "float32" and model["device"] == "cpu"
    assert model == mb["model"]
    # dataset identity: every file, the user's swap list included, with its own row count
    rows = {files["crows_pairs"][0]: 30, files["stereoset"][0]: len(INTRA) + len(INTER),
            files["bold"][0]: 5, files["bold"][1]: 3, files["counterfactual"][0]: 3, files["counterfactual"][1]: 3}
    for name, paths in files.items():
        ds = ma["datasets"][name]
        assert [d["path"] for d in ds] == [str(p) for p in paths]
        for d, p in zip(ds, paths, strict=True):
            assert d["sha256"] == file_sha256(p) and d["bytes"] == p.stat().st_size and d["rows"] == rows[p], d
    seat = ma["datasets"]["seat"]
    assert len(seat) == 4 and all(len(d["sha256"]) == 64 and d["rows"] > 8 for d in seat)
    assert ma["datasets"] == mb["datasets"]
    # versions, determinism settings, threads, hardware, the variables that change them
    env = ma["environment"]
    assert {"python", "torch", "transformers", "tokenizers", "numpy", "transformer-audit"} <= set(env["versions"])
    assert all(env["versions"][k] for k in ("python", "torch", "transformers", "numpy"))
    assert env["torch"]["deterministic_algorithms"] is False and "cudnn_benchmark" in env["torch"]
    assert env["hardware"]["torch_threads"] == 1 and env["hardware"]["cpu_count"] and env["hardware"]["host"]
    assert env["env"]["OMP_NUM_THREADS"] == "1"
    assert (env["env"]["PYTHONHASHSEED"], mb["environment"]["env"]["PYTHONHASHSEED"]) == ("1", "2")
    assert env["argv"][1:3] == ["run", str(cfg)]
    assert [h["status"] for h in ma["history"]] == ["complete"]
