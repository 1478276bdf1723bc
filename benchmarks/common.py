"""Shared benchmark helpers: the machine's matmul rate, models of fixed size, result files."""

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


def matmul_flops(n: int = 1024, k: int = 768, m: int = 3072, seconds: float = 3.0,
                 dtype: torch.dtype = torch.float32, device: str = "cpu") -> float:
    """Sustained GEMM rate (FLOP/s) with torch's current thread count — the ceiling a transformer
    forward can approach (its FLOPs are almost all GEMMs of this shape)."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        n, k, m = 8192, 4096, 4096
    a = torch.randn(n, k, dtype=dtype, device=device)
    b = torch.randn(k, m, dtype=dtype, device=device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    for _ in range(3):
        a @ b
    sync()
    reps = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        reps += 1
    sync()
    dt = time.perf_counter() - t0
    return 2.0 * n * k * m * reps / dt


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
