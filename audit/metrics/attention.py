"""Attention entropy per head (Clark et al. 2019, "What Does BERT Look At?"): how broadly each head
spreads its attention. Low entropy = a head that looks at one token (e.g. [CLS], the previous
token); near the maximum = a head that attends uniformly."""

from __future__ import annotations

import numpy as np


def attention_entropy(attn: np.ndarray, valid: np.ndarray | None = None, causal: bool = False
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Mean entropy (nats) of each head's rows, and the same divided by log(#visible keys).

    ``attn`` is (L, H, T, T) or (H, T, T) with rows summing to 1; ``valid`` (T,) marks real tokens
    (padding excluded, as queries and as keys). Query q sees every valid key, or only keys ≤ q when
    ``causal``. Rows that see a single key are left out of the normalised mean.
    """
    a = np.asarray(attn, dtype=np.float64)
    squeeze = a.ndim == 3
    if squeeze:
        a = a[None]
    t = a.shape[-1]
    rows = np.ones(t, bool) if valid is None else np.asarray(valid, dtype=bool)
    seen = np.broadcast_to(rows[None, :], (t, t)).copy()
    if causal:
        seen &= np.tril(np.ones((t, t), dtype=bool))
    visible = seen[rows].sum(-1)  # (rows,)
    a = a[:, :, rows, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        plogp = np.where(a > 0, a * np.log(np.where(a > 0, a, 1.0)), 0.0)
    ent = -plogp.sum(-1)  # (L, H, rows)
    counted = visible > 1
    norm = ent[..., counted] / np.log(visible[counted])
    mean_ent = ent.mean(-1)
    mean_norm = norm.mean(-1) if counted.any() else np.full(mean_ent.shape, np.nan)
    if squeeze:
        return mean_ent[0], mean_norm[0]
    return mean_ent, mean_norm
