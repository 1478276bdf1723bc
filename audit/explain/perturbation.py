"""Perturbation attributions and the batched ablation every faithfulness metric uses.

:class:`Ablator` evaluates the target on many copies of one input at once: each row of a
``keep`` mask says which tokens stay; removed tokens become the baseline token
(``removal="baseline"``, the token IG starts from) or are hidden from attention
(``removal="mask"``). Copies are packed into forwards of at most ``max_batch_tokens`` padded
tokens — no per-token Python loop.

* ``occlusion`` — feature ablation per token: f(x) − f(x with token i removed) (Zeiler & Fergus
  2014); equal to Captum ``FeatureAblation`` with one feature per token.
* ``lime`` — Captum ``Lime`` over token-presence features with LIME's text kernel
  (cosine distance, width 25 on a 0–100 scale) and a ridge surrogate (Ribeiro et al. 2016).
* ``kernel_shap`` — Captum ``KernelShap`` over the same features (Lundberg & Lee 2017).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from pydantic import Field, NonNegativeFloat
from tqdm.auto import tqdm

from audit.explain.base import ExplainOptions, SeededOptions, batch_tokens, register_explainer
from audit.explain.errors import OptionError
from audit.explain.targets import Prepared, embed_ids, forward_rows
from audit.metrics.faithfulness import loo_masks

if TYPE_CHECKING:
    from audit.models import ModelHandle

REMOVALS = ("baseline", "mask")
Removal = Literal["baseline", "mask"]


class Ablator:
    """Batched evaluation of one prepared example under token removal."""

    def __init__(self, handle: ModelHandle, p: Prepared, removal: str = "baseline",
                 max_batch_tokens: int | None = None) -> None:
        if removal not in REMOVALS:
            raise OptionError(f"unknown removal {removal!r}; use one of {', '.join(REMOVALS)}")
        self.handle, self.p, self.removal = handle, p, removal
        expand = forward_rows(p)  # a PLL row is one forward row per token
        budget = max_batch_tokens or batch_tokens(handle, {}, grad=False)
        self.rows = max(1, budget // (p.length * expand))
        self.fixed = ~p.attributable
        self.calls = 0

    def __call__(self, keep: np.ndarray | torch.Tensor) -> np.ndarray:
        """Target outputs ``(n, K)`` for ``n`` keep-masks ``(n, T)`` (fixed positions always kept)."""
        p = self.p
        keep_t = torch.as_tensor(np.asarray(keep, dtype=bool), device=p.ids.device)
        if keep_t.ndim == 1:
            keep_t = keep_t[None]
        keep_t = keep_t | self.fixed
        outs = []
        with torch.inference_mode():
            for c0 in range(0, keep_t.shape[0], self.rows):
                kp = keep_t[c0 : c0 + self.rows]
                if self.removal == "baseline":
                    ids, attn = torch.where(kp, p.ids, p.baseline_ids), None
                else:
                    ids, attn = p.ids.expand(kp.shape[0], -1), kp.long()
                outs.append(p.run(embed_ids(self.handle, ids), attn).double().cpu())
                self.calls += 1
        return torch.cat(outs).numpy()

    def full(self) -> np.ndarray:
        """f(x), shape (K,)."""
        return self(np.ones((1, self.p.length), dtype=bool))[0]


class OcclusionOptions(ExplainOptions):
    removal: Removal = Field(default="baseline", description="a removed token becomes the baseline token or is "
                             "masked out of attention")


class SurrogateOptions(SeededOptions):
    n_samples: int = Field(default=200, ge=2, description="perturbed inputs the surrogate is fitted to")


class LimeOptions(SurrogateOptions):
    kernel_width: float = Field(default=25.0, gt=0)
    alpha: NonNegativeFloat = Field(default=1.0, description="ridge penalty of the surrogate")


@register_explainer("occlusion", options=OcclusionOptions,
                    description="Feature ablation per token: f(x) − f(x with the token removed), copies batched",
                    reference="Zeiler & Fergus 2014; Captum FeatureAblation")
def occlusion(handle: ModelHandle, preps: list[Prepared], opts: dict[str, Any], progress: bool
              ) -> list[dict[str, Any]]:
    removal = opts["removal"]
    outs = []
    for p in tqdm(preps, desc="occlusion", disable=not progress, unit="ex"):
        abl = Ablator(handle, p, removal, opts.get("max_batch_tokens"))
        keep, idx = loo_masks(p.attributable.cpu().numpy())
        vals = abl(np.concatenate([np.ones((1, p.length), dtype=bool), keep]))  # row 0: the unperturbed input
        s = np.zeros((p.n_targets, p.length))
        s[:, idx] = (vals[0][:, None] - vals[1:].T)
        outs.append({"scores": s, "token_scores": s})
    return outs


def lime_text_kernel(kernel_width: float = 25.0) -> Any:
    """LIME's text kernel: sqrt(exp(−(100·d)² / width²)), d the cosine distance of the presence vector
    to the all-present vector (Ribeiro et al. 2016, lime.lime_text defaults)."""

    def similarity(original: Any, perturbed: Any, interpretable: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        z = interpretable.float().flatten()
        n = z.numel()
        norm = z.norm()
        cos = z.sum() / (norm * n**0.5) if float(norm) > 0 else torch.tensor(0.0)
        d = 1.0 - cos
        return torch.sqrt(torch.exp(-((100.0 * d) ** 2) / kernel_width**2))

    return similarity


def _surrogate(handle: ModelHandle, preps: list[Prepared], opts: dict[str, Any], progress: bool, name: str,
               make: Any) -> list[dict[str, Any]]:
    n_samples = opts["n_samples"]
    budget = batch_tokens(handle, opts, grad=False)
    layer = handle.input_embeddings()
    outs = []
    for p in tqdm(preps, desc=name, disable=not progress, unit="ex"):
        attributable = p.attributable
        fm = torch.full((1, p.length), int(attributable.sum()), dtype=torch.long, device=p.ids.device)
        fm[0, attributable] = torch.arange(int(attributable.sum()), device=p.ids.device)
        attn = p.attn()[None]

        def forward(ids: torch.Tensor, a: torch.Tensor, *xa: torch.Tensor, _p: Prepared = p) -> torch.Tensor:
            b = ids.shape[0]
            return _p.fn(layer(ids), a.expand(b, -1), *(t.expand(b, *t.shape[1:]) for t in xa))

        rows = []
        for k in range(p.n_targets):
            torch.manual_seed(int(opts["seed"]) + k)
            with torch.no_grad():
                a = make(forward).attribute(
                    p.ids[None], baselines=p.baseline_ids[None], target=k, additional_forward_args=(attn, *p.aux),
                    feature_mask=fm, n_samples=n_samples, perturbations_per_eval=max(1, budget // p.length))
            rows.append(a[0].double())
        outs.append(p.token_result(torch.stack(rows).cpu().numpy()))
    return outs


@register_explainer("lime", options=LimeOptions,
                    description="LIME over token presence (Captum Lime, LIME text kernel, ridge surrogate)",
                    reference="Ribeiro, Singh & Guestrin 2016, \"Why Should I Trust You?\"")
def lime(handle: ModelHandle, preps: list[Prepared], opts: dict[str, Any], progress: bool) -> list[dict[str, Any]]:
    from captum._utils.models.linear_model import SkLearnRidge
    from captum.attr import Lime

    def make(forward: Any) -> Any:
        return Lime(forward, interpretable_model=SkLearnRidge(alpha=float(opts["alpha"])),
                    similarity_func=lime_text_kernel(float(opts["kernel_width"])))

    return _surrogate(handle, preps, opts, progress, "lime", make)


@register_explainer("kernel_shap", options=SurrogateOptions,
                    description="Kernel SHAP over token presence (Captum KernelShap)",
                    reference="Lundberg & Lee 2017, A Unified Approach to Interpreting Model Predictions")
def kernel_shap(handle: ModelHandle, preps: list[Prepared], opts: dict[str, Any], progress: bool
                ) -> list[dict[str, Any]]:
    from captum.attr import KernelShap

    return _surrogate(handle, preps, opts, progress, "kernel_shap", KernelShap)
