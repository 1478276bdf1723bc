"""Attention-based explanations.

* ``attention`` — raw attention weights of the requested layers / heads (only those are kept).
* ``rollout`` — Abnar & Zuidema (2020), "Quantifying Attention Flow in Transformers": per layer
  Â = rownorm(A + I) with A the head mean, and R = Â_L ⋯ Â_1.
* ``attention_flow`` — Abnar & Zuidema (2020): the layers form a graph whose edge (l, i) → (l−1, j)
  has capacity Â_l[i, j]; the flow of input token j to output token i is the max-flow between
  them. Costly (one max-flow per token pair), so inputs above ``max_tokens`` are refused.
* ``grad_rollout`` — Chefer, Gur & Wolf (2021), "Generic Attention-model Explainability": per layer
  Ā = mean_h (∇A ⊙ A)⁺ with ∇A = ∂y/∂A, and R ← R + Ā·R from R = I.
* ``head_importance`` — Michel, Levy & Neubig (2019): |∂L/∂ξₕ| for a gate ξₕ = 1 on each head's
  output, L the target's loss (−log p for probabilities, −y otherwise).

Rows of a relevance matrix are query tokens; a target reads the row of the position its output
comes from (the [MASK], [CLS], the last token, or the token before a generated one); sentence
encoders with mean pooling read the mean of the rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from pydantic import Field, PositiveInt, StrictBool
from tqdm.auto import tqdm

from audit.explain.arch import capture_attention, head_gates, n_heads, n_layers, resolve_selection
from audit.explain.base import ExplainOptions, batch_tokens, register_explainer
from audit.explain.errors import InputTooLongError, OptionError
from audit.explain.targets import Prepared, collate, embed_ids, row_batches
from audit.scoring import length_sorted_batches

if TYPE_CHECKING:
    from audit.models import ModelHandle

#: target modes with one output position (the attention row to read)
QUERY_MODES = ("mask", "next", "generate", "class", "cosine")
HEAD_FUSIONS = ("mean", "max", "min")


# --------------------------------------------------------------------------------------------
# pure functions (numpy)
# --------------------------------------------------------------------------------------------


def _fuse(attn: np.ndarray, head_fusion: str) -> np.ndarray:
    a = np.asarray(attn, dtype=np.float64)
    if a.ndim == 4:
        if head_fusion not in HEAD_FUSIONS:
            raise OptionError(f"head_fusion {head_fusion!r} unknown; use one of {', '.join(HEAD_FUSIONS)}")
        a = a.mean(axis=1) if head_fusion == "mean" else a.max(axis=1) if head_fusion == "max" else a.min(axis=1)
    if a.ndim != 3 or a.shape[1] != a.shape[2]:
        raise ValueError(f"attention must be (layers, [heads,] T, T), got shape {np.shape(attn)}")
    return a


def residual_attention(attn: np.ndarray, head_fusion: str = "mean", residual: bool = True) -> np.ndarray:
    """Per-layer Â = rownorm(A + I) (or rownorm(A) without the residual), shape (L, T, T)."""
    a = _fuse(attn, head_fusion)
    if residual:
        a = a + np.eye(a.shape[-1])[None]
    return a / a.sum(-1, keepdims=True)


def attention_rollout(attn: np.ndarray, head_fusion: str = "mean", residual: bool = True) -> np.ndarray:
    """Attention rollout R = Â_L ⋯ Â_1 (Abnar & Zuidema 2020); ``attn`` is (L, [H,] T, T)."""
    a = residual_attention(attn, head_fusion, residual)
    r = a[0]
    for layer in a[1:]:
        r = layer @ r
    return r


def attention_flow(attn: np.ndarray, rows: Sequence[int], head_fusion: str = "mean", residual: bool = True
                   ) -> np.ndarray:
    """Max-flow from output node (L, i) to every input node (0, j), for each i in ``rows``.

    Abnar & Zuidema (2020): nodes are (layer, token); edge (l, i) → (l−1, j) has capacity
    Â_l[i, j] of layer l (1-based). Returns (len(rows), T).
    """
    import networkx as nx

    a = residual_attention(attn, head_fusion, residual)
    n_l, t = a.shape[0], a.shape[-1]
    g = nx.DiGraph()
    li, qi, si = np.nonzero(a > 0)
    g.add_edges_from(((int(layer) + 1, int(q)), (int(layer), int(s)), {"capacity": float(a[layer, q, s])})
                     for layer, q, s in zip(li, qi, si, strict=True))
    out = np.zeros((len(rows), t))
    for r, q in enumerate(rows):
        for j in range(t):
            if g.has_node((n_l, q)) and g.has_node((0, j)):
                out[r, j] = nx.maximum_flow_value(g, (n_l, q), (0, j))
    return out


def gradient_rollout(attn: Sequence[np.ndarray] | np.ndarray, grads: Sequence[np.ndarray] | np.ndarray
                     ) -> np.ndarray:
    """Chefer et al. (2021): R = I; for each layer R ← R + mean_h((∇A ⊙ A)⁺) · R. Inputs (L, H, T, T)."""
    attn = np.asarray(attn, dtype=np.float64)
    grads = np.asarray(grads, dtype=np.float64)
    t = attn.shape[-1]
    r = np.eye(t)
    for a, g in zip(attn, grads, strict=True):
        cam = np.clip(g * a, 0, None).mean(0)
        r = r + cam @ r
    return r


def rows_for(p: Prepared, matrix: np.ndarray) -> np.ndarray:
    """Per-target token scores (K, T) read from a (T, T) relevance matrix."""
    out = np.empty((p.n_targets, matrix.shape[-1]))
    for k, q in enumerate(p.query_rows or [None] * p.n_targets):
        out[k] = matrix[q] if q is not None else matrix.mean(0)
    return out


def share_of_attributable(p: Prepared, rows: np.ndarray) -> tuple[np.ndarray, list[float]]:
    """Rollout rows (K, T) that sum to 1, renormalised over the positions that may be
    attributed: special tokens (a causal LM's BOS/prefix token, [CLS], [SEP], the target's [MASK]) are NaN, and their
    share of each row is returned apart. Rollout puts almost all of a causal LM's mass on
    its first token (the attention sink, Xiao et al. 2024, "Efficient Streaming Language Models with
    Attention Sinks"), which leaves nothing to read on the words; the share says how much that was."""
    keep = p.attributable.cpu().numpy()
    kept = rows[:, keep].sum(1)
    out = np.full_like(rows, np.nan)
    out[:, keep] = rows[:, keep] / np.where(kept > 0, kept, 1.0)[:, None]
    return out, [float(x) for x in 1.0 - kept]


# --------------------------------------------------------------------------------------------
# explainers
# --------------------------------------------------------------------------------------------


def _attention_maps(handle: ModelHandle, preps: list[Prepared], opts: dict[str, Any], layers: list[int],
                    heads: list[int] | None, reduce: str | None, desc: str, progress: bool) -> list[np.ndarray]:
    """The attention of ``layers`` for each example, cut to its length, in float64: (L', H', T, T)
    of ``heads``, or with ``reduce`` the heads fused (L', T, T); over length-sorted batches."""
    res: list[np.ndarray | None] = [None] * len(preps)
    batches = length_sorted_batches([p.length for p in preps], batch_tokens(handle, opts, grad=False))
    with handle.attentions(), capture_attention(handle, layers, heads, reduce=reduce) as store:
        for idx in tqdm(batches, desc=desc, disable=not progress, unit="batch"):
            ids, _, attn, _ = collate([preps[i] for i in idx])
            with torch.no_grad():
                handle.model.base_model(inputs_embeds=embed_ids(handle, ids), attention_mask=attn)
            stacked = torch.stack([store[layer] for layer in layers], 1).double().cpu().numpy()
            for r, i in enumerate(idx):
                t = preps[i].length
                res[i] = stacked[r, ..., :t, :t]
            store.clear()
    return [x for x in res if x is not None]


class AttentionOptions(ExplainOptions):
    layers: int | list[int] | None = Field(default=None, description="layer indices (negative from the end); None: all")
    heads: int | list[int] | None = Field(default=None, description="head indices; None: all")


class RolloutOptions(ExplainOptions):
    head_fusion: Literal["mean", "max", "min"] = "mean"
    residual: StrictBool = Field(default=True, description="add the identity for the residual stream")


class FlowOptions(RolloutOptions):
    max_tokens: PositiveInt = Field(default=64, description="longest input (one max-flow per token pair)")


class HeadImportanceOptions(ExplainOptions):
    normalize: Literal["none", "layer"] = Field(default="none", description="layer: scale each layer's scores")


@register_explainer("attention", layout="attention", modes=QUERY_MODES, options=AttentionOptions,
                    description="Raw attention weights of the requested layers and heads",
                    reference="Vaswani et al. 2017; Clark et al. 2019, What Does BERT Look At?")
def raw_attention(handle: ModelHandle, preps: list[Prepared], opts: dict[str, Any], progress: bool
                  ) -> list[dict[str, Any]]:
    layers = resolve_selection(opts["layers"], n_layers(handle), "layer")
    heads = resolve_selection(opts["heads"], n_heads(handle), "head")
    maps = _attention_maps(handle, preps, opts, layers, heads, None, "attention", progress)
    return [{"scores": w, "token_scores": rows_for(p, w.mean((0, 1))), "layers": layers, "heads": heads}
            for p, w in zip(preps, maps, strict=True)]


def _layer_means(handle: ModelHandle, preps: list[Prepared], opts: dict[str, Any], desc: str, progress: bool
                 ) -> list[np.ndarray]:
    """Head-fused attention (L, T, T) of every layer for each example."""
    layers = list(range(n_layers(handle)))
    return _attention_maps(handle, preps, opts, layers, None, opts["head_fusion"], desc, progress)


@register_explainer("rollout", layout="matrix", modes=QUERY_MODES, options=RolloutOptions,
                    description="Attention rollout: product over layers of rownorm(head-mean attention + I)",
                    reference="Abnar & Zuidema 2020, Quantifying Attention Flow in Transformers")
def rollout(handle: ModelHandle, preps: list[Prepared], opts: dict[str, Any], progress: bool
            ) -> list[dict[str, Any]]:
    outs = []
    for p, a in zip(preps, _layer_means(handle, preps, opts, "rollout", progress), strict=True):
        r = attention_rollout(a, residual=bool(opts["residual"]))
        tokens, special = share_of_attributable(p, rows_for(p, r))
        outs.append({"scores": r, "token_scores": tokens, "info": {"special_token_share": special}})
    return outs


@register_explainer("attention_flow", modes=QUERY_MODES, options=FlowOptions,
                    description="Attention flow: max-flow through the layer graph of residual-augmented attention",
                    reference="Abnar & Zuidema 2020, Quantifying Attention Flow in Transformers")
def flow(handle: ModelHandle, preps: list[Prepared], opts: dict[str, Any], progress: bool) -> list[dict[str, Any]]:
    limit = int(opts["max_tokens"])
    for p in preps:
        if p.length > limit:
            raise InputTooLongError(
                f"attention_flow: example {p.index} has {p.length} tokens; attention flow solves one max-flow "
                f"per token pair and is limited to max_tokens={limit} (raise the option, or use rollout)")
    outs = []
    means = _layer_means(handle, preps, opts, "attention flow", progress)
    for p, a in zip(preps, means, strict=True):
        qs = p.query_rows or [None] * p.n_targets
        wanted = sorted({q for q in qs if q is not None} | (set(range(p.length)) if None in qs else set()))
        f = attention_flow(a, wanted, residual=bool(opts["residual"]))
        by_row = dict(zip(wanted, f, strict=True))
        s = np.stack([by_row[q] if q is not None else f.mean(0) for q in qs])
        outs.append({"scores": s, "token_scores": s})
    return outs


@register_explainer("grad_rollout", modes=QUERY_MODES,
                    description="Gradient-weighted attention rollout: R ← R + mean_h((∂y/∂A ⊙ A)⁺)·R",
                    reference="Chefer, Gur & Wolf 2021, Generic Attention-model Explainability for Interpreting "
                              "Bi-Modal and Encoder-Decoder Transformers")
def grad_rollout(handle: ModelHandle, preps: list[Prepared], opts: dict[str, Any], progress: bool
                 ) -> list[dict[str, Any]]:
    layers = list(range(n_layers(handle)))
    units = [(i, k) for i, p in enumerate(preps) for k in range(p.n_targets)]
    res = [np.zeros((p.n_targets, p.length)) for p in preps]
    rows = [preps[i].subset([k]) for i, k in units]
    bar = tqdm(total=len(units), desc="grad rollout", disable=not progress, unit="target")
    with handle.attentions(), capture_attention(handle, layers, None, keep_graph=True) as store:
        for batch, ids, _, attn, aux in row_batches(rows, batch_tokens(handle, opts, grad=True)):
            with torch.enable_grad():
                e = embed_ids(handle, ids).detach().requires_grad_(True)
                y = rows[batch[0]].fn(e, attn, *aux)
                weights = [store[layer] for layer in layers]
                grads = torch.autograd.grad(y.sum(), weights)  # a row's output depends on its own weights only
            a = torch.stack(weights, 1).detach().double().cpu().numpy()  # (B, L, H, T, T)
            g = torch.stack(grads, 1).double().cpu().numpy()
            store.clear()
            for r, j in enumerate(batch):
                i, k = units[j]
                t = preps[i].length
                res[i][k] = rows_for(preps[i], gradient_rollout(a[r, :, :, :t, :t], g[r, :, :, :t, :t]))[k]
            bar.update(len(batch))
    bar.close()
    return [{"scores": s, "token_scores": s} for s in res]


def target_loss(y: torch.Tensor, fn_output: str) -> torch.Tensor:
    """The loss head importance differentiates: −log p for probabilities, −y otherwise."""
    if fn_output == "prob":
        return -torch.log(y.clamp(min=1e-12)).sum()
    return -y.sum()


@register_explainer("head_importance", layout="heads", options=HeadImportanceOptions,
                    description="Head importance |∂L/∂ξ_h| for a gate on each head's output",
                    reference="Michel, Levy & Neubig 2019, Are Sixteen Heads Really Better than One?")
def head_importance(handle: ModelHandle, preps: list[Prepared], opts: dict[str, Any], progress: bool
                    ) -> list[dict[str, Any]]:
    norm = opts["normalize"]
    outs: list[dict[str, Any] | None] = [None] * len(preps)
    # PLL rows become one copy per token inside the target: one example per forward, its gate shared
    per_row = any(p.fn.mode == "pll" for p in preps)
    for batch, ids, _, attn, aux in tqdm(row_batches(preps, batch_tokens(handle, opts, grad=True), per_row=per_row),
                                         desc="head importance", disable=not progress, unit="batch"):
        with head_gates(handle, rows=len(batch)) as gates, torch.enable_grad():
            y = preps[batch[0]].fn(embed_ids(handle, ids), attn, *aux)
            losses = torch.stack([target_loss(y[r], preps[i].fn.output) for r, i in enumerate(batch)])
            grads = torch.autograd.grad(losses.sum(), gates)  # row r's loss reaches only row r's gates
        imp_all = torch.stack(grads, 1).abs().double().cpu().numpy()  # (B, L, H)
        for r, i in enumerate(batch):
            imp = imp_all[r]
            if norm == "layer":
                # Michel et al.'s code normalises each layer's scores by their L2 norm
                imp = imp / (np.linalg.norm(imp, axis=1, keepdims=True) + 1e-20)
            outs[i] = {"scores": imp, "token_scores": None,  # nosec B105  # a vocabulary token, no secret
                       "info": {"loss": float(losses[r].detach())}}
    return [o for o in outs if o is not None]
