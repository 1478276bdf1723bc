"""What an attribution explains: one scalar (or one per generated token) per model kind.

A target turns input *word embeddings* ``(B, T, H)`` plus an attention mask into outputs
``(B, K)``; every explainer differentiates or perturbs that one function, so all methods explain
the same number. Each (kind, mode) is one :class:`Target` class, registered with
:func:`register_target`, which derives :data:`MODES` and :data:`TARGET_KEYS` (keys in brackets):

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

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch

from audit.explain.arch import is_causal
from audit.explain.errors import ExplainError, TargetError
from audit.generation import GenerationSettings, generate_ids
from audit.registry import DuplicateNameError
from audit.scoring import (
    POOLINGS,
    check_length,
    default_batch_tokens,
    length_sorted_batches,
    output_head,
    pool,
    prefix_token_id,
)

if TYPE_CHECKING:
    from audit.models import ModelHandle

OUTPUTS = ("prob", "logprob", "logit")
TARGETS: dict[tuple[str, str], type[Target]] = {}  # (kind, mode) → its class (:func:`register_target`)
MODES: dict[str, tuple[str, ...]] = {}  # kind → its modes, the default (first registered) first
TARGET_KEYS: dict[str, frozenset[str]] = {}  # kind → every ``target=`` key one of its modes reads
_MASK_PLACEHOLDERS = ("[MASK]", "<mask>")


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
    fn: Target
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

    def token_result(self, s: np.ndarray) -> dict[str, Any]:
        """An explainer's result for this input from per-token scores ``s`` (K, T): positions that
        may not be attributed get 0."""
        s[:, ~self.attributable.cpu().numpy()] = 0.0
        return {"scores": s, "token_scores": s}

    def run(self, embeds: torch.Tensor, attn: torch.Tensor | None = None) -> torch.Tensor:
        """The target (B, K) on B variants ``embeds`` (B, T, H) of this input (attention mask: all
        ones unless given), its aux tensors repeated for every row."""
        b = embeds.shape[0]
        attn = self.attn()[None].expand(b, -1) if attn is None else attn
        return self.fn(embeds, attn, *(t.expand(b, *t.shape[1:]) for t in self.aux))

    def subset(self, ks: Sequence[int], trim: bool = False) -> Prepared:
        """The same input explaining only targets ``ks``: a generation target keeps those columns of
        its (1, K) aux tensors; every other target has K = 1 and ``ks`` must be ``[0]``. ``trim``
        (generation): the row also ends before the last of those targets' tokens, the last one any of
        them reads (a causal model's outputs there do not depend on what follows)."""
        ks = list(ks)
        if ks != list(range(self.n_targets)) and (
                self.target_positions is None or not all(0 <= k < self.n_targets for k in ks)):
            raise ValueError(f"targets {ks} not among the {self.n_targets} of example {self.index}")
        sub = self if ks == list(range(self.n_targets)) else replace(
            self, aux=tuple(a[:, ks] for a in self.aux), target_names=[self.target_names[k] for k in ks],
            target_positions=[self.target_positions[k] for k in ks],  # type: ignore[index]
            query_rows=[self.query_rows[k] for k in ks] if self.query_rows else None)
        if not trim or sub.target_positions is None or (n := max(sub.target_positions)) >= sub.length:
            return sub
        return replace(sub, ids=sub.ids[:n], baseline_ids=sub.baseline_ids[:n], attributable=sub.attributable[:n],
                       tokens=sub.tokens[:n])


def position_groups(p: Prepared, ks: Sequence[int]) -> list[list[int]]:
    """Targets ``ks`` of ``p`` in groups whose rows can be cut short (:meth:`Prepared.subset` with
    ``trim``): a generation target k reads only the tokens before ``target_positions[k]``, so a
    group costs about its longest prefix × (1 forward + one backward per target). Contiguous
    groups by position, chosen by dynamic programming to minimise that sum; one group for every
    other target."""
    if p.target_positions is None or len(ks) < 2:
        return [list(ks)]
    order = sorted(ks, key=lambda k: p.target_positions[k])  # type: ignore[index]
    need = [p.target_positions[k] for k in order]  # type: ignore[index]
    best, cut = [0.0], [0]  # best[j]: cost of the first j targets; cut[j]: where its last group starts
    for j in range(1, len(order) + 1):
        c, i = min((best[i] + need[j - 1] * (1 + j - i), i) for i in range(j))
        best.append(c)
        cut.append(i)
    groups, j = [], len(order)
    while j:
        groups.append(order[cut[j]:j])
        j = cut[j]
    return groups[::-1]


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
    """Every key is read by some mode of the kind, and by the mode asked for (a ``max_new_tokens``
    on a next-token target would otherwise be ignored without a word)."""
    unknown = set(target) - TARGET_KEYS[kind]
    if unknown:
        raise TargetError(
            f"unknown target field(s) {sorted(unknown)} for a {kind} model; allowed: "
            f"{', '.join(sorted(TARGET_KEYS[kind]))}"
        )
    mode = target_mode(kind, target)
    other = set(target) - TARGETS[kind, mode].keys - {"mode"}
    if other:
        users = sorted({m for (k, m), cls in TARGETS.items() if k == kind and other & cls.keys})
        raise TargetError(
            f"target field(s) {sorted(other)} do nothing for mode {mode!r} of a {kind} model (they are read by "
            f"mode {', '.join(map(repr, users))}); mode {mode!r} reads: {', '.join(sorted(TARGETS[kind, mode].keys))}"
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


def _special_mask(handle: ModelHandle, ids: Sequence[int]) -> torch.Tensor:
    special = set(handle.tokenizer.all_special_ids)
    return torch.tensor([int(i) in special for i in ids], dtype=torch.bool)


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
    preps = TARGETS[kind, mode](handle, target).prepare(examples)
    for p in preps:
        p.baseline_ids = torch.where(p.attributable, torch.full_like(p.ids, base_id), p.ids)
        p.info.setdefault("baseline_token", handle.tokenizer.decode([base_id]))
        p.info["mode"] = mode
    return preps


# --------------------------------------------------------------------------------------------
# target classes: one per (kind, mode)
# --------------------------------------------------------------------------------------------

def register_target(cls: type[Target]) -> type[Target]:
    """Class decorator: ``cls`` is the target of (``cls.kind``, ``cls.mode``). Its mode joins the
    kind's :data:`MODES` (the first registered mode of a kind is its default) and its keys the
    kind's :data:`TARGET_KEYS`; registering a (kind, mode) twice raises."""
    key = (cls.kind, cls.mode)
    if key in TARGETS:
        raise DuplicateNameError(f"target mode {cls.mode!r} of {cls.kind} models is registered twice: by "
                                 f"{TARGETS[key].__qualname__} and by {cls.__qualname__}")
    TARGETS[key] = cls
    MODES[cls.kind] = (*MODES.get(cls.kind, ()), cls.mode)
    TARGET_KEYS[cls.kind] = TARGET_KEYS.get(cls.kind, frozenset({"mode"})) | cls.keys
    return cls


class Target(ABC):
    """The target of one (model kind, mode): the ``target=`` keys it reads (besides ``mode``),
    :meth:`prepare`, which turns texts into :class:`Prepared` inputs, and the forward pass
    ``__call__``: word embeddings (B, T, H) + attention mask (+ row-aligned aux) → (B, K)."""

    kind: ClassVar[str]
    mode: ClassVar[str]
    keys: ClassVar[frozenset[str]] = frozenset()
    output = "prob"  # what of the logits is explained; read from the target when "output" is a key

    def __init__(self, handle: ModelHandle, target: dict[str, Any]) -> None:
        self.handle = handle
        self.base = handle.model.base_model
        self.head = output_head(handle)
        self.target = target
        if "output" in self.keys:
            self.output = target.get("output", "prob")
            if self.output not in OUTPUTS:
                raise TargetError(f"target output {self.output!r} unknown; use one of {', '.join(OUTPUTS)}")

    def hidden(self, embeds: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
        return self.base(inputs_embeds=embeds, attention_mask=attn).last_hidden_state

    def logits_at(self, embeds: torch.Tensor, attn: torch.Tensor, *at: Any) -> torch.Tensor:
        """The logits at ``[at]`` (an index into the batch and position dimensions; none: all): the
        output head applied to those hidden states only, else the model's full logits indexed so."""
        if self.head is None:
            return self.handle.model(inputs_embeds=embeds, attention_mask=attn).logits[at]
        return self.head(self.hidden(embeds, attn)[at])

    def prepare(self, examples: list[tuple[str, str | None]]) -> list[Prepared]:
        """One :class:`Prepared` per (text, pair) example; errors name the field or the example."""
        return [self.example(i, text, pair) for i, (text, pair) in enumerate(examples)]

    @abstractmethod
    def example(self, i: int, text: str, pair: str | None) -> Prepared:
        """Example ``i`` prepared."""

    @abstractmethod
    def __call__(self, embeds: torch.Tensor, attn: torch.Tensor, *aux: torch.Tensor) -> torch.Tensor: ...

    def _new(self, i: int, text: str, ids: list[int], attributable: torch.Tensor, aux: tuple[torch.Tensor, ...],
             aux_pad: tuple[Any, ...], names: list[str], **kw: Any) -> Prepared:
        dev = self.handle.device
        t = torch.tensor(ids, dtype=torch.long, device=dev)
        return Prepared(index=i, text=text, ids=t, tokens=display_tokens(self.handle, ids),
                        attributable=attributable.to(dev), baseline_ids=t.clone(), fn=self,
                        aux=tuple(a.to(dev) for a in aux), aux_pad=aux_pad, target_names=names, **kw)


def _mask_token_id(handle: ModelHandle) -> int:
    mask_id = handle.tokenizer.mask_token_id
    if mask_id is None:
        raise TargetError(f"{handle.name} has no mask token; a masked-LM target needs one")
    return int(mask_id)


def _causal_source(handle: ModelHandle, text: str) -> list[int]:
    """A causal LM's ids of ``text``: the prefix token (BOS, else EOS) and no other special token."""
    pre = prefix_token_id(handle)
    return ([pre] if pre is not None else []) + list(handle.tokenizer(text, add_special_tokens=False)["input_ids"])


def _causal_attributable(handle: ModelHandle, ids: list[int]) -> torch.Tensor:
    a = ~_special_mask(handle, ids)
    if prefix_token_id(handle) is not None:
        a[0] = False
    return a


class TokenTarget(Target):
    """``output`` of ``token`` (default: the model's top prediction) at one position, minus that of
    ``contrast``; aux: (position, token, contrast), −1 for none."""

    keys = frozenset({"token", "contrast", "output"})
    #: the target name, formatted with output, token, contrast (the " − …" part) and t (the target)
    name_format: ClassVar[str]

    @abstractmethod
    def locate(self, i: int, text: str) -> tuple[str, list[int], torch.Tensor, int, dict[str, Any]]:
        """Example ``i`` as (text, ids, attributable positions, target position, info)."""

    def example(self, i: int, text: str, pair: str | None) -> Prepared:
        text, ids, attributable, pos, info = self.locate(i, text)
        aux = (torch.tensor([pos]), torch.tensor([self.tok_id]), torch.tensor([self.con_id]))
        return self._new(i, text, ids, attributable, aux, (None, None, None), [""], query_rows=[pos], info=info)

    def prepare(self, examples: list[tuple[str, str | None]]) -> list[Prepared]:
        tok, t = self.handle.tokenizer, self.target
        self.tok_id = resolve_token(self.handle, t["token"]) if t.get("token") is not None else -1
        self.con_id = resolve_token(self.handle, t["contrast"], "contrast") if t.get("contrast") is not None else -1
        preps = super().prepare(examples)
        c = f" − {self.output}({tok.decode([self.con_id])!r})" if self.con_id >= 0 else ""
        top = [p for p in preps if int(p.aux[1][0]) < 0]  # targets the model's top prediction
        with torch.no_grad():
            for batch, ids, _, attn, aux in row_batches(top, default_batch_tokens(self.handle)):
                rows = torch.arange(len(batch), device=ids.device)
                best = self.logits_at(embed_ids(self.handle, ids), attn, rows, aux[0]).argmax(-1)
                for r, j in enumerate(batch):
                    top[j].aux = (top[j].aux[0], best[r:r + 1], top[j].aux[2])
        for p in preps:
            t_str = tok.decode([int(p.aux[1][0])])
            p.target_names = [self.name_format.format(output=self.output, token=t_str, contrast=c, t=self)]
            p.info["target_token"] = t_str
        return preps

    def __call__(self, embeds: torch.Tensor, attn: torch.Tensor, *aux: torch.Tensor) -> torch.Tensor:
        pos, tok, contrast = aux
        rows = torch.arange(embeds.shape[0], device=embeds.device)
        return _pick(_transform(self.logits_at(embeds, attn, rows, pos), self.output), tok, contrast)[:, None]


@register_target
class MaskedToken(TokenTarget):
    """A masked LM's token at one ``[MASK]`` (``mask_index``)."""

    kind = "masked-lm"
    mode = "mask"
    keys = TokenTarget.keys | {"mask_index"}
    name_format = "{output}({token!r} at {t.handle.tokenizer.mask_token} #{t.mask_index}){contrast}"

    def __init__(self, handle: ModelHandle, target: dict[str, Any]) -> None:
        self.mask_id = _mask_token_id(handle)
        super().__init__(handle, target)
        self.mask_index = target.get("mask_index", 0)
        if not isinstance(self.mask_index, int) or isinstance(self.mask_index, bool):
            raise TargetError(f"target mask_index must be an integer, got {self.mask_index!r}")

    def locate(self, i: int, text: str) -> tuple[str, list[int], torch.Tensor, int, dict[str, Any]]:
        tok, mi = self.handle.tokenizer, self.mask_index
        for ph in _MASK_PLACEHOLDERS:
            text = text.replace(ph, tok.mask_token)
        ids = tok(text)["input_ids"]
        check_length(self.handle, len(ids), f"example {i}")
        masks = [j for j, t in enumerate(ids) if t == self.mask_id]
        if not masks:
            raise TargetError(f"example {i} ({text[:60]!r}) has no {tok.mask_token} token; a masked-LM "
                              "target needs one (or use target mode 'pll')")
        if not -len(masks) <= mi < len(masks):
            raise TargetError(f"target mask_index {mi} out of range: example {i} has {len(masks)} "
                              f"{tok.mask_token} token(s)")
        return text, ids, ~_special_mask(self.handle, ids), masks[mi], {"mask_position": masks[mi]}


@register_target
class PseudoLogLikelihood(Target):
    """Σₚ log P(xₚ | x with only p masked) — the masked copies are built after the embedding layer,
    so a gradient through them reaches every token's embedding."""

    kind = "masked-lm"
    mode = "pll"
    output = "logprob"

    def __init__(self, handle: ModelHandle, target: dict[str, Any]) -> None:
        mask_id = torch.tensor([_mask_token_id(handle)], device=handle.device)
        super().__init__(handle, target)
        with torch.no_grad():
            self.mask_emb = handle.input_embeddings()(mask_id)[0].detach()

    def example(self, i: int, text: str, pair: str | None) -> Prepared:
        ids = self.handle.tokenizer(text)["input_ids"]
        check_length(self.handle, len(ids), f"example {i}")
        special = _special_mask(self.handle, ids)
        labels = torch.tensor(ids)[None]
        return self._new(i, text, ids, ~special, ((~special)[None], labels), (False, -100), ["pseudo-log-likelihood"])

    def __call__(self, embeds: torch.Tensor, attn: torch.Tensor, *aux: torch.Tensor) -> torch.Tensor:
        score, labels = aux
        rows, pos = score.nonzero(as_tuple=True)
        n = rows.shape[0]
        onehot = torch.zeros(n, embeds.shape[1], 1, dtype=torch.bool, device=embeds.device)
        onehot[torch.arange(n, device=embeds.device), pos] = True
        copies = torch.where(onehot, self.mask_emb.to(embeds.dtype), embeds[rows])
        logits = self.logits_at(copies, attn[rows], torch.arange(n, device=embeds.device), pos)
        lp = torch.log_softmax(_up(logits), -1).gather(1, labels[rows, pos][:, None])[:, 0]
        out = torch.zeros(embeds.shape[0], device=embeds.device, dtype=lp.dtype)
        return out.index_add(0, rows, lp)[:, None]


@register_target
class NextToken(TokenTarget):
    """A causal LM's next token after the text."""

    kind = "causal-lm"
    mode = "next"
    name_format = "{output}(next = {token!r}){contrast}"

    def locate(self, i: int, text: str) -> tuple[str, list[int], torch.Tensor, int, dict[str, Any]]:
        ids = _causal_source(self.handle, text)
        check_length(self.handle, len(ids), f"example {i}")
        return text, ids, _causal_attributable(self.handle, ids), len(ids) - 1, {}


@register_target
class Generation(Target):
    """Output k is ``output`` of token_k given the tokens before it: one column per token of a greedy
    continuation (``max_new_tokens``) or of a given ``continuation``; ``attribute_generated=False``
    holds the generated tokens fixed."""

    kind = "causal-lm"
    mode = "generate"
    keys = frozenset({"output", "max_new_tokens", "continuation", "attribute_generated"})

    def __init__(self, handle: ModelHandle, target: dict[str, Any]) -> None:
        super().__init__(handle, target)
        self.n_new = target.get("max_new_tokens", 8)
        if not isinstance(self.n_new, int) or isinstance(self.n_new, bool) or self.n_new < 1:
            raise TargetError(f"target max_new_tokens must be a positive integer, got {self.n_new!r}")
        self.continuation = target.get("continuation")
        if self.continuation is not None and not isinstance(self.continuation, str):
            raise TargetError(f"target continuation must be a text, got {self.continuation!r}")
        self.attribute_generated = target.get("attribute_generated", True)
        if not isinstance(self.attribute_generated, bool):
            raise TargetError(f"target attribute_generated must be true or false, got {self.attribute_generated!r}")

    def _greedy(self, ids: list[int]) -> list[int]:
        """The greedy continuation of ``ids`` through :func:`audit.generation.generate_ids` (the
        model's own ``generate``, KV cache included), up to and including the first EOS."""
        (new,), _ = generate_ids(self.handle, [ids], GenerationSettings(max_new_tokens=self.n_new, batch_size=1))
        eos = self.handle.tokenizer.eos_token_id
        return new[: new.index(eos) + 1] if eos in new else new

    def example(self, i: int, text: str, pair: str | None) -> Prepared:
        tok, n_new = self.handle.tokenizer, self.n_new
        src = _causal_source(self.handle, text)
        check_length(self.handle, len(src), f"example {i}")
        if self.continuation is not None:
            gen = list(tok(self.continuation, add_special_tokens=False)["input_ids"])
        else:
            check_length(self.handle, len(src) + n_new, f"example {i} (its text plus {n_new} new tokens)")
            gen = self._greedy(src)
        if not gen:
            raise TargetError(f"example {i}: the continuation has no tokens")
        ids = src + gen
        check_length(self.handle, len(ids), f"example {i} with its continuation")
        positions = list(range(len(src), len(ids)))
        attributable = _causal_attributable(self.handle, ids)
        if not self.attribute_generated:
            attributable[len(src):] = False
        names = [f"{self.output}({tok.decode([g])!r} @ {pos})" for g, pos in zip(gen, positions, strict=True)]
        return self._new(i, text, ids, attributable, (torch.tensor([positions]), torch.tensor([gen])), (None, None),
                         names, target_positions=positions, query_rows=[q - 1 for q in positions],
                         info={"source_length": len(src), "continuation": tok.decode(gen)})

    def __call__(self, embeds: torch.Tensor, attn: torch.Tensor, *aux: torch.Tensor) -> torch.Tensor:
        positions, toks = aux
        rows = torch.arange(embeds.shape[0], device=embeds.device)[:, None]
        y = _transform(self.logits_at(embeds, attn, rows, positions - 1), self.output)  # (B, K, V)
        return y.gather(-1, toks.unsqueeze(-1)).squeeze(-1)


@register_target
class Sentence(Target):
    """Σᵢ log P(tᵢ | t<ᵢ); ``labels[j]`` is the token position j predicts (−100: none)."""

    kind = "causal-lm"
    mode = "sentence"
    output = "logprob"

    def example(self, i: int, text: str, pair: str | None) -> Prepared:
        ids = _causal_source(self.handle, text)
        check_length(self.handle, len(ids), f"example {i}")
        if len(ids) < 2:
            raise TargetError(f"example {i} has no token to score")
        labels = torch.tensor(ids[1:] + [-100])[None]
        return self._new(i, text, ids, _causal_attributable(self.handle, ids), (labels,), (-100,),
                         ["sentence log-likelihood"])

    def __call__(self, embeds: torch.Tensor, attn: torch.Tensor, *aux: torch.Tensor) -> torch.Tensor:
        (labels,) = aux
        lp = torch.log_softmax(_up(self.logits_at(embeds, attn)), -1)
        picked = lp.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        return torch.where(labels >= 0, picked, torch.zeros_like(picked)).sum(1, keepdim=True)


@register_target
class ClassLabel(Target):
    """A classifier's ``class`` (index or label name; default: the predicted class)."""

    kind = "classifier"
    mode = "class"
    keys = frozenset({"class", "output"})

    def __init__(self, handle: ModelHandle, target: dict[str, Any]) -> None:
        super().__init__(handle, target)
        n_cls = int(handle.model.config.num_labels)
        self.id2label = {int(k): v for k, v in (getattr(handle.model.config, "id2label", None) or {}).items()}
        label2id = {v: k for k, v in self.id2label.items()}
        cls = target.get("class")
        if isinstance(cls, str):
            if cls not in label2id:
                raise TargetError(f"target class {cls!r} unknown; labels: {', '.join(map(str, label2id))}")
            cls = label2id[cls]
        if cls is not None and (not isinstance(cls, int) or isinstance(cls, bool) or not 0 <= cls < n_cls):
            raise TargetError(f"target class {cls!r} out of range: the classifier has {n_cls} classes (0..{n_cls - 1})")
        self.cls: int | None = cls

    def example(self, i: int, text: str, pair: str | None) -> Prepared:
        ids = self.handle.tokenizer(text)["input_ids"]
        check_length(self.handle, len(ids), f"example {i}")
        c = self.cls
        if c is None:
            with torch.no_grad():
                x = torch.tensor([ids], device=self.handle.device)
                c = int(self.handle.model(input_ids=x).logits[0].argmax())
        q = len(ids) - 1 if is_causal(self.handle) else 0
        return self._new(i, text, ids, ~_special_mask(self.handle, ids), (torch.tensor([c]),), (None,),
                         [f"{self.output}(class {c} {self.id2label.get(c, '')!r})"], query_rows=[q],
                         info={"class": c, "label": self.id2label.get(c, str(c))})

    def __call__(self, embeds: torch.Tensor, attn: torch.Tensor, *aux: torch.Tensor) -> torch.Tensor:
        (cls,) = aux
        return _transform(self.logits_at(embeds, attn), self.output).gather(1, cls[:, None])


@register_target
class Cosine(Target):
    """A sentence encoder's cosine similarity of the ``pooling`` embedding with a second text (``pair``)."""

    kind = "encoder"
    mode = "cosine"
    keys = frozenset({"pair", "pooling"})
    output = "cosine"

    def __init__(self, handle: ModelHandle, target: dict[str, Any]) -> None:
        super().__init__(handle, target)
        self.pooling = target.get("pooling", "mean")
        if self.pooling not in POOLINGS:
            raise TargetError(f"target pooling {self.pooling!r} unknown; use one of {', '.join(POOLINGS)}")

    def pooled(self, embeds: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
        o = self.base(inputs_embeds=embeds, attention_mask=attn)
        return _up(pool(o.last_hidden_state, attn, self.pooling, getattr(o, "pooler_output", None)))

    def example(self, i: int, text: str, pair: str | None) -> Prepared:
        tok = self.handle.tokenizer
        pair = pair if pair is not None else self.target.get("pair")
        if not isinstance(pair, str) or not pair.strip():
            raise TargetError(f"example {i}: a sentence-encoder target is the cosine similarity with a second "
                              "text; give target={'pair': '...'} or (text, pair) inputs")
        ids = tok(text)["input_ids"]
        pids = tok(pair)["input_ids"]
        check_length(self.handle, len(ids), f"example {i}")
        check_length(self.handle, len(pids), f"the pair text of example {i}")
        with torch.no_grad():
            pt = torch.tensor([pids], device=self.handle.device)
            pvec = self.pooled(embed_ids(self.handle, pt), torch.ones_like(pt))
        q: int | None = {"cls": 0, "pooler": 0, "last": len(ids) - 1}.get(self.pooling)
        return self._new(i, text, ids, ~_special_mask(self.handle, ids), (pvec,), (None,), [f"cos(x, {pair[:40]!r})"],
                         query_rows=[q], pair=pair, info={"pooling": self.pooling})

    def __call__(self, embeds: torch.Tensor, attn: torch.Tensor, *aux: torch.Tensor) -> torch.Tensor:
        (pair,) = aux
        return torch.nn.functional.cosine_similarity(self.pooled(embeds, attn), _up(pair), dim=-1)[:, None]
