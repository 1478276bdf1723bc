"""Collect everything a report shows from one run directory into a JSON-ready document.

The document is what ``report.json`` holds; the HTML, PDF and Markdown renderers draw only from
it, so every number in the HTML is also in the JSON. Nothing here runs a model: it reads
``manifest.json``, ``probes/*/summary.json`` + ``items.parquet`` / ``breakdown.parquet``,
``explain/*/`` tables and ``verdict.json``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from audit.rundir_view import RunView, StepRecord, VerdictRecord, as_dict
from audit.store import RunDir, now_iso, package_version
from audit.views import breakdown_row, breakdown_rows, metric_entry, probe_warnings, py, top_items
from audit.views import clip as _clip
from audit.views import finite as _num
from reports import knowledge, mechanism
from reports.compute import compute_section
from reports.findings import key_findings

logger = logging.getLogger(__name__)

REPORT_SCHEMA_VERSION = "1.0"
MAX_EXAMPLES = 6
MAX_TOKENS = 96
MAX_MATRIX = 48


class ReportError(ValueError):
    """The path is not a run directory, or a requested format cannot be produced."""


def _probe_entry(rd: RunView, name: str) -> dict[str, Any]:
    """The probe's entry, or its missing entry (``status`` other than complete, and a reason)."""
    rec = rd.probe(name)
    if not rec.complete:
        return {"name": name, "probe": rec.probe, "status": rec.status,
                "reason": _clip(rec.reason or f"status {rec.status}", 2000)}
    summary = rec.summary
    metrics = [metric_entry(k, v.to_dict()) for k, v in rec.metrics.items()]
    bd, bnote = rec.breakdown()
    breakdown, bnote = breakdown_rows(bd.to_dict(orient="records"), bnote or "")
    items, inote = rec.items()
    data = summary.get("data")
    return {
        "name": name,
        "probe": rec.probe,
        "status": "complete",
        "duration_s": _num(summary.get("duration_s", rec.entry.get("duration_s"))),
        "finished_at": summary.get("finished_at"),
        "n_items": py(summary.get("n_items")),
        "data": py(data) if data is not None else None,
        "options": py(summary.get("options") or {}),
        "primary_metric": rec.primary_metric,
        "metrics": metrics,
        "breakdown": breakdown,
        "breakdown_note": bnote,
        "top_items": top_items(items, rec.item_effect, rec.item_text, inote or ""),
        "warnings": probe_warnings([*rec.warnings, *rec.problems], metrics),
    }


# -- explainers --------------------------------------------------------------------------------

def _has(df: pd.DataFrame, col: str) -> bool:
    return col in df.columns and df[col].notna().any()


def _token_row(rows: pd.DataFrame) -> dict[str, Any]:
    """One heatmap row: a score per input token (mean over layer/head rows when there are several)."""
    agg = rows.groupby("token_index", sort=True).agg(token=("token", "first"), score=("score", "mean"))
    per_token = rows.groupby("token_index").size().max()
    note = f"mean over {int(per_token)} layer/head rows per token" if per_token > 1 else ""
    if len(agg) > MAX_TOKENS:
        note = (note + "; " if note else "") + f"first {MAX_TOKENS} of {len(agg)} tokens shown"
        agg = agg.iloc[:MAX_TOKENS]
    return {"kind": "tokens", "tokens": [str(t) for t in agg["token"]],
            "scores": [_num(s) for s in agg["score"]], "note": note}


def _grid(rows: pd.DataFrame, index: str, columns: str, labels: tuple[Callable[[Any], str], Callable[[Any], str]],
          are: tuple[str, str], notes: list[str]) -> dict[str, Any]:
    """The mean score per (``index``, ``columns``) as a matrix body (at most MAX_MATRIX square,
    noted), its rows and columns named by ``labels`` and described by ``are``."""
    mat = rows.pivot_table(index=index, columns=columns, values="score", aggfunc="mean").sort_index().sort_index(axis=1)
    if mat.shape[0] > MAX_MATRIX or mat.shape[1] > MAX_MATRIX:
        notes.append(f"first {MAX_MATRIX}×{MAX_MATRIX} of {mat.shape[0]}×{mat.shape[1]} shown")
        mat = mat.iloc[:MAX_MATRIX, :MAX_MATRIX]
    return {"kind": "matrix", "row_tokens": [labels[0](i) for i in mat.index],
            "col_tokens": [labels[1](j) for j in mat.columns],
            "matrix": [[_num(v) for v in r] for r in mat.to_numpy(dtype=float, na_value=float("nan"))],
            "rows_are": are[0], "cols_are": are[1], "note": ", ".join(notes)}


def _matrix(rows: pd.DataFrame) -> dict[str, Any]:
    """Token × token scores: attention (last layer, mean over heads), rollout / flow, or the
    attribution of each generated token (target_index) over the input tokens."""
    notes: list[str] = []
    if _has(rows, "layer"):
        last = rows["layer"].max()
        rows = rows[rows["layer"] == last]
        notes.append(f"layer {int(last)}")
    if _has(rows, "head") and rows["head"].nunique() > 1:
        notes.append(f"mean over {rows['head'].nunique()} heads")
    if _has(rows, "target_index"):
        r_idx, c_idx, rows_are = "target_index", "token_index", "generated token"
        row_labels = rows.groupby("target_index")["target"].first().astype(str)
        col_labels = rows.groupby("token_index")["token"].first().astype(str)
    else:
        r_idx, c_idx, rows_are = "token_index", "source_index", "attending token"
        row_labels = col_labels = rows.groupby("token_index")["token"].first().astype(str)
    return _grid(rows, r_idx, c_idx, (lambda i: str(row_labels.get(i, i)), lambda j: str(col_labels.get(j, j))),
                 (rows_are, "source token"), notes)


def _views(rows: pd.DataFrame) -> list[tuple[str, dict[str, Any]]]:
    """(target label, body) for one example and method, by the layout of its rows."""
    if _has(rows, "source_index") or _has(rows, "target_index"):
        return [("", _matrix(rows))]
    if not _has(rows, "token_index"):  # per-head scores (e.g. head importance, Michel et al. 2019)
        if not (_has(rows, "layer") and _has(rows, "head")):
            return []
        return [("", _grid(rows, "layer", "head", (lambda i: f"layer {int(i)}", lambda j: f"head {int(j)}"),
                           ("layer", "head"), []))]
    targets = rows["target"].fillna("").astype(str) if "target" in rows.columns else pd.Series("", index=rows.index)
    return [(str(t), _token_row(g)) for t, g in rows.groupby(targets, sort=False)]


def _explainer_entry(rd: RunView, name: str) -> dict[str, Any]:
    """The explain step's entry, or its missing entry (named ``explain/<name>``)."""
    rec = rd.explain(name)
    if not rec.complete:
        return {"name": f"explain/{name}", "probe": "explain", "status": rec.status,
                "reason": _clip(rec.reason or "no complete results were written", 2000)}
    summary = rec.summary
    attr, aerr = rec.table("attributions.parquet")
    mets, merr = rec.table("metrics.parquet")
    warnings = rec.warnings + [e for e in (aerr, merr, *rec.problems) if e and not e.endswith("does not exist")]

    method_metrics = [metric_entry(metric, mv.to_dict()) | {"method": str(method), "metric": str(metric),
                                                            "source": "summary"}
                      for method, md in rec.method_metrics.items() for metric, mv in md.items()]
    point = None
    if mets is not None and len(mets):
        point = mets[mets["k"].isna()] if "k" in mets.columns else mets
        other = point["other_method"] if "other_method" in point.columns else pd.Series(None, index=point.index)
        point = point.assign(key=point["metric"].astype(str) + other.map(lambda o: f":{o}" if isinstance(o, str) and o else ""))
        if not method_metrics:
            method_metrics = [metric_entry(str(key), {"value": s_.mean(), "n": int(s_.notna().sum())})
                              | {"method": str(method), "metric": str(key), "source": "mean over examples"}
                              for (method, key), s_ in point.groupby(["method", "key"], sort=True)["value"]]
    warnings += [f"{r['method']} {r['metric']}: {r['warning']}" for r in method_metrics if r["warning"]]

    examples: list[dict[str, Any]] = []
    methods = [str(m) for m in summary.get("methods") or []]
    if attr is not None and len(attr):
        if not methods:
            methods = [str(m) for m in attr["method"].dropna().unique()]
        ex_ids = sorted(attr["example"].dropna().unique())
        for ex in ex_ids[:MAX_EXAMPLES]:
            ex_rows = attr[attr["example"] == ex]
            text = _clip(ex_rows["text"].iloc[0] if "text" in ex_rows.columns else "", 2000)
            for method, rows in ex_rows.groupby("method", sort=False):
                ex_metrics: dict[str, float | None] = {}
                if point is not None:
                    sel = point[(point["example"] == ex) & (point["method"] == method)]
                    ex_metrics = {str(k): _num(v) for k, v in sel.groupby("key", sort=True)["value"].mean().items()}
                for target, body in _views(rows):
                    if not target and body["kind"] == "matrix" and body["rows_are"] == "generated token":
                        target = _clip(", ".join(body["row_tokens"][:5]), 200)
                    examples.append({"example": py(ex), "text": text, "method": str(method),
                                     "target": _clip(target, 200), "metrics": ex_metrics, **body})
        if len(ex_ids) > MAX_EXAMPLES:
            warnings.append(f"{len(ex_ids)} examples; the first {MAX_EXAMPLES} are shown")
    return {
        "name": name,
        "status": "complete",
        "methods": methods,
        "target": py(summary.get("target")),
        "duration_s": _num(rec.entry.get("duration_s", summary.get("duration_s"))),
        "method_metrics": method_metrics,
        "examples": examples,
        "warnings": warnings,
    }


# -- identity, limitations, reproducibility ----------------------------------------------------

_MODEL_KEYS = ("name", "source", "kind", "architecture", "revision", "dtype", "device", "parameters", "demo")


def one_line(v: Any) -> str | None:
    """A manifest value as one line of text (lists joined, mappings as ``k=v``)."""
    if v is None:
        return None
    if isinstance(v, (list, tuple)):
        return ", ".join(str(x) for x in v)
    if isinstance(v, Mapping):
        return ", ".join(f"{k}={x}" for k, x in v.items())
    return str(v)


def _model(manifest: Mapping[str, Any]) -> dict[str, Any]:
    m = manifest.get("model") or {}
    out: dict[str, Any] = {k: one_line(m.get(k)) for k in _MODEL_KEYS}
    params = _num(m.get("parameters"))
    out["parameters"] = int(params) if params is not None else None
    hashes = m.get("weights_sha256") or {}
    out["weights_sha256"] = [{"file": str(f), "sha256": str(h)} for f, h in hashes.items()] if isinstance(hashes, Mapping) else []
    out["other"] = {str(k): _clip(one_line(py(v)), 500) if v is not None else None
                    for k, v in m.items() if k not in _MODEL_KEYS and k != "weights_sha256"}
    # "model": null — a run on logged predictions without a model (``models: []``)
    out["model_free"] = "model" in manifest and manifest["model"] is None
    return out


def _quantization(model: Mapping[str, Any]) -> str:
    """What the manifest says about quantized weights: its ``quantization`` field, else any
    identity field naming a GGUF file ("" when the weights are not marked as quantized)."""
    other = model.get("other") or {}
    if other.get("quantization"):
        return str(other["quantization"])
    for v in (model.get("source"), model.get("name"), *other.values()):
        if v and "gguf" in str(v).lower():
            return str(v)
    return ""


def _datasets(manifest: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [{"probe": str(probe), "path": str(f.get("path", "")), "sha256": str(f.get("sha256") or ""),
             "bytes": py(f.get("bytes")), "rows": py(f.get("rows"))}
            for probe, files in (manifest.get("datasets") or {}).items() for f in files or [] if isinstance(f, Mapping)]


def _verdict(rec: VerdictRecord) -> dict[str, Any] | None:
    """A ``verdict.json`` (written by the runner or ``taudit report --policy``), if any, as
    :class:`audit.rundir_view.VerdictRecord` reads it (status recomputed from the checks)."""
    data = rec.raw
    if data is None:
        return None
    policy = as_dict(data.get("policy"))
    return {
        "status": rec.status,
        "failed": rec.failed,
        "counts": rec.counts,
        "policy": {"name": str(policy.get("name") or ""), "source": str(policy.get("source") or "")},
        "evaluated_at": str(data.get("evaluated_at") or ""),
        "note": str(data.get("note") or ""),
        "checks": rec.checks,
    }


def _audit_compute(rd: RunView, limitations: list[dict[str, str]]) -> dict[str, Any]:
    """Each probe's and explain step's own compute (``compute-rank*.json`` in its folder, summed over
    the ranks), explain steps keyed ``explain/<name>`` as in ``durations``; an unreadable record
    becomes a limitation instead of stopping the report."""
    out: dict[str, Any] = {}
    steps: list[tuple[str, StepRecord]] = [(n, rd.probe(n)) for n in sorted(rd.probe_names())]
    steps += [(f"explain/{n}", rd.explain(n)) for n in sorted(rd.explain_names())]
    for name, rec in steps:
        figures, err = rec.compute()
        if err:
            limitations.append({"topic": f"Compute record ({name})", "text": _clip(err, 2000), "source": "run directory"})
        elif figures is not None:
            out[name] = py(figures)
    return out


def quick_findings(run_dir: RunView | RunDir | str | Path) -> dict[str, Any]:
    """The key findings of a run from its ``summary.json`` files alone (no parquet, no plots):
    what the dashboard's Runs page shows for runs whose report.json is missing."""
    rd = run_dir if isinstance(run_dir, RunView) else RunView(run_dir)
    probes = [{"name": rec.name, "metrics": [metric_entry(k, v.to_dict()) for k, v in rec.metrics.items()],
               "primary_metric": rec.primary_metric,
               "breakdown": [breakdown_row(r) for r in rec.summary.get("breakdown") or []]}
              for rec in map(rd.probe, sorted(rd.probe_names())) if rec.complete]
    return key_findings({"probes": probes, "missing": [], "limitations": [], "verdict": None})


def collect_report(run_dir: RunView | RunDir | str | Path, verdict_file: str | Path | None = None) -> dict[str, Any]:
    """Build the report document (the content of ``report.json``) from a run directory;
    ``verdict_file`` replaces the run's own ``verdict.json`` (``taudit report --policy --out``)."""
    rd = run_dir if isinstance(run_dir, RunView) else RunView(run_dir)
    man = rd.manifest()
    if not man.readable:
        if not rd.exists():
            raise ReportError(f"{rd.path} is not a run directory (no manifest.json)")
        raise ReportError(f"{rd.path}: {man.problem}")
    manifest, status = man.raw, man.status
    probes = [_probe_entry(rd, n) for n in rd.probe_names(configured=True)]
    explainers = [_explainer_entry(rd, n) for n in rd.explain_names()]
    missing = [e for e in probes + explainers if e["status"] != "complete"]
    probes = [e for e in probes if e["status"] == "complete"]
    explainers = [e for e in explainers if e["status"] == "complete"]

    notice = {
        "complete": "Some results are missing from this run (listed under Limitations)." if missing else "",
        "running": ("This run is still running: the results below are partial and will change. "
                    "Rebuild the report when the run is complete."),
        "failed": "This run failed before it finished: some results are missing (listed under Limitations).",
        "interrupted": ("This run was interrupted (Ctrl-C) before it finished: the results below are partial. "
                        "Rerun the same command to resume it."),
    }.get(status, f"This run's status is {status!r}: results may be incomplete.")

    verdict_rec = rd.verdict(verdict_file)
    model = _model(manifest)
    quant = _quantization(model)
    limitations = [{**knowledge.QUANTIZED_CAVEAT, "text": knowledge.QUANTIZED_CAVEAT["text"]
                    + f" Recorded in the manifest: {_clip(quant, 200)}."}] if quant else []
    for reg in dict.fromkeys(p["probe"] for p in probes):
        limitations += [dict(c) for c in knowledge.PROBE_CAVEATS.get(reg, [])]
    limitations += [dict(c) for c in knowledge.GENERAL_CAVEATS]
    limitations += [{"topic": f"Small sample / warning ({p['name']})", "text": w, "source": "probe summary"}
                    for p in probes for w in p["warnings"]]
    limitations += [{"topic": f"Explainer warning ({e['name']})", "text": w, "source": "explainer summary"}
                    for e in explainers for w in e["warnings"]]
    limitations += [{"topic": f"Missing result ({m['name']})", "text": f"{m['status']}: {m['reason']}",
                     "source": "run directory"} for m in missing]
    limitations += [{"topic": "Verdict", "text": problem, "source": "run directory"} for problem in verdict_rec.problems]

    env = manifest.get("environment") or {}
    config = manifest.get("config") or {}
    repro = {
        "run_id": str(manifest.get("run_id") or rd.path.name),
        "seed": py(manifest.get("seed", config.get("seed") if isinstance(config, Mapping) else None)),
        "created_at": py(manifest.get("created_at")),
        "finished_at": py(manifest.get("finished_at")),
        "duration_s": _num((manifest.get("timings") or {}).get("total_s")),
        "timings": py(manifest.get("timings") or {}),
        "durations": {p["name"]: p["duration_s"] for p in probes} | {f"explain/{e['name']}": e["duration_s"] for e in explainers},
        "audit_compute": {"run": py(manifest.get("compute")), "probes": _audit_compute(rd, limitations)},
        "config": py(config),
        "config_yaml": yaml.safe_dump(py(config), sort_keys=False, allow_unicode=True) if config else "",
        "versions": {str(k): py(v) for k, v in (env.get("versions") or {}).items()},
        "hardware": {str(k): py(v) for k, v in (env.get("hardware") or {}).items()},
        "argv": [str(a) for a in env.get("argv") or []],
        "errors": [_clip(e, 2000) for e in manifest.get("errors") or []],
    }
    doc: dict[str, Any] = {
        "schema_version": REPORT_SCHEMA_VERSION,
        "generator": {"name": "transformer-audit", "version": package_version()},
        "generated_at": now_iso(),
        "run": {"run_id": repro["run_id"], "status": status, "created_at": repro["created_at"],
                "finished_at": repro["finished_at"], "notice": notice,
                "manifest_schema_version": py(manifest.get("schema_version"))},
        "verdict": _verdict(verdict_rec),
        "model": model,
        "datasets": _datasets(manifest),
        "probes": probes,
        "missing": missing,
        "explainers": explainers,
        "limitations": limitations,
        "reproducibility": repro,
        "disclaimer": knowledge.DISCLAIMER,
    }
    doc["compute"] = compute_section(doc)
    doc["mechanism"] = mechanism.collect(rd, probes)
    doc["evidence"] = knowledge.evidence_rows(doc)
    doc["key_findings"] = key_findings(doc)
    return doc
