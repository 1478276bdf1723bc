"""Captum's (in)fidelity and sensitivity metrics (Yeh et al. 2019, "On the (In)fidelity and
Sensitivity of Explanations") for token attributions.

Infidelity works in *token-presence* space: z ∈ ℝᵀ with z = 1 the input and z = 0 the baseline
(embeddings e' + z·(e − e')), so a per-token attribution is an attribution of z. Perturbations are
Gaussian, I ~ N(0, σ²) on the attributable tokens, and Captum's ``normalize=True`` rescales the
attribution optimally (so saliency norms and IG sums compare). Sensitivity-max re-runs a
gradient method at embeddings perturbed uniformly within a radius proportional to the embeddings'
RMS, and reports the largest relative change of the attribution.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch


def infidelity_tokens(forward_z: Callable[[torch.Tensor], torch.Tensor], scores: np.ndarray,
                      attributable: np.ndarray, *, n_perturb_samples: int = 16, noise: float = 0.1,
                      seed: int = 0, max_examples_per_batch: int | None = None) -> float:
    """Captum ``infidelity`` of token scores (T,); ``forward_z`` maps presence vectors (n, T) to (n,)."""
    from captum.metrics import infidelity

    mask = torch.as_tensor(np.asarray(attributable, dtype=bool) & np.isfinite(scores), dtype=torch.float32)
    attr = torch.as_tensor(np.nan_to_num(np.asarray(scores, dtype=np.float64)), dtype=torch.float32) * mask
    z = torch.ones(1, len(scores))
    gen = torch.Generator().manual_seed(seed)

    def perturb(inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pert = noise * torch.randn(inputs.shape, generator=gen) * mask
        return pert, inputs - pert

    per_batch = None if max_examples_per_batch is None else max(1, min(max_examples_per_batch, n_perturb_samples))
    with torch.no_grad():
        val = infidelity(forward_z, perturb, z, attr[None], n_perturb_samples=n_perturb_samples,
                         max_examples_per_batch=per_batch, normalize=True)
    return float(val[0])


def sensitivity_tokens(explain: Callable[[torch.Tensor], torch.Tensor], embeds: torch.Tensor,
                       attributable: np.ndarray, *, radius: float = 0.02, n_perturb_samples: int = 8,
                       seed: int = 0) -> float:
    """Captum ``sensitivity_max`` of an explanation ``explain(e (n, T, H)) -> (n, T)`` at ``embeds``
    (1, T, H); the perturbation radius is ``radius`` × the RMS of the attributable embeddings."""
    from captum.metrics import sensitivity_max

    mask = torch.as_tensor(np.asarray(attributable, dtype=bool), device=embeds.device)
    scale = float(embeds[0, mask].float().pow(2).mean().sqrt()) if bool(mask.any()) else 1.0
    r = radius * scale
    gen = torch.Generator(device="cpu").manual_seed(seed)

    def perturb(inputs: torch.Tensor) -> torch.Tensor:
        noise = (torch.rand(inputs.shape, generator=gen) * 2 - 1).to(inputs.device, inputs.dtype) * r
        return inputs + noise * mask[None, :, None]

    def explanation(inputs: torch.Tensor | tuple[torch.Tensor, ...]) -> tuple[torch.Tensor]:
        # Captum iterates over the unperturbed explanation, so it must be a tuple
        x = inputs[0] if isinstance(inputs, tuple) else inputs
        return (explain(x).detach(),)

    val = sensitivity_max(explanation, embeds, perturb_func=perturb, n_perturb_samples=n_perturb_samples,
                          max_examples_per_batch=n_perturb_samples)
    return float(val[0])
