"""Gradient attributions on the word-embedding layer (Captum-backed).

* ``ig`` — Integrated Gradients (Sundararajan et al. 2017) with Captum's
  ``LayerIntegratedGradients`` on ``handle.input_embeddings()`` (word embeddings only: position
  and segment embeddings stay on the path's both ends). Several examples and IG steps share a
  forward (``internal_batch_size``). Targets with several outputs (generation) use a hand-batched
  IG: one forward over a chunk of steps, one backward per generated token — the same Gauss–
  Legendre points and weights as Captum. The completeness gap
  |Σ attributions − (f(x) − f(x'))| / |f(x) − f(x')| is always computed.
* ``saliency`` — ‖∂f/∂eᵢ‖₂ per token (Simonyan et al. 2014).
* ``input_x_gradient`` — Σ_d eᵢ,d · ∂f/∂eᵢ,d (Shrikumar et al. 2016).
* ``gradient_shap`` — expected gradients from the baseline with input noise (Lundberg & Lee 2017).

Positions held fixed (special tokens, the [MASK] being predicted, the causal prefix token) get 0.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tqdm.auto import tqdm

from audit.explain.base import batch_tokens, register_explainer
from audit.explain.errors import OptionError
from audit.explain.targets import Prepared, collate, embed_ids
from audit.scoring import length_sorted_batches

if TYPE_CHECKING:
    from audit.models import ModelHandle

INTEGRATION_METHODS = ("gausslegendre", "riemann_trapezoid", "riemann_left", "riemann_right", "riemann_middle")


def _expand(p: Prepared) -> int:
    """Forward rows one input row becomes inside the target (PLL builds one copy per token)."""
    return max(1, int(p.aux[0].sum())) if p.fn.mode == "pll" else 1


def _completeness(attr_sum: np.ndarray, fx: np.ndarray, fb: np.ndarray, n_steps: int) -> dict[str, Any]:
    from audit.metrics import completeness_gap

    delta = attr_sum - (fx - fb)
    gap = [completeness_gap(float(s), float(a), float(b)) for s, a, b in zip(attr_sum, fx, fb, strict=True)]
    return {"f_input": fx.tolist(), "f_baseline": fb.tolist(), "attribution_sum": attr_sum.tolist(),
            "delta": delta.tolist(), "gap": gap, "n_steps": n_steps}


def _ig_captum(handle: ModelHandle, batch: list[Prepared], n_steps: int, ibs: int, integration: str
               ) -> list[dict[str, Any]]:
    from captum.attr import LayerIntegratedGradients

    layer = handle.input_embeddings()
    fn = batch[0].fn
    ids, base, attn, aux = collate(batch)

    def forward(x: torch.Tensor, a: torch.Tensor, *xa: torch.Tensor) -> torch.Tensor:
        return fn(layer(x), a, *xa)[:, 0]

    lig = LayerIntegratedGradients(forward, layer)
    with torch.enable_grad():
        attr = lig.attribute(ids, baselines=base, additional_forward_args=(attn, *aux), n_steps=n_steps,
                             method=integration, internal_batch_size=max(ibs, 2 * len(batch)))
    tok = attr.sum(-1).detach().double().cpu().numpy()
    with torch.no_grad():
        fx = forward(ids, attn, *aux).double().cpu().numpy()
        fb = forward(base, attn, *aux).double().cpu().numpy()
    outs = []
    for r, p in enumerate(batch):
        s = tok[r, : p.length][None]
        outs.append({"scores": s, "token_scores": s,
                     "completeness": _completeness(s.sum(1), fx[r : r + 1], fb[r : r + 1], n_steps)})
    return outs


def ig_embeddings(p: Prepared, e: torch.Tensor, e0: torch.Tensor, n_steps: int, rows: int,
                  integration: str = "gausslegendre") -> torch.Tensor:
    """IG of every output of ``p``'s target from embeddings ``e0`` to ``e`` (both (1, T, H)): one
    forward per chunk of ``rows`` steps, one backward per output. Returns (K, T)."""
    from captum.attr._utils.approximation_methods import approximation_parameters

    step_fn, alpha_fn = approximation_parameters(integration)
    alphas = torch.tensor(alpha_fn(n_steps), dtype=torch.float32, device=e.device)
    weights = torch.tensor(step_fn(n_steps), dtype=torch.float32, device=e.device)
    diff = (e - e0).detach()
    k_n = p.n_targets
    acc = torch.zeros((k_n, *e.shape[1:]), dtype=torch.float32, device=e.device)
    attn = p.attn()[None]
    with torch.enable_grad():
        for c0 in range(0, n_steps, rows):
            a = alphas[c0 : c0 + rows].to(e.dtype)
            b = a.shape[0]
            x = (e0 + a[:, None, None] * diff).detach().requires_grad_(True)
            out = p.fn(x, attn.expand(b, -1), *(t.expand(b, *t.shape[1:]) for t in p.aux))
            w = weights[c0 : c0 + b, None, None]
            for k in range(k_n):
                (g,) = torch.autograd.grad(out[:, k].sum(), x, retain_graph=k < k_n - 1)
                acc[k] += (w * g.float()).sum(0)
    return (acc * diff[0].float()).sum(-1)


def ig_multi(handle: ModelHandle, p: Prepared, n_steps: int, rows: int, integration: str = "gausslegendre"
             ) -> dict[str, Any]:
    """Hand-batched IG for a target with K outputs (generation), with its completeness."""
    with torch.no_grad():
        e = embed_ids(handle, p.ids[None])
        e0 = embed_ids(handle, p.baseline_ids[None])
    s = ig_embeddings(p, e, e0, n_steps, rows, integration).double().cpu().numpy()
    attn = p.attn()[None]
    with torch.no_grad():
        fx = p.fn(e, attn, *p.aux)[0].double().cpu().numpy()
        fb = p.fn(e0, attn, *p.aux)[0].double().cpu().numpy()
    return {"scores": s, "token_scores": s, "completeness": _completeness(s.sum(1), fx, fb, n_steps)}


def _ig_once(handle: ModelHandle, preps: list[Prepared], opts: dict[str, Any], n_steps: int, progress: bool
             ) -> list[dict[str, Any]]:
    budget = batch_tokens(handle, opts, grad=True)
    integration = opts["integration"]
    outs: list[dict[str, Any] | None] = [None] * len(preps)
    multi = [i for i, p in enumerate(preps) if p.n_targets > 1]
    single = [i for i, p in enumerate(preps) if p.n_targets == 1]
    bar = tqdm(total=len(preps), desc="ig", disable=not progress, unit="ex")
    for i in multi:
        p = preps[i]
        rows = opts["internal_batch_size"] or max(1, budget // (p.length * _expand(p)))
        outs[i] = ig_multi(handle, p, n_steps, rows, integration)
        bar.update(1)
    if single:
        lengths = [preps[i].length * _expand(preps[i]) for i in single]
        # several examples per call when the steps of more than one fit in a forward
        per_call = max(1, budget // max(1, n_steps))
        for idx in length_sorted_batches(lengths, per_call):
            batch = [preps[single[j]] for j in idx]
            rows = opts["internal_batch_size"] or max(1, budget // max(lengths[j] for j in idx))
            for j, o in zip(idx, _ig_captum(handle, batch, n_steps, rows, integration), strict=True):
                outs[single[j]] = o
            bar.update(len(batch))
    bar.close()
    return [o for o in outs if o is not None]


@register_explainer(
    "ig", gradient=True,
    description="Integrated Gradients on the word embeddings (Captum LayerIntegratedGradients)",
    reference="Sundararajan, Taly & Yan 2017, Axiomatic Attribution for Deep Networks",
    options={"n_steps": 32, "internal_batch_size": None, "integration": "gausslegendre", "adaptive": False,
             "max_steps": 512, "gap_tolerance": 0.05},
)
def integrated_gradients(handle: ModelHandle, preps: list[Prepared], opts: dict[str, Any], progress: bool
                         ) -> list[dict[str, Any]]:
    n_steps = opts["n_steps"]
    if not isinstance(n_steps, int) or n_steps < 1:
        raise OptionError(f"ig option n_steps must be a positive integer, got {n_steps!r}")
    if opts["integration"] not in INTEGRATION_METHODS:
        raise OptionError(f"ig option integration {opts['integration']!r} unknown; use one of "
                          f"{', '.join(INTEGRATION_METHODS)}")
    outs = _ig_once(handle, preps, opts, n_steps, progress)
    if not opts["adaptive"]:
        return outs
    # adaptive mode: double the steps of the examples whose gap is not yet met
    tol = float(opts["gap_tolerance"])
    todo = [i for i, o in enumerate(outs) if _max_gap(o) > tol]
    steps = n_steps
    while todo and steps * 2 <= opts["max_steps"]:
        steps *= 2
        redo = _ig_once(handle, [preps[i] for i in todo], opts, steps, progress)
        for i, o in zip(todo, redo, strict=True):
            outs[i] = o
        todo = [i for i in todo if _max_gap(outs[i]) > tol]
    for i, o in enumerate(outs):
        o.setdefault("info", {})["adaptive"] = {"met": i not in todo, "tolerance": tol,
                                                "n_steps": o["completeness"]["n_steps"]}
    return outs


def _max_gap(o: dict[str, Any]) -> float:
    g = [x for x in o["completeness"]["gap"] if x == x]
    return max(g) if g else 0.0


# --------------------------------------------------------------------------------------------
# single-gradient methods (Captum, per example; one backward per target)
# --------------------------------------------------------------------------------------------


def _per_target(handle: ModelHandle, preps: list[Prepared], desc: str, progress: bool, attribute: Any
                ) -> list[dict[str, Any]]:
    outs = []
    for p in tqdm(preps, desc=desc, disable=not progress, unit="ex"):
        with torch.no_grad():
            e = embed_ids(handle, p.ids[None]).requires_grad_(True)
            e0 = embed_ids(handle, p.baseline_ids[None])
        attn = p.attn()[None]

        def forward(x: torch.Tensor, a: torch.Tensor, *xa: torch.Tensor, _p: Prepared = p) -> torch.Tensor:
            return _p.fn(x, a, *xa)

        rows = []
        with torch.enable_grad():
            for k in range(p.n_targets):
                rows.append(attribute(forward, e, e0, attn, p.aux, k))
        s = torch.stack(rows).detach().double().cpu().numpy()
        s[:, ~p.attributable.cpu().numpy()] = 0.0
        outs.append({"scores": s, "token_scores": s})
    return outs


@register_explainer(
    "saliency", gradient=True,
    description="L2 norm of the gradient w.r.t. each word embedding (Captum Saliency)",
    reference="Simonyan, Vedaldi & Zisserman 2014, Deep Inside Convolutional Networks",
)
def saliency(handle: ModelHandle, preps: list[Prepared], opts: dict[str, Any], progress: bool
             ) -> list[dict[str, Any]]:
    from captum.attr import Saliency

    def attribute(forward: Any, e: torch.Tensor, e0: torch.Tensor, attn: torch.Tensor, aux: Any, k: int
                  ) -> torch.Tensor:
        g = Saliency(forward).attribute(e, target=k, additional_forward_args=(attn, *aux), abs=False)
        return g[0].float().norm(dim=-1)

    return _per_target(handle, preps, "saliency", progress, attribute)


@register_explainer(
    "input_x_gradient", gradient=True,
    description="Embedding × gradient, summed over the hidden dimension (Captum InputXGradient)",
    reference="Shrikumar et al. 2016, Not Just a Black Box",
)
def input_x_gradient(handle: ModelHandle, preps: list[Prepared], opts: dict[str, Any], progress: bool
                     ) -> list[dict[str, Any]]:
    from captum.attr import InputXGradient

    def attribute(forward: Any, e: torch.Tensor, e0: torch.Tensor, attn: torch.Tensor, aux: Any, k: int
                  ) -> torch.Tensor:
        return InputXGradient(forward).attribute(e, target=k, additional_forward_args=(attn, *aux))[0].float().sum(-1)

    return _per_target(handle, preps, "input_x_gradient", progress, attribute)


@register_explainer(
    "gradient_shap", gradient=True,
    description="GradientSHAP from the baseline embeddings with input noise (Captum GradientShap)",
    reference="Lundberg & Lee 2017, A Unified Approach to Interpreting Model Predictions",
    options={"n_samples": 16, "stdevs": 0.01, "seed": 0},
)
def gradient_shap(handle: ModelHandle, preps: list[Prepared], opts: dict[str, Any], progress: bool
                  ) -> list[dict[str, Any]]:
    from captum.attr import GradientShap

    n_samples = int(opts["n_samples"])
    budget = batch_tokens(handle, opts, grad=True)

    def attribute(forward: Any, e: torch.Tensor, e0: torch.Tensor, attn: torch.Tensor, aux: Any, k: int
                  ) -> torch.Tensor:
        torch.manual_seed(int(opts["seed"]) + k)
        chunk = max(1, budget // e.shape[1])
        total = torch.zeros(e.shape[1], dtype=torch.float32, device=e.device)
        for c0 in range(0, n_samples, chunk):
            n = min(chunk, n_samples - c0)
            a = GradientShap(forward).attribute(e, baselines=e0, n_samples=n, stdevs=float(opts["stdevs"]),
                                                target=k, additional_forward_args=(attn, *aux))
            total += a[0].float().sum(-1) * n
        return total / n_samples

    return _per_target(handle, preps, "gradient_shap", progress, attribute)


# --------------------------------------------------------------------------------------------
# re-running a gradient method at perturbed embeddings (for sensitivity-max)
# --------------------------------------------------------------------------------------------


def explain_embeddings(handle: ModelHandle, p: Prepared, k: int, method: str, e: torch.Tensor,
                       opts: dict[str, Any]) -> torch.Tensor:
    """Token scores (n, T) of ``method`` for target k at each of n embedding inputs ``e`` (n, T, H)."""
    with torch.no_grad():
        e0 = embed_ids(handle, p.baseline_ids[None])
    fixed = ~p.attributable
    n = e.shape[0]
    attn = p.attn()[None].expand(n, -1)
    aux = tuple(t.expand(n, *t.shape[1:]) for t in p.aux)
    if method == "ig":
        budget = batch_tokens(handle, opts, grad=True)
        rows = opts.get("internal_batch_size") or max(1, budget // (p.length * _expand(p)))
        out = torch.stack([ig_embeddings(p, e[i : i + 1], e0, int(opts.get("n_steps", 32)), rows,
                                         opts.get("integration", "gausslegendre"))[k] for i in range(n)])
    elif method in ("saliency", "input_x_gradient"):
        with torch.enable_grad():
            x = e.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(p.fn(x, attn, *aux)[:, k].sum(), x)
        out = g.float().norm(dim=-1) if method == "saliency" else (g * x).float().sum(-1)
    elif method == "gradient_shap":
        from captum.attr import GradientShap

        def forward(x: torch.Tensor, a: torch.Tensor, *xa: torch.Tensor) -> torch.Tensor:
            return p.fn(x, a, *xa)

        rows_out = []
        for i in range(n):
            torch.manual_seed(int(opts.get("seed", 0)) + k)
            with torch.enable_grad():
                a = GradientShap(forward).attribute(
                    e[i : i + 1], baselines=e0, n_samples=int(opts.get("n_samples", 16)),
                    stdevs=float(opts.get("stdevs", 0.01)), target=k, additional_forward_args=(attn[:1], *p.aux))
            rows_out.append(a[0].float().sum(-1))
        out = torch.stack(rows_out)
    else:
        raise OptionError(f"method {method!r} cannot be re-run on perturbed embeddings")
    return torch.where(fixed[None], torch.zeros_like(out), out)
