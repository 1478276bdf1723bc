"""Data-parallel audits over ``torch.distributed``.

Launch the same config on N processes — ``torchrun --nproc-per-node N -m audit.cli run CFG`` or
``accelerate launch`` — and every rank scores its share of each probe's item chunks; rank 0
gathers the chunks from the run directory, computes the statistics and writes the results once.
Chunks are files, written as they finish, so a crashed rank loses only its unfinished chunk and a
rerun completes it (see :class:`audit.probe.ItemProbe`).

Which probes are sharded: every :class:`audit.probe.ItemProbe` (``Probe.sharded``) — ``crows_pairs``,
``stereoset``, ``seegull``, ``ethnic_bias``, ``bbq``, ``bold``, ``templates``, ``counterfactual``,
``classifier_fairness``, ``representation``, ``mediation``, ``privacy``. Their per-item work (scores;
representation's hidden states of every layer) is computed chunk by chunk; whatever needs all items
(centring, bootstrap CIs, permutation tests, fairlearn's MetricFrame, AUCs, representation's probing
classifiers) is computed by rank 0 in ``summarise`` after the gather, so the run directory equals a
single-process run's item for item (``tests/test_distributed.py``,
``tests/test_conformance_distributed.py``).

``seat``, ``xweat`` and ``cost`` run on rank 0 only (the other ranks go on to the next probe and
wait for rank 0 at its first exchange). SEAT needs every example's embedding at once, and its model
work is one batched embedding of a few hundred short texts. Measured on 2 shared CPU cores, one
thread: SEAT's built-in tests (512 distinct texts) embed in 1.8 s with ``minilm-l6`` and 17.6 s
with ``smollm2-135m``, the whole official SEAT folder (5,433 texts) in 16.5 s and 148 s. On a GPU
those embeddings take seconds (an estimate: the 5,433 SEAT texts are 34k tokens, ~10¹³ FLOPs
through SmolLM2), not worth the checkpoint files and barrier of a sharded pass; on CPU the ranks
would share the cores torch's intra-op threads already use. A rank-0-only step longer
than the process group's timeout (``from_env(timeout_s=3600)``) would time the waiting ranks out.

Why a rank used to abort, and the rule that stops it
----------------------------------------------------
About one two-process run in eight ended with ``terminate called without an active exception``
(SIGABRT) on rank 1, logged just after the start of that rank's *last* probe. A core dump of the
reproducer (``scripts/stress_distributed.sh``; gdb ``thread apply all bt``) showed the cause:

* the main thread was in ``Py_FinalizeEx`` — rank 1 had finished its share and was exiting while
  rank 0 was still summarising;
* a gloo worker thread (``ProcessGroupGloo::runLoop``) was destroying the *previous* collective's
  ``AsyncAllreduceWork``. Its input tensor had been created in Python (``torch.tensor([flag])`` in
  the old ``any_flag``), so dropping it calls ``TensorImpl::decref_pyobject``, which takes the GIL;
* CPython 3.11 ends any thread that takes the GIL during finalisation with ``pthread_exit``; the
  forced unwind runs through the ``noexcept`` work destructor, and that is ``std::terminate``.

The worker releases a finished work *after* waking the waiter, so the main thread can get to
``Py_FinalizeEx`` first: a race, lost more often on a loaded machine. ``destroy_process_group``
does not help (gloo's ``shutdown`` leaves the worker threads running; they are joined only when the
C++ process group is freed, with the GIL held by the freeing thread).

The rule, therefore: **no tensor created in Python is ever handed to a collective.** Every
exchange between ranks (:meth:`Dist.exchange` and the helpers on it) writes small JSON values to
the job's key-value store and synchronises with ``barrier()``, whose work carries only a tensor that
C++ made and so never needs the GIL. Each exchange is also a checkpoint of the protocol:

1. every rank takes part in the same exchanges in the same order for every probe — including a
   probe it skips, a probe that fails on it, and a rank-0-only probe (which has exactly one
   exchange, before it, for every rank);
2. each exchange carries the step's name and the rank's error, if any. A rank that failed tells the
   others there, and they all raise :class:`RankError` naming the rank, the step and its message
   (no hang, no abort). Ranks at different steps are reported as out of step instead of pairing
   unrelated collectives;
3. a rank that dies makes the others' next barrier fail at once (gloo sees the closed socket):
   :class:`RankLost`. Under ``torchrun`` the agent stops the surviving ranks with SIGTERM; each rank
   keeps ``<run>/.ranks/rank-<r>.json`` (its pid and current step), so rank 0 — or the rerun —
   names the rank that died and the probe it was in (:func:`describe_lost_ranks`);
4. the process group is destroyed once, on every rank, after its last exchange (:meth:`Dist.close`).

A single process is simply ``rank 0 of 1``; nothing here needs a GPU (gloo works on CPU).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch

logger = logging.getLogger(__name__)

T = TypeVar("T")


class RankError(RuntimeError):
    """One or more ranks failed at a step every rank takes part in; the message names them."""

    def __init__(self, step: str, failures: dict[int, str]) -> None:
        self.step, self.failures = step, dict(failures)
        what = "; ".join(f"rank {r}: {msg}" for r, msg in sorted(failures.items()))
        super().__init__(f"{step} failed on {what}")


class RankLost(RuntimeError):
    """Another rank of the job stopped (killed, crashed) while this one waited for it."""


class Stopped(KeyboardInterrupt):
    """SIGTERM from the launcher: ``torchrun`` stops the surviving ranks when one fails. A
    :class:`KeyboardInterrupt`, so the attempt is recorded as interrupted like a Ctrl-C."""


@contextlib.contextmanager
def stopped_by_launcher(dist: Dist) -> Iterator[None]:
    """Turn the launcher's SIGTERM into :class:`Stopped` while a distributed run is in this block.

    Only the first SIGTERM raises; a run that leaves the block with an exception ignores later
    ones, so that the error naming the lost rank is still printed before the launcher's SIGKILL."""
    if not dist.enabled or threading.current_thread() is not threading.main_thread():
        yield
        return
    raised = False

    def stop(signum: int, frame: object) -> None:
        nonlocal raised
        if raised:
            return
        raised = True
        raise Stopped(f"signal {signum} from the launcher")

    old = signal.signal(signal.SIGTERM, stop)
    failed = True
    try:
        yield
        failed = False
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN if failed else old)


@dataclass
class Dist:
    """This process's place in the job, and the only way ranks talk to each other."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    initialized_here: bool = False
    #: where this rank records its current step (``<run>/.ranks``); set per run directory
    progress_dir: Path | None = None
    _seq: int = field(default=0, repr=False)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    # -- synchronisation ------------------------------------------------------------------
    def barrier(self, step: str = "barrier") -> None:
        """Wait for every rank. A rank that died makes this raise :class:`RankLost`."""
        if not self.enabled:
            return
        try:
            torch.distributed.barrier()
        except RuntimeError as exc:  # gloo: the peer's socket closed; nccl: the watchdog
            raise RankLost(f"another rank of this job stopped while rank {self.rank} waited at '{step}' ({exc})") from exc

    def exchange(self, step: str, payload: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Every rank's ``payload`` (JSON), in rank order, on every rank.

        Written to the job's store, then a barrier: no Python tensor reaches gloo (see the module
        docstring). Raises :class:`RankError` when the ranks are at different steps."""
        self.record(step)
        mine = {"step": step, **(payload or {})}
        if not self.enabled:
            return [mine]
        self._seq += 1
        store = torch.distributed.distributed_c10d._get_default_store()
        prefix = f"taudit/{self._seq}"
        store.set(f"{prefix}/{self.rank}", json.dumps(mine))
        self.barrier(step)
        got = [json.loads(store.get(f"{prefix}/{r}")) for r in range(self.world)]
        steps = {g["step"] for g in got}
        if len(steps) > 1:
            where = ", ".join(f"rank {r} at '{g['step']}'" for r, g in enumerate(got))
            raise RankError(step, {self.rank: f"ranks out of step ({where})"})
        return got

    def together(self, step: str, fn: Callable[[], T]) -> T:
        """Run ``fn`` on this rank, then tell every rank how it went.

        This rank's own exception is re-raised unchanged (so an error every rank meets reads as
        in a single process); when only other ranks failed, :class:`RankError` names them. Either
        way every rank leaves the step together, and none is left waiting in a collective."""
        error: Exception | None = None
        result: T | None = None
        self.record(step)
        try:
            result = fn()
        except Exception as exc:  # every rank must learn of it, or the others wait forever
            error = exc
        msg = None if error is None else (str(error) if isinstance(error, ValueError) else f"{type(error).__name__}: {error}")
        try:
            got = self.exchange(step, {"error": msg or None})
        except (RankError, RankLost) as exc:
            if error is not None:
                raise error from exc
            raise
        if error is not None:
            raise error
        failures = {r: g["error"] for r, g in enumerate(got) if g.get("error")}
        if failures:
            raise RankError(step, failures)
        return result  # type: ignore[return-value]

    def broadcast(self, step: str, value: Any) -> Any:
        """Rank 0's JSON ``value`` on every rank."""
        return self.exchange(step, {"value": value if self.is_main else None})[0]["value"]

    # -- progress, for naming a rank that died ----------------------------------------------
    def record(self, step: str) -> None:
        """Note this rank's current step in ``progress_dir`` (a distributed run only)."""
        if not self.enabled or self.progress_dir is None:
            return
        try:
            self.progress_dir.mkdir(parents=True, exist_ok=True)
            path = self.progress_dir / f"rank-{self.rank}.json"
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps({"rank": self.rank, "pid": os.getpid(), "host": _host(), "step": step,
                                       "at": time.time()}), encoding="utf-8")
            os.replace(tmp, path)
        except OSError as exc:  # progress is a diagnostic; the run's own writes report storage errors
            logger.debug("rank %d: cannot record progress in %s: %s", self.rank, self.progress_dir, exc)

    def device(self, requested: str) -> str:
        """One GPU per rank when CUDA is used (``auto`` or ``cuda``)."""
        if self.enabled and torch.cuda.is_available() and requested in ("auto", "cuda"):
            return f"cuda:{self.local_rank}"
        return requested

    def close(self) -> None:
        """Destroy the process group (once, after this rank's last exchange)."""
        if self.initialized_here and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        self.initialized_here = False


def _host() -> str:
    return socket.gethostname()


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid runs on this host (an exited one that its parent has not
    reaped yet — a zombie, as a dead rank is until torchrun polls it — counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8")
    except OSError:
        return True  # no /proc: trust kill(0)
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


def describe_lost_ranks(progress_dir: Path, *, except_rank: int | None = None) -> list[str]:
    """One sentence per rank recorded in ``progress_dir`` whose process (on this host) no longer
    exists: which rank, its pid and the step it was in when it stopped."""
    out = []
    for p in sorted(progress_dir.glob("rank-*.json")) if progress_dir.is_dir() else []:
        try:
            rec = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if rec.get("rank") == except_rank or rec.get("step") == "done":
            continue
        if rec.get("host") == _host() and isinstance(rec.get("pid"), int) and not pid_alive(rec["pid"]):
            out.append(f"rank {rec['rank']} (pid {rec['pid']}) stopped during '{rec.get('step')}'")
    return out


def from_env(backend: str = "auto", timeout_s: float = 3600.0) -> Dist:
    """Join the process group described by torchrun's environment (``WORLD_SIZE`` > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", str(rank)))
    if torch.distributed.is_initialized():
        return Dist(torch.distributed.get_rank(), torch.distributed.get_world_size(), local)
    if backend == "auto":
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local)
    torch.distributed.init_process_group(backend=backend, timeout=_dt.timedelta(seconds=timeout_s))
    logger.info("joined %s process group: rank %d of %d", backend, rank, world)
    return Dist(rank, world, local, initialized_here=True)
