"""Human-readable views of :class:`~audit.explain.attributions.Attributions`: a terminal token
table (token, score, bar) and a small self-contained HTML heat map (Jinja2 with autoescape, no
scripts, no external resources; ``audit/templates/attributions.html.j2``, whose token rows are the
report's own heat-map fragment) with its colour legend, per-token values and completeness."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from audit import views
from audit.metrics.faithfulness import GAP_WARNING

if TYPE_CHECKING:
    from audit.explain.attributions import Attributions, ExampleAttribution

BAR_WIDTH = 24


def _bar(score: float, scale: float, width: int = BAR_WIDTH) -> str:
    if not math.isfinite(score) or scale <= 0:
        return ""
    n = round(abs(score) / scale * width)
    return ("+" if score >= 0 else "-") + ("█" if score >= 0 else "░") * n


def _scale(values: np.ndarray) -> float:
    finite = np.abs(values[np.isfinite(values)])
    return float(finite.max()) if finite.size else 0.0


def token_table(attr: Attributions) -> str:
    """A plain-text table per example and target: index, token, score and a signed bar."""
    lines: list[str] = [f"method: {attr.method}   model: {attr.model} ({attr.kind})"]
    for e in attr.examples:
        lines.append("")
        lines.append(f"example {e.index}: {e.text!r}")
        if attr.layout == "heads":
            lines += _heads_table(e)
            continue
        ts = e.token_scores
        if ts is None:
            continue
        for k, name in enumerate(e.target_names):
            row, c = ts[k], e.target_completeness(k)
            g = c["gap"]
            gap = (f"   completeness gap: {g:.2%} at {c['steps']} steps" + ("  INCOMPLETE" if c["met"] is False else "")
                   if g is not None and math.isfinite(g) else "")
            lines.append(f"  target: {name}{gap}")
            scale = _scale(row)
            width = max([len(repr(t)) for t in e.tokens] + [5])
            for i, (tok, s) in enumerate(zip(e.tokens, row, strict=True)):
                if not math.isfinite(s):
                    continue
                lines.append(f"  {i:4d}  {tok!r:<{width}}  {s:>+11.4g}  {_bar(float(s), scale)}")
    if attr.warnings:
        lines.append("")
        lines += [f"warning: {w}" for w in attr.warnings]
    return "\n".join(lines)


def _heads_table(e: ExampleAttribution) -> list[str]:
    s = np.asarray(e.scores)
    lines = [f"  target: {e.target}", "  layer  " + " ".join(f"h{h:<7d}" for h in range(s.shape[1]))]
    for layer in range(s.shape[0]):
        lines.append(f"  {layer:5d}  " + " ".join(f"{v:<8.4f}" for v in s[layer]))
    return lines


def target_view(e: ExampleAttribution, k: int, row: np.ndarray) -> dict[str, Any]:
    """One target's heat map: the colour scale over the attributed tokens only (a fixed BOS or
    special token that holds most of the mass, as in attention rollout, would wash out the rest),
    its completeness gap and steps, and whether it is incomplete."""
    fixed = ~np.asarray(e.attributable, dtype=bool)
    sc = _scale(np.where(fixed, np.nan, row)) or _scale(row)
    c = e.target_completeness(k)
    g, met = c["gap"], c["met"]
    tol = float((e.completeness or {}).get("tolerance", GAP_WARNING))
    incomplete = (met is False) or (met is None and g is not None and math.isfinite(g) and g > tol)
    return {"name": e.target_names[k], "gap": f"{g:.2%}" if g is not None and math.isfinite(g) else "",
            "steps": c["steps"] or "", "incomplete": incomplete, "tolerance": f"{tol:.0%}",
            "low": f"{-sc:+.3g}", "high": f"{sc:+.3g}", "scale": sc,
            "scores": [float(v) if math.isfinite(v) else None for v in row]}


def html_report(attrs: list[Attributions], title: str = "Token attributions", page: bool = True) -> str:
    """A self-contained HTML page (inseq-style heat map with a colour legend, each token's value on
    hover and in a table, the baseline token, and each target's gap, steps and incomplete mark);
    every model or dataset string is escaped by Jinja2. ``page=False``: the same as one ``<div>``
    whose CSS applies inside it only (for a notebook cell)."""
    blocks = []
    for a in attrs:
        exs = []
        for e in a.examples:
            targets, heads, rows = [], None, []
            if a.layout == "heads":
                s = np.asarray(e.scores, dtype=np.float64)
                heads = {"scores": s.tolist(), "scale": _scale(s)}
            elif e.token_scores is not None:
                targets = [target_view(e, k, e.token_scores[k]) for k in range(len(e.target_names))]
                rows = [{"index": i, "token": tok, "cells": [f"{v:+.4g}" if math.isfinite(v) else "" for v in
                                                              e.token_scores[:, i]]}
                        for i, tok in enumerate(e.tokens)]
            fixed = ~np.asarray(e.attributable, dtype=bool)
            exs.append({"index": e.index, "text": e.text, "tokens": e.tokens, "fixed": fixed.tolist(),
                        "targets": targets, "heads": heads, "table": rows,
                        "baseline": e.info.get("baseline_token", ""), "has_fixed": bool(fixed.any())})
        blocks.append({"method": a.method, "model": a.model, "kind": a.kind, "warnings": a.warnings,
                       "examples": exs})
    return views.environment().get_template("attributions.html.j2").render(title=title, blocks=blocks, page=page)
