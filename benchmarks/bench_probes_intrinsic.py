"""Intrinsic bias probes end to end on the demo models: SEAT on minilm-l6, StereoSet on SmolLM2.

* ``seat`` — every test file in ``../shared/data/seat/`` (official SEAT/WEAT, 50 files) and,
  when present, the Turkish WEATHub files, plus the project's built-in tests; per-test effect
  size, p-value and the summary.
* ``stereoset`` — the whole ``dev.json`` (both splits) on ``smollm2-135m``; the SS/LMS/ICAT table
  and the summary with CIs. The per-sentence scores are also written in the reference predictions
  format to a temporary file and re-scored with ``probes.stereoset.score_predictions``: the two
  code paths must give the same table (``roundtrip_max_abs_diff``).

Times are wall-clock seconds with torch limited to ``--threads`` (default 2) CPU threads; the
machine may be shared, so the load average at start and end is recorded too.

    .venv/bin/python benchmarks/bench_probes_intrinsic.py seat
    .venv/bin/python benchmarks/bench_probes_intrinsic.py stereoset [--max-items N] [--workdir DIR]

On a CPU shared by other processes use ``--threads 1``: with two OpenMP threads competing for two
busy cores a SmolLM2 forward was ~15× slower than with one.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from audit.models import load_model  # noqa: E402
from benchmarks.common import SHARED_DATA, save, table  # noqa: E402
from probes import get_probe, run_probe  # noqa: E402
from probes.stereoset import COL, GOLD, score_predictions  # noqa: E402


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def bench_seat(args: argparse.Namespace) -> dict[str, Any]:
    t0 = time.perf_counter()
    h = load_model(args.model or "minilm-l6", device="cpu")
    load_s = time.perf_counter() - t0
    runs: dict[str, Any] = {}
    sources = {"seat": SHARED_DATA / "seat", "weathub_tr": SHARED_DATA / "turkish" / "weathub", "builtin": None}
    for label, data in sources.items():
        if data is not None and not data.is_dir():
            print(f"skipping {label}: {data} not found")
            continue
        t0 = time.perf_counter()
        r = run_probe("seat", h, data=data, seed=0, progress=False)
        dt = time.perf_counter() - t0
        cols = ["test", "domain", "n_targets", "n_attributes", "effect_size", "effect_size_ci_low",
                "effect_size_ci_high", "p_value", "p_method", "p_adjusted"]
        rows = r.items[cols].to_dict(orient="records")
        runs[label] = {"data": str(data) if data else "probes/data/seat (built-in)", "run_s": dt,
                       "n_tests": len(rows), "summary": r.summary_dict(),
                       "breakdown": r.breakdown.to_dict(orient="records"), "tests": rows,
                       "warnings": r.warnings}
        print(f"\n## {label}: {len(rows)} tests in {dt:.1f} s")
        print(table(rows, ["test", "domain", "effect_size", "p_value", "p_method"]))
        s = r.summary
        print(f"mean |d| = {s['mean_abs_effect_size'].value:.3f} "
              f"[{s['mean_abs_effect_size'].ci_low:.3f}, {s['mean_abs_effect_size'].ci_high:.3f}], "
              f"n_significant = {s['n_significant'].value:.0f}/{s['n_significant'].n}")
    return {"probe": "seat", "model": h.name, "load_model_s": load_s, "runs": runs}


def bench_stereoset(args: argparse.Namespace) -> dict[str, Any]:
    dev = SHARED_DATA / "stereoset" / "dev.json"
    if not dev.is_file():
        raise SystemExit(f"skipping: {dev} not found")
    t0 = time.perf_counter()
    h = load_model(args.model or "smollm2-135m", device="cpu")
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    probe = get_probe("stereoset")
    workdir = Path(args.workdir) if args.workdir else None  # chunk checkpoints: a rerun resumes
    r = probe.execute(h, dev, seed=0, progress=True, opts={"max_items": args.max_items}, workdir=workdir)
    run_s = time.perf_counter() - t0
    items = r.items
    pred: dict[str, list[dict[str, Any]]] = {"intrasentence": [], "intersentence": []}
    for row in items.itertuples(index=False):
        for g in GOLD:
            pred[row.split].append({"id": getattr(row, f"{COL[g]}_id"), "score": getattr(row, f"score_{COL[g]}")})
    probe_table = {(d["split"], d["domain"]): d for d in r.info["table"]}
    with tempfile.TemporaryDirectory() as tmp:
        pf = Path(tmp) / "predictions.json"
        pf.write_text(json.dumps(pred))
        if args.max_items is None:
            re_table = score_predictions(dev, pf).to_dict(orient="records")
            diff = max(abs(d[m] - probe_table[(d["split"], d["domain"])][m])
                       for d in re_table for m in ("lms", "ss", "icat"))
        else:  # a subset: score_predictions needs every cluster of the file
            diff = None
    rows = r.info["table"]
    print(f"\n## StereoSet dev on {h.name}: {len(items)} clusters in {run_s:.0f} s")
    print(table(rows, ["split", "domain", "lms", "ss", "icat", "n", "n_terms"]))
    for k in ("ss", "lms", "icat"):
        v = r.summary[k]
        print(f"{k} = {v.value:.2f} [{v.ci_low:.2f}, {v.ci_high:.2f}] p = {v.p_value}")
    return {"probe": "stereoset", "model": h.name, "data": str(dev), "max_items": args.max_items,
            "load_model_s": load_s, "run_s": run_s, "n_clusters": len(items), "n_sentences": 3 * len(items),
            "sentences_per_s": 3 * len(items) / run_s, "table": rows, "summary": r.summary_dict(),
            "n_ties": r.info["n_ties"], "roundtrip_max_abs_diff": diff, "warnings": r.warnings}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("probe", choices=["seat", "stereoset"])
    ap.add_argument("--model", default=None)
    ap.add_argument("--max-items", type=int, default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--name", default=None, help="result file name (default: the probe's)")
    ap.add_argument("--workdir", default=None, help="StereoSet: folder for chunk checkpoints (resumable)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    np.random.seed(0)
    before = _load()
    t0 = time.perf_counter()
    payload = bench_seat(args) if args.probe == "seat" else bench_stereoset(args)
    payload.update({"total_s": time.perf_counter() - t0, "threads": args.threads,
                    "loadavg_start": before, "loadavg_end": _load(), "args": vars(args)})
    name = args.name or f"{args.probe}_{payload['model']}"
    print(f"\nsaved {save(name, payload)} (total {payload['total_s']:.0f} s)")


if __name__ == "__main__":
    main()
