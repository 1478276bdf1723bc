"""Interpretability metrics: how far an attribution can be trusted.

Pure functions (numpy, model-agnostic) for completeness, comprehensiveness / sufficiency / AOPC,
deletion / insertion curves, τ leave-one-out, rank agreement, attention entropy and
plausibility; Captum's infidelity and sensitivity-max. Every metric declares a
:class:`~audit.results.MetricInfo` in :data:`METRICS`. The driver that scores attributions of a
real model with batched perturbations lives next to the explainers
(:func:`audit.explain.evaluate.evaluate`).
"""

from __future__ import annotations

from audit.metrics.agreement import rank_agreement
from audit.metrics.attention import attention_entropy
from audit.metrics.faithfulness import (
    DEFAULT_BINS,
    aopc,
    completeness_gap,
    comprehensiveness,
    curve_auc,
    deletion_curve,
    insertion_curve,
    leave_one_out,
    sufficiency,
    tau_loo,
)
from audit.metrics.info import METRICS, metric_info
from audit.metrics.plausibility import plausibility_auprc, plausibility_token_f1, rationale_mask
from audit.metrics.robustness import infidelity_tokens, sensitivity_tokens

__all__ = [
    "DEFAULT_BINS", "METRICS", "aopc", "attention_entropy", "completeness_gap", "comprehensiveness", "curve_auc",
    "deletion_curve", "infidelity_tokens", "insertion_curve", "leave_one_out", "metric_info",
    "plausibility_auprc", "plausibility_token_f1", "rank_agreement", "rationale_mask", "sensitivity_tokens",
    "sufficiency", "tau_loo",
]
