"""Shared benchmark helpers: the machine's matmul rate, models of fixed size, result files."""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "benchmarks" / "results"
SHARED_DATA = Path(os.environ.get("TAUDIT_SHARED", ROOT.parent / "shared")) / "data"


def matmul_flops(n: int = 1024, k: int = 768, m: int = 3072, seconds: float = 3.0,
                 dtype: torch.dtype = torch.float32, device: str = "cpu",
                 clock: Callable[[], float] = time.perf_counter) -> float:
    """Sustained GEMM rate (FLOP/s) with torch's current thread count — the ceiling a transformer
    forward can approach (its FLOPs are almost all GEMMs of this shape). ``clock=time.process_time``
    gives FLOPs per CPU second instead (on a shared CPU: the rate while the process is on a core)."""
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
    t0, c0 = time.perf_counter(), clock()
    while time.perf_counter() - t0 < seconds:
        a @ b
        reps += 1
    sync()
    dt = clock() - c0
    return 2.0 * n * k * m * reps / dt


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


def _real_rows(x: torch.Tensor | None, mask: torch.Tensor | None) -> int:
    """Real (non-padding) token positions of one forward of a transformer body.

    ``x`` is ``input_ids`` (B, T) or ``inputs_embeds`` (B, T, H); ``mask`` the attention mask.

    * no mask: every position counts, B × T;
    * 2-D mask (B, T_k): the sum of its last T columns — with a KV cache T_k covers the cached
      tokens too, and only the T new positions are forwarded;
    * 4-D mask (B, 1 or heads, T, T_k), boolean (True = may attend) or additive float (0 = may
      attend, large negative = masked): a query row is padding when it may attend to nothing but
      itself *and* no other query attends to it (the convention of
      ``audit.scoring.shared_context_logprobs``: padding rows see only themselves, so they stay
      finite); every other row is real. A real sequence of a single token would be missed, which
      no probe forwards.
    """
    if mask is None:
        if x is None:
            return 0
        return int(x.shape[0] * x.shape[1])
    t = int(x.shape[1]) if x is not None else int(mask.shape[-1])
    if mask.dim() == 2:
        return int(mask[:, -t:].sum())
    if mask.dim() == 4:
        m = mask[:, 0]
        allowed = m if m.dtype == torch.bool else m > torch.finfo(m.dtype).min / 2
        allowed = allowed[:, -t:, :]
        row_n = allowed.sum(-1)  # keys each query sees
        if allowed.shape[-1] != allowed.shape[-2]:  # queries after a cache: no self-only padding rule
            return int((row_n > 0).sum())
        col_n = allowed.sum(-2)  # queries that see each position
        return int(((row_n > 1) | (col_n > 1)).sum())
    raise ValueError(f"attention mask of {mask.dim()} dimensions; expected 2 or 4")


class TokenCounter:
    """Counts the real tokens a model body forwards, and those it back-propagates through.

    ``with TokenCounter(handle.model.base_model) as c: ...`` registers a forward pre-hook on the
    module (the model's base model: every probe and explainer path, batched or naive, runs it) that
    reads the ``attention_mask`` it is given (see :func:`_real_rows`) or, without a mask, the shape
    of ``input_ids`` / ``inputs_embeds``. A forward hook attaches a gradient hook to the body's
    output when autograd records it; each backward that reaches the output adds that forward's
    tokens to ``backward_tokens`` (several backwards through one forward — one per explained
    target — each count). ``model_s`` is the wall time spent inside the body's forwards (CUDA
    synchronised at both ends); backward time is outside it. ``wall_s`` and ``cpu_s`` (process CPU
    time) span the whole ``with`` block.

    :meth:`flops` counts 2 × ``params`` FLOPs per forward token and twice that per backward token
    (the usual 6N rule for forward + backward). A backward that needs only input gradients (every
    explainer here: the weights are not trained) skips the weight-gradient GEMMs and costs about
    one forward, so for gradient methods this count — and the MFU made from it — is an upper
    bound, up to 1.5× too high.
    """

    def __init__(self, module: torch.nn.Module) -> None:
        self.module = module
        self.forward_tokens = 0
        self.backward_tokens = 0
        self.forwards = 0
        self.model_s = 0.0
        self.wall_s = 0.0
        self.cpu_s = 0.0
        self._t0: float | None = None
        self._n = 0
        self._handles: list[Any] = []

    def _sync(self, x: torch.Tensor | None) -> None:
        if x is not None and x.is_cuda:
            torch.cuda.synchronize(x.device)

    def _pre(self, module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        x = kwargs.get("input_ids")
        if x is None:
            x = kwargs.get("inputs_embeds")
        if x is None and args and isinstance(args[0], torch.Tensor):
            x = args[0]
        mask = kwargs.get("attention_mask")
        if mask is None and len(args) > 1 and isinstance(args[1], torch.Tensor):
            mask = args[1]
        self._n = _real_rows(x, mask)
        self.forward_tokens += self._n
        self.forwards += 1
        self._sync(x)
        self._t0 = time.perf_counter()

    def _post(self, module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> None:
        first = out[0] if isinstance(out, (tuple, list)) or hasattr(out, "to_tuple") else out
        if isinstance(first, torch.Tensor):
            self._sync(first)
            if first.requires_grad:
                n = self._n

                def on_grad(_g: torch.Tensor, n: int = n) -> None:
                    self.backward_tokens += n

                first.register_hook(on_grad)
        if self._t0 is not None:
            self.model_s += time.perf_counter() - self._t0
            self._t0 = None

    def __enter__(self) -> TokenCounter:
        self._handles = [self.module.register_forward_pre_hook(self._pre, with_kwargs=True),
                         self.module.register_forward_hook(self._post, with_kwargs=True)]
        self._start = (time.perf_counter(), time.process_time())
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()
        self.wall_s = time.perf_counter() - self._start[0]
        self.cpu_s = time.process_time() - self._start[1]
        for h in self._handles:
            h.remove()
        self._handles = []

    def flops(self, params: int) -> float:
        """2 × params × forward tokens + 4 × params × backward tokens."""
        return 2.0 * params * self.forward_tokens + 4.0 * params * self.backward_tokens


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
