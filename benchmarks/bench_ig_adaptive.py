"""Adaptive Integrated Gradients on SmolLM2-135M: does every target meet the 5 % completeness bar, at
what cost against today's fixed 32-step run, and which quadrature rule gets there cheaper?

Jobs (the ones of issue 16, default options unless named):

* **next token** of four texts in one call (the model's top next token, probability);
* **generation**, 8 greedy tokens of "The nurse said that the doctor", every token attributed to the
  source and the earlier generated tokens (inseq semantics, probability: the default target);
* **generation, Captum semantics**: earlier generated tokens held fixed, log-probability.

Each job runs, in the same process and in this order: fixed 32-point Gauss–Legendre
(``adaptive: false``, the behaviour before adaptive IG), the default options (adaptive
Clenshaw–Curtis from 32 points: 32 → 63 → 125 → 249, every gradient reused), adaptive
Gauss–Legendre (32 → 64 → 128 → 256: no gradient reused) and the adaptive composite trapezoid rule
(nested like Clenshaw–Curtis). Per target the table
gives the final rule's points (``steps``), the gradients taken (``evaluations``), the gap and
``met``; per job the wall time and its ratio to the fixed run.

    .venv/bin/python benchmarks/bench_ig_adaptive.py [--threads 1] [--no-markdown]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from audit.explain import explain  # noqa: E402
from audit.models import load_model  # noqa: E402
from benchmarks.common import RESULTS_DIR, ROOT, save, table  # noqa: E402

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
    "adaptive Clenshaw-Curtis (default options)": {},
    "adaptive GL": {"n_steps": 32, "integration": "gausslegendre"},
    "adaptive trapezoid": {"n_steps": 32, "integration": "trapezoid"},
}
DEFAULT_RUN = "adaptive Clenshaw-Curtis (default options)"
RESULTS_MD = ROOT / "benchmarks" / "RESULTS.md"
SECTION = "## Adaptive Integrated Gradients (`benchmarks/bench_ig_adaptive.py`)"


def run(handle: Any, runs: dict[str, dict[str, Any]], keep: Any) -> list[dict[str, Any]]:
    """Every job under every run; ``keep(rows)`` after each run (a stopped benchmark keeps its rows)."""
    rows: list[dict[str, Any]] = []
    for job, (texts, target) in JOBS.items():
        explain(handle, texts[:1], "ig", target, n_steps=2, adaptive=False)  # warm-up (allocations)
        base_s = None
        for label, opts in runs.items():
            t0, c0 = time.perf_counter(), time.process_time()
            a = explain(handle, texts, "ig", target, **opts)
            dt, cpu = time.perf_counter() - t0, time.process_time() - c0
            base_s = cpu if base_s is None else base_s
            for e in a.examples:
                c = e.completeness or {}
                for k, name in enumerate(e.target_names):
                    rows.append({"job": job, "run": label, "text": e.text, "target": name, "steps": c["steps"][k],
                                 "evaluations": c["evaluations"][k], "gap": c["gap"][k], "met": c["met"][k],
                                 "seconds": dt, "cpu_s": cpu, "× fixed 32": cpu / base_s})
            worst = max(r["gap"] for r in rows if r["job"] == job and r["run"] == label)
            print(f"{job:42s} {label:26s} {dt:6.1f} s, {cpu:6.1f} CPU s ({cpu / base_s:.2f}× fixed)  worst gap {worst:.2%}")
            keep(rows)
    return rows


def vs_inseq(handle: Any, reps: int = 1) -> dict[str, Any]:
    """Generation IG, 8 tokens, 32 Gauss–Legendre steps, probability target, source and earlier
    generated tokens attributed (inseq's semantics), against inseq's ``integrated_gradients`` on the
    same tokens (our prefix token prepended, our continuation forced), after a first run of ours that
    warms up; the two alternate ``reps`` times and the fastest of each is kept. inseq starts from its
    own baseline. Times are CPU seconds of this process (the machine is shared)."""
    from importlib.metadata import version

    import inseq
    from scipy import stats

    target = {"mode": "generate", "max_new_tokens": 8}
    fixed = explain(handle, GEN_PROMPT, "ig", target, n_steps=32, adaptive=False)
    e = fixed[0]
    tok = handle.tokenizer
    prompt = tok.decode([int(tok.convert_tokens_to_ids(e.tokens[0]))]) + GEN_PROMPT
    model = inseq.load_model(handle.model, "integrated_gradients", tokenizer=tok)
    # inseq is given the continuation; "forced" gives it to ours too (the same job), "greedy" lets
    # ours generate it (8 greedy steps inside the timing)
    forced = {"mode": "generate", "continuation": e.info["continuation"]}
    times: dict[str, list[float]] = {"ours, fixed 32 GL, forced": [], "ours, fixed 32 GL, greedy": [], "inseq": []}
    res: Any = None
    for _ in range(reps):
        for label in times:
            t0 = time.process_time()
            if label == "inseq":
                res = model.attribute(prompt, generated_texts=prompt + e.info["continuation"], n_steps=32,
                                      show_progress=False, skip_special_tokens=False)
            else:
                explain(handle, GEN_PROMPT, "ig", forced if "forced" in label else target, n_steps=32, adaptive=False)
            times[label].append(time.process_time() - t0)
            print(f"  {label:28s} {times[label][-1]:6.1f} CPU s")
    m = res.sequence_attributions[0].target_attributions.detach().float().numpy()
    m = m.sum(-1) if m.ndim == 3 else m
    ours_m = np.asarray(e.token_scores).T
    rho = None
    if m.shape == ours_m.shape:
        ok = np.isfinite(m) & np.isfinite(ours_m)
        ok[0] = False  # the prefix token: held fixed in ours
        rho = float(stats.spearmanr(m[ok], ours_m[ok]).statistic)
    best = {k: min(v) for k, v in times.items()}
    return {"inseq_version": version("inseq"), "continuation": e.info["continuation"], "seconds": best,
            "all_seconds": times, "inseq_over_ours_forced": best["inseq"] / best["ours, fixed 32 GL, forced"],
            "inseq_over_ours_greedy": best["inseq"] / best["ours, fixed 32 GL, greedy"],
            "spearman_vs_inseq": rho, "ours_fixed_worst_gap": float(np.nanmax(fixed.completeness_gaps()))}


def backward_batching(handle: Any, rows: int = 16, reps: int = 1) -> dict[str, Any]:
    """The K backward passes of one generation forward (8 tokens, ``rows`` path points): K sequential
    ``autograd.grad`` calls (what IG does) vs one vmapped call (``is_grads_batched=True``) vs folding
    the K targets into the batch with each row cut after its token (one forward of K × rows rows,
    one backward). Fastest of ``reps`` in CPU seconds; max |difference| of the gradients against
    sequential."""
    from audit.explain import prepare
    from audit.explain.targets import embed_ids

    p = prepare(handle, [GEN_PROMPT], {"mode": "generate", "max_new_tokens": 8})[0]
    with torch.no_grad():
        e, e0 = embed_ids(handle, p.ids[None]), embed_ids(handle, p.baseline_ids[None])
    a = torch.linspace(0, 1, rows)[:, None, None]
    k_n, pos = p.n_targets, p.target_positions or []

    def sequential() -> torch.Tensor:
        x = (e0 + a * (e - e0)).detach().requires_grad_(True)
        y = p.fn(x, p.attn()[None].expand(rows, -1), *(t.expand(rows, -1) for t in p.aux))
        return torch.stack([torch.autograd.grad(y[:, k].sum(), x, retain_graph=k < k_n - 1)[0] for k in range(k_n)])

    def vmapped() -> torch.Tensor:
        x = (e0 + a * (e - e0)).detach().requires_grad_(True)
        y = p.fn(x, p.attn()[None].expand(rows, -1), *(t.expand(rows, -1) for t in p.aux))
        eye = torch.eye(k_n)[:, None, :].expand(k_n, rows, k_n).contiguous()
        return torch.autograd.grad(y, x, grad_outputs=eye, is_grads_batched=True)[0]

    def folded() -> torch.Tensor:
        t_max = max(pos)
        x = torch.zeros(k_n * rows, t_max, e.shape[-1])
        attn = torch.zeros(k_n * rows, t_max, dtype=torch.long)
        for k, length in enumerate(pos):
            x[k * rows : (k + 1) * rows, :length] = (e0 + a * (e - e0))[:, :length]
            attn[k * rows : (k + 1) * rows, :length] = 1
        aux = tuple(t[0].repeat_interleave(rows)[:, None] for t in p.aux)
        x.requires_grad_(True)
        (g,) = torch.autograd.grad(p.fn(x, attn, *aux).sum(), x)
        return torch.nn.functional.pad(g.reshape(k_n, rows, t_max, -1), (0, 0, 0, p.length - t_max))

    out: dict[str, Any] = {"rows": rows, "targets": k_n, "tokens": p.length}
    with torch.enable_grad():
        ref = sequential()
        for name, fn in (("sequential", sequential), ("is_grads_batched", vmapped), ("folded, cut rows", folded)):
            g = fn()
            ts = []
            for _ in range(reps):
                t0 = time.process_time()
                fn()
                ts.append(time.process_time() - t0)
            out[name] = {"seconds": min(ts), "max_abs_diff": float((g - ref).abs().max())}
            print(f"  {name:18s} {min(ts):6.2f} s  max |diff| {out[name]['max_abs_diff']:.1e}")
    return out


def _esc(v: Any) -> Any:
    return v.replace("|", "\\|") if isinstance(v, str) else v


def write_markdown(payload: dict[str, Any]) -> None:
    rows = payload["rows"]
    summary: list[dict[str, Any]] = []
    for job in JOBS:
        for label in RUNS:
            mine = [r for r in rows if r["job"] == job and r["run"] == label]
            if mine:
                summary.append({"job": job, "run": label, "seconds": mine[0]["seconds"], "CPU s": mine[0]["cpu_s"],
                                "× fixed 32": mine[0]["× fixed 32"], "gradients": sum(r["evaluations"] for r in mine),
                                "worst gap": max(r["gap"] for r in mine),
                                "targets met": f"{sum(r['met'] for r in mine)}/{len(mine)}"})
    default = [{k: _esc(v) for k, v in r.items() if k not in ("job", "run", "× fixed 32")}
               for r in rows if r["run"] == payload["default_run"]]
    lines = [SECTION, "", f"Measured {payload['date']} on {payload['machine']['cpu_count']} CPUs, torch threads "
             f"{payload['threads']}, load average {payload['load_start']} → {payload['load_end']} (1, 5, 15 min): "
             "the machine was shared by other agents' jobs (our process got a small share of a core), so the "
             "cost ratio × fixed 32 is one of CPU seconds of this process (all runs of a job are in the same "
             "process, one after another); wall seconds are given but mostly measure the load. Model "
             "smollm2-135m (real weights), baseline token <\\|endoftext\\|> (unk), tolerance 5 %, max_steps 256. "
             "Command: `benchmarks/bench_ig_adaptive.py --threads 1`.",
             "", "Per job (gradients = gradient evaluations over all its targets):", "",
             table(summary, ["job", "run", "seconds", "CPU s", "× fixed 32", "gradients", "worst gap", "targets met"]),
             "",
             f"Per target with the default options ({payload['default_run']}); seconds and CPU seconds are the "
             "job's:", "",
             table(default, ["text", "target", "steps", "evaluations", "gap", "met", "seconds", "cpu_s"]), "",
             "Refined (more than the first rule's points), each alone while the others kept theirs: "
             + "; ".join(f"{job}: {sum(r['steps'] > min(x['steps'] for x in rows) for r in mine)} of {len(mine)}"
                         for job in JOBS if (mine := [r for r in rows if r["job"] == job and
                                                      r["run"] == payload["default_run"]]))
             + ". Gradients taken twice by the nested rule: "
             + f"{sum(r['evaluations'] - r['steps'] for r in rows if r['run'] == payload['default_run'])}. "
             "Test: `tests/test_explain.py::"
             "test_smollm2_default_ig_meets_its_bar` (slow) asserts gap ≤ 5 % or met: false at the largest rule "
             "for these jobs.", ""]
    speed_path = RESULTS_DIR / "ig_generation_speed.json"
    if speed_path.exists():
        sp = json.loads(speed_path.read_text())
        ins, bw = sp["inseq"], sp["backward"]
        lines += [f"Generation IG speed ({sp['date']}, torch threads {sp['threads']}, load average "
                  f"{sp['load_start']} → {sp['load_end']}; `bench_ig_adaptive.py --part speed`): 8 tokens "
                  f"({_esc(repr(ins['continuation']))}), 32 Gauss–Legendre steps, probability target, source and "
                  "earlier generated tokens attributed:", "",
                  table([{"implementation": k, "CPU seconds": v} for k, v in ins["seconds"].items()],
                        ["implementation", "CPU seconds"]), "",
                  f"inseq {ins['inseq_version']} ÷ ours = {ins['inseq_over_ours_forced']:.2f} on the same job (the "
                  f"continuation given to both; goal 1.3: {'reached' if ins['inseq_over_ours_forced'] >= 1.3 else 'not reached'}), "
                  f"{ins['inseq_over_ours_greedy']:.2f} with ours also generating the 8 tokens inside its time; "
                  f"fastest of {len(next(iter(ins['all_seconds'].values())))} alternating runs each; "
                  f"Spearman of the two matrices {ins['spearman_vs_inseq']:.2f} (inseq starts from its own baseline, ours from the unk "
                  "token).", "",
                  "Ours runs one row per (path point, group of targets): generation targets are grouped by "
                  "position (`audit.explain.targets.position_groups`, the contiguous groups that minimise Σ longest "
                  "prefix × (1 + targets)) and each row is cut after the longest prefix its group reads, so a "
                  "target's backward pass covers the tokens it reads, not the whole continuation; the greedy "
                  "continuation comes from the model's KV-cached `generate`. For reference, three ways to run the "
                  f"{bw['targets']} backward passes of one full-length forward over {bw['rows']} path points "
                  f"({bw['tokens']} tokens):", "",
                  table([{"backward": k, "CPU seconds": v["seconds"], "max \\|diff\\| vs sequential": v["max_abs_diff"]}
                         for k, v in bw.items() if isinstance(v, dict)],
                        ["backward", "CPU seconds", "max \\|diff\\| vs sequential"]), ""]
    text = "\n".join(lines)
    old = RESULTS_MD.read_text(encoding="utf-8")
    pattern = re.compile(re.escape(SECTION) + r".*?(?=^## |\Z)", re.S | re.M)
    new = pattern.sub(lambda _: text + "\n", old) if pattern.search(old) else old.rstrip("\n") + "\n\n" + text + "\n"
    RESULTS_MD.write_text(new, encoding="utf-8")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-markdown", action="store_true")
    ap.add_argument("--part", choices=["adaptive", "speed"], default="adaptive",
                    help="adaptive: the gap/cost table; speed: generation IG vs inseq and backward batching")
    ap.add_argument("--reps", type=int, default=3, help="speed: alternations of ours and inseq (fastest kept)")
    ap.add_argument("--runs", nargs="+", choices=list(RUNS), default=list(RUNS), help="which rules to run")
    ap.add_argument("--markdown-only", action="store_true", help="rewrite the RESULTS.md section from results/")
    args = ap.parse_args()
    if args.markdown_only:
        write_markdown(json.loads((RESULTS_DIR / "ig_adaptive.json").read_text()))
        return 0
    torch.set_num_threads(args.threads)
    load0 = [round(x, 2) for x in os.getloadavg()]
    h = load_model("smollm2-135m", device="cpu")
    if args.part == "speed":
        speed = {"threads": args.threads, "load_start": load0, "inseq": vs_inseq(h, args.reps),
                 "backward": backward_batching(h, reps=args.reps), "load_end": [round(x, 2) for x in os.getloadavg()]}
        print(f"wrote {save('ig_generation_speed', speed)}")
        return 0
    def payload(rows: list[dict[str, Any]]) -> dict[str, Any]:
        return {"threads": args.threads, "load_start": load0, "load_end": [round(x, 2) for x in os.getloadavg()],
                "default_run": DEFAULT_RUN, "rows": rows}

    rows = run(h, {k: RUNS[k] for k in args.runs}, lambda r: save("ig_adaptive", payload(r)))
    path = save("ig_adaptive", payload(rows))
    print(f"wrote {path}")
    if not args.no_markdown:
        write_markdown(json.loads(path.read_text()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
