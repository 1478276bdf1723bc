"""Live page on tiny models (local folders loaded through audit.load_model)."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from dashboard import RUNS_ENV

APP = Path(__file__).resolve().parents[1] / "dashboard" / "app.py"


def live(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    monkeypatch.setenv(RUNS_ENV, str(tmp_path))
    at = AppTest.from_file(str(APP), default_timeout=300).run()
    at.switch_page("views/live.py").run()
    assert not at.exception
    return at


def load(at: AppTest, path: Path) -> AppTest:
    at.selectbox(key="live_source").set_value("local folder").run()
    at.text_input(key="live_path").input(str(path))
    at.button(key="live_load").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    return at


def test_live_ig_on_a_tiny_classifier_shows_a_token_heatmap(
        bert_classifier_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = load(live(tmp_path, monkeypatch), bert_classifier_path)
    assert any("classifier" in s.value for s in at.success)
    assert at.selectbox(key="live_mode").value == "class"
    assert "ig" in at.selectbox(key="live_method").options[0] or "ig" in at.selectbox(key="live_method").value
    at.text_area(key="live_text").input("the nurse said she was tired")
    at.selectbox(key="live_method").set_value("ig")
    at.number_input(key="live_opt:ig:n_steps").set_value(16)
    at.button(key="live_explain").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    heat = [h.value for h in at.get("html") if "taudit-heatmap" in h.value]
    assert len(heat) == 2  # ig, and the attention method's per-token scores
    assert "ig — target: " in heat[0]
    from transformers import AutoTokenizer

    for tok in AutoTokenizer.from_pretrained(bert_classifier_path).tokenize("the nurse said she was tired"):
        assert f">{tok}</span>" in heat[0]
    # IG's completeness gap beside the heatmap; attention grid of the 2 x 2 heads + the large map
    gap = [m for m in at.metric if m.label == "IG completeness gap"]
    assert gap and gap[0].value.endswith("%")
    assert at.multiselect(key="live:attention:grid_layers").value == [0, 1]
    # the model is cached: a rerun does not load it again, and the result stays on the page
    at.run()
    assert [h.value for h in at.get("html") if "taudit-heatmap" in h.value] == heat


def test_live_masked_lm_target_token_and_errors(
        bert_mlm_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = load(live(tmp_path, monkeypatch), bert_mlm_path)
    assert at.selectbox(key="live_mode").options[0].startswith("mask")
    at.text_area(key="live_text").input("the nurse said [MASK] was tired")
    at.selectbox(key="live_method").set_value("occlusion")
    at.checkbox(key="live_attention").uncheck()
    at.text_input(key="live_token").input("the")
    at.button(key="live_explain").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    heat = [h.value for h in at.get("html") if "taudit-heatmap" in h.value]
    assert len(heat) == 1 and "occlusion — target: " in heat[0] and "&#39;the&#39;" in heat[0]
    # a text without a mask is a message, not a traceback
    at.text_area(key="live_text").input("no mask here")
    at.button(key="live_explain").click().run()
    assert not at.exception
    assert at.error and "mask" in at.error[0].value.lower()


def test_live_bad_model_folder_is_a_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = live(tmp_path, monkeypatch)
    at.selectbox(key="live_source").set_value("local folder").run()
    at.text_input(key="live_path").input(str(tmp_path / "missing"))
    at.button(key="live_load").click().run()
    assert not at.exception and "is not a folder" in at.error[0].value
    (tmp_path / "empty").mkdir()
    at.text_input(key="live_path").input(str(tmp_path / "empty"))
    at.button(key="live_load").click().run()
    assert not at.exception and "no config\\.json" in at.error[0].value
