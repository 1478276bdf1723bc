"""Markdown model card in the Hugging Face model-card layout.

Strings from the run (model names, dataset rows, probe names, errors) are Markdown-escaped by
the template environment's ``finalize`` hook: every ``{{ }}`` output is escaped unless a filter
returned :class:`Md` (already-safe Markdown such as a formatted number). So a ``<script>`` in a
dataset stays text, and a ``|`` cannot break a table.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import yaml
from jinja2 import Environment, PackageLoader, StrictUndefined

from audit.views import fmt_ci as _ci
from audit.views import fmt_num as _num
from audit.views import fmt_pval as _pval
from reports import knowledge

_SPECIAL = re.compile(r"([\\`*_{}\[\]<>#|~&!])")
_LEADING = re.compile(r"^(\s*)(\d+)([.)])(?=\s|$)|^(\s*)([-+])(?=\s|$)")


class Md(str):
    """A string that is already valid Markdown (not escaped again)."""


def md_escape(s: Any) -> str:
    """Escape Markdown/HTML syntax in one inline string (newlines become spaces)."""
    text = " ".join(str(s).split())
    text = _SPECIAL.sub(r"\\\1", text)
    return _LEADING.sub(lambda m: (f"{m[1]}{m[2]}\\{m[3]}" if m[2] else f"{m[4]}\\{m[5]}"), text)


def _finalize(v: Any) -> Any:
    if isinstance(v, Md):
        return v
    if v is None:
        return "—"
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return Md(_num(v))
    return md_escape(v)


def _md_num(x: Any) -> Md:
    return Md(_num(x)) if not isinstance(x, str) else Md(md_escape(x))


def _code(x: Any) -> Md:
    """Content for an inline code span: backticks removed, single line."""
    return Md(" ".join(str(x).replace("`", "'").split()))


def _code_cell(x: Any) -> Md:
    """A code span inside a table cell: GFM splits cells at "|" even inside code, unless escaped."""
    return Md(_code(x).replace("|", "\\|"))


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def _base_model(model: Mapping[str, Any]) -> str | None:
    """The Hub id the audited weights come from: a demo's original, or the name when it is a
    Hub id (``org/name``) that was not loaded from a local folder."""
    demo = model.get("demo")
    if demo in knowledge.DEMO_BASE_MODELS:
        return knowledge.DEMO_BASE_MODELS[str(demo)]
    name, source = str(model.get("name") or ""), str(model.get("source") or "")
    if _HUB_ID.match(name) and not source.startswith(("/", ".")) and ":" not in source[:3]:
        return name
    return None


def front_matter(doc: Mapping[str, Any]) -> dict[str, Any]:
    """Hugging Face model-card metadata: tags, ``base_model``, ``datasets`` and a ``model-index``
    with each probe's headline result (task, dataset name and revision, metric name and value),
    in the layout of ``huggingface_hub.metadata_eval_result`` so the Hub renders it."""
    model = doc["model"]
    kind = model.get("kind")
    meta: dict[str, Any] = {"tags": ["bias-audit", "transformer-audit", "responsible-ai",
                                     *([str(kind)] if kind else [])]}
    base = _base_model(model)
    if base:
        meta["base_model"] = base
    files = {d["probe"]: d for d in reversed(doc.get("datasets") or [])}  # first file of each probe
    hub_ids: list[str] = []
    results = []
    for p in doc["probes"]:
        m = next((x for x in p["metrics"] if x["name"] == p["primary_metric"]), None)
        if m is None or m["value"] is None:
            continue
        name, hub = knowledge.PROBE_DATASETS.get(p["probe"], (p["probe"], None))
        if hub and hub not in hub_ids:
            hub_ids.append(hub)
        dataset: dict[str, Any] = {"name": name, "type": hub or f"transformer-audit/{p['probe']}"}
        sha = (files.get(p["name"]) or {}).get("sha256")
        if sha:
            dataset["revision"] = f"sha256:{sha}"
        ci = f" {_ci(m)}" if m["ci_low"] is not None and m["ci_high"] is not None else ""
        results.append({
            "task": {"type": knowledge.KIND_TASKS.get(str(kind), "other"), "name": "Bias audit"},
            "dataset": dataset,
            "metrics": [{"type": m["name"], "name": f"{p['name']} {m['name']}{ci} (ideal {_num(m['ideal'])})",
                         "value": m["value"], "verified": False}],
        })
    if hub_ids:
        meta["datasets"] = hub_ids
    if results:
        meta["model-index"] = [{"name": str(model.get("name") or doc["run"]["run_id"]), "results": results}]
    meta["audit_run"] = doc["run"]["run_id"]
    if doc.get("verdict"):
        meta["audit_verdict"] = doc["verdict"]["status"]
    return meta


def environment() -> Environment:
    # autoescape is for HTML; this is Markdown, escaped by `finalize` (md_escape) instead
    env = Environment(loader=PackageLoader("reports", "templates"), autoescape=False, finalize=_finalize,  # nosec B701
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                      keep_trailing_newline=True)
    env.filters.update(num=_md_num, code=_code, code_cell=_code_cell, ci=lambda d: Md(_ci(d)), pval=lambda x: Md(_pval(x)))
    return env


def render_model_card(doc: Mapping[str, Any]) -> str:
    """The model card as Markdown text."""
    meta = Md(yaml.safe_dump(front_matter(doc), sort_keys=False, allow_unicode=True).strip())
    text = environment().get_template("model_card.md.j2").render(doc=doc, front_matter=meta)
    return re.sub(r"\n{3,}", "\n\n", text)
