"""The dashboard in a real headless browser: ``taudit dashboard`` + Playwright + Debian Chromium."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from dashboard.screenshots import (
    CHROMIUM,
    browser,
    free_port,
    start_server,
    stop_server,
    wait_ready,
    wait_rendered,
)
from tests.fixture_runs import make_failed_run, make_run

pytestmark = pytest.mark.browser


def test_bias_page_renders_in_chromium(tmp_path: Path) -> None:
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"Debian chromium is not installed ({CHROMIUM}); apt-get install chromium")
    pytest.importorskip("playwright.sync_api")
    root = tmp_path / "runs"
    make_run(root, "run-a", shift=2.0)  # crows_pairs metric 33.33 %
    make_failed_run(root)
    port = free_port()
    proc = start_server(root, port, tmp_path / "server.log")
    dialogs: list[str] = []
    try:
        wait_ready(port, proc)
        with browser() as b:
            page = b.new_page(viewport={"width": 1400, "height": 2400})
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            page.goto(f"http://127.0.0.1:{port}/bias")
            wait_rendered(page, "Bias")
            page.get_by_text("33.33%", exact=True).first.wait_for(timeout=30_000)
            # the CI chart and the item grid are drawn, and no element is still a grey placeholder
            page.locator(".vega-embed").first.wait_for(timeout=60_000)
            page.locator('[data-testid="stDataFrame"]:visible').first.wait_for(timeout=60_000)
            page.wait_for_function("() => !document.querySelector('[data-testid=\"stSkeleton\"]')",
                                   timeout=90_000)
            assert page.locator(".vega-embed").count() >= 2  # metric CIs and per-category chart
            body = page.inner_text("body")
            assert "95% CI [30, 90]" in body and "ideal 50" in body
            assert "Items (6)" in body
            # the sidebar lists the pages by their titles and the runs root
            for title in ("Runs", "Bias", "Explain", "Compare", "Live"):
                assert page.get_by_role("link", name=title).count() >= 1
            assert f"Runs root: {root.resolve()}" in body
            page.screenshot(path=str(tmp_path / "bias.png"))
    finally:
        stop_server(proc)
    assert proc.poll() is not None
    assert not dialogs, f"a dataset string ran as script: {dialogs}"
    assert (tmp_path / "bias.png").stat().st_size > 10_000
    with socket.socket() as s:  # the server is gone
        assert s.connect_ex(("127.0.0.1", port)) != 0
