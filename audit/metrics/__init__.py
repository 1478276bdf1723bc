"""Interpretability metrics: how far an attribution can be trusted.

Pure functions (numpy, model-agnostic) for completeness, comprehensiveness / sufficiency / AOPC,
deletion / insertion curves, τ leave-one-out, rank agreement, attention entropy and
plausibility; Captum's infidelity and sensitivity-max; and :func:`evaluate`, which scores
attributions of a real model with batched perturbations. Every metric declares a
:class:`~audit.results.MetricInfo` in :data:`METRICS`.
"""

from __future__ import annotations

from audit.metrics.agreement import rank_agreement
from audit.metrics.attention import attention_entropy
from audit.metrics.evaluate import (
    DEFAULT_METRICS,
    METRIC_GROUPS,
    check_metrics,
    evaluate,
    summarize,
)
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
from audit.metrics.info import METRICS, list_metrics, metric_info
from audit.metrics.plausibility import plausibility_auprc, plausibility_token_f1, rationale_mask
from audit.metrics.robustness import infidelity_tokens, sensitivity_tokens

__all__ = [
    "DEFAULT_BINS", "DEFAULT_METRICS", "METRICS", "METRIC_GROUPS", "aopc", "attention_entropy", "check_metrics",
    "completeness_gap", "comprehensiveness", "curve_auc", "deletion_curve", "evaluate", "infidelity_tokens",
    "insertion_curve", "leave_one_out", "list_metrics", "metric_info", "plausibility_auprc",
    "plausibility_token_f1", "rank_agreement", "rationale_mask", "sensitivity_tokens", "sufficiency", "summarize",
    "tau_loo",
]
