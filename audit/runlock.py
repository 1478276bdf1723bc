"""One process per run directory: an advisory lock on ``<run>/.lock``.

Two ``taudit run`` processes started on the same ``--run-id`` would both write chunk files and the
manifest, and one of them would end with a misleading "chunk missing" error. The first process
takes an exclusive ``flock`` on ``<run>/.lock`` and writes its pid, host and start time there; a
second one is refused at once with :class:`RunDirBusy`, which names that pid and host. The kernel
releases the lock when the holder exits, however it exits (SIGKILL included), so a lock is never
stale; the file's text is only a note of the last holder. Under ``torchrun`` rank 0 takes the lock
for the whole job (see :func:`audit.runner.run_model`).
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import json
import os
import socket
from pathlib import Path
from typing import IO, Any


class RunDirBusy(ValueError):
    """The run directory is locked by another process."""


class RunLock:
    """``with RunLock(path):`` holds ``path/.lock`` exclusively (or raises :class:`RunDirBusy`)."""

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / ".lock"
        self._fh: IO[str] | None = None

    def holder(self) -> dict[str, Any]:
        """What the lock file says of its last holder (``{}`` when unreadable)."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8") or "{}")
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def acquire(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 — held until release()
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            h = self.holder()
            who = f"pid {h.get('pid', '?')} on {h.get('host', '?')}" + (f" (since {h['since']})" if h.get("since") else "")
            raise RunDirBusy(f"run directory {self.run_dir} is in use by {who}; wait for that run to end "
                             "or choose another --run-id") from None
        fh.seek(0)
        fh.truncate()
        fh.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                             "since": _dt.datetime.now().astimezone().isoformat(timespec="seconds")}))
        fh.flush()
        self._fh = fh

    def release(self) -> None:
        if self._fh is not None:
            fcntl.flock(self._fh.fileno(), fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
