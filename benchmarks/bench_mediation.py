"""Mediation analysis (issue 20): patched forwards per second, items per second and MFU of the
batched patching engine against the naive reference (one patched run per forward), same items,
same run.

    python benchmarks/bench_mediation.py --model smollm2-135m --items 3 --naive-items 1

Each item (template × profession) costs one patched run per mediator (heads + attention layers +
MLPs: 30·9 + 30 + 30 = 330 on SmolLM2-135M) plus its two clean runs. The batched engine puts the
patched runs of several items in one forward under the token budget; the naive reference gives
each patched run its own forward (``max_batch_tokens=1``). MFU = 2 · non-embedding parameters ·
real tokens forwarded / wall time / the machine's sustained fp32 matmul rate (measured here), and
the same per CPU second of the process (on a shared CPU the wall rate mostly measures the others);
the LM head at the one read position per row is left out of the count.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from audit.metering import TokenCounter, matmul_flops  # noqa: E402
from audit.models import load_model  # noqa: E402
from benchmarks.common import (  # noqa: E402
    SHARED_DATA,
    loadavg,
    non_embedding_params,
    save,
    table,
)
from probes.mediation import SITE_KINDS, Mediation, score_mediation  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--items", type=int, default=3, help="items run by the batched engine")
    ap.add_argument("--naive-items", type=int, default=1, help="items (the first of --items) run naively")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    h = load_model(args.model, device="cpu")
    probe = Mediation()
    wb = SHARED_DATA / "winobias"
    opts = probe.parse_options({"language": "en", "winobias": str(wb) if wb.is_dir() else None}).values()
    items = probe.load_items(None, opts)
    items = items.sample(n=min(len(items), 4 * args.items), random_state=0)
    # keep items the model can patch (single-token professions), so both paths do the same work
    from audit.explain.mechanism import encode_prompts

    same = [len(a) == len(b) for a, b in zip(encode_prompts(h, list(items["prompt_null"]))[0],
                                              encode_prompts(h, list(items["prompt_set"]))[0], strict=True)]
    items = items[np.asarray(same)].head(args.items).reset_index(drop=True)
    peak = matmul_flops(device="cpu")
    peak_cpu = matmul_flops(device="cpu", clock=time.process_time)
    params = non_embedding_params(h.model)
    load0 = loadavg()
    rows: list[dict[str, float | int | str]] = []
    outs = {}
    for name, sub, mbt in (("batched", items, None), ("naive", items.head(args.naive_items), 1)):
        with TokenCounter(h.model.base_model) as c:
            t0 = time.perf_counter()
            out = score_mediation(h, sub, SITE_KINDS, max_batch_tokens=mbt)
            dt = time.perf_counter() - t0
        outs[name] = out
        n_sites = len(out["nie"].iloc[0])
        fwd = len(sub) * n_sites
        rows.append({"path": name, "items": len(sub), "patched_forwards": fwd, "tokens": c.forward_tokens,
                     "seconds": dt, "items_per_s": len(sub) / dt, "forwards_per_s": fwd / dt,
                     "cpu_s": c.cpu_s, "mfu_pct": 100 * 2 * params * c.forward_tokens / dt / peak,
                     "mfu_cpu_pct": 100 * 2 * params * c.forward_tokens / c.cpu_s / peak_cpu})
    k = args.naive_items
    diff = float(np.max(np.abs(np.asarray(outs["batched"]["nie"].head(k).tolist())
                               - np.asarray(outs["naive"]["nie"].tolist()))))
    speedup = float(rows[0]["forwards_per_s"]) / float(rows[1]["forwards_per_s"])
    print(table(rows, ["path", "items", "patched_forwards", "tokens", "seconds", "cpu_s", "items_per_s",
                       "forwards_per_s", "mfu_pct", "mfu_cpu_pct"]))
    print(f"batched / naive patched forwards per second: {speedup:.1f}×; max |ΔNIE| on shared items {diff:.2e}; "
          f"fp32 matmul peak {peak / 1e9:.1f} GFLOP/s wall, {peak_cpu / 1e9:.1f} per CPU second, {torch.get_num_threads()} threads, load {load0} → {loadavg()}")
    save("mediation", {"model": args.model, "rows": rows, "speedup": speedup, "max_abs_nie_diff": diff,
                       "peak_flops": peak, "peak_flops_cpu": peak_cpu, "non_embedding_params": params, "load_start": load0, "load_end": loadavg()})


if __name__ == "__main__":
    main()
