"""The run directory — the contract between the runner and reports / dashboard.

::

    <run>/manifest.json                  config, model + dataset identity, versions, seed, hardware,
                                         timings, status (running | complete | failed) and errors
    <run>/probes/<name>/summary.json     {"probe", "metrics": {metric: MetricValue}, "breakdown": [...],
                                         "warnings", "info" (with the result's item_effect and
                                         item_text), "options", "data", "duration_s", "status"}
    <run>/probes/<name>/items.parquet    one row per item
    <run>/probes/<name>/compute-rank<k>.json   what the probe cost rank k (audit/metering.py)
    <run>/explain/<name>/attributions.parquet, metrics.parquet (+ summary.json, compute-rank0.json)
    <run>/verdict.json, report.*

Every write goes to a temporary file in the same folder and is renamed into place, so a reader
(or a crash) never sees half a file. A probe is complete when its ``summary.json`` exists with
``"status": "complete"``; ``summary.json`` is always written last.

A write that the operating system refuses (disk full, quota, permission denied, read-only file
system — any :class:`OSError`) removes its temporary file and raises :class:`StorageError`, whose
message names the file, the cause and what to do. A process killed mid-write (SIGKILL) cannot clean
up: it may leave a ``.<name>.<random>.tmp`` file, never a truncated result file;
:meth:`RunDir.remove_stale_temp_files` sweeps those when the next attempt starts. Renames are
atomic against a crashed process, not against power loss (no ``fsync``).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno as _errno
import json
import os
import platform
import re
import socket
import sys
import tempfile
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from audit.results import ProbeResult
from audit.rundir_view import RunView

SCHEMA_VERSION = "1.0"


def _installed(package: str) -> str | None:
    """The installed version of ``package`` (``None`` when it is not installed)."""
    try:
        return version(package)
    except PackageNotFoundError:
        return None


def package_version() -> str:
    """This package's installed version (``unknown`` in a checkout that was never installed)."""
    return _installed("transformer-audit") or "unknown"


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


#: errno → (what happened, what to do); ``{folder}`` is the folder written to
_ADVICE: dict[int, tuple[str, str]] = {
    _errno.ENOSPC: ("no space left on device", "free space or choose --out elsewhere"),
    _errno.EDQUOT: ("disk quota exceeded", "free space or choose --out elsewhere"),
    _errno.EACCES: ("permission denied", "make {folder} writable or choose --out elsewhere"),
    _errno.EPERM: ("operation not permitted", "make {folder} writable or choose --out elsewhere"),
    _errno.EROFS: ("read-only file system", "choose --out on a writable file system"),
}


class StorageError(OSError):
    """A write into the run directory failed. ``str()`` is the message for the user: the file,
    the cause and what to do (e.g. ``cannot write runs/x/probes/y/items.parquet: no space left on
    device — free space or choose --out elsewhere``). ``errno``, ``path`` and ``__cause__`` keep
    the details."""

    def __init__(self, path: Path, cause: OSError) -> None:
        code = cause.errno
        if code is None:  # pyarrow raises a bare OSError("... [Errno 28] No space left on device")
            m = re.search(r"\[Errno (\d+)\]", str(cause))
            code = int(m.group(1)) if m else None
        super().__init__(code, str(cause))
        self.path = Path(path)
        what, todo = _ADVICE.get(code or -1, (cause.strerror or str(cause) or type(cause).__name__,
                                              "check {folder} or choose --out elsewhere"))
        folder = next((d for d in self.path.parents if d.is_dir()), self.path.parent)  # the one to fix
        self.message = f"cannot write {_shown(self.path)}: {what} — {todo.format(folder=_shown(folder))}"

    def __str__(self) -> str:
        return self.message


def _shown(path: Path) -> str:
    """``path`` relative to the working directory when it lies under it (as the user typed it)."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except (ValueError, OSError):
        return str(path)


def file_mode() -> int:
    """The mode a new file gets from the user's umask (``0o666 & ~umask``, e.g. 0644): the
    temporary file of an atomic write is created 0600 by :func:`tempfile.mkstemp`, and a report a
    teammate or a web server should read must not keep that."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Write ``path`` through a temporary file in its folder and an atomic rename; the file gets
    the user's umask mode (:func:`file_mode`). Any :class:`OSError` removes the temporary file and
    becomes a :class:`StorageError`."""
    tmp: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        tmp = Path(name)
        os.close(fd)
        write(tmp)
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and not isinstance(exc, StorageError):
            raise StorageError(path, exc) from exc
        raise


def _json_default(o: Any) -> Any:
    if hasattr(o, "to_dict"):
        return o.to_dict()
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, (set, tuple)):
        return list(o)
    return str(o)  # a Path, or anything else JSON cannot hold


def write_text(path: str | Path, text: str) -> None:
    """Write UTF-8 text atomically."""
    atomic_write(Path(path), lambda t: t.write_text(text, encoding="utf-8"))


def write_json(path: str | Path, obj: Any) -> None:
    """Write JSON atomically (NaN is written as null)."""
    text = json.dumps(_nan_to_none(obj), indent=2, default=_json_default, ensure_ascii=False)
    atomic_write(Path(path), lambda t: t.write_text(text + "\n", encoding="utf-8"))


def _nan_to_none(o: Any) -> Any:
    if isinstance(o, float) and o != o:  # NaN
        return None
    if isinstance(o, dict):
        return {k: _nan_to_none(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_nan_to_none(v) for v in o]
    return o


def read_json(path: str | Path) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def write_parquet(path: str | Path, df: pd.DataFrame) -> None:
    """Write a DataFrame atomically as Parquet (object columns of mixed type become strings; lists
    and 1-D arrays are kept as Parquet lists)."""
    df = df.copy()
    for c in df.columns:
        if df[c].dtype == object:
            sample = df[c].dropna()
            if len(sample) and not all(isinstance(v, str) for v in sample):
                if all(isinstance(v, (list, tuple, np.ndarray)) for v in sample):
                    continue
                df[c] = df[c].map(lambda v: v if v is None or isinstance(v, str) else json.dumps(v, default=str))
    atomic_write(Path(path), lambda t: df.to_parquet(t, index=False))


#: packages whose version can change a number in a run directory
VERSIONED_PACKAGES = (
    "torch", "transformers", "tokenizers", "safetensors", "accelerate", "captum", "numpy", "scipy",
    "statsmodels", "scikit-learn", "fairlearn", "pandas", "pyarrow", "vaderSentiment", "gguf",
    "transformer-audit",
)
#: environment variables that change threading, determinism or what is loaded
REPRO_ENV = (
    "PYTHONHASHSEED", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "TOKENIZERS_PARALLELISM",
    "CUBLAS_WORKSPACE_CONFIG", "CUDA_VISIBLE_DEVICES", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HOME",
    "WORLD_SIZE", "LOCAL_WORLD_SIZE",
)


def environment() -> dict[str, Any]:
    """What a rerun needs to reproduce the numbers: package versions (and the source commit of this
    package when it runs from a git checkout), hardware, torch's determinism settings and thread
    counts, the environment variables that change them, and the command line."""

    vers = {"python": platform.python_version(), **{pkg: _installed(pkg) for pkg in VERSIONED_PACKAGES}}
    hw: dict[str, Any] = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "memory_bytes": _memory_bytes(),
        "host": socket.gethostname(),
    }
    det: dict[str, Any] = {}
    try:
        import torch

        hw["torch_threads"] = torch.get_num_threads()
        hw["torch_interop_threads"] = torch.get_num_interop_threads()
        hw["cuda"] = torch.cuda.is_available()
        hw["cuda_version"] = torch.version.cuda
        if torch.cuda.is_available():
            hw["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
            hw["cudnn_version"] = torch.backends.cudnn.version()
        det = {
            "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
            "deterministic_warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
            "cudnn_deterministic": torch.backends.cudnn.deterministic,
            "cudnn_benchmark": torch.backends.cudnn.benchmark,
            "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
            "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
            "float32_matmul_precision": torch.get_float32_matmul_precision(),
        }
    except Exception:  # pragma: no cover  # nosec B110  # best effort: a torch that cannot report its hardware or determinism flags must not stop a run; the manifest then lacks those facts
        pass
    return {"versions": vers, "source": _source_commit(), "hardware": hw, "torch": det,
            "env": {k: os.environ.get(k) for k in REPRO_ENV}, "argv": sys.argv,
            "executable": sys.executable}


def _memory_bytes() -> int | None:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _source_commit() -> dict[str, Any] | None:
    """The git commit this package was imported from (an editable install in a checkout), read from
    ``.git`` without running git; ``None`` for an installed wheel."""
    root = Path(__file__).resolve().parents[1]
    git = root / ".git"
    try:
        head = (git / "HEAD").read_text(encoding="utf-8").strip()
        if head.startswith("ref: "):
            ref = head[5:]
            f = git / ref
            if f.is_file():
                return {"path": str(root), "ref": ref, "commit": f.read_text(encoding="utf-8").strip()}
            packed = git / "packed-refs"
            for line in packed.read_text(encoding="utf-8").splitlines() if packed.is_file() else []:
                if line.endswith(" " + ref):
                    return {"path": str(root), "ref": ref, "commit": line.split()[0]}
            return {"path": str(root), "ref": ref, "commit": None}
        return {"path": str(root), "ref": None, "commit": head}
    except OSError:
        return None


class RunDir:
    """Write one run directory (its manifest is read back to resume a run); everything else reads
    it through :class:`audit.rundir_view.RunView`."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    # -- paths ----------------------------------------------------------------------------
    @property
    def manifest_path(self) -> Path:
        return self.path / "manifest.json"

    def probe_dir(self, name: str) -> Path:
        return self.path / "probes" / name

    def explain_dir(self, name: str) -> Path:
        return self.path / "explain" / name

    # -- manifest -------------------------------------------------------------------------
    def exists(self) -> bool:
        return self.manifest_path.is_file()

    def manifest(self) -> dict[str, Any]:
        return read_json(self.manifest_path) if self.exists() else {}

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        manifest.setdefault("schema_version", SCHEMA_VERSION)
        write_json(self.manifest_path, manifest)

    def remove_stale_temp_files(self) -> list[Path]:
        """Delete the ``.*.tmp`` files a killed process left behind (a write in progress when it
        died). Call only when no other process writes this run directory."""
        if not self.path.is_dir():
            return []
        stale = [p for p in self.path.rglob(".*.tmp") if p.is_file()]
        for p in stale:
            with contextlib.suppress(OSError):
                p.unlink()
        return stale

    # -- probes ---------------------------------------------------------------------------
    def probe_complete(self, name: str) -> bool:
        """Whether the probe's ``summary.json`` says ``complete`` (:class:`audit.rundir_view.RunView`)."""
        return RunView(self).probe(name).complete

    def write_probe(self, name: str, result: ProbeResult, **extra: Any) -> None:
        """Write items, then summary (the completion marker) atomically."""
        d = self.probe_dir(name)
        write_parquet(d / "items.parquet", result.items)  # atomic_write makes the folder
        if result.breakdown is not None and len(result.breakdown):
            write_parquet(d / "breakdown.parquet", result.breakdown)
        summary = {
            "schema_version": SCHEMA_VERSION,
            "probe": result.probe,
            "name": name,
            "status": "complete",
            "metrics": result.summary_dict(),
            "breakdown": result.breakdown.to_dict(orient="records") if len(result.breakdown) else [],
            "warnings": list(result.warnings),
            "info": {**result.info, "item_effect": result.item_effect, "item_text": result.item_text},
            "n_items": int(len(result.items)),
            "finished_at": now_iso(),
            **extra,
        }
        write_json(d / "summary.json", summary)

    def write_probe_failure(self, name: str, probe: str, error: str, **extra: Any) -> None:
        summary = {"schema_version": SCHEMA_VERSION, "probe": probe, "name": name, "status": "failed",
                   "error": error, "finished_at": now_iso(), **extra}
        write_json(self.probe_dir(name) / "summary.json", summary)

    # -- explainers -----------------------------------------------------------------------
    def explain_complete(self, name: str) -> bool:
        return RunView(self).explain(name).complete


def list_runs(root: str | Path) -> list[RunDir]:
    """Run directories (folders with a manifest.json) directly under ``root``."""
    r = Path(root)
    if not r.is_dir():
        return []
    return sorted((RunDir(p) for p in r.iterdir() if (p / "manifest.json").is_file()), key=lambda d: d.path.name)
