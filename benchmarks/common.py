"""Shared benchmark helpers: models of fixed size, result files. The matmul rate and the token
counter live in :mod:`audit.metering` (the runner records the audit's own cost with them)."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "benchmarks" / "results"
SHARED_DATA = Path(os.environ.get("TAUDIT_SHARED", ROOT.parent / "shared")) / "data"


def tree_tokens(token_ids: list[list[int]], score_from: list[int] | None = None,
                row_tokens: int | None = None) -> tuple[int, int]:
    """(tokens the prefix-tree scorer forwards — every distinct prefix, plus the trunks repeated
    where a subtree was split —, tokens whose log-probability it reads), for the CPU token budget."""
    from audit import scoring

    starts = score_from or [1] * len(token_ids)
    row = max(row_tokens or scoring.TREE_ROW_TOKENS, max(len(s) for s in token_ids))
    computed = scored = 0
    for tree, units in scoring.prefix_tree_plan(token_ids, starts, row):
        computed += sum(tree.sizes(units))
        scored += int(tree.need.sum())
    return computed, scored


def non_embedding_params(model: torch.nn.Module) -> int:
    """Parameters outside the token / position embeddings and the output (LM head) matrix."""
    skip = set()
    emb = model.get_input_embeddings()
    skip.add(id(emb.weight))
    out = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if out is not None:
        skip.add(id(out.weight))
    total = 0
    for name, p in model.named_parameters():
        if id(p) in skip or "position_embeddings" in name or "token_type_embeddings" in name or name.endswith("wpe.weight"):
            continue
        if "cls.predictions" in name or "lm_head" in name:  # the MLM head transform runs at masked positions only
            continue
        total += p.numel()
    return total


def loadavg() -> list[float]:
    """1, 5 and 15 minute load averages (the machine may be shared)."""
    return [round(x, 2) for x in os.getloadavg()]


def machine() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }


def save(name: str, payload: dict[str, Any]) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    p = RESULTS_DIR / f"{name}.json"
    payload = {"machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M"), **payload}
    p.write_text(json.dumps(payload, indent=2) + "\n")
    return p


def table(rows: list[dict[str, Any]], cols: list[str]) -> str:
    """A Markdown table."""
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
        return str(v)

    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    out += ["| " + " | ".join(fmt(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(out)
