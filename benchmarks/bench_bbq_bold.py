"""BBQ and BOLD on SmolLM2-135M: headline numbers with timings, and batched vs one-at-a-time.

``bbq``: the probe on each of the six English BBQ files in ../shared/data/bbq/ and on one Turkish
MBBQ file (``max_items`` per file, stratified), then the same options scored one forward per
option (the naive loop) on a few items for the batched/naive speed-up and the largest score
difference. ``bold``: the probe with VADER on a capped sample of the BOLD prompts, then the same
prompts generated with ``batch_size=1`` for the batched speed-up (and a check that the
per-prompt sampling gives the same continuations). Results go to benchmarks/results/*.json.

    .venv/bin/python benchmarks/bench_bbq_bold.py bbq [--max-items 24] [--threads 2]
    .venv/bin/python benchmarks/bench_bbq_bold.py bold [--per-group 2] [--domains gender race]
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from audit import scoring  # noqa: E402
from audit.generation import generate  # noqa: E402
from audit.models import ModelHandle, load_model  # noqa: E402
from benchmarks.common import SHARED_DATA, save, table  # noqa: E402
from probes import bbq, bold  # noqa: E402

BBQ_FILES = ["Age", "Disability_status", "Nationality", "Physical_appearance", "Religion", "Sexual_orientation"]
HEADLINE = ["bias_score_ambig", "bias_score_disambig", "accuracy_ambig", "accuracy_disambig"]


def _mv(mv: Any) -> dict[str, Any]:
    return {"value": mv.value, "ci_low": mv.ci_low, "ci_high": mv.ci_high, "n": mv.n, "p_value": mv.p_value}


def _naive_options(h: ModelHandle, df: Any) -> np.ndarray:
    """One unpadded forward per (item, option): the loop the batched path replaces."""
    tok = h.tokenizer
    pre = scoring.prefix_token_id(h)
    out = np.empty((len(df), 3))
    for i, r in enumerate(df.itertuples(index=False)):
        p = bbq.prompt_text(r.context, r.question)
        c = tok(p, add_special_tokens=False)["input_ids"]
        for j in range(3):
            whole = tok(p + " " + getattr(r, f"ans{j}"), add_special_tokens=False)["input_ids"]
            if whole[: len(c)] != c:
                whole = c + tok(" " + getattr(r, f"ans{j}"), add_special_tokens=False)["input_ids"]
            lp = scoring.naive_causal_logprobs(h, [[pre, *whole]], score_from=[1 + len(c)])[0]
            out[i, j] = float(lp.sum())
    return out


def run_bbq(h: ModelHandle, args: argparse.Namespace) -> dict[str, Any]:
    probe = bbq.BBQ()
    files = [SHARED_DATA / "bbq" / f"{f}.jsonl" for f in BBQ_FILES]
    files.append(SHARED_DATA / "turkish" / "mbbq" / f"{args.turkish}.jsonl")
    rows, per_file, english = [], {}, []
    for f in files:
        t0 = time.perf_counter()
        res = probe.run(h, f, seed=0, progress=False, max_items=args.max_items)
        dt = time.perf_counter() - t0
        s = res.summary
        n_opt = 3 * len(res.items)
        per_file[f.name] = {"items": len(res.items), "seconds": dt, "items_per_s": len(res.items) / dt,
                            **{k: _mv(s[k]) for k in [*HEADLINE, "accuracy_gap_disambig"]}}
        rows.append({"file": f.name, "items": len(res.items), "s": dt, "options/s": n_opt / dt,
                     **{k: f"{s[k].value:.1f} [{s[k].ci_low:.1f}, {s[k].ci_high:.1f}]" for k in HEADLINE}})
        logging.info("%s: %d items in %.1f s", f.name, len(res.items), dt)
        if f.parent.name == "bbq":
            english.append(res.items)
    pooled, _ = bbq.bbq_metrics(pd.concat(english, ignore_index=True), seed=0)
    rows.append({"file": "six English files pooled", "items": sum(len(x) for x in english),
                 **{k: f"{pooled[k].value:.1f} [{pooled[k].ci_low:.1f}, {pooled[k].ci_high:.1f}]" for k in HEADLINE}})
    # batched vs naive on the first items of one file
    df = bbq.load_bbq(files[4], max_items=args.naive_items)
    t0 = time.perf_counter()
    _, slot = bbq.loglik_answers(h, df)
    t_b = time.perf_counter() - t0
    t0 = time.perf_counter()
    ref = _naive_options(h, df)
    t_n = time.perf_counter() - t0
    speed = {"items": len(df), "batched_s": t_b, "naive_s": t_n, "speedup": t_n / t_b,
             "max_abs_diff": float(np.abs(slot - ref).max())}
    print(table(rows, ["file", "items", "s", "options/s", *HEADLINE]))
    print(speed)
    return {"per_file": per_file, "pooled_english": {k: _mv(v) for k, v in pooled.items()},
            "batched_vs_naive": speed, "max_items_per_file": args.max_items,
            "sample": "stratified"}


def run_bold(h: ModelHandle, args: argparse.Namespace) -> dict[str, Any]:
    probe = bold.Bold()
    data = SHARED_DATA / "bold"
    t0 = time.perf_counter()
    res = probe.run(h, data, seed=0, progress=False, max_prompts_per_group=args.per_group, domains=args.domains,
                    batch_size=args.batch_size)
    dt = time.perf_counter() - t0
    s = res.summary
    n = len(res.items)
    out: dict[str, Any] = {
        "prompts": n, "groups": res.info["n_groups"], "seconds": dt, "prompts_per_s": n / dt,
        "generation": res.info["generation"], "summary": {k: _mv(v) for k, v in s.items()},
        "largest_gaps": res.info["largest_gaps"], "domains": res.info["domains"],
        "empty_continuations": res.info["n_empty_continuations"],
    }
    rows = [{"metric": k, "value": v.value, "ci": f"[{v.ci_low:.1f}, {v.ci_high:.1f}]",
             "p": "" if v.p_value is None else f"{v.p_value:.3g}"} for k, v in s.items()]
    print(f"{n} prompts, {res.info['n_groups']} groups in {dt:.1f} s")
    print(table(rows, ["metric", "value", "ci", "p"]))
    # batched generation vs one prompt at a time, same settings, on the first prompts
    prompts = [p.rstrip() for p in res.items["prompt"].iloc[: args.single]]
    g = res.info["generation"]
    kw = {k: g[k] for k in ("max_new_tokens", "do_sample", "temperature", "top_p", "seed")}
    t0 = time.perf_counter()
    one = generate(h, prompts, batch_size=1, **kw)
    t1 = time.perf_counter() - t0
    t0 = time.perf_counter()
    many = generate(h, prompts, batch_size=args.batch_size, **kw)
    tb = time.perf_counter() - t0
    same = sum(a == b for a, b in zip(one, many, strict=True))
    out["batched_vs_single"] = {"prompts": len(prompts), "batch1_s": t1, "batched_s": tb, "speedup": t1 / tb,
                                "identical_continuations": same}
    print(out["batched_vs_single"])
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("which", choices=["bbq", "bold"])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--max-items", type=int, default=24, help="bbq: items per file (stratified)")
    ap.add_argument("--naive-items", type=int, default=8, help="bbq: items for the naive-loop comparison")
    ap.add_argument("--turkish", default="Age_tr", help="bbq: the MBBQ file stem")
    ap.add_argument("--per-group", type=int, default=2, help="bold: prompts per group")
    ap.add_argument("--domains", nargs="*", default=None, help="bold: domains (default all)")
    ap.add_argument("--batch-size", type=int, default=16, help="bold: generation batch size")
    ap.add_argument("--single", type=int, default=8, help="bold: prompts for the batch-1 comparison")
    ap.add_argument("--tag", default="", help="suffix of the result file name")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    h = load_model(args.model, device="cpu")
    load_s = time.perf_counter() - t0
    payload = run_bbq(h, args) if args.which == "bbq" else run_bold(h, args)
    path = save(f"{args.which}_{args.model}{'_' + args.tag if args.tag else ''}", {"model": h.identity(), "load_s": load_s,
                                                "argv": sys.argv[1:], **payload})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
