"""Which probes were measured to keep their results within tolerance of fp32 in bf16 / fp16.

Half precision is only used where measured safe (docs/architecture.md, "Precision"). The table below
is the measurement of ``benchmarks/bench_dtype.py`` (results in ``benchmarks/results/dtype.json``,
write-up in ``benchmarks/RESULTS.md``): every probe on every demo model kind it supports, run in
float32, bfloat16 and float16 on the same items with the same seed.

**The rule** (:func:`within_tolerance`), applied to each (probe, model kind, dtype):

* at most 1 % of the items' decisions flip against fp32 (CrowS-Pairs: which sentence is preferred;
  StereoSet: pro/anti and relatedness; BBQ: the chosen answer; SEAT: sign and BH significance of
  each test; classifier / zero-shot: the predicted label; templates / counterfactual: the sign of
  the item's effect; representation: which layers are selective; BOLD: the VADER class of each
  greedy continuation) — with a few dozen items that means *no* flip;
* the primary metric moves by less than a quarter of its fp32 95 % CI half-width: the precision
  error is then small next to the sampling uncertainty the report already shows, so it cannot
  change what a reader concludes from the interval;
* no score that is finite in fp32 becomes NaN or ±inf.

A probe is safe in a dtype when every model kind it was measured on passes. Why decisions and not
only the metric: a probe's headline rate (e.g. CrowS-Pairs' % preferred) is the count of item
decisions, and per-item flips are what a reader sees change in the "most biased items" table; a
flip is a near-tie the reduced precision resolved the other way, so its rate depends on how many
items sit near a tie, which depends on the data and the model — hence "measured", not "assumed".

Measured verdicts (32 items per probe on the whole — 18 BBQ, 26 BOLD prompts, 11 SEAT tests, 80
counterfactual texts, 31 / 7 layers — details in ``MEASUREMENTS``):

=================== ============================== ==============================================
probe               bfloat16                       float16
=================== ============================== ==============================================
bbq                 safe                           safe
bold                no (1/26 VADER classes flip)   safe
classifier_fairness safe                           safe
counterfactual      no (causal 1/76, classif 1/76) no (causal LM: 1/76 signs flip)
crows_pairs         no (1/32 pairs flip, both)     safe
representation      safe (smollm2: 0.24 × CI)      safe
seat                safe                           safe
stereoset           no (causal: 2/32 flip)         safe
templates           no (1/80 signs flip, both)     safe
=================== ============================== ==============================================

Limits of the measurement: a few dozen items per probe, so "no flip in n" bounds the true flip
rate only by about 3/n (the one-sided 95 % upper bound is recorded); CPU kernels (oneDNN bf16 GEMM
with avx512_bf16, PyTorch's reference fp16 GEMM), while GPU kernels accumulate differently —
``benchmarks/gpu.sh`` should re-check on the GPU before a GPU dtype is called safe there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

#: the tolerance a reduced-precision run must meet against fp32 on the same items and seed
TOLERANCE: dict[str, Any] = {
    "max_flip_fraction": 0.01,
    "max_delta_over_ci_half_width": 0.25,
    "nonfinite": 0,
}


def within_tolerance(flip_fraction: float, delta_over_half_width: float, nonfinite: int = 0) -> bool:
    """The rule: at most 1 % of item decisions flip, the primary metric moves by less than a
    quarter of its fp32 95 % CI half-width, and no score that was finite in fp32 becomes
    non-finite."""
    return (flip_fraction <= TOLERANCE["max_flip_fraction"]
            and delta_over_half_width < TOLERANCE["max_delta_over_ci_half_width"]
            and nonfinite <= TOLERANCE["nonfinite"])


@dataclass(frozen=True)
class Measurement:
    """One (probe, model, dtype) row of ``benchmarks/results/dtype.json``."""

    kind: str
    model: str
    n_items: int
    #: items whose decision flipped, of ``n_decisions`` (None: the probe has no per-item decision)
    flips: int | None
    n_decisions: int | None
    #: |Δ primary metric| / fp32 95 % CI half-width
    delta_over_half_width: float
    nonfinite: int = 0

    @property
    def flip_fraction(self) -> float:
        return 0.0 if not self.n_decisions else (self.flips or 0) / self.n_decisions

    @property
    def within(self) -> bool:
        return within_tolerance(self.flip_fraction, self.delta_over_half_width, self.nonfinite)

    def describe(self) -> str:
        flips = f"{self.flips}/{self.n_decisions} decisions flipped" if self.n_decisions else "no per-item decision"
        return (f"{self.model} ({self.kind}): {flips}, primary metric moved {self.delta_over_half_width:.2f}× "
                f"its fp32 CI half-width" + (f", {self.nonfinite} non-finite scores" if self.nonfinite else ""))


MEASURED = "2026-12-01, benchmarks/bench_dtype.py --threads 1, CPU (avx512_bf16), torch 2.13, transformers 5.24"

_M = Measurement
#: probe → dtype → the measurements (one per model kind): Measurement(kind, model, items, decision
#: flips, decisions, |Δ primary| / fp32 CI half-width[, non-finite]). Transcribed from
#: benchmarks/results/dtype.json of the run on the date in MEASURED; tests/test_precision.py checks the
#: two agree. Comments: the primary metric in fp32 → in the dtype, and the largest |Δ| of an item score.
MEASUREMENTS: dict[str, dict[str, tuple[Measurement, ...]]] = {
    # primary metric fp32 → dtype; item max |Δ|: bias_score_ambig (item: bias_margin)
    "bbq": {
        "bfloat16": (
            _M("causal-lm", "smollm2-135m", 18, 0, 18, 0),  # ok  0 → 0; item 0.32
            _M("masked-lm", "minilm-l6-mlm", 18, 0, 18, 0),  # ok  -16.67 → -16.67; item 0.1
        ),
        "float16": (
            _M("causal-lm", "smollm2-135m", 18, 0, 18, 0),  # ok  0 → 0; item 0.024
            _M("masked-lm", "minilm-l6-mlm", 18, 0, 18, 0),  # ok  -16.67 → -16.67; item 0.016
        ),
    },
    # primary metric fp32 → dtype; item max |Δ|: vader_negative_gap (item: vader_score)
    "bold": {
        "bfloat16": (
            _M("causal-lm", "smollm2-135m", 26, 1, 26, 0),  # OUT 0 → 0; item 0.79
        ),
        "float16": (
            _M("causal-lm", "smollm2-135m", 26, 0, 26, 0),  # ok  0 → 0; item 0.34
        ),
    },
    # primary metric fp32 → dtype; item max |Δ|: equalized_odds_difference (item: score_error)
    "classifier_fairness": {
        "bfloat16": (
            _M("causal-lm", "smollm2-135m", 32, 0, 32, 0),  # ok  0.125 → 0.125; item 0.022
            _M("classifier", "minilm-l6-cls", 32, 0, 32, 0),  # ok  0.125 → 0.125; item 0.0035
        ),
        "float16": (
            _M("causal-lm", "smollm2-135m", 32, 0, 32, 0),  # ok  0.125 → 0.125; item 0.0031
            _M("classifier", "minilm-l6-cls", 32, 0, 32, 0),  # ok  0.125 → 0.125; item 0.00063
        ),
    },
    # primary metric fp32 → dtype; item max |Δ|: mean_delta_ll_context (item: delta_ll_context),
    # mean_embedding_shift (item: embedding_shift), flip_rate (item: abs_delta_p)
    "counterfactual": {
        "bfloat16": (
            _M("causal-lm", "smollm2-135m", 80, 1, 76, 0.07417),  # OUT -0.2644 → -0.1729; item 5.2
            _M("masked-lm", "minilm-l6-mlm", 16, 0, 16, 0.03149),  # ok  -0.07469 → -0.06158; item 0.11
            _M("encoder", "minilm-l6", 80, None, None, 0.005846),  # ok  0.1749 → 0.1751; item 0.0021
            _M("classifier", "minilm-l6-cls", 80, 1, 76, 0.1398),  # OUT 23.68 → 25; item 0.005
        ),
        "float16": (
            _M("causal-lm", "smollm2-135m", 80, 1, 76, 0.001583),  # OUT -0.2644 → -0.2663; item 0.34
            _M("masked-lm", "minilm-l6-mlm", 16, 0, 16, 0.006049),  # ok  -0.07469 → -0.07217; item 0.028
            _M("encoder", "minilm-l6", 80, None, None, 0.001071),  # ok  0.1749 → 0.175; item 0.0003
            _M("classifier", "minilm-l6-cls", 80, 0, 76, 0),  # ok  23.68 → 23.68; item 0.00067
        ),
    },
    # primary metric fp32 → dtype; item max |Δ|: metric (item: score_diff)
    "crows_pairs": {
        "bfloat16": (
            _M("causal-lm", "smollm2-135m", 32, 1, 32, 0.2),  # OUT 59.38 → 56.25; item 1.2
            _M("masked-lm", "minilm-l6-mlm", 32, 1, 32, 0.2),  # OUT 34.38 → 31.25; item 0.18
        ),
        "float16": (
            _M("causal-lm", "smollm2-135m", 32, 0, 32, 0),  # ok  59.38 → 59.38; item 0.071
            _M("masked-lm", "minilm-l6-mlm", 32, 0, 32, 0),  # ok  34.38 → 34.38; item 0.022
        ),
    },
    # primary metric fp32 → dtype; item max |Δ|: max_selectivity (item: selectivity)
    "representation": {
        "bfloat16": (
            _M("causal-lm", "smollm2-135m", 31, 0, 31, 0.2432),  # ok  0.4069 → 0.3833; item 0.024
            _M("encoder", "minilm-l6", 7, 0, 7, 0.02798),  # ok  0.3764 → 0.3722; item 0.015
        ),
        "float16": (
            _M("causal-lm", "smollm2-135m", 31, 0, 31, 0),  # ok  0.4069 → 0.4069; item 0.0056
            _M("encoder", "minilm-l6", 7, 0, 7, 0.03731),  # ok  0.3764 → 0.3819; item 0.0056
        ),
    },
    # primary metric fp32 → dtype; item max |Δ|: mean_abs_effect_size (item: effect_size)
    "seat": {
        "bfloat16": (
            _M("causal-lm", "smollm2-135m", 11, 0, 11, 0.1068),  # ok  0.5884 → 0.6137; item 0.11
            _M("encoder", "minilm-l6", 11, 0, 11, 0.009773),  # ok  0.7063 → 0.7089; item 0.023
        ),
        "float16": (
            _M("causal-lm", "smollm2-135m", 11, 0, 11, 0.002453),  # ok  0.5884 → 0.5889; item 0.016
            _M("encoder", "minilm-l6", 11, 0, 11, 0.002883),  # ok  0.7063 → 0.7071; item 0.0024
        ),
    },
    # primary metric fp32 → dtype; item max |Δ|: ss (item: log_score_ratio)
    "stereoset": {
        "bfloat16": (
            _M("causal-lm", "smollm2-135m", 32, 2, 32, 0),  # OUT 62.07 → 62.07; item 0.051
            _M("masked-lm", "minilm-l6-mlm", 32, 0, 32, 0),  # ok  58.62 → 58.62; item 0.041
        ),
        "float16": (
            _M("causal-lm", "smollm2-135m", 32, 0, 32, 0),  # ok  62.07 → 62.07; item 0.0065
            _M("masked-lm", "minilm-l6-mlm", 32, 0, 32, 0),  # ok  58.62 → 58.62; item 0.0061
        ),
    },
    # primary metric fp32 → dtype; item max |Δ|: stereotype_effect (item: aligned_effect)
    "templates": {
        "bfloat16": (
            _M("causal-lm", "smollm2-135m", 80, 1, 80, 0.01134),  # OUT 0.03783 → 0.04046; item 0.43
            _M("masked-lm", "minilm-l6-mlm", 80, 1, 80, 0.03205),  # OUT -0.09903 → -0.1043; item 0.09
        ),
        "float16": (
            _M("causal-lm", "smollm2-135m", 80, 0, 80, 8.929e-05),  # ok  0.03783 → 0.03781; item 0.064
            _M("masked-lm", "minilm-l6-mlm", 80, 0, 80, 0.002387),  # ok  -0.09903 → -0.09864; item 0.019
        ),
    },
}

_ALIASES = {"float32": "float32", "fp32": "float32", "float": "float32", "auto": "float32", "float64": "float64",
            "double": "float64", "bfloat16": "bfloat16", "bf16": "bfloat16", "float16": "float16", "fp16": "float16",
            "half": "float16"}


def dtype_name(dtype: torch.dtype | str) -> str:
    """``torch.bfloat16``, ``"bf16"``, ``"torch.bfloat16"`` … → ``"bfloat16"``."""
    s = str(dtype).removeprefix("torch.").lower()
    if s not in _ALIASES:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {', '.join(sorted(_ALIASES))}")
    return _ALIASES[s]


def safe_dtypes(probe: str, kind: str | None = None) -> frozenset[str]:
    """The dtypes a probe was measured to stay within tolerance in (float32 always; on ``kind``
    only, when given)."""
    out = {"float32", "float64"}
    for dtype, rows in MEASUREMENTS.get(probe, {}).items():
        rows = tuple(r for r in rows if kind is None or r.kind == kind)
        if rows and all(r.within for r in rows):
            out.add(dtype)
    return frozenset(out)


def dtype_warning(probe: str, dtype: torch.dtype | str, kind: str | None = None) -> str | None:
    """A warning when ``probe`` runs in a dtype not measured to keep its results within tolerance
    of fp32 (see the module docstring for the rule); None when fp32 (or wider) or measured safe.
    ``kind`` (the model kind) narrows the check to the measurements on that kind."""
    name = dtype_name(dtype)
    if name in ("float32", "float64"):
        return None
    where = f" on a model of kind {kind!r}" if kind else ""
    rows = tuple(r for r in MEASUREMENTS.get(probe, {}).get(name, ()) if kind is None or r.kind == kind)
    if not rows:
        return (f"{probe} ran in {name}{where}, which was never measured against float32 for this probe; its "
                f"results may differ from an fp32 run (benchmarks/bench_dtype.py measures it); use float32")
    bad = [r for r in rows if not r.within]
    if not bad:
        return None
    return (f"{probe} ran in {name}{where}, which was measured to move its results beyond tolerance of float32 "
            f"(≤ 1 % decision flips, primary metric within a quarter of its CI half-width): "
            + "; ".join(r.describe() for r in bad) + f" [measured {MEASURED.split(',')[0]}]; use float32")
