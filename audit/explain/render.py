"""Human-readable views of :class:`~audit.explain.attributions.Attributions`: a terminal token
table (token, score, bar) and a small self-contained HTML heat map (Jinja2 with autoescape, no
scripts, no external resources) with its colour legend, per-token values and completeness."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
from jinja2 import Environment

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
            row = ts[k]
            gap = ""
            if e.completeness and k < len(e.completeness.get("gap", [])):
                g = e.completeness["gap"][k]
                steps = (e.completeness.get("steps") or [e.completeness.get("n_steps")] * (k + 1))[k]
                met = (e.completeness.get("met") or [True] * (k + 1))[k]
                gap = (f"   completeness gap: {g:.2%} at {steps} steps" + ("" if met else "  INCOMPLETE")
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


_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{ title }}</title>
<style>
body{font-family:system-ui,sans-serif;margin:2em;max-width:70em}
.tok{display:inline-block;padding:.15em .25em;margin:.1em;border-radius:.25em;white-space:pre}
.tok.fixed{outline:1px dashed #888}
.meta{color:#555;font-size:.9em}
.incomplete{color:#b00;font-weight:bold;border:1px solid #b00;border-radius:.25em;padding:0 .3em}
.legend{display:inline-block;width:12em;height:.9em;vertical-align:middle;border:1px solid #ccc;
background:linear-gradient(to right,rgba(38,139,210,.85),rgba(38,139,210,0) 50%,rgba(220,50,47,0) 50%,rgba(220,50,47,.85))}
table.m{border-collapse:collapse;font-size:.85em}
table.m td,table.m th{padding:.2em .35em;border:1px solid #eee;white-space:pre}
details{margin:.3em 0 1em}
</style></head><body>
<h1>{{ title }}</h1>
{% for block in blocks %}
<h2>{{ block.method }}</h2>
<p class="meta">model {{ block.model }} ({{ block.kind }}){% if block.warnings %} — {{ block.warnings|join("; ") }}{% endif %}</p>
{% for ex in block.examples %}
<h3>example {{ ex.index }}: {{ ex.text }}</h3>
{% if ex.baseline %}<p class="meta">baseline token: {{ ex.baseline }}{% if ex.has_fixed %} · dashed tokens are held fixed (special tokens, the position predicted, the prefix token): not attributed and left out of the colour scale{% endif %}</p>{% endif %}
{% for t in ex.targets %}
<p class="meta">target: {{ t.name }}{% if t.gap %} — completeness gap {{ t.gap }}{% endif %}{% if t.steps %} at {{ t.steps }} steps{% endif %}{% if t.incomplete %} <span class="incomplete">incomplete: gap over {{ t.tolerance }}</span>{% endif %}</p>
<p class="meta">colour scale: <span>{{ t.low }}</span> <span class="legend"></span> <span>{{ t.high }}</span> (blue negative, red positive; hover a token for its value)</p>
<div>{% for tok in t.tokens %}<span class="tok{% if tok.fixed %} fixed{% endif %}" style="background:{{ tok.color }}" title="{{ tok.title }}">{{ tok.text }}</span>{% endfor %}</div>
{% endfor %}
{% if ex.targets %}
<details><summary>values per token</summary>
<table class="m"><tr><th>#</th><th>token</th>{% for t in ex.targets %}<th>{{ t.name }}</th>{% endfor %}</tr>
{% for row in ex.table %}<tr><td>{{ row.index }}</td><td>{{ row.token }}</td>{% for v in row.cells %}<td>{{ v }}</td>{% endfor %}</tr>{% endfor %}
</table></details>
{% endif %}
{% if ex.heads %}
<table class="m"><tr><th>layer</th>{% for h in ex.heads[0] %}<th>head {{ loop.index0 }}</th>{% endfor %}</tr>
{% for row in ex.heads %}<tr><th>{{ loop.index0 }}</th>{% for c in row %}<td style="background:{{ c.color }}" title="{{ c.title }}">{{ c.text }}</td>{% endfor %}</tr>{% endfor %}
</table>
{% endif %}
{% endfor %}
{% endfor %}
</body></html>
"""


def _color(score: float, scale: float) -> str:
    if not math.isfinite(score) or scale <= 0:
        return "transparent"
    a = min(1.0, abs(score) / scale) * 0.85
    return f"rgba(220,50,47,{a:.3f})" if score >= 0 else f"rgba(38,139,210,{a:.3f})"


def _target_view(e: ExampleAttribution, k: int, row: np.ndarray) -> dict[str, Any]:
    """One target's heat map: the colour scale over the attributed tokens only (a fixed BOS or
    special token that holds most of the mass, as in attention rollout, would wash out the rest),
    its completeness gap and steps, and whether it is incomplete."""
    fixed = ~np.asarray(e.attributable, dtype=bool)
    sc = _scale(np.where(fixed, np.nan, row)) or _scale(row)
    c = e.completeness or {}
    g = c.get("gap", [None] * (k + 1))[k] if c else None
    tol = float(c.get("tolerance", GAP_WARNING))
    met = (c.get("met") or [None] * (k + 1))[k]
    incomplete = (met is False) or (met is None and g is not None and math.isfinite(g) and g > tol)
    steps = (c.get("steps") or [c.get("n_steps")] * (k + 1))[k] if c else None
    return {"name": e.target_names[k], "gap": f"{g:.2%}" if g is not None and math.isfinite(g) else "",
            "steps": steps or "", "incomplete": incomplete, "tolerance": f"{tol:.0%}",
            "low": f"{-sc:+.3g}", "high": f"{sc:+.3g}",
            "tokens": [{"text": tok, "color": _color(float(s), sc), "fixed": bool(fixed[i]),
                        "title": f"{i}: {s:+.4g}" if math.isfinite(s) else f"{i}: not visible"}
                       for i, (tok, s) in enumerate(zip(e.tokens, row, strict=True))]}


def html_report(attrs: list[Attributions], title: str = "Token attributions") -> str:
    """A self-contained HTML page (inseq-style heat map with a colour legend, each token's value on
    hover and in a table, the baseline token, and each target's gap, steps and incomplete mark);
    every model or dataset string is escaped by Jinja2."""
    blocks = []
    for a in attrs:
        exs = []
        for e in a.examples:
            targets, heads, rows = [], None, []
            if a.layout == "heads":
                s = np.asarray(e.scores)
                sc = _scale(s)
                heads = [[{"text": f"{v:.3f}", "color": _color(float(v), sc), "title": f"layer {li} head {hi}"}
                          for hi, v in enumerate(row)] for li, row in enumerate(s)]
            elif e.token_scores is not None:
                targets = [_target_view(e, k, e.token_scores[k]) for k in range(len(e.target_names))]
                rows = [{"index": i, "token": tok, "cells": [f"{v:+.4g}" if math.isfinite(v) else "" for v in
                                                              e.token_scores[:, i]]}
                        for i, tok in enumerate(e.tokens)]
            exs.append({"index": e.index, "text": e.text, "targets": targets, "heads": heads, "table": rows,
                        "baseline": e.info.get("baseline_token", ""),
                        "has_fixed": not np.asarray(e.attributable, dtype=bool).all()})
        blocks.append({"method": a.method, "model": a.model, "kind": a.kind, "warnings": a.warnings,
                       "examples": exs})
    env = Environment(autoescape=True)
    return env.from_string(_TEMPLATE).render(title=title, blocks=blocks)
