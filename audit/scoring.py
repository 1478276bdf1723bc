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

All functions run under ``torch.inference_mode``. The batch size is chosen from a token budget;
on CUDA out-of-memory a batch is halved and retried, and the budget shrinks for the rest of the
call. ``naive_*`` functions are the one-forward-per-item reference the tests and benchmarks
compare against.
"""

from __future__ import annotations

import logging
import os
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
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


def pad_tensors(seqs: Sequence[Sequence[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    ids, lengths = _padded_matrix(seqs, pad_id)
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


def output_head(handle: ModelHandle) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """Final hidden states → vocabulary logits: a causal LM's unembedding, a masked LM's head from
    :data:`MLM_HEAD_ATTR`; None where none is known on its own (classifiers, encoders): use full logits."""
    if handle.kind == "causal-lm":
        return _causal_head(handle)
    attr = MLM_HEAD_ATTR.get(type(handle.model).__name__) if handle.kind == "masked-lm" else None
    return getattr(handle.model, attr, None) if attr else None


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
    rows, lengths = _padded_matrix(sequences, pad_token_id(handle))
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
    rows, lengths = _padded_matrix(token_ids, pad_token_id(handle))
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


#: the largest unit of a prefix tree on every device: tree attention costs rows × length² (the
#: mask and the attention scores), so rows stay short even where the token budget is large
TREE_ROW_TOKENS = 512
#: a unit of sibling subtrees is closed once it holds this many times its repeated trunk's tokens
RUN_PER_TRUNK = 8


@dataclass
class PrefixTree:
    """The token trie of a group of sequences, for tree attention (the token trees of SpecInfer,
    Miao et al. 2024, and Medusa, Cai et al. 2024, applied to scoring).

    Nodes are numbered in depth-first preorder, so node v's subtree is the id range
    ``v … end[v] − 1``. Node v holds ``token[v]`` at position ``depth[v]`` (0 for a first token)
    under ``parent[v]`` (−1 for a first token); ``paths[k]`` are the nodes of sequence
    ``members[k]``, one per position; ``need[v]``: some sequence scores log P(token[v] | ancestors).
    """

    members: list[int]
    token: np.ndarray
    parent: np.ndarray
    depth: np.ndarray
    end: np.ndarray
    need: np.ndarray
    paths: list[np.ndarray]

    @classmethod
    def build(cls, seqs: Sequence[Sequence[int]], members: list[int], lcp: Sequence[int], starts: Sequence[int]) -> PrefixTree:
        """The trie of ``seqs[m]`` for m in ``members``, given in lexicographic order with ``lcp[k]``
        leading tokens shared with the member before: each member's new nodes come in preorder."""
        token: list[int] = []
        parent: list[int] = []
        depth: list[int] = []
        path: list[int] = []
        paths = []
        for m, shared in zip(members, lcp, strict=True):
            s = seqs[m]
            del path[shared:]
            for j in range(len(path), len(s)):
                parent.append(path[-1] if path else -1)
                path.append(len(token))
                token.append(int(s[j]))
                depth.append(j)
            paths.append(np.asarray(path, dtype=np.int64))
        end = list(range(1, len(token) + 1))
        for v in range(len(token) - 1, -1, -1):  # a subtree ends where its last descendant's does
            p = parent[v]
            if p >= 0 and end[v] > end[p]:
                end[p] = end[v]
        need = np.zeros(len(token), dtype=bool)
        for m, path_m in zip(members, paths, strict=True):
            need[path_m[max(int(starts[m]), 1) :]] = True
        as_arr = lambda x: np.asarray(x, dtype=np.int64)  # noqa: E731
        return cls(members, as_arr(token), as_arr(parent), as_arr(depth), as_arr(end), need, paths)

    def trunk(self, v: int) -> list[int]:
        """The path from the top down to node v (empty for −1)."""
        out = []
        while v >= 0:
            out.append(v)
            v = int(self.parent[v])
        return out[::-1]

    def units(self, row_tokens: int) -> list[tuple[int, int, int]]:
        """Split the tree into units of at most ``row_tokens`` tokens. Unit ``(anchor, a, b)`` is
        the trunk ``trunk(anchor)`` followed by nodes ``a … b − 1``, whole subtrees of consecutive
        children of ``anchor`` (−1: of the top). A subtree too big for its trunk is split: its
        node joins the trunk of its children's units, so its ancestor path is repeated there —
        siblings share one unit until it holds :data:`RUN_PER_TRUNK` × the trunk's tokens, so the
        repeats stay a small share while units (and the rows, whose length sets the attention
        cost of every token in them) stay short."""
        n = len(self.token)
        end, depth = self.end, self.depth

        def kids(p: int) -> Iterator[int]:
            c, stop = (p + 1, int(end[p])) if p >= 0 else (0, n)
            while c < stop:
                yield c
                c = int(end[c])

        units: list[tuple[int, int, int]] = []
        stack: list[list[Any]] = [[-1, kids(-1), -1, -1]]  # anchor, children, the open run a … b
        while stack:
            top = stack[-1]
            p, it, a, b = top
            room = row_tokens - (int(depth[p]) + 1 if p >= 0 else 0)
            c = next(it, None)
            fits = c is not None and end[c] - c <= room
            if fits and a >= 0 and end[c] - a <= room and b - a < RUN_PER_TRUNK * (row_tokens - room):
                top[3] = int(end[c])  # c joins the open run
                continue
            if a >= 0:
                units.append((p, a, b))
            top[2:] = [c, int(end[c])] if fits else [-1, -1]  # c opens a run, or none is open
            if c is None:
                stack.pop()
            elif not fits:
                stack.append([c, kids(c), -1, -1])
        return units

    def sizes(self, units: Sequence[tuple[int, int, int]]) -> list[int]:
        """Tokens each unit lays out: its trunk and its nodes."""
        return [(int(self.depth[p]) + 1 if p >= 0 else 0) + b - a for p, a, b in units]

    def home(self, units: Sequence[tuple[int, int, int]]) -> np.ndarray:
        """The unit that scores each node: the one holding its subtree, or for a split node (only
        ever in trunks) the first unit whose trunk passes through it."""
        home = np.full(len(self.token), -1, dtype=np.int64)
        for u, (anchor, a, b) in enumerate(units):
            home[a:b] = u
            trunk = np.asarray(self.trunk(anchor), dtype=np.int64)
            home[trunk[home[trunk] < 0]] = u
        return home


def prefix_tree_plan(
    token_ids: Sequence[Sequence[int]], score_from: Sequence[int], row_tokens: int, max_nodes: int = 1 << 20
) -> Iterator[tuple[PrefixTree, list[tuple[int, int, int]]]]:
    """The tries that score ``token_ids``, and their units (:meth:`PrefixTree.units`).

    Sequences are sorted lexicographically and cut into groups of about ``max_nodes`` new trie
    nodes, each cut where neighbours share the fewest tokens among the next 256 sequences: memory
    stays bounded on a file of any size and little is computed twice. Groups are built one at a
    time (a generator)."""
    n = len(token_ids)
    order = sorted(range(n), key=lambda i: tuple(token_ids[i]))
    lcp = np.zeros(n, dtype=np.int64)
    for k in range(1, n):
        lcp[k] = len(os.path.commonprefix([list(token_ids[order[k - 1]]), list(token_ids[order[k]])]))
    added = np.cumsum(np.asarray([len(token_ids[i]) for i in order], dtype=np.int64) - lcp)
    start = 0
    while start < n:
        stop = int(np.searchsorted(added, (added[start - 1] if start else 0) + max_nodes, side="right"))
        if stop < n:
            stop += int(np.argmin(lcp[stop : stop + 256]))
        stop = max(stop, start + 1)
        tree = PrefixTree.build(token_ids, order[start:stop], [0, *lcp[start + 1 : stop]], score_from)
        yield tree, tree.units(row_tokens)
        start = stop


def _tree_layout(
    tree: PrefixTree, units: Sequence[tuple[int, int, int]], home: np.ndarray, rows: list[list[int]], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, np.ndarray]:
    """Token ids, position ids (depths) and subtree ends (columns) of a batch of rows of units, with
    the flat (row·R + column) index of each scored node's parent, the scored tokens and their nodes.

    Laid out in preorder, a node's descendants are the columns up to its subtree's end, so the tree
    mask is ``key ≤ query < end[key]``: every token sees its ancestors and itself, nothing else."""
    parts = []
    for r, row in enumerate(rows):
        off = 0
        for u in row:
            anchor, a, b = units[u]
            trunk = np.asarray(tree.trunk(anchor), dtype=np.int64)
            t, span = len(trunk), np.arange(a, b)
            par = tree.parent[span]
            nodes = np.concatenate([trunk, span])
            ends = np.concatenate([np.full(t, t + b - a), t + tree.end[span] - a])
            pcol = np.concatenate([np.arange(-1, t - 1), np.where(par >= a, t + par - a, t - 1)])
            scored = tree.need[nodes] & (home[nodes] == u)  # a needed node has a parent
            parts.append((r, off, nodes, ends, pcol, scored))
            off += len(nodes)
    B, R = len(rows), max(off + len(nodes) for _, off, nodes, *_ in parts)
    ids = np.full((B, R), pad_id, dtype=np.int64)
    pos = np.zeros((B, R), dtype=np.int64)
    end = np.tile(np.arange(1, R + 1), (B, 1))  # padding sees itself only
    for r, off, nodes, ends, _, _ in parts:
        cols = slice(off, off + len(nodes))
        ids[r, cols], pos[r, cols], end[r, cols] = tree.token[nodes], tree.depth[nodes], off + ends
    pred = np.concatenate([r * R + off + pcol[s] for r, off, _, _, pcol, s in parts])
    scored_nodes = np.concatenate([nodes[s] for _, _, nodes, _, _, s in parts])
    return (torch.from_numpy(ids), torch.from_numpy(pos), torch.from_numpy(end), torch.from_numpy(pred),
            torch.from_numpy(tree.token[scored_nodes]), scored_nodes)


def _score_tree(
    handle: ModelHandle, tree: PrefixTree, units: Sequence[tuple[int, int, int]], batches: list[list[list[int]]],
    *, tree_mask: bool, head_chunk: int, progress: bool,
) -> np.ndarray:
    """log P(token[v] | ancestors) at every needed node of ``tree`` (NaN at the others), each node
    computed in one unit, under the tree mask with depths as position ids or, with ``tree_mask=False``
    (one path per row), a 2-D mask; an out-of-memory batch is split in two (:func:`run_batches`)."""
    node_lp = np.full(len(tree.token), np.nan)
    home = tree.home(units)
    pad_id = pad_token_id(handle)
    head = _causal_head(handle)
    base = handle.model.base_model
    dtype = next(handle.model.parameters()).dtype
    dev = handle.device

    def step(rows: list[list[int]]) -> None:
        ids, pos, end, pred, tgt, nodes = _tree_layout(tree, units, home, rows, pad_id)
        q = torch.arange(ids.shape[1])
        if tree_mask:
            allow = (q[None, None, :] <= q[None, :, None]) & (q[None, :, None] < end[:, None, :])
            mask = torch.zeros(allow.shape, dtype=dtype).masked_fill_(~allow, torch.finfo(dtype).min)[:, None]
            kw = {"attention_mask": mask, "position_ids": pos}
        else:  # the path's tokens: the columns its first token's subtree spans
            kw = {"attention_mask": (q[None, :] < end[:, :1]).long()}
        with torch.inference_mode():
            hidden = base(input_ids=ids.to(dev), use_cache=False, **{k: v.to(dev) for k, v in kw.items()}).last_hidden_state
            sel = hidden.reshape(-1, hidden.shape[-1])[pred.to(dev)]
            node_lp[nodes] = _gather_logprobs(head, sel, tgt.to(dev), head_chunk)

    run_batches(batches, step, desc="causal LM", progress=progress, total=len(units),
                size=lambda rows: sum(len(r) for r in rows))
    return node_lp


def _tree_logprobs(
    handle: ModelHandle, token_ids: Sequence[Sequence[int]], starts: Sequence[int], *, max_batch_tokens: int,
    row_tokens: int, tree_mask: bool, head_chunk: int, progress: bool,
) -> list[np.ndarray]:
    """:func:`causal_logprobs` of resolved arguments: tree units packed into rows, or with
    ``tree_mask=False`` each distinct path a unit of its own in length-sorted, right-padded rows."""
    res: list[np.ndarray] = [np.empty(0)] * len(token_ids)
    for tree, units in prefix_tree_plan(token_ids, starts, row_tokens):
        if tree_mask:
            plan = pack_rows(tree.sizes(units), max_batch_tokens)
        else:
            units = list(dict.fromkeys((int(p[-1]), 0, 0) for p in tree.paths if len(p)))
            plan = [[[u] for u in idx] for idx in length_sorted_batches(tree.sizes(units), max_batch_tokens)]
        lp = _score_tree(handle, tree, units, plan, tree_mask=tree_mask, head_chunk=head_chunk, progress=progress)
        for m, path in zip(tree.members, tree.paths, strict=True):
            res[m] = lp[path[max(starts[m], 1) :]]
    return res


def _packing_supported(handle: ModelHandle) -> bool:
    """Whether this model honours 4-D attention masks with position ids — checked once per model by
    scoring two short sequences with a shared prefix as one tree in one row and as padded rows (an
    architecture that ignores either, e.g. one that derives ALiBi biases from a 2-D mask, fails
    the check and is scored with padded rows instead)."""
    model = handle.model
    if model in _PACKING_CHECKED:
        return _PACKING_CHECKED[model]
    vocab = max(int(getattr(model.config, "vocab_size", 0) or 0) - 1, 1)
    a = [(7 * i + 3) % vocab for i in range(6)]
    seqs = [a, a[:2] + [(11 * i + 5) % vocab for i in range(4)]]
    ok = False
    try:
        tree, padded = (_tree_logprobs(handle, seqs, [1, 1], max_batch_tokens=16, row_tokens=16, tree_mask=m,
                                       head_chunk=64, progress=False) for m in (True, False))
        tol = 1e-3 if handle.dtype == torch.float32 else 5e-2
        ok = all(np.allclose(t, p, atol=tol) for t, p in zip(tree, padded, strict=True))
    except (TypeError, ValueError, RuntimeError) as exc:
        logger.info("packed scoring unavailable for %s: %s", handle.name, exc)
    if not ok:
        logger.warning("%s does not honour packed 4-D attention masks; scoring with padded batches", handle.name)
    _PACKING_CHECKED[model] = ok
    return ok


_PACKING_CHECKED: weakref.WeakKeyDictionary[Any, bool] = weakref.WeakKeyDictionary()


def causal_logprobs(
    handle: ModelHandle,
    token_ids: Sequence[Sequence[int]],
    *,
    score_from: Sequence[int] | None = None,
    max_batch_tokens: int | None = None,
    progress: bool = False,
    head_chunk: int = 512,
    pack: bool = True,
    row_tokens: int = TREE_ROW_TOKENS,
) -> list[np.ndarray]:
    """log P(tᵢ | t<ᵢ) for i = score_from[s] … len(s)-1 of each sequence s (default from 1).

    Pass sequences from :func:`causal_tokenize` (prefix token first) so that the first real
    token is scored too. Every distinct prefix is computed once: the sequences form prefix trees
    (:func:`prefix_tree_plan`) cut into units of at most ``max(row_tokens, longest)`` tokens
    (:meth:`PrefixTree.units`), packed into rows in batches of ``max_batch_tokens`` (:func:`pack_rows`)
    under a tree attention mask (each token sees its ancestors) with depths as position ids. A model
    that does not honour such masks (checked once per model) gets length-sorted padded rows instead
    (``pack=False`` forces that). The LM head runs only at scored nodes, in row chunks.

    The numbers are those of scoring each sequence alone; only repeated prefix work is saved. A
    NaN/inf spreads to the row's other sequences through attention (0 × NaN = NaN), so a sequence
    with a non-finite score is rescored alone.
    """
    n = len(token_ids)
    if n == 0:
        return []
    starts = [int(s) for s in score_from] if score_from is not None else [1] * n
    longest = max(len(s) for s in token_ids)
    check_length(handle, longest, "a causal-LM sequence")
    budget = max_batch_tokens or default_batch_tokens(handle)
    res = _tree_logprobs(handle, token_ids, starts, max_batch_tokens=budget, row_tokens=max(min(row_tokens, budget), longest),
                         tree_mask=pack and _packing_supported(handle), head_chunk=head_chunk, progress=progress)
    if n > 1:
        for i in [i for i in range(n) if not np.isfinite(res[i]).all()]:
            res[i] = causal_logprobs(handle, [token_ids[i]], score_from=[starts[i]], max_batch_tokens=budget,
                                     head_chunk=head_chunk, pack=pack, row_tokens=row_tokens)[0]
    return res


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
    if len(contexts) == 0:
        return []
    tok = handle.tokenizer
    distinct = list(dict.fromkeys(c for c in contexts if c))  # each context tokenized once, in one call
    ctx_ids = dict(zip(distinct, tok(distinct, add_special_tokens=False)["input_ids"] if distinct else [], strict=True))
    wholes = tok([c + x for c, x in zip(contexts, continuations, strict=True)], add_special_tokens=False)["input_ids"]
    pre = prefix_token_id(handle)
    head = [pre] if pre is not None else []
    seqs, starts = [], []
    for c, x, whole in zip(contexts, continuations, wholes, strict=True):
        c_ids = list(ctx_ids[c]) if c else []
        x_ids = whole[len(c_ids) :] if whole[: len(c_ids)] == c_ids else tok(x, add_special_tokens=False)["input_ids"]
        seqs.append(head + c_ids + list(x_ids))
        starts.append(len(head) + len(c_ids) if (head or c_ids) else 1)
    return causal_logprobs(handle, seqs, score_from=starts, **kw)


def shared_context_logprobs(
    handle: ModelHandle, contexts: Sequence[str], continuations: Sequence[str], **kw: Any
) -> list[np.ndarray]:
    """:func:`continuation_logprobs` for continuations that share contexts (the k answers to one
    question): the prefix tree of :func:`causal_logprobs` runs each distinct context, and every
    prefix shared beyond it, once — k answers cost ``len(context) + Σ len(answer)`` tokens."""
    return continuation_logprobs(handle, contexts, continuations, **kw)


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
        ids, att = pad_tensors([enc[i] for i in idx], pad_token_id(handle), handle.device)
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
