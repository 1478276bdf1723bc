"""The probe interface every bias probe implements, and the probe registry.

A probe is a class with a ``name``, the model ``kinds`` it can run on, self-describing
``metrics`` and a ``run`` method. Register it with ``@register_probe("name")``; the runner and
``probes.run_probe`` find it by name.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from audit.datafiles import count_rows
from audit.distributed import Dist, RankError
from audit.errors import ProbeError, ProbeOptionsError
from audit.exclusions import EMPTY, NON_FINITE, TOO_LONG, Exclusions
from audit.generation import split_non_finite
from audit.options import ProbeOptions, validate_options
from audit.registry import Registry
from audit.results import MetricInfo, ProbeResult
from audit.scoring import InputTooLongError, prefix_token_id
from audit.store import write_json, write_parquet, write_text

if TYPE_CHECKING:
    from audit.models import ModelHandle


logger = logging.getLogger(__name__)
T = TypeVar("T")


#: at most this many non-finite items per call are scored again alone (more: a broken model)
MAX_RESCORED = 64


def check_tokenizer(handle: ModelHandle, what: str, *, needs_mask: bool = False) -> None:
    """Special tokens scoring relies on.

    * ``needs_mask``: no mask token → :class:`ProbeError` (masked pseudo-log-likelihood cannot be
      computed without one).
    * Causal LMs without BOS use EOS as the empty context (:func:`audit.scoring.prefix_token_id`);
      with neither, the first token of a text cannot be scored and is left out of its score
      (logged once here).
    * No pad token (:func:`audit.models.load_model` already falls back to EOS, else UNK): the
      token with id 0 pads. Padded positions are masked out of attention and never scored, so
      which token pads does not change a number.
    """
    tok = handle.tokenizer
    if needs_mask and tok.mask_token_id is None:
        raise ProbeError(
            f"{what}: the tokenizer of {handle.name} has no mask token, and masked-LM scoring masks each "
            "token in turn; give the tokenizer a mask token or audit the model as another kind"
        )
    if tok.pad_token_id is None:
        token = tok.convert_ids_to_tokens(0)
        logger.warning("%s: the tokenizer of %s has no pad, EOS or UNK token; padding with %r (id 0), which "
                       "attention masks out", what, handle.name, token)
        tok.pad_token = token
    if handle.kind == "causal-lm" and tok.bos_token_id is None and tok.eos_token_id is None:
        logger.warning("%s: the tokenizer of %s has neither BOS nor EOS; the first token of each text has no "
                       "context and is not scored", what, handle.name)


def empty_text_rows(df: pd.DataFrame, columns: Sequence[str]) -> np.ndarray:
    """Rows where any of ``columns`` (present in ``df``) is missing, empty or whitespace only."""
    bad = np.zeros(len(df), dtype=bool)
    for c in columns:
        if c in df.columns:
            bad |= df[c].map(lambda v: not isinstance(v, str) or not v.strip()).to_numpy(dtype=bool)
    return bad


def input_lengths(handle: ModelHandle, texts: Sequence[str], *, causal: bool = False) -> np.ndarray:
    """How many tokens each text occupies as the scoring primitives feed it to the model.

    ``causal=False``: the tokenizer's own special tokens added (masked-LM scoring, classifiers,
    :func:`audit.scoring.embed` / ``hidden_states`` on any model). ``causal=True``: the prefix
    token (BOS, else EOS) plus the text's tokens (:func:`audit.scoring.causal_tokenize`).
    """
    if not texts:
        return np.zeros(0, dtype=np.int64)
    enc = handle.tokenizer(list(texts), add_special_tokens=not causal)["input_ids"]
    extra = int(causal and prefix_token_id(handle) is not None)
    return np.asarray([len(e) + extra for e in enc], dtype=np.int64)


def too_long_rows(
    handle: ModelHandle, columns: Sequence[Sequence[str]], *, causal: bool = False, extra: int = 0,
    scored: np.ndarray | None = None, unit: str = "tokens",
) -> dict[int, str]:
    """``{row: message}`` of the rows whose longest text (over ``columns``, each one text per
    row) plus ``extra`` tokens exceeds the model's maximum; only rows where ``scored`` holds."""
    n = np.max([input_lengths(handle, list(c), causal=causal) for c in columns], axis=0) + int(extra)
    bad = n > handle.max_length
    if scored is not None:
        bad &= np.asarray(scored, dtype=bool)
    return {int(i): f"{n[i]} {unit}; {handle.name} accepts at most {handle.max_length}" for i in np.flatnonzero(bad)}


def score_fitting(score: Callable[[np.ndarray], T], n: int) -> tuple[list[tuple[np.ndarray, T]], dict[int, str]]:
    """Call ``score(indices)`` on all ``n`` items; where the model's length limit refuses a call
    (:class:`audit.scoring.InputTooLongError`, raised before any forward pass), split the indices
    in halves until each item that is too long stands alone, and leave those out.

    ``score`` must treat items independently (an item's result does not depend on which others
    share the call). Returns the scored pieces ``(indices, result)`` in index order and
    ``{index: message}`` of the items refused. One long item among n costs about log₂ n extra
    (refused) calls; the others are still scored in batches.
    """
    pieces: list[tuple[np.ndarray, T]] = []
    refused: dict[int, str] = {}
    stack = [np.arange(n)] if n else []
    while stack:
        idx = stack.pop()
        try:
            pieces.append((idx, score(idx)))
        except InputTooLongError as exc:
            if len(idx) == 1:
                refused[int(idx[0])] = str(exc)
            else:
                h = len(idx) // 2
                stack += [idx[h:], idx[:h]]
    return pieces, refused


def rescore_alone(bad: Sequence[int] | np.ndarray, score_one: Callable[[int], bool]) -> int:
    """Score each non-finite item ``bad`` again on its own (``score_one(i)`` stores the result and
    says whether it came out finite); returns how many did.

    A NaN or inf of one item spreads to the items that share its forward pass when they share a
    row — causal scoring packs several sequences into one row (:mod:`audit.scoring`), and
    attention multiplies the poisoned values by a zero weight (0 · NaN = NaN) — so only an item
    that is non-finite alone is faulty. More than :data:`MAX_RESCORED` non-finite items in one call
    are taken as a broken model and not retried."""
    if not len(bad) or len(bad) > MAX_RESCORED:
        if len(bad):
            logger.warning("%d non-finite items in one call; not rescoring them one by one", len(bad))
        return 0
    return sum(bool(score_one(int(i))) for i in bad)


@dataclass(frozen=True)
class WithoutModel:
    """A probe's model-free mode: it reads a model's logged outputs from ``data`` instead of
    scoring a model (``taudit run`` with ``models: []``, ``run_probe(name, None, data=...)``) —
    the way fairlearn and Aequitas audit a classifier's recorded decisions."""

    #: what ``data`` must hold, as a phrase ("a predictions file with columns …")
    data: str
    #: options that only mean something when a model scores texts (refused without one)
    model_options: tuple[str, ...] = ()

    def problems(self, options: Mapping[str, Any], data: str | Path | None) -> list[tuple[str, str]]:
        """Why ``options``/``data`` cannot run without a model, as ``(field, message)``: no data,
        or an option that needs a model ([] when they can)."""
        found = [] if data is not None else [("data", f"needs data= {self.data} when there is no model")]
        return found + [(k, f"needs a model; without one the probe reads {self.data}")
                        for k in options if k in self.model_options]


class Probe:
    """Base class for bias probes.

    Subclasses set ``name``, ``kinds``, ``metrics``, declare their options as a nested
    ``class Options(ProbeOptions)`` and implement :meth:`score` (:class:`ItemProbe`: load, score
    and summarise). :meth:`run` validates the options, checks the model and returns a
    :class:`~audit.results.ProbeResult`; nothing prints, long loops show a progress bar when
    ``progress`` is true.
    """

    name: ClassVar[str] = ""
    kinds: ClassVar[tuple[str, ...]] = ()
    metrics: ClassVar[dict[str, MetricInfo]] = {}
    #: the metric reports and policies look at first
    primary_metric: ClassVar[str] = ""
    #: whether the model must be loaded with eager attention (attention weights)
    needs_attentions: ClassVar[bool] = False
    #: a one-line description for ``taudit list``
    description: ClassVar[str] = ""
    #: whether scoring a masked LM needs the tokenizer's mask token (pseudo-log-likelihood)
    needs_mask_token: ClassVar[bool] = False
    #: the probe's options (types, defaults, ranges, choices; see :mod:`audit.options`)
    Options: ClassVar[type[ProbeOptions]] = ProbeOptions
    #: the probe's model-free mode (:meth:`run_without_model`); ``None``: it needs a model
    without_model: ClassVar[WithoutModel | None] = None
    #: whether every rank of a distributed run works on the probe (:class:`ItemProbe`: its
    #: chunks are sharded); else rank 0 runs it alone
    sharded: ClassVar[bool] = False

    def check_kind(self, handle: ModelHandle | None) -> None:
        """Refuse a model of the wrong kind, or a tokenizer that lacks a token the probe needs
        (a clear :class:`ProbeError`, not a crash deep in scoring); see :func:`check_tokenizer`."""
        if handle is None:
            raise ProbeError(f"probe {self.name!r} needs a model (handle is None)"
                             + ("; to read logged outputs instead use run_without_model" if self.without_model else ""))
        if handle.kind not in self.kinds:
            raise ProbeError(
                f"probe {self.name!r} cannot run on a {handle.kind} model ({handle.name}); "
                f"it supports: {', '.join(self.kinds)}"
            )
        check_tokenizer(handle, self.name, needs_mask=self.needs_mask_token and handle.kind == "masked-lm")

    def data_files(self, data: str | Path | None, options: dict[str, Any] | None = None) -> list[Path]:
        """Files whose identity (sha256, rows) goes into the manifest: the data and every file an
        option names (a swap list, …) — ``options`` are the probe's options as configured."""
        if data is None:
            return []
        p = Path(data)
        if p.is_dir():
            return sorted(q for q in p.rglob("*") if q.is_file())
        return [p]

    def data_rows(self, path: Path) -> int | None:
        """Rows of one data file for the manifest (the file's own count, before any
        ``max_items``); the default is :func:`count_rows`, probes with a nested JSON format
        override it."""
        return count_rows(path)

    @classmethod
    def parse_options(cls, options: Mapping[str, Any], data: str | Path | None = None) -> ProbeOptions:
        """``options`` (and ``data``) validated by the probe's :attr:`Options` model; a
        :class:`ProbeOptionsError` naming each field that does not fit. Configs are checked
        through this before any model loads (:func:`audit.config.check_names`)."""
        owner = f"probe {cls.name!r}"
        if "data" in options:
            raise ProbeOptionsError(owner, [("", "'data' is set next to 'options', not among them")])
        given = {**options, **({"data": data} if data is not None else {})}
        return validate_options(cls.Options, given, owner, ProbeOptionsError)

    def run(self, handle: ModelHandle | None, data: str | Path | None = None, *, seed: int = 0,
            progress: bool = True, **options: Any) -> ProbeResult:
        """:meth:`execute` in this process (no checkpoints), with ``options`` validated by
        :attr:`Options` before anything else; without a model, see :attr:`without_model`."""
        result = self.execute(handle, data, seed=seed, progress=progress, opts=options)
        assert result is not None
        return result

    def execute(self, handle: ModelHandle | None, data: str | Path | None, *, seed: int = 0, progress: bool = True,
                opts: dict[str, Any] | None = None, workdir: Path | None = None, dist: Dist | None = None,
                chunk_size: int | None = None) -> ProbeResult | None:
        """The one entry point of the runner, on every rank. A probe that is not :attr:`sharded`
        runs as one unit on rank 0 (``workdir`` and ``chunk_size`` are for :class:`ItemProbe`) and
        returns ``None`` on the other ranks; without a model (``handle`` None) a probe with a
        model-free mode reads logged outputs (:meth:`run_without_model`)."""
        if dist is not None and not dist.is_main:
            return None
        if handle is None and self.without_model is not None:
            return self.run_without_model(data, seed=seed, progress=progress, **(opts or {}))
        validated = self.parse_options(opts or {}, data)
        self.check_kind(handle)
        assert handle is not None  # check_kind refuses None
        return self.score(handle, data, validated, seed=seed, progress=progress)

    def score(self, handle: ModelHandle, data: str | Path | None, opts: Any, *, seed: int,
              progress: bool) -> ProbeResult:
        """The probe's work on a checked model, with validated options (an instance of the
        probe's :attr:`Options`)."""
        raise NotImplementedError

    def run_without_model(self, data: str | Path | None, *, seed: int = 0, progress: bool = True,
                          **options: Any) -> ProbeResult:
        """Run on a model's logged outputs in ``data`` (:attr:`without_model`); the options are
        validated by :attr:`Options` and :meth:`WithoutModel.problems` first."""
        if self.without_model is None:
            raise ProbeError(f"probe {self.name!r} needs a model; it has no model-free mode")
        opts = self.parse_options(options, data)
        problems = self.without_model.problems(opts.given(), data)
        if problems:
            raise ProbeOptionsError(f"probe {self.name!r} without a model", problems)
        return self.score_without_model(data, opts, seed=seed, progress=progress)

    def score_without_model(self, data: str | Path | None, opts: Any, *, seed: int, progress: bool) -> ProbeResult:
        """The model-free work on checked ``data`` and validated options (a probe with a
        :attr:`without_model` mode implements it)."""
        raise NotImplementedError


PROBES: Registry[type[Probe]] = Registry("probe", entry_point_group="transformer_audit.probes")


def register_probe(name: str):  # type: ignore[no-untyped-def]
    """Class decorator: ``@register_probe("crows_pairs")``."""

    def deco(cls: type[Probe]) -> type[Probe]:
        cls.name = name
        return PROBES.register(name)(cls)

    return deco


def get_probe(name: str) -> Probe:
    return PROBES.get(name)()


def list_probes() -> list[str]:
    return PROBES.names()


def chunk_bounds(keys: Sequence[str], size: int) -> list[int]:
    """Where the chunks of ``len(keys)`` items start, and ``len(keys)`` last: ``ceil(n / size)``
    chunks, each boundary moved to within ``size // 8`` items of ``k · size`` where neighbouring
    items' keys share the shortest prefix (the nearest such place on ties). Items whose texts share
    a prefix — a BBQ context in its conditions and questions, the sentences of one template — land
    in one chunk, so their prefix is computed once (one prefix tree, :func:`audit.scoring.causal_logprobs`)
    and, under ``torchrun``, on one rank, wherever the data allows."""
    n = len(keys)
    bounds = [0]
    for k in range(1, (n + size - 1) // size):
        at = k * size
        cands = range(max(at - size // 8, bounds[-1] + 1), min(at + size // 8, n - 1) + 1)
        bounds.append(min(cands, key=lambda c: (len(os.path.commonprefix([keys[c - 1], keys[c]])), abs(c - at))))
    return [*bounds, n] if n else [0]


class ItemProbe(Probe):
    """A probe whose work is independent per item: load → score (in chunks) → summarise.

    Splitting the work this way gives three things for free: item-level checkpoints (each chunk
    of about ``chunk_size`` items, cut where neighbours share the least text — :func:`chunk_bounds` —
    is written to ``workdir`` as soon as it is scored, so a crash loses at
    most one chunk), data-parallel sharding (rank r of W scores chunks k with k mod W = r), and
    identical numbers in both modes (the same chunks are batched the same way).

    Subclasses declare ``class Options(ProbeOptions)`` and implement :meth:`load_items`,
    :meth:`score_items` and :meth:`summarise`. Each of them receives ``opts``: a dict of every
    option with its validated value or default (``Options.values()``), plus what :meth:`prepare`
    adds — read ``opts["max_items"]``, never a default of your own.

    Faults of single items never stop the run (:class:`Exclusions`): an item with an empty
    ``text_columns`` entry is left out before scoring; an item the model's length limit refuses
    is isolated by :func:`score_fitting` and left out while the rest of its chunk is scored; an
    item whose ``score_columns`` come out NaN or ±inf is left out before :meth:`summarise`, and so
    is an item whose generated text came from non-finite logits (``score_items`` marks it in
    :data:`audit.generation.NON_FINITE_COLUMN`). All are counted in the result
    (``info["excluded_items"]`` and a warning).

    Optional hooks: :meth:`prepare` (options that depend on the model, checked on every rank
    before any scoring), :meth:`too_long` (items a length check can refuse before scoring),
    :attr:`scored_column` (items kept in the table without a score). Anything that needs every
    item — centring over a group, bootstrap CIs, permutation tests, AUCs — belongs in
    :meth:`summarise`, never in :meth:`score_items`, so the numbers do not depend on the chunking.
    """

    chunk_size: ClassVar[int] = 512
    sharded = True
    #: item columns that must hold a non-empty text (else the item is excluded, reason "empty")
    text_columns: ClassVar[tuple[str, ...]] = ()
    #: scored columns that must be finite (else the item is excluded, reason "non_finite")
    score_columns: ClassVar[tuple[str, ...]] = ()
    #: the column that names an item in ``info["excluded"]`` (default: its position in the data)
    item_id: ClassVar[str] = ""
    #: a bool item column saying which items are scored; the others stay in the table unscored
    #: (e.g. counterfactual texts without an identity term) and are never "non-finite". "" = all
    scored_column: ClassVar[str] = ""
    #: what the exclusion warning calls the items ("12 of 500 texts left out …")
    item_unit: ClassVar[str] = "items"
    #: the run's seed, set by :meth:`execute` before :meth:`load_items` (for loaders that sample
    #: ``max_items`` and for seeded scoring such as generation)
    seed: int = 0

    def finite_columns(self, items: pd.DataFrame) -> list[str]:
        """The columns of a scored items table that must be finite."""
        return [c for c in self.score_columns if c in items.columns]

    def scored_rows(self, items: pd.DataFrame) -> np.ndarray:
        """Which items are scored (see :attr:`scored_column`)."""
        if self.scored_column and self.scored_column in items.columns:
            return items[self.scored_column].to_numpy(dtype=bool)
        return np.ones(len(items), dtype=bool)

    def non_finite_items(self, items: pd.DataFrame) -> np.ndarray:
        """Scored items with a NaN or ±inf in a :meth:`finite_columns` column (a text counts as NaN)."""
        vals = items[self.finite_columns(items)].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
        return ~np.isfinite(vals).all(axis=1) & self.scored_rows(items)

    def prepare(self, handle: ModelHandle, items: pd.DataFrame, opts: dict[str, Any]) -> dict[str, Any]:
        """Resolve what scoring and summarising need beyond the items — options that depend on
        the model (a label mapping, a positive class) — and refuse bad combinations before any
        scoring. Runs on every rank after :meth:`load_items`; returns the options
        :meth:`score_items` and :meth:`summarise` receive (default: ``opts`` unchanged)."""
        return opts

    def too_long(self, handle: ModelHandle, items: pd.DataFrame, opts: dict[str, Any]) -> dict[int, str]:
        """``{position: message}`` of the items of a chunk known to be too long before scoring
        (:func:`too_long_rows`); they are left out without splitting the chunk's batches. Items
        this misses are still isolated by :func:`score_fitting`. Default: none."""
        return {}

    def item_labels(self, items: pd.DataFrame) -> list[str]:
        """How ``info["excluded"]`` names each item."""
        if self.item_id and self.item_id in items.columns:
            return [f"{self.item_id} {v}" for v in items[self.item_id]]
        return [f"item {i}" for i in items.index]

    def chunk_bounds(self, items: pd.DataFrame, size: int) -> list[int]:
        """Where each chunk of ``items`` starts (:func:`chunk_bounds` on the :attr:`text_columns`,
        joined: the text an item's scored sequences start with)."""
        text = items[[c for c in self.text_columns if c in items.columns]].astype(str)
        return chunk_bounds(text.apply("\n".join, axis=1).tolist() if text.shape[1] else [""] * len(items), size)

    def load_items(self, data: str | Path | None, opts: dict[str, Any]) -> pd.DataFrame:
        raise NotImplementedError

    def score_items(self, handle: ModelHandle, items: pd.DataFrame, opts: dict[str, Any], progress: bool) -> pd.DataFrame:
        raise NotImplementedError

    def summarise(self, items: pd.DataFrame, *, kind: str, seed: int, opts: dict[str, Any]) -> ProbeResult:
        raise NotImplementedError

    def execute(self, handle: ModelHandle | None, data: str | Path | None, *, seed: int = 0, progress: bool = True,
                opts: dict[str, Any] | None = None, workdir: Path | None = None, dist: Dist | None = None,
                chunk_size: int | None = None) -> ProbeResult | None:
        """Score the items (chunked, checkpointed in ``workdir``, sharded over ``dist``) and
        summarise them. Returns ``None`` on ranks other than 0. Without a model: as
        :meth:`Probe.execute`."""
        if handle is None and self.without_model is not None:
            return super().execute(handle, data, seed=seed, progress=progress, opts=opts, dist=dist)
        dist = dist or Dist()
        validated = self.parse_options(opts or {}, data)
        self.check_kind(handle)
        assert handle is not None  # check_kind refuses None
        configured, values = validated.given(), validated.values()
        self.seed = seed
        rank, world = dist.rank, dist.world
        size = int(chunk_size or self.chunk_size)
        excluded = Exclusions()

        def plan() -> tuple[pd.DataFrame, int, dict[str, Any], list[int]]:
            items = self.load_items(data, values)
            if len(items) == 0:
                raise ProbeError(f"{self.name}: no items to score in {data}")
            items = items.reset_index(drop=True)
            n_loaded = len(items)
            items = excluded.drop(items, empty_text_rows(items, self.text_columns), self.item_labels(items), EMPTY,
                                  f"empty {' / '.join(self.text_columns)}")
            if len(items) == 0:
                raise ProbeError(f"{self.name}: all {n_loaded} items of {data} have an empty text")
            prepared = self.prepare(handle, items, values)
            bounds = self.chunk_bounds(items, size)
            n_chunks = len(bounds) - 1
            #: what this call found on disk, for the manifest's history (rank 0 sees every rank's chunks)
            self.resumed = {"chunks_total": n_chunks, "chunks_reused": 0}
            if workdir is not None and rank == 0:
                _check_plan(workdir, {"probe": self.name, "n_items": len(items), "chunk_size": size,
                                      "chunk_bounds": "shared prefix",
                                      "options": {k: configured[k] for k in sorted(configured)}, "model": handle.source,
                                      "seed": seed})
                self.resumed["chunks_reused"] = sum((workdir / f"chunk-{k:05d}.parquet").is_file()
                                                    for k in range(n_chunks))
            return items, n_loaded, prepared, bounds

        # every rank loads and plans; none starts scoring before rank 0 has checked the plan on disk
        items, n_loaded, opts, bounds = dist.together(f"{self.name}: loading and planning", plan)
        n_chunks = len(bounds) - 1
        mine = [k for k in range(n_chunks) if k % world == rank]
        scored: dict[int, pd.DataFrame] = {}  # without a workdir: one process, chunks in order

        def score_mine() -> None:
            bar = tqdm(total=len(mine), desc=f"{self.name} chunks", disable=not progress or n_chunks < 2, unit="chunk")
            try:
                for k in mine:
                    path = workdir / f"chunk-{k:05d}.parquet" if workdir is not None else None
                    if path is not None and path.is_file():
                        logger.debug("%s: chunk %d of %d reused from %s", self.name, k, n_chunks, workdir)
                        bar.update(1)
                        continue
                    part = items.iloc[bounds[k] : bounds[k + 1]]
                    logger.debug("%s: scoring chunk %d of %d (rank %d)", self.name, k, n_chunks, rank)
                    out, too_long = self._score_chunk(handle, part, opts, progress and n_chunks < 2)
                    if path is not None:
                        if too_long:  # before the chunk file, which marks the chunk complete
                            write_json(path.with_name(f"excluded-{k:05d}.json"), too_long)
                        write_parquet(path, out)
                        _inject_fault(rank, len([q for q in mine if path.with_name(f"chunk-{q:05d}.parquet").is_file()]))
                    else:
                        scored[k] = out
                        excluded.extend(too_long)
                    bar.update(1)
            finally:
                bar.close()

        try:
            dist.together(f"{self.name}: scoring", score_mine)
        except RankError as exc:
            saved = f"the finished chunks are kept in {workdir}; rerun to complete the rest" if workdir else "nothing was kept"
            ranks = "; ".join(f"rank {r}: {m}" for r, m in sorted(exc.failures.items()))
            raise ProbeError(f"scoring failed on {ranks} ({saved})") from exc
        if rank != 0:
            return None
        if workdir is not None:
            parts = []
            for k in range(n_chunks):
                p = workdir / f"chunk-{k:05d}.parquet"
                if not p.is_file():
                    raise ProbeError(f"{self.name}: chunk {k} of {n_chunks} is missing from {workdir}; rerun to complete it")
                parts.append(pd.read_parquet(p))
                side = workdir / f"excluded-{k:05d}.json"
                if side.is_file():
                    excluded.extend(json.loads(side.read_text(encoding="utf-8")))
        else:
            parts = [scored[k] for k in range(n_chunks)]
        kept = [q for q in parts if len(q)]
        all_items = pd.concat(kept, ignore_index=True) if kept else parts[0].iloc[:0]
        finite = self.finite_columns(all_items)
        all_items = excluded.drop(all_items, self.non_finite_items(all_items), self.item_labels(all_items),
                                  NON_FINITE, f"non-finite {' / '.join(finite)}")
        if len(all_items) == 0 or (len(excluded) and not self.scored_rows(all_items).any()):
            raise ProbeError(f"{self.name}: no item of {data} could be scored — "
                             f"{excluded.describe(n_loaded, self.item_unit)}")
        result = self.summarise(all_items, kind=handle.kind, seed=seed, opts=opts)
        return excluded.report(result, n_total=n_loaded, unit=self.item_unit)

    def _score_chunk(
        self, handle: ModelHandle, part: pd.DataFrame, opts: dict[str, Any], progress: bool
    ) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
        """Score a chunk; the items the model's length limit refuses, and those whose generated
        text came from non-finite logits (:data:`audit.generation.NON_FINITE_COLUMN`), are left
        out and returned."""
        long_ = self.too_long(handle, part, opts)
        fit = np.asarray([i for i in range(len(part)) if i not in long_], dtype=np.int64)
        pieces, refused = score_fitting(lambda idx: self.score_items(handle, part.iloc[fit[idx]], opts, progress),
                                        len(fit))
        too_long = {**long_, **{int(fit[i]): msg for i, msg in refused.items()}}
        outs = [o for _, o in pieces if len(o)]
        out = pd.concat(outs, ignore_index=True) if len(outs) > 1 else outs[0] if outs else part.iloc[:0].copy()
        order = fit[np.concatenate([idx for idx, o in pieces if len(o)])] if outs else np.zeros(0, dtype=np.int64)
        bad = np.flatnonzero(self.non_finite_items(out))
        if len(bad) and len(order) == len(out):

            def one(i: int) -> bool:
                solo = self.score_items(handle, part.iloc[[int(order[i])]], opts, False)
                if len(solo) != 1 or self.non_finite_items(solo).any():
                    return False
                for c in solo.columns:
                    out.at[out.index[i], c] = solo[c].iloc[0]
                return True

            rescore_alone(bad, one)
        # generating probes: items whose continuation came from non-finite logits are left out
        out, generated_bad = split_non_finite(out, self.item_labels(out))
        labels = self.item_labels(part)
        return out, [*({"item": labels[i], "reason": TOO_LONG, "detail": msg} for i, msg in sorted(too_long.items())),
                     *generated_bad]


def _check_plan(workdir: Path, plan: dict[str, Any]) -> None:
    """Keep chunks only when they were made by the same plan (items, chunking, options, model)."""
    workdir.mkdir(parents=True, exist_ok=True)
    f = workdir / "plan.json"
    text = json.dumps(plan, sort_keys=True, default=str)
    if f.is_file():
        if f.read_text() == text:
            return
        # a different plan: old chunks would mix two configurations
        shutil.rmtree(workdir, ignore_errors=True)
        workdir.mkdir(parents=True, exist_ok=True)
    write_text(f, text)


def _inject_fault(rank: int, chunks_written: int) -> None:
    """Fault injection for resumability tests: ``TAUDIT_FAIL_RANK=r TAUDIT_FAIL_AFTER_CHUNKS=n``
    makes rank r die (as a killed process would) once it has n chunk files on disk; with
    ``TAUDIT_FAIL_MODE=raise`` it raises instead (a probe that fails on one rank only)."""
    r, n = os.environ.get("TAUDIT_FAIL_RANK"), os.environ.get("TAUDIT_FAIL_AFTER_CHUNKS")
    if r is not None and n is not None and int(r) == rank and chunks_written >= int(n):
        if os.environ.get("TAUDIT_FAIL_MODE") == "raise":
            raise RuntimeError(f"injected fault on rank {rank} after {chunks_written} chunk(s)")
        os._exit(17)
