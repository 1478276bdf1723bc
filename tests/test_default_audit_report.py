"""The default audit end to end (issue 21 "done when"): ``taudit run`` with no arguments ends with
a verdict (exit 0 or 1), writes report.pdf, and its report.html — opened in headless Chromium —
starts with the key findings, at least three of which cite a value and an interval that are in
the probe's summary.json."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import probes  # noqa: F401  (registers the built-in probes)
from audit.probe import PROBES
from audit.rundir_view import RunView
from audit.store import RunDir, read_json
from dashboard.screenshots import CHROMIUM, browser

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def default_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    cwd = tmp_path_factory.mktemp("default-audit")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "MPLBACKEND": "Agg"}
    proc = subprocess.run([sys.executable, "-m", "audit.cli", "run"], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=1800)
    return proc, cwd / "runs"


def _runs(root: Path) -> dict[str, RunDir]:
    return {RunDir(p).manifest()["model"]["name"]: RunDir(p) for p in sorted(root.iterdir()) if (p / "manifest.json").is_file()}


def test_taudit_run_without_arguments_ends_with_a_verdict(default_run: Any) -> None:
    proc, root = default_run
    assert proc.returncode in (0, 1), proc.stderr[-3000:]
    runs = _runs(root)
    assert set(runs) == {"smollm2-135m", "minilm-l6"}
    for rd in runs.values():
        v = read_json(rd.path / "verdict.json")
        assert v["policy"]["name"] == "recommended" and v["run_status"] == "complete"
        shown = Path("runs") / rd.path.name  # as the user typed it: relative to the working folder
        assert f"{shown}  verdict: {v['status']}" in proc.stdout
        assert (rd.path / "report.pdf").read_bytes()[:5] == b"%PDF-"  # the default run writes the PDF
        assert str(shown / "report.html") in proc.stdout and str(shown / "model_card.md") in proc.stdout
    assert "taudit dashboard runs" in proc.stdout
    for rd in runs.values():  # every probe's headline is its primary metric (privacy, cost included), not the first
        view = RunView(rd.path)
        for rec in map(view.probe, view.probe_names()):
            expected = rec.info.get("primary_metric") or PROBES.get(rec.probe).primary_metric  # per kind: counterfactual
            assert expected not in rec.metrics or rec.primary_metric == expected, (rec.name, rec.primary_metric)
    failed = any(read_json(rd.path / "verdict.json")["failed"] for rd in runs.values())
    assert proc.returncode == (1 if failed else 0)
    if failed:
        assert "not a crash" in proc.stdout and re.search(r"FAIL +\S+ .*value .*threshold", proc.stdout)


def _cited(rd: RunDir, probe: str, value: float, lo: float, hi: float) -> bool:
    """Whether (value, lo, hi) is a metric or a breakdown row of ``probe`` in its summary.json."""
    s = RunView(rd).probe(probe).summary
    rows = list((s.get("metrics") or {}).values()) + list(s.get("breakdown") or [])
    return any(r.get("value") == pytest.approx(value) and r.get("ci_low") == pytest.approx(lo)
               and r.get("ci_high") == pytest.approx(hi) for r in rows)


def test_report_html_opens_with_key_findings_in_chromium(default_run: Any, tmp_path: Path) -> None:
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"Debian chromium is not installed ({CHROMIUM}); apt-get install chromium")
    pytest.importorskip("playwright.sync_api")
    _, root = default_run
    rd = _runs(root)["smollm2-135m"]
    with browser() as b:
        page = b.new_page(viewport={"width": 1280, "height": 900})
        page.goto((rd.path / "report.html").resolve().as_uri())
        first = page.evaluate("() => document.querySelector('section').id")
        assert first == "key-findings"
        box = page.locator("#key-findings").bounding_box()
        assert box is not None and box["y"] < 900  # on the first screen
        assert page.locator("#key-findings h2").inner_text() == "Key findings"
        assert page.locator("#key-findings .badge").first.inner_text() in ("PASS", "WARN", "FAIL")
        items = page.locator("#key-findings li.finding")
        assert items.count() >= 3
        for i in range(items.count()):
            li = items.nth(i)
            value, lo, hi = (float(li.get_attribute(a) or "nan") for a in ("data-value", "data-ci-low", "data-ci-high"))
            text = li.inner_text()
            probe = li.get_attribute("data-probe") or ""
            assert _cited(rd, probe, value, lo, hi), text
            assert f"{value:.4g}" in text and f"[{lo:.4g}, {hi:.4g}]" in text
            target = li.locator("a").get_attribute("href")
            assert target and page.locator(target).count() == 1  # links to the section it comes from
        page.screenshot(path=str(tmp_path / "report.png"))
    assert (tmp_path / "report.png").stat().st_size > 10_000


def test_default_model_card_is_a_hub_card(default_run: Any) -> None:
    hf = pytest.importorskip("huggingface_hub")
    _, root = default_run
    card = hf.ModelCard((_runs(root)["smollm2-135m"].path / "model_card.md").read_text(encoding="utf-8"))
    assert card.data.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert {r.metric_type for r in card.data.eval_results} >= {"stereotype_effect", "mean_abs_effect_size"}
