"""CrowS-Pairs throughput: batched scoring vs the naive reference loop, same model, same run.

Causal models are timed two ways (padded rows, and the prefix tree: every shared prefix run once,
no padding) to show what the tree buys. Models: a randomly initialised masked LM of bert-base-uncased's dimensions (timing needs no
trained weights; the tokenizer is minilm-l6's, which is bert-base-uncased's WordPiece vocabulary),
a random causal LM of GPT-2-base size, and SmolLM2-135M (real weights). For each: pairs/s batched
and naive, the speed-up, the largest per-pair score difference, and model FLOP utilisation =
useful FLOPs / time ÷ this machine's fp32 matmul rate measured in the same run. Useful FLOPs count
2 × non-embedding parameters × real (unpadded) tokens, plus the LM head at scored positions only.

    .venv/bin/python benchmarks/bench_crows_pairs.py [--pairs 120] [--naive-pairs 16]
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from audit import scoring  # noqa: E402
from audit.metering import matmul_flops  # noqa: E402
from audit.models import ModelHandle, load_model  # noqa: E402
from benchmarks.common import (  # noqa: E402
    SHARED_DATA,
    non_embedding_params,
    save,
    table,
    tree_tokens,
)
from probes.crows_pairs import load_crows_pairs, shared_spans  # noqa: E402


def build_random(kind: str, folder: Path) -> Path:
    from transformers import BertConfig, BertForMaskedLM, GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    if kind == "bert-base":
        src = load_model("minilm-l6")
        tok = src.tokenizer
        model = BertForMaskedLM(BertConfig(vocab_size=len(tok)))  # bert-base: 768 × 12 layers
    else:
        src = load_model("smollm2-135m")
        tok = src.tokenizer
        model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), bos_token_id=tok.bos_token_id,
                                           eos_token_id=tok.eos_token_id))
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def masked_inputs(h: ModelHandle, s1: list[str], s2: list[str]) -> tuple[list[list[int]], list[list[int]]]:
    lower = h.is_uncased
    e1 = h.tokenizer([s.lower() if lower else s for s in s1])["input_ids"]
    e2 = h.tokenizer([s.lower() if lower else s for s in s2])["input_ids"]
    ids, pos = [], []
    for a, b in zip(e1, e2, strict=True):
        t1, t2 = shared_spans(a, b)
        ids += [a, b]
        pos += [t1[1:-1], t2[1:-1]]
    return ids, pos


def bench_model(h: ModelHandle, s1: list[str], s2: list[str], n_naive: int, peak: float,
                batch_tokens: int | None) -> list[dict[str, Any]]:
    """One row per scoring mode: masked LMs batched; causal LMs padded (length-sorted rows, ≤ 25 %
    padding) and the prefix tree (each distinct prefix forwarded once, no padding). Every mode is
    timed against the same naive loop."""
    masked = h.kind == "masked-lm"
    n = len(s1)
    body = non_embedding_params(h.model)
    modes: dict[str, tuple[Any, int, int]] = {}  # mode → (scorer, tokens forwarded, head positions)
    if masked:
        ids, pos = masked_inputs(h, s1, s2)
        tokens = sum(len(i) * len(p) for i, p in zip(ids, pos, strict=True))  # every masked copy is a full forward
        head_positions = sum(len(p) for p in pos)
        head_flops = 2 * sum(p.numel() for p in h.model.cls.parameters()) if hasattr(h.model, "cls") else 0
        modes["batched"] = (lambda k: scoring.pseudo_log_likelihood(h, ids[: 2 * k], pos[: 2 * k],
                                                                    max_batch_tokens=batch_tokens),
                            tokens, head_positions)

        def naive(k: int) -> list[np.ndarray]:
            return scoring.naive_pseudo_log_likelihood(h, ids[: 2 * k], pos[: 2 * k])
    else:
        ids = scoring.causal_tokenize(h, [x for pair in zip(s1, s2, strict=True) for x in pair])
        tokens = sum(len(i) for i in ids)
        head_positions = sum(len(i) - 1 for i in ids)
        head_flops = 2 * h.model.get_output_embeddings().weight.numel()
        computed, scored = tree_tokens(ids)
        modes["padded"] = (lambda k: scoring.causal_logprobs(h, ids[: 2 * k], max_batch_tokens=batch_tokens,
                                                             pack=False), tokens, head_positions)
        # each distinct prefix is forwarded once (trunks of split subtrees again), the LM head runs at
        # the scored tree nodes
        modes["prefix tree"] = (lambda k: scoring.causal_logprobs(h, ids[: 2 * k], max_batch_tokens=batch_tokens),
                                computed, scored)

        def naive(k: int) -> list[np.ndarray]:
            return scoring.naive_causal_logprobs(h, ids[: 2 * k])

    t0 = time.perf_counter()
    r = naive(n_naive)
    tn = time.perf_counter() - t0
    rows = []
    for mode, (batched, tok, heads) in modes.items():
        batched(min(4, n))  # warm-up
        t0 = time.perf_counter()
        b = batched(n)
        tb = time.perf_counter() - t0
        useful = 2.0 * body * tok + head_flops * heads
        diff = max(float(abs(x.sum() - y.sum())) for x, y in zip(b[: 2 * n_naive], r, strict=True))
        rows.append({
            "model": h.name if h.demo else type(h.model).__name__,
            "kind": h.kind,
            "mode": mode,
            "non_embedding_params": body,
            "pairs_batched": n,
            "pairs_naive": n_naive,
            "batched_pairs_per_s": n / tb,
            "naive_pairs_per_s": n_naive / tn,
            "speedup": (n / tb) / (n_naive / tn),
            "max_abs_pair_score_diff": diff,
            "useful_gflops_per_s": useful / tb / 1e9,
            "mfu_vs_matmul": useful / tb / peak,
            "tokens_forwarded": tok,
        })
    return rows


def scaling(h: ModelHandle, peak: float, device_tokens: int | None) -> list[dict[str, Any]]:
    """Time of batched scoring against the number of items (×10, ×100) and the sequence length,
    on random token ids (timing needs no meaningful text)."""
    g = torch.Generator().manual_seed(0)
    vocab = h.model.config.vocab_size
    body = non_embedding_params(h.model)
    rows = []
    masked = h.kind == "masked-lm"
    for length, counts in ((32, (4, 40, 400)), (16, (40,)), (128, (40,)), (512, (10,))):
        if length > h.max_length:
            continue
        for n in counts:
            ids = torch.randint(5, vocab - 1, (n, length), generator=g).tolist()
            t0 = time.perf_counter()
            if masked:
                pos = [list(range(1, length - 1))] * n  # every position: the PLL of the whole text
                scoring.pseudo_log_likelihood(h, ids, pos, max_batch_tokens=device_tokens)
                tokens = n * length * (length - 2)
            else:
                scoring.causal_logprobs(h, ids, max_batch_tokens=device_tokens)
                tokens = n * length
            dt = time.perf_counter() - t0
            rows.append({"model": h.name if h.demo else type(h.model).__name__, "seq_len": length, "items": n,
                         "seconds": dt, "items_per_s": n / dt, "mfu_vs_matmul": 2.0 * body * tokens / dt / peak})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=120)
    ap.add_argument("--naive-pairs", type=int, default=16)
    ap.add_argument("--batch-tokens", type=int, default=None)
    ap.add_argument("--models", default="bert-base,gpt2-base,smollm2-135m")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    ap.add_argument("--scaling", action="store_true", help="also time ×10 / ×100 items and sequence lengths")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    csv = SHARED_DATA / "crows-pairs" / "crows_pairs_anonymized.csv"
    if not csv.is_file():
        print(f"skipping: {csv} not found")
        return
    df = load_crows_pairs(csv).iloc[: args.pairs]
    stereo = df["stereo_antistereo"].to_numpy() == "stereo"
    s1 = np.where(stereo, df["sent_more"], df["sent_less"]).tolist()
    s2 = np.where(stereo, df["sent_less"], df["sent_more"]).tolist()
    peak = matmul_flops(device=args.device)
    scale_rows: list[dict[str, Any]] = []
    print(f"fp32 matmul rate: {peak / 1e9:.1f} GFLOP/s on {torch.get_num_threads()} threads")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            if name in ("bert-base", "gpt2-base"):
                h = load_model(build_random(name, Path(tmp) / name), device=args.device)
            else:
                h = load_model(name, device=args.device)
            # the matmul ceiling is re-measured next to each model, so a change in machine load
            # between models does not skew the ratio (the higher of the two readings is used)
            peak = max(peak, matmul_flops(device=args.device))
            new = bench_model(h, s1, s2, args.naive_pairs, peak, args.batch_tokens)
            for r in new:
                r["matmul_gflops"] = peak / 1e9
            rows += new
            print(table(new, list(new[0])))
            if args.scaling:
                scale_rows += scaling(h, peak, args.batch_tokens)
                print(table(scale_rows, list(scale_rows[0])))
            del h
    cols = ["model", "kind", "mode", "pairs_batched", "batched_pairs_per_s", "naive_pairs_per_s", "speedup",
            "max_abs_pair_score_diff", "useful_gflops_per_s", "mfu_vs_matmul"]
    print()
    print(table(rows, cols))
    if scale_rows:
        print()
        print(table(scale_rows, list(scale_rows[0])))
    p = save("crows_pairs" if args.device == "cpu" else f"crows_pairs_{args.device}",
             {"matmul_gflops": peak / 1e9, "rows": rows, "scaling": scale_rows, "args": vars(args)})
    print(f"saved {p}")


if __name__ == "__main__":
    main()
