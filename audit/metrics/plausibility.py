"""Plausibility: agreement of attributions with human rationales (DeYoung et al. 2020, ERASER):
AUPRC of the scores against the rationale tokens, and token F1 of the top-|rationale| tokens."""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np


def rationale_mask(text: str, rationale: Sequence[str], offsets: Sequence[tuple[int, int]]) -> np.ndarray:
    """Tokens (given by character offsets into ``text``) that overlap any occurrence of a rationale
    phrase. Phrases match case-insensitively on word boundaries; (0, 0) offsets never match."""
    spans: list[tuple[int, int]] = []
    for phrase in rationale:
        phrase = phrase.strip()
        if not phrase:
            continue
        pat = re.escape(phrase)
        if phrase[0].isalnum():
            pat = r"\b" + pat
        if phrase[-1].isalnum():
            pat = pat + r"\b"
        spans += [(m.start(), m.end()) for m in re.finditer(pat, text, flags=re.IGNORECASE)]
    out = np.zeros(len(offsets), dtype=bool)
    for i, (s, e) in enumerate(offsets):
        if e > s:
            out[i] = any(s < be and bs < e for bs, be in spans)
    return out


def plausibility_auprc(scores: np.ndarray, rationale: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Average precision of ``scores`` ranking the rationale tokens first (NaN without both classes)."""
    from sklearn.metrics import average_precision_score

    s = np.asarray(scores, dtype=np.float64)
    r = np.asarray(rationale, dtype=bool)
    m = np.isfinite(s) if mask is None else np.asarray(mask, dtype=bool) & np.isfinite(s)
    if r[m].all() or not r[m].any():
        return float("nan")
    return float(average_precision_score(r[m], s[m]))


def plausibility_token_f1(scores: np.ndarray, rationale: np.ndarray, mask: np.ndarray | None = None,
                          k: int | None = None) -> float:
    """F1 of the top-k tokens (k = number of rationale tokens by default) against the rationale."""
    s = np.asarray(scores, dtype=np.float64)
    r = np.asarray(rationale, dtype=bool)
    m = np.isfinite(s) if mask is None else np.asarray(mask, dtype=bool) & np.isfinite(s)
    idx = np.nonzero(m)[0]
    n_pos = int(r[idx].sum())
    if n_pos == 0:
        return float("nan")
    kk = n_pos if k is None else k
    pred = idx[np.argsort(-s[idx], kind="stable")[:kk]]
    tp = int(r[pred].sum())
    if tp == 0:
        return 0.0
    precision, recall = tp / len(pred), tp / n_pos
    return 2 * precision * recall / (precision + recall)
