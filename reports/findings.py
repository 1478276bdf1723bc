"""Key findings: the first screen of every report, generated from the report document.

A finding is one probe result stated in plain language: what was measured, in which direction
it departs from the metric's ideal, by how much (value and 95 % interval, n), whether it survives
multiple-testing correction, and how it compares with the ideal. Candidates are each probe's
summary metrics that carry a hypothesis test (a p-value) or are the probe's primary metric, and
the per-category rows of the primary metric. All their p-values form one family corrected with
Benjamini–Hochberg (Benjamini & Hochberg 1995, JRSS-B 57(1)) at :data:`ALPHA`: a report that
tests forty categories does not present the smallest raw p-value as a discovery.

Findings are ranked by the standardised distance to the ideal, ``|value − ideal| / half-width of
the 95 % CI`` (≈ |z|/1.96 for a normal interval), so a precise moderate effect outranks a large
but uncertain one. Results whose interval contains the ideal, or whose p-value does not survive
correction, rank after those that do, and are worded as "no significant difference". At most
two findings come from one probe (its best summary metric and its best per-category row), so a probe with many categories cannot crowd out
the others; probes none of whose candidates are significant are listed as null results.

Nothing here reads files: :func:`key_findings` takes the document built by
:func:`reports.content.collect_report` and returns the ``key_findings`` section of it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from audit.stats import benjamini_hochberg
from audit.views import fmt_interval, fmt_num

ALPHA = 0.05
MIN_FINDINGS = 3
MAX_FINDINGS = 7
MAX_LIMITATIONS = 3


def slug(s: Any) -> str:
    """The anchor form of a name (same rule as the HTML template's ``slug`` filter)."""
    return re.sub(r"[^A-Za-z0-9_-]+", "-", str(s)).strip("-") or "x"


def _unit(u: str) -> str:
    return "" if not u else (u if u in ("%",) else f" {u}")


def _score(value: float, ideal: float, lo: float, hi: float) -> float:
    """|value − ideal| in half-widths of the CI (inf for a zero-width interval off the ideal)."""
    hw = (hi - lo) / 2
    gap = abs(value - ideal)
    if hw <= 0:
        return math.inf if gap > 0 else 0.0
    return gap / hw


_ORIENT = re.compile(r">\s*0\s*(?::|when|means|=)?\s*([^;()]+)")


def _label(desc: str) -> tuple[str, str]:
    """(short label, what a positive value means) from a metric description such as
    ``"mean stereotype-aligned effect in nats: > 0 when the model links … (masked: …)"``."""
    head = re.split(r":\s|\s\(", desc, maxsplit=1)[0].strip(" ,;")
    m = _ORIENT.search(desc)
    return head, (m[1].strip(" ,;.") if m else "")


def _candidates(doc: Mapping[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for p in doc.get("probes") or []:
        primary = p.get("primary_metric")
        out += [_candidate(p, m, m, f"probe-{slug(p['name'])}") for m in p["metrics"]
                if m["p_value"] is not None or m["name"] == primary]
        pm = next((m for m in p["metrics"] if m["name"] == primary), None) if primary else None
        if pm is not None:
            out += [_candidate(p, pm, r, f"breakdown-{slug(p['name'])}", r["group_by"], r["group"])
                    for r in p.get("breakdown") or [] if r["metric"] == primary and r["p_value"] is not None]
    return out


def _candidate(p: Mapping[str, Any], metric: Mapping[str, Any], row: Mapping[str, Any], section: str,
               group_by: str = "", group: str = "") -> dict[str, Any]:
    label, positive_means = _label(str(metric.get("description") or ""))
    where = f", {group_by} {group}" if group else ""
    return {
        "probe": p["name"], "metric": metric["name"], "group_by": group_by, "group": group,
        "section": section, "value": row["value"], "ci_low": row["ci_low"], "ci_high": row["ci_high"],
        "n": row["n"], "p_value": row["p_value"], "ideal": metric["ideal"], "unit": metric.get("unit") or "",
        "higher_is_better": metric.get("higher_is_better"),
        "what": f"{p['name']}{where} — {label or metric['name']} ({metric['name']})",
        "primary": not group and metric["name"] == p.get("primary_metric"), "positive_means": positive_means,
    }


def _judge(c: dict[str, Any], p_adj: float | None, m_tests: int) -> None:
    v, lo, hi, ideal = c["value"], c["ci_low"], c["ci_high"], c["ideal"]
    c["p_adjusted"] = p_adj
    c["survives_correction"] = None if p_adj is None else bool(p_adj < ALPHA)
    excludes = lo is not None and hi is not None and ideal is not None and not (lo <= ideal <= hi)
    c["ci_excludes_ideal"] = excludes
    c["significant"] = excludes and c["survives_correction"] is not False
    c["score"] = _score(v, ideal, lo, hi)
    c["direction"] = "at" if v == ideal else ("above" if v > ideal else "below")
    c["text"] = _sentence(c, m_tests)


def _sentence(c: Mapping[str, Any], m_tests: int) -> str:
    u = _unit(c["unit"])
    sign = "+" if c["ideal"] == 0 and c["value"] > 0 else ""
    num = f"{sign}{fmt_num(c['value'])}{u} {fmt_interval(c['ci_low'], c['ci_high'])}"
    n = f", n = {c['n']:,}" if c["n"] is not None else ""
    ideal = fmt_num(c["ideal"]) + u
    if c["significant"]:
        why = f": {c['positive_means']}" if c["direction"] == "above" and c["positive_means"] else ""
        compare = f"{c['direction']} the ideal {ideal}{why}"
    elif c["ci_excludes_ideal"]:
        compare = f"the interval excludes the ideal {ideal}, but not significantly after correction"
    else:
        compare = f"no significant difference from the ideal {ideal}"
    if c["p_value"] is None:
        test = "no hypothesis test; judged by the 95% interval"
    else:
        p = "p < 10⁻⁴" if c["p_value"] < 1e-4 else f"p = {c['p_value']:.2g}"
        kept = "survives" if c["survives_correction"] else "does not survive"
        test = f"{p}, {kept} Benjamini–Hochberg correction over {m_tests} tests"
    return f"{c['what']}: {num}{n}, {compare}; {test}."


def _top_limitations(doc: Mapping[str, Any]) -> list[dict[str, str]]:
    """The few caveats that matter most for this run: missing results, quantized weights, small
    samples (summarised), then the first dataset caveat of the probes that ran."""
    lims = doc.get("limitations") or []
    out: list[dict[str, str]] = []
    missing = doc.get("missing") or []
    if missing:
        names = ", ".join(f"{x['name']} ({x['status']})" for x in missing)
        out.append({"topic": "Missing results", "text": f"Not every result is present: {names}.",
                    "section": "limitations"})
    out += [{"topic": lim["topic"], "text": lim["text"], "section": "limitations"}
            for lim in lims if lim["topic"].startswith("Quantized")]
    small = [lim for lim in lims if lim["topic"].startswith("Small sample")]
    if small:
        probes = sorted({lim["topic"].split("(", 1)[-1].rstrip(")") for lim in small})
        out.append({"topic": "Small samples",
                    "text": f"{len(small)} warning(s) about small samples or unstable estimates in "
                            f"{', '.join(probes)}: read those intervals as rough.",
                    "section": "limitations"})
    # then the dataset caveats of the probes that ran, then the general ones
    general = {"Scope of bias probes", "Explanations"}
    specific = [lim for lim in lims if lim.get("source") not in ("probe summary", "explainer summary", "run directory")
                and lim["topic"] not in general and not lim["topic"].startswith("Quantized")]
    out += [{"topic": lim["topic"], "text": lim["text"], "section": "limitations"}
            for lim in specific + [lim for lim in lims if lim["topic"] in general]]
    return out[:MAX_LIMITATIONS]


def key_findings(doc: Mapping[str, Any]) -> dict[str, Any]:
    """The ``key_findings`` section of a report document: ranked findings, null probes, top
    limitations and the verdict badge (see the module docstring for the rules)."""
    cands = [c for c in _candidates(doc) if c["value"] is not None and c["ideal"] is not None
             and c["ci_low"] is not None and c["ci_high"] is not None and c["ci_low"] <= c["ci_high"]]
    pvals = [c["p_value"] if c["p_value"] is not None else math.nan for c in cands]
    adj = list(benjamini_hochberg(pvals)) if cands else []
    m_tests = sum(c["p_value"] is not None for c in cands)
    for c, a in zip(cands, adj, strict=True):
        _judge(c, None if math.isnan(a) else float(a), m_tests)
    ranked = sorted(cands, key=lambda c: (not c["significant"], -c["score"], not c["primary"]))
    chosen: list[dict[str, Any]] = []
    taken: set[tuple[str, bool]] = set()
    for c in ranked:
        if len(chosen) >= MAX_FINDINGS:
            break
        if not c["significant"] and len(chosen) >= MIN_FINDINGS:
            break
        slot = (c["probe"], bool(c["group"]))
        if slot in taken or (not c["significant"] and not c["primary"]):
            continue
        taken.add(slot)
        chosen.append(c)
    for c in ranked:  # too few: the next best results, whatever their slot
        if len(chosen) >= MIN_FINDINGS:
            break
        if not any(c is x for x in chosen):
            chosen.append(c)
    for i, c in enumerate(chosen, 1):
        c.update(id=f"finding-{i}", rank=i)
    significant_probes = {c["probe"] for c in cands if c["significant"]}
    null: list[dict[str, Any]] = []
    for p in doc.get("probes") or []:
        if p["name"] in significant_probes:
            continue
        mine = [c for c in cands if c["probe"] == p["name"]]
        text = (f"{p['name']}: none of its {len(mine)} tested result(s) differs significantly from its ideal."
                if mine else f"{p['name']}: reports no metric with both an ideal and an interval, so nothing was tested.")
        null.append({"probe": p["name"], "section": f"probe-{slug(p['name'])}", "tested": len(mine), "text": text})
    v = doc.get("verdict")
    return {
        "verdict": None if not v else {"status": v["status"], "counts": v["counts"],
                                       "policy": v["policy"]["name"] or v["policy"]["source"]},
        "findings": [{k: (None if k == "score" and math.isinf(c[k]) else c[k]) for k in _FIELDS} for c in chosen],
        "null_probes": null,
        "limitations": _top_limitations(doc),
        "tests": m_tests,
        "alpha": ALPHA,
        "method": "Ranked by |value − ideal| / half-width of the 95% CI; p-values of all candidate results "
                  f"corrected together with Benjamini–Hochberg at q < {ALPHA}.",
    }


_FIELDS = ("id", "rank", "probe", "metric", "group_by", "group", "section", "value", "ci_low", "ci_high", "n",
           "p_value", "p_adjusted", "survives_correction", "ideal", "unit", "direction", "significant",
           "ci_excludes_ideal", "score", "text")

