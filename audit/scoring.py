"""Batched scoring primitives every probe stands on.

* :func:`masked_token_logprobs` / :func:`pseudo_log_likelihood` — masked-LM pseudo-log-likelihood
  (Salazar et al. 2020; the CrowS-Pairs reference scorer of Nangia et al. 2020): one masked
  copy per scored token, copies of many sentences packed into length-sorted batches bounded by
  tokens, the LM head applied only at the masked positions.
* :func:`causal_logprobs` — log P(tᵢ | t<ᵢ) per token with the tokenizer's BOS prepended when it
  has one (lm-evaluation-harness convention: BOS, else EOS, as the empty context).
* :func:`embed` / :func:`hidden_states` — pooled sentence representations.

All functions run under ``torch.inference_mode``. The batch size is chosen from a token budget;
on CUDA out-of-memory a batch is halved and retried, and the budget shrinks for the rest of the
call. ``naive_*`` functions are the one-forward-per-item reference the tests and benchmarks
compare against.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tqdm.auto import tqdm

if TYPE_CHECKING:
    from audit.models import ModelHandle

logger = logging.getLogger(__name__)


class InputTooLongError(ValueError):
    """An input longer than the model accepts."""


# --------------------------------------------------------------------------------------------
# batching
# --------------------------------------------------------------------------------------------


def default_batch_tokens(handle: ModelHandle) -> int:
    """Token budget per forward: large on accelerators (OOM back-off trims it), moderate on CPU."""
    if handle.device.type == "cuda":
        return 131072
    if handle.device.type == "mps":
        return 16384
    return 4096


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


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()


def run_batches(
    batches: list[np.ndarray],
    fn: Callable[[np.ndarray], None],
    *,
    desc: str = "",
    progress: bool = False,
    total: int | None = None,
) -> None:
    """Call ``fn`` on each index batch; on out-of-memory, halve the batch and retry."""
    bar = tqdm(total=total or sum(len(b) for b in batches), desc=desc, disable=not progress, unit="it")
    queue: list[np.ndarray] = list(reversed(batches))
    while queue:
        b = queue.pop()
        try:
            fn(b)
            bar.update(len(b))
        except (RuntimeError, torch.cuda.OutOfMemoryError) as exc:
            if not _is_oom(exc) or len(b) == 1:
                raise
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            half = len(b) // 2
            logger.warning("out of memory on a batch of %d; retrying as two halves", len(b))
            queue.append(b[half:])
            queue.append(b[:half])
    bar.close()


def _pad(seqs: Sequence[Sequence[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    t = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), t), pad_id, dtype=torch.long)
    att = torch.zeros((len(seqs), t), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.as_tensor(s, dtype=torch.long)
        att[i, : len(s)] = 1
    return ids.to(device), att.to(device)


def check_length(handle: ModelHandle, n_tokens: int, what: str = "input") -> None:
    if n_tokens > handle.max_length:
        raise InputTooLongError(
            f"{what} has {n_tokens} tokens; {handle.name} accepts at most {handle.max_length}"
        )


# --------------------------------------------------------------------------------------------
# masked LM
# --------------------------------------------------------------------------------------------

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


def _mlm_head(handle: ModelHandle) -> Callable[[torch.Tensor], torch.Tensor] | None:
    attr = MLM_HEAD_ATTR.get(type(handle.model).__name__)
    if not attr:
        return None
    return getattr(handle.model, attr, None)


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
    n = len(sequences)
    out = np.empty(n, dtype=np.float64)
    if n == 0:
        return out
    lengths = [len(s) for s in sequences]
    check_length(handle, max(lengths), "a masked-LM query")
    budget = max_batch_tokens or default_batch_tokens(handle)
    pad_id = handle.tokenizer.pad_token_id
    head = _mlm_head(handle)
    base = handle.model.base_model
    model = handle.model

    def step(idx: np.ndarray) -> None:
        ids, att = _pad([sequences[i] for i in idx], pad_id, handle.device)
        rows = torch.arange(len(idx), device=handle.device)
        pos = torch.as_tensor([positions[i] for i in idx], device=handle.device)
        tgt = torch.as_tensor([targets[i] for i in idx], device=handle.device)
        with torch.inference_mode():
            if head is not None:
                hidden = base(input_ids=ids, attention_mask=att).last_hidden_state
                logits = head(hidden[rows, pos])
            else:
                logits = model(input_ids=ids, attention_mask=att).logits[rows, pos]
            lp = torch.log_softmax(logits.float(), dim=-1).gather(1, tgt[:, None])[:, 0]
        out[idx] = lp.double().cpu().numpy()

    run_batches(length_sorted_batches(lengths, budget), step, desc=desc, progress=progress)
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
    Returns one array per sentence, aligned with its positions.
    """
    mask_id = handle.tokenizer.mask_token_id
    if mask_id is None:
        raise ValueError(f"{handle.name} has no mask token; masked pseudo-log-likelihood needs a masked LM")
    if score_positions is None:
        score_positions = [list(range(1, len(s) - 1)) for s in token_ids]
    seqs: list[list[int]] = []
    pos: list[int] = []
    tgt: list[int] = []
    owner: list[int] = []
    for si, (ids, ps) in enumerate(zip(token_ids, score_positions, strict=True)):
        for p in ps:
            copy = list(ids)
            tgt.append(copy[p])
            copy[p] = mask_id
            seqs.append(copy)
            pos.append(p)
            owner.append(si)
    flat = masked_token_logprobs(
        handle, seqs, pos, tgt, max_batch_tokens=max_batch_tokens, progress=progress, desc="masked PLL"
    )
    res: list[np.ndarray] = []
    k = 0
    for ps in score_positions:
        res.append(flat[k : k + len(ps)])
        k += len(ps)
    return res


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


# --------------------------------------------------------------------------------------------
# causal LM
# --------------------------------------------------------------------------------------------


def prefix_token_id(handle: ModelHandle) -> int | None:
    """The token that stands for an empty context: BOS when the tokenizer has one, else EOS."""
    tok = handle.tokenizer
    if tok.bos_token_id is not None:
        return int(tok.bos_token_id)
    if tok.eos_token_id is not None:
        return int(tok.eos_token_id)
    return None


def causal_tokenize(handle: ModelHandle, texts: Sequence[str], add_prefix: bool = True) -> list[list[int]]:
    """Token ids without special tokens, with the prefix token (BOS, else EOS) prepended."""
    enc = handle.tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    pre = prefix_token_id(handle) if add_prefix else None
    return [([pre] if pre is not None else []) + list(e) for e in enc]


def _causal_head(handle: ModelHandle) -> Callable[[torch.Tensor], torch.Tensor]:
    lm_head = handle.model.get_output_embeddings()
    cap = getattr(handle.model.config, "final_logit_softcapping", None)
    if cap:
        return lambda h: torch.tanh(lm_head(h) / cap) * cap
    return lm_head


def _gather_logprobs(
    head: Callable[[torch.Tensor], torch.Tensor], hidden: torch.Tensor, rows: list[int], cols: list[int],
    targets: list[int], head_chunk: int,
) -> np.ndarray:
    """log-softmax of the LM head at hidden[rows, cols], gathered at ``targets``, in row chunks
    (a large vocabulary never materialises a batch × length × vocab tensor)."""
    sel = hidden[torch.as_tensor(rows, dtype=torch.long), torch.as_tensor(cols, dtype=torch.long)]
    tgt = torch.as_tensor(targets, dtype=torch.long, device=hidden.device)
    parts = []
    for c0 in range(0, sel.shape[0], head_chunk):
        logits = head(sel[c0 : c0 + head_chunk]).float()
        parts.append(torch.log_softmax(logits, -1).gather(1, tgt[c0 : c0 + head_chunk, None])[:, 0])
    return torch.cat(parts).double().cpu().numpy() if parts else np.empty(0)


def causal_logprobs(
    handle: ModelHandle,
    token_ids: Sequence[Sequence[int]],
    *,
    score_from: Sequence[int] | None = None,
    max_batch_tokens: int | None = None,
    progress: bool = False,
    head_chunk: int = 1024,
) -> list[np.ndarray]:
    """log P(tᵢ | t<ᵢ) for i = score_from[s] … len(s)-1 of each sequence s (default from 1).

    Pass sequences from :func:`causal_tokenize` (prefix token first) so that the first real
    token is scored too. The LM head runs only at scored positions, in row chunks, so a large
    vocabulary never materialises a (batch × length × vocab) tensor.
    """
    n = len(token_ids)
    res: list[np.ndarray] = [np.empty(0)] * n
    if n == 0:
        return res
    starts = list(score_from) if score_from is not None else [1] * n
    lengths = [len(s) for s in token_ids]
    check_length(handle, max(lengths), "a causal-LM sequence")
    budget = max_batch_tokens or default_batch_tokens(handle)
    pad_id = handle.tokenizer.pad_token_id
    head = _causal_head(handle)
    base = handle.model.base_model

    def step(idx: np.ndarray) -> None:
        ids, att = _pad([token_ids[i] for i in idx], pad_id, handle.device)
        rows_l, cols_l, tg_l, splits = [], [], [], []
        for r, i in enumerate(idx):
            s0 = max(int(starts[i]), 1)
            L = lengths[i]
            cols = list(range(s0 - 1, L - 1))  # hidden at j predicts token j+1
            rows_l += [r] * len(cols)
            cols_l += cols
            tg_l += [token_ids[i][c + 1] for c in cols]
            splits.append(len(cols))
        with torch.inference_mode():
            hidden = base(input_ids=ids, attention_mask=att).last_hidden_state
            lp = _gather_logprobs(head, hidden, rows_l, cols_l, tg_l, head_chunk)
        k = 0
        for i, m in zip(idx, splits, strict=True):
            res[i] = lp[k : k + m]
            k += m

    run_batches(length_sorted_batches(lengths, budget), step, desc="causal LM", progress=progress)
    return res


def naive_causal_logprobs(
    handle: ModelHandle, token_ids: Sequence[Sequence[int]], *, score_from: Sequence[int] | None = None
) -> list[np.ndarray]:
    """Reference: one unpadded forward per sequence, full logits."""
    starts = list(score_from) if score_from is not None else [1] * len(token_ids)
    res = []
    for ids, s0 in zip(token_ids, starts, strict=True):
        x = torch.as_tensor([list(ids)], device=handle.device)
        with torch.inference_mode():
            lp = torch.log_softmax(handle.model(input_ids=x).logits[0].float(), -1)
        s0 = max(int(s0), 1)
        vals = [float(lp[j - 1, ids[j]]) for j in range(s0, len(ids))]
        res.append(np.asarray(vals, dtype=np.float64))
    return res


def sentence_logprob(handle: ModelHandle, texts: Sequence[str], **kw: Any) -> np.ndarray:
    """Σ log P(tᵢ | t<ᵢ) of each text (causal LM, BOS-prefixed)."""
    lps = causal_logprobs(handle, causal_tokenize(handle, texts), **kw)
    return np.asarray([float(x.sum()) for x in lps])


def continuation_logprobs(
    handle: ModelHandle, contexts: Sequence[str], continuations: Sequence[str], **kw: Any
) -> list[np.ndarray]:
    """Per-token log-probs of each continuation given its context.

    Context and continuation are split as lm-evaluation-harness does (the context's own
    tokenisation is kept when it is a prefix of the whole); the prefix token (BOS, else EOS)
    always comes first, so an empty context scores every continuation token."""
    seqs, starts = [], []
    pre = prefix_token_id(handle)
    head = [pre] if pre is not None else []
    for c, x in zip(contexts, continuations, strict=True):
        c_ids, x_ids = _split_context(handle, c, x)
        seqs.append(head + c_ids + x_ids)
        starts.append(len(head) + len(c_ids) if (head or c_ids) else 1)
    return causal_logprobs(handle, seqs, score_from=starts, **kw)


def _split_context(handle: ModelHandle, c: str, x: str) -> tuple[list[int], list[int]]:
    tok = handle.tokenizer
    c_ids = tok(c, add_special_tokens=False)["input_ids"] if c else []
    whole = tok(c + x, add_special_tokens=False)["input_ids"]
    if whole[: len(c_ids)] != c_ids:
        return c_ids, tok(x, add_special_tokens=False)["input_ids"]
    return c_ids, whole[len(c_ids) :]


def shared_context_logprobs(
    handle: ModelHandle,
    contexts: Sequence[str],
    continuations: Sequence[str],
    *,
    max_batch_tokens: int | None = None,
    progress: bool = False,
    head_chunk: int = 1024,
) -> list[np.ndarray]:
    """Like :func:`continuation_logprobs`, but every distinct context is run once.

    The continuations of one context are packed after it into a single sequence with a 4-D
    attention mask (each continuation sees the context and its own earlier tokens, nothing else)
    and position ids that restart after the context, so k answers to one question cost
    ``len(context) + Σ len(answer)`` tokens instead of ``k · len(context) + Σ len(answer)``.
    The numbers equal the unpacked computation up to float rounding (tested).
    """
    n = len(contexts)
    res: list[np.ndarray] = [np.empty(0)] * n
    if n == 0:
        return res
    pre = prefix_token_id(handle)
    head_ids = [pre] if pre is not None else []
    # group by the context's token ids (a context that tokenizes differently with one
    # continuation forms its own group)
    groups: dict[tuple[int, ...], list[tuple[int, list[int]]]] = {}
    for i, (c, x) in enumerate(zip(contexts, continuations, strict=True)):
        c_ids, x_ids = _split_context(handle, c, x)
        groups.setdefault(tuple(head_ids + c_ids), []).append((i, x_ids))
    packs = [(list(ctx), conts) for ctx, conts in groups.items()]
    if any(len(ctx) == 0 for ctx, _ in packs):
        raise ValueError("shared_context_logprobs needs a prefix token or non-empty contexts")
    lengths = [len(ctx) + sum(len(x) for _, x in conts) for ctx, conts in packs]
    longest_position = max(len(ctx) + max(len(x) for _, x in conts) for ctx, conts in packs)
    check_length(handle, longest_position, "a context with its continuation")
    budget = max_batch_tokens or default_batch_tokens(handle)
    pad_id = handle.tokenizer.pad_token_id
    head = _causal_head(handle)
    base = handle.model.base_model
    dtype = next(handle.model.parameters()).dtype
    neg = torch.finfo(dtype).min

    def step(bidx: np.ndarray) -> None:
        T = max(lengths[b] for b in bidx)
        B = len(bidx)
        ids = torch.full((B, T), pad_id, dtype=torch.long)
        pos = torch.zeros((B, T), dtype=torch.long)
        allow = torch.zeros((B, T, T), dtype=torch.bool)
        rows_l: list[int] = []
        cols_l: list[int] = []
        tg_l: list[int] = []
        owners: list[tuple[int, int]] = []
        for r, b in enumerate(bidx):
            ctx, conts = packs[b]
            L = len(ctx)
            ids[r, :L] = torch.as_tensor(ctx)
            pos[r, :L] = torch.arange(L)
            allow[r, :L, :L] = torch.tril(torch.ones(L, L, dtype=torch.bool))
            off = L
            for i, x in conts:
                m = len(x)
                if m:
                    ids[r, off : off + m] = torch.as_tensor(x)
                    pos[r, off : off + m] = torch.arange(L, L + m)
                    allow[r, off : off + m, :L] = True
                    allow[r, off : off + m, off : off + m] = torch.tril(torch.ones(m, m, dtype=torch.bool))
                # predictor of x[0] is the last context position, of x[j] the position of x[j-1]
                preds = [L - 1] + list(range(off, off + m - 1))
                rows_l += [r] * m
                cols_l += preds[:m]
                tg_l += list(x)
                owners.append((i, m))
                off += m
            for q in range(off, T):  # padding rows attend to themselves only (kept finite)
                allow[r, q, q] = True
        mask = torch.zeros((B, 1, T, T), dtype=dtype).masked_fill_(~allow[:, None], neg)
        with torch.inference_mode():
            hidden = base(input_ids=ids.to(handle.device), attention_mask=mask.to(handle.device),
                          position_ids=pos.to(handle.device)).last_hidden_state
            lp = _gather_logprobs(head, hidden, rows_l, cols_l, tg_l, head_chunk)
        k = 0
        for i, m in owners:
            res[i] = lp[k : k + m]
            k += m

    run_batches(length_sorted_batches(lengths, budget), step, desc="causal LM (shared contexts)", progress=progress)
    return res


# --------------------------------------------------------------------------------------------
# embeddings
# --------------------------------------------------------------------------------------------

POOLINGS = ("mean", "cls", "pooler", "last")


def _pool(
    hidden: torch.Tensor, att: torch.Tensor, pooling: str, pooler_output: torch.Tensor | None = None
) -> torch.Tensor:
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


def _encoder_batches(
    handle: ModelHandle, texts: Sequence[str], max_batch_tokens: int | None
) -> Iterator[tuple[np.ndarray, dict[str, torch.Tensor]]]:
    enc = handle.tokenizer(list(texts), add_special_tokens=True, truncation=False)["input_ids"]
    lengths = [len(e) for e in enc]
    if lengths:
        check_length(handle, max(lengths), "a text to embed")
    budget = max_batch_tokens or default_batch_tokens(handle)
    for idx in length_sorted_batches(lengths, budget):
        ids, att = _pad([enc[i] for i in idx], handle.tokenizer.pad_token_id, handle.device)
        yield idx, {"input_ids": ids, "attention_mask": att}


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
    out: np.ndarray | None = None
    base = handle.model.base_model
    for idx, batch in tqdm(
        list(_encoder_batches(handle, texts, max_batch_tokens)), desc="embed", disable=not progress
    ):
        with torch.inference_mode():
            o = base(**batch, output_hidden_states=layer != -1)
            hidden = o.last_hidden_state if layer == -1 else o.hidden_states[layer]
            pooled = _pool(hidden, batch["attention_mask"], pooling, getattr(o, "pooler_output", None))
            if normalize:
                pooled = torch.nn.functional.normalize(pooled.float(), dim=-1)
        arr = pooled.float().cpu().numpy()
        if out is None:
            out = np.empty((len(texts), arr.shape[1]), dtype=np.float32)
        out[idx] = arr
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
    out: np.ndarray | None = None
    base = handle.model.base_model
    for idx, batch in tqdm(
        list(_encoder_batches(handle, texts, max_batch_tokens)), desc="hidden states", disable=not progress
    ):
        with torch.inference_mode():
            o = base(**batch, output_hidden_states=True)
            pooled = torch.stack([_pool(h, batch["attention_mask"], pooling) for h in o.hidden_states])
        arr = pooled.float().cpu().numpy()
        if out is None:
            out = np.empty((arr.shape[0], len(texts), arr.shape[2]), dtype=np.float32)
        out[:, idx] = arr
    return out if out is not None else np.empty((0, 0, 0), dtype=np.float32)
