"""What an attribution explains: one scalar (or one per generated token) per model kind.

A target turns input *word embeddings* ``(B, T, H)`` plus an attention mask into outputs
``(B, K)``; every explainer differentiates or perturbs that one function, so all methods explain
the same number. Kind-specific targets (``target=`` dict keys in brackets):

* masked LM, ``mode="mask"`` — probability of a token at a ``[MASK]`` (``mask_index``, ``token``
  [default: the model's top prediction], ``contrast`` [p(token) − p(contrast)], ``output``);
  ``mode="pll"`` — pseudo-log-likelihood Σₚ log P(xₚ | x∖ₚ) of the whole sentence (Salazar et
  al. 2020), one masked copy per token built after the embedding layer.
* causal LM, ``mode="next"`` — next-token probability (``token``, ``contrast``, ``output``);
  ``mode="generate"`` — every token of a greedy continuation (``max_new_tokens``) or of a given
  ``continuation``, each attributed to the source and the earlier generated tokens (an inseq
  style source/target matrix; ``attribute_generated=False`` holds earlier generated tokens fixed as
  Captum's ``LLMGradientAttribution`` does); ``mode="sentence"`` — the sentence log-likelihood
  Σᵢ log P(tᵢ | t<ᵢ) (the CrowS-Pairs causal score).
* classifier — probability of ``class`` (index or label name; default the predicted class).
* sentence encoder — cosine similarity of the pooled embedding (``pooling``) with a second text
  (``pair``, or give inputs as ``(text, pair)`` tuples).

Probability outputs are the default: Integrated Gradients on a causal LM's log-probability can be
far from complete (benchmarks/RESULTS.md, "Explainers"). Perturbations replace a token by the *baseline* token, the
same token IG starts its path from (``baseline="auto"``: pad, or unk for causal LMs).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import torch

from audit.explain.arch import is_causal
from audit.explain.errors import ExplainError, TargetError
from audit.scoring import (
    POOLINGS,
    InputTooLongError,
    _causal_head,
    _mlm_head,
    _pool,
    length_sorted_batches,
    prefix_token_id,
)

if TYPE_CHECKING:
    from audit.models import ModelHandle

OUTPUTS = ("prob", "logprob", "logit")
MODES: dict[str, tuple[str, ...]] = {
    "masked-lm": ("mask", "pll"),
    "causal-lm": ("next", "generate", "sentence"),
    "classifier": ("class",),
    "encoder": ("cosine",),
}
TARGET_KEYS: dict[str, frozenset[str]] = {
    "masked-lm": frozenset({"mode", "mask_index", "token", "contrast", "output"}),
    "causal-lm": frozenset({"mode", "token", "contrast", "output", "max_new_tokens", "continuation",
                            "attribute_generated"}),
    "classifier": frozenset({"mode", "class", "output"}),
    "encoder": frozenset({"mode", "pair", "pooling"}),
}
_MASK_PLACEHOLDERS = ("[MASK]", "<mask>")


# --------------------------------------------------------------------------------------------
# target functions: word embeddings (B, T, H) + attention mask (+ row-aligned aux) -> (B, K)
# --------------------------------------------------------------------------------------------


def _up(x: torch.Tensor) -> torch.Tensor:
    """Half precision up to float32 for softmax / cosine; float32 and float64 stay as they are."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _transform(logits: torch.Tensor, output: str) -> torch.Tensor:
    logits = _up(logits)
    if output == "prob":
        return torch.softmax(logits, -1)
    if output == "logprob":
        return torch.log_softmax(logits, -1)
    return logits


def _pick(y: torch.Tensor, tok: torch.Tensor, contrast: torch.Tensor) -> torch.Tensor:
    """y[tok] − y[contrast] (contrast < 0: none), over the last dimension."""
    v = y.gather(-1, tok.unsqueeze(-1)).squeeze(-1)
    c = y.gather(-1, contrast.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return v - torch.where(contrast >= 0, c, torch.zeros_like(c))


class TargetFn:
    """The scalar function a target stands for; subclasses implement ``__call__``."""

    mode: str = ""
    output: str = ""

    def __init__(self, handle: ModelHandle, output: str = "prob") -> None:
        self.handle = handle
        self.model = handle.model
        self.base = handle.model.base_model
        self.output = output

    def hidden(self, embeds: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
        return self.base(inputs_embeds=embeds, attention_mask=attn).last_hidden_state

    def __call__(self, embeds: torch.Tensor, attn: torch.Tensor, *aux: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class MaskedTokenFn(TargetFn):
    mode = "mask"

    def __init__(self, handle: ModelHandle, output: str = "prob") -> None:
        super().__init__(handle, output)
        self.head = _mlm_head(handle)

    def __call__(self, embeds: torch.Tensor, attn: torch.Tensor, *aux: torch.Tensor) -> torch.Tensor:
        pos, tok, contrast = aux
        rows = torch.arange(embeds.shape[0], device=embeds.device)
        if self.head is not None:
            logits = self.head(self.hidden(embeds, attn)[rows, pos])
        else:
            logits = self.model(inputs_embeds=embeds, attention_mask=attn).logits[rows, pos]
        return _pick(_transform(logits, self.output), tok, contrast)[:, None]


class PLLFn(TargetFn):
    """Σₚ log P(xₚ | x with only p masked) — the masked copies are built after the embedding layer,
    so a gradient through them reaches every token's embedding."""

    mode = "pll"

    def __init__(self, handle: ModelHandle) -> None:
        super().__init__(handle, "logprob")
        self.head = _mlm_head(handle)
        mask_id = torch.tensor([handle.tokenizer.mask_token_id], device=handle.device)
        with torch.no_grad():
            self.mask_emb = handle.input_embeddings()(mask_id)[0].detach()

    def __call__(self, embeds: torch.Tensor, attn: torch.Tensor, *aux: torch.Tensor) -> torch.Tensor:
        score, labels = aux
        rows, pos = score.nonzero(as_tuple=True)
        n = rows.shape[0]
        onehot = torch.zeros(n, embeds.shape[1], 1, dtype=torch.bool, device=embeds.device)
        onehot[torch.arange(n, device=embeds.device), pos] = True
        copies = torch.where(onehot, self.mask_emb.to(embeds.dtype), embeds[rows])
        ar = torch.arange(n, device=embeds.device)
        if self.head is not None:
            logits = self.head(self.hidden(copies, attn[rows])[ar, pos])
        else:
            logits = self.model(inputs_embeds=copies, attention_mask=attn[rows]).logits[ar, pos]
        lp = torch.log_softmax(_up(logits), -1).gather(1, labels[rows, pos][:, None])[:, 0]
        out = torch.zeros(embeds.shape[0], device=embeds.device, dtype=lp.dtype)
        return out.index_add(0, rows, lp)[:, None]


class NextTokenFn(TargetFn):
    mode = "next"

    def __init__(self, handle: ModelHandle, output: str = "prob") -> None:
        super().__init__(handle, output)
        self.head = _causal_head(handle)

    def __call__(self, embeds: torch.Tensor, attn: torch.Tensor, *aux: torch.Tensor) -> torch.Tensor:
        pos, tok, contrast = aux
        rows = torch.arange(embeds.shape[0], device=embeds.device)
        logits = self.head(self.hidden(embeds, attn)[rows, pos])
        return _pick(_transform(logits, self.output), tok, contrast)[:, None]


class GenerationFn(TargetFn):
    """Output k is P(token_k | tokens before position_k): one column per generated token."""

    mode = "generate"

    def __init__(self, handle: ModelHandle, output: str = "prob") -> None:
        super().__init__(handle, output)
        self.head = _causal_head(handle)

    def __call__(self, embeds: torch.Tensor, attn: torch.Tensor, *aux: torch.Tensor) -> torch.Tensor:
        positions, toks = aux
        rows = torch.arange(embeds.shape[0], device=embeds.device)[:, None]
        h = self.hidden(embeds, attn)[rows, positions - 1]  # (B, K, H)
        y = _transform(self.head(h), self.output)
        return y.gather(-1, toks.unsqueeze(-1)).squeeze(-1)


class SentenceFn(TargetFn):
    """Σᵢ log P(tᵢ | t<ᵢ); ``labels[j]`` is the token position j predicts (−100: none)."""

    mode = "sentence"

    def __init__(self, handle: ModelHandle) -> None:
        super().__init__(handle, "logprob")
        self.head = _causal_head(handle)

    def __call__(self, embeds: torch.Tensor, attn: torch.Tensor, *aux: torch.Tensor) -> torch.Tensor:
        (labels,) = aux
        lp = torch.log_softmax(_up(self.head(self.hidden(embeds, attn))), -1)
        picked = lp.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        return torch.where(labels >= 0, picked, torch.zeros_like(picked)).sum(1, keepdim=True)


class ClassFn(TargetFn):
    mode = "class"

    def __call__(self, embeds: torch.Tensor, attn: torch.Tensor, *aux: torch.Tensor) -> torch.Tensor:
        (cls,) = aux
        logits = self.model(inputs_embeds=embeds, attention_mask=attn).logits
        return _transform(logits, self.output).gather(1, cls[:, None])


class CosineFn(TargetFn):
    mode = "cosine"

    def __init__(self, handle: ModelHandle, pooling: str = "mean") -> None:
        super().__init__(handle, "cosine")
        self.pooling = pooling

    def pooled(self, embeds: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
        o = self.base(inputs_embeds=embeds, attention_mask=attn)
        return _up(_pool(o.last_hidden_state, attn, self.pooling, getattr(o, "pooler_output", None)))

    def __call__(self, embeds: torch.Tensor, attn: torch.Tensor, *aux: torch.Tensor) -> torch.Tensor:
        (pair,) = aux
        return torch.nn.functional.cosine_similarity(self.pooled(embeds, attn), _up(pair), dim=-1)[:, None]


# --------------------------------------------------------------------------------------------
# prepared examples
# --------------------------------------------------------------------------------------------


@dataclass
class Prepared:
    """One input ready for every explainer: token ids, what may be attributed, the target."""

    index: int
    text: str
    ids: torch.Tensor  # (T,) long, on the model's device
    tokens: list[str]
    attributable: torch.Tensor  # (T,) bool: positions an attribution / perturbation may touch
    baseline_ids: torch.Tensor  # (T,) ids with attributable positions set to the baseline token
    fn: TargetFn
    aux: tuple[torch.Tensor, ...]  # row-aligned extra inputs of fn, batch dimension 1
    aux_pad: tuple[Any, ...]  # per aux: padding value when it is token-aligned, else None
    target_names: list[str]
    target_positions: list[int] | None = None  # generation: index of each predicted token
    query_rows: list[int | None] | None = None  # attention row per target (None: mean of rows)
    pair: str | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def n_targets(self) -> int:
        return len(self.target_names)

    @property
    def length(self) -> int:
        return int(self.ids.shape[0])

    def visible(self, k: int) -> torch.Tensor:
        """Positions that can affect target k: attributable and (generation) before its token."""
        if self.target_positions is None:
            return self.attributable
        ar = torch.arange(self.length, device=self.ids.device)
        return self.attributable & (ar < self.target_positions[k])

    def attn(self) -> torch.Tensor:
        return torch.ones_like(self.ids)

    def subset(self, ks: Sequence[int]) -> Prepared:
        """The same input explaining only targets ``ks``: a generation target keeps those columns of
        its (1, K) aux tensors; every other target has K = 1 and ``ks`` must be ``[0]``."""
        ks = list(ks)
        if ks == list(range(self.n_targets)):
            return self
        if self.target_positions is None or not all(0 <= k < self.n_targets for k in ks):
            raise ValueError(f"targets {ks} not among the {self.n_targets} of example {self.index}")
        return replace(self, aux=tuple(a[:, ks] for a in self.aux), target_names=[self.target_names[k] for k in ks],
                       target_positions=[self.target_positions[k] for k in ks],
                       query_rows=[self.query_rows[k] for k in ks] if self.query_rows else None)


def collate(
    batch: Sequence[Prepared],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, tuple[torch.Tensor, ...]]:
    """Right-pad a batch: ids, baseline ids, attention mask and stacked aux tensors."""
    t = max(p.length for p in batch)
    dev = batch[0].ids.device
    pad_id = batch[0].fn.handle.tokenizer.pad_token_id
    ids = torch.full((len(batch), t), pad_id, dtype=torch.long, device=dev)
    base = ids.clone()
    attn = torch.zeros((len(batch), t), dtype=torch.long, device=dev)
    for r, p in enumerate(batch):
        ids[r, : p.length] = p.ids
        base[r, : p.length] = p.baseline_ids
        attn[r, : p.length] = 1
    aux = []
    for j, padv in enumerate(batch[0].aux_pad):
        parts = [p.aux[j] for p in batch]
        if padv is not None:
            parts = [torch.nn.functional.pad(a, (0, t - a.shape[-1]), value=padv) for a in parts]
        aux.append(torch.cat(parts, 0))
    return ids, base, attn, tuple(aux)


def forward_rows(p: Prepared) -> int:
    """Forward rows one input row becomes inside the target (PLL builds one copy per token)."""
    return max(1, int(p.aux[0].sum())) if p.fn.mode == "pll" else 1


def row_batches(rows: Sequence[Prepared], budget: int, max_rows: int | None = None, per_row: bool = False
                ) -> Iterator[tuple[list[int], torch.Tensor, torch.Tensor, torch.Tensor, tuple[torch.Tensor, ...]]]:
    """Batches of rows with as many targets, ``rows × longest ≤ budget`` padded tokens (a PLL row
    counts its copies; ``per_row``: one row per batch): yields (row indices, *:func:`collate`)."""
    by_size: dict[int, list[int]] = {}
    for j, p in enumerate(rows):
        by_size.setdefault(p.n_targets, []).append(j)
    for _, idxs in sorted(by_size.items()):
        lengths = [rows[j].length * forward_rows(rows[j]) for j in idxs]
        for b in length_sorted_batches(lengths, budget, 1 if per_row else max_rows):
            batch = [idxs[j] for j in b]
            yield (batch, *collate([rows[j] for j in batch]))


def embed_ids(handle: ModelHandle, ids: torch.Tensor) -> torch.Tensor:
    """Word embeddings of ids (the layer every gradient method attributes to)."""
    return handle.input_embeddings()(ids)


# --------------------------------------------------------------------------------------------
# building targets
# --------------------------------------------------------------------------------------------


def display_tokens(handle: ModelHandle, ids: Sequence[int]) -> list[str]:
    tok = handle.tokenizer
    return [tok.decode([int(i)], clean_up_tokenization_spaces=False) for i in ids]


def resolve_token(handle: ModelHandle, token: Any, what: str = "token") -> int:
    """A single vocabulary id for ``token`` (id, exact vocabulary entry, or a one-token string)."""
    tok = handle.tokenizer
    vocab_size = len(tok)
    if isinstance(token, bool):
        raise TargetError(f"target {what} must be a string or a token id, got {token!r}")
    if isinstance(token, int):
        if not 0 <= token < vocab_size:
            raise TargetError(f"target {what} id {token} out of range: the vocabulary has {vocab_size} tokens")
        return token
    if not isinstance(token, str) or not token:
        raise TargetError(f"target {what} must be a non-empty string or a token id, got {token!r}")
    ids = tok(token, add_special_tokens=False)["input_ids"]
    if len(ids) == 1:
        return int(ids[0])
    vid = tok.convert_tokens_to_ids(token)
    if isinstance(vid, int) and vid != tok.unk_token_id:
        return vid
    pieces = tok.convert_ids_to_tokens(ids)
    raise TargetError(
        f"target {what} {token!r} is {len(ids)} tokens for this tokenizer ({pieces}); give a single "
        "vocabulary token (for byte-level BPE include the leading space, e.g. ' she')"
    )


def baseline_token_id(handle: ModelHandle, baseline: Any) -> int:
    """The token a removed / baseline position holds: auto, pad, mask, unk, eos, bos, or a token.

    ``auto`` is ``pad`` for encoders, masked LMs and classifiers, and ``unk`` for causal LMs that
    have one (else ``pad``): a causal LM's pad is usually its EOS, and a path that starts from a row
    of EOS tokens can be far from straight — on SmolLM2-135M-Instruct (pad = ``<|im_end|>``) IG of
    a next-token probability had a 40 % completeness gap at 32 steps from the pad baseline and 3 %
    from ``<|endoftext|>`` (its unk; also Captum's LLM default, token id 0); see
    benchmarks/RESULTS.md.
    """
    tok = handle.tokenizer
    if baseline == "auto":
        baseline = "unk" if handle.kind == "causal-lm" and tok.unk_token_id is not None else "pad"
    if isinstance(baseline, str) and baseline in {"pad", "mask", "unk", "eos", "bos"}:
        tid = getattr(tok, f"{baseline}_token_id", None)
        if tid is None:
            raise ExplainError(f"baseline {baseline!r}: the tokenizer of {handle.name} has no {baseline} token")
        return int(tid)
    return resolve_token(handle, baseline, "baseline")


def _check_keys(kind: str, target: dict[str, Any]) -> None:
    unknown = set(target) - TARGET_KEYS[kind]
    if unknown:
        raise TargetError(
            f"unknown target field(s) {sorted(unknown)} for a {kind} model; allowed: "
            f"{', '.join(sorted(TARGET_KEYS[kind]))}"
        )


def target_mode(kind: str, target: dict[str, Any] | None) -> str:
    target = target or {}
    mode = target.get("mode", MODES[kind][0])
    if mode not in MODES[kind]:
        valid_for = [k for k, ms in MODES.items() if mode in ms]
        extra = f" (it is a {', '.join(valid_for)} target)" if valid_for else ""
        raise TargetError(
            f"target mode {mode!r} is not valid for a {kind} model{extra}; use one of {', '.join(MODES[kind])}"
        )
    return str(mode)


def _output(target: dict[str, Any]) -> str:
    out = target.get("output", "prob")
    if out not in OUTPUTS:
        raise TargetError(f"target output {out!r} unknown; use one of {', '.join(OUTPUTS)}")
    return str(out)


def _special_mask(handle: ModelHandle, ids: Sequence[int]) -> torch.Tensor:
    special = set(handle.tokenizer.all_special_ids)
    return torch.tensor([int(i) in special for i in ids], dtype=torch.bool)


def _check_len(handle: ModelHandle, i: int, n: int, extra: str = "") -> None:
    if n > handle.max_length:
        raise InputTooLongError(
            f"example {i} has {n} tokens{extra}; {handle.name} accepts at most {handle.max_length}"
        )


def _normalise_inputs(kind: str, inputs: Any) -> list[tuple[str, str | None]]:
    if isinstance(inputs, str):
        inputs = [inputs]
    if isinstance(inputs, tuple) and len(inputs) == 2 and all(isinstance(x, str) for x in inputs) and kind == "encoder":
        inputs = [inputs]
    out: list[tuple[str, str | None]] = []
    for i, x in enumerate(inputs):
        if isinstance(x, str):
            out.append((x, None))
        elif isinstance(x, (tuple, list)) and len(x) == 2 and all(isinstance(s, str) for s in x):
            if kind != "encoder":
                raise ExplainError(f"example {i} is a pair of texts; pairs are only for sentence encoders, "
                                   f"this is a {kind} model")
            out.append((x[0], x[1]))
        else:
            raise ExplainError(f"example {i}: expected a text (or a (text, pair) tuple), got {type(x).__name__}")
        if not out[-1][0].strip():
            raise ExplainError(f"example {i} is an empty text")
    if not out:
        raise ExplainError("no inputs to explain")
    return out


def _argmax_tokens(fn: MaskedTokenFn | NextTokenFn, preps: list[Prepared], slot: int) -> None:
    """Fill the default target token (the model's top prediction) into ``aux[slot]``."""
    with torch.no_grad():
        for p in preps:
            if int(p.aux[slot][0]) >= 0:
                continue
            pos = int(p.aux[0][0])
            emb = embed_ids(fn.handle, p.ids[None])
            if fn.head is not None:
                logits = fn.head(fn.hidden(emb, p.attn()[None])[:, pos])[0]
            else:
                logits = fn.model(inputs_embeds=emb, attention_mask=p.attn()[None]).logits[0, pos]
            best = torch.tensor([int(logits.argmax())], device=p.ids.device)
            p.aux = tuple(best if j == slot else a for j, a in enumerate(p.aux))


def prepare(
    handle: ModelHandle, inputs: Any, target: dict[str, Any] | None = None, *, baseline: Any = "auto"
) -> list[Prepared]:
    """Tokenize inputs and build the target of each one (errors name the example)."""
    kind = handle.kind
    target = dict(target or {})
    _check_keys(kind, target)
    mode = target_mode(kind, target)
    examples = _normalise_inputs(kind, inputs)
    base_id = baseline_token_id(handle, baseline)
    builder = {"masked-lm": _prepare_mlm, "causal-lm": _prepare_causal, "classifier": _prepare_classifier,
               "encoder": _prepare_encoder}[kind]
    preps = builder(handle, examples, target, mode)
    for p in preps:
        p.baseline_ids = torch.where(p.attributable, torch.full_like(p.ids, base_id), p.ids)
        p.info.setdefault("baseline_token", handle.tokenizer.decode([base_id]))
        p.info["mode"] = mode
    return preps


def _new(handle: ModelHandle, i: int, text: str, ids: list[int], attributable: torch.Tensor, fn: TargetFn,
         aux: tuple[torch.Tensor, ...], aux_pad: tuple[Any, ...], names: list[str], **kw: Any) -> Prepared:
    dev = handle.device
    t = torch.tensor(ids, dtype=torch.long, device=dev)
    return Prepared(index=i, text=text, ids=t, tokens=display_tokens(handle, ids),
                    attributable=attributable.to(dev), baseline_ids=t.clone(), fn=fn,
                    aux=tuple(a.to(dev) for a in aux), aux_pad=aux_pad, target_names=names, **kw)


def _prepare_mlm(handle: ModelHandle, examples: list[tuple[str, str | None]], target: dict[str, Any],
                 mode: str) -> list[Prepared]:
    tok = handle.tokenizer
    mask_id = tok.mask_token_id
    if mask_id is None:
        raise TargetError(f"{handle.name} has no mask token; a masked-LM target needs one")
    preps: list[Prepared] = []
    if mode == "pll":
        fn_pll = PLLFn(handle)
        for i, (text, _) in enumerate(examples):
            ids = tok(text)["input_ids"]
            _check_len(handle, i, len(ids))
            special = _special_mask(handle, ids)
            labels = torch.tensor(ids)[None]
            preps.append(_new(handle, i, text, ids, ~special, fn_pll, ((~special)[None], labels), (False, -100),
                              ["pseudo-log-likelihood"]))
        return preps
    output = _output(target)
    fn = MaskedTokenFn(handle, output)
    mi = target.get("mask_index", 0)
    if not isinstance(mi, int) or isinstance(mi, bool):
        raise TargetError(f"target mask_index must be an integer, got {mi!r}")
    tok_id = resolve_token(handle, target["token"]) if target.get("token") is not None else -1
    con_id = resolve_token(handle, target["contrast"], "contrast") if target.get("contrast") is not None else -1
    for i, (text, _) in enumerate(examples):
        for ph in _MASK_PLACEHOLDERS:
            text = text.replace(ph, tok.mask_token)
        ids = tok(text)["input_ids"]
        _check_len(handle, i, len(ids))
        masks = [j for j, t in enumerate(ids) if t == mask_id]
        if not masks:
            raise TargetError(f"example {i} ({text[:60]!r}) has no {tok.mask_token} token; a masked-LM "
                              "target needs one (or use target mode 'pll')")
        if not -len(masks) <= mi < len(masks):
            raise TargetError(f"target mask_index {mi} out of range: example {i} has {len(masks)} "
                              f"{tok.mask_token} token(s)")
        pos = masks[mi]
        attributable = ~_special_mask(handle, ids)
        aux = (torch.tensor([pos]), torch.tensor([tok_id]), torch.tensor([con_id]))
        preps.append(_new(handle, i, text, ids, attributable, fn, aux, (None, None, None), [""],
                          query_rows=[pos], info={"mask_position": pos}))
    _argmax_tokens(fn, preps, 1)
    for p in preps:
        t_str = tok.decode([int(p.aux[1][0])])
        c = f" − {output}({tok.decode([con_id])!r})" if con_id >= 0 else ""
        p.target_names = [f"{output}({t_str!r} at {tok.mask_token} #{mi}){c}"]
        p.info["target_token"] = t_str
    return preps


def _greedy(handle: ModelHandle, ids: list[int], n: int) -> list[int]:
    eos = handle.tokenizer.eos_token_id
    x = torch.tensor([ids], device=handle.device)
    out: list[int] = []
    head = _causal_head(handle)
    with torch.no_grad():
        for _ in range(n):
            h = handle.model.base_model(input_ids=x).last_hidden_state[0, -1]
            nxt = int(head(h[None])[0].argmax())
            out.append(nxt)
            if nxt == eos:
                break
            x = torch.cat([x, torch.tensor([[nxt]], device=handle.device)], 1)
    return out


def _prepare_causal(handle: ModelHandle, examples: list[tuple[str, str | None]], target: dict[str, Any],
                    mode: str) -> list[Prepared]:
    tok = handle.tokenizer
    pre = prefix_token_id(handle)
    preps: list[Prepared] = []

    def source(text: str) -> list[int]:
        return ([pre] if pre is not None else []) + list(tok(text, add_special_tokens=False)["input_ids"])

    def attributable_of(ids: list[int]) -> torch.Tensor:
        a = ~_special_mask(handle, ids)
        if pre is not None:
            a[0] = False
        return a

    if mode == "sentence":
        fn_s = SentenceFn(handle)
        for i, (text, _) in enumerate(examples):
            ids = source(text)
            _check_len(handle, i, len(ids))
            if len(ids) < 2:
                raise TargetError(f"example {i} has no token to score")
            labels = torch.tensor(ids[1:] + [-100])[None]
            preps.append(_new(handle, i, text, ids, attributable_of(ids), fn_s, (labels,), (-100,),
                              ["sentence log-likelihood"]))
        return preps
    output = _output(target)
    if mode == "next":
        fn = NextTokenFn(handle, output)
        tok_id = resolve_token(handle, target["token"]) if target.get("token") is not None else -1
        con_id = resolve_token(handle, target["contrast"], "contrast") if target.get("contrast") is not None else -1
        for i, (text, _) in enumerate(examples):
            ids = source(text)
            _check_len(handle, i, len(ids))
            aux = (torch.tensor([len(ids) - 1]), torch.tensor([tok_id]), torch.tensor([con_id]))
            preps.append(_new(handle, i, text, ids, attributable_of(ids), fn, aux, (None, None, None), [""],
                              query_rows=[len(ids) - 1]))
        _argmax_tokens(fn, preps, 1)
        for p in preps:
            t_str = tok.decode([int(p.aux[1][0])])
            c = f" − {output}({tok.decode([con_id])!r})" if con_id >= 0 else ""
            p.target_names = [f"{output}(next = {t_str!r}){c}"]
            p.info["target_token"] = t_str
        return preps
    # generate
    n_new = target.get("max_new_tokens", 8)
    if not isinstance(n_new, int) or isinstance(n_new, bool) or n_new < 1:
        raise TargetError(f"target max_new_tokens must be a positive integer, got {n_new!r}")
    cont = target.get("continuation")
    fixed_gen = target.get("attribute_generated", True) is False
    fn_g = GenerationFn(handle, output)
    for i, (text, _) in enumerate(examples):
        src = source(text)
        _check_len(handle, i, len(src))
        if cont is not None:
            gen = list(tok(cont, add_special_tokens=False)["input_ids"])
        else:
            _check_len(handle, i, len(src) + n_new, f" plus {n_new} new tokens")
            gen = _greedy(handle, src, n_new)
        if not gen:
            raise TargetError(f"example {i}: the continuation has no tokens")
        ids = src + gen
        _check_len(handle, i, len(ids), " with its continuation")
        positions = list(range(len(src), len(ids)))
        attributable = attributable_of(ids)
        if fixed_gen:
            attributable[len(src):] = False
        names = [f"{output}({tok.decode([g])!r} @ {pos})" for g, pos in zip(gen, positions, strict=True)]
        preps.append(_new(handle, i, text, ids, attributable, fn_g, (torch.tensor([positions]), torch.tensor([gen])),
                          (None, None), names,
                          target_positions=positions, query_rows=[q - 1 for q in positions],
                          info={"source_length": len(src), "continuation": tok.decode(gen)}))
    return preps


def _prepare_classifier(handle: ModelHandle, examples: list[tuple[str, str | None]], target: dict[str, Any],
                        mode: str) -> list[Prepared]:
    tok = handle.tokenizer
    output = _output(target)
    fn = ClassFn(handle, output)
    n_cls = int(handle.model.config.num_labels)
    id2label = {int(k): v for k, v in (getattr(handle.model.config, "id2label", None) or {}).items()}
    label2id = {v: k for k, v in id2label.items()}
    cls = target.get("class")
    if isinstance(cls, str):
        if cls not in label2id:
            raise TargetError(f"target class {cls!r} unknown; labels: {', '.join(map(str, label2id))}")
        cls = label2id[cls]
    if cls is not None and (not isinstance(cls, int) or isinstance(cls, bool) or not 0 <= cls < n_cls):
        raise TargetError(f"target class {cls!r} out of range: the classifier has {n_cls} classes (0..{n_cls - 1})")
    causal = is_causal(handle)
    preps: list[Prepared] = []
    for i, (text, _) in enumerate(examples):
        ids = tok(text)["input_ids"]
        _check_len(handle, i, len(ids))
        c = cls
        if c is None:
            with torch.no_grad():
                x = torch.tensor([ids], device=handle.device)
                c = int(handle.model(input_ids=x).logits[0].argmax())
        q = len(ids) - 1 if causal else 0
        preps.append(_new(handle, i, text, ids, ~_special_mask(handle, ids), fn, (torch.tensor([c]),), (None,),
                          [f"{output}(class {c} {id2label.get(c, '')!r})"], query_rows=[q],
                          info={"class": c, "label": id2label.get(c, str(c))}))
    return preps


def _prepare_encoder(handle: ModelHandle, examples: list[tuple[str, str | None]], target: dict[str, Any],
                     mode: str) -> list[Prepared]:
    tok = handle.tokenizer
    pooling = target.get("pooling", "mean")
    if pooling not in POOLINGS:
        raise TargetError(f"target pooling {pooling!r} unknown; use one of {', '.join(POOLINGS)}")
    fn = CosineFn(handle, pooling)
    preps: list[Prepared] = []
    for i, (text, pair) in enumerate(examples):
        pair = pair if pair is not None else target.get("pair")
        if not isinstance(pair, str) or not pair.strip():
            raise TargetError(f"example {i}: a sentence-encoder target is the cosine similarity with a second "
                              "text; give target={'pair': '...'} or (text, pair) inputs")
        ids = tok(text)["input_ids"]
        pids = tok(pair)["input_ids"]
        _check_len(handle, i, len(ids))
        _check_len(handle, i, len(pids), " in its pair text")
        with torch.no_grad():
            pt = torch.tensor([pids], device=handle.device)
            pvec = fn.pooled(embed_ids(handle, pt), torch.ones_like(pt))
        q: int | None = {"cls": 0, "pooler": 0, "last": len(ids) - 1}.get(pooling)
        preps.append(_new(handle, i, text, ids, ~_special_mask(handle, ids), fn, (pvec,), (None,),
                          [f"cos(x, {pair[:40]!r})"], query_rows=[q], pair=pair, info={"pooling": pooling}))
    return preps
