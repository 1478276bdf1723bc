"""Notebook views (issue 21, item 7): ``ProbeResult._repr_html_``, ``Attributions._repr_html_`` and
``Attributions.show()`` (heat map in Jupyter, token table in a terminal), rendered through the
report's own template fragments (audit/templates/fragments.html.j2); strings escaped."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from audit import views
from audit.explain.render import target_view
from audit.results import MetricValue
from audit.store import RunDir
from reports.content import collect_report
from reports.html import render_html
from tests.fixture_runs import HOSTILE, crows_result, make_run


def _css_scoped_to(html: str, scope: str) -> bool:
    """Every selector of the view's one ``<style>`` starts with ``scope``."""
    css = html[html.index("<style>") + 7:html.index("</style>")]
    selectors = [sel.strip() for rule in re.findall(r"(?:^|})([^{}]+){", css) for sel in rule.split(",")]
    return bool(selectors) and all(sel.startswith(scope + " ") for sel in selectors)


def _between(html: str, start: str, end: str) -> str:
    """The first ``start … end`` span of ``html`` (both included)."""
    i = html.index(start)
    return html[i:html.index(end, i) + len(end)]


def test_probe_result_html_is_the_reports_probe_section(tmp_path: Path) -> None:
    """The notebook view renders through the report's fragments: its metrics table, most-biased
    items table, breakdown table and warnings are the very markup of report.html for that probe."""
    r = crows_result()
    rd = RunDir(tmp_path / "run")
    rd.write_manifest({"run_id": "run", "status": "complete", "model": {"name": "m"},
                       "probes": {"crows_pairs": {"probe": "crows_pairs", "status": "complete"}}})
    rd.write_probe("crows_pairs", r)
    report = render_html(collect_report(rd))
    section = _between(report, '<article id="probe-crows_pairs">', "</article>")
    note = r._repr_html_()
    tables = section.split('<div class="table-wrap">')
    assert len(tables) == 3  # metrics, most biased items
    for t in tables[1:]:
        fragment = '<div class="table-wrap">' + t[:t.index("</table></div>") + len("</table></div>")]
        assert "<td" in fragment and fragment in note
    assert '<td class="num">50 %</td><td>[30, 90]</td>' in note  # a metric cell with its unit and CI
    assert _between(section, '<ul class="warnings">', "</ul>") in note
    appendix = _between(report, '<div id="breakdown-crows_pairs">', "</table></div>")
    breakdown = appendix[appendix.index('<div class="table-wrap">'):]
    assert "<td>bias_type</td>" in breakdown and breakdown in note
    assert "<strong>crows_pairs</strong> — 6 items" in note
    assert _css_scoped_to(note, ".taudit-probe-result")  # the notebook keeps its own styles


def test_probe_result_html_escapes_hostile_strings() -> None:
    r = crows_result()
    r.items.loc[0, "sent_more"] = HOSTILE["img"]  # an item text, shown among the most biased items
    r.breakdown.loc[0, "group"] = HOSTILE["a_tag"]
    r.summary["evil"] = MetricValue(1.0, 0.5, 1.5, 3, None, 0.0, None, description=HOSTILE["script"],
                                    warning="n < 10")
    html = r._repr_html_()
    assert "&lt;img src=x onerror=alert(1)&gt;" in html and "<img" not in html
    assert "&lt;a href=&#34;javascript:alert(1)&#34;&gt;x&lt;/a&gt;" in html and "<a " not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "<script" not in html
    assert "⚠ n &lt; 10" in html and "evil: n &lt; 10" in html


def _heat(tokens: list[str], scores: list[float | None], scale: float, fixed: list[bool] | None = None) -> str:
    """The shared heat-map macro (audit/templates/fragments.html.j2) rendered on its own."""
    t = views.environment().from_string('{% from "fragments.html.j2" import token_heat %}'
                                        "{{ token_heat(tokens, scores, scale, fixed) }}")
    return t.render(tokens=tokens, scores=scores, scale=scale, fixed=fixed).strip()


def test_report_heat_maps_are_the_shared_fragment(tmp_path: Path) -> None:
    rd = make_run(tmp_path)
    doc = collect_report(rd)
    report = render_html(doc)
    rows = [x for e in doc["explainers"] for x in e["examples"] if x["kind"] == "tokens"]
    assert rows
    for x in rows:
        assert _heat(x["tokens"], x["scores"], views.absmax(x["scores"])) in report


def test_attributions_repr_html_and_show(bert_classifier, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    from audit.explain import explain

    a = explain(bert_classifier, ["the nurse said <b>she</b> was tired"], method="saliency", target={"mode": "class"})
    html = a._repr_html_()
    assert "saliency" in html and "&lt;b&gt;" in html and "<b>she" not in html
    e = a[0]
    row = target_view(e, 0, e.token_scores[0])
    fixed = (~np.asarray(e.attributable, dtype=bool)).tolist()
    heat = _heat(e.tokens, row["scores"], row["scale"], fixed)
    assert heat.count('<span class="tok') == len(e.tokens) and heat in html  # the report's heat-map fragment
    # a block for a notebook cell: no page of its own, and its CSS cannot restyle the notebook
    assert html.startswith('<div class="taudit-attributions">') and "<body" not in html
    assert _css_scoped_to(html, ".taudit-attributions")
    a.show()  # no notebook kernel here: the terminal table
    out = capsys.readouterr().out
    assert out.startswith("method: saliency") and "target:" in out
    for tok in a[0].tokens[1:3]:
        assert repr(tok) in out
