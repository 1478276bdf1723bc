"""Gradient attributions on the word-embedding layer.

* ``ig`` — Integrated Gradients (Sundararajan et al. 2017) on ``handle.input_embeddings()`` (word
  embeddings only: position and segment embeddings stay on the path's both ends), adaptive per
  target: a target whose completeness gap |Σ attributions − (f(x) − f(x'))| / |f(x) − f(x')|
  exceeds ``gap_tolerance`` gets a finer quadrature rule until it is met or ``max_steps`` is
  reached. A forward row is one (example, path point) for the targets that need it, rows of all
  examples share forwards under the token budget, and a gradient already taken at a node is never
  taken again (nested rules — Clenshaw–Curtis, the trapezoid rule — reuse every one). Gauss–Legendre
  nodes and weights are Captum's (``LayerIntegratedGradients`` gives the same attributions).
* ``saliency`` — ‖∂f/∂eᵢ‖₂ per token (Simonyan et al. 2014).
* ``input_x_gradient`` — Σ_d eᵢ,d · ∂f/∂eᵢ,d (Shrikumar et al. 2016).
* ``gradient_shap`` — expected gradients from the baseline with input noise (Lundberg & Lee 2017);
  each target's whole Monte Carlo sample is drawn at once from its own seeded generator.

The one-gradient methods and GradientSHAP batch rows of every example and target per forward
(:func:`batched_gradients`). Positions held fixed (special tokens, the [MASK] being predicted, the
causal prefix token) get 0.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from pydantic import Field, NonNegativeFloat, PositiveInt, StrictBool, model_validator
from tqdm.auto import tqdm

from audit.explain.base import (
    ExplainOptions,
    SeededOptions,
    batch_tokens,
    register_explainer,
)
from audit.explain.errors import OptionError
from audit.explain.targets import Prepared, embed_ids, forward_rows, position_groups, row_batches
from audit.metrics.faithfulness import completeness_gap

if TYPE_CHECKING:
    from audit.models import ModelHandle

#: rules whose n nodes are among their 2n − 1 nodes: refining reuses every gradient already taken
NESTED = ("clenshaw_curtis", "trapezoid")
#: ``integration: auto``: the rule adaptive IG reaches the tolerance with at the least cost on SmolLM2
#: (benchmarks/RESULTS.md, adaptive Integrated Gradients); Captum's Gauss–Legendre for a fixed rule
AUTO_RULE = {True: "clenshaw_curtis", False: "gausslegendre"}


def rule_of(opts: dict[str, Any]) -> str:
    """The quadrature rule ``opts`` asks for (``auto`` resolved by ``adaptive``)."""
    integration = opts.get("integration", "auto")
    return AUTO_RULE[bool(opts.get("adaptive", True))] if integration == "auto" else str(integration)


def clenshaw_curtis(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Clenshaw–Curtis nodes and weights on [0, 1] with n ≥ 2 points (Clenshaw & Curtis 1960; the
    weights as in Trefethen 2008, "Is Gauss quadrature better than Clenshaw–Curtis?"). The nodes
    (1 − cos(jπ/N))/2 of N = n − 1 are among those of 2N, so doubling reuses every evaluation."""
    big_n = n - 1
    theta = np.pi * (np.arange(big_n + 1) / big_n)
    w = np.zeros(big_n + 1)
    v = np.ones(big_n - 1)
    inner = theta[1:big_n]
    if big_n % 2 == 0:
        w[0] = w[big_n] = 1.0 / (big_n * big_n - 1)
        for k in range(1, big_n // 2):
            v -= 2.0 * np.cos(2 * k * inner) / (4 * k * k - 1)
        v -= np.cos(big_n * inner) / (big_n * big_n - 1)
    else:
        w[0] = w[big_n] = 1.0 / (big_n * big_n)
        for k in range(1, (big_n - 1) // 2 + 1):
            v -= 2.0 * np.cos(2 * k * inner) / (4 * k * k - 1)
    w[1:big_n] = 2.0 * v / big_n
    return (1.0 - np.cos(theta)) / 2.0, w / 2.0


def quadrature(integration: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes (alphas) and weights (float64) of an ``integration`` rule with ``n`` points on [0, 1]."""
    if integration == "clenshaw_curtis":
        return clenshaw_curtis(n)
    if integration == "trapezoid":  # the composite trapezoid rule with n − 1 equal intervals
        w = np.full(n, 1.0 / (n - 1))
        w[[0, -1]] /= 2
        return np.arange(n) / (n - 1), w
    from captum.attr._utils.approximation_methods import approximation_parameters

    step_fn, alpha_fn = approximation_parameters(integration)
    return np.asarray(alpha_fn(n), dtype=np.float64), np.asarray(step_fn(n), dtype=np.float64)


def refined(integration: str, n: int) -> int:
    """The next rule size when refining: 2n − 1 for nested rules (all n nodes reused), else 2n."""
    return 2 * n - 1 if integration in NESTED else 2 * n


def ig_embeddings(p: Prepared, e: torch.Tensor, e0: torch.Tensor, n_steps: int, rows: int,
                  integration: str = "gausslegendre") -> torch.Tensor:
    """IG of every output of ``p``'s target from embeddings ``e0`` to ``e`` (both (1, T, H)): one
    forward per chunk of ``rows`` steps, one backward per output. Returns (K, T)."""
    a64, w64 = quadrature(integration, n_steps)
    alphas = torch.tensor(a64, dtype=torch.float32, device=e.device)
    weights = torch.tensor(w64, dtype=torch.float32, device=e.device)
    diff = (e - e0).detach()
    k_n = p.n_targets
    acc = torch.zeros((k_n, *e.shape[1:]), dtype=torch.float32, device=e.device)
    with torch.enable_grad():
        for c0 in range(0, n_steps, rows):
            a = alphas[c0 : c0 + rows].to(e.dtype)
            b = a.shape[0]
            x = (e0 + a[:, None, None] * diff).detach().requires_grad_(True)
            out = p.run(x)
            w = weights[c0 : c0 + b, None, None]
            for k in range(k_n):
                (g,) = torch.autograd.grad(out[:, k].sum(), x, retain_graph=k < k_n - 1)
                acc[k] += (w * g.float()).sum(0)
    return (acc * diff[0].float()).sum(-1)


@dataclass
class _Path:
    """One target's path integral: its current rule size and the gradients taken so far."""

    i: int  # example
    k: int  # target of the example
    n: int  # points of the current rule
    #: alpha -> (T,) Σ_d ∂f/∂e(e0 + α(e − e0)) · (e − e0), per token
    evals: dict[float, np.ndarray] = field(default_factory=dict)
    done: bool = False


def _endpoints(handle: ModelHandle, preps: list[Prepared], budget: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """f(x) and f(baseline), (K,) each, per example; examples with as many targets share forwards."""
    out: list[tuple[np.ndarray, np.ndarray] | None] = [None] * len(preps)
    for batch, ids, base, attn, aux in row_batches(preps, max(1, budget // 2)):
        with torch.no_grad():
            y = preps[batch[0]].fn(embed_ids(handle, torch.cat([ids, base])), torch.cat([attn, attn]),
                                   *(torch.cat([a, a]) for a in aux)).double().cpu().numpy()
        for r, i in enumerate(batch):
            out[i] = (y[r], y[len(batch) + r])
    return [o for o in out if o is not None]


def batched_gradients(rows: Sequence[Prepared], make_x: Callable[[int], torch.Tensor], budget: int,
                      max_rows: int | None = None) -> Iterator[tuple[list[int], torch.Tensor]]:
    """∂f/∂x for many rows: row j is input embeddings ``make_x(j)`` (T_j, H) of the target ``rows[j]``.

    Rows with as many targets share forwards (right-padded, ``rows × longest ≤ budget``); a batch
    whose rows have s targets takes s backward passes. Yields (row indices, gradients (s, B, T, H)
    in float32); a row's gradient only depends on its own input, so batching changes no result.
    """
    for batch, _, _, attn, aux in row_batches(rows, budget, max_rows):
        parts = [make_x(j) for j in batch]
        x = torch.zeros((len(batch), attn.shape[1], parts[0].shape[-1]), dtype=parts[0].dtype, device=parts[0].device)
        for r, part in enumerate(parts):
            x[r, : part.shape[0]] = part
        x.requires_grad_(True)
        s = rows[batch[0]].n_targets
        with torch.enable_grad():
            y = rows[batch[0]].fn(x, attn, *aux)
            grads = [torch.autograd.grad(y[:, t].sum(), x, retain_graph=t < s - 1)[0].float() for t in range(s)]
        yield batch, torch.stack(grads)


def _gradients(preps: list[Prepared], emb: list[tuple[torch.Tensor, torch.Tensor]],
               requests: dict[tuple[int, float], list[int]], budget: int, max_rows: int | None, bar: Any
               ) -> dict[tuple[int, int, float], np.ndarray]:
    """Gradient × (e − e0) per token at every requested (example, alpha) for its targets: one row
    per point and group of targets (:func:`position_groups`: generation targets read prefixes of
    different lengths, so a row is cut after the longest its group reads), so a point needed by
    several targets of an example shares its forward."""
    keys = [(i, a, ks) for (i, a), want in requests.items() for ks in position_groups(preps[i], want)]
    rows = [preps[i].subset(ks, trim=True) for i, _, ks in keys]
    bar.total += len(rows)
    bar.refresh()

    def make_x(j: int) -> torch.Tensor:
        i, a, _ = keys[j]
        e, e0 = (t[: rows[j].length] for t in emb[i])
        return e0 + torch.tensor(a, dtype=torch.float32).to(e.dtype) * (e - e0)

    out: dict[tuple[int, int, float], np.ndarray] = {}
    for batch, g in batched_gradients(rows, make_x, budget, max_rows):
        for r, j in enumerate(batch):
            (i, a, ks), (e, e0), n = keys[j], emb[keys[j][0]], rows[j].length
            v = np.zeros((len(ks), e.shape[0]))
            v[:, :n] = (g[:, r, :n] * (e[:n] - e0[:n]).float()).sum(-1).double().cpu().numpy()
            for slot, k in enumerate(ks):
                out[(i, k, a)] = v[slot]
        bar.update(len(batch))
    return out


class IGOptions(ExplainOptions):
    n_steps: PositiveInt = Field(default=32, description="integration points (the first rule when adaptive)")
    internal_batch_size: PositiveInt | None = Field(default=None, description="rows per forward; None: by budget")
    integration: Literal["auto", "gausslegendre", "clenshaw_curtis", "trapezoid", "riemann_trapezoid", "riemann_left",
                         "riemann_right", "riemann_middle"] = Field(
        default="auto", description="quadrature rule; auto: clenshaw_curtis when adaptive, else gausslegendre")
    adaptive: StrictBool = Field(default=True, description="refine each target's rule until its gap is met")
    max_steps: PositiveInt = 256
    gap_tolerance: float = Field(default=0.05, gt=0, lt=1, description="relative completeness gap aimed for")

    @model_validator(mode="after")
    def _steps(self) -> IGOptions:
        rule = rule_of(self.model_dump())
        least = 2 if rule in NESTED else 1
        if self.n_steps < least:
            raise ValueError(f"n_steps must be ≥ {least} for integration {rule!r}, got {self.n_steps}")
        if self.max_steps < self.n_steps:
            raise ValueError(f"max_steps must be ≥ n_steps ({self.n_steps}), got {self.max_steps}")
        return self


class GradientShapOptions(SeededOptions):
    n_samples: PositiveInt = 16
    stdevs: NonNegativeFloat = Field(default=0.01, description="std of the Gaussian input noise")


@register_explainer("ig", gradient=True, options=IGOptions,
                    description="Integrated Gradients on the word embeddings, refined per target until complete",
                    reference="Sundararajan, Taly & Yan 2017, Axiomatic Attribution for Deep Networks")
def integrated_gradients(handle: ModelHandle, preps: list[Prepared], opts: dict[str, Any], progress: bool
                         ) -> list[dict[str, Any]]:
    """IG of every target of every example. With ``adaptive`` (the default) each target whose
    completeness gap exceeds ``gap_tolerance`` gets a finer rule (2n points, 2n − 1 for nested rules
    whose earlier gradients are all reused) until it is met or the next rule would pass
    ``max_steps``; per target the completeness records its steps, gap, ``met`` and gradient
    evaluations. ``adaptive: false`` is one fixed rule of ``n_steps`` points. ``integration: auto`` is
    Clenshaw–Curtis when adaptive (nested: measured cheaper for the same gap than Gauss–Legendre,
    whose refinements reuse nothing) and Captum's Gauss–Legendre for a fixed rule."""
    integration, tol = rule_of(opts), float(opts["gap_tolerance"])
    budget = batch_tokens(handle, opts, grad=True)
    with torch.no_grad():
        emb = [(embed_ids(handle, p.ids), embed_ids(handle, p.baseline_ids)) for p in preps]
    ends = _endpoints(handle, preps, budget)
    paths = [_Path(i, k, opts["n_steps"]) for i, p in enumerate(preps) for k in range(p.n_targets)]
    first = np.cumsum([0] + [p.n_targets for p in preps]).tolist()  # index of each example's first path
    bar = tqdm(total=0, desc="ig", disable=not progress, unit="row")
    while todo := [q for q in paths if not q.done]:
        requests: dict[tuple[int, float], list[int]] = {}
        for q in todo:
            for a in quadrature(integration, q.n)[0]:
                if float(a) not in q.evals:
                    requests.setdefault((q.i, float(a)), []).append(q.k)
        for (i, k, a), v in _gradients(preps, emb, requests, budget, opts["internal_batch_size"], bar).items():
            paths[first[i] + k].evals[a] = v
        for q in todo:
            fx, fb = ends[q.i]
            gap = completeness_gap(float(_integral(q, integration).sum()), float(fx[q.k]), float(fb[q.k]))
            nxt = refined(integration, q.n)
            if not opts["adaptive"] or not gap > tol or nxt > opts["max_steps"]:
                q.done = True
            else:
                q.n = nxt
    bar.close()
    outs = []
    for i in range(len(preps)):
        mine = paths[first[i] : first[i + 1]]
        s = np.stack([_integral(q, integration) for q in mine])
        fx, fb = ends[i]
        c = _completeness(s.sum(1), fx, fb, [q.n for q in mine], tol)
        c["evaluations"] = [len(q.evals) for q in mine]
        outs.append({"scores": s, "token_scores": s, "completeness": c})
    return outs


def _integral(q: _Path, integration: str) -> np.ndarray:
    alphas, weights = quadrature(integration, q.n)
    return np.sum([w * q.evals[float(a)] for a, w in zip(alphas, weights, strict=True)], axis=0)


def _completeness(attr_sum: np.ndarray, fx: np.ndarray, fb: np.ndarray, steps: list[int], tol: float
                  ) -> dict[str, Any]:
    """Per target: f(x), f(x'), Σ attributions, delta, the relative gap, steps and ``met`` (gap ≤ tol)."""
    delta = attr_sum - (fx - fb)
    gap = [completeness_gap(float(s), float(a), float(b)) for s, a, b in zip(attr_sum, fx, fb, strict=True)]
    return {"f_input": fx.tolist(), "f_baseline": fb.tolist(), "attribution_sum": attr_sum.tolist(),
            "delta": delta.tolist(), "gap": gap, "n_steps": max(steps), "steps": steps,
            "met": [not g > tol for g in gap], "tolerance": tol}


# --------------------------------------------------------------------------------------------
# single-gradient methods (Captum, per example; one backward per target)
# --------------------------------------------------------------------------------------------


def _one_gradient(handle: ModelHandle, preps: list[Prepared], opts: dict[str, Any], desc: str, progress: bool,
                  score: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> list[dict[str, Any]]:
    """``score(gradient, embeddings)`` (T, H) → (T,) per (example, target): one row per target,
    rows of every example batched under the gradient token budget."""
    units = [(i, k) for i, p in enumerate(preps) for k in range(p.n_targets)]
    with torch.no_grad():
        emb = [embed_ids(handle, p.ids) for p in preps]
    res = [np.zeros((p.n_targets, p.length)) for p in preps]
    bar = tqdm(total=len(units), desc=desc, disable=not progress, unit="target")
    for batch, g in batched_gradients([preps[i].subset([k]) for i, k in units], lambda j: emb[units[j][0]],
                                      batch_tokens(handle, opts, grad=True)):
        for r, j in enumerate(batch):
            i, k = units[j]
            t = preps[i].length
            res[i][k] = score(g[0, r, :t], emb[i].float()).double().cpu().numpy()
        bar.update(len(batch))
    bar.close()
    return [p.token_result(s) for p, s in zip(preps, res, strict=True)]


#: the one-gradient methods' token score from the gradient and the embeddings, (T, H) → (T,)
ONE_GRADIENT: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "saliency": lambda g, e: g.norm(dim=-1), "input_x_gradient": lambda g, e: (g * e).sum(-1)}


def _register_one_gradient(name: str, description: str, reference: str) -> None:
    """Register ``name``: :func:`_one_gradient` with its :data:`ONE_GRADIENT` score."""

    @register_explainer(name, gradient=True, description=description, reference=reference)
    def explain(handle: ModelHandle, preps: list[Prepared], opts: dict[str, Any], progress: bool
                ) -> list[dict[str, Any]]:
        return _one_gradient(handle, preps, opts, name, progress, ONE_GRADIENT[name])


_register_one_gradient("saliency", "L2 norm of the gradient w.r.t. each word embedding",
                       "Simonyan, Vedaldi & Zisserman 2014, Deep Inside Convolutional Networks")
_register_one_gradient("input_x_gradient", "Embedding × gradient, summed over the hidden dimension",
                       "Shrikumar et al. 2016, Not Just a Black Box")


def _shap_draws(p: Prepared, k: int, n_samples: int, stdevs: float, seed: int, shape: torch.Size
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """All of one target's Monte Carlo sample at once — input noise (n, T, H) on attributable
    positions and path points α ~ U(0, 1) (n,) — from a generator keyed by (seed, example, target),
    so neither the batching nor the other examples change it."""
    key = int(np.random.SeedSequence([seed, p.index, k]).generate_state(1)[0])
    gen = torch.Generator().manual_seed(key)
    noise = torch.randn((n_samples, *shape), generator=gen) * stdevs * p.attributable.cpu()[None, :, None]
    return noise, torch.rand(n_samples, generator=gen, dtype=torch.float64)


def shap_values(units: list[tuple[Prepared, int, torch.Tensor, torch.Tensor]], opts: dict[str, Any], budget: int
                ) -> list[torch.Tensor]:
    """GradientSHAP (expected gradients) of target k of p at inputs e (T, H) from baseline e0, per unit
    (p, k, e, e0): mean over samples s of ∂f/∂x(e0 + αₛ(xₛ − e0)) · (xₛ − e0), xₛ = e + noiseₛ."""
    n, stdevs, seed = int(opts["n_samples"]), float(opts["stdevs"]), int(opts["seed"])
    draws = [_shap_draws(p, k, n, stdevs, seed, e.shape) for p, k, e, _ in units]
    rows = [(u, s) for u in range(len(units)) for s in range(n)]

    def noisy(j: int) -> torch.Tensor:
        u, s = rows[j]
        _, _, e, e0 = units[u]
        return e + draws[u][0][s].to(e.device, e.dtype) - e0

    def make_x(j: int) -> torch.Tensor:
        u, s = rows[j]
        e0 = units[u][3]
        return e0 + torch.tensor(float(draws[u][1][s]), dtype=torch.float32).to(e0.dtype) * noisy(j)

    total = [torch.zeros(e.shape[0], dtype=torch.float64) for _, _, e, _ in units]
    for batch, g in batched_gradients([units[u][0].subset([units[u][1]]) for u, _ in rows], make_x, budget):
        for r, j in enumerate(batch):
            u = rows[j][0]
            t = units[u][2].shape[0]
            total[u] += (g[0, r, :t] * noisy(j).float()).sum(-1).double().cpu()
    return [x / n for x in total]


@register_explainer("gradient_shap", gradient=True, options=GradientShapOptions,
                    description="GradientSHAP from the baseline embeddings with input noise (expected gradients)",
                    reference="Lundberg & Lee 2017, A Unified Approach to Interpreting Model Predictions")
def gradient_shap(handle: ModelHandle, preps: list[Prepared], opts: dict[str, Any], progress: bool
                  ) -> list[dict[str, Any]]:
    with torch.no_grad():
        emb = [(embed_ids(handle, p.ids), embed_ids(handle, p.baseline_ids)) for p in preps]
    units = [(p, k, *emb[i]) for i, p in enumerate(preps) for k in range(p.n_targets)]
    vals = iter(shap_values(units, opts, batch_tokens(handle, opts, grad=True)))
    return [p.token_result(np.stack([next(vals).numpy() for _ in range(p.n_targets)])) for p in preps]


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
    if method == "ig":
        budget = batch_tokens(handle, opts, grad=True)
        rows = opts.get("internal_batch_size") or max(1, budget // (p.length * forward_rows(p)))
        out = torch.stack([ig_embeddings(p, e[i : i + 1], e0, int(opts.get("n_steps", 32)), rows,
                                         rule_of({**opts, "adaptive": False}))[k] for i in range(n)])
    elif method in ONE_GRADIENT:
        with torch.enable_grad():
            x = e.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(p.run(x)[:, k].sum(), x)
        out = ONE_GRADIENT[method](g.float(), x.detach().float())
    elif method == "gradient_shap":
        shap_opts = {**GradientShapOptions.defaults(),
                     **{key: v for key, v in opts.items() if key in GradientShapOptions.model_fields}}
        out = torch.stack(shap_values([(p, k, e[i], e0[0]) for i in range(n)], shap_opts,
                                      batch_tokens(handle, opts, grad=True))).to(e.device)
    else:
        raise OptionError(f"method {method!r} cannot be re-run on perturbed embeddings")
    return torch.where(fixed[None], torch.zeros_like(out), out)
