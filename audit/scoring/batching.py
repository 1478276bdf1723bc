"""Token budgets, length-sorted batches, out-of-memory back-off, padding and length checks: what
every scoring primitive (:mod:`audit.scoring`) batches with."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tqdm.auto import tqdm

if TYPE_CHECKING:
    from audit.models import ModelHandle

logger = logging.getLogger(__name__)


class InputTooLongError(ValueError):
    """An input longer than the model accepts."""


def default_batch_tokens(handle: ModelHandle) -> int:
    """Token budget per forward: large on accelerators (OOM back-off trims it), moderate on CPU,
    where a batch's activations should stay near the cache (measured on 2 cores with bert-base /
    GPT-2-base sizes: 2048 tokens was as fast as or faster than 4096 for packed causal scoring and
    masked PLL; benchmarks/RESULTS.md)."""
    if handle.device.type == "cuda":
        return 131072
    if handle.device.type == "mps":
        return 16384
    return 2048


def length_sorted_batches(
    lengths: Sequence[int], max_tokens: int, max_rows: int | None = None, max_pad_ratio: float = 1.25
) -> list[np.ndarray]:
    """Index batches, longest first, each with ``rows × longest ≤ max_tokens`` (padded size).

    A batch is also closed when the next item is shorter than ``longest / max_pad_ratio``, so no
    row is more than ~20 % padding: padded positions cost as much as real ones.
    """
    lengths_arr = np.asarray(lengths, dtype=np.int64)
    if lengths_arr.size == 0:
        return []
    order = np.argsort(-lengths_arr, kind="stable")
    batches: list[np.ndarray] = []
    start = 0
    n = len(order)
    while start < n:
        longest = max(int(lengths_arr[order[start]]), 1)
        rows = max(1, max_tokens // longest)
        if max_rows is not None:
            rows = min(rows, max_rows)
        end = min(n, start + rows)
        # stop early where the lengths fall below longest / max_pad_ratio
        short = np.nonzero(lengths_arr[order[start:end]] * max_pad_ratio < longest)[0]
        if short.size:
            end = start + max(1, int(short[0]))
        batches.append(order[start:end])
        start = end
    return batches


def run_batches(
    batches: Sequence[Any],
    fn: Callable[[Any], None],
    *,
    desc: str = "",
    progress: bool = False,
    total: int | None = None,
    size: Callable[[Any], int] = len,
) -> None:
    """Call ``fn`` on each batch (an index array, or a packed batch's list of rows); on
    out-of-memory, halve the batch and retry. ``size`` counts a batch's items for the progress bar."""
    bar = tqdm(total=total or sum(size(b) for b in batches), desc=desc, disable=not progress, unit="it")
    queue = list(reversed(batches))
    while queue:
        b = queue.pop()
        try:
            fn(b)
            bar.update(size(b))
        except (RuntimeError, torch.cuda.OutOfMemoryError) as exc:
            oom = isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()
            if not oom or len(b) == 1:
                raise
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            half = len(b) // 2
            logger.warning("out of memory on a batch of %d; retrying as two halves", len(b))
            queue += [b[half:], b[:half]]
    bar.close()


def padded_matrix(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-padded ``(n × longest)`` id matrix and the lengths, built without a per-row loop."""
    lengths = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=len(seqs))
    flat = np.fromiter((t for s in seqs for t in s), dtype=np.int64, count=int(lengths.sum()))
    out = np.full((len(seqs), int(lengths.max(initial=0))), pad_id, dtype=np.int64)
    rows = np.repeat(np.arange(len(seqs)), lengths)
    out[rows, np.arange(flat.size) - np.repeat(np.cumsum(lengths) - lengths, lengths)] = flat
    return out, lengths


def pad_tensors(seqs: Sequence[Sequence[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    ids, lengths = padded_matrix(seqs, pad_id)
    att = (np.arange(ids.shape[1])[None, :] < lengths[:, None]).astype(np.int64)
    return torch.from_numpy(ids).to(device), torch.from_numpy(att).to(device)


def pad_token_id(handle: ModelHandle) -> int:
    """The padding id (EOS, else 0, for a tokenizer without one: padded positions are masked)."""
    tok = handle.tokenizer
    return int(tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0))


def check_length(handle: ModelHandle, n_tokens: int, what: str = "input") -> None:
    if n_tokens > handle.max_length:
        raise InputTooLongError(
            f"{what} has {n_tokens} tokens; {handle.name} accepts at most {handle.max_length}"
        )
