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
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from audit import scoring

if TYPE_CHECKING:
    from audit.models import ModelHandle

logger = logging.getLogger(__name__)


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


class Generations(list):  # type: ignore[type-arg]
    """The generated continuations (a ``list[str]`` in prompt order) and the settings used."""

    def __init__(self, texts: Sequence[str], settings: GenerationSettings, model: str = "") -> None:
        super().__init__(texts)
        self.settings = settings
        self.model = model


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
    per prompt (see the module docstring). The returned list carries ``.settings``.
    """
    from transformers import GenerationConfig, LogitsProcessorList

    settings = GenerationSettings(
        max_new_tokens=int(max_new_tokens), do_sample=bool(do_sample), temperature=float(temperature),
        top_p=float(top_p), seed=int(seed), batch_size=int(batch_size),
    )
    settings.validate()
    if handle.kind != "causal-lm":
        raise GenerationError(
            f"generation needs a causal LM; {handle.name} is a {handle.kind} model"
        )
    n = len(prompts)
    if n == 0:
        return Generations([], settings, handle.name)
    tok = handle.tokenizer
    seqs = scoring.causal_tokenize(handle, prompts)
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
    seen: dict[str, int] = {}
    row_seeds = []
    for p in prompts:
        k = seen.get(p, 0)
        seen[p] = k + 1
        row_seeds.append(prompt_seed(settings.seed, p, k))
    out: list[str] = [""] * n
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
        processors = LogitsProcessorList()
        if settings.do_sample:
            gens = [torch.Generator(device=handle.device).manual_seed(row_seeds[i]) for i in idx]
            processors.append(_PerRowSampler(gens, settings.temperature, settings.top_p))
        with torch.inference_mode():
            res = model.generate(
                input_ids=ids.to(handle.device), attention_mask=att.to(handle.device),
                generation_config=gen_config, logits_processor=processors,
            )
        new = res[:, width:].cpu()
        texts = tok.batch_decode(new, skip_special_tokens=True)
        for r, i in enumerate(idx):
            out[i] = texts[r]

    scoring.run_batches(batches, step, desc="generate", progress=progress, total=n)
    return Generations(out, settings, handle.name)
