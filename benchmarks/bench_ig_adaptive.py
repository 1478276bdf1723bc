"""Adaptive Integrated Gradients on SmolLM2-135M: does every target meet the 5 % completeness bar, at
what cost against today's fixed 32-step run, and which quadrature rule gets there cheaper?

Jobs (the ones of issue 16, default options unless named):

* **next token** of four texts in one call (the model's top next token, probability);
* **generation**, 8 greedy tokens of "The nurse said that the doctor", every token attributed to the
  source and the earlier generated tokens (inseq semantics, probability: the default target);
* **generation, Captum semantics**: earlier generated tokens held fixed, log-probability.

Each job runs, in the same process and in this order: fixed 32-point Gauss–Legendre
(``adaptive: false``, the behaviour before adaptive IG), then adaptive from 32 points with
Gauss–Legendre (refines to 64, 128, …: no gradient reused), Clenshaw–Curtis (33 → 65 → 129 points,
every gradient reused) and the composite trapezoid rule (same nodes' reuse). Per target the table
gives the final rule's points (``steps``), the gradients taken (``evaluations``), the gap and
``met``; per job the wall time and its ratio to the fixed run.

    .venv/bin/python benchmarks/bench_ig_adaptive.py [--threads 1] [--no-markdown]
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from audit.explain import explain  # noqa: E402
from audit.models import load_model  # noqa: E402
from benchmarks.common import ROOT, save, table  # noqa: E402

TEXTS = ["Kadınlar genellikle evde", "The nurse said that", "The engineer fixed the", "My favourite food is"]
GEN_PROMPT = "The nurse said that the doctor"
JOBS: dict[str, tuple[list[str], dict[str, Any]]] = {
    "next token": (TEXTS, {}),
    "generation (8 tokens)": ([GEN_PROMPT], {"mode": "generate", "max_new_tokens": 8}),
    "generation (8 tokens), Captum semantics": ([GEN_PROMPT], {"mode": "generate", "max_new_tokens": 8,
                                                               "attribute_generated": False, "output": "logprob"}),
}
RUNS: dict[str, dict[str, Any]] = {
    "fixed 32 GL": {"adaptive": False, "n_steps": 32, "integration": "gausslegendre"},
    "adaptive GL": {"n_steps": 32, "integration": "gausslegendre"},
    "adaptive Clenshaw-Curtis": {"n_steps": 33, "integration": "clenshaw_curtis"},
    "adaptive trapezoid": {"n_steps": 33, "integration": "trapezoid"},
}
RESULTS_MD = ROOT / "benchmarks" / "RESULTS.md"
SECTION = "## Adaptive Integrated Gradients (`benchmarks/bench_ig_adaptive.py`)"


def run(handle: Any, runs: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for job, (texts, target) in JOBS.items():
        explain(handle, texts[:1], "ig", target, n_steps=2, adaptive=False)  # warm-up (allocations)
        base_s = None
        for label, opts in runs.items():
            t0 = time.perf_counter()
            a = explain(handle, texts, "ig", target, **opts)
            dt = time.perf_counter() - t0
            base_s = dt if base_s is None else base_s
            for e in a.examples:
                c = e.completeness or {}
                for k, name in enumerate(e.target_names):
                    rows.append({"job": job, "run": label, "text": e.text, "target": name, "steps": c["steps"][k],
                                 "evaluations": c["evaluations"][k], "gap": c["gap"][k], "met": c["met"][k],
                                 "seconds": dt, "× fixed 32": dt / base_s})
            worst = max(r["gap"] for r in rows if r["job"] == job and r["run"] == label)
            print(f"{job:42s} {label:26s} {dt:6.1f} s ({dt / base_s:.2f}× fixed)  worst gap {worst:.2%}")
    return rows


def _esc(v: Any) -> Any:
    return v.replace("|", "\\|") if isinstance(v, str) else v


def write_markdown(payload: dict[str, Any]) -> None:
    rows = payload["rows"]
    summary = []
    for job in JOBS:
        for label in RUNS:
            mine = [r for r in rows if r["job"] == job and r["run"] == label]
            if mine:
                summary.append({"job": job, "run": label, "seconds": mine[0]["seconds"],
                                "× fixed 32": mine[0]["× fixed 32"], "gradients": sum(r["evaluations"] for r in mine),
                                "worst gap": max(r["gap"] for r in mine),
                                "targets met": f"{sum(r['met'] for r in mine)}/{len(mine)}"})
    default = [{k: _esc(v) for k, v in r.items() if k not in ("job", "run", "× fixed 32")}
               for r in rows if r["run"] == payload["default_run"]]
    lines = [SECTION, "", f"Measured {payload['date']} on {payload['machine']['cpu_count']} CPUs, torch threads "
             f"{payload['threads']}, load average {payload['load_start']} → {payload['load_end']} (1, 5, 15 min): "
             "the machine was shared by other agents' jobs, so compare the ratios within a job (all runs of a "
             "job are in the same process, one after another), not the seconds across reports. Model "
             "smollm2-135m (real weights), baseline token <\\|endoftext\\|> (unk), tolerance 5 %, max_steps 256.",
             "", "Per job (gradients = gradient evaluations over all its targets):", "",
             table(summary, ["job", "run", "seconds", "× fixed 32", "gradients", "worst gap", "targets met"]), "",
             f"Per target with the default options ({payload['default_run']}); seconds is the job's:", "",
             table(default, ["text", "target", "steps", "evaluations", "gap", "met", "seconds"]), ""]
    text = "\n".join(lines)
    old = RESULTS_MD.read_text(encoding="utf-8")
    pattern = re.compile(re.escape(SECTION) + r".*?(?=^## |\Z)", re.S | re.M)
    new = pattern.sub(lambda _: text + "\n", old) if pattern.search(old) else old.rstrip("\n") + "\n\n" + text + "\n"
    RESULTS_MD.write_text(new, encoding="utf-8")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-markdown", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    load0 = [round(x, 2) for x in os.getloadavg()]
    h = load_model("smollm2-135m", device="cpu")
    rows = run(h, RUNS)
    from audit.explain import get_explainer

    d = get_explainer("ig").options
    default_run = next(k for k, v in RUNS.items() if v.get("integration") == d["integration"] and "adaptive" not in v)
    payload = {"threads": args.threads, "load_start": load0, "load_end": [round(x, 2) for x in os.getloadavg()],
               "default_run": default_run, "rows": rows}
    path = save("ig_adaptive", payload)
    print(f"wrote {path}")
    if not args.no_markdown:
        write_markdown({**payload, "date": time.strftime("%Y-%m-%d %H:%M"),
                        "machine": {"cpu_count": os.cpu_count()}})
    return 0


if __name__ == "__main__":
    sys.exit(main())
