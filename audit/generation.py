"""Batched, seeded text generation from causal LMs, with the decoding settings recorded.

:func:`generate` left-pads length-sorted batches of prompts and calls ``model.generate`` with an
explicit :class:`transformers.GenerationConfig` (the model's own ``generation_config`` defaults —
temperature, repetition penalty, … — are never picked up silently).

Sampling is reproducible per prompt rather than per batch: each prompt gets its own
``torch.Generator`` seeded from ``sha256(seed, occurrence, prompt)``, and a logits processor draws
that prompt's next token from its own generator (temperature, then nucleus / top-p filtering,
Holtzman et al. 2020). A prompt's continuation therefore depends on the prompt, the seed and the
settings — not on which other prompts share its batch or on ``batch_size`` — up to floating-point
differences that padding can cause (which may flip a near-tie). Greedy decoding
(``do_sample=False``) is deterministic. Prompts are tokenized like every causal-LM score in this
project: the tokenizer's BOS (else EOS) token is prepended (:func:`audit.scoring.causal_tokenize`).

Non-finite logits (a broken checkpoint, an overflow in fp16, a fault planted by a test) never stop
a run: a logits processor that runs before any other records, per row, whether a step's scores were
non-finite — any NaN or +inf, or no finite score at all (a ``-inf`` on some tokens is a valid
probability 0, as models that mask unused vocabulary entries produce) — and replaces that row's
scores by a stand-in that allows only EOS (pad when there is no EOS), so the row stops there
instead of greedy decoding picking a token from NaN or sampling raising a torch error. Rows whose
scores stay finite are untouched, so their continuations are those of a run without the faulty
rows. :attr:`Generations.non_finite` says which prompts were affected; probes leave those out of
their metrics and count them (:class:`audit.probe.Exclusions`, reason ``non_finite``).
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from audit import scoring
from audit.exclusions import NON_FINITE

if TYPE_CHECKING:
    import pandas as pd

    from audit.models import ModelHandle

logger = logging.getLogger(__name__)

#: the column of a generating probe's scored items through which ``score_items`` hands
#: :attr:`Generations.non_finite` to :func:`split_non_finite` (never left in a result)
NON_FINITE_COLUMN = "_non_finite_logits"
#: how ``info["excluded"]`` explains such an item
NON_FINITE_DETAIL = "the model's logits were NaN/inf while generating the continuation (generation stopped there)"
#: the probe options (:class:`audit.options.GenerationOptions`, :class:`audit.options.SamplingOptions`)
#: that are generation settings, under the same names
SETTING_OPTIONS = ("max_new_tokens", "do_sample", "temperature", "top_p", "batch_size")


class GenerationError(ValueError):
    """Generation asked of a model or with settings that cannot do it."""


@dataclass(frozen=True)
class GenerationSettings:
    """Everything that determines a continuation; stored with the results."""

    max_new_tokens: int = 32
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0
    batch_size: int = 8
    padding: str = "left"
    prompt_prefix_token: str = "BOS, else EOS"
    sampler: str = "per-prompt torch.Generator seeded from sha256(seed, occurrence, prompt)"

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if not self.do_sample:
            d["sampler"] = "greedy (argmax)"
        return d

    def validate(self) -> None:
        if self.max_new_tokens < 1:
            raise GenerationError(f"max_new_tokens must be ≥ 1, got {self.max_new_tokens}")
        if self.batch_size < 1:
            raise GenerationError(f"batch_size must be ≥ 1, got {self.batch_size}")
        if self.do_sample and not self.temperature > 0:
            raise GenerationError(f"temperature must be > 0 when sampling, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise GenerationError(f"top_p must be in (0, 1], got {self.top_p}")


def settings_of(opts: Mapping[str, Any], **fixed: Any) -> dict[str, Any]:
    """The keyword arguments of :func:`generate` (and :class:`GenerationSettings`) that a probe's
    options give, ``fixed`` (the seed, a probe's fixed ``do_sample``) on top."""
    return {**{k: opts[k] for k in SETTING_OPTIONS if k in opts}, **fixed}


class Generations(list):  # type: ignore[type-arg]
    """The generated continuations (a ``list[str]`` in prompt order) and the settings used.

    ``non_finite`` is a numpy bool array, one entry per prompt in prompt order: True when the
    model's logits were non-finite (NaN, +inf, or all -inf) at some step before the prompt's
    continuation ended. Such a continuation stops at that step (its text holds the tokens generated
    before it) and must not be scored as if it were the model's answer.
    """

    def __init__(self, texts: Sequence[str], settings: GenerationSettings, model: str, non_finite: np.ndarray) -> None:
        super().__init__(texts)
        self.settings = settings
        self.model = model
        self.non_finite = non_finite


def prompt_seed(seed: int, prompt: str, occurrence: int = 0) -> int:
    """A 63-bit seed for one prompt (``occurrence`` separates repeats of the same prompt)."""
    h = hashlib.sha256(f"{int(seed)}\x00{int(occurrence)}\x00{prompt}".encode()).digest()
    return int.from_bytes(h[:8], "little") & ((1 << 63) - 1)


def top_p_filter(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Keep the smallest set of tokens whose probability reaches ``top_p`` (at least one)."""
    if top_p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
    probs = torch.softmax(sorted_logits, dim=-1)
    cum = probs.cumsum(dim=-1)
    drop = (cum - probs) >= top_p  # tokens whose preceding mass already reaches top_p
    drop[..., 0] = False
    sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
    return torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)


class _NonFiniteGuard:
    """A logits processor (first in the list) that flags the rows whose scores are non-finite at a
    step while the row is still generating, and replaces every such row's scores by a stand-in
    that allows only ``stop_id`` (0, all other tokens -inf), so that greedy decoding and the
    per-row sampler see a valid distribution and the row ends. Finite rows are returned as they
    came (the same tensor when no row is faulty)."""

    def __init__(self, n_rows: int, prompt_width: int, stop_id: int, eos_id: int | None) -> None:
        self.prompt_width = prompt_width
        self.stop_id = stop_id
        self.eos_id = eos_id
        self.flags = torch.zeros(n_rows, dtype=torch.bool)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        bad = torch.isnan(scores).any(-1) | torch.isposinf(scores).any(-1) | ~torch.isfinite(scores).any(-1)
        if not bool(bad.any()):
            return scores
        live = bad
        if self.eos_id is not None:  # a row that already emitted EOS is finished: its text is fixed
            live = bad & ~(input_ids[:, self.prompt_width:] == self.eos_id).any(-1)
        self.flags |= live.cpu()
        out = scores.clone()
        out[bad] = float("-inf")
        out[bad, self.stop_id] = 0.0
        return out


class _PerRowSampler:
    """A logits processor that samples each row from its own generator and returns a one-hot
    score row, so that ``generate``'s greedy step picks exactly the sampled token."""

    def __init__(self, generators: list[torch.Generator], temperature: float, top_p: float) -> None:
        self.generators = generators
        self.temperature = temperature
        self.top_p = top_p

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        logits = top_p_filter(scores.float() / self.temperature, self.top_p)
        probs = torch.softmax(logits, dim=-1)
        out = torch.full_like(scores, float("-inf"))
        for i, g in enumerate(self.generators):
            tok = torch.multinomial(probs[i], 1, generator=g)
            out[i, tok] = 0.0
        return out


def generate(
    handle: ModelHandle,
    prompts: Sequence[str],
    *,
    max_new_tokens: int = 32,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_p: float = 1.0,
    seed: int = 0,
    batch_size: int = 8,
    progress: bool = False,
) -> Generations:
    """Continue each prompt; returns the new text only (special tokens dropped), in prompt order.

    Batches of ``batch_size`` length-sorted prompts, left-padded; on CUDA out-of-memory a batch
    is halved and retried. ``do_sample=False`` is greedy decoding (``temperature``/``top_p``
    ignored); ``do_sample=True`` samples with temperature and nucleus filtering from a generator
    per prompt (see the module docstring). The returned list carries ``.settings`` and
    ``.non_finite`` (one bool per prompt: the logits went NaN/inf before its continuation ended).
    """
    settings = GenerationSettings(
        max_new_tokens=int(max_new_tokens), do_sample=bool(do_sample), temperature=float(temperature),
        top_p=float(top_p), seed=int(seed), batch_size=int(batch_size),
    )
    seen: Counter[str] = Counter()
    row_seeds = []
    for p in prompts:
        row_seeds.append(prompt_seed(settings.seed, p, seen[p]))
        seen[p] += 1
    seqs = scoring.causal_tokenize(handle, prompts) if prompts else []
    new, non_finite = generate_ids(handle, seqs, settings, row_seeds, progress=progress)
    out = handle.tokenizer.batch_decode(new, skip_special_tokens=True) if new else []
    if non_finite.any():
        first = ", ".join(str(i) for i in np.flatnonzero(non_finite)[:10])
        logger.warning("generate: the logits of %s were NaN/inf while generating %d of %d prompt(s) (first: %s); "
                       "those continuations stop there", handle.name, int(non_finite.sum()), len(prompts), first)
    return Generations(out, settings, handle.name, non_finite)


def generate_ids(
    handle: ModelHandle,
    seqs: Sequence[Sequence[int]],
    settings: GenerationSettings,
    row_seeds: Sequence[int] | None = None,
    *,
    progress: bool = False,
) -> tuple[list[list[int]], np.ndarray]:
    """The token-level core of :func:`generate`: continue each token sequence (prefix token
    included, as :func:`audit.scoring.causal_tokenize` gives it) and return each row's new token
    ids (``max_new_tokens`` of them; after EOS the pad id fills the row) and the non-finite flags.
    ``row_seeds`` (one per row) are needed when ``settings.do_sample``. Probes that compare tokens,
    not text (verbatim memorization), call it directly."""
    settings.validate()
    if handle.kind != "causal-lm":
        raise GenerationError(f"generation needs a causal LM; {handle.name} is a {handle.kind} model")
    if settings.do_sample and (row_seeds is None or len(row_seeds) != len(seqs)):
        raise GenerationError("sampling needs one seed per row (row_seeds)")
    from transformers import GenerationConfig, LogitsProcessorList

    n = len(seqs)
    if n == 0:
        return [], np.zeros(0, dtype=bool)
    tok = handle.tokenizer
    lengths = [len(s) for s in seqs]
    longest = int(np.argmax(lengths))
    scoring.check_length(handle, lengths[longest] + settings.max_new_tokens,
                         f"prompt {longest} plus {settings.max_new_tokens} new tokens")
    if min(lengths) == 0:
        raise GenerationError(f"prompt {lengths.index(0)} is empty and the tokenizer has no BOS/EOS token")
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    eos_id = tok.eos_token_id
    gen_config = GenerationConfig(
        max_new_tokens=settings.max_new_tokens, do_sample=False, num_beams=1,
        pad_token_id=pad_id, eos_token_id=eos_id, bos_token_id=tok.bos_token_id,
    )
    out: list[list[int]] = [[] for _ in range(n)]
    non_finite = np.zeros(n, dtype=bool)
    stop_id = eos_id if eos_id is not None else pad_id if pad_id is not None else 0
    model = handle.model
    # batches of batch_size rows, longest prompts first (run_batches halves them on OOM)
    order = np.argsort(-np.asarray(lengths), kind="stable")
    batches = [order[i : i + settings.batch_size] for i in range(0, n, settings.batch_size)]

    def step(idx: np.ndarray) -> None:
        width = max(lengths[i] for i in idx)
        ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
        att = torch.zeros((len(idx), width), dtype=torch.long)
        for r, i in enumerate(idx):
            ids[r, width - lengths[i]:] = torch.as_tensor(seqs[i], dtype=torch.long)
            att[r, width - lengths[i]:] = 1
        guard = _NonFiniteGuard(len(idx), width, stop_id, eos_id)
        processors = LogitsProcessorList([guard])
        if settings.do_sample:
            assert row_seeds is not None
            gens = [torch.Generator(device=handle.device).manual_seed(row_seeds[i]) for i in idx]
            processors.append(_PerRowSampler(gens, settings.temperature, settings.top_p))
        with torch.inference_mode():
            res = model.generate(
                input_ids=ids.to(handle.device), attention_mask=att.to(handle.device),
                generation_config=gen_config, logits_processor=processors,
            )
        new = res[:, width:].cpu().tolist()
        for r, i in enumerate(idx):
            out[i] = new[r]
        non_finite[idx] = guard.flags.numpy()

    scoring.run_batches(batches, step, desc="generate", progress=progress, total=n)
    return out, non_finite


def split_non_finite(out: pd.DataFrame, labels: Sequence[str]) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """For a generating :class:`~audit.probe.ItemProbe`'s scored chunk whose
    :data:`NON_FINITE_COLUMN` holds :attr:`Generations.non_finite`: the rows generated from finite
    logits (the column dropped) and one exclusion row ``{item, reason: "non_finite", detail}`` per
    other row (``labels`` name the rows of ``out``), for :class:`audit.probe.Exclusions`."""
    if NON_FINITE_COLUMN not in out.columns:
        return out, []
    bad = out[NON_FINITE_COLUMN].to_numpy(dtype=bool)
    rows = [{"item": str(lab), "reason": NON_FINITE, "detail": NON_FINITE_DETAIL}
            for lab in np.asarray(labels, dtype=object)[bad]]
    kept = out.loc[~bad].drop(columns=NON_FINITE_COLUMN)
    return (kept.reset_index(drop=True) if bad.any() else kept), rows
