"""The probe interface every bias probe implements, and the probe registry.

A probe is a class with a ``name``, the model ``kinds`` it can run on, self-describing
``metrics`` and a ``run`` method. Register it with ``@register_probe("name")``; the runner and
``probes.run_probe`` find it by name.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import pandas as pd
from tqdm.auto import tqdm

from audit.registry import Registry
from audit.results import MetricInfo, ProbeResult

if TYPE_CHECKING:
    from audit.distributed import Dist
    from audit.models import ModelHandle


logger = logging.getLogger(__name__)


class ProbeError(ValueError):
    """Bad input to a probe: the message names the file, row or field."""


class Probe:
    """Base class for bias probes.

    Subclasses set ``name``, ``kinds``, ``metrics`` and implement :meth:`run`. ``run`` returns a
    :class:`~audit.results.ProbeResult` and never prints; long loops show a progress bar when
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

    def check_kind(self, handle: ModelHandle) -> None:
        if handle.kind not in self.kinds:
            raise ProbeError(
                f"probe {self.name!r} cannot run on a {handle.kind} model ({handle.name}); "
                f"it supports: {', '.join(self.kinds)}"
            )

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

    def run(
        self,
        handle: ModelHandle,
        data: str | Path | None = None,
        *,
        seed: int = 0,
        progress: bool = True,
        **options: Any,
    ) -> ProbeResult:
        raise NotImplementedError


def count_rows(path: Path) -> int | None:
    """Rows of a data file by its format: CSV/TSV records after the header (quoted newlines kept
    inside their record, blank lines not counted), JSON Lines non-blank lines (a ``.jsonl`` that
    holds one JSON document, as SEAT's do, counts as JSON), a JSON list's length, Parquet rows,
    non-blank lines of a ``.txt``. ``None`` for a format without rows (a JSON object, other
    suffixes) or a file that cannot be read or parsed — the probe's own loader reports those."""
    import csv
    import json

    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            return int(pq.ParquetFile(path).metadata.num_rows)
        text = path.read_text(encoding="utf-8-sig", errors="replace")
        if suffix in (".csv", ".tsv"):
            records = [r for r in csv.reader(text.splitlines(keepends=True), delimiter="\t" if suffix == ".tsv" else ",")
                       if any(c.strip() for c in r)]
            return max(len(records) - 1, 0)
        lines = sum(1 for line in text.splitlines() if line.strip())
        if suffix in (".jsonl", ".ndjson", ".json"):
            try:
                doc = json.loads(text)
            except ValueError:  # several JSON Lines records (or broken JSON)
                return None if suffix == ".json" else lines
            if isinstance(doc, list):
                return len(doc)
            return 1 if suffix != ".json" and lines == 1 else None  # a one-record JSON Lines file
        if suffix == ".txt":
            return lines
    except (OSError, ValueError, csv.Error):
        return None
    return None


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


class ItemProbe(Probe):
    """A probe whose work is independent per item: load → score (in chunks) → summarise.

    Splitting the work this way gives three things for free: item-level checkpoints (each chunk
    of ``chunk_size`` items is written to ``workdir`` as soon as it is scored, so a crash loses at
    most one chunk), data-parallel sharding (rank r of W scores chunks k with k mod W = r), and
    identical numbers in both modes (the same chunks are batched the same way).

    Subclasses implement :meth:`load_items`, :meth:`score_items` and :meth:`summarise`, and declare
    their options as keyword-only parameters of ``run`` (that signature is what configs are
    validated against).
    """

    chunk_size: ClassVar[int] = 512

    def load_items(self, data: str | Path | None, opts: dict[str, Any]) -> pd.DataFrame:
        raise NotImplementedError

    def score_items(self, handle: ModelHandle, items: pd.DataFrame, opts: dict[str, Any], progress: bool) -> pd.DataFrame:
        raise NotImplementedError

    def summarise(self, items: pd.DataFrame, *, kind: str, seed: int, opts: dict[str, Any]) -> ProbeResult:
        raise NotImplementedError

    def run(self, handle: ModelHandle, data: str | Path | None = None, *, seed: int = 0, progress: bool = True,
            **options: Any) -> ProbeResult:
        result = self.execute(handle, data, seed=seed, progress=progress, opts=options)
        assert result is not None
        return result

    def execute(
        self,
        handle: ModelHandle,
        data: str | Path | None,
        *,
        seed: int = 0,
        progress: bool = True,
        opts: dict[str, Any] | None = None,
        workdir: Path | None = None,
        dist: Dist | None = None,
        chunk_size: int | None = None,
    ) -> ProbeResult | None:
        """Score the items (chunked, checkpointed in ``workdir``, sharded over ``dist``) and
        summarise them. Returns ``None`` on ranks other than 0."""
        opts = dict(opts or {})
        self.check_kind(handle)
        self.check_options(opts)
        items = self.load_items(data, opts)
        if len(items) == 0:
            raise ProbeError(f"{self.name}: no items to score in {data}")
        items = items.reset_index(drop=True)
        rank, world = (dist.rank, dist.world) if dist is not None else (0, 1)
        size = int(chunk_size or self.chunk_size)
        n_chunks = (len(items) + size - 1) // size
        #: what this call found on disk, for the manifest's history (rank 0 sees every rank's chunks)
        self.resumed = {"chunks_total": n_chunks, "chunks_reused": 0}
        if workdir is not None:
            if rank == 0:
                _check_plan(workdir, {"probe": self.name, "n_items": len(items), "chunk_size": size,
                                      "options": {k: opts[k] for k in sorted(opts)}, "model": handle.source,
                                      "seed": seed})
                self.resumed["chunks_reused"] = sum((workdir / f"chunk-{k:05d}.parquet").is_file()
                                                    for k in range(n_chunks))
            if dist is not None:
                dist.barrier()
        mine = [k for k in range(n_chunks) if k % world == rank]
        bar = tqdm(total=len(mine), desc=f"{self.name} chunks", disable=not progress or n_chunks < 2, unit="chunk")
        scored: dict[int, pd.DataFrame] = {}
        error: BaseException | None = None
        try:
            for k in mine:
                path = workdir / f"chunk-{k:05d}.parquet" if workdir is not None else None
                if path is not None and path.is_file():
                    logger.debug("%s: chunk %d of %d reused from %s", self.name, k, n_chunks, workdir)
                    bar.update(1)
                    continue
                part = items.iloc[k * size : (k + 1) * size]
                logger.debug("%s: scoring chunk %d of %d (rank %d)", self.name, k, n_chunks, rank)
                out = self.score_items(handle, part, opts, progress and n_chunks < 2)
                if path is not None:
                    from audit.store import write_parquet

                    write_parquet(path, out)
                    _inject_fault(rank, len([q for q in mine if (workdir / f"chunk-{q:05d}.parquet").is_file()]))
                else:
                    scored[k] = out
                bar.update(1)
        except Exception as exc:  # every rank must learn of it, or the others wait forever
            error = exc
        finally:
            bar.close()
        if dist is not None and dist.any_flag(error is not None) and error is None:
            raise ProbeError(f"{self.name}: another rank failed while scoring; rerun to complete its chunks")
        if error is not None:
            raise error
        if rank != 0:
            return None
        if workdir is not None:
            parts = []
            for k in range(n_chunks):
                p = workdir / f"chunk-{k:05d}.parquet"
                if not p.is_file():
                    raise ProbeError(f"{self.name}: chunk {k} of {n_chunks} is missing from {workdir}; rerun to complete it")
                parts.append(pd.read_parquet(p))
        else:
            parts = [scored[k] for k in range(n_chunks)]
        all_items = pd.concat(parts, ignore_index=True)
        return self.summarise(all_items, kind=handle.kind, seed=seed, opts=opts)

    def check_options(self, opts: dict[str, Any]) -> None:
        import inspect

        allowed = {n for n, p in inspect.signature(type(self).run).parameters.items()
                   if p.kind is inspect.Parameter.KEYWORD_ONLY} - {"seed", "progress"}
        bad = sorted(set(opts) - allowed)
        if bad:
            raise ProbeError(f"{self.name}: unknown option(s) {bad}; allowed: {sorted(allowed)}")


def _check_plan(workdir: Path, plan: dict[str, Any]) -> None:
    """Keep chunks only when they were made by the same plan (items, chunking, options, model)."""
    import json
    import shutil

    workdir.mkdir(parents=True, exist_ok=True)
    f = workdir / "plan.json"
    text = json.dumps(plan, sort_keys=True, default=str)
    if f.is_file():
        if f.read_text() == text:
            return
        # a different plan: old chunks would mix two configurations
        shutil.rmtree(workdir, ignore_errors=True)
        workdir.mkdir(parents=True, exist_ok=True)
    from audit.store import write_text

    write_text(f, text)


def _inject_fault(rank: int, chunks_written: int) -> None:
    """Fault injection for resumability tests: ``TAUDIT_FAIL_RANK=r TAUDIT_FAIL_AFTER_CHUNKS=n``
    makes rank r die (as a killed process would) once it has n chunk files on disk."""
    r, n = os.environ.get("TAUDIT_FAIL_RANK"), os.environ.get("TAUDIT_FAIL_AFTER_CHUNKS")
    if r is not None and n is not None and int(r) == rank and chunks_written >= int(n):
        os._exit(17)
