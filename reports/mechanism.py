"""The report's "Where the bias is carried" section: the mediation probe's layer × head map of
natural indirect effects, its top heads, attention and MLP effects per layer, and the ablation
check (Vig et al. 2020; :mod:`probes.mediation`). Read from ``probes/<name>/summary.json`` only."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from audit.rundir_view import ProbeRecord, RunView
from audit.views import finite as _num

#: what a reader must keep in mind, printed with the section
CAVEATS = [
    "The heat map is a measurement of one intervention at a time, not proof of a mechanism: a head with a "
    "large indirect effect carries the gender signal in these templates; it may do so together with others "
    "(effects interact, so per-head effects need not add up to the total effect) and it may do other work.",
    "Effects are averaged over the project's profession templates (and WinoBias occupations when given); a "
    "different template set can move them.",
    "The ablation check is a diagnostic, not a debiasing method: it shows whether the named heads also carry "
    "what the other probes measure, and what removing them costs in language modelling.",
]


def _heat(info: Mapping[str, Any]) -> dict[str, Any] | None:
    heat = info.get("heatmap")
    if not isinstance(heat, Mapping) or not isinstance(heat.get("values"), list):
        return None
    rows = [[_num(v) for v in r] for r in heat["values"] if isinstance(r, list)]
    if not rows:
        return None
    return {"method": "mediation", "matrix": rows, "row_tokens": [f"layer {i}" for i in range(len(rows))],
            "col_tokens": [f"head {j}" for j in range(len(rows[0]))], "rows_are": "layer", "cols_are": "head",
            "note": "mean natural indirect effect of each head (Vig et al. 2020)"}


def ablation_rows(info: Mapping[str, Any]) -> dict[str, Any] | None:
    ab = info.get("ablation")
    if not isinstance(ab, Mapping):
        return None

    def row(what: str, before: Any, after: Any, ch: Mapping[str, Any]) -> dict[str, Any]:
        return {"what": what, "before": _num(before), "after": _num(after), "change": _num(ch.get("value")),
                "ci_low": _num(ch.get("ci_low")), "ci_high": _num(ch.get("ci_high")), "n": ch.get("n")}

    rows = [row(f"{probe}: {r.get('metric')}", (r.get("before") or {}).get("value"),
                (r.get("after") or {}).get("value"), r.get("change") or {})
            for probe, r in (ab.get("probes") or {}).items() if isinstance(r, Mapping)]
    loss = ab.get("neutral_loss")
    if isinstance(loss, Mapping):
        rows.append(row("neutral-text loss (nats/token)", loss.get("before"), loss.get("after"),
                        loss.get("change") or {}))
    heads = ", ".join(f"L{h.get('layer')}.H{h.get('head')}" for h in ab.get("heads") or [] if isinstance(h, Mapping))
    return {"heads": heads, "rows": rows, "note": str(ab.get("note") or "")}


def entry(rec: ProbeRecord) -> dict[str, Any]:
    """The section's entry for one completed mediation probe (the report's and the dashboard's)."""
    info = rec.info
    top = [{"head": f"L{t.get('layer')}.H{t.get('head')}", "nie": _num(t.get("nie")),
            "ci_low": _num(t.get("ci_low")), "ci_high": _num(t.get("ci_high"))}
           for t in info.get("top_heads") or [] if isinstance(t, Mapping)]
    layers = {k: [_num(v) for v in info.get(f"{k}_by_layer") or []] for k in ("attn", "mlp")}
    return {"name": rec.name, "heat": _heat(info), "top_heads": top, "layers": layers,
            "n_scored": info.get("n_scored"), "ablation": ablation_rows(info), "caveats": list(CAVEATS)}


def collect(rd: RunView, probes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per completed mediation probe of the run (empty when there is none)."""
    recs = (rd.probe(p["name"]) for p in probes if p.get("probe") == "mediation")
    return [entry(rec) for rec in recs if rec.complete]
