"""Causal-LM scoring: log P(tᵢ | t<ᵢ) per token, the sequences laid out as prefix trees scored
under tree attention masks (every shared prefix computed once), packed into rows; continuation
and sentence log-probabilities on top."""

from __future__ import annotations

import bisect
import logging
import os
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from audit.scoring.batching import (
    check_length,
    default_batch_tokens,
    length_sorted_batches,
    pad_token_id,
    run_batches,
)
from audit.scoring.heads import causal_head, target_logprobs

if TYPE_CHECKING:
    from audit.models import ModelHandle

logger = logging.getLogger(__name__)


def prefix_token_id(handle: ModelHandle) -> int | None:
    """The token that stands for an empty context: BOS when the tokenizer has one, else EOS."""
    tok = handle.tokenizer
    return next((int(t) for t in (tok.bos_token_id, tok.eos_token_id) if t is not None), None)


def causal_tokenize(handle: ModelHandle, texts: Sequence[str]) -> list[list[int]]:
    """Token ids without special tokens, with the prefix token (BOS, else EOS) prepended."""
    enc = handle.tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    pre = prefix_token_id(handle)
    return [([pre] if pre is not None else []) + list(e) for e in enc]


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
    head = causal_head(handle)
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
            node_lp[nodes] = target_logprobs(head, sel, tgt.to(dev), head_chunk)

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
    always comes first, so an empty context scores every continuation token. Continuations that
    share contexts (the k answers to one question) cost ``len(context) + Σ len(answer)`` tokens:
    the prefix tree of :func:`causal_logprobs` runs each distinct context, and every prefix shared
    beyond it, once."""
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

