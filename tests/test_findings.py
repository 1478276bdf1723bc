"""Key findings (reports/findings.py): ranking by effect relative to the interval, multiple-testing
correction over the report, null probes, links to sections, and their place first in every report."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from audit.rundir_view import RunView
from audit.stats import benjamini_hochberg
from audit.store import RunDir
from reports.builder import build_reports
from reports.content import collect_report, metric_entry
from reports.findings import key_findings
from tests.fixture_runs import make_full_run, make_run


def _probe(name: str, metrics: dict[str, dict[str, Any]], primary: str | None = None,
           breakdown: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    ms = [metric_entry(k, v) for k, v in metrics.items()]
    return {"name": name, "metrics": ms, "primary_metric": primary or ms[0]["name"], "breakdown": breakdown or []}


def _doc(*probes: dict[str, Any]) -> dict[str, Any]:
    return {"probes": list(probes), "missing": [], "limitations": [], "verdict": None}


def _m(value: float, lo: float, hi: float, p: float | None, ideal: float = 0.0, n: int = 100) -> dict[str, Any]:
    return {"value": value, "ci_low": lo, "ci_high": hi, "p_value": p, "ideal": ideal, "n": n,
            "description": "mean effect in nats: > 0 when the stereotype is preferred", "unit": "nats"}


def test_ranked_by_distance_to_ideal_in_half_widths_not_by_probe_order() -> None:
    # a: large but uncertain (2.0 ± 1.5 → 1.33 half-widths); b: small but precise (0.5 ± 0.1 → 5)
    doc = _doc(_probe("a", {"x": _m(2.0, 0.5, 3.5, 0.01)}), _probe("b", {"y": _m(0.5, 0.4, 0.6, 0.001)}),
               _probe("c", {"z": _m(-1.0, -1.2, -0.8, 0.001)}))
    k = key_findings(doc)
    assert [f["probe"] for f in k["findings"]] == ["b", "c", "a"]
    assert [f["score"] for f in k["findings"]] == pytest.approx([5.0, 5.0, 2.0 / 1.5])
    b, c = k["findings"][0], k["findings"][1]
    assert b["direction"] == "above" and c["direction"] == "below"
    # value, interval, n, the ideal and what a positive value means are in the sentence
    assert "+0.5 nats [0.4, 0.6], n = 100, above the ideal 0 nats: the stereotype is preferred" in b["text"]
    assert "below the ideal 0 nats" in c["text"] and "the stereotype is preferred" not in c["text"]
    assert [f["id"] for f in k["findings"]] == ["finding-1", "finding-2", "finding-3"]


def test_benjamini_hochberg_over_every_candidate_of_the_report() -> None:
    """p = 0.02 survives alone but not among nine nulls: the family is the whole report."""
    alone = key_findings(_doc(_probe("a", {"x": _m(1.0, 0.2, 1.8, 0.02)})))
    assert alone["findings"][0]["survives_correction"] is True and alone["findings"][0]["significant"]
    nulls = {f"n{i}": _m(0.1, -0.5, 0.7, 0.6 + i / 100) for i in range(9)}
    crowded = key_findings(_doc(_probe("a", {"x": _m(1.0, 0.2, 1.8, 0.02)}), _probe("b", nulls, primary="n0")))
    f = next(x for x in crowded["findings"] if x["probe"] == "a")
    expected = benjamini_hochberg([0.02] + [0.6 + i / 100 for i in range(9)])[0]
    assert f["p_adjusted"] == pytest.approx(expected) and expected > 0.05
    assert f["survives_correction"] is False and not f["significant"] and f["ci_excludes_ideal"]
    assert "does not survive Benjamini–Hochberg correction over 10 tests" in f["text"]
    assert crowded["tests"] == 10


def test_null_probes_and_at_least_three_findings_when_results_exist() -> None:
    doc = _doc(_probe("sig", {"x": _m(1.0, 0.8, 1.2, 1e-6)}),
               _probe("flat", {"y": _m(0.1, -0.3, 0.5, 0.5), "w": _m(0.0, -0.1, 0.1, 0.9)}, primary="y"),
               _probe("noci", {"z": {"value": 3.0, "ideal": 0.0}}))
    k = key_findings(doc)
    assert len(k["findings"]) == 3  # one significant, then the best remaining results to reach three
    assert k["findings"][0]["probe"] == "sig" and k["findings"][0]["significant"]
    assert all(not f["significant"] for f in k["findings"][1:])
    assert "no significant difference from the ideal" in k["findings"][1]["text"]
    nulls = {x["probe"]: x["text"] for x in k["null_probes"]}
    assert set(nulls) == {"flat", "noci"}
    assert "none of its 2 tested result(s)" in nulls["flat"] and "nothing was tested" in nulls["noci"]


def test_at_most_one_summary_and_one_category_finding_per_probe() -> None:
    rows = [{"group_by": "set", "group": f"g{i}", "metric": "x", "value": 2.0 + i, "ci_low": 1.9 + i,
             "ci_high": 2.1 + i, "n": 50, "p_value": 1e-8, "p_adjusted": 1e-8} for i in range(5)]
    doc = _doc(_probe("big", {"x": _m(1.0, 0.9, 1.1, 1e-9), "x2": _m(1.0, 0.95, 1.05, 1e-9)}, primary="x",
                      breakdown=rows),
               _probe("other", {"y": _m(0.3, 0.1, 0.5, 0.001)}))
    k = key_findings(doc)
    from_big = [f for f in k["findings"] if f["probe"] == "big"]
    assert len(from_big) == 2 and sum(bool(f["group"]) for f in from_big) == 1
    cat = next(f for f in from_big if f["group"])
    assert cat["group"] == "g4" and cat["section"] == "breakdown-big" and "big, set g4" in cat["text"]
    assert any(f["probe"] == "other" for f in k["findings"])


@pytest.fixture(scope="module")
def full(tmp_path_factory: pytest.TempPathFactory) -> RunDir:
    return make_full_run(tmp_path_factory.mktemp("kf"))


def test_html_opens_with_key_findings_linking_to_sections(full: RunDir, tmp_path: Path) -> None:
    html = build_reports(full, ["html"], out_dir=tmp_path)["html"].read_text(encoding="utf-8")
    sections = re.findall(r'<section id="([^"]+)"', html)
    assert sections[0] == "key-findings"
    doc = collect_report(full)
    k = doc["key_findings"]
    assert len(k["findings"]) >= 3 and k["verdict"]["status"] == "fail"
    block = html[html.index('<section id="key-findings"'):html.index("</section>")]
    assert 'class="badge big fail"' in block
    ids = set(re.findall(r'id="([^"]+)"', html))
    for target in re.findall(r'href="#([^"]+)"', block):
        assert target in ids, target
    # identity, hashes and per-category tables live in the appendix, after the findings
    assert html.index('id="appendix"') < html.index('id="identity"') < html.index('id="breakdowns"')
    assert html.index('id="key-findings"') < html.index('id="probes"') < html.index('id="appendix"')


def test_model_card_opens_with_key_findings(full: RunDir) -> None:
    from reports.markdown import render_model_card

    text = render_model_card(collect_report(full))
    h2 = re.findall(r"^## (.+)$", text, re.M)
    assert h2[0] == "Key findings"
    body = text[text.index("## Key findings"):text.index("## Model Details")]
    assert "**Policy verdict: FAIL**" in body
    # each finding names the section it comes from (plain text: the card carries no links)
    items = re.findall(r"^\d+\. .*\(see (Results[^)]*)\)$", body, re.M)
    assert len(items) >= 3
    h = re.findall(r"^#+ (.+)$", text, re.M)
    for ref in items:
        section = ref.replace("Results, ", "").strip()
        assert section == "Results" or any(x.startswith(section) for x in h), ref


def test_findings_cite_values_in_summary(tmp_path: Path) -> None:
    rd = make_run(tmp_path)
    doc = collect_report(rd)
    for f in doc["key_findings"]["findings"]:
        summary = RunView(rd).probe(f["probe"]).summary
        if f["group"]:
            rows = [r for r in summary["breakdown"] if r["group"] == f["group"] and r["metric"] == f["metric"]]
            src = rows[0]
        else:
            src = summary["metrics"][f["metric"]]
        assert (f["value"], f["ci_low"], f["ci_high"]) == (src["value"], src["ci_low"], src["ci_high"])
    assert yaml.safe_dump(doc["key_findings"])  # plain data
