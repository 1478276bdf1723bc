"""The prefix-tree scorer (every distinct prefix forwarded once) against the scorer it replaced,
per probe, on SmolLM2-135M, in one process.

"before" is ``audit/scoring.py`` as of commit ``--before`` (read with ``git show``, loaded as a
module of its own and put in place of each probe's ``scoring``; for CrowS-Pairs its call passes
the pairs as ``share_prefix``, as the probe did then); "after" is the current module. For each
probe that scores causal continuations, the probe's own ``score_items`` runs over its items chunk
by chunk (the ItemProbe path): before, after, before, after, keeping each side's faster run.
Reported per probe: items/s before and after and their ratio; real tokens the model body forwarded
(:class:`audit.metering.TokenCounter`: padding excluded) and positions the LM head read; MFU =
(2 × non-embedding params × forwarded tokens + 2 × head params × head positions) / time ÷ the
fp32 matmul rate measured in the same run; the largest difference between the two scorers'
float item columns.

``--plan`` adds, without a forward, the tokens each scorer forwards over the six English BBQ files
(before: prefix token + prompt once per item plus each option; after: the prefix tree of each of
the probe's chunks of about 256 items), and the trees of all of them planned in one call, with the
peak memory that takes.

    .venv/bin/python benchmarks/bench_prefix_tree.py [--bbq-items 128] [--threads 2] [--plan]
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import subprocess
import sys
import tempfile
import time
import tracemalloc
import types
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from audit import metering, scoring  # noqa: E402
from audit.models import ModelHandle, load_model  # noqa: E402
from audit.probe import ItemProbe, get_probe  # noqa: E402
from benchmarks import common  # noqa: E402
from probes import bbq  # noqa: E402

BEFORE = "77d75df"  # the last commit with the packed / shared-context / share_prefix scorer
BBQ_ENGLISH = ["Age", "Disability_status", "Nationality", "Physical_appearance", "Religion", "Sexual_orientation"]


def scorer_before(rev: str) -> types.ModuleType:
    """``audit/scoring.py`` at ``rev``, as a module of its own."""
    src = subprocess.run(["git", "show", f"{rev}:audit/scoring.py"], cwd=common.ROOT, check=True, capture_output=True,
                         text=True).stdout
    path = Path(tempfile.mkdtemp()) / "scoring_before.py"
    path.write_text(src, encoding="utf-8")
    spec = importlib.util.spec_from_file_location("scoring_before", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def with_pairs_shared(old: types.ModuleType) -> types.SimpleNamespace:
    """The old module as CrowS-Pairs used it: ``causal_logprobs`` of 2n sentences (all first
    sentences, then all second ones) with sentence i and n + i as a ``share_prefix`` group."""
    ns = types.SimpleNamespace(**vars(old))

    def causal_logprobs(handle: ModelHandle, seqs: list[list[int]], **kw: Any) -> list[np.ndarray]:
        n = len(seqs) // 2
        return old.causal_logprobs(handle, seqs, share_prefix=[(i, n + i) for i in range(n)], **kw)

    ns.causal_logprobs = causal_logprobs
    return ns


def cases(args: argparse.Namespace) -> list[tuple[str, str, Any, dict[str, Any]]]:
    """(label, probe, data, options) of every timed case; real files under ../shared/data."""
    out: list[tuple[str, str, Any, dict[str, Any]]] = []
    bbq_dir = common.SHARED_DATA / "bbq"
    if bbq_dir.is_dir():
        for f in args.bbq_files:
            out.append((f"bbq {f}", "bbq", bbq_dir / f"{f}.jsonl", {"max_items": args.bbq_items, "sample": "first"}))
    ss = common.SHARED_DATA / "stereoset" / "dev.json"
    if ss.is_file():
        for split in ("intrasentence", "intersentence"):
            out.append((f"stereoset {split}", "stereoset", ss, {"splits": [split], "max_items": args.items}))
    crows = common.SHARED_DATA / "crows-pairs" / "crows_pairs_anonymized.csv"
    if crows.is_file():
        out.append(("crows_pairs", "crows_pairs", crows, {"max_items": args.items}))
    out.append(("templates", "templates", None, {"language": "en", "max_items": max(args.items // 20, 1)}))
    out.append(("counterfactual", "counterfactual", None, {"language": "en", "max_items": args.items}))
    out.append(("classifier_fairness zero-shot", "classifier_fairness", None,
                {"max_items": args.items, "prompt": "Review: {text}\nSentiment:", "label_words": {0: " bad", 1: " good"}}))
    return out


def score_all(probe: ItemProbe, h: ModelHandle, items: pd.DataFrame, opts: dict[str, Any]) -> pd.DataFrame:
    size = probe.chunk_size
    parts = [probe.score_items(h, items.iloc[k : k + size], opts, False) for k in range(0, len(items), size)]
    return pd.concat(parts, ignore_index=True)


def time_case(h: ModelHandle, probe_name: str, data: Any, opts: dict[str, Any], old: types.ModuleType,
              peak: float, reps: int) -> dict[str, Any]:
    probe = get_probe(probe_name)
    assert isinstance(probe, ItemProbe)
    values = probe.parse_options(opts, data).values()
    items = probe.load_items(data, values).reset_index(drop=True)
    opts = probe.prepare(h, items, values)
    module = sys.modules[type(probe).__module__]
    body = common.non_embedding_params(h.model)
    head_params = h.model.get_output_embeddings().weight.numel()
    sides = {"before": with_pairs_shared(old) if probe_name == "crows_pairs" else old, "after": scoring}
    best: dict[str, dict[str, Any]] = {}
    outs: dict[str, pd.DataFrame] = {}
    score_all(probe, h, items.iloc[:4], opts)  # warm-up (and the one-time mask check of each module)
    for _ in range(reps):
        for side, mod in sides.items():
            head_rows: list[int] = []  # hidden states the LM head reads
            hook = h.model.get_output_embeddings().register_forward_hook(
                lambda _m, a, _o, rows=head_rows: rows.append(a[0].numel() // a[0].shape[-1]))
            module.scoring = mod  # type: ignore[attr-defined]
            try:
                with metering.TokenCounter(h.model.base_model) as c:
                    outs[side] = score_all(probe, h, items, opts)
            finally:
                module.scoring = scoring  # type: ignore[attr-defined]
                hook.remove()
            if side not in best or c.wall_s < best[side]["s"]:
                best[side] = {"s": c.wall_s, "forwarded": c.forward_tokens, "head": sum(head_rows)}
    floats = [col for col in outs["after"].columns if pd.api.types.is_float_dtype(outs["after"][col])]
    diff = max((float(np.nanmax(np.abs(outs["after"][col].to_numpy() - outs["before"][col].to_numpy())))
                for col in floats), default=float("nan"))
    row: dict[str, Any] = {"items": len(items)}
    for side, b in best.items():
        flops = 2.0 * body * b["forwarded"] + 2.0 * head_params * b["head"]
        row.update({f"{side}_items_per_s": len(items) / b["s"], f"{side}_tokens_forwarded": b["forwarded"],
                    f"{side}_head_positions": b["head"], f"{side}_mfu": flops / b["s"] / peak})
    row["speedup"] = row["after_items_per_s"] / row["before_items_per_s"]
    row["max_abs_score_diff"] = diff
    return row


def plan_bbq(h: ModelHandle) -> list[dict[str, Any]]:
    """Tokens each scorer forwards over the English BBQ files (no model forward), and the peak
    memory (Python and NumPy allocations, tracemalloc) of planning the trees of all of them in one call."""
    rows: list[dict[str, Any]] = []
    every: list[list[int]] = []
    every_starts: list[int] = []
    pre = scoring.prefix_token_id(h)
    for f in BBQ_ENGLISH:
        path = common.SHARED_DATA / "bbq" / f"{f}.jsonl"
        if not path.is_file():
            continue
        df = bbq.load_bbq(path)
        opts = bbq.option_table(df)
        prompts = [bbq.prompt_text(c, q) for c, q in zip(df["context"], df["question"], strict=True)]
        p_ids = h.tokenizer(prompts, add_special_tokens=False)["input_ids"]
        a_ids = h.tokenizer([" " + t for t in opts["text"]], add_special_tokens=False)["input_ids"]
        before = sum(1 + len(p) for p in p_ids) + sum(len(a) for a in a_ids)
        seqs = [[pre, *p_ids[i], *a] for i, a in zip(opts["item"], a_ids, strict=True)]
        starts = [1 + len(p_ids[i]) for i in opts["item"]]
        probe = get_probe("bbq")
        assert isinstance(probe, ItemProbe)
        bounds = probe.chunk_bounds(df, probe.chunk_size)  # the probe's chunks
        chunk_of = np.searchsorted(bounds, opts["item"].to_numpy(), side="right") - 1
        after = 0
        for k in np.unique(chunk_of):
            idx = np.flatnonzero(chunk_of == k)
            after += common.tree_tokens([seqs[i] for i in idx], [starts[i] for i in idx])[0]
        whole, scored = common.tree_tokens(seqs, starts)
        rows.append({"file": f, "items": len(df), "tokens_before": before, "tokens_tree_chunks": after,
                     "tokens_tree_whole_file": whole, "ratio_chunks": after / before, "ratio_whole": whole / before,
                     "tokens_scored": scored})
        every += seqs
        every_starts += starts
    if every:
        tracemalloc.start()
        t0 = time.perf_counter()
        computed, _ = common.tree_tokens(every, every_starts)
        peak_bytes = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        rows.append({"file": "all English (one call)", "items": int(sum(r["items"] for r in rows)),
                     "tokens_before": int(sum(r["tokens_before"] for r in rows)), "tokens_tree_whole_file": computed,
                     "ratio_whole": computed / sum(r["tokens_before"] for r in rows),
                     "plan_s": time.perf_counter() - t0,
                     "peak_mb": peak_bytes / 2**20})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bbq-items", type=int, default=128, help="items per BBQ file (whole template instances)")
    ap.add_argument("--bbq-files", nargs="+", default=["Age"])
    ap.add_argument("--items", type=int, default=60, help="items of each other probe")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--before", default=BEFORE)
    ap.add_argument("--plan", action="store_true", help="also count tokens over the whole English BBQ")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    old = scorer_before(args.before)
    h = load_model("smollm2-135m", device="cpu")
    load0 = common.loadavg()
    peak = metering.matmul_flops()
    rows = []
    for label, probe, data, opts in cases(args):
        r = {"case": label, **time_case(h, probe, data, opts, old, peak, args.reps)}
        print(f"{label}: {r['before_items_per_s']:.2f} → {r['after_items_per_s']:.2f} items/s "
              f"(×{r['speedup']:.2f}), max |Δ| {r['max_abs_score_diff']:.2g}", flush=True)
        rows.append(r)
    peak_end = metering.matmul_flops()
    payload: dict[str, Any] = {"before": args.before, "threads": args.threads, "matmul_flops": [peak, peak_end],
                               "loadavg": [load0, common.loadavg()], "rows": rows}
    print(common.table(rows, ["case", "items", "before_items_per_s", "after_items_per_s", "speedup",
                       "before_tokens_forwarded", "after_tokens_forwarded", "after_head_positions",
                       "before_mfu", "after_mfu", "max_abs_score_diff"]))
    print(f"matmul {peak / 1e9:.0f} / {peak_end / 1e9:.0f} GFLOP/s (start / end); load {load0} → {common.loadavg()}")
    if args.plan:
        payload["bbq_plan"] = plan_bbq(h)
        print(common.table(payload["bbq_plan"], ["file", "items", "tokens_before", "tokens_tree_chunks",
                                          "tokens_tree_whole_file", "ratio_chunks", "ratio_whole", "tokens_scored",
                                          "plan_s", "peak_mb"]))
    print(common.save("prefix_tree", payload))


if __name__ == "__main__":
    main()
