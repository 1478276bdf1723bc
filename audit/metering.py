"""The audit's own compute: tokens a model forwards, estimated FLOPs, and the device's matmul rate.

Used by the runner for every probe of every run (``probes/<name>/compute-rank<k>.json``, read back
summed over the ranks by :func:`read_probe_compute`) and by the benchmarks.

* :class:`TokenCounter` — forward hooks on the model body that count the real (non-padding)
  tokens it forwards, the tokens × key length products its attention computes, and the tokens a
  backward pass reaches.
* :class:`Meter` — a :class:`TokenCounter` on the body plus a hook on the output projection (the
  LM head), turned into FLOPs with the analytic estimate of Kaplan et al. 2020 ("Scaling Laws for
  Neural Language Models"), in the form :mod:`probes.cost` checks against
  ``torch.utils.flop_counter.FlopCounterMode``: per forward token at key length L,
  ``2·N_body + 4·n_layer·L·d_attn``, plus ``2·d_model·vocab`` for each position the output
  projection reads. N_body is the weights of the body's linear layers.
* :func:`matmul_flops` — the sustained dense GEMM rate, the denominator of model FLOPs utilisation
  (MFU, Chowdhery et al. 2022, "PaLM", appendix B): MFU = model FLOPs / (wall seconds × matmul rate).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import torch

#: seconds the runner spends measuring the device's matmul rate, once per run
RUN_MATMUL_SECONDS = 0.25
#: how the runner's per-probe FLOPs are estimated (stored with every figure)
FLOPS_METHOD = ("forward hooks: real tokens × (2·N_body + 4·n_layer·L·d_attn) per body forward at its key length L, "
                "+ 2·d_model·vocab per position the output projection reads; each backward that reaches the body "
                "counted as twice its forward (an upper bound when only input gradients are needed)")


def matmul_flops(n: int | None = None, k: int | None = None, m: int | None = None, seconds: float = 3.0,
                 dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu",
                 clock: Callable[[], float] = time.perf_counter) -> float:
    """Sustained GEMM rate (FLOP/s) of an ``n × k`` by ``k × m`` product with torch's current thread
    count — the ceiling a transformer forward can approach (its FLOPs are almost all GEMMs). The
    shape defaults to 1024 × 768 × 3072 on CPU and 8192 × 4096 × 4096 on CUDA. ``clock=
    time.process_time`` gives FLOPs per CPU second instead (on a shared CPU: the rate while the
    process is on a core)."""
    device = str(device)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    cuda = device.startswith("cuda")
    n, k, m = (n or (8192 if cuda else 1024)), (k or (4096 if cuda else 768)), (m or (4096 if cuda else 3072))
    a = torch.randn(n, k, dtype=dtype, device=device)
    b = torch.randn(k, m, dtype=dtype, device=device)
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    with torch.inference_mode():
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


def architecture(cfg: Any) -> dict[str, int]:
    """n_layer, d_model, d_attn (query heads × head dim) and vocabulary from a model config;
    ``ValueError`` when the config does not name its layers, width and heads."""
    d = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    n_layer = getattr(d, "num_hidden_layers", None) or getattr(d, "n_layer", None)
    d_model = getattr(d, "hidden_size", None) or getattr(d, "n_embd", None)
    heads = getattr(d, "num_attention_heads", None) or getattr(d, "n_head", None)
    if not (n_layer and d_model and heads):
        raise ValueError(f"the config ({type(d).__name__}) does not name its layers, width and heads")
    head_dim = getattr(d, "head_dim", None) or d_model // heads
    return {"n_layer": int(n_layer), "d_model": int(d_model), "d_attn": int(heads * head_dim),
            "vocab": int(getattr(d, "vocab_size", 0))}


def linear_weights(module: torch.nn.Module) -> int:
    """Weights of every linear layer in ``module`` (``nn.Linear`` and GPT-2's ``Conv1D``)."""
    weights = (getattr(m, "weight", None) for m in module.modules()
               if isinstance(m, torch.nn.Linear) or type(m).__name__ == "Conv1D")
    return sum(int(w.numel()) for w in weights if w is not None)


def real_rows(x: torch.Tensor | None, mask: torch.Tensor | None) -> int:
    """Real (non-padding) token positions of one forward of a transformer body.

    ``x`` is ``input_ids`` (B, T) or ``inputs_embeds`` (B, T, H); ``mask`` the attention mask.

    * no mask: every position counts, B × T;
    * 2-D mask (B, T_k): the sum of its last T columns — with a KV cache T_k covers the cached
      tokens too, and only the T new positions are forwarded;
    * 4-D mask (B, 1 or heads, T, T_k), boolean (True = may attend) or additive float (0 = may
      attend, large negative = masked): a query row is padding when it may attend to nothing but
      itself *and* no other query attends to it (the convention of
      ``audit.scoring.continuation_logprobs``: padding rows see only themselves, so they stay
      finite); every other row is real. A real sequence of a single token would be missed, which
      no probe forwards.
    """
    if mask is None:
        return 0 if x is None else int(x.shape[0] * x.shape[1])
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
    reads the ``attention_mask`` it is given (see :func:`real_rows`) or, without a mask, the shape
    of ``input_ids`` / ``inputs_embeds``. ``key_tokens`` sums real tokens × the forward's key length
    (the mask's last dimension, else the input length: what a dense attention kernel computes per
    query). A forward hook attaches a gradient hook to the body's output when autograd records it;
    each backward that reaches the output adds that forward's tokens to ``backward_tokens`` and
    ``backward_key_tokens`` (several backwards through one forward — one per explained target —
    each count). ``model_s`` is the wall time spent inside the body's forwards (CUDA synchronised
    at both ends; ``sync=False`` skips those two synchronisations per forward, and ``model_s`` then
    times only the kernel launches on CUDA); backward time is outside it. ``wall_s`` and ``cpu_s`` (process CPU time) span
    the whole ``with`` block.

    :meth:`flops` counts 2 × ``params`` FLOPs per forward token and twice that per backward token
    (the usual 6N rule for forward + backward). A backward that needs only input gradients (every
    explainer here: the weights are not trained) skips the weight-gradient GEMMs and costs about
    one forward, so for gradient methods this count — and the MFU made from it — is an upper
    bound, up to 1.5× too high.
    """

    def __init__(self, module: torch.nn.Module, sync: bool = True) -> None:
        self.module = module
        self.sync = sync
        self.forward_tokens = self.backward_tokens = self.key_tokens = self.backward_key_tokens = self.forwards = 0
        self.model_s = self.wall_s = self.cpu_s = 0.0
        self._t0: float | None = None
        self._n = self._keys = 0
        self._handles: list[Any] = []

    def _sync(self, x: torch.Tensor | None) -> None:
        if self.sync and x is not None and x.is_cuda:
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
        self._n = real_rows(x, mask)
        keys = int(mask.shape[-1]) if mask is not None else (int(x.shape[1]) if x is not None else 0)
        self._keys = self._n * keys
        self.forward_tokens += self._n
        self.key_tokens += self._keys
        self.forwards += 1
        self._sync(x)
        self._t0 = time.perf_counter()

    def _post(self, module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> None:
        first = out[0] if isinstance(out, (tuple, list)) or hasattr(out, "to_tuple") else out
        if isinstance(first, torch.Tensor):
            self._sync(first)
            if first.requires_grad:
                n, keys = self._n, self._keys

                def on_grad(_g: torch.Tensor, n: int = n, keys: int = keys) -> None:
                    self.backward_tokens += n
                    self.backward_key_tokens += keys

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


class Meter:
    """The compute of one step of an audit on one model: a :class:`TokenCounter` on the model's
    body (``model.base_model``) and a pre-hook on its output projection
    (``model.get_output_embeddings()``, when it has one) counting the positions it projects.

    :meth:`figures` turns the counts into the record the runner stores: wall and CPU seconds,
    forward passes, tokens forwarded, tokens back-propagated, positions through the output
    projection, estimated FLOPs (``FLOPS_METHOD``) and MFU against ``matmul_rate``. A model whose
    config does not name its layers, width and heads gets ``flops`` and ``mfu`` ``None``.
    """

    def __init__(self, model: torch.nn.Module, config: Any) -> None:
        body = getattr(model, "base_model", model)
        self.counter = TokenCounter(body, sync=False)  # no per-forward CUDA synchronisation in a real run
        get_head: Callable[[], Any] | None = getattr(model, "get_output_embeddings", None)
        head = get_head() if get_head is not None else None
        self._head: torch.nn.Module | None = head if isinstance(getattr(head, "weight", None), torch.Tensor) else None
        self.head_rows = 0
        self._handle: Any = None
        self.n_body = linear_weights(body)
        self.head_weights = int(self._head.weight.numel()) if self._head is not None else 0
        try:
            self.arch: dict[str, int] | None = architecture(config)
        except ValueError:
            self.arch = None

    def _on_head(self, module: torch.nn.Module, args: tuple[Any, ...]) -> None:
        x = args[0] if args and isinstance(args[0], torch.Tensor) else None
        if x is not None and x.dim() >= 1 and x.shape[-1]:
            self.head_rows += int(x.numel() // x.shape[-1])

    def __enter__(self) -> Meter:
        if self._head is not None:
            self._handle = self._head.register_forward_pre_hook(self._on_head)
        self.counter.__enter__()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.counter.__exit__(exc_type, exc, tb)
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def flops(self) -> float | None:
        """Estimated FLOPs of everything forwarded inside the ``with`` block (``FLOPS_METHOD``)."""
        if self.arch is None:
            return None
        c, att = self.counter, 4.0 * self.arch["n_layer"] * self.arch["d_attn"]
        forward = 2.0 * self.n_body * c.forward_tokens + att * c.key_tokens + 2.0 * self.head_weights * self.head_rows
        backward = 2.0 * (2.0 * self.n_body * c.backward_tokens + att * c.backward_key_tokens)
        return forward + backward

    def figures(self, matmul_rate: float | None) -> dict[str, Any]:
        """The stored record (see the class docstring)."""
        c, flops = self.counter, self.flops()
        mfu = flops / (c.wall_s * matmul_rate) if flops is not None and matmul_rate and c.wall_s > 0 else None
        return {"wall_s": c.wall_s, "cpu_s": c.cpu_s, "forwards": c.forwards,
                "tokens_forwarded": c.forward_tokens, "tokens_backward": c.backward_tokens,
                "head_positions": self.head_rows, "flops": flops, "mfu": mfu}


def run_matmul_rate(model: torch.nn.Module, config: Any, dtype: torch.dtype, device: torch.device | str,
                    seconds: float = RUN_MATMUL_SECONDS) -> dict[str, Any]:
    """The device's matmul rate for one run: a 512 × d_model by d_model × 4·d_model GEMM (an MLP
    up-projection of the model) in the model's dtype, repeated for ``seconds``. Width 768 when the
    config does not name it."""
    try:
        d = architecture(config)["d_model"]
    except ValueError:
        d = 768
    rate = matmul_flops(512, d, 4 * d, seconds=seconds, dtype=dtype, device=device)
    return {"matmul_flops_per_s": rate, "shape": [512, d, 4 * d], "dtype": str(dtype).replace("torch.", ""),
            "device": str(device), "seconds": seconds, "threads": torch.get_num_threads()}


def compute_file(probe_dir: Path, rank: int) -> Path:
    """The file one rank writes its figures for one probe to."""
    return probe_dir / f"compute-rank{rank}.json"


def read_probe_compute(probe_dir: Path) -> dict[str, Any] | None:
    """One probe's figures summed over the ranks of its latest attempt (``None`` when no rank
    wrote any): ``forwards``, tokens, ``flops`` and ``rank_seconds`` (wall seconds × ranks) add up;
    ``wall_s`` is the slowest rank's; ``mfu`` = FLOPs / Σ over ranks (wall_s × that rank's
    matmul rate). Files of an earlier attempt (a resumed run on fewer ranks) are ignored."""
    recs = []
    for p in sorted(probe_dir.glob("compute-rank*.json")):
        try:
            recs.append(json.loads(p.read_text(encoding="utf-8")))
        except (OSError, ValueError) as exc:
            raise ValueError(f"{p}: not a readable compute record ({exc})") from exc
    if not recs:
        return None
    latest = max(int(r.get("attempt") or 0) for r in recs)
    recs = [r for r in recs if int(r.get("attempt") or 0) == latest]
    out: dict[str, Any] = {"attempt": latest, "ranks": len(recs), "covers": recs[0].get("covers"),
                           "status": recs[0].get("status"), "wall_s": max(float(r["wall_s"]) for r in recs),
                           "rank_seconds": sum(float(r["wall_s"]) for r in recs)}
    for k in ("forwards", "tokens_forwarded", "tokens_backward", "head_positions"):
        out[k] = sum(int(r.get(k) or 0) for r in recs)
    flops = [r.get("flops") for r in recs]
    out["flops"] = None if any(f is None for f in flops) else float(sum(flops))
    capacity = [float(r["wall_s"]) * float(r.get("matmul_flops_per_s") or 0) for r in recs]
    out["mfu"] = out["flops"] / sum(capacity) if out["flops"] is not None and all(capacity) else None
    for k in ("chunks_reused", "chunks_total"):
        if recs[0].get(k) is not None:
            out[k] = recs[0][k]
    return out
