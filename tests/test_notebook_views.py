"""Notebook views (issue 21, item 7): ``ProbeResult._repr_html_``, ``Attributions._repr_html_`` and
``Attributions.show()`` (heat map in Jupyter, token table in a terminal); strings escaped."""

from __future__ import annotations

import pytest

from audit.results import MetricValue
from tests.fixture_runs import crows_result


def test_probe_result_renders_its_metrics_as_escaped_html() -> None:
    r = crows_result()
    r.summary["evil"] = MetricValue(1.0, 0.5, 1.5, 3, None, 0.0, None, description="<script>alert(1)</script>",
                                    warning="n < 10")
    html = r._repr_html_()
    assert "<strong>crows_pairs</strong> — 6 items" in html
    assert "<td>[30, 90]</td>" in html and "<td>50 %</td>" in html  # value with unit, CI
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "<script>" not in html
    assert "⚠ n &lt; 10" in html


def test_attributions_repr_html_and_show(bert_classifier, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    from audit.explain import explain

    a = explain(bert_classifier, ["the nurse said <b>she</b> was tired"], method="saliency", target={"mode": "class"})
    html = a._repr_html_()
    assert "saliency" in html and "&lt;b&gt;" in html and "<b>she" not in html
    assert html.count("background") >= len(a[0].tokens)  # one coloured span per token
    a.show()  # no notebook kernel here: the terminal table
    out = capsys.readouterr().out
    assert out.startswith("method: saliency") and "target:" in out
    for tok in a[0].tokens[1:3]:
        assert repr(tok) in out
