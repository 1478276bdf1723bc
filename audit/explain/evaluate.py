"""Score attributions of a real model: every metric for every example, method and target.

All perturbations of one example (every method's comprehensiveness / sufficiency bins,
deletion / insertion curves and the leave-one-out copies) go through one batched
:class:`~audit.explain.perturbation.Ablator` call. The long result table has the columns
``example, method, metric, value, k, target_index, other_method, layer, head``; ``k`` is set on
curve points (bin or removed fraction).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from functools import partial
from itertools import combinations
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from scipy import stats
from tqdm.auto import tqdm

from audit.explain.arch import ArchitectureNotSupportedError, is_causal
from audit.explain.attention import AttentionOptions, raw_attention
from audit.explain.base import get_explainer
from audit.explain.gradient import explain_embeddings
from audit.explain.perturbation import Ablator
from audit.explain.targets import embed_ids
from audit.metrics.agreement import rank_agreement
from audit.metrics.attention import attention_entropy
from audit.metrics.faithfulness import (
    DEFAULT_BINS,
    aopc,
    comprehensiveness_masks,
    curve_auc,
    deletion_masks,
    insertion_masks,
    loo_masks,
    sufficiency_masks,
    tau_loo,
)
from audit.metrics.info import METRICS
from audit.metrics.plausibility import plausibility_auprc, plausibility_token_f1, rationale_mask
from audit.metrics.robustness import infidelity_tokens, sensitivity_tokens
from audit.results import MetricValue

if TYPE_CHECKING:
    from audit.explain.attributions import Attributions
    from audit.explain.targets import Prepared
    from audit.models import ModelHandle

logger = logging.getLogger(__name__)

#: names accepted in ``metrics=`` and the metric rows each produces
METRIC_GROUPS: dict[str, tuple[str, ...]] = {
    "completeness_gap": ("completeness_gap",),
    "comprehensiveness": ("comprehensiveness", "comprehensiveness_aopc"),
    "sufficiency": ("sufficiency", "sufficiency_aopc"),
    "deletion_auc": ("deletion", "deletion_auc"),
    "insertion_auc": ("insertion", "insertion_auc"),
    "tau_loo": ("tau_loo",),
    "infidelity": ("infidelity",),
    "sensitivity_max": ("sensitivity_max",),
    "rank_agreement": ("rank_spearman", "rank_kendall", "topk_overlap"),
    "attention_entropy": ("attention_entropy", "attention_entropy_normalized"),
    "plausibility": ("plausibility_auprc", "plausibility_token_f1"),
}
DEFAULT_METRICS: tuple[str, ...] = ("completeness_gap", "comprehensiveness", "sufficiency", "deletion_auc",
                                    "insertion_auc", "tau_loo", "rank_agreement", "attention_entropy")
COLUMNS = ["example", "method", "metric", "value", "k", "target_index", "other_method", "layer", "head"]
_PERTURBATION = {"comprehensiveness", "sufficiency", "deletion_auc", "insertion_auc", "tau_loo"}


def check_metrics(metrics: Sequence[str]) -> list[str]:
    """Validate metric names (groups of :data:`METRIC_GROUPS`); unknown names raise ValueError."""
    for m in metrics:
        if m not in METRIC_GROUPS:
            raise ValueError(f"unknown metric {m!r}; known: {', '.join(METRIC_GROUPS)}")
    return list(metrics)


def _row(p: Prepared, target: int | None, method: str, metric: str, value: float, *, at: float | None = None,
         other: str | None = None, layer: int | None = None, head: int | None = None) -> dict[str, Any]:
    """One metrics.parquet row; ``target`` indexes p's targets, ``at`` is a curve point (column k)."""
    tpos = p.target_positions[target] if (target is not None and p.target_positions is not None) else None
    return {"example": p.index, "method": method, "metric": metric, "value": float(value), "k": at,
            "target_index": tpos, "other_method": other, "layer": layer, "head": head}


def token_offsets(handle: ModelHandle, p: Prepared) -> list[tuple[int, int]] | None:
    """Character offsets of p's tokens in ``p.text`` (None when they cannot be aligned)."""
    tok = handle.tokenizer
    try:
        if handle.kind == "causal-lm":
            enc = tok(p.text, add_special_tokens=False, return_offsets_mapping=True)
            n_pre = p.length - len(enc["input_ids"]) - (len(p.target_positions or []) if p.target_positions else 0)
            offs = [(0, 0)] * n_pre + [tuple(o) for o in enc["offset_mapping"]]
        else:
            enc = tok(p.text, return_offsets_mapping=True)
            offs = [tuple(o) for o in enc["offset_mapping"]]
    except (NotImplementedError, TypeError, ValueError):
        return None
    offs += [(0, 0)] * (p.length - len(offs))
    return offs if len(offs) == p.length else None  # type: ignore[return-value]


def evaluate(
    handle: ModelHandle,
    preps: Sequence[Prepared],
    attributions: Sequence[Attributions],
    metrics: Sequence[str] = DEFAULT_METRICS,
    *,
    rationales: Sequence[Sequence[str] | None] | None = None,
    bins: Sequence[float] = DEFAULT_BINS,
    removal: str = "baseline",
    curve_points: int | None = 50,
    infidelity_samples: int = 16,
    infidelity_noise: float = 0.1,
    sensitivity_samples: int = 8,
    sensitivity_radius: float = 0.02,
    max_batch_tokens: int | None = None,
    seed: int = 0,
    progress: bool = False,
) -> pd.DataFrame:
    """Every requested metric for every (example, method, target); a long DataFrame."""
    metrics = check_metrics(metrics)
    want = set(metrics)
    rows: list[dict[str, Any]] = []
    by_method = {a.method: a for a in attributions}
    token_methods = [a.method for a in attributions if a.layout != "heads"]

    if "completeness_gap" in want:
        for a in attributions:
            for p, e in zip(preps, a.examples, strict=True):
                for k, g in enumerate((e.completeness or {}).get("gap", [])):
                    rows.append(_row(p, k, a.method, "completeness_gap", float("nan") if g is None else g))

    for i, p in enumerate(tqdm(preps, desc="metrics", disable=not progress, unit="ex")):
        abl = Ablator(handle, p, removal, max_batch_tokens) if want & (_PERTURBATION | {"infidelity"}) else None
        for k in range(p.n_targets):
            vis = p.visible(k).cpu().numpy()
            scores = {m: by_method[m].examples[i].token_scores[k] for m in token_methods}  # type: ignore[index]
            if abl is not None and want & _PERTURBATION:
                rows += _perturbation_rows(p, k, vis, scores, abl, want, bins, curve_points)
            if "infidelity" in want:
                rows += _infidelity_rows(handle, p, k, vis, scores, infidelity_samples, infidelity_noise, seed,
                                         abl.rows if abl else None)
            if "sensitivity_max" in want:
                with torch.no_grad():
                    emb = embed_ids(handle, p.ids[None])
                for m in filter(lambda m: get_explainer(m).gradient, token_methods):
                    rows.append(_row(p, k, m, "sensitivity_max", sensitivity_tokens(
                        partial(explain_embeddings, handle, p, k, m, opts=by_method[m].options), emb, vis,
                        radius=sensitivity_radius, n_perturb_samples=sensitivity_samples, seed=seed)))
            if "rank_agreement" in want:
                for m1, m2 in combinations(token_methods, 2):
                    for name, v in rank_agreement(scores[m1], scores[m2], vis).items():
                        rows.append(_row(p, k, m1, name, v, other=m2))
            if "plausibility" in want and rationales is not None and rationales[i]:
                offs = token_offsets(handle, p)
                if offs is None:
                    logger.warning("example %d: cannot align tokens with characters; plausibility skipped", p.index)
                else:
                    gold = rationale_mask(p.text, list(rationales[i] or []), offs)
                    for m in token_methods:
                        rows.append(_row(p, k, m, "plausibility_auprc", plausibility_auprc(scores[m], gold, vis)))
                        rows.append(_row(p, k, m, "plausibility_token_f1",
                                         plausibility_token_f1(scores[m], gold, vis)))

    if "attention_entropy" in want:
        rows += _entropy_rows(handle, preps, by_method.get("attention"), progress)
    return pd.DataFrame(rows, columns=COLUMNS).astype({"example": "int64", "target_index": "Int64", "layer": "Int64",
                                                       "head": "Int64", "k": "float64", "value": "float64"})


def _perturbation_rows(p: Prepared, k: int, vis: np.ndarray, scores: dict[str, np.ndarray], abl: Any,
                       want: set[str], bins: Sequence[float], curve_points: int | None) -> list[dict[str, Any]]:
    t = p.length
    blocks: list[tuple[str, str, np.ndarray, Any]] = [("", "full", np.ones((1, t), bool), None)]
    if "tau_loo" in want:
        keep, idx = loo_masks(vis)
        blocks.append(("", "loo", keep, idx))
    for m, s in scores.items():
        if "comprehensiveness" in want:
            blocks.append((m, "comprehensiveness", comprehensiveness_masks(s, vis, bins), None))
        if "sufficiency" in want:
            blocks.append((m, "sufficiency", sufficiency_masks(s, vis, bins), None))
        if "deletion_auc" in want:
            keep, frac = deletion_masks(s, vis, curve_points)
            blocks.append((m, "deletion", keep, frac))
        if "insertion_auc" in want:
            keep, frac = insertion_masks(s, vis, curve_points)
            blocks.append((m, "insertion", keep, frac))
    # hidden tokens (after a generated target) stay as they are: they cannot change target k
    allm = np.concatenate([b[2] for b in blocks]) | ~vis[None]
    vals = np.split(abl(allm)[:, k], np.cumsum([len(b[2]) for b in blocks])[:-1])
    parts = {(m, name): (v, extra) for (m, name, _, extra), v in zip(blocks, vals, strict=True)}
    out: list[dict[str, Any]] = []
    f_x = float(parts[("", "full")][0][0])
    loo = None
    if ("", "loo") in parts:
        v, idx = parts[("", "loo")]
        loo = np.full(t, np.nan)
        loo[idx] = f_x - v
    for m, s in scores.items():
        for name in ("comprehensiveness", "sufficiency"):
            if (m, name) in parts:
                curve = f_x - parts[(m, name)][0]
                out += [_row(p, k, m, name, c, at=b) for b, c in zip(bins, curve, strict=True)]
                out.append(_row(p, k, m, f"{name}_aopc", aopc(curve)))
        for name in ("deletion", "insertion"):
            if (m, name) in parts:
                v, frac = parts[(m, name)]
                out += [_row(p, k, m, name, val, at=float(f)) for f, val in zip(frac, v, strict=True)]
                out.append(_row(p, k, m, f"{name}_auc", curve_auc(frac, v)))
        if loo is not None:
            out.append(_row(p, k, m, "tau_loo", tau_loo(s, loo, vis)))
    return out


def _infidelity_rows(handle: ModelHandle, p: Prepared, k: int, vis: np.ndarray, scores: dict[str, np.ndarray],
                     n: int, noise: float, seed: int, rows: int | None) -> list[dict[str, Any]]:
    with torch.no_grad():
        e = embed_ids(handle, p.ids[None])
        e0 = embed_ids(handle, p.baseline_ids[None])

    def forward_z(z: torch.Tensor) -> torch.Tensor:
        return p.run(e0 + z.to(e.device, e.dtype)[..., None] * (e - e0))[:, k].cpu()

    return [_row(p, k, m, "infidelity", infidelity_tokens(forward_z, s, vis, n_perturb_samples=n, noise=noise,
                                                          seed=seed, max_examples_per_batch=rows))
            for m, s in scores.items()]


def _entropy_rows(handle: ModelHandle, preps: Sequence[Prepared], attn: Attributions | None, progress: bool
                  ) -> list[dict[str, Any]]:
    if attn is not None:
        weights = [e.scores for e in attn.examples]
        layers, heads = attn.layers, attn.heads
    else:
        try:
            outs = raw_attention(handle, list(preps), AttentionOptions().values(), progress)
        except ArchitectureNotSupportedError as exc:
            logger.warning("attention entropy skipped: %s", exc)
            return []
        weights = [o["scores"] for o in outs]
        layers, heads = outs[0]["layers"], outs[0]["heads"]
    causal = is_causal(handle)
    rows = []
    for p, w in zip(preps, weights, strict=True):
        ent, norm = attention_entropy(w, causal=causal)
        for li, layer in enumerate(layers or range(w.shape[0])):
            for hi, head in enumerate(heads or range(w.shape[1])):
                rows.append(_row(p, None, "attention", "attention_entropy", ent[li, hi], layer=layer, head=head))
                rows.append(_row(p, None, "attention", "attention_entropy_normalized", norm[li, hi],
                                 layer=layer, head=head))
    return rows


def summarize(df: pd.DataFrame) -> dict[str, dict[str, dict[str, Any]]]:
    """Per method and metric (curve points excluded): the mean over examples and targets with a
    95 % t-interval, as MetricValue dicts. Agreement metrics are keyed ``metric:other_method``."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    if df.empty:
        return out
    scalar = df[df["k"].isna()]
    keys = scalar["metric"] + np.where(scalar["other_method"].notna(), ":" + scalar["other_method"].fillna(""), "")
    for (method, key), g in scalar.groupby([scalar["method"], keys], sort=True):
        vals = g["value"].to_numpy(dtype=np.float64)
        vals = vals[np.isfinite(vals)]
        info = METRICS.get(key.split(":")[0])
        n = len(vals)
        mean = float(vals.mean()) if n else float("nan")
        lo = hi = None
        if n >= 2:
            half = float(stats.t.ppf(0.975, n - 1) * vals.std(ddof=1) / math.sqrt(n))
            lo, hi = mean - half, mean + half
        mv = (MetricValue.from_info(info, mean, ci_low=lo, ci_high=hi, n=n, ci_method="t" if n >= 2 else "")
              if info else MetricValue(mean, lo, hi, n))
        out.setdefault(str(method), {})[str(key)] = mv.to_dict()
    return out
