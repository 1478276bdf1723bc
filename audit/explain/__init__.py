"""Attribution and attention explainers on any :class:`~audit.models.ModelHandle`.

One call shape for every method (captum style)::

    from audit.explain import explain, list_explainers
    attr = explain(handle, ["The nurse said [MASK] was tired."], method="ig", n_steps=64)
    attr.to_frame()          # the long table of the run-directory contract
    attr.completeness_gaps() # IG: |Σ attributions − (f(x) − f(baseline))| / |f(x) − f(baseline)|

Methods: ig, saliency, input_x_gradient, gradient_shap, occlusion, lime, kernel_shap, attention,
rollout, attention_flow, grad_rollout, head_importance, patching (per-head activation patching,
:mod:`audit.explain.mechanism`). Targets: see :mod:`audit.explain.targets`.
"""

from __future__ import annotations

from audit.explain import attention as _attention  # noqa: F401  (registers the methods)
from audit.explain import gradient as _gradient  # noqa: F401
from audit.explain import mechanism as _mechanism  # noqa: F401
from audit.explain import perturbation as _perturbation  # noqa: F401
from audit.explain.attributions import Attributions, ExampleAttribution
from audit.explain.base import (
    Explainer,
    explain,
    explain_prepared,
    get_explainer,
    list_explainers,
    register_explainer,
)
from audit.explain.errors import (
    ExplainError,
    InputTooLongError,
    MethodNotValidError,
    OptionError,
    TargetError,
    UnknownMethodError,
)
from audit.explain.step import explain_bias_items, run_explain_step, validate_explain_spec
from audit.explain.targets import prepare

__all__ = [
    "Attributions", "ExampleAttribution", "ExplainError", "Explainer", "InputTooLongError", "MethodNotValidError",
    "OptionError", "TargetError", "UnknownMethodError", "explain", "explain_bias_items", "explain_prepared",
    "get_explainer", "list_explainers", "prepare", "register_explainer", "run_explain_step",
    "validate_explain_spec",
]
