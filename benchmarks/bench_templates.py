"""The ``templates`` and ``counterfactual`` probes end to end on the demo models, with timings.

* ``templates`` on ``smollm2-135m``: every built-in English and Turkish set (the default audit's
  work), summary and the per-language / per-set / per-pair breakdown;
* ``counterfactual`` on ``smollm2-135m`` (Δ log-likelihood, built-in en + tr texts), once more with
  ``generate: true`` on the English texts (VADER sentiment of sampled continuations), and on
  ``minilm-l6`` (embedding shift).

Times are wall-clock and process CPU seconds with torch limited to ``--threads`` threads (use 1 on a
shared CPU); the load average at start and end is recorded because the machine may be shared.

    .venv/bin/python benchmarks/bench_templates.py [--threads 1] [--only templates,cf,cf_gen,cf_minilm]

Writes ``benchmarks/results/templates_counterfactual.json``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from audit.models import load_model  # noqa: E402
from benchmarks.common import save  # noqa: E402
from probes import run_probe  # noqa: E402

RUNS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "templates": ("smollm2-135m", "templates", {}),
    "cf": ("smollm2-135m", "counterfactual", {}),
    "cf_gen": ("smollm2-135m", "counterfactual", {"generate": True, "language": "en"}),
    "cf_minilm": ("minilm-l6", "counterfactual", {}),
}


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--only", default=",".join(RUNS))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    handles: dict[str, Any] = {}
    out: dict[str, Any] = {"threads": args.threads, "runs": {}}
    for key in args.only.split(","):
        model, probe, opts = RUNS[key]
        if model not in handles:
            t0 = time.perf_counter()
            handles[model] = load_model(model, device="cpu")
            out.setdefault("load_s", {})[model] = round(time.perf_counter() - t0, 1)
        load0 = _load()
        t0, c0 = time.perf_counter(), time.process_time()
        r = run_probe(probe, handles[model], seed=0, progress=False, **opts)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        rec = {
            "model": model, "probe": probe, "options": opts, "wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
            "load_avg_start": load0, "load_avg_end": _load(), "n_items": len(r.items),
            "summary": {k: v.to_dict() for k, v in r.summary.items()},
            "breakdown": r.breakdown[r.breakdown["group_by"] != "set_attribute"].to_dict(orient="records"),
            "warnings": r.warnings,
        }
        if "generation" in r.info:
            rec["generation"] = r.info["generation"]
        out["runs"][key] = rec
        print(f"{key}: {probe} on {model}: {len(r.items)} items, {wall:.1f} s wall, {cpu:.1f} s CPU", flush=True)
        for k, v in r.summary.items():
            print(f"  {k} = {v.value:.3f} [{v.ci_low}, {v.ci_high}] n={v.n} p={v.p_value}", flush=True)
        path = save("templates_counterfactual", out)
    print("wrote", path)


if __name__ == "__main__":
    main()
