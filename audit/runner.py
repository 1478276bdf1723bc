"""Run an audit config: models × probes × explainers → one run directory per model.

A run directory is ``<output>/<run-id>`` when the config has one model and a run id was given,
``<output>/<run-id>-<model>`` otherwise. Each probe's results land as soon as it finishes; a
rerun on the same directory skips what is complete (resume after a crash). A failing probe is
recorded with its error and the others still run. At the end the policy (if any) is evaluated
into ``verdict.json`` and post-run hooks (reports) run.

A config with ``models: []`` audits logged predictions without a model: one run directory
(``<output>/<run-id>``, else ``<output>/<time>-predictions``) whose manifest has ``"model": null``;
every probe runs through :meth:`audit.probe.Probe.run_without_model` (the config check refuses a
probe without that mode). It runs in one process: under ``torchrun`` it is refused.

Besides the fields listed in the design (config as run, seed, model and dataset identity,
environment, timings, status, errors) the manifest keeps:

``history``
    one entry per attempt on this run directory, oldest first::

        {"attempt": 2, "status": "running" | "complete" | "failed" | "interrupted",
         "started_at": "…", "finished_at": "…" | null, "argv": [...], "pid": 123, "host": "…",
         "world_size": 1, "error": null | "…",
         "resumed": {"probes_complete": ["cp_a"],       # skipped: already complete on disk
                     "explain_complete": [],
                     "chunks_reused": {"cp_b": {"reused": 3, "of": 20}},  # checkpoints kept
                     "stale_temp_files": 1}}            # .*.tmp a killed write left, removed

    A killed attempt cannot write its end: it stays ``running`` with ``finished_at: null`` until
    the next attempt finds it and marks it ``interrupted`` (``interrupted_seen_at`` says when),
    keeping ``finished_at`` null because nobody knows when it died. An attempt stopped with
    Ctrl-C (``KeyboardInterrupt``) records ``interrupted`` and its ``finished_at`` itself, and sets
    the run's own ``status`` to ``interrupted``; after a kill it stays ``running`` until the next
    attempt. Rerunning the same command resumes either. ``resumed_at`` is the start
    of the latest attempt that found an earlier manifest.
``model.files_sha256``
    sha256 of the model folder's config, tokenizer and generation files (the weights are in
    ``model.weights_sha256``) — a changed tokenizer changes every score.
``datasets``
    per probe, ``[{path, sha256, bytes, rows}]`` for the data and every file an option names
    (:meth:`audit.probe.Probe.data_files`); ``rows`` is that file's own row count
    (:meth:`audit.probe.Probe.data_rows`; ``null`` for a format without rows).

A write the operating system refuses (disk full, permission denied, read-only file system) ends
the model's run: its :class:`~audit.store.StorageError` message (the file, the cause, what to do) is
recorded in the manifest when the manifest can still be written, and returned as the outcome's
error; everything written before it (complete probes, chunk checkpoints) is kept for a rerun.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import logging
import os
import random
import shutil
import socket
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from audit.config import AuditConfig, ModelSpec, ProbeSpec
from audit.distributed import (
    Dist,
    RankError,
    RankLost,
    Stopped,
    describe_lost_ranks,
    from_env,
    pid_alive,
    stopped_by_launcher,
)
from audit.metering import FLOPS_METHOD, Meter, compute_file, run_matmul_rate
from audit.precision import dtype_warning
from audit.probe import PROBES, ProbeError
from audit.runlock import RunLock
from audit.store import RunDir, StorageError, environment, now_iso, write_json

if TYPE_CHECKING:
    from audit.models import ModelHandle

logger = logging.getLogger(__name__)


@dataclass
class RunOutcome:
    """What happened to one model's run directory."""

    run_dir: RunDir
    status: str
    errors: list[str] = field(default_factory=list)
    verdict: Any = None  # audit.policy.Verdict when a policy was given


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def _sha_files(paths: list[Path], rows: Callable[[Path], int | None]) -> list[dict[str, Any]]:
    """Identity of each file: path, sha256, bytes and (``rows(path)``) its row count."""
    from audit.models import file_sha256

    out: list[dict[str, Any]] = []
    for p in paths:
        if not p.is_file():
            out.append({"path": str(p), "sha256": None, "bytes": None, "rows": None, "missing": True})
            continue
        try:
            n = rows(p)
        except Exception as exc:  # identity is best effort: the probe already read the file
            logger.debug("cannot count rows of %s: %s", p, exc)
            n = None
        out.append({"path": str(p), "sha256": file_sha256(p), "bytes": p.stat().st_size, "rows": n})
    return out


#: non-weight files of a model folder that change its outputs (tokenizer, config, generation)
_MODEL_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
                "special_tokens_map.json", "vocab.txt", "vocab.json", "merges.txt", "added_tokens.json",
                "tokenizer.model", "spiece.model", "sentencepiece.bpe.model", "chat_template.jinja")


def _model_files_sha(source: str) -> dict[str, str]:
    from audit.models import file_sha256

    folder = Path(source)  # a hub id names no local files: {}
    return {n: file_sha256(folder / n) for n in _MODEL_FILES if (folder / n).is_file()}


def _history(previous: dict[str, Any]) -> list[dict[str, Any]]:
    """The attempts so far, with a stale ``running`` one (its process was killed) marked
    ``interrupted``. A manifest written before ``history`` existed gives one reconstructed entry."""
    hist = [dict(h) for h in previous.get("history") or []]
    if previous and not hist:
        hist = [{"attempt": 1, "started_at": previous.get("created_at"), "finished_at": previous.get("finished_at"),
                 "status": previous.get("status"), "reconstructed": True}]
    host = socket.gethostname()
    for h in hist:
        if h.get("status") != "running":
            continue
        pid = h.get("pid")
        if h.get("host") == host and isinstance(pid, int) and pid != os.getpid() and pid_alive(pid):
            logger.warning("attempt %s (pid %s on %s) is still marked running and that process exists: another "
                           "taudit may be writing this run directory", h.get("attempt"), pid, host)
        h.update(status="interrupted", interrupted_seen_at=now_iso())
    return hist


def run_dir_for(cfg: AuditConfig, model: ModelSpec | None, out: Path, run_id: str | None) -> Path:
    """``<out>/<run-id>`` for a config with one model (or none: an audit of logged predictions),
    else ``<out>/<run-id or time>-<model>``; ``<time>-predictions`` without a model or a run id."""
    if run_id and len(cfg.models) <= 1:
        return out / run_id
    rid = run_id or _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return out / f"{rid}-{model.slug if model is not None else 'predictions'}"


def _load_policy(cfg: AuditConfig, policy: str | Path | dict[str, Any] | list[Any] | None) -> Any:
    src = policy if policy is not None else cfg.policy
    if src is None:
        return None
    from audit.policy import is_recommended, load_policy, recommended_policy, validate_policy

    if is_recommended(src):
        return recommended_policy({spec.instance: spec.probe for spec in cfg.probes})
    if isinstance(src, str) and cfg.base_dir and policy is None:
        src = cfg.resolve(src)
    pol = load_policy(src)
    validate_policy(pol, {spec.instance: set(PROBES.get(spec.probe).metrics) for spec in cfg.probes})
    return pol


def _post_run_hooks(rd: RunDir, cfg: AuditConfig) -> list[str]:
    errors: list[str] = []
    if not cfg.report.enabled:
        return errors
    for ep in entry_points(group="transformer_audit.post_run"):
        try:
            ep.load()(rd, cfg.as_dict())
        except Exception as exc:  # a report failure must not lose the run
            logger.error("post-run step %s failed: %s", ep.name, exc)
            errors.append(f"post-run {ep.name}: {type(exc).__name__}: {exc}")
    return errors


def run_model(
    cfg: AuditConfig,
    model: ModelSpec | None,
    rd: RunDir,
    *,
    policy: Any = None,
    progress: bool = True,
    dist: Dist | None = None,
) -> RunOutcome:
    """Run every applicable probe and explain step of ``cfg`` on one model into ``rd``
    (``model=None``: the probes read logged outputs, :attr:`audit.probe.Probe.without_model`).

    Under ``torch.distributed`` every rank calls this: item probes are sharded over the ranks,
    everything else (whole-dataset probes, explain steps, manifest, verdict, reports) runs on
    rank 0 only. A :class:`~audit.store.StorageError` (disk full, permission denied) ends the run
    with a failed outcome whose error is the store's message, recorded in the manifest if the
    manifest can still be written.
    """
    dist = dist or Dist()
    lock = RunLock(rd.path)
    # rank 0 holds the run directory for the whole job; a second job on it is refused at once
    dist.together("lock the run directory", lock.acquire if dist.is_main else lambda: None)
    try:
        return _run_locked(cfg, model, rd, policy=policy, progress=progress, dist=dist)
    finally:
        lock.release()


def _run_locked(cfg: AuditConfig, model: ModelSpec | None, rd: RunDir, *, policy: Any, progress: bool,
                dist: Dist) -> RunOutcome:
    main = dist.is_main
    lost = describe_lost_ranks(rd.path / ".ranks") if main and dist.enabled else []
    for line in lost:
        logger.warning("the previous attempt's %s; resuming from the chunks it finished", line)
    dist.progress_dir = rd.path / ".ranks"
    try:
        previous = rd.manifest()
    except ValueError as exc:
        raise ValueError(f"{rd.manifest_path} is not valid JSON ({exc}); move it away or choose another --run-id "
                         "to start a new run") from exc
    stale = rd.remove_stale_temp_files() if main else []  # before any rank writes (exchange below)
    history = _history(previous)
    attempt: dict[str, Any] = {
        "attempt": len(history) + 1, "status": "running", "started_at": now_iso(), "finished_at": None,
        "argv": list(sys.argv), "pid": os.getpid(), "host": socket.gethostname(), "world_size": dist.world,
        "error": None,
        **({"lost_ranks": lost} if lost else {}),
        "resumed": {"probes_complete": [], "explain_complete": [], "chunks_reused": {},
                    "stale_temp_files": len(stale)},
    }
    history.append(attempt)
    manifest: dict[str, Any] = {
        "run_id": rd.path.name,
        "status": "running",
        "created_at": previous.get("created_at", now_iso()),
        "resumed_at": attempt["started_at"] if previous else None,
        "finished_at": None,
        "seed": cfg.seed,
        "config": cfg.as_dict(),
        "model": previous.get("model", {"name": model.name} if model is not None else None),  # null: no model
        "datasets": previous.get("datasets", {}),
        "probes": previous.get("probes", {}),
        "explain": previous.get("explain", {}),
        "environment": environment(),
        "distributed": {"world_size": dist.world},
        "timings": {},
        "errors": [],
        "history": history,
    }
    errors: list[str] = []
    try:
        dist.exchange("read the manifest")  # every rank has read it before rank 0 rewrites it
        return _run_model(cfg, model, rd, manifest, attempt, errors, policy=policy, progress=progress, dist=dist)
    except (KeyboardInterrupt, RankLost, StorageError) as exc:
        # the attempt ends early: Ctrl-C (its end is known, unlike a kill's), another rank died (its
        # finished chunks stay), or the run directory cannot be written (a failed outcome says so)
        if isinstance(exc, StorageError):
            logger.error("%s", exc)
            errors.append(str(exc))
        if main:
            if isinstance(exc, KeyboardInterrupt):  # "interrupted", not "running": nothing runs any more
                attempt.update(status="interrupted", finished_at=now_iso())
                manifest["status"] = "interrupted"
            else:
                attempt.update(status="failed", finished_at=now_iso(), error=str(exc))
                manifest.update(status="failed", finished_at=attempt["finished_at"],
                                errors=errors if isinstance(exc, StorageError) else [str(exc)])
            try:
                rd.write_manifest(manifest)
            except StorageError as again:
                logger.error("the manifest could not record it either: %s", again)
        if isinstance(exc, StorageError):
            return RunOutcome(rd, "failed", errors)
        raise


def _run_model(
    cfg: AuditConfig,
    model: ModelSpec | None,
    rd: RunDir,
    manifest: dict[str, Any],
    attempt: dict[str, Any],
    errors: list[str],
    *,
    policy: Any,
    progress: bool,
    dist: Dist,
) -> RunOutcome:
    from audit.models import ModelLoadError, load_model

    main = dist.is_main
    t_start = time.perf_counter()
    save = rd.write_manifest if main else (lambda m: None)
    save(manifest)
    seed_everything(cfg.seed)
    handle: ModelHandle | None = None  # None: no model, the probes read logged outputs
    meter: dict[str, Any] | None = None  # the matmul rate this rank's probe figures are divided by
    if model is not None:
        try:
            handle = dist.together("load the model", lambda: load_model(
                model.name, kind=model.kind, device=dist.device(model.device), dtype=model.dtype,
                revision=model.revision, device_map=model.device_map, allow_pickle=model.allow_pickle,
                trust_remote_code=model.trust_remote_code,
            ))
        except (ModelLoadError, OSError, ValueError, RankError) as exc:
            msg = f"model {model.name}: {type(exc).__name__}: {exc}"
            errors.append(msg)
            manifest.update(status="failed", errors=errors, finished_at=now_iso())
            attempt.update(status="failed", finished_at=manifest["finished_at"], error=msg)
            save(manifest)
            return RunOutcome(rd, "failed", errors)
        manifest["model"] = {**handle.identity(), "files_sha256": _model_files_sha(handle.source)}
        manifest["timings"]["load_model_s"] = handle.load_seconds
        # the audit's own cost: this rank's matmul rate, the denominator of every probe's MFU
        meter = {**run_matmul_rate(handle.model, handle.config, handle.dtype, handle.device),
                 "attempt": attempt["attempt"], "rank": dist.rank}
        manifest["compute"] = {**{k: v for k, v in meter.items() if k not in ("attempt", "rank")},
                               "flops_method": FLOPS_METHOD, "per_probe": "probes/<name>/compute-rank<rank>.json"}
        save(manifest)

    resumed = attempt["resumed"]
    abort: StorageError | None = None  # rank 0 cannot write the run directory: every rank stops
    for spec in cfg.probes:
        if spec.models is not None and (model is None or model.name not in spec.models):
            continue
        name = spec.instance
        # one exchange per probe, on every rank (rank-0-only probes too): rank 0 decides from the
        # folder whether it is complete, and says whether the run must stop
        state = dist.exchange(f"probe {name}", {"done": rd.probe_complete(name) if main else None,
                                                "abort": str(abort) if abort else None})[0]
        if state["abort"]:
            break
        if state["done"]:
            logger.info("probe %s already complete in %s; skipping", name, rd.path)
            manifest["probes"].setdefault(name, {"probe": spec.probe, "status": "complete"})
            resumed["probes_complete"].append(name)
            continue
        manifest["probes"][name] = {"probe": spec.probe, "status": "running", "started_at": now_iso()}
        save(manifest)
        seed_everything(cfg.seed)
        try:
            entry, err = _probe_step(handle, spec, cfg, rd, progress, dist, meter)
        except StorageError as exc:  # rank 0 only; the others learn of it at the next exchange
            abort = exc
            continue
        if entry is None:  # a rank other than 0
            continue
        datasets = entry.pop("datasets", None)
        if datasets is not None:
            manifest["datasets"][name] = datasets
        chunks = entry.pop("resumed", None)
        if chunks and chunks["chunks_reused"]:
            resumed["chunks_reused"][name] = {"reused": chunks["chunks_reused"], "of": chunks["chunks_total"]}
        manifest["probes"][name] = entry
        if err:
            errors.append(f"{name}: {err}")
        save(manifest)

    dist.exchange("probes done", {"abort": str(abort) if abort else None})
    if abort is not None:
        raise abort
    if not main:
        dist.record("done")
        return RunOutcome(rd, "worker")

    for i, spec_d in enumerate(cfg.explain):
        ename = spec_d.get("name") or f"explain{i}"
        if model is None or handle is None:
            break  # explain steps need a model (a config without one cannot list them)
        if spec_d.get("models") is not None and model.name not in spec_d["models"]:
            continue
        if rd.explain_complete(ename):
            resumed["explain_complete"].append(ename)
            continue
        from audit.explain import run_explain_step

        t0 = time.perf_counter()
        manifest["explain"][ename] = {"status": "running"}
        save(manifest)
        seed_everything(cfg.seed)
        m = Meter(handle.model, handle.config)
        try:
            spec_r = {k: v for k, v in spec_d.items() if k != "models"}
            if spec_r.get("data"):
                spec_r["data"] = cfg.resolve(spec_r["data"])
            with m:
                run_explain_step(handle, spec_r, rd, ename, seed=cfg.seed, progress=progress)
            manifest["explain"][ename] = {"status": "complete", "duration_s": time.perf_counter() - t0}
        except StorageError:
            raise
        except Exception as exc:
            msg = f"{type(exc).__name__}: {exc}"
            logger.error("explain %s failed: %s", ename, msg)
            manifest["explain"][ename] = {"status": "failed", "error": msg, "duration_s": time.perf_counter() - t0}
            errors.append(f"explain {ename}: {msg}")
        if meter is not None and rd.explain_dir(ename).is_dir():  # a step that failed early wrote no folder
            _write_compute(rd.explain_dir(ename), ename, m, meter, manifest["explain"][ename]["status"], None, dist)
        save(manifest)

    outcome = RunOutcome(rd, "failed" if errors else "complete", errors)
    manifest.update(status=outcome.status, errors=list(errors), finished_at=now_iso())
    manifest["timings"]["total_s"] = time.perf_counter() - t_start
    attempt.update(status=outcome.status, finished_at=manifest["finished_at"], error="; ".join(errors) or None)
    save(manifest)  # before the verdict, so verdict.json's run_status is the finished status
    if policy is not None:
        from audit.policy import evaluate_policy

        outcome.verdict = evaluate_policy(policy, rd)
        write_json(rd.path / "verdict.json", outcome.verdict.to_dict())
    errors += _post_run_hooks(rd, cfg)
    dist.record("done")
    return outcome


def _write_compute(folder: Path, name: str, m: Meter, meter: dict[str, Any], status: str, probe: Any,
                   dist: Dist) -> None:
    """This rank's compute for one probe (or explain step), in ``<folder>/compute-rank<k>.json``
    (summed over the ranks by :func:`audit.metering.read_probe_compute`; no collective needed). The
    figures cover this attempt only: chunks reused from an earlier attempt are named, not counted."""
    resumed = getattr(probe, "resumed", None) or {}
    reused, total = resumed.get("chunks_reused"), resumed.get("chunks_total")
    covers = (f"this attempt only: {reused} of {total} chunks were reused from an earlier attempt and are not counted"
              if reused else "the whole probe")
    rec = {"probe": name, "rank": dist.rank, "attempt": meter["attempt"], "status": status, "covers": covers,
           "chunks_reused": reused, "chunks_total": total, **m.figures(meter["matmul_flops_per_s"]),
           "matmul_flops_per_s": meter["matmul_flops_per_s"], "flops_method": FLOPS_METHOD}
    try:
        write_json(compute_file(folder, dist.rank), rec)
    except StorageError as exc:
        if dist.is_main:
            raise
        logger.error("rank %d: %s", dist.rank, exc)


def _probe_step(
    handle: Any, spec: ProbeSpec, cfg: AuditConfig, rd: RunDir, progress: bool, dist: Dist,
    meter: dict[str, Any] | None,
) -> tuple[dict[str, Any] | None, str | None]:
    """Run one probe; returns (manifest entry, error) on rank 0 and (None, None) elsewhere.
    Without a model (``handle`` None) the probe reads logged outputs from its data. With one, every
    rank records what it computed (:func:`_write_compute`)."""
    name = spec.instance
    probe = PROBES.get(spec.probe)()
    if handle is not None and handle.kind not in probe.kinds:
        reason = f"{spec.probe} does not run on {handle.kind} models (supports {', '.join(probe.kinds)})"
        logger.info("skipping %s on %s: %s", name, handle.name, reason)
        return ({"probe": spec.probe, "status": "skipped", "reason": reason} if dist.is_main else None), None
    data = cfg.resolve_data(spec.data)
    t0 = time.perf_counter()
    logger.info("probe %s on %s", name, handle.name if handle is not None else f"logged outputs in {data}")
    m = Meter(handle.model, handle.config) if handle is not None and meter is not None else None
    try:
        with m if m is not None else contextlib.nullcontext():
            # item probes: checkpoints under probes/<name>/partial, sharded over the ranks
            result = probe.execute(handle, data, seed=cfg.seed, progress=progress and dist.is_main,
                                   opts=dict(spec.options), workdir=rd.probe_dir(name) / "partial", dist=dist,
                                   chunk_size=spec.chunk_size)
    except Exception as exc:
        # a rank died (the job cannot go on), or rank 0 cannot write the run directory (nothing else
        # can be recorded either)
        if isinstance(exc, RankLost) or (isinstance(exc, StorageError) and dist.is_main):
            raise
        if m is not None and meter is not None and not isinstance(exc, StorageError):
            _write_compute(rd.probe_dir(name), name, m, meter, "failed", probe, dist)  # the run directory can be written
        dt = time.perf_counter() - t0
        msg = str(exc) if isinstance(exc, StorageError) else f"{type(exc).__name__}: {exc}"
        if not dist.is_main:
            logger.error("rank %d: probe %s failed: %s", dist.rank, name, msg)
            return None, msg
        logger.error("probe %s failed: %s", name, msg)
        if not isinstance(exc, ProbeError):
            logger.debug("%s", traceback.format_exc())
        rd.write_probe_failure(name, spec.probe, msg, duration_s=dt)
        return {"probe": spec.probe, "status": "failed", "error": msg, "duration_s": dt}, msg
    if m is not None and meter is not None and (dist.is_main or probe.sharded):  # else: rank 0 only
        _write_compute(rd.probe_dir(name), name, m, meter, "complete", probe, dist)
    if not dist.is_main or result is None:
        return None, None
    dt = time.perf_counter() - t0
    datasets = _sha_files(probe.data_files(data, dict(spec.options)), rows=probe.data_rows)
    # a reduced dtype not measured to keep this probe's numbers within tolerance (audit/precision.py)
    warn = dtype_warning(spec.probe, handle.dtype, kind=handle.kind) if handle is not None else None
    if warn:
        result.warnings.append(warn)
        logger.warning(warn)
    rd.write_probe(name, result, duration_s=dt, options=spec.options, data=datasets, world_size=dist.world,
                   primary_metric=result.info.get("primary_metric") or probe.primary_metric)
    shutil.rmtree(rd.probe_dir(name) / "partial", ignore_errors=True)
    logger.info("probe %s done in %.1f s", name, dt)
    return {"probe": spec.probe, "status": "complete", "duration_s": dt, "datasets": datasets,
            "resumed": getattr(probe, "resumed", None)}, None


def run_audit(
    cfg: AuditConfig,
    *,
    out: str | Path | None = None,
    run_id: str | None = None,
    policy: str | Path | dict[str, Any] | list[Any] | None = None,
    progress: bool = True,
) -> list[RunOutcome]:
    """Run a whole config; returns one :class:`RunOutcome` per model.

    Launched under ``torchrun`` (``WORLD_SIZE`` > 1) the ranks share the work; only rank 0's
    outcomes carry a status other than ``worker``.
    """
    out_dir = Path(out) if out is not None else Path(cfg.resolve(cfg.output) or "runs")
    pol = _load_policy(cfg, policy)
    if not cfg.models:  # an audit of logged outputs: one run directory, one process
        world = os.environ.get("WORLD_SIZE", "1")
        if world not in ("", "1"):
            raise ValueError(f"models: an empty list (an audit of logged predictions, no model) does not run under "
                             f"torchrun (WORLD_SIZE={world}): there is no model to shard; run it with plain "
                             "`taudit run`")
        logged = RunDir(run_dir_for(cfg, None, out_dir, run_id))
        logger.info("no model: logged predictions → %s", logged.path)
        return [run_model(cfg, None, logged, policy=pol, progress=progress)]
    dist = from_env(cfg.distributed.backend)
    rd: RunDir | None = None
    try:
        with stopped_by_launcher(dist):
            try:
                if dist.enabled:
                    # one clock decides the run directory names for every rank
                    run_id = dist.broadcast("choose the run id", run_id or _dt.datetime.now().strftime("%Y%m%d-%H%M%S"))
                outcomes = []
                for model in cfg.models:
                    rd = RunDir(run_dir_for(cfg, model, out_dir, run_id))
                    if dist.is_main:
                        logger.info("model %s → %s", model.name, rd.path)
                    outcomes.append(run_model(cfg, model, rd, policy=pol, progress=progress, dist=dist))
                return outcomes
            except (Stopped, RankLost) as exc:
                # a rank died: its barrier partner saw the closed socket, or the launcher stopped us
                lost = describe_lost_ranks(rd.path / ".ranks", except_rank=dist.rank) if rd is not None else []
                where = (f"; the finished chunks are kept in {rd.path}: rerun the same command to complete it"
                         if rd is not None else "")
                raise RankLost(f"rank {dist.rank} stopped: " + ("; ".join(lost) or str(exc) or "another rank stopped")
                               + where) from exc
    finally:
        dist.close()
