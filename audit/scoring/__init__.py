"""Batched scoring primitives every probe stands on.

* :func:`masked_token_logprobs` / :func:`pseudo_log_likelihood` — masked-LM pseudo-log-likelihood
  (Salazar et al. 2020; the CrowS-Pairs reference scorer of Nangia et al. 2020): one masked
  copy per scored token, copies of many sentences packed into length-sorted batches bounded by
  tokens, the LM head applied only at the masked positions.
* :func:`causal_logprobs` — log P(tᵢ | t<ᵢ) per token with the tokenizer's BOS prepended when it
  has one (lm-evaluation-harness convention: BOS, else EOS, as the empty context). The sequences
  form a prefix tree (:class:`PrefixTree`) scored with tree attention masks, so every prefix they
  share — a context, a question, a template's opening words — is computed once.
* :func:`embed` / :func:`hidden_states` — pooled sentence representations.

One module per responsibility: :mod:`~audit.scoring.batching` (token budgets, length-sorted
batches, out-of-memory back-off, padding, length checks), :mod:`~audit.scoring.heads` (hidden
states → vocabulary logits), :mod:`~audit.scoring.masked`, :mod:`~audit.scoring.causal` and
:mod:`~audit.scoring.embeddings`; this package re-exports their public names.

All functions run under ``torch.inference_mode``. The batch size is chosen from a token budget;
on CUDA out-of-memory a batch is halved and retried, and the budget shrinks for the rest of the
call. ``naive_*`` functions are the one-forward-per-item reference the tests and benchmarks
compare against.
"""

from __future__ import annotations

from audit.scoring.batching import (
    InputTooLongError,
    check_length,
    default_batch_tokens,
    length_sorted_batches,
    pad_tensors,
    pad_token_id,
    run_batches,
)
from audit.scoring.causal import (
    TREE_ROW_TOKENS,
    causal_logprobs,
    causal_tokenize,
    continuation_logprobs,
    naive_causal_logprobs,
    pack_rows,
    prefix_token_id,
    prefix_tree_plan,
    sentence_logprob,
)
from audit.scoring.embeddings import POOLINGS, embed, hidden_states, pool
from audit.scoring.heads import output_head
from audit.scoring.masked import (
    masked_token_logprobs,
    naive_pseudo_log_likelihood,
    pseudo_log_likelihood,
)

__all__ = [
    "POOLINGS", "TREE_ROW_TOKENS", "InputTooLongError", "causal_logprobs", "causal_tokenize", "check_length",
    "continuation_logprobs", "default_batch_tokens", "embed", "hidden_states", "length_sorted_batches",
    "masked_token_logprobs", "naive_causal_logprobs", "naive_pseudo_log_likelihood", "output_head", "pack_rows",
    "pad_tensors", "pad_token_id", "pool", "prefix_token_id", "prefix_tree_plan", "pseudo_log_likelihood",
    "run_batches", "sentence_logprob",
]
