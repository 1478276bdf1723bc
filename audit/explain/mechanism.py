"""Where a preference lives in the network: logit lens, activation patching, mediation, ablation.

All methods measure one **contrast**: the log-odds ``log p(a) − log p(b)`` of two single-token
words at the prediction position (the next token after a causal prompt; the ``[MASK]`` of a
masked-LM prompt). It equals the logit difference ``logit(a) − logit(b)``, the metric Heimersheim
& Nanda (2024, "How to use and interpret activation patching") recommend, and it is ``log y`` for
Vig et al.'s (2020) ``y = p(anti-stereotypical) / p(stereotypical)``.

* :func:`logit_lens` — nostalgebraist (2020): each layer's residual at the prediction position
  through the model's own head (final norm + unembedding; MLM head for masked LMs).
* :func:`activation_patching` — causal tracing (Meng et al. 2022, "Locating and Editing Factual
  Associations in GPT"): activations of one input are written into the run of another, per
  (layer, position) or per head; ``denoising`` patches clean into corrupted and reports the share
  of the clean–corrupted gap restored, ``noising`` patches corrupted into clean and reports the
  share destroyed (both as Heimersheim & Nanda define them).
* :func:`patched_log_odds` — the engine: every patched run is one row of a batch, batched under
  the token budget (:func:`audit.scoring.default_batch_tokens`), the source activations cached
  once per item.
* :func:`mean_head_outputs` / :func:`ablate_heads` — mean-ablation of heads (the activation
  replaced by its mean over a text set), used by the mediation probe's ablation check.

Prompts of a patched pair must have the same number of tokens (positions are patched one to one);
a pair that does not raises :class:`~audit.explain.errors.TargetError` naming it.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
import torch
from pydantic import Field
from tqdm.auto import tqdm

from audit.explain.arch import blocks, n_heads
from audit.explain.base import ExplainOptions, register_explainer
from audit.explain.errors import TargetError
from audit.explain.intervene import Site, final_hidden, head_logits, intervene, mech_spec, readout
from audit.explain.targets import prepare as prepare_inputs
from audit.scoring import (
    causal_tokenize,
    check_length,
    default_batch_tokens,
    length_sorted_batches,
    pad_tensors,
    pad_token_id,
)

if TYPE_CHECKING:
    from audit.explain.targets import Prepared
    from audit.models import ModelHandle

MASK = "[MASK]"
#: source activations cached at once (bytes); items are processed in groups that fit
CACHE_BYTES = 256 * 2**20
MODES = ("denoising", "noising")


# --------------------------------------------------------------------------------------------
# prompts and contrast words
# --------------------------------------------------------------------------------------------


def encode_prompts(handle: ModelHandle, texts: Sequence[str]) -> tuple[list[list[int]], list[int]]:
    """Token ids and the prediction position of each prompt.

    Causal LMs: BOS (else EOS) + the prompt's tokens (:func:`audit.scoring.causal_tokenize`); the
    prediction is the next token, read at the last position. Masked LMs: the prompt must contain
    ``[MASK]`` (or the tokenizer's own mask token) exactly once; the prediction is read there."""
    mech_spec(handle)
    if handle.kind == "causal-lm":
        ids = causal_tokenize(handle, list(texts))
        for t, s in zip(texts, ids, strict=True):
            if len(s) < 1:
                raise TargetError(f"empty prompt {t!r}")
            check_length(handle, len(s), f"prompt {t!r}")
        return ids, [len(s) - 1 for s in ids]
    tok = handle.tokenizer
    if tok.mask_token_id is None:
        raise TargetError(f"{handle.name} has no mask token; a masked-LM contrast is read at the mask")
    seqs, pos = [], []
    for t in texts:
        s = tok(t.replace(MASK, tok.mask_token), add_special_tokens=True)["input_ids"]
        where = [i for i, x in enumerate(s) if x == tok.mask_token_id]
        if len(where) != 1:
            raise TargetError(f"prompt {t!r} must contain {MASK} exactly once for a masked LM (found {len(where)})")
        check_length(handle, len(s), f"prompt {t!r}")
        seqs.append(list(s))
        pos.append(where[0])
    return seqs, pos


def token_id(handle: ModelHandle, word: str) -> int:
    """The single token id of ``word`` as it follows a space (``" she"``): a contrast word must be
    one token, or its log-odds would need a multi-token continuation."""
    w = word if word.startswith(" ") else " " + word
    ids = handle.tokenizer(w, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        pieces = handle.tokenizer.convert_ids_to_tokens(ids)
        raise TargetError(f"contrast word {word!r} is {len(ids)} tokens for {handle.name} ({pieces}); "
                          "use words that are one token")
    if ids[0] == handle.tokenizer.unk_token_id:
        raise TargetError(f"contrast word {word!r} is not in {handle.name}'s vocabulary (it maps to the unknown token)")
    return int(ids[0])


def _ids(handle: ModelHandle, words: str | Sequence[str], n: int, what: str) -> np.ndarray:
    if isinstance(words, str):
        return np.full(n, token_id(handle, words), dtype=np.int64)
    if len(words) != n:
        raise TargetError(f"{what}: {len(words)} words for {n} prompts")
    return np.asarray([token_id(handle, w) for w in words], dtype=np.int64)


def _pad_batch(handle: ModelHandle, seqs: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    return pad_tensors(seqs, pad_token_id(handle), handle.device)


def _batches(handle: ModelHandle, lengths: Sequence[int], max_batch_tokens: int | None) -> list[np.ndarray]:
    """Length-sorted batches of at most ``max_batch_tokens`` padded tokens (None: by device)."""
    budget = int(max_batch_tokens or default_batch_tokens(handle))
    return [np.asarray(b) for b in length_sorted_batches([int(x) for x in lengths], budget)]


def _contrast(handle: ModelHandle, hidden: torch.Tensor, pos: Sequence[int], a: np.ndarray, b: np.ndarray,
              head: Any = None) -> np.ndarray:
    """log p(a) − log p(b) at ``pos`` of each row of ``hidden`` (logit difference)."""
    rows = torch.arange(hidden.shape[0], device=hidden.device)
    sel = hidden[rows, torch.as_tensor(list(pos), device=hidden.device)]
    logits = (head(sel) if head is not None else head_logits(handle, sel)).float()
    ta, tb = torch.as_tensor(a, device=logits.device), torch.as_tensor(b, device=logits.device)
    return (logits[rows, ta] - logits[rows, tb]).detach().cpu().numpy().astype(np.float64)


# --------------------------------------------------------------------------------------------
# logit lens
# --------------------------------------------------------------------------------------------


@dataclass
class LogitLens:
    """Per-layer log-odds of a contrast (nostalgebraist 2020, "interpreting GPT: the logit lens")."""

    texts: list[str]
    a: list[str]
    b: list[str]
    layer_log_odds: np.ndarray  # (n_texts, n_layers): the residual after each layer through the head
    output_log_odds: np.ndarray  # (n_texts,): the model's own output

    def to_frame(self) -> pd.DataFrame:
        n, L = self.layer_log_odds.shape
        return pd.DataFrame({
            "example_id": np.repeat(np.arange(n), L), "text": np.repeat(self.texts, L),
            "a": np.repeat(self.a, L), "b": np.repeat(self.b, L), "layer": np.tile(np.arange(L), n),
            "log_odds": self.layer_log_odds.ravel(), "output_log_odds": np.repeat(self.output_log_odds, L),
        })


def logit_lens(
    handle: ModelHandle, texts: Sequence[str], a: str | Sequence[str], b: str | Sequence[str], *,
    max_batch_tokens: int | None = None,
) -> LogitLens:
    """For each prompt and layer ℓ: ``log p(a) − log p(b)`` when the residual after block ℓ at the
    prediction position goes through the model's head (final norm + unembedding for causal LMs; the
    MLM head at the mask for masked LMs). The last layer equals the model's output by construction
    of the head; the layer where the log-odds move is where the preference appears."""
    seqs, pos = encode_prompts(handle, texts)
    ta, tb = _ids(handle, a, len(seqs), "a"), _ids(handle, b, len(seqs), "b")
    out, final = _lens(handle, seqs, pos, ta, tb, max_batch_tokens)
    words = lambda w: [w] * len(seqs) if isinstance(w, str) else list(w)  # noqa: E731
    return LogitLens(list(texts), words(a), words(b), out, final)


def _lens(handle: ModelHandle, seqs: Sequence[Sequence[int]], pos: Sequence[int], ta: np.ndarray, tb: np.ndarray,
          max_batch_tokens: int | None) -> tuple[np.ndarray, np.ndarray]:
    """The logit lens of token ids: the contrast per (prompt, layer) and in the model's output."""
    L = len(blocks(handle))
    lens_head = readout(handle)
    out = np.zeros((len(seqs), L))
    final = np.zeros(len(seqs))
    with torch.inference_mode():
        for idx in _batches(handle, [len(s) for s in seqs], max_batch_tokens):
            ids, mask = _pad_batch(handle, [seqs[i] for i in idx])
            p = [pos[i] for i in idx]
            with intervene(handle, read=[("resid", lay) for lay in range(L)]) as acts:
                hidden = final_hidden(handle, ids, mask)
            final[idx] = _contrast(handle, hidden, p, ta[idx], tb[idx])
            for lay in range(L):
                out[idx, lay] = _contrast(handle, acts[("resid", lay)], p, ta[idx], tb[idx], head=lens_head)
    return out, final


# --------------------------------------------------------------------------------------------
# the patching engine
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Patch:
    """One intervention: the activation of ``(kind, layer)`` in the base run is replaced by the
    source run's, at ``position`` (``None``: every position) and for ``head`` (kind ``"heads"``
    only; ``None``: every head)."""

    kind: str
    layer: int
    head: int | None = None
    position: int | None = None

    @property
    def site(self) -> Site:
        return (self.kind, self.layer)


@dataclass
class PatchRun:
    """:func:`patched_log_odds`' output: the contrast in each patched run and in both clean runs."""

    patched: np.ndarray  # (n_items, n_patches)
    base: np.ndarray  # (n_items,): the base run, unpatched
    source: np.ndarray  # (n_items,): the source run
    n_forwards: int = 0  # patched rows run (one row = one forward of one sequence)
    n_tokens: int = 0  # tokens in those rows (padding excluded)
    seconds: float = 0.0


def _check_pairs(base: Sequence[Sequence[int]], source: Sequence[Sequence[int]], labels: Sequence[str]) -> None:
    if len(base) != len(source):
        raise TargetError(f"{len(base)} base prompts but {len(source)} source prompts")
    for i, (x, y) in enumerate(zip(base, source, strict=True)):
        if len(x) != len(y):
            raise TargetError(f"pair {labels[i] if labels else i}: {len(x)} vs {len(y)} tokens; patched prompts must "
                              "have the same number of tokens (positions are patched one to one)")


def _check_patches(handle: ModelHandle, patches: Sequence[Patch], min_len: int) -> None:
    """Heads and positions in range (kinds and layers: :func:`~audit.explain.intervene.intervene`)."""
    H = n_heads(handle)
    for p in patches:
        if p.head is not None and (p.kind != "heads" or not 0 <= p.head < H):
            raise ValueError(f"patch head {p.head}: heads are 0..{H - 1} and only for kind 'heads'")
        if p.position is not None and not 0 <= p.position < min_len:
            raise ValueError(f"patch position {p.position} out of range for a {min_len}-token prompt")


def patched_log_odds(
    handle: ModelHandle,
    base: Sequence[Sequence[int]],
    source: Sequence[Sequence[int]],
    pred_pos: Sequence[int],
    a: np.ndarray,
    b: np.ndarray,
    patches: Sequence[Patch],
    *,
    max_batch_tokens: int | None = None,
    progress: bool = False,
    labels: Sequence[str] = (),
) -> PatchRun:
    """Contrast log-odds of every (item, patch): the base prompt run with one patch of the source
    prompt's activation. Each patched run is one batch row; rows are batched under the token
    budget; source activations are read once per item (items in groups whose cache fits
    :data:`CACHE_BYTES`)."""
    _check_pairs(base, source, labels)
    n, P = len(base), len(patches)
    _check_patches(handle, patches, min((len(s) for s in base), default=0))
    sites = sorted({p.site for p in patches})
    a, b = np.asarray(a), np.asarray(b)
    out = np.full((n, P), np.nan)
    clean = {"base": np.zeros(n), "source": np.zeros(n)}
    lengths = np.asarray([len(s) for s in base])
    d = int(handle.model.config.hidden_size) if hasattr(handle.model.config, "hidden_size") else 1024
    per_item = max(1, int(lengths.max(initial=1)) * d * 4 * max(1, len(sites)) * 2)
    group = max(1, CACHE_BYTES // per_item)
    n_rows = n_tok = 0
    t0 = time.perf_counter()
    bar = tqdm(total=n * P, desc="patched runs", disable=not progress, unit="run")
    with torch.inference_mode():
        for g0 in range(0, n, group):
            items = np.arange(g0, min(n, g0 + group))
            cache: dict[int, dict[Site, torch.Tensor]] = {}
            for which, seqs in (("source", source), ("base", base)):
                for idx in _batches(handle, [len(seqs[int(i)]) for i in items], max_batch_tokens):
                    rows = items[idx]
                    ids, mask = _pad_batch(handle, [seqs[int(i)] for i in rows])
                    with intervene(handle, read=sites if which == "source" else ()) as acts:
                        hidden = final_hidden(handle, ids, mask)
                    clean[which][rows] = _contrast(handle, hidden, [pred_pos[i] for i in rows], a[rows], b[rows])
                    if which == "source":
                        for r, i in enumerate(rows):
                            cache[int(i)] = {s: acts[s][r, : len(seqs[i])].clone() for s in sites}
            jobs = [(int(i), j) for i in items for j in range(P)]
            for idx in _batches(handle, [len(base[i]) for i, _ in jobs], max_batch_tokens):
                batch = [jobs[k] for k in idx]
                ids, mask = _pad_batch(handle, [base[i] for i, _ in batch])
                by_site: dict[Site, list[tuple[int, int, Patch]]] = {}
                for r, (i, j) in enumerate(batch):
                    by_site.setdefault(patches[j].site, []).append((r, i, patches[j]))
                write = {s: _writer(rows_, cache, s) for s, rows_ in by_site.items()}
                with intervene(handle, write=write):
                    hidden = final_hidden(handle, ids, mask)
                vals = _contrast(handle, hidden, [pred_pos[i] for i, _ in batch],
                                 a[[i for i, _ in batch]], b[[i for i, _ in batch]])
                for (i, j), v in zip(batch, vals, strict=True):
                    out[i, j] = v
                n_rows += len(batch)
                n_tok += sum(len(base[i]) for i, _ in batch)
                bar.update(len(batch))
    bar.close()
    return PatchRun(out, clean["base"], clean["source"], n_rows, n_tok, time.perf_counter() - t0)


def _writer(rows: list[tuple[int, int, Patch]], cache: dict[int, dict[Site, torch.Tensor]], site: Site):  # type: ignore[no-untyped-def]
    """The write of one site for a batch: each row gets its own patch from its item's source."""

    def edit(x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        for r, i, p in rows:
            src = cache[i][site]
            t = slice(0, src.shape[0]) if p.position is None else slice(p.position, p.position + 1)
            if p.head is None:
                x[r, t] = src[t]
            else:
                x[r, t, p.head] = src[t, p.head]
        return x

    return edit


# --------------------------------------------------------------------------------------------
# activation patching (causal tracing)
# --------------------------------------------------------------------------------------------


@dataclass
class Patching:
    """Activation-patching results in long form: one row per (example, patch)."""

    mode: str
    frame: pd.DataFrame
    clean_log_odds: np.ndarray
    corrupt_log_odds: np.ndarray
    run: PatchRun = field(repr=False)

    def mean_effect(self, by: Sequence[str] = ("kind", "layer", "position", "head")) -> pd.DataFrame:
        """Mean normalised effect over examples, per patch."""
        keys = [k for k in by if k in self.frame]
        return self.frame.groupby(keys, dropna=False)["effect"].mean().reset_index()


def activation_patching(
    handle: ModelHandle,
    clean: Sequence[str],
    corrupt: Sequence[str],
    a: str | Sequence[str],
    b: str | Sequence[str],
    *,
    mode: str = "denoising",
    per: str = "position",
    kinds: Sequence[str] = ("resid",),
    layers: Sequence[int] | None = None,
    max_batch_tokens: int | None = None,
    progress: bool = False,
) -> Patching:
    """Causal tracing with the logit-difference metric m = log p(a) − log p(b).

    ``mode="denoising"``: the corrupted run gets one clean activation; ``effect`` = (m_patched −
    m_corrupt) / (m_clean − m_corrupt), the share of the gap restored (1: fully). ``"noising"``:
    the clean run gets one corrupted activation; ``effect`` = (m_clean − m_patched) / (m_clean −
    m_corrupt), the share destroyed. ``per="position"`` patches each ``kinds`` site
    (resid / attn / mlp) at each (layer, position); ``per="head"`` patches each head's output at
    every position. Heimersheim & Nanda (2024): denoising finds what is *sufficient* to restore
    the behaviour, noising what is *necessary*; the two differ when components act together."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if per not in ("position", "head"):
        raise ValueError(f"per must be 'position' or 'head', got {per!r}")
    cs, pos = encode_prompts(handle, clean)
    xs, pos_x = encode_prompts(handle, corrupt)
    labels = [f"{c!r} / {x!r}" for c, x in zip(clean, corrupt, strict=True)]
    _check_pairs(cs, xs, labels)
    if pos != pos_x:
        raise TargetError("clean and corrupted prompts must have their prediction at the same position")
    ta, tb = _ids(handle, a, len(cs), "a"), _ids(handle, b, len(cs), "b")
    L, H = len(blocks(handle)), n_heads(handle)
    lays = list(range(L)) if layers is None else [int(x) for x in layers]
    T = min(len(s) for s in cs)
    if per == "head":
        patches = [Patch("heads", lay, head=h) for lay in lays for h in range(H)]
    else:
        for k in kinds:
            if k not in ("resid", "attn", "mlp"):
                raise ValueError(f"kinds: {k!r}; per-position patching takes resid, attn and mlp")
        patches = [Patch(k, lay, position=t) for k in kinds for lay in lays for t in range(T)]
    base, source = (xs, cs) if mode == "denoising" else (cs, xs)
    run = patched_log_odds(handle, base, source, pos, ta, tb, patches, max_batch_tokens=max_batch_tokens,
                           progress=progress, labels=labels)
    m_clean, m_corrupt = (run.source, run.base) if mode == "denoising" else (run.base, run.source)
    gap = m_clean - m_corrupt
    with np.errstate(divide="ignore", invalid="ignore"):
        eff = ((run.patched - m_corrupt[:, None]) if mode == "denoising" else (m_clean[:, None] - run.patched))
        eff = np.where(np.abs(gap)[:, None] > 1e-9, eff / gap[:, None], np.nan)
    n = len(cs)
    frame = pd.DataFrame({
        "example_id": np.repeat(np.arange(n), len(patches)),
        "clean": np.repeat(list(clean), len(patches)), "corrupt": np.repeat(list(corrupt), len(patches)),
        "kind": np.tile([p.kind for p in patches], n), "layer": np.tile([p.layer for p in patches], n),
        "position": np.tile([-1 if p.position is None else p.position for p in patches], n),
        "head": np.tile([-1 if p.head is None else p.head for p in patches], n),
        "log_odds": run.patched.ravel(), "effect": eff.ravel(),
    })
    return Patching(mode, frame, m_clean, m_corrupt, run)


# --------------------------------------------------------------------------------------------
# mean-ablation of heads
# --------------------------------------------------------------------------------------------


def mean_head_outputs(
    handle: ModelHandle, texts: Sequence[str], heads: Sequence[tuple[int, int]], *, max_batch_tokens: int | None = None
) -> dict[tuple[int, int], torch.Tensor]:
    """Each head's output averaged over every token of ``texts`` (as the model sees them: BOS
    prepended for causal LMs, special tokens for masked LMs), padding excluded."""
    if handle.kind == "causal-lm":
        seqs = causal_tokenize(handle, list(texts))
    else:
        seqs = handle.tokenizer(list(texts), add_special_tokens=True)["input_ids"]
    layers = sorted({lay for lay, _ in heads})
    sums: dict[int, torch.Tensor] = {}
    count = 0
    with torch.inference_mode():
        for idx in _batches(handle, [len(s) for s in seqs], max_batch_tokens):
            ids, mask = _pad_batch(handle, [seqs[i] for i in idx])
            with intervene(handle, read=[("heads", lay) for lay in layers]) as acts:
                final_hidden(handle, ids, mask)
            m = mask.bool()
            for lay in layers:
                s = acts[("heads", lay)][m].float().sum(0)
                sums[lay] = sums[lay] + s if lay in sums else s
            count += int(m.sum())
    if count == 0:
        raise ValueError("mean_head_outputs: no tokens in texts")
    return {(lay, h): (sums[lay][h] / count) for lay, h in heads}


@contextmanager
def ablate_heads(handle: ModelHandle, means: dict[tuple[int, int], torch.Tensor]) -> Iterator[None]:
    """Inside the block every head ``(layer, head)`` of ``means`` outputs its mean at every token
    (mean-ablation). A diagnostic of what the heads carry, not a debiasing method."""
    by_layer: dict[int, list[tuple[int, torch.Tensor]]] = {}
    for (lay, h), v in means.items():
        by_layer.setdefault(lay, []).append((h, v))

    def writer(items: list[tuple[int, torch.Tensor]]):  # type: ignore[no-untyped-def]
        def edit(x: torch.Tensor) -> torch.Tensor:
            x = x.clone()
            for h, v in items:
                x[..., h, :] = v.to(dtype=x.dtype, device=x.device)
            return x

        return edit

    with intervene(handle, write={("heads", lay): writer(v) for lay, v in by_layer.items()}):
        yield


# --------------------------------------------------------------------------------------------
# the explainer: per-head patching of one input against its corrupted twin (taudit explain)
# --------------------------------------------------------------------------------------------


def _corrupted_text(text: str, corrupt: Any, index: int) -> str:
    """The corrupted twin of input ``index``: ``corrupt`` is a list of texts (one per input) or a
    ``{word: replacement}`` mapping applied to whole words."""
    if isinstance(corrupt, dict) and corrupt:
        out = text
        for w, r in corrupt.items():
            out = re.sub(rf"\b{re.escape(str(w))}\b", str(r), out)
        if out == text:
            raise TargetError(f"patching: example {index}: no word of corrupt={corrupt} occurs in {text!r}")
        return out
    if isinstance(corrupt, (list, tuple)) and index < len(corrupt) and isinstance(corrupt[index], str):
        return corrupt[index]
    raise TargetError("patching needs option 'corrupt': a list with one corrupted text per input, or a "
                      "{word: replacement} mapping (e.g. {nurse: man})")


class PatchingOptions(ExplainOptions):
    corrupt: list[str] | dict[str, str] | None = Field(default=None, description=(
        "one corrupted text per input, or a {word: replacement} mapping (e.g. {nurse: man}); required"))
    mode: Literal["denoising", "noising"] = "denoising"


@register_explainer("patching", layout="heads", kinds=("masked-lm", "causal-lm"), modes=("mask", "next"),
                    description="Activation patching per head: share of the clean − corrupted logit difference "
                                "restored (denoising) or destroyed (noising) by one head's output",
                    reference="Meng et al. 2022 (causal tracing); Heimersheim & Nanda 2024, How to use and "
                              "interpret activation patching", options=PatchingOptions)
def patching_explainer(handle: ModelHandle, preps: list[Prepared], opts: dict[str, Any], progress: bool
                       ) -> list[dict[str, Any]]:
    """Per-head patching of each input (clean) against its corrupted twin; the metric is the
    target's ``token`` − ``contrast`` logit difference (a contrast is required). The info holds
    both runs' log-odds and the logit lens of the clean input (per layer)."""
    mode = opts["mode"]
    L, H = len(blocks(handle)), n_heads(handle)
    patches = [Patch("heads", lay, head=h) for lay in range(L) for h in range(H)]
    outs = []
    for p in preps:
        pos, tok, con = (int(a.reshape(-1)[0]) for a in p.aux[:3])
        if con < 0:
            raise TargetError("patching measures a logit difference: give the target a 'contrast' token "
                              "(e.g. target: {token: ' he', contrast: ' she'})")
        bad = _corrupted_text(p.text, opts["corrupt"], p.index)
        twin = prepare_inputs(handle, [bad], {"mode": p.info.get("mode", "next")})[0]
        clean_ids, bad_ids = p.ids.tolist(), twin.ids.tolist()
        _check_pairs([clean_ids], [bad_ids], [f"{p.text!r} / {bad!r}"])
        base, source = ([bad_ids], [clean_ids]) if mode == "denoising" else ([clean_ids], [bad_ids])
        a, b = np.array([tok]), np.array([con])
        run = patched_log_odds(handle, base, source, [pos], a, b, patches,
                               max_batch_tokens=opts.get("max_batch_tokens"), progress=progress)
        m_clean, m_bad = (run.source[0], run.base[0]) if mode == "denoising" else (run.base[0], run.source[0])
        gap = m_clean - m_bad
        raw = run.patched[0] - m_bad if mode == "denoising" else m_clean - run.patched[0]
        eff = raw / gap if abs(gap) > 1e-9 else np.full_like(raw, np.nan)
        lens = _lens(handle, [clean_ids], [pos], a, b, opts.get("max_batch_tokens"))[0][0]
        outs.append({"scores": eff.reshape(L, H), "token_scores": None,  # nosec B105 (no password: no per-token scores)
                     "info": {"corrupt": bad, "patching_mode": mode, "clean_log_odds": float(m_clean),
                              "corrupt_log_odds": float(m_bad), "logit_lens": lens.tolist(),
                              "patched_forwards": run.n_forwards}})
    return outs


__all__ = ["LogitLens", "Patch", "PatchRun", "Patching", "ablate_heads", "activation_patching", "encode_prompts",
           "logit_lens", "mean_head_outputs", "patched_log_odds", "patching_explainer", "token_id"]
