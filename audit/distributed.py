"""Data-parallel audits over ``torch.distributed``.

Launch the same config on N processes — ``torchrun --nproc-per-node N -m audit.cli run CFG`` or
``accelerate launch`` — and every rank scores its share of each probe's item chunks; rank 0
gathers the chunks from the run directory, computes the statistics and writes the results once.
Chunks are files, written as they finish, so a crashed rank loses only its unfinished chunk and a
rerun completes it (see :class:`audit.probe.ItemProbe`).

Which probes are sharded: every :class:`audit.probe.ItemProbe` — ``crows_pairs``, ``stereoset``,
``bbq``, ``bold``, ``templates``, ``counterfactual``, ``classifier_fairness``. Their per-item scores
are computed chunk by chunk; whatever needs all items (centring, bootstrap CIs, permutation tests,
fairlearn's MetricFrame, AUCs) is computed by rank 0 in ``summarise`` after the gather, so the run
directory equals a single-process run's item for item (``tests/test_distributed.py``).

``seat`` and ``representation`` run on rank 0 only (the other ranks go on to the next probe and
wait for rank 0 at its first barrier). Both need every example's representation at once, and
their model work is one batched embedding of a few hundred short texts. Measured on 2 shared CPU
cores, one thread: SEAT's built-in tests (512 distinct texts) embed in 1.8 s with ``minilm-l6`` and
17.6 s with ``smollm2-135m``, the whole official SEAT folder (5,433 texts) in 16.5 s and 148 s;
``representation``'s built-in 240 texts (every layer) in 1.1 s and 9.9 s, of 7.5 s and 31.4 s for
the whole probe — the rest is scikit-learn, which sharding the texts would not shorten. On a GPU
those embeddings take seconds (an estimate: the 5,433 SEAT texts are 34k tokens, ~10¹³ FLOPs
through SmolLM2), not worth the checkpoint files and barrier of a sharded pass; on CPU the ranks
would share the cores torch's intra-op threads already use. A rank-0-only step longer
than the process group's timeout (``from_env(timeout_s=3600)``) would time the waiting ranks out.

A single process is simply ``rank 0 of 1``; nothing here needs a GPU (gloo works on CPU).
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
from dataclasses import dataclass

import torch

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Dist:
    """This process's place in the job."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    initialized_here: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    def barrier(self) -> None:
        if self.enabled:
            torch.distributed.barrier()

    def broadcast_str(self, value: str | None) -> str:
        """Rank 0's string on every rank (e.g. a run id chosen from the clock)."""
        if not self.enabled:
            return value or ""
        obj = [value]
        torch.distributed.broadcast_object_list(obj, src=0)
        return obj[0] or ""

    def any_flag(self, flag: bool) -> bool:
        """True on every rank when it is true on any rank."""
        if not self.enabled:
            return flag
        t = torch.tensor([1 if flag else 0])
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        return bool(t.item())

    def device(self, requested: str) -> str:
        """One GPU per rank when CUDA is used (``auto`` or ``cuda``)."""
        if self.enabled and torch.cuda.is_available() and requested in ("auto", "cuda"):
            return f"cuda:{self.local_rank}"
        return requested

    def close(self) -> None:
        if self.initialized_here and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


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
