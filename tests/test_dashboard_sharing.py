"""Dashboard clean-up and sharing (issue 21, items 6 and 8): one compact notice per probe, the top
finding on the Runs page, Compare defaulting to runs of the same model, the Live page keeping a
target token's leading space (with its id) and working for encoders, the access token of a shared
dashboard (AppTest and a real server in Chromium) and the Live allow-list."""

from __future__ import annotations

import argparse
import socket
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from dashboard import LIVE_ENV, RUNS_ENV, TOKEN_ENV
from dashboard.cli import is_loopback
from dashboard.cli import run as dashboard_run
from tests.fixture_runs import make_full_run, make_run

APP = Path(__file__).resolve().parents[1] / "dashboard" / "app.py"
TOKEN = "s3cret-token-for-the-review-team"


def _app(root: Path, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    monkeypatch.setenv(RUNS_ENV, str(root))
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    monkeypatch.delenv(LIVE_ENV, raising=False)
    return AppTest.from_file(str(APP), default_timeout=180)


def test_bias_page_has_one_compact_notice_per_probe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_full_run(tmp_path)
    at = _app(tmp_path, monkeypatch).run()
    at.switch_page("views/bias.py").run()
    assert not at.exception
    warnings = [w.value for w in at.warning]
    crows = [w for w in warnings if "crows\\_pairs" in w or "crows_pairs" in w]
    assert len(crows) == 1  # the probe warning and the metric's own warning (n < 10) in one block
    assert crows[0].count("antistereo") == 1 and "2 caveat(s)" in crows[0]
    assert not any("antistereo" in w for w in warnings if w is not crows[0])  # no second banner under the metric


def test_runs_page_shows_verdict_and_top_finding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from reports.builder import build_reports

    full = make_full_run(tmp_path)
    build_reports(full, ["json"])
    make_run(tmp_path, "run-a")  # no report.json: the finding is computed from its summaries
    at = _app(tmp_path, monkeypatch).run()
    assert not at.exception
    table = at.dataframe[0].value
    assert "top finding" in table.columns and "verdict" in table.columns
    rows = table.set_index("run")
    assert rows.loc["run-full", "verdict"] == "fail"
    from audit.store import read_json

    first = read_json(full.path / "report.json")["key_findings"]["findings"][0]["text"]
    assert rows.loc["run-full", "top finding"] == first
    assert rows.loc["run-a", "top finding"] not in ("", "—")


def test_compare_defaults_to_a_run_of_the_same_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_run(tmp_path, "run-a")                    # tiny-bert
    make_full_run(tmp_path, "run-b-other-model")   # smollm2-135m
    make_run(tmp_path, "run-c", shift=2.0)         # tiny-bert again
    at = _app(tmp_path, monkeypatch).run()
    at.switch_page("views/compare.py").run()
    assert not at.exception
    assert at.selectbox(key="compare_a").value == "run-a"
    assert at.selectbox(key="compare_b").value == "run-c"  # not the next run, which is another model
    at.selectbox(key="compare_b").set_value("run-b-other-model").run()
    assert any("different models" in w.value for w in at.warning)


def _live(at: AppTest) -> AppTest:
    at.run()
    at.switch_page("views/live.py").run()
    assert not at.exception
    return at


def test_live_keeps_the_leading_space_of_a_target_token_and_shows_its_id(
        gpt2_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers import AutoTokenizer

    at = _live(_app(tmp_path, monkeypatch))
    at.selectbox(key="live_source").set_value("local folder").run()
    at.text_input(key="live_path").input(str(gpt2_path))
    at.button(key="live_load").click().run()
    assert not at.error, [e.value for e in at.error]
    at.selectbox(key="live_mode").set_value("next").run()
    at.text_area(key="live_text").input("the nurse said that")
    tok = AutoTokenizer.from_pretrained(gpt2_path)
    word = next(w for w in ("she", "the", "he", "said", "was") if len(tok.encode(" " + w)) == len(tok.encode(w)) == 1)
    [sid] = tok.encode(" " + word, add_special_tokens=False)
    [bare] = tok.encode(word, add_special_tokens=False)
    assert sid != bare  # two different tokens: stripping would explain the wrong one
    at.text_input(key="live_token").input(" " + word).run()
    captions = " ".join(c.value for c in at.caption)
    assert f"(id {sid})" in captions and f"(id {bare})" not in captions
    at.selectbox(key="live_method").set_value("saliency")
    at.checkbox(key="live_attention").uncheck()
    at.button(key="live_explain").click().run()
    assert not at.error, [e.value for e in at.error]
    assert at.session_state["live_result"]["inputs"]["target"]["token"] == " " + word


def test_live_works_for_an_encoder_without_typing_a_second_text(
        bert_encoder_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = _live(_app(tmp_path, monkeypatch))
    at.selectbox(key="live_source").set_value("local folder").run()
    at.text_input(key="live_path").input(str(bert_encoder_path))
    at.button(key="live_load").click().run()
    assert at.selectbox(key="live_mode").value == "cosine"
    assert at.text_input(key="live_pair").value  # a default second text
    assert not at.button(key="live_explain").disabled


def test_live_allow_list_offers_only_listed_models_and_no_path_field(
        bert_mlm_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = _app(tmp_path, monkeypatch)
    monkeypatch.setenv(LIVE_ENV, f"{bert_mlm_path}")
    at = _live(at)
    assert at.selectbox(key="live_source").options == [str(bert_mlm_path)]
    assert not [t for t in at.text_input if t.key == "live_path"]  # nothing can be typed
    at.button(key="live_load").click().run()
    assert not at.error and any("Loaded" in s.value for s in at.success)
    monkeypatch.setenv(LIVE_ENV, "")  # a shared dashboard without --live-models: Live is off
    at2 = _live(AppTest.from_file(str(APP), default_timeout=180))
    assert any("off on this shared dashboard" in w.value for w in at2.warning)
    assert not [s for s in at2.selectbox if s.key == "live_source"]


def test_token_gate_renders_no_page_without_the_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_run(tmp_path)
    at = _app(tmp_path, monkeypatch)
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    at.run()
    assert not at.exception
    assert [t.label for t in at.text_input] == ["Access token"] and not at.dataframe
    at.text_input[0].input("wrong-token-wrong-token").run()
    assert at.error and "Wrong access token" in at.error[0].value and not at.dataframe
    at.text_input[0].input(TOKEN).run()
    assert not at.exception and at.dataframe  # the Runs page


def test_non_loopback_host_without_a_token_refuses_to_start(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.10")
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    args = argparse.Namespace(runs_dir=str(tmp_path), port=8599, host="0.0.0.0", token_file=None, live_models=None)
    assert dashboard_run(args) == 2
    err = capsys.readouterr().err
    assert f"needs an access token: set {TOKEN_ENV}" in err and "Refusing to start" in err
    short = tmp_path / "tok"
    short.write_text("short\n", encoding="utf-8")
    args.token_file = str(short)
    assert dashboard_run(args) == 2


@pytest.mark.browser
def test_shared_dashboard_in_chromium_needs_the_token_and_live_refuses_unlisted(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bert_mlm_path: Path) -> None:
    import subprocess
    import sys

    from dashboard.screenshots import (
        CHROMIUM,
        browser,
        free_port,
        stop_server,
        wait_ready,
        wait_rendered,
    )

    if not Path(CHROMIUM).is_file():
        pytest.skip(f"Debian chromium is not installed ({CHROMIUM}); apt-get install chromium")
    pytest.importorskip("playwright.sync_api")
    root = tmp_path / "runs"
    make_run(root, "run-a")
    port = free_port()
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n", encoding="utf-8")
    log = (tmp_path / "server.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "dashboard.cli", str(root), "--port", str(port),
                             "--host", "0.0.0.0", "--token-file", str(token_file),  # nosec B104  # the test of sharing
                             "--live-models", str(bert_mlm_path)], stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)  # stop_server stops its process group
    try:
        wait_ready(port, proc)
        with socket.socket() as s:  # listening beyond loopback
            assert s.connect_ex((socket.gethostbyname(socket.gethostname()), port)) == 0
        with browser() as b:
            page = b.new_page(viewport={"width": 1200, "height": 1200})
            for path in ("", "bias", "live"):
                page.goto(f"http://127.0.0.1:{port}/{path}")
                page.get_by_text("Access token").first.wait_for(timeout=60_000)
                body = page.inner_text("body")
                assert "run-a" not in body and "Runs root" not in body
            page.goto(f"http://127.0.0.1:{port}/live?token={TOKEN}")
            wait_rendered(page, "Live")
            page.get_by_text("Load model").first.wait_for(timeout=60_000)  # drawn after the title on a busy machine
            body = page.inner_text("body")
            assert "Load model" in body and "Local model folder" not in body  # no path can be typed
            # the model choice offers the listed folder only
            page.locator('[data-testid="stSelectbox"]').first.click()
            page.get_by_role("option").first.wait_for(timeout=30_000)  # the list opens after the click
            options = page.get_by_role("option").all_inner_texts()
            assert options == [str(bert_mlm_path)], options
    finally:
        stop_server(proc)
        log.close()
    assert proc.poll() is not None  # the server bound beyond loopback is gone


@pytest.mark.parametrize("own_group", [True, False])
def test_stop_server_stops_a_server_with_or_without_its_own_process_group(own_group: bool) -> None:
    import subprocess
    import sys

    from dashboard.screenshots import stop_server

    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=own_group)
    try:
        stop_server(proc)
        assert proc.poll() is not None  # before: a process leading no group was silently left running
    finally:
        proc.kill()
        proc.wait()
