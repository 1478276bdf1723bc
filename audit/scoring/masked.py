"""Masked-LM scoring: masked-token log-probabilities and pseudo-log-likelihood (Salazar et al.
2020; the CrowS-Pairs reference scorer of Nangia et al. 2020), batched by tokens, the LM head
applied at the masked positions only."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from audit.scoring.batching import (
    check_length,
    default_batch_tokens,
    length_sorted_batches,
    pad_token_id,
    padded_matrix,
    run_batches,
)
from audit.scoring.heads import output_head, target_logprobs

if TYPE_CHECKING:
    from audit.models import ModelHandle


def masked_token_logprobs(
    handle: ModelHandle,
    sequences: Sequence[Sequence[int]],
    positions: Sequence[int],
    targets: Sequence[int],
    *,
    max_batch_tokens: int | None = None,
    progress: bool = False,
    desc: str = "masked LM",
) -> np.ndarray:
    """log P(targets[i] at positions[i] | sequences[i]) for each query, batched.

    Each query is a full token-id sequence (with special tokens) that already has the mask
    token at ``positions[i]``. Queries are sorted by length, packed into batches bounded by
    ``max_batch_tokens`` padded tokens, and the LM head is applied at the masked positions only.
    """
    if len(sequences) == 0:
        return np.empty(0, dtype=np.float64)
    rows, lengths = padded_matrix(sequences, pad_token_id(handle))
    return _masked_queries(handle, rows, lengths, np.arange(len(sequences)), np.asarray(positions, dtype=np.int64),
                           np.asarray(targets, dtype=np.int64), max_batch_tokens=max_batch_tokens,
                           progress=progress, desc=desc)


def _masked_queries(
    handle: ModelHandle, rows: np.ndarray, lengths: np.ndarray, row_of: np.ndarray, positions: np.ndarray,
    targets: np.ndarray | None, *, max_batch_tokens: int | None, progress: bool, desc: str,
) -> np.ndarray:
    """The batched masked-LM core: query q reads sentence ``rows[row_of[q]]`` and is scored at
    ``positions[q]``. With ``targets`` None the query masks that position itself and its target is
    the token that was there (pseudo-log-likelihood); otherwise the row already holds the mask."""
    n = len(row_of)
    out = np.empty(n, dtype=np.float64)
    q_len = lengths[row_of]
    check_length(handle, int(q_len.max()), "a masked-LM query")
    budget = max_batch_tokens or default_batch_tokens(handle)
    head = output_head(handle)
    base = handle.model.base_model
    mask_id = handle.tokenizer.mask_token_id
    dev = handle.device

    def step(idx: np.ndarray) -> None:
        o = row_of[idx]
        T = int(q_len[idx].max())
        ids = rows[o, :T].copy()
        r = np.arange(len(idx))
        pos = positions[idx]
        if targets is None:
            tgt = ids[r, pos].copy()
            ids[r, pos] = mask_id
        else:
            tgt = targets[idx]
        att = (np.arange(T)[None, :] < q_len[idx][:, None]).astype(np.int64)
        ids_t, att_t, rows_t, pos_t, tgt_t = (torch.from_numpy(x).to(dev) for x in (ids, att, r, pos, tgt))
        with torch.inference_mode():
            if head is not None:
                sel = base(input_ids=ids_t, attention_mask=att_t).last_hidden_state[rows_t, pos_t]
            else:  # no head of its own: full logits, read at the masked positions
                sel = handle.model(input_ids=ids_t, attention_mask=att_t).logits[rows_t, pos_t]
            out[idx] = target_logprobs(head if head is not None else torch.nn.Identity(), sel, tgt_t, len(idx))

    run_batches(length_sorted_batches(q_len, budget), step, desc=desc, progress=progress)
    return out


def pseudo_log_likelihood(
    handle: ModelHandle,
    token_ids: Sequence[Sequence[int]],
    score_positions: Sequence[Sequence[int]] | None = None,
    *,
    max_batch_tokens: int | None = None,
    progress: bool = False,
) -> list[np.ndarray]:
    """Per-position masked log-probabilities: for sentence s and each p in score_positions[s],
    log P(s[p] | s with only position p masked).

    ``score_positions`` defaults to every position except the first and last (CLS/SEP).
    Returns one array per sentence, aligned with its positions. The masked copies are never
    materialised: each batch gathers its sentences from one padded matrix and masks one position
    per row.
    """
    if handle.tokenizer.mask_token_id is None:
        raise ValueError(f"{handle.name} has no mask token; masked pseudo-log-likelihood needs a masked LM")
    if score_positions is None:
        score_positions = [list(range(1, len(s) - 1)) for s in token_ids]
    counts = np.fromiter((len(ps) for ps in score_positions), dtype=np.int64, count=len(score_positions))
    if len(token_ids) == 0 or counts.sum() == 0:
        return [np.empty(0, dtype=np.float64) for _ in score_positions]
    rows, lengths = padded_matrix(token_ids, pad_token_id(handle))
    pos = np.fromiter((p for ps in score_positions for p in ps), dtype=np.int64, count=int(counts.sum()))
    owner = np.repeat(np.arange(len(token_ids)), counts)
    if np.any(pos < 0) or np.any(pos >= lengths[owner]):
        bad = int(owner[(pos < 0) | (pos >= lengths[owner])][0])
        raise ValueError(f"score position out of range for sequence {bad} (length {int(lengths[bad])})")
    flat = _masked_queries(handle, rows, lengths, owner, pos, None, max_batch_tokens=max_batch_tokens,
                           progress=progress, desc="masked PLL")
    return np.split(flat, np.cumsum(counts)[:-1])


def naive_pseudo_log_likelihood(
    handle: ModelHandle,
    token_ids: Sequence[Sequence[int]],
    score_positions: Sequence[Sequence[int]] | None = None,
) -> list[np.ndarray]:
    """Reference: one forward pass per masked copy, full logits (the original metric.py loop)."""
    mask_id = handle.tokenizer.mask_token_id
    if score_positions is None:
        score_positions = [list(range(1, len(s) - 1)) for s in token_ids]
    res = []
    for ids, ps in zip(token_ids, score_positions, strict=True):
        vals = []
        for p in ps:
            copy = torch.as_tensor([list(ids)], device=handle.device)
            target = int(copy[0, p])
            copy[0, p] = mask_id
            with torch.inference_mode():
                logits = handle.model(input_ids=copy).logits[0, p]
            vals.append(float(torch.log_softmax(logits.float(), -1)[target]))
        res.append(np.asarray(vals, dtype=np.float64))
    return res
