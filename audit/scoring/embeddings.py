"""Pooled sentence embeddings and per-layer hidden states (SEAT, May et al. 2019)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from tqdm.auto import tqdm

from audit.scoring import batching

if TYPE_CHECKING:
    from audit.models import ModelHandle

POOLINGS = ("mean", "cls", "pooler", "last")


def pool(
    hidden: torch.Tensor, att: torch.Tensor, pooling: str, pooler_output: torch.Tensor | None = None
) -> torch.Tensor:
    """Pool ``hidden`` (B × T × H) over the positions ``att`` marks: one of :data:`POOLINGS`."""
    if pooling == "mean":
        m = att.unsqueeze(-1).to(hidden.dtype)
        return (hidden * m).sum(1) / m.sum(1).clamp(min=1)
    if pooling == "cls":
        return hidden[:, 0]
    if pooling == "last":
        last = att.sum(1) - 1
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    if pooling == "pooler":
        if pooler_output is None:
            raise ValueError("this model has no pooler output; use pooling='mean' or 'cls'")
        return pooler_output
    raise ValueError(f"unknown pooling {pooling!r}; use one of {POOLINGS}")


def _pooled(
    handle: ModelHandle, texts: Sequence[str], fn: Callable[[dict[str, torch.Tensor]], torch.Tensor],
    max_batch_tokens: int | None, progress: bool, desc: str,
) -> np.ndarray | None:
    """``fn(batch)`` (pooled states, the batch's texts on the second-to-last axis) over
    length-sorted padded batches, as float32 with the texts in their order; None for no texts."""
    enc = handle.tokenizer(list(texts), add_special_tokens=True, truncation=False)["input_ids"]
    lengths = [len(e) for e in enc]
    if lengths:
        batching.check_length(handle, max(lengths), "a text to embed")
    budget = max_batch_tokens or batching.default_batch_tokens(handle)
    out: np.ndarray | None = None
    for idx in tqdm(batching.length_sorted_batches(lengths, budget), desc=desc, disable=not progress):
        ids, att = batching.pad_tensors([enc[i] for i in idx], batching.pad_token_id(handle), handle.device)
        with torch.inference_mode():
            arr = fn({"input_ids": ids, "attention_mask": att}).float().cpu().numpy()
        if out is None:
            out = np.empty((*arr.shape[:-2], len(texts), arr.shape[-1]), dtype=np.float32)
        out[..., idx, :] = arr
    return out


def embed(
    handle: ModelHandle,
    texts: Sequence[str],
    *,
    pooling: str = "mean",
    layer: int = -1,
    normalize: bool = True,
    max_batch_tokens: int | None = None,
    progress: bool = False,
) -> np.ndarray:
    """Pooled sentence embeddings (N × H), L2-normalised by default (SEAT, May et al. 2019).

    For causal LMs use ``pooling="last"`` or ``"mean"``; padding is masked either way.
    """
    if pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {pooling!r}; use one of {POOLINGS}")
    base = handle.model.base_model

    def one(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        o = base(**batch, output_hidden_states=layer != -1)
        hidden = o.last_hidden_state if layer == -1 else o.hidden_states[layer]
        pooled = pool(hidden, batch["attention_mask"], pooling, getattr(o, "pooler_output", None))
        return torch.nn.functional.normalize(pooled.float(), dim=-1) if normalize else pooled

    out = _pooled(handle, texts, one, max_batch_tokens, progress, "embed")
    return out if out is not None else np.empty((0, 0), dtype=np.float32)


def hidden_states(
    handle: ModelHandle,
    texts: Sequence[str],
    *,
    pooling: str = "mean",
    max_batch_tokens: int | None = None,
    progress: bool = False,
) -> np.ndarray:
    """Pooled hidden states of every layer: array (n_layers + 1, N, H), embeddings first."""
    base = handle.model.base_model

    def every_layer(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.stack([pool(h, batch["attention_mask"], pooling)
                            for h in base(**batch, output_hidden_states=True).hidden_states])

    out = _pooled(handle, texts, every_layer, max_batch_tokens, progress, "hidden states")
    return out if out is not None else np.empty((0, 0, 0), dtype=np.float32)
