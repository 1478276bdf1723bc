"""Read run directories for the dashboard — without Streamlit, and never outside the runs root.

Every path is resolved (symlinks followed) and refused unless it lies inside the resolved runs
root, so a symlinked run, probe folder or Parquet file that points elsewhere is reported, not read.
Loaders never raise for a bad or partial run directory: they return the data they could read and
a ``message`` that names the file and what is wrong with it, for the page to show.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from audit.results import MetricValue
from audit.rundir_view import (
    ExplainRecord,
    OutsideRootError,
    ProbeRecord,
    RunManifest,
    RunView,
    VerdictRecord,
    as_dict,
)
from audit.store import RunDir, list_runs

logger = logging.getLogger(__name__)

ATTRIBUTION_COLUMNS = ("example", "method", "token_index", "token", "score")


class RunsRoot:
    """The folder that holds run directories; the only place the dashboard reads from."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser().resolve()

    def __repr__(self) -> str:
        return f"RunsRoot({str(self.root)!r})"

    def exists(self) -> bool:
        return self.root.is_dir()

    def run_ids(self) -> list[str]:
        """Names of the run directories (folders with a manifest.json) directly under the root."""
        return [rd.path.name for rd in list_runs(self.root)]

    def run_dir(self, run_id: str) -> RunDir:
        """The run directory ``run_id``; refuses names that are not a plain folder name in the root,
        and a folder that resolves (symlinks followed) outside it."""
        if not run_id or run_id in {".", ".."} or "/" in run_id or "\\" in run_id or "\0" in run_id:
            raise OutsideRootError(f"{run_id!r} is not a run directory name")
        return RunDir(RunView(self.root / run_id, root=self.root).file())

    def view(self, run_id: str, manifest: dict[str, Any] | None = None) -> RunView:
        """The reader of run ``run_id``, confined to the root (``manifest``: one already read)."""
        self.run_dir(run_id)
        return RunView(self.root / run_id, root=self.root, manifest=manifest)

    def file(self, run_id: str, *parts: str) -> Path:
        """A file inside run ``run_id``, resolved and checked to lie inside the root."""
        return self.view(run_id).file(*parts)

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


# --------------------------------------------------------------------------------------------
# Runs
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunInfo:
    """One row of the Runs page: the run's manifest and verdict records (:class:`RunView`), read
    as they are; a folder refused as outside the root is a record of status ``refused``."""

    run_id: str
    record: RunManifest
    verdict: VerdictRecord = VerdictRecord(None)
    top_finding: str = ""  # the first key finding (report.json, else computed from the summaries)

    @property
    def status(self) -> str:
        return self.record.status

    @property
    def manifest(self) -> dict[str, Any]:
        return self.record.raw

    @property
    def errors(self) -> list[str]:
        return self.record.errors + self.verdict.problems

    @property
    def model(self) -> str:
        """The model's name, or which logged predictions a run without a model (``models: []``) read."""
        m = self.record
        if "model" in m.raw and m.raw["model"] is None:
            files = [Path(str(as_dict(f).get("path") or "")).name for fs in m.datasets.values()
                     if isinstance(fs, list) for f in fs]
            return f"no model (logged predictions: {', '.join(dict.fromkeys(files)) or 'no file recorded'})"
        cfg_models = m.config.get("models")
        first = as_dict(cfg_models[0]) if isinstance(cfg_models, list) and cfg_models else {}
        return str(m.model.get("name") or first.get("name") or "")


def load_run_info(rr: RunsRoot, run_id: str) -> RunInfo:
    try:
        view = rr.view(run_id)
    except OutsideRootError as exc:
        return RunInfo(run_id, RunManifest(run_id, "refused", {}, f"run {run_id}: {exc}"))
    m = view.manifest()
    if not m.readable:
        return RunInfo(run_id, m)
    return RunInfo(run_id, m, view.verdict(), _top_finding(view))


def _top_finding(view: RunView) -> str:
    """The first key finding of the run: from its report.json, else from its summary.json files."""
    findings = view.report_findings()
    if findings is None:
        from reports.content import quick_findings

        try:
            findings = quick_findings(view)["findings"]
        except (OSError, ValueError) as exc:
            logger.debug("no findings for %s: %s", view.path.name, exc)
            return ""
    first = as_dict(findings[0]) if findings else {}
    return str(first.get("text") or "")


def runs_table(infos: list[RunInfo]) -> pd.DataFrame:
    """The Runs page table (plain values only; strings are shown as text by the data grid)."""
    rows = [{
        "run": r.run_id,
        "model": r.model,
        "kind": str(r.record.model.get("kind") or ""),
        "status": r.status,
        "verdict": r.verdict.status or "—",
        "top finding": r.top_finding or "—",
        "probes": ", ".join(k if e.get("status", "unknown") == "complete" else f"{k} ({e.get('status', 'unknown')})"
                            for k, e in r.record.probes.items()),
        "explain": ", ".join(r.record.explain),
        "date": (r.manifest.get("created_at") or "")[:19].replace("T", " "),
        "problem": r.record.problem or "; ".join(r.errors),
    } for r in infos]
    return pd.DataFrame(rows, columns=["run", "model", "kind", "status", "verdict", "top finding", "probes",
                                       "explain", "date", "problem"])


# --------------------------------------------------------------------------------------------
# Probes
# --------------------------------------------------------------------------------------------


@dataclass
class ProbeData:
    """What the Bias page shows for one probe of one run: its record (:meth:`RunView.probe`) and,
    when it is complete, its breakdown and items read; ``message`` says what could not be read."""

    record: ProbeRecord
    message: str | None = None
    breakdown: pd.DataFrame = field(default_factory=pd.DataFrame)
    items: pd.DataFrame | None = None
    items_message: str | None = None

    @property
    def effect_column(self) -> str | None:
        col = self.record.item_effect
        return col if col and self.items is not None and col in self.items.columns else None

    @property
    def text_columns(self) -> list[str]:
        return [c for c in self.record.item_text if c in self.items.columns] if self.items is not None else []


def load_probe(rr: RunsRoot, run_id: str, name: str, manifest: dict[str, Any] | None = None) -> ProbeData:
    """Probe ``name`` of run ``run_id`` (:meth:`audit.rundir_view.RunView.probe`), items loaded."""
    rec = rr.view(run_id, manifest).probe(name)
    if not rec.complete:
        return ProbeData(rec, rec.message)
    breakdown, bmsg = rec.breakdown()
    items, items_message = rec.items()
    return ProbeData(rec, "; ".join([*rec.problems, *([bmsg] if bmsg else [])]) or None, breakdown, items,
                     items_message)


def metrics_frame(metrics: dict[str, MetricValue]) -> pd.DataFrame:
    """One row per metric, with the metadata the metric carries (ideal, direction, test)."""
    return pd.DataFrame([{
        "metric": k, "value": m.value, "ci_low": m.ci_low, "ci_high": m.ci_high, "ideal": m.ideal,
        "higher_is_better": {True: "higher", False: "lower", None: "closer to ideal"}[m.higher_is_better],
        "n": m.n, "p_value": m.p_value, "unit": m.unit, "test": m.test, "ci_method": m.ci_method,
        "warning": m.warning, "description": m.description,
    } for k, m in metrics.items()])


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
                or pd.api.types.is_string_dtype(s)) and all(isinstance(v, Hashable) for v in s.dropna()) \
                and 1 < s.nunique(dropna=True) <= max_levels:  # no column of arrays (mediation's nie)
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
    """What the Explain page shows for one explain/<name> folder: its record
    (:meth:`RunView.explain`) and, when it is complete, its attributions and per-example metrics
    when they hold the columns the page needs; ``message`` says what could not be read."""

    record: ExplainRecord
    message: str | None = None
    attributions: pd.DataFrame | None = None
    metrics: pd.DataFrame | None = None


def load_explain(rr: RunsRoot, run_id: str, name: str, manifest: dict[str, Any] | None = None) -> ExplainData:
    """Explain step ``name`` of run ``run_id`` (:meth:`audit.rundir_view.RunView.explain`), with its
    attributions and per-example metrics checked for the columns the page needs."""
    rec = rr.view(run_id, manifest).explain(name)
    if not rec.complete:
        return ExplainData(rec, rec.message)
    ed = ExplainData(rec)
    problems = list(rec.problems)
    attr, amsg = rec.table("attributions.parquet")
    if amsg:
        problems.append(amsg)
    elif attr is not None:
        missing = [c for c in ATTRIBUTION_COLUMNS if c not in attr.columns]
        if missing:
            problems.append(f"{run_id}/explain/{name}/attributions.parquet lacks column(s) {', '.join(missing)}")
        else:
            ed.attributions = attr
    met, mmsg = rec.table("metrics.parquet")
    if mmsg and "does not exist" not in mmsg:
        problems.append(mmsg)
    elif met is not None:
        if not {"example", "method", "metric", "value"} <= set(met.columns):
            problems.append(f"{run_id}/explain/{name}/metrics.parquet lacks the columns example, method, metric, value")
        else:
            ed.metrics = met
    ed.message = "; ".join(problems) or None
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
