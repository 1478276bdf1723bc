"""The module that maps final hidden states to vocabulary logits, for causal and masked LMs."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from audit.models import ModelHandle


def target_logprobs(
    head: Callable[[torch.Tensor], torch.Tensor], sel: torch.Tensor, targets: torch.Tensor, head_chunk: int,
) -> np.ndarray:
    """log-softmax of the LM head at the hidden states ``sel`` (N × H), read at ``targets``, in row
    chunks: a large vocabulary never materialises an N × vocab tensor, and only the target logit and
    the log-sum-exp are taken from each chunk (no second vocab-sized log-softmax tensor)."""
    parts = []
    for c0 in range(0, sel.shape[0], head_chunk):
        logits = head(sel[c0 : c0 + head_chunk]).float()
        tgt = targets[c0 : c0 + head_chunk, None]
        parts.append(logits.gather(1, tgt)[:, 0] - torch.logsumexp(logits, -1))
    return torch.cat(parts).double().cpu().numpy() if parts else np.empty(0)


def causal_head(handle: ModelHandle) -> Callable[[torch.Tensor], torch.Tensor]:
    """A causal LM's unembedding, with the final logit soft-capping its config asks for (Gemma 2)."""
    lm_head = handle.model.get_output_embeddings()
    cap = getattr(handle.model.config, "final_logit_softcapping", None)
    if cap:
        return lambda h: torch.tanh(lm_head(h) / cap) * cap
    return lm_head


# The module that maps final hidden states to vocabulary logits, per architecture (data, not
# name tests). Architectures not listed fall back to full logits (correct, slower).
MLM_HEAD_ATTR: dict[str, str] = {
    "BertForMaskedLM": "cls",
    "RobertaForMaskedLM": "lm_head",
    "XLMRobertaForMaskedLM": "lm_head",
    "CamembertForMaskedLM": "lm_head",
    "AlbertForMaskedLM": "predictions",
    "DebertaV2ForMaskedLM": "cls",
    "ElectraForMaskedLM": "",  # two modules; full logits
}


def output_head(handle: ModelHandle) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """Final hidden states → vocabulary logits: a causal LM's unembedding, a masked LM's head from
    :data:`MLM_HEAD_ATTR`; None where none is known on its own (classifiers, encoders): use full logits."""
    if handle.kind == "causal-lm":
        return causal_head(handle)
    attr = MLM_HEAD_ATTR.get(type(handle.model).__name__) if handle.kind == "masked-lm" else None
    return getattr(handle.model, attr, None) if attr else None
