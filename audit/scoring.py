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
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
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


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()


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
            if not _is_oom(exc) or len(b) == 1:
                raise
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            half = len(b) // 2
            logger.warning("out of memory on a batch of %d; retrying as two halves", len(b))
            queue.append(b[half:])
            queue.append(b[:half])
    bar.close()


def _padded_matrix(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-padded ``(n × longest)`` id matrix and the lengths, built without a per-row loop."""
    lengths = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=len(seqs))
    flat = np.fromiter((t for s in seqs for t in s), dtype=np.int64, count=int(lengths.sum()))
    out = np.full((len(seqs), int(lengths.max(initial=0))), pad_id, dtype=np.int64)
    rows = np.repeat(np.arange(len(seqs)), lengths)
    out[rows, np.arange(flat.size) - np.repeat(np.cumsum(lengths) - lengths, lengths)] = flat
    return out, lengths


def _pad(seqs: Sequence[Sequence[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    ids, lengths = _padded_matrix(seqs, pad_id)
    att = (np.arange(ids.shape[1])[None, :] < lengths[:, None]).astype(np.int64)
    return torch.from_numpy(ids).to(device), torch.from_numpy(att).to(device)


def _pad_id(handle: ModelHandle) -> int:
    """The padding id (EOS, else 0, for a tokenizer without one: padded positions are masked)."""
    tok = handle.tokenizer
    return int(tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0))


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
    if len(sequences) == 0:
        return np.empty(0, dtype=np.float64)
    rows, lengths = _padded_matrix(sequences, _pad_id(handle))
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
    head = _mlm_head(handle)
    base = handle.model.base_model
    model = handle.model
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
        ids_t, att_t = torch.from_numpy(ids).to(dev), torch.from_numpy(att).to(dev)
        rows_t, pos_t, tgt_t = (torch.from_numpy(x).to(dev) for x in (r, pos, tgt))
        with torch.inference_mode():
            if head is not None:
                hidden = base(input_ids=ids_t, attention_mask=att_t).last_hidden_state
                logits = head(hidden[rows_t, pos_t])
            else:
                logits = model(input_ids=ids_t, attention_mask=att_t).logits[rows_t, pos_t]
            logits = logits.float()
            lp = logits.gather(1, tgt_t[:, None])[:, 0] - torch.logsumexp(logits, -1)
        out[idx] = lp.double().cpu().numpy()

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
    mask_id = handle.tokenizer.mask_token_id
    if mask_id is None:
        raise ValueError(f"{handle.name} has no mask token; masked pseudo-log-likelihood needs a masked LM")
    if score_positions is None:
        score_positions = [list(range(1, len(s) - 1)) for s in token_ids]
    counts = np.fromiter((len(ps) for ps in score_positions), dtype=np.int64, count=len(score_positions))
    if len(token_ids) == 0 or counts.sum() == 0:
        return [np.empty(0, dtype=np.float64) for _ in score_positions]
    rows, lengths = _padded_matrix(token_ids, _pad_id(handle))
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


@dataclass
class _Pack:
    """One unit of packed causal scoring: a trunk (prefix token + context) and optional branches
    (continuations that each see the whole trunk and their own earlier tokens, nothing else).

    ``trunk_owner`` receives log P of trunk tokens ``score_from`` … end; each branch ``(owner,
    ids)`` receives the log P of all its tokens."""

    trunk: list[int]
    score_from: int
    trunk_owner: int | None
    branches: list[tuple[int, list[int]]] = field(default_factory=list)

    @property
    def n_tokens(self) -> int:
        return len(self.trunk) + sum(len(x) for _, x in self.branches)

    @property
    def span(self) -> int:
        """The largest position id used (trunk + the longest branch)."""
        return len(self.trunk) + max((len(x) for _, x in self.branches), default=0)


def pack_rows(
    lengths: Sequence[int], max_tokens: int, min_row: int = 64, max_mask: int = 1 << 25
) -> list[list[list[int]]]:
    """Pack items into rows without padding: a list of batches, each a list of rows, each a list of
    item indices whose lengths add up to at most the batch's row length.

    A batch's row length is ``max(longest remaining item, min_row)`` and it holds
    ``max_tokens // row_length`` rows, fewer where the rows × length² attention mask would pass
    ``max_mask`` elements (long sequences on an accelerator's large token budget). Each row starts with the longest remaining item and is then
    filled best-fit (the longest remaining item that still fits), so short items fill the gaps that
    long ones leave. The plan is O(n log d) for n items of d distinct lengths.
    """
    import bisect

    stacks: dict[int, list[int]] = {}
    for i in np.argsort(np.asarray(lengths, dtype=np.int64), kind="stable")[::-1]:
        stacks.setdefault(max(int(lengths[i]), 1), []).append(int(i))
    for s in stacks.values():
        s.reverse()  # pop() yields items of one length in their original order
    avail = sorted(stacks)  # distinct lengths that still have items, ascending

    def take(length: int) -> int:
        s = stacks[length]
        i = s.pop()
        if not s:
            del stacks[length]
            avail.pop(bisect.bisect_left(avail, length))
        return i

    batches: list[list[list[int]]] = []
    while avail:
        row_len = max(avail[-1], min_row)
        rows: list[list[int]] = []
        n_rows = max(1, min(max_tokens // row_len, max_mask // row_len**2))
        while avail and len(rows) < n_rows:
            first = avail[-1]
            row, free = [take(first)], row_len - first
            while avail and avail[0] <= free:
                fit = avail[bisect.bisect_right(avail, free) - 1]
                row.append(take(fit))
                free -= fit
            rows.append(row)
        batches.append(rows)
    return batches


def _batch_layout(
    packs: Sequence[_Pack], rows: list[list[int]], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, list[tuple[int, int]]]:
    """Token ids, position ids and the block mask of one packed batch, built without a per-token
    Python loop: pieces (a trunk or a branch) are laid out with cumulative sums, and the mask is
    ``same pack ∧ key ≤ query ∧ (key in the trunk ∨ key in the query's branch)``.

    Returns ids (B × R), positions (B × R), allow (B × R × R, bool), the flat (row·R + column)
    index of the predictor of every scored token, the scored tokens' ids, and the owners with
    their score counts in output order."""
    piece_ids: list[list[int]] = []
    p_row: list[int] = []
    p_pack: list[int] = []
    p_branch: list[int] = []
    p_pos0: list[int] = []
    p_score0: list[int] = []
    owners: list[tuple[int, int]] = []
    for r, members in enumerate(rows):
        for b in members:
            pk = packs[b]
            piece_ids.append(pk.trunk)
            p_row.append(r)
            p_pack.append(b)
            p_branch.append(0)
            p_pos0.append(0)
            p_score0.append(max(pk.score_from, 1))
            if pk.trunk_owner is not None:
                owners.append((pk.trunk_owner, max(len(pk.trunk) - max(pk.score_from, 1), 0)))
            for k, (owner, x) in enumerate(pk.branches, start=1):
                piece_ids.append(x)
                p_row.append(r)
                p_pack.append(b)
                p_branch.append(k)
                p_pos0.append(len(pk.trunk))
                p_score0.append(0)
                owners.append((owner, len(x)))
    plen = np.fromiter((len(x) for x in piece_ids), dtype=np.int64, count=len(piece_ids))
    prow = np.asarray(p_row, dtype=np.int64)
    B = len(rows)
    row_tokens = np.bincount(prow, weights=plen, minlength=B).astype(np.int64)
    R = int(row_tokens.max())
    start = np.cumsum(plen) - plen  # each piece's start in the flat token list
    row_first = np.searchsorted(prow, np.arange(B))  # pieces are grouped by row, in order
    off = start - start[row_first[prow]]  # each piece's start inside its row
    # a branch's first token is predicted by the last token of its pack's trunk, the piece laid
    # out most recently before it
    is_trunk = np.asarray(p_branch) == 0
    trunk_of = np.maximum.accumulate(np.where(is_trunk, np.arange(len(plen)), 0))
    first_pred = np.where(is_trunk, -1, off[trunk_of] + plen[trunk_of] - 1)
    n_tok = int(plen.sum())
    piece = np.repeat(np.arange(len(plen)), plen)
    j = np.arange(n_tok) - start[piece]  # index inside the piece
    col = off[piece] + j
    row = prow[piece]
    flat_ids = np.fromiter((t for x in piece_ids for t in x), dtype=np.int64, count=n_tok)
    ids = np.full((B, R), pad_id, dtype=np.int64)
    ids[row, col] = flat_ids
    pos = np.zeros((B, R), dtype=np.int64)
    pos[row, col] = np.asarray(p_pos0)[piece] + j
    # which pack and which branch each position belongs to; padding gets ids of its own
    seg = np.full((B, R), -1, dtype=np.int64)
    seg[row, col] = np.asarray(p_pack)[piece]
    pad = seg < 0
    seg[pad] = -1 - np.arange(int(pad.sum()))
    br = np.zeros((B, R), dtype=np.int64)
    br[row, col] = np.asarray(p_branch)[piece]
    q = np.arange(R)
    allow = ((seg[:, :, None] == seg[:, None, :]) & (q[None, :] <= q[:, None])[None]
             & ((br[:, None, :] == 0) | (br[:, :, None] == br[:, None, :])))
    scored = j >= np.asarray(p_score0)[piece]
    pred_col = np.where(j == 0, first_pred[piece], col - 1)
    scored &= pred_col >= 0
    pred_flat = row[scored] * R + pred_col[scored]
    return (torch.from_numpy(ids), torch.from_numpy(pos), torch.from_numpy(allow),
            torch.from_numpy(pred_flat), torch.from_numpy(flat_ids[scored]), owners)


def _owners(pk: _Pack) -> list[int]:
    return ([pk.trunk_owner] if pk.trunk_owner is not None else []) + [o for o, _ in pk.branches]


def _packing_supported(handle: ModelHandle) -> bool:
    """Whether this model honours 4-D attention masks with position ids — checked once per model by
    scoring two short sequences packed into one row and separately (an architecture that ignores
    either, e.g. one that derives ALiBi biases from a 2-D mask, fails the check and is scored with
    padded rows instead)."""
    model = handle.model
    if model in _PACKING_CHECKED:
        return _PACKING_CHECKED[model]
    vocab = int(getattr(model.config, "vocab_size", 0) or 0)
    seqs = [[(7 * i + 3) % max(vocab - 1, 1) for i in range(6)], [(11 * i + 5) % max(vocab - 1, 1) for i in range(4)]]
    packs = [_Pack(s, 1, i) for i, s in enumerate(seqs)]
    ok = False
    try:
        packed = _run_packed(handle, packs, [[[0, 1]]], n_out=2, head_chunk=64, progress=False, desc="")
        ref = _padded_causal_logprobs(handle, seqs, [1, 1], max_batch_tokens=1, head_chunk=64, progress=False)
        tol = 1e-3 if handle.dtype == torch.float32 else 5e-2
        ok = all(np.allclose(a, b, atol=tol) for a, b in zip(packed, ref, strict=True))
    except (TypeError, ValueError, RuntimeError) as exc:
        logger.info("packed scoring unavailable for %s: %s", handle.name, exc)
    if not ok:
        logger.warning("%s does not honour packed 4-D attention masks; scoring with padded batches", handle.name)
    _PACKING_CHECKED[model] = ok
    return ok


_PACKING_CHECKED: weakref.WeakKeyDictionary[Any, bool] = weakref.WeakKeyDictionary()


def _run_packed(
    handle: ModelHandle, packs: Sequence[_Pack], batches: list[list[list[int]]], *, n_out: int,
    head_chunk: int, progress: bool, desc: str,
) -> list[np.ndarray]:
    res: list[np.ndarray] = [np.empty(0)] * n_out
    pad_id = _pad_id(handle)
    head = _causal_head(handle)
    base = handle.model.base_model
    dtype = next(handle.model.parameters()).dtype
    neg = torch.finfo(dtype).min
    dev = handle.device

    def forward(rows: list[list[int]]) -> bool:
        """Score one batch into ``res``; whether every score came out finite."""
        ids, pos, allow, pred, tgt, owners = _batch_layout(packs, rows, pad_id)
        mask = torch.zeros(allow.shape, dtype=dtype).masked_fill_(~allow, neg)[:, None]
        with torch.inference_mode():
            hidden = base(input_ids=ids.to(dev), attention_mask=mask.to(dev), position_ids=pos.to(dev),
                          use_cache=False).last_hidden_state
            sel = hidden.reshape(-1, hidden.shape[-1])[pred.to(dev)]
            lp = _gather_logprobs(head, sel, tgt.to(dev), head_chunk)
        k = 0
        for i, m in owners:
            res[i] = lp[k : k + m]
            k += m
        return bool(np.isfinite(lp).all())

    def step(rows: list[list[int]]) -> None:
        if not forward(rows):
            # a NaN/inf in one sequence reaches its row-mates through attention (0 × NaN = NaN), so
            # the packs of a poisoned row are rescored one per forward: only the faulty one stays
            # non-finite, as in an unpacked run
            for row in rows:
                outs = [o for b in row for o in _owners(packs[b])]
                if len(row) > 1 and not all(np.isfinite(res[o]).all() for o in outs):
                    for b in row:
                        forward([[b]])

    # out of memory: the batch's rows are split in two and retried
    run_batches(batches, step, desc=desc, progress=progress, total=len(packs),
                size=lambda rows: sum(len(r) for r in rows))
    return res


def _score_packs(
    handle: ModelHandle, packs: list[_Pack], n_out: int, *, max_batch_tokens: int | None, head_chunk: int,
    progress: bool, desc: str,
) -> list[np.ndarray]:
    if not packs:
        return [np.empty(0)] * n_out
    check_length(handle, max(p.span for p in packs), "a causal-LM sequence")
    budget = max_batch_tokens or default_batch_tokens(handle)
    plan = pack_rows([p.n_tokens for p in packs], budget)
    return _run_packed(handle, packs, plan, n_out=n_out, head_chunk=head_chunk, progress=progress, desc=desc)


def causal_logprobs(
    handle: ModelHandle,
    token_ids: Sequence[Sequence[int]],
    *,
    score_from: Sequence[int] | None = None,
    max_batch_tokens: int | None = None,
    progress: bool = False,
    head_chunk: int = 512,
    pack: bool = True,
    share_prefix: Sequence[Sequence[int]] | None = None,
) -> list[np.ndarray]:
    """log P(tᵢ | t<ᵢ) for i = score_from[s] … len(s)-1 of each sequence s (default from 1).

    Pass sequences from :func:`causal_tokenize` (prefix token first) so that the first real
    token is scored too. Sequences are packed several to a row with a block-diagonal causal mask
    and position ids that restart at each sequence (:func:`pack_rows`), so no compute is spent on
    padding; models that do not honour such masks (checked once per model) get length-sorted
    padded batches instead (``pack=False`` forces that). The LM head runs only at scored positions,
    in row chunks, so a large vocabulary never materialises a (batch × length × vocab) tensor.

    ``share_prefix`` lists groups of sequence indices (e.g. the two sentences of a CrowS-Pairs
    pair) whose longest common prefix is run once: the prefix becomes a trunk and each
    sequence's remainder a branch that sees the trunk and itself only. The numbers are those of
    scoring each sequence alone; only the repeated prefix work is saved.
    """
    n = len(token_ids)
    if n == 0:
        return []
    starts = [int(s) for s in score_from] if score_from is not None else [1] * n
    if not pack or not _packing_supported(handle):
        check_length(handle, max(len(s) for s in token_ids), "a causal-LM sequence")
        return _padded_causal_logprobs(handle, token_ids, starts, max_batch_tokens=max_batch_tokens,
                                       head_chunk=head_chunk, progress=progress)
    trunks = _prefix_groups(token_ids, share_prefix or [])
    grouped = {m for members, _ in trunks for m in members}
    packs = [_Pack(list(token_ids[i]), starts[i], i) for i in range(n) if i not in grouped]
    # each shared prefix is a trunk whose scores land in an extra output slot n + g
    packs += [_Pack(list(token_ids[members[0]][:plen]), 1, n + g, [(m, list(token_ids[m][plen:])) for m in members])
              for g, (members, plen) in enumerate(trunks)]
    out = _score_packs(handle, packs, n + len(trunks), max_batch_tokens=max_batch_tokens,
                       head_chunk=head_chunk, progress=progress, desc="causal LM")
    for g, (members, _plen) in enumerate(trunks):
        for m in members:  # every token from position 1 on, then cut at the sequence's own start
            out[m] = np.concatenate([out[n + g], out[m]])[max(starts[m], 1) - 1 :]
    return out[:n]


def _prefix_groups(
    token_ids: Sequence[Sequence[int]], groups: Sequence[Sequence[int]]
) -> list[tuple[list[int], int]]:
    """``(members, shared prefix length)`` for each group whose members share at least their first
    token (a sequence joins one group at most); the prefix stops one token short of the shortest
    member, so that every member keeps a branch of its own."""
    out: list[tuple[list[int], int]] = []
    seen: set[int] = set()
    for grp in groups:
        members = [int(m) for m in dict.fromkeys(grp)]
        if len(members) < 2 or seen.intersection(members):
            continue
        seqs = [token_ids[m] for m in members]
        limit = min(len(s) for s in seqs) - 1
        plen = 0
        while plen < limit and all(s[plen] == seqs[0][plen] for s in seqs):
            plen += 1
        if plen >= 1:
            out.append((members, plen))
            seen.update(members)
    return out


def _padded_causal_logprobs(
    handle: ModelHandle, token_ids: Sequence[Sequence[int]], starts: Sequence[int], *,
    max_batch_tokens: int | None, head_chunk: int, progress: bool,
) -> list[np.ndarray]:
    """One sequence per row, right-padded, length-sorted batches (≤ 25 % padding per row)."""
    res: list[np.ndarray] = [np.empty(0)] * len(token_ids)
    lengths = [len(s) for s in token_ids]
    budget = max_batch_tokens or default_batch_tokens(handle)
    pad_id = _pad_id(handle)
    head = _causal_head(handle)
    base = handle.model.base_model

    def step(idx: np.ndarray) -> None:
        ids, att = _pad([token_ids[i] for i in idx], pad_id, handle.device)
        T = ids.shape[1]
        s0 = np.maximum(np.asarray([starts[i] for i in idx], dtype=np.int64), 1)
        L = np.asarray([lengths[i] for i in idx], dtype=np.int64)
        cnt = np.maximum(L - s0, 0)
        r = np.repeat(np.arange(len(idx)), cnt)
        c = np.arange(int(cnt.sum())) - np.repeat(np.cumsum(cnt) - cnt, cnt) + np.repeat(s0 - 1, cnt)
        flat = torch.from_numpy(r * T + c).to(handle.device)
        with torch.inference_mode():
            hidden = base(input_ids=ids, attention_mask=att).last_hidden_state
            sel = hidden.reshape(-1, hidden.shape[-1])[flat]
            lp = _gather_logprobs(head, sel, ids.reshape(-1)[flat + 1], head_chunk)
        k = 0
        for i, m in zip(idx, cnt.tolist(), strict=True):
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
    head_chunk: int = 512,
) -> list[np.ndarray]:
    """Like :func:`continuation_logprobs`, but every distinct context is run once.

    The continuations of one context are packed after it (each continuation sees the context and
    its own earlier tokens, nothing else; position ids restart after the context), and several
    such packs share a row, so k answers to one question cost ``len(context) + Σ len(answer)``
    tokens instead of ``k · len(context) + Σ len(answer)``, and no padding. The numbers equal the
    unpacked computation up to float rounding (tested). A model that does not honour 4-D masks
    falls back to :func:`continuation_logprobs` with padded rows.
    """
    n = len(contexts)
    if n == 0:
        return []
    if not _packing_supported(handle):
        return continuation_logprobs(handle, contexts, continuations, max_batch_tokens=max_batch_tokens,
                                     progress=progress, head_chunk=head_chunk)
    pre = prefix_token_id(handle)
    head_ids = [pre] if pre is not None else []
    # group by the context's token ids (a context that tokenizes differently with one
    # continuation forms its own group)
    groups: dict[tuple[int, ...], list[tuple[int, list[int]]]] = {}
    for i, (c, x) in enumerate(zip(contexts, continuations, strict=True)):
        c_ids, x_ids = _split_context(handle, c, x)
        groups.setdefault(tuple(head_ids + c_ids), []).append((i, x_ids))
    if any(len(ctx) == 0 for ctx in groups):
        raise ValueError("shared_context_logprobs needs a prefix token or non-empty contexts")
    packs = [_Pack(list(ctx), len(ctx), None, conts) for ctx, conts in groups.items()]
    return _score_packs(handle, packs, n, max_batch_tokens=max_batch_tokens, head_chunk=head_chunk,
                        progress=progress, desc="causal LM (shared contexts)")


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
        ids, att = _pad([enc[i] for i in idx], _pad_id(handle), handle.device)
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
