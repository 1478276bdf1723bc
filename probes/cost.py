"""Compute cost of a model on the audit's device: size, FLOPs, memory and speed.

* **Parameters** — total, embedding (input token and position embeddings) and non-embedding,
  the N of Kaplan et al. 2020 ("Scaling Laws for Neural Language Models").
* **Forward FLOPs per token** — measured with :class:`torch.utils.flop_counter.FlopCounterMode`
  (matrix products: every ``mm``/``bmm``/``addmm``/attention kernel, the convention of FLOP
  counts in the literature) on one sequence of each of two lengths, eager attention so the
  attention products are counted, beside the analytic estimate

      2·N_matmul + 4·n_layer·L·d_attn

  where N_matmul is the non-embedding parameters in linear layers plus the output projection
  (the de-embedding: 2·d_model·vocab FLOPs per token even when its weights are tied to the
  input embedding), and 4·n_layer·L·d_attn the two attention products (QKᵀ and the weighted sum
  of values, each 2·L·d_attn per token over a full L × L score matrix as dense kernels compute
  it). Kaplan et al. count 2N + 2·n_layer·n_ctx·d_attn: the same weight term, and the attention
  term of the logits alone with a causal mask halving the work in principle.
* **Weight bytes per dtype** and **peak memory** of the process so far (``torch.cuda.
  max_memory_allocated`` on CUDA, the peak resident set size ``ru_maxrss`` on CPU — which
  includes everything the audit loaded before this probe).
* **Speed** — prefill tokens/s (a forward over ``prefill_length`` tokens per row) and, for
  causal LMs, decode tokens/s (greedy steps with the KV cache, one new token per row per step)
  and first-token latency (prefill plus the first sampled token at batch 1), at batch 1 and at
  the batch that fills the probe's token budget (:func:`audit.scoring.default_batch_tokens`),
  each the median of ``repeats`` timed runs after a warm-up, with a distribution-free interval
  for the median from order statistics (the binomial method; with fewer than 6 repeats no pair
  reaches 95 % and the range is given with its coverage).
* **MFU** — prefill FLOP/s (measured FLOPs per token × tokens/s at the budget batch) over the
  device's dense matmul rate measured in the same run (a GEMM of the model's width and dtype).
"""

from __future__ import annotations

import inspect
import math
import resource
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from pydantic import Field, PositiveInt
from scipy import stats as st
from torch.utils.flop_counter import FlopCounterMode

from audit import scoring
from audit.metering import architecture, linear_weights, run_matmul_rate
from audit.options import ProbeOptions
from audit.probe import Probe, ProbeError, register_probe
from audit.results import MetricInfo, MetricValue, ProbeResult

if TYPE_CHECKING:
    from audit.models import ModelHandle

REF_N = "Kaplan et al. 2020"
REF_FLOPS = "torch.utils.flop_counter.FlopCounterMode; Kaplan et al. 2020"


def _info(name: str, description: str, unit: str, higher: bool | None, ref: str = "") -> MetricInfo:
    return MetricInfo(name, description, ideal=None, higher_is_better=higher, unit=unit, reference=ref)


METRICS: dict[str, MetricInfo] = {m.name: m for m in (
    _info("parameters", "total parameters", "", None, REF_N),
    _info("embedding_parameters", "parameters of the input token and position embeddings", "", None, REF_N),
    _info("non_embedding_parameters", "parameters outside the input embeddings (N)", "", None, REF_N),
    _info("forward_flops_per_token", "forward FLOPs per token measured by FlopCounterMode at the short length",
          "FLOP", False, REF_FLOPS),
    _info("forward_flops_per_token_long", "forward FLOPs per token measured at the long length", "FLOP", False,
          REF_FLOPS),
    _info("analytic_flops_per_token", "2·N_matmul + 4·n_layer·L·d_attn at the short length", "FLOP", False, REF_N),
    _info("analytic_flops_per_token_long", "the analytic estimate at the long length", "FLOP", False, REF_N),
    _info("flops_measured_over_analytic", "measured / analytic FLOPs per token at the long length (1 = the "
          "estimate is exact)", "", None, REF_FLOPS),
    _info("weight_bytes", "bytes of parameters and buffers as loaded", "B", False),
    _info("peak_memory_mb", "peak memory of the audit process so far (CUDA allocated, or CPU resident set size)",
          "MB", False),
    _info("prefill_tokens_per_s", "prefill (forward) tokens per second at batch 1", "tokens/s", True),
    _info("prefill_tokens_per_s_batch", "prefill tokens per second at the batch that fills the token budget",
          "tokens/s", True),
    _info("decode_tokens_per_s", "greedy decode tokens per second at batch 1 (KV cache)", "tokens/s", True),
    _info("decode_tokens_per_s_batch", "greedy decode tokens per second, all rows, at the budget-filling batch",
          "tokens/s", True),
    _info("first_token_latency_ms", "prefill of one prompt plus its first new token, batch 1", "ms", False),
    _info("matmul_gflops", "dense matmul rate of the device measured in this run", "GFLOP/s", True),
    _info("prefill_mfu", "prefill FLOP/s at the budget batch over the measured matmul rate", "", True),
)}


# --------------------------------------------------------------------------------------------
# size and FLOPs
# --------------------------------------------------------------------------------------------


def parameter_counts(model: torch.nn.Module) -> dict[str, int]:
    """Total, embedding (every ``nn.Embedding``: tokens, positions, token types) and the rest.
    Tied output weights are counted once."""
    emb = sum({id(m.weight): m.weight.numel() for m in model.modules()
               if isinstance(m, torch.nn.Embedding)}.values())  # keyed by tensor: tied weights once
    total = sum(p.numel() for p in model.parameters())
    return {"parameters": int(total), "embedding_parameters": int(emb), "non_embedding_parameters": int(total - emb)}


def weight_bytes(model: torch.nn.Module) -> dict[str, int]:
    """Bytes of parameters and buffers per dtype (tied weights once: ``parameters()`` yields a
    shared tensor once)."""
    out: dict[str, int] = {}
    for t in [*model.parameters(), *model.buffers()]:
        k = str(t.dtype).replace("torch.", "")
        out[k] = out.get(k, 0) + t.numel() * t.element_size()
    return out


def _arch(cfg: Any) -> dict[str, int]:
    """n_layer, d_model, d_attn (query heads × head dim) and vocabulary from a config."""
    try:
        return architecture(cfg)
    except ValueError as exc:
        raise ProbeError(f"cost: {exc}") from exc


def analytic_flops_per_token(handle: ModelHandle, length: int) -> float:
    """2·N_matmul + 4·n_layer·L·d_attn (module docstring): N_matmul = weights of every linear
    layer (``nn.Linear`` and GPT-2's ``Conv1D``) that the forward runs, the output projection
    counted even when tied to the input embedding."""
    a = _arch(handle.config)
    return 2.0 * linear_weights(handle.model) + 4.0 * a["n_layer"] * length * a["d_attn"]


def measured_flops_per_token(handle: ModelHandle, length: int) -> float:
    """FlopCounterMode's count for one forward over ``length`` tokens, divided by ``length``
    (eager attention, so the attention products are matmuls the counter sees)."""
    ids = _ids(handle, 1, length)
    with handle.attentions(), torch.inference_mode(), FlopCounterMode(display=False) as counter:
        handle.model(input_ids=ids, attention_mask=torch.ones_like(ids))
    return counter.get_total_flops() / length


def _ids(handle: ModelHandle, rows: int, length: int, seed: int = 0) -> torch.Tensor:
    """Random ordinary token ids (special tokens avoided), ``rows × length``, on the device."""
    g = torch.Generator().manual_seed(seed)
    vocab = int(getattr(handle.config, "vocab_size", 0) or len(handle.tokenizer))
    special = set(handle.tokenizer.all_special_ids)
    ids = torch.randint(0, vocab, (rows, length), generator=g)
    if special:
        ok = torch.as_tensor([t for t in range(min(vocab, 5000)) if t not in special])
        bad = torch.isin(ids, torch.as_tensor(sorted(special)))
        ids[bad] = ok[torch.randint(0, len(ok), (int(bad.sum()),), generator=g)]
    return ids.to(handle.device)


# --------------------------------------------------------------------------------------------
# timing
# --------------------------------------------------------------------------------------------


def median_interval(x: np.ndarray, confidence: float = 0.95) -> tuple[float, float, float]:
    """Distribution-free interval for the median of ``x`` from order statistics: the widest
    symmetric pair (x₍k₎, x₍n−k+1₎) whose coverage 1 − 2·P(Bin(n, ½) < k) reaches ``confidence``
    (the narrowest such pair); the range with its coverage when n is too small. Returns
    (low, high, coverage)."""
    s = np.sort(np.asarray(x, dtype=np.float64))
    n = len(s)
    if n == 0:
        return float("nan"), float("nan"), float("nan")
    k = 1  # the outermost pair; move inwards while the next pair still reaches ``confidence``
    while k < n // 2 and 1.0 - 2.0 * float(st.binom.cdf(k, n, 0.5)) >= confidence:
        k += 1
    return float(s[k - 1]), float(s[n - k]), 1.0 - 2.0 * float(st.binom.cdf(k - 1, n, 0.5))


def _sync(handle: ModelHandle) -> None:
    if handle.device.type == "cuda":
        torch.cuda.synchronize(handle.device)


def _forward_times(handle: ModelHandle, ids: torch.Tensor, repeats: int) -> np.ndarray:
    """Seconds of each of ``repeats`` forwards over ``ids``, after a warm-up (allocator, kernels, caches)."""
    out = []
    for _ in range(repeats + 1):
        _sync(handle)
        t0 = time.perf_counter()
        with torch.inference_mode():
            handle.model(input_ids=ids, attention_mask=torch.ones_like(ids))
        _sync(handle)
        out.append(time.perf_counter() - t0)
    return np.asarray(out[1:])  # the first is the warm-up


def _decode_run(handle: ModelHandle, ids: torch.Tensor, new_tokens: int) -> tuple[float, float]:
    """(seconds to the first new token — the prefill forward and its argmax —, seconds for the
    remaining ``new_tokens − 1`` greedy steps) with the model's KV cache."""
    model = handle.model
    # transformers 5 renamed past_key_values to cache (the old name still works, with a warning)
    name = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    att = torch.ones_like(ids)
    with torch.inference_mode():
        _sync(handle)
        t0 = time.perf_counter()
        out = model(input_ids=ids, attention_mask=att, use_cache=True)
        nxt = out.logits[:, -1].argmax(-1, keepdim=True)
        _sync(handle)
        t1 = time.perf_counter()
        for _ in range(new_tokens - 1):
            att = torch.cat([att, torch.ones_like(nxt)], dim=1)
            out = model(input_ids=nxt, attention_mask=att, use_cache=True, **{name: out[name]})
            nxt = out.logits[:, -1].argmax(-1, keepdim=True)
        _sync(handle)
        t2 = time.perf_counter()
    return t1 - t0, t2 - t1


def peak_memory_mb(handle: ModelHandle) -> tuple[float, str]:
    """The process's peak memory so far and how it was read."""
    if handle.device.type == "cuda":
        return torch.cuda.max_memory_allocated(handle.device) / 2**20, "torch.cuda.max_memory_allocated"
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return kb / 1024.0, "peak resident set size (getrusage ru_maxrss) of the audit process"


# --------------------------------------------------------------------------------------------
# the probe
# --------------------------------------------------------------------------------------------


@register_probe("cost")
class Cost(Probe):
    kinds = ("causal-lm", "masked-lm", "encoder", "classifier")
    metrics = METRICS
    primary_metric = "decode_tokens_per_s"
    description = ("compute cost: parameters, forward FLOPs per token (FlopCounterMode vs 2N + attention), weight "
                   "bytes, peak memory, prefill / decode tokens/s and first-token latency with intervals")

    class Options(ProbeOptions):
        """``lengths``: the two sequence lengths of the FLOP count (capped at the model's maximum);
        ``prefill_length`` tokens per row and ``new_tokens`` greedy steps for the speed runs;
        ``batch_tokens``: the budget the large batch fills (default: the scoring budget of the device)."""

        data: None = Field(default=None, description="none: cost measures the model on random token ids")
        lengths: tuple[PositiveInt, PositiveInt] = (128, 512)
        prefill_length: PositiveInt = 128
        new_tokens: PositiveInt = 16
        repeats: PositiveInt = 5
        batch_tokens: PositiveInt | None = None
        matmul_seconds: float = Field(default=1.0, gt=0)

    def score(self, handle: ModelHandle, data: str | Path | None, opts: Cost.Options, *, seed: int,
              progress: bool) -> ProbeResult:
        """Measure the model."""
        new_tokens, repeats = opts.new_tokens, opts.repeats
        causal = handle.kind == "causal-lm"
        if causal and new_tokens < 2:
            raise ProbeError("cost: new_tokens must be at least 2 (one first token, then decode steps)")
        cap = handle.max_length
        short, long_ = (min(int(x), cap) for x in sorted(opts.lengths))
        plen = min(opts.prefill_length, cap - (new_tokens if causal else 0))
        if plen < 1:
            raise ProbeError(f"cost: {handle.name} accepts {cap} tokens, too few for new_tokens={new_tokens}")
        budget = int(opts.batch_tokens or scoring.default_batch_tokens(handle))
        rows = max(1, budget // (plen + (new_tokens if causal else 0)))

        summary: dict[str, MetricValue] = {k: MetricValue.from_info(METRICS[k], float(v), ci_method="exact count")
                                           for k, v in parameter_counts(handle.model).items()}
        measured = {L: measured_flops_per_token(handle, L) for L in (short, long_)}
        analytic = {L: analytic_flops_per_token(handle, L) for L in (short, long_)}
        for suffix, L in (("", short), ("_long", long_)):
            summary[f"forward_flops_per_token{suffix}"] = MetricValue.from_info(
                METRICS[f"forward_flops_per_token{suffix}"], measured[L], n=L, ci_method="exact count",
                test=f"sequence length {L}")
            summary[f"analytic_flops_per_token{suffix}"] = MetricValue.from_info(
                METRICS[f"analytic_flops_per_token{suffix}"], analytic[L], n=L, test=f"sequence length {L}")
        summary["flops_measured_over_analytic"] = MetricValue.from_info(
            METRICS["flops_measured_over_analytic"], measured[long_] / analytic[long_], n=long_)
        wb = weight_bytes(handle.model)
        summary["weight_bytes"] = MetricValue.from_info(METRICS["weight_bytes"], float(sum(wb.values())),
                                                        ci_method="exact count")

        rows_timed: list[dict[str, Any]] = []

        def speed(name: str, times: np.ndarray, rates: np.ndarray) -> None:
            """The median of ``rates`` (one per timed repeat) with its order-statistic interval."""
            lo, hi, cov = median_interval(rates)
            summary[name] = MetricValue.from_info(
                METRICS[name], float(np.median(rates)), ci_low=lo, ci_high=hi, n=len(rates),
                ci_method=f"order statistics of the median ({100 * cov:.1f} % coverage)",
                warning="" if cov >= 0.95 else f"{len(rates)} repeats: the interval is the range ({100 * cov:.1f} %)")
            rows_timed.extend({"measurement": name, "repeat": i, "seconds": float(t), "value": float(r)}
                              for i, (t, r) in enumerate(zip(times, rates, strict=True)))

        for b, suffix in ((1, ""), (rows, "_batch")):
            ids = _ids(handle, b, plen, seed=seed)
            if not causal:
                times = _forward_times(handle, ids, repeats)
                speed(f"prefill_tokens_per_s{suffix}", times, b * plen / times)
                continue
            # one run gives all three: the prefill forward (+ argmax) is the first token's latency
            _decode_run(handle, ids, 2)  # warm-up
            runs = np.asarray([_decode_run(handle, ids, new_tokens) for _ in range(repeats)])
            speed(f"prefill_tokens_per_s{suffix}", runs[:, 0], b * plen / runs[:, 0])
            speed(f"decode_tokens_per_s{suffix}", runs[:, 1], b * (new_tokens - 1) / runs[:, 1])
            if b == 1:
                speed("first_token_latency_ms", runs[:, 0], 1000.0 * runs[:, 0])
        # a dense GEMM of the model's width (512 × d_model → 4·d_model) in its dtype
        rate = run_matmul_rate(handle.model, handle.config, handle.dtype, handle.device,
                               opts.matmul_seconds)["matmul_flops_per_s"]
        summary["matmul_gflops"] = MetricValue.from_info(METRICS["matmul_gflops"], rate / 1e9,
                                                         test=f"{opts.matmul_seconds:g} s of 512×d·d×4d GEMMs")
        pf = summary["prefill_tokens_per_s_batch"]
        flops_at = analytic_flops_per_token(handle, plen) * measured[short] / analytic[short]
        summary["prefill_mfu"] = MetricValue.from_info(
            METRICS["prefill_mfu"], pf.value * flops_at / rate,
            ci_low=(pf.ci_low or math.nan) * flops_at / rate, ci_high=(pf.ci_high or math.nan) * flops_at / rate,
            n=pf.n, ci_method="the prefill interval scaled")
        mem, how = peak_memory_mb(handle)
        summary["peak_memory_mb"] = MetricValue.from_info(METRICS["peak_memory_mb"], mem, test=how)
        info = {
            "primary_metric": self.primary_metric, "device": str(handle.device), "dtype": str(handle.dtype).replace("torch.", ""),
            "torch_threads": torch.get_num_threads(), "quantization": handle.quantization,
            "weight_bytes_by_dtype": wb, "architecture": _arch(handle.config), "flop_lengths": [short, long_],
            "flops": {"measured": {str(k): v for k, v in measured.items()},
                      "analytic": {str(k): v for k, v in analytic.items()},
                      "counter": "torch.utils.flop_counter.FlopCounterMode (matmul FLOPs, eager attention)",
                      "estimate": "2·N_matmul + 4·n_layer·L·d_attn"},
            "speed": {"prefill_length": plen, "new_tokens": new_tokens if causal else None, "batch_rows": rows,
                      "batch_tokens": budget, "repeats": repeats, "decoding": "greedy, KV cache",
                      "inputs": "random ordinary token ids (seeded)"},
            "peak_memory": how,
        }
        warnings = [f"weights were quantized ({handle.quantization}): speed and memory are those of the dequantized "
                    "model as loaded, not of the quantized runtime"] if handle.quantization else []
        items = pd.DataFrame(rows_timed, columns=["measurement", "repeat", "seconds", "value"])
        return ProbeResult("cost", summary, items, warnings=warnings, info=info, item_text=["measurement"])
