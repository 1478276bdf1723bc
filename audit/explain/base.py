"""The explainer registry and the one call shape every method shares (captum style).

``explain(handle, inputs, method=..., target=..., **options) -> Attributions``. A method is a
function registered with :func:`register_explainer`; it receives prepared examples (token ids,
baseline ids, the target function) and returns one result dict per example. Its options are a
pydantic model (:class:`ExplainOptions` and :mod:`audit.options`): an unknown option, a wrong
type or an out-of-range value is an error naming the field, raised before any model work.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import Field, PositiveInt

from audit.explain.attributions import Attributions, ExampleAttribution
from audit.explain.errors import ExplainOptionsError, MethodNotValidError, UnknownMethodError
from audit.explain.targets import MODES, Prepared, prepare, target_mode
from audit.metrics.faithfulness import GAP_WARNING
from audit.models import KINDS
from audit.options import Options, validate_options
from audit.registry import Registry, UnknownNameError
from audit.scoring import default_batch_tokens

if TYPE_CHECKING:
    from audit.models import ModelHandle

logger = logging.getLogger(__name__)



class ExplainOptions(Options):
    """Options every method accepts; a method's own options subclass this."""

    baseline: str | int = Field(default="auto", description=(
        "the token a removed position holds / IG starts from: auto, pad, mask, unk, eos, bos, a token or an id "
        "(audit.explain.targets.baseline_token_id)"))
    max_batch_tokens: PositiveInt | None = Field(
        default=None, description="padded tokens per forward pass (rows × length); None: by device")


class SeededOptions(ExplainOptions):
    """Stochastic methods: the seed (an audit step sets the run's seed unless the entry gives one)."""

    seed: int = 0


ExplainFn = Callable[["ModelHandle", list[Prepared], dict[str, Any], bool], list[dict[str, Any]]]


@dataclass(frozen=True)
class Explainer:
    """A registered attribution method and what it can explain."""

    name: str
    fn: ExplainFn
    layout: str = "token"
    description: str = ""
    reference: str = ""
    options: type[ExplainOptions] = ExplainOptions
    kinds: tuple[str, ...] = KINDS
    #: target modes it can explain (None: all)
    modes: tuple[str, ...] | None = None
    #: differentiable in embedding space: sensitivity-max can re-run it on perturbed embeddings
    gradient: bool = False


#: built-in methods register on import of :mod:`audit.explain`; third-party packages add theirs
#: through the ``transformer_audit.explainers`` entry-point group (a module that registers on import)
_EXPLAINERS: Registry[Explainer] = Registry("explainer", entry_point_group="transformer_audit.explainers")


def register_explainer(
    name: str,
    *,
    layout: str = "token",
    description: str = "",
    reference: str = "",
    options: type[ExplainOptions] = ExplainOptions,
    kinds: Sequence[str] = KINDS,
    modes: Sequence[str] | None = None,
    gradient: bool = False,
) -> Callable[[ExplainFn], ExplainFn]:
    """Register ``fn(handle, prepared, options, progress) -> [per-example dict]`` under ``name``.

    Each dict holds ``scores`` and optionally ``token_scores`` (K, T), ``completeness`` and ``info``.
    """

    def deco(fn: ExplainFn) -> ExplainFn:
        _EXPLAINERS.register(name)(Explainer(
            name=name, fn=fn, layout=layout, description=description, reference=reference, options=options,
            kinds=tuple(kinds), modes=tuple(modes) if modes else None, gradient=gradient))
        return fn

    return deco


def list_explainers() -> list[str]:
    """Names of every registered method."""
    return _EXPLAINERS.names()


def get_explainer(name: str) -> Explainer:
    try:
        return _EXPLAINERS.get(name)
    except UnknownNameError as exc:
        raise UnknownMethodError(f"unknown explain method {name!r}; known: {', '.join(list_explainers())}") from exc


def resolve_options(ex: Explainer, options: dict[str, Any]) -> dict[str, Any]:
    """Every option of ``ex`` with its validated value or default (:class:`ExplainOptionsError`
    naming each field that does not fit)."""
    return validate_options(ex.options, options, f"method {ex.name!r}", ExplainOptionsError).values()


def check_valid(handle: ModelHandle, ex: Explainer, mode: str) -> None:
    """Raise :class:`MethodNotValidError` when ``ex`` cannot explain this kind / target mode."""
    if handle.kind not in ex.kinds:
        raise MethodNotValidError(
            f"method {ex.name!r} is not valid for a {handle.kind} model ({handle.name}); it supports "
            f"{', '.join(ex.kinds)}")
    if ex.modes is not None and mode not in ex.modes:
        ok = [m for m in MODES[handle.kind] if m in ex.modes]
        raise MethodNotValidError(
            f"method {ex.name!r} is not valid for a {handle.kind} model with target mode {mode!r}"
            + (f"; use mode {' or '.join(map(repr, ok))}" if ok else "; no target mode of this kind fits"))


def batch_tokens(handle: ModelHandle, opts: dict[str, Any], grad: bool) -> int:
    """Padded-token budget per forward; gradient passes keep activations, so get a quarter."""
    b = opts.get("max_batch_tokens") or default_batch_tokens(handle)
    return max(1, int(b) // 4) if grad and not opts.get("max_batch_tokens") else int(b)


def explain(
    handle: ModelHandle,
    inputs: Any,
    method: str = "ig",
    target: dict[str, Any] | None = None,
    *,
    progress: bool = False,
    **options: Any,
) -> Attributions:
    """Attribute ``target`` for each input with ``method``.

    Args:
        handle: a loaded model (:func:`audit.load_model`).
        inputs: a text, a list of texts, or (text, pair) tuples for sentence encoders.
        method: a name from :func:`list_explainers`.
        target: kind-specific target (see :mod:`audit.explain.targets`); None uses the kind's
            default (top prediction / predicted class / next token).
        options: method options (e.g. ``n_steps``, ``internal_batch_size`` for IG; ``layers``,
            ``heads`` for attention) plus ``baseline`` and ``max_batch_tokens``.
    """
    ex = get_explainer(method)
    opts = resolve_options(ex, options)
    check_valid(handle, ex, target_mode(handle.kind, target))
    preps = prepare(handle, inputs, target, baseline=opts["baseline"])
    return explain_prepared(handle, preps, method, target=target, progress=progress, **options)


def explain_prepared(
    handle: ModelHandle,
    preps: list[Prepared],
    method: str,
    *,
    target: dict[str, Any] | None = None,
    progress: bool = False,
    **options: Any,
) -> Attributions:
    """:func:`explain` on examples already prepared (several methods share one preparation)."""
    ex = get_explainer(method)
    opts = resolve_options(ex, options)
    check_valid(handle, ex, target_mode(handle.kind, target))
    t0 = time.perf_counter()
    was_training = handle.model.training
    handle.model.eval()
    try:
        outs = ex.fn(handle, preps, opts, progress)
    finally:
        handle.model.train(was_training)
    examples: list[ExampleAttribution] = []
    warnings: list[str] = []
    for p, o in zip(preps, outs, strict=True):
        ts = o.get("token_scores")
        if ts is not None:
            ts = np.asarray(ts, dtype=np.float64)
            if p.target_positions is not None:
                ar = np.arange(p.length)
                for k, pos in enumerate(p.target_positions):
                    ts[k, ar >= pos] = np.nan
        e = ExampleAttribution(
            index=p.index, text=p.text, tokens=p.tokens, scores=np.asarray(o["scores"], dtype=np.float64),
            token_scores=ts, target_names=list(p.target_names), attributable=p.attributable.cpu().numpy(),
            target_positions=p.target_positions, completeness=o.get("completeness"),
            info={**p.info, **o.get("info", {})})
        if ex.layout == "token" and ts is not None:
            e.scores = ts
        gap = e.gap()
        if not math.isnan(gap) and gap > GAP_WARNING:
            cs = [e.target_completeness(k) for k in range(len(e.target_names))]
            bad = [f"{e.target_names[k]!r} {c['gap']:.1%} at {c['steps']} steps" for k, c in enumerate(cs)
                   if c["gap"] is not None and c["gap"] > GAP_WARNING]
            msg = (f"{method}: example {p.index}: completeness gap > {GAP_WARNING:.0%} (met: false) for "
                   f"{'; '.join(bad)}; those attributions do not add up to f(x) − f(baseline)")
            logger.warning(msg)
            warnings.append(msg)
        examples.append(e)
    # the layers and heads an attention method resolved (negative indices, None for all)
    layers, heads = (outs[0]["layers"], outs[0]["heads"]) if outs and "layers" in outs[0] else (None, None)
    return Attributions(
        method=method, layout=ex.layout, examples=examples, model=handle.name, kind=handle.kind,
        target=dict(target or {}),
        options={k: v for k, v in opts.items() if v is None or isinstance(v, (str, int, float, bool, list, tuple, dict))},
        layers=layers, heads=heads, warnings=warnings, duration_s=time.perf_counter() - t0)
