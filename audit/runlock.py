"""One process per run directory: an advisory lock on the run directory itself.

Two ``taudit run`` processes started on the same ``--run-id`` would both write chunk files and the
manifest, and one of them would end with a misleading "chunk missing" error. The first process
takes an exclusive ``flock`` on the run directory (the folder, so that no file is added to it);
a second one is refused at once with :class:`RunDirBusy`, naming the pid and host that the holder's
manifest records for its running attempt. The kernel releases the lock when the holder exits,
however it exits (SIGKILL included), so a lock is never stale. Under ``torchrun`` rank 0 takes the
lock for the whole job (see :func:`audit.runner.run_model`). A folder that cannot be created is
not locked: the run's first write then reports why (:class:`audit.store.StorageError`).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


class RunDirBusy(ValueError):
    """The run directory is locked by another process."""


class RunLock:
    """``with RunLock(path):`` holds ``path`` exclusively (or raises :class:`RunDirBusy`)."""

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self._fd: int | None = None

    def holder(self) -> dict[str, Any]:
        """The running attempt that the run's manifest records (pid, host, started_at), or ``{}``."""
        try:
            history = json.loads((self.run_dir / "manifest.json").read_text(encoding="utf-8")).get("history") or []
        except (OSError, ValueError, AttributeError):
            return {}
        running = [h for h in history if isinstance(h, dict) and h.get("status") == "running"]
        return running[-1] if running else {}

    def acquire(self) -> None:
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.run_dir, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as exc:  # nothing can be written there: the first write says so, naming the file
            logger.debug("run directory %s not locked: %s", self.run_dir, exc)
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            h = self.holder()
            who = (f"pid {h['pid']} on {h.get('host', '?')} (since {h.get('started_at', '?')})" if h.get("pid")
                   else "another process that is starting")
            raise RunDirBusy(f"run directory {self.run_dir} is in use by {who}; wait for that run to end "
                             "or choose another --run-id") from None
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
