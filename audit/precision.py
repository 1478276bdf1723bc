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

import csv
import io
from dataclasses import dataclass
from importlib.resources import files
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


def _read_measurements() -> dict[str, dict[str, tuple[Measurement, ...]]]:
    """``audit/precision_measured.csv``, transcribed from benchmarks/results/dtype.json of the run
    on the date in MEASURED (tests/test_precision.py checks the two agree): a row per (probe,
    dtype, model) with the :class:`Measurement` fields (``flips`` and ``n_decisions`` empty where
    the probe has no per-item decision) and, for the reader, the primary metric in fp32 and in the
    dtype and the largest |Δ| of an item score."""
    out: dict[str, dict[str, tuple[Measurement, ...]]] = {}
    rows = csv.DictReader(io.StringIO(files("audit").joinpath("precision_measured.csv").read_text(encoding="utf-8")))
    for r in rows:
        decided = r["n_decisions"] != ""
        m = Measurement(r["kind"], r["model"], int(r["n_items"]), int(r["flips"]) if decided else None,
                        int(r["n_decisions"]) if decided else None, float(r["delta_over_half_width"]),
                        int(r["nonfinite"]))
        per = out.setdefault(r["probe"], {})
        per[r["dtype"]] = (*per.get(r["dtype"], ()), m)
    return out


#: probe → dtype → the measurements (one per model kind), from :func:`_read_measurements`
MEASUREMENTS = _read_measurements()


_ALIASES = {"float32": "float32", "fp32": "float32", "float": "float32", "auto": "float32", "float64": "float64",
            "double": "float64", "bfloat16": "bfloat16", "bf16": "bfloat16", "float16": "float16", "fp16": "float16",
            "half": "float16"}


def dtype_name(dtype: torch.dtype | str) -> str:
    """``torch.bfloat16``, ``"bf16"``, ``"torch.bfloat16"`` … → ``"bfloat16"``."""
    s = str(dtype).removeprefix("torch.").lower()
    if s not in _ALIASES:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {', '.join(sorted(_ALIASES))}")
    return _ALIASES[s]


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
