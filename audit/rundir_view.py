"""One typed reader of run directories: what reports, the dashboard, policies, the console and
``taudit compare`` read from a run that :mod:`audit.store` wrote.

:class:`RunView` never raises for a bad or partial run directory: a file that is missing, not valid
JSON, not a JSON object or (with ``root``) a symlink out of the runs root becomes a status and a
message that names the file, e.g. ``run-a/probes/seat/summary.json is not valid JSON (line 1, …)``.
Every probe and explain step gets its status from one vocabulary:

- what the runner wrote (``complete``, ``failed``, ``skipped``, ``interrupted``, …): the summary's
  ``status``, else the manifest's entry;
- ``running``: no summary yet and partial results exist (or the manifest says so);
- ``not started``: no summary and nothing in the manifest says more;
- ``incomplete``: the manifest marks it complete but its ``summary.json`` does not exist;
- ``unreadable``: its ``summary.json`` exists but cannot be read or is not a JSON object.

Records are frozen dataclasses; the large tables (items, breakdown, attributions) are read only
when asked for, each as ``(table or None, message or None)``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from audit.results import MetricValue
from audit.views import finite

#: the reason given when a step's folder holds no summary and its manifest entry says nothing
_NO_SUMMARY = {"running": "still running: only partial results exist", "pending": "not started yet",
               "not started": "no results were written"}


class OutsideRootError(ValueError):
    """A path that resolves outside the runs root (e.g. through a symlink)."""


def as_dict(x: Any) -> dict[str, Any]:
    """``x`` when it is a JSON object, else an empty one (for fields of hand-edited JSON)."""
    return x if isinstance(x, dict) else {}


def metric_values(raw: Any, where: str) -> tuple[dict[str, MetricValue], list[str]]:
    """The stored ``metrics`` object as :class:`MetricValue` s, and a problem naming ``where`` for
    each entry that cannot be read."""
    if not isinstance(raw, dict):
        return {}, [f"{where}: 'metrics' is not an object"]
    out: dict[str, MetricValue] = {}
    problems: list[str] = []
    for k, v in raw.items():
        try:
            if not isinstance(v, dict):
                raise TypeError("not an object")
            out[str(k)] = MetricValue.from_dict(v)
        except (TypeError, ValueError) as exc:
            problems.append(f"{where}: metric {k!r} cannot be read ({exc})")
    return out, problems


@dataclass(frozen=True)
class RunManifest:
    """``manifest.json``: ``raw`` is the whole object (``{}`` when unreadable, with ``problem``)."""

    run_id: str
    status: str
    raw: dict[str, Any]
    problem: str | None = None

    @property
    def readable(self) -> bool:
        return self.problem is None

    @property
    def probes(self) -> dict[str, dict[str, Any]]:
        """Probe name → its manifest entry (status, error, duration_s, …)."""
        return {str(k): as_dict(v) for k, v in as_dict(self.raw.get("probes")).items()}

    @property
    def explain(self) -> dict[str, dict[str, Any]]:
        return {str(k): as_dict(v) for k, v in as_dict(self.raw.get("explain")).items()}

    @property
    def model(self) -> dict[str, Any]:
        return as_dict(self.raw.get("model"))

    @property
    def config(self) -> dict[str, Any]:
        return as_dict(self.raw.get("config"))

    @property
    def datasets(self) -> dict[str, Any]:
        return as_dict(self.raw.get("datasets"))

    @property
    def errors(self) -> list[str]:
        errs = self.raw.get("errors")
        return [str(e) for e in errs] if isinstance(errs, list) else []


@dataclass(frozen=True)
class StepRecord:
    """What a probe's or explain step's folder says: ``status`` (the vocabulary above), ``reason``
    (why it is not complete — the error, or a message naming the file), ``summary`` (the
    ``summary.json`` object, ``{}`` when there is none) and ``entry`` (its manifest entry)."""

    view: RunView = field(repr=False, compare=False)
    folder: str  # "probes" or "explain"
    name: str
    status: str
    reason: str = ""
    summary: dict[str, Any] = field(default_factory=dict)
    entry: dict[str, Any] = field(default_factory=dict)
    problems: tuple[str, ...] = ()  # unreadable parts of a complete result

    @property
    def complete(self) -> bool:
        return self.status == "complete"

    @property
    def message(self) -> str:
        """One line for a page: ``Probe seat: failed — ProbeError: …``."""
        what = "Probe" if self.folder == "probes" else "Explanation"
        return f"{what} {self.name}: {self.status}" + (f" — {self.reason}" if self.reason else "")

    @property
    def warnings(self) -> list[str]:
        return [str(w) for w in self.summary.get("warnings") or [] if w]

    def table(self, filename: str) -> tuple[pd.DataFrame | None, str | None]:
        """A Parquet table of this step's folder, or ``(None, message naming the file)``."""
        return self.view.table(self.folder, self.name, filename)

    def compute(self) -> tuple[dict[str, Any] | None, str | None]:
        """Its compute figures summed over the ranks (:func:`audit.metering.read_probe_compute`),
        or ``(None, message)`` for an unreadable record."""
        from audit.metering import read_probe_compute  # imports torch; the reader itself does not

        try:
            return read_probe_compute(self.view.file(self.folder, self.name)), None
        except (ValueError, OSError) as exc:
            return None, str(exc)


@dataclass(frozen=True)
class ProbeRecord(StepRecord):
    """One probe of the run; ``metrics`` are typed, ``probe`` is its registry name."""

    probe: str = ""
    metrics: dict[str, MetricValue] = field(default_factory=dict)

    @property
    def info(self) -> dict[str, Any]:
        return as_dict(self.summary.get("info"))

    @property
    def item_effect(self) -> str | None:
        """The stored :attr:`audit.results.ProbeResult.item_effect` (kept in ``info``)."""
        col = self.info.get("item_effect")
        return col if isinstance(col, str) and col else None

    @property
    def item_text(self) -> list[str]:
        """The stored :attr:`audit.results.ProbeResult.item_text`; one column given as a string is
        read as a list of one (older or hand-edited summaries)."""
        cols = self.info.get("item_text") or []
        return [cols] if isinstance(cols, str) else [str(c) for c in cols] if isinstance(cols, list) else []

    @property
    def primary_metric(self) -> str | None:
        """The summary's (or info's) ``primary_metric`` when it is a stored metric, else the first."""
        primary = self.summary.get("primary_metric") or self.info.get("primary_metric")
        return primary if primary in self.metrics else next(iter(self.metrics), None)

    def items(self) -> tuple[pd.DataFrame | None, str | None]:
        return self.table("items.parquet")

    def breakdown(self) -> tuple[pd.DataFrame, str | None]:
        """``breakdown.parquet``, else the summary's ``breakdown`` records; the message says why a
        ``breakdown.parquet`` that exists could not be read."""
        df, msg = self.table("breakdown.parquet")
        if df is not None:
            return df, None
        raw = self.summary.get("breakdown")
        return (pd.DataFrame(raw) if isinstance(raw, list) else pd.DataFrame()), (
            None if msg is None or msg.endswith("does not exist") else msg)


@dataclass(frozen=True)
class ExplainRecord(StepRecord):
    """One explain step; ``method_metrics`` is method → metric → value."""

    method_metrics: dict[str, dict[str, MetricValue]] = field(default_factory=dict)


#: the outcomes of a policy check (:mod:`audit.policy`)
CHECK_STATUSES = ("pass", "warn", "fail", "missing", "skipped")
_CHECK_TEXT = ("check", "probe", "metric", "threshold", "reason", "description", "unit", "source", "op")


def verdict_outcome(checks: Iterable[tuple[str, str]]) -> tuple[str, bool]:
    """(status, failed) of a verdict from its checks' (severity, status): failed when a
    fail-severity check failed or its metric is missing; status ``fail`` then, else ``warn`` when a
    check warned or is missing, else ``pass``."""
    checks = list(checks)
    failed = any(sev == "fail" and st in ("fail", "missing") for sev, st in checks)
    return "fail" if failed else "warn" if any(st in ("warn", "missing") for _, st in checks) else "pass", failed


@dataclass(frozen=True)
class VerdictRecord:
    """``verdict.json`` (:mod:`audit.policy`): ``raw`` is ``None`` when the file does not exist or
    cannot be read (``problem`` then says which); ``where`` names the file in messages.

    The status is recomputed from the checks, never taken from the file: a file whose own
    ``status`` disagrees is listed in :attr:`problems`, naming the file."""

    raw: dict[str, Any] | None
    problem: str | None = None
    where: str = "verdict.json"

    @property
    def checks(self) -> list[dict[str, Any]]:
        """Every check with every field a page shows (a hand-edited or older file must not break
        one): texts, ``severity`` fail | warn, ``on`` value | ci, a status of
        :data:`CHECK_STATUSES` (``missing`` for any other) and finite numbers or ``None``."""
        checks = as_dict(self.raw).get("checks")
        rows = []
        for c in [c for c in checks if isinstance(c, dict)] if isinstance(checks, list) else []:
            row: dict[str, Any] = {k: str(c.get(k) or "") for k in _CHECK_TEXT}
            row.update(severity="warn" if c.get("severity") == "warn" else "fail",
                       on="ci" if c.get("on") == "ci" else "value",
                       status=c["status"] if c.get("status") in CHECK_STATUSES else "missing")
            rows.append(row | {k: finite(c.get(k)) for k in ("value", "ci_low", "ci_high", "ideal")})
        return rows

    @property
    def status(self) -> str | None:
        """``pass``, ``warn`` or ``fail`` by :func:`verdict_outcome` (``None`` without a file)."""
        return None if self.raw is None else verdict_outcome((c["severity"], c["status"]) for c in self.checks)[0]

    @property
    def failed(self) -> bool:
        return verdict_outcome((c["severity"], c["status"]) for c in self.checks)[1]

    @property
    def counts(self) -> dict[str, int]:
        return {k: sum(c["status"] == k for c in self.checks) for k in CHECK_STATUSES}

    @property
    def problems(self) -> list[str]:
        """Why the file cannot be read, or why its own status cannot be trusted."""
        stated = as_dict(self.raw).get("status")
        if stated is not None and stated != self.status:
            return [f"{self.where} says {stated!r} but its checks give {self.status!r}; the checks are shown"]
        return [self.problem] if self.problem else []


class RunView:
    """Read one run directory without raising. With ``root``, every path is resolved (symlinks
    followed) and refused unless it lies inside ``root``; ``manifest`` spares a second read of a
    manifest the caller already holds. ``path`` may be a folder or a :class:`audit.store.RunDir`."""

    def __init__(self, path: Any, root: str | Path | None = None, manifest: Mapping[str, Any] | None = None) -> None:
        self.path = Path(getattr(path, "path", path))
        self.root = Path(root).resolve() if root is not None else None
        self._manifest = self._manifest_record(dict(manifest)) if manifest is not None else None

    # -- files ----------------------------------------------------------------------------
    def exists(self) -> bool:
        """Whether this is a run directory (it holds a ``manifest.json`` inside the root)."""
        return self._open(("manifest.json",))[0] is not None

    def file(self, *parts: str) -> Path:
        """``path/parts``; with a root, resolved and :class:`OutsideRootError` unless inside it."""
        p = self.path.joinpath(*parts)
        if self.root is None:
            return p
        resolved = p.resolve()
        if resolved != self.root and not resolved.is_relative_to(self.root):
            raise OutsideRootError(f"{p} resolves to {resolved}, outside the runs root {self.root}")
        return resolved

    def _where(self, parts: tuple[str, ...]) -> str:
        """How a message names the file: ``<run folder>/<parts>``, or an absolute path as given."""
        return parts[0] if Path(parts[0]).is_absolute() else "/".join((self.path.name, *parts))

    def _open(self, parts: tuple[str, ...]) -> tuple[Path | None, str | None]:
        try:
            path = self.file(*parts)
        except OutsideRootError as exc:
            return None, f"{self._where(parts)}: refused — {exc}"
        return (path, None) if path.is_file() else (None, f"{self._where(parts)} does not exist")

    def object(self, *parts: str) -> tuple[dict[str, Any] | None, str | None]:
        """A JSON object as (object, None), or (None, message naming the file) for a file that is
        refused, not there (the message then ends with ``does not exist``), not valid JSON or not
        an object."""
        path, msg = self._open(parts)
        if path is None:
            return None, msg
        where = self._where(parts)
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except json.JSONDecodeError as exc:
            return None, f"{where} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
        except (OSError, UnicodeDecodeError) as exc:
            return None, f"{where} cannot be read: {exc}"
        return (data, None) if isinstance(data, dict) else (None, f"{where} is not a JSON object")

    def table(self, *parts: str) -> tuple[pd.DataFrame | None, str | None]:
        """A Parquet file as (table, None) or (None, message naming the file)."""
        path, msg = self._open(parts)
        if path is None:
            return None, msg
        try:
            return pd.read_parquet(path), None
        except Exception as exc:  # pyarrow raises several unrelated types for a damaged file
            return None, f"{self._where(parts)} is not a readable Parquet file ({type(exc).__name__}: {exc})"

    def _folders(self, folder: str) -> list[str]:
        try:
            root = self.file(folder)
        except OutsideRootError:
            return []
        return sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []

    # -- records --------------------------------------------------------------------------
    def manifest(self) -> RunManifest:
        """The manifest (read once); status ``unreadable`` with a ``problem`` naming the file."""
        if self._manifest is None:
            raw, msg = self.object("manifest.json")
            self._manifest = self._manifest_record(raw) if raw is not None else RunManifest(
                self.path.name, "unreadable", {}, msg)
        return self._manifest

    def _manifest_record(self, raw: dict[str, Any]) -> RunManifest:
        st = raw.get("status")
        return RunManifest(str(raw.get("run_id") or self.path.name), st if isinstance(st, str) else "unknown", raw)

    def probe_names(self, configured: bool = False) -> list[str]:
        """Probes named in the manifest, then probe folders it does not name, then (``configured``)
        probes of the run's config that have neither."""
        names = list(self.manifest().probes)
        names += [n for n in self._folders("probes") if n not in names]
        for p in (self.manifest().config.get("probes") or []) if configured else []:
            n = (p.get("name") or p.get("probe")) if isinstance(p, Mapping) else (p if isinstance(p, str) else None)
            if n and str(n) not in names:
                names.append(str(n))
        return names

    def explain_names(self) -> list[str]:
        names = list(self.manifest().explain)
        return names + [n for n in self._folders("explain") if n not in names]

    def _step(self, folder: str, name: str) -> tuple[dict[str, Any], dict[str, Any], str, str, str]:
        """(summary, manifest entry, status, reason, where) by the rules of the module docstring."""
        entries = self.manifest().probes if folder == "probes" else self.manifest().explain
        entry = entries.get(name, {})
        summary, msg = self.object(folder, name, "summary.json")
        where = self._where((folder, name, "summary.json"))
        if summary is None and msg is not None and msg.endswith("does not exist"):
            partial = self.path.joinpath(folder, name, "partial").is_dir()
            status = str(entry.get("status") or ("running" if partial else "not started"))
            if status == "complete":
                return {}, entry, "incomplete", f"{msg}, although the manifest marks it complete", where
            why = entry.get("error") or entry.get("reason") or _NO_SUMMARY.get(status, "no results were written")
            return {}, entry, status, str(why), where
        if summary is None:
            return {}, entry, "unreadable", str(msg), where
        status = str(summary.get("status") or "unknown")
        why = "" if status == "complete" else (summary.get("error") or entry.get("error") or entry.get("reason") or "")
        return summary, entry, status, str(why), where

    def probe(self, name: str) -> ProbeRecord:
        """Probe ``name``: status, reason, summary, typed metrics (only when complete)."""
        summary, entry, status, reason, where = self._step("probes", name)
        metrics, problems = metric_values(summary.get("metrics") or {}, where) if status == "complete" else ({}, [])
        return ProbeRecord(self, "probes", name, status, reason, summary, entry, tuple(problems),
                           probe=str(summary.get("probe") or entry.get("probe") or name), metrics=metrics)

    def explain(self, name: str) -> ExplainRecord:
        """Explain step ``name``: status, reason, summary and its metrics per method."""
        summary, entry, status, reason, where = self._step("explain", name)
        per_method: dict[str, dict[str, MetricValue]] = {}
        problems: list[str] = []
        raw = summary.get("metrics") if status == "complete" else None
        for method, mm in as_dict(raw).items():
            per_method[str(method)], probs = metric_values(mm, f"{where} [{method}]")
            problems += probs
        return ExplainRecord(self, "explain", name, status, reason, summary, entry, tuple(problems),
                             method_metrics=per_method)

    def report_findings(self) -> list[Any] | None:
        """The key findings stored in ``report.json`` (``None`` when it is missing, unreadable or
        holds no list of them)."""
        findings = as_dict(as_dict(self.object("report.json")[0]).get("key_findings")).get("findings")
        return findings if isinstance(findings, list) else None

    def verdict(self, path: str | Path | None = None) -> VerdictRecord:
        """``verdict.json`` of the run, or the one at ``path`` (``taudit report --out``); a file
        that does not exist is no problem."""
        parts = (str(Path(path).absolute()) if path is not None else "verdict.json",)
        raw, msg = self.object(*parts)
        return VerdictRecord(raw, None if msg is None or msg.endswith("does not exist") else msg, self._where(parts))
