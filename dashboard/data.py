"""Read run directories for the dashboard — without Streamlit, and never outside the runs root.

Every path is resolved (symlinks followed) and refused unless it lies inside the resolved runs
root, so a symlinked run, probe folder or Parquet file that points elsewhere is reported, not read.
Loaders never raise for a bad or partial run directory: they return the data they could read and
a ``message`` that names the file and what is wrong with it, for the page to show.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from audit.results import MetricValue
from audit.store import RunDir, list_runs, read_json

logger = logging.getLogger(__name__)

VERDICT_ORDER = ("pass", "warn", "fail")
CHECK_OUTCOMES = (*VERDICT_ORDER, "missing")  # audit.policy: a check whose metric is absent
ATTRIBUTION_COLUMNS = ("example", "method", "token_index", "token", "score")


class OutsideRootError(ValueError):
    """A path that resolves outside the runs root (e.g. through a symlink)."""


def as_dict(x: Any) -> dict[str, Any]:
    """``x`` when it is a JSON object, else an empty one (for fields of hand-edited JSON)."""
    return x if isinstance(x, dict) else {}


class RunsRoot:
    """The folder that holds run directories; the only place the dashboard reads from."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.given = Path(root).expanduser()
        self.root = self.given.resolve()

    def __repr__(self) -> str:
        return f"RunsRoot({str(self.root)!r})"

    def exists(self) -> bool:
        return self.root.is_dir()

    def inside(self, path: str | os.PathLike[str]) -> Path:
        """``path`` resolved; :class:`OutsideRootError` unless it lies inside the root."""
        resolved = Path(path).resolve()
        if resolved != self.root and not resolved.is_relative_to(self.root):
            raise OutsideRootError(f"{path} resolves to {resolved}, outside the runs root {self.root}")
        return resolved

    def run_ids(self) -> list[str]:
        """Names of the run directories (folders with a manifest.json) directly under the root."""
        return [rd.path.name for rd in list_runs(self.root)]

    def run_dir(self, run_id: str) -> RunDir:
        """The run directory ``run_id``; refuses names that are not a plain folder name in the root."""
        if not run_id or run_id in {".", ".."} or "/" in run_id or "\\" in run_id or "\0" in run_id:
            raise OutsideRootError(f"{run_id!r} is not a run directory name")
        return RunDir(self.inside(self.root / run_id))

    def file(self, run_id: str, *parts: str) -> Path:
        """A file inside run ``run_id``, resolved and checked to lie inside the root."""
        rd = self.run_dir(run_id)
        return self.inside(rd.path.joinpath(*parts))

    def stamp(self, run_id: str, *parts: str) -> tuple[Any, ...]:
        """Modification stamp of a run's files (for cache keys): changes whenever one is rewritten."""
        try:
            base = self.file(run_id, *parts)
        except OutsideRootError:
            return ("outside",)
        if not base.exists():
            return ("missing",)
        if base.is_file():
            st = base.stat()
            return (st.st_mtime_ns, st.st_size)
        out: list[tuple[str, int, int]] = []
        for p in sorted(base.rglob("*")):
            if p.is_file():
                st = p.stat()
                out.append((str(p.relative_to(base)), st.st_mtime_ns, st.st_size))
        return tuple(out)


def _read_json_file(rr: RunsRoot, run_id: str, *parts: str) -> tuple[Any, str | None]:
    """(object, None) or (None, message naming the file)."""
    rel = "/".join(parts)
    try:
        path = rr.file(run_id, *parts)
    except OutsideRootError as exc:
        return None, f"{run_id}/{rel}: refused — {exc}"
    if not path.is_file():
        return None, f"{run_id}/{rel} does not exist"
    try:
        return read_json(path), None
    except json.JSONDecodeError as exc:
        return None, f"{run_id}/{rel} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
    except (OSError, UnicodeDecodeError) as exc:
        return None, f"{run_id}/{rel} cannot be read: {exc}"


def _read_parquet_file(rr: RunsRoot, run_id: str, *parts: str) -> tuple[pd.DataFrame | None, str | None]:
    rel = "/".join(parts)
    try:
        path = rr.file(run_id, *parts)
    except OutsideRootError as exc:
        return None, f"{run_id}/{rel}: refused — {exc}"
    if not path.is_file():
        return None, f"{run_id}/{rel} does not exist"
    try:
        return pd.read_parquet(path), None
    except Exception as exc:  # pyarrow raises several unrelated types for a damaged file
        return None, f"{run_id}/{rel} is not a readable Parquet file ({type(exc).__name__}: {exc})"


# --------------------------------------------------------------------------------------------
# Runs
# --------------------------------------------------------------------------------------------


@dataclass
class RunInfo:
    """One row of the Runs page."""

    run_id: str
    status: str = "unknown"
    model: str = ""
    kind: str = ""
    source: str = ""
    probes: dict[str, str] = field(default_factory=dict)  # name -> status
    explain: dict[str, str] = field(default_factory=dict)
    verdict: str | None = None
    verdict_counts: dict[str, int] = field(default_factory=dict)
    verdict_checks: list[dict[str, Any]] = field(default_factory=list)
    created_at: str | None = None
    finished_at: str | None = None
    errors: list[str] = field(default_factory=list)
    message: str | None = None  # why the run could not be read (fully)
    manifest: dict[str, Any] = field(default_factory=dict)
    top_finding: str = ""  # the first key finding (report.json, else computed from the summaries)

    @property
    def readable(self) -> bool:
        return bool(self.manifest)


def _check_result(check: dict[str, Any]) -> str | None:
    for key in ("status", "result", "outcome"):
        v = check.get(key)
        if isinstance(v, str) and v.lower() in CHECK_OUTCOMES:
            return v.lower()
    return None


def parse_verdict(obj: Any) -> tuple[str | None, dict[str, int], str | None]:
    """(overall, counts per outcome, problem) from a ``verdict.json`` object (:mod:`audit.policy`).

    The overall verdict is the file's own ``status`` when it names one of pass/warn/fail, else the
    worst outcome among its checks.
    """
    if not isinstance(obj, dict):
        return None, {}, "verdict.json is not a JSON object"
    checks = obj.get("checks") or []
    counts: dict[str, int] = {}
    if isinstance(checks, list):
        for c in checks:
            r = _check_result(c) if isinstance(c, dict) else None
            if r:
                counts[r] = counts.get(r, 0) + 1
    for key in ("status", "verdict"):
        v = obj.get(key)
        if isinstance(v, str) and v.lower() in VERDICT_ORDER:
            return v.lower(), counts, None
    judged = [c for c in counts if c in VERDICT_ORDER]
    if judged:
        return max(judged, key=VERDICT_ORDER.index), counts, None
    return None, counts, "verdict.json names no pass/warn/fail outcome"


def load_run_info(rr: RunsRoot, run_id: str) -> RunInfo:
    info = RunInfo(run_id=run_id)
    try:
        rr.run_dir(run_id)
    except OutsideRootError as exc:
        info.status, info.message = "refused", f"run {run_id}: {exc}"
        return info
    manifest, msg = _read_json_file(rr, run_id, "manifest.json")
    if msg is not None or not isinstance(manifest, dict):
        info.status = "unreadable"
        info.message = msg or f"{run_id}/manifest.json is not a JSON object"
        return info
    info.manifest = manifest
    st = manifest.get("status")
    info.status = st if isinstance(st, str) else "unknown"
    model = as_dict(manifest.get("model"))
    cfg_models = as_dict(manifest.get("config")).get("models")
    first = as_dict(cfg_models[0]) if isinstance(cfg_models, list) and cfg_models else {}
    info.model = str(model.get("name") or first.get("name") or "")
    if "model" in manifest and manifest["model"] is None:  # models: [] — logged predictions, no model
        files = [Path(str(as_dict(f).get("path") or "")).name for fs in as_dict(manifest.get("datasets")).values()
                 if isinstance(fs, list) for f in fs]
        info.model = f"no model (logged predictions: {', '.join(dict.fromkeys(files)) or 'no file recorded'})"
    info.kind = str(model.get("kind") or "")
    info.source = str(model.get("source") or "")
    info.probes = {str(k): str(as_dict(v).get("status", "unknown")) for k, v in as_dict(manifest.get("probes")).items()}
    info.explain = {str(k): str(as_dict(v).get("status", "unknown")) for k, v in as_dict(manifest.get("explain")).items()}
    info.created_at = manifest.get("created_at")
    info.finished_at = manifest.get("finished_at")
    errs = manifest.get("errors")
    info.errors = [str(e) for e in errs] if isinstance(errs, list) else []
    verdict, vmsg = _read_json_file(rr, run_id, "verdict.json")
    if vmsg is None:
        info.verdict, info.verdict_counts, problem = parse_verdict(verdict)
        checks = verdict.get("checks") if isinstance(verdict, dict) else None
        info.verdict_checks = [c for c in checks if isinstance(c, dict)] if isinstance(checks, list) else []
        if problem:
            info.errors.append(f"{run_id}/{problem}")
    elif "does not exist" not in vmsg:
        info.errors.append(vmsg)
    info.top_finding = _top_finding(rr, run_id)
    return info


def _top_finding(rr: RunsRoot, run_id: str) -> str:
    """The first key finding of the run: from its report.json, else from its summary.json files."""
    report, msg = _read_json_file(rr, run_id, "report.json")
    findings = as_dict(as_dict(report).get("key_findings")).get("findings") if msg is None else None
    if not isinstance(findings, list):
        from reports.content import quick_findings

        try:
            findings = quick_findings(rr.run_dir(run_id))["findings"]
        except (OSError, ValueError) as exc:
            logger.debug("no findings for %s: %s", run_id, exc)
            return ""
    first = as_dict(findings[0]) if findings else {}
    return str(first.get("text") or "")


def probe_notices(p: ProbeData) -> list[str]:
    """The probe's warnings and its metrics' warnings, each once: a metric warning that a probe
    warning already states (``"metric: n < 30 …"``) is not repeated."""
    out = list(dict.fromkeys(w.strip() for w in p.warnings if w and w.strip()))
    for name, m in p.metrics.items():
        w = (m.warning or "").strip()
        if w and not any(w in x for x in out):
            out.append(f"{name}: {w}")
    return out


def runs_table(infos: list[RunInfo]) -> pd.DataFrame:
    """The Runs page table (plain values only; strings are shown as text by the data grid)."""
    rows = []
    for r in infos:
        rows.append({
            "run": r.run_id,
            "model": r.model,
            "kind": r.kind,
            "status": r.status,
            "verdict": r.verdict or "—",
            "top finding": r.top_finding or "—",
            "probes": ", ".join(f"{k} ({v})" if v != "complete" else k for k, v in r.probes.items()),
            "explain": ", ".join(r.explain),
            "date": (r.created_at or "")[:19].replace("T", " "),
            "problem": r.message or "; ".join(r.errors),
        })
    return pd.DataFrame(rows, columns=["run", "model", "kind", "status", "verdict", "top finding", "probes",
                                       "explain", "date", "problem"])


# --------------------------------------------------------------------------------------------
# Probes
# --------------------------------------------------------------------------------------------


@dataclass
class ProbeData:
    """What the Bias page shows for one probe of one run."""

    name: str
    status: str  # complete | failed | running | pending | missing | unreadable | ...
    message: str | None = None
    probe: str = ""
    metrics: dict[str, MetricValue] = field(default_factory=dict)
    breakdown: pd.DataFrame = field(default_factory=pd.DataFrame)
    items: pd.DataFrame | None = None
    items_message: str | None = None
    info: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    n_items: int | None = None

    @property
    def complete(self) -> bool:
        return self.status == "complete"

    @property
    def effect_column(self) -> str | None:
        col = self.info.get("item_effect")
        return col if isinstance(col, str) and self.items is not None and col in self.items.columns else None

    @property
    def text_columns(self) -> list[str]:
        cols = self.info.get("item_text") or []
        if self.items is None or not isinstance(cols, list):
            return []
        return [c for c in cols if isinstance(c, str) and c in self.items.columns]


def probe_names(rr: RunsRoot, run_id: str, manifest: dict[str, Any] | None = None) -> list[str]:
    """Probes named in the manifest, then probe folders the manifest does not name."""
    names: list[str] = []
    if manifest and isinstance(manifest.get("probes"), dict):
        names.extend(str(k) for k in manifest["probes"])
    try:
        folder = rr.file(run_id, "probes")
    except OutsideRootError:
        return names
    if folder.is_dir():
        for p in sorted(folder.iterdir()):
            if p.is_dir() and p.name not in names:
                names.append(p.name)
    return names


def _metric_values(raw: Any, where: str) -> tuple[dict[str, MetricValue], list[str]]:
    out: dict[str, MetricValue] = {}
    problems: list[str] = []
    if not isinstance(raw, dict):
        return out, [f"{where}: 'metrics' is not an object"]
    for k, v in raw.items():
        try:
            if not isinstance(v, dict):
                raise TypeError("not an object")
            out[str(k)] = MetricValue.from_dict(v)
        except (TypeError, ValueError) as exc:
            problems.append(f"{where}: metric {k!r} cannot be read ({exc})")
    return out, problems


def load_probe(rr: RunsRoot, run_id: str, name: str, manifest: dict[str, Any] | None = None) -> ProbeData:
    entry = {}
    if manifest and isinstance(manifest.get("probes"), dict) and isinstance(manifest["probes"].get(name), dict):
        entry = manifest["probes"][name]
    summary, msg = _read_json_file(rr, run_id, "probes", name, "summary.json")
    if msg is not None:
        if "does not exist" in msg:
            st = str(entry.get("status") or "missing")
            if st == "complete":  # the manifest says complete but the result is gone
                return ProbeData(name, "missing", f"{msg}, although the manifest says the probe completed")
            why = entry.get("error") or entry.get("reason")
            text = {"running": "still running — no results written yet",
                    "pending": "not started yet",
                    "failed": "failed",
                    "skipped": "skipped"}.get(st, "has no results")
            return ProbeData(name, st, f"Probe {name} {text}" + (f": {why}" if why else ""))
        return ProbeData(name, "unreadable", msg)
    if not isinstance(summary, dict):
        return ProbeData(name, "unreadable", f"{run_id}/probes/{name}/summary.json is not a JSON object")
    st = str(summary.get("status") or "unknown")
    pd_ = ProbeData(name, st, probe=str(summary.get("probe") or name))
    if st != "complete":
        err = summary.get("error") or entry.get("error")
        pd_.message = f"Probe {name} {st}" + (f": {err}" if err else "")
        return pd_
    where = f"{run_id}/probes/{name}/summary.json"
    pd_.metrics, problems = _metric_values(summary.get("metrics") or {}, where)
    pd_.warnings = [str(w) for w in (summary.get("warnings") or []) if w]
    pd_.info = as_dict(summary.get("info"))
    n = summary.get("n_items")
    pd_.n_items = int(n) if isinstance(n, (int, float)) else None
    bd, bmsg = _read_parquet_file(rr, run_id, "probes", name, "breakdown.parquet")
    if bd is None:
        raw = summary.get("breakdown")
        if isinstance(raw, list) and raw:
            bd = pd.DataFrame(raw)
        elif bmsg and "does not exist" not in bmsg:
            problems.append(bmsg)
    pd_.breakdown = bd if bd is not None else pd.DataFrame()
    pd_.items, pd_.items_message = _read_parquet_file(rr, run_id, "probes", name, "items.parquet")
    if problems:
        pd_.message = "; ".join(problems)
    return pd_


def metrics_frame(metrics: dict[str, MetricValue]) -> pd.DataFrame:
    """One row per metric, with the metadata the metric carries (ideal, direction, test)."""
    rows = []
    for k, m in metrics.items():
        rows.append({
            "metric": k, "value": m.value, "ci_low": m.ci_low, "ci_high": m.ci_high, "ideal": m.ideal,
            "higher_is_better": {True: "higher", False: "lower", None: "closer to ideal"}[m.higher_is_better],
            "n": m.n, "p_value": m.p_value, "unit": m.unit, "test": m.test, "ci_method": m.ci_method,
            "warning": m.warning, "description": m.description,
        })
    return pd.DataFrame(rows)


def item_table(probe: ProbeData) -> pd.DataFrame:
    """Items with text columns first and the effect column next, sorted by |effect| (largest first)."""
    if probe.items is None:
        return pd.DataFrame()
    df = probe.items.copy()
    first = probe.text_columns + ([probe.effect_column] if probe.effect_column else [])
    df = df[first + [c for c in df.columns if c not in first]]
    eff = probe.effect_column
    if eff and pd.api.types.is_numeric_dtype(df[eff]):
        df = df.reindex(df[eff].abs().sort_values(ascending=False, kind="stable").index)
    return df.reset_index(drop=True)


def category_columns(probe: ProbeData, max_levels: int = 50) -> list[str]:
    """Item columns to offer as filters: the breakdown's group_by columns, then low-cardinality text."""
    if probe.items is None:
        return []
    df = probe.items
    cols: list[str] = []
    if "group_by" in probe.breakdown.columns:
        cols.extend(str(c) for c in probe.breakdown["group_by"].dropna().unique() if c in df.columns)
    for c in df.columns:
        if c in cols or c in probe.text_columns:
            continue
        s = df[c]
        if (s.dtype == object or isinstance(s.dtype, pd.CategoricalDtype) or pd.api.types.is_bool_dtype(s)
                or pd.api.types.is_string_dtype(s)) and 1 < s.nunique(dropna=True) <= max_levels:
            cols.append(c)
    return cols


def filter_items(df: pd.DataFrame, filters: dict[str, list[Any]] | None = None, search: str = "",
                 search_columns: list[str] | None = None) -> pd.DataFrame:
    """Rows whose column values are among ``filters[col]`` and whose text contains ``search``.

    ``search`` is a plain, case-insensitive substring (not a regular expression) looked for in
    ``search_columns`` (every text column when not given).
    """
    mask = pd.Series(True, index=df.index)
    for col, allowed in (filters or {}).items():
        if allowed and col in df.columns:
            mask &= df[col].isin(allowed)
    if search:
        cols = search_columns or [c for c in df.columns if df[c].dtype == object or pd.api.types.is_string_dtype(df[c])]
        hit = pd.Series(False, index=df.index)
        needle = search.lower()
        for c in cols:
            if c in df.columns:
                hit |= df[c].astype(str).str.lower().str.contains(needle, regex=False, na=False)
        mask &= hit
    return df[mask]


# --------------------------------------------------------------------------------------------
# Explanations
# --------------------------------------------------------------------------------------------


@dataclass
class ExplainData:
    """What the Explain page shows for one explain/<name> folder."""

    name: str
    status: str
    message: str | None = None
    attributions: pd.DataFrame | None = None
    metrics: pd.DataFrame | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    method_metrics: dict[str, dict[str, MetricValue]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return self.status == "complete"


def explain_names(rr: RunsRoot, run_id: str, manifest: dict[str, Any] | None = None) -> list[str]:
    names: list[str] = []
    if manifest and isinstance(manifest.get("explain"), dict):
        names.extend(str(k) for k in manifest["explain"])
    try:
        folder = rr.file(run_id, "explain")
    except OutsideRootError:
        return names
    if folder.is_dir():
        for p in sorted(folder.iterdir()):
            if p.is_dir() and p.name not in names:
                names.append(p.name)
    return names


def load_explain(rr: RunsRoot, run_id: str, name: str, manifest: dict[str, Any] | None = None) -> ExplainData:
    entry = {}
    if manifest and isinstance(manifest.get("explain"), dict) and isinstance(manifest["explain"].get(name), dict):
        entry = manifest["explain"][name]
    summary, msg = _read_json_file(rr, run_id, "explain", name, "summary.json")
    if msg is not None:
        if "does not exist" in msg:
            st = str(entry.get("status") or "missing")
            err = entry.get("error")
            return ExplainData(name, st, f"Explanation {name} is {st} — no summary.json yet" + (f": {err}" if err else ""))
        return ExplainData(name, "unreadable", msg)
    if not isinstance(summary, dict):
        return ExplainData(name, "unreadable", f"{run_id}/explain/{name}/summary.json is not a JSON object")
    st = str(summary.get("status") or "unknown")
    ed = ExplainData(name, st, summary=summary)
    if st != "complete":
        err = summary.get("error") or entry.get("error")
        ed.message = f"Explanation {name} {st}" + (f": {err}" if err else "")
        return ed
    ed.warnings = [str(w) for w in (summary.get("warnings") or []) if w]
    problems: list[str] = []
    raw = summary.get("metrics")
    if isinstance(raw, dict):
        for method, mm in raw.items():
            vals, probs = _metric_values(mm, f"{run_id}/explain/{name}/summary.json [{method}]")
            ed.method_metrics[str(method)] = vals
            problems.extend(probs)
    attr, amsg = _read_parquet_file(rr, run_id, "explain", name, "attributions.parquet")
    if amsg:
        problems.append(amsg)
    elif attr is not None:
        missing = [c for c in ATTRIBUTION_COLUMNS if c not in attr.columns]
        if missing:
            problems.append(f"{run_id}/explain/{name}/attributions.parquet lacks column(s) {', '.join(missing)}")
        else:
            ed.attributions = attr
    met, mmsg = _read_parquet_file(rr, run_id, "explain", name, "metrics.parquet")
    if mmsg and "does not exist" not in mmsg:
        problems.append(mmsg)
    elif met is not None:
        if not {"example", "method", "metric", "value"} <= set(met.columns):
            problems.append(f"{run_id}/explain/{name}/metrics.parquet lacks the columns example, method, metric, value")
        else:
            ed.metrics = met
    if problems:
        ed.message = "; ".join(problems)
    return ed


def _has(df: pd.DataFrame, col: str) -> pd.Series:
    return df[col].notna() if col in df.columns else pd.Series(False, index=df.index)


def method_parts(rows: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Split one method's rows of attributions.parquet by what they hold (the layouts of
    :mod:`audit.explain.attributions`).

    ``tokens``: one score per token (one target); ``generation``: per-token scores of several
    targets (each generated token; ``target_index``) — a target × source matrix; ``attention``:
    token × token matrices per layer and head; ``layers``: one matrix per layer; ``matrix``: one
    token × token matrix (e.g. attention rollout); ``head_importance``: one score per (layer, head).
    """
    src, lay, head, tok = (_has(rows, c) for c in ("source_index", "layer", "head", "token_index"))
    parts: dict[str, pd.DataFrame] = {}
    per_token = rows[~src & ~lay & tok]
    if len(per_token):
        n_idx = per_token["target_index"].nunique() if "target_index" in per_token.columns else 0
        n_names = per_token["target"].nunique() if "target" in per_token.columns else 0
        parts["generation" if max(n_idx, n_names) > 1 else "tokens"] = per_token
    mat = rows[src & tok]
    if len(mat):
        if _has(mat, "head").any():
            parts["attention"] = mat[_has(mat, "head")]
        elif _has(mat, "layer").any():
            parts["layers"] = mat
        else:
            parts["matrix"] = mat
    heads = rows[~src & lay & head & ~tok]
    if len(heads):
        parts["head_importance"] = heads
    return parts


def example_texts(attr: pd.DataFrame) -> dict[int, str]:
    """example id -> its text (first text stored for it)."""
    if "text" not in attr.columns:
        return {int(e): f"example {int(e)}" for e in sorted(attr["example"].dropna().unique())}
    first = attr.dropna(subset=["example"]).drop_duplicates("example").sort_values("example")
    return {int(e): str(t) for e, t in zip(first["example"], first["text"], strict=True)}


def token_scores(rows: pd.DataFrame) -> pd.DataFrame:
    """token_index, token, score for a per-token method (mean over layers/heads if any)."""
    df = rows.groupby("token_index", as_index=False).agg(token=("token", "first"), score=("score", "mean"))
    return df.sort_values("token_index").reset_index(drop=True)


def matrix(rows: pd.DataFrame, row_col: str = "token_index", col_col: str = "source_index") -> pd.DataFrame:
    """A square-ish score matrix (rows attend to / are explained by columns), mean over duplicates."""
    return rows.pivot_table(index=row_col, columns=col_col, values="score", aggfunc="mean").sort_index(axis=0).sort_index(axis=1)
