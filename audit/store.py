"""The run directory — the contract between the runner and reports / dashboard.

::

    <run>/manifest.json                  config, model + dataset identity, versions, seed, hardware,
                                         timings, status (running | complete | failed) and errors
    <run>/probes/<name>/summary.json     {"probe", "metrics": {metric: MetricValue}, "breakdown": [...],
                                         "warnings", "options", "data", "duration_s", "status"}
    <run>/probes/<name>/items.parquet    one row per item
    <run>/explain/<name>/attributions.parquet, metrics.parquet (+ summary.json)
    <run>/verdict.json, report.*

Every write goes to a temporary file in the same folder and is renamed into place, so a reader
(or a crash) never sees half a file. A probe is complete when its ``summary.json`` exists with
``"status": "complete"``; ``summary.json`` is always written last.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from audit.results import MetricValue, ProbeResult

SCHEMA_VERSION = "1.0"
STATUSES = ("running", "complete", "failed")


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _atomic(path: Path, write: Callable[[Path], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _json_default(o: Any) -> Any:
    if hasattr(o, "to_dict"):
        return o.to_dict()
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, (set, tuple)):
        return list(o)
    if isinstance(o, Path):
        return str(o)
    return str(o)


def write_json(path: str | Path, obj: Any) -> None:
    """Write JSON atomically (NaN is written as null)."""
    text = json.dumps(_nan_to_none(obj), indent=2, default=_json_default, ensure_ascii=False)
    _atomic(Path(path), lambda t: t.write_text(text + "\n", encoding="utf-8"))


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
    """Write a DataFrame atomically as Parquet (object columns of mixed type become strings)."""
    df = df.copy()
    for c in df.columns:
        if df[c].dtype == object:
            sample = df[c].dropna()
            if len(sample) and not all(isinstance(v, str) for v in sample):
                if all(isinstance(v, (list, tuple)) for v in sample):
                    continue
                df[c] = df[c].map(lambda v: v if v is None or isinstance(v, str) else json.dumps(v, default=str))
    _atomic(Path(path), lambda t: df.to_parquet(t, index=False))


def read_parquet(path: str | Path) -> pd.DataFrame:
    return pd.read_parquet(path)


def environment() -> dict[str, Any]:
    """Versions and hardware for reproducibility."""
    from importlib.metadata import PackageNotFoundError, version

    vers: dict[str, str | None] = {"python": platform.python_version()}
    for pkg in ("torch", "transformers", "captum", "numpy", "scipy", "pandas", "transformer-audit", "accelerate"):
        try:
            vers[pkg] = version(pkg)
        except PackageNotFoundError:
            vers[pkg] = None
    hw: dict[str, Any] = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "cpu_count": os.cpu_count(),
    }
    try:
        import torch

        hw["torch_threads"] = torch.get_num_threads()
        hw["cuda"] = torch.cuda.is_available()
        if torch.cuda.is_available():
            hw["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except Exception:  # pragma: no cover
        pass
    return {"versions": vers, "hardware": hw, "argv": sys.argv}


class RunDir:
    """Read and write one run directory."""

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
        if not self.exists():
            return {}
        return read_json(self.manifest_path)

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        manifest.setdefault("schema_version", SCHEMA_VERSION)
        write_json(self.manifest_path, manifest)

    def update_manifest(self, **fields: Any) -> dict[str, Any]:
        m = self.manifest()
        for k, v in fields.items():
            if isinstance(v, dict) and isinstance(m.get(k), dict):
                m[k].update(v)
            else:
                m[k] = v
        self.write_manifest(m)
        return m

    # -- probes ---------------------------------------------------------------------------
    def probe_complete(self, name: str) -> bool:
        p = self.probe_dir(name) / "summary.json"
        if not p.is_file():
            return False
        try:
            return read_json(p).get("status") == "complete"
        except (OSError, ValueError):
            return False

    def write_probe(self, name: str, result: ProbeResult, **extra: Any) -> None:
        """Write items, then summary (the completion marker) atomically."""
        d = self.probe_dir(name)
        d.mkdir(parents=True, exist_ok=True)
        write_parquet(d / "items.parquet", result.items)
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
            "info": result.info,
            "n_items": int(len(result.items)),
            "finished_at": now_iso(),
        }
        summary.update(extra)
        write_json(d / "summary.json", summary)

    def write_probe_failure(self, name: str, probe: str, error: str, **extra: Any) -> None:
        d = self.probe_dir(name)
        summary = {"schema_version": SCHEMA_VERSION, "probe": probe, "name": name, "status": "failed",
                   "error": error, "finished_at": now_iso(), **extra}
        write_json(d / "summary.json", summary)

    def probe_names(self) -> list[str]:
        root = self.path / "probes"
        return sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []

    def probe_summary(self, name: str) -> dict[str, Any]:
        return read_json(self.probe_dir(name) / "summary.json")

    def probe_metrics(self, name: str) -> dict[str, MetricValue]:
        s = self.probe_summary(name)
        return {k: MetricValue.from_dict(v) for k, v in (s.get("metrics") or {}).items()}

    def probe_items(self, name: str) -> pd.DataFrame:
        return read_parquet(self.probe_dir(name) / "items.parquet")

    # -- explainers -----------------------------------------------------------------------
    def explain_names(self) -> list[str]:
        root = self.path / "explain"
        return sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []

    def explain_complete(self, name: str) -> bool:
        p = self.explain_dir(name) / "summary.json"
        try:
            return p.is_file() and read_json(p).get("status") == "complete"
        except (OSError, ValueError):
            return False


def list_runs(root: str | Path) -> list[RunDir]:
    """Run directories (folders with a manifest.json) directly under ``root``."""
    r = Path(root)
    if not r.is_dir():
        return []
    return sorted((RunDir(p) for p in r.iterdir() if (p / "manifest.json").is_file()), key=lambda d: d.path.name)
