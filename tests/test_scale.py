"""Large-model loading paths that run on CPU: ``device_map`` (accelerate) and reduced dtypes give
the numbers of a plain fp32 load (within bf16 rounding), through the same scoring code."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from audit import scoring
from audit.config import load_config
from audit.models import load_model
from audit.rundir_view import RunView

TEXTS = ["the man is good at work", "She was kind today", "the doctor seems angry in the city"]


def test_device_map_auto_loads_on_cpu(llama_path: Path, llama) -> None:  # type: ignore[no-untyped-def]
    h = load_model(llama_path, device_map="auto")
    assert h.device == torch.device("cpu")
    seqs = scoring.causal_tokenize(h, TEXTS)
    for a, b in zip(scoring.causal_logprobs(h, seqs), scoring.causal_logprobs(llama, seqs), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("fixture", ["llama", "bert_mlm"])
def test_model_split_across_devices_scores_like_one_device(
    request: pytest.FixtureRequest, fixture: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hand-written device map with one layer offloaded to disk — what ``device_map="auto"``
    does to a model larger than the GPUs — is dispatched by accelerate with hooks that move
    weights in per layer; packed causal scoring and masked PLL give the same numbers."""
    monkeypatch.setenv("TAUDIT_CACHE", str(tmp_path))
    ref = request.getfixturevalue(fixture)
    path = request.getfixturevalue(f"{fixture}_path")
    if fixture == "llama":
        n = ref.model.config.num_hidden_layers
        dm = {"model.embed_tokens": "cpu", "model.norm": "cpu", "model.rotary_emb": "cpu", "lm_head": "cpu",
              **{f"model.layers.{i}": "cpu" for i in range(n - 1)}, f"model.layers.{n - 1}": "disk"}
    else:
        n = ref.model.config.num_hidden_layers
        dm = {"bert.embeddings": "cpu", "cls": "cpu", **{f"bert.encoder.layer.{i}": "cpu" for i in range(n - 1)},
              f"bert.encoder.layer.{n - 1}": "disk"}
    h = load_model(path, device_map=dm)
    assert "disk" in set(h.model.hf_device_map.values())
    assert any((tmp_path / "offload").rglob("*")), "nothing was offloaded"
    if fixture == "llama":
        seqs = scoring.causal_tokenize(h, TEXTS)
        got, want = scoring.causal_logprobs(h, seqs), scoring.causal_logprobs(ref, seqs)
    else:
        ids = [h.tokenizer(t)["input_ids"] for t in TEXTS]
        got, want = scoring.pseudo_log_likelihood(h, ids), scoring.pseudo_log_likelihood(ref, ids)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_bfloat16_load_scores_within_rounding(llama_path: Path, llama) -> None:  # type: ignore[no-untyped-def]
    h = load_model(llama_path, device="cpu", dtype="bfloat16")
    assert next(h.model.parameters()).dtype == torch.bfloat16 and h.identity()["dtype"] == "bfloat16"
    seqs = scoring.causal_tokenize(h, TEXTS)
    got = scoring.causal_logprobs(h, seqs)  # the packed path's masks are built in the model's dtype
    ref = scoring.causal_logprobs(llama, seqs)
    for a, b in zip(got, ref, strict=True):
        assert a.dtype == np.float64 and np.all(np.isfinite(a))
        np.testing.assert_allclose(a, b, atol=0.1)
        assert not np.allclose(a, b, atol=1e-7)  # it really ran in bf16


def test_config_carries_device_map_and_dtype(tmp_path: Path) -> None:
    cfg = tmp_path / "audit.yaml"
    (tmp_path / "pairs.csv").write_text("sent_more,sent_less,stereo_antistereo,bias_type\na b,a c,stereo,gender\n")
    cfg.write_text("models:\n  - {name: smollm2-135m, device_map: auto, dtype: bf16}\n"
                   "probes: [{probe: crows_pairs, data: pairs.csv}]\n")
    spec = load_config(cfg).models[0]
    assert spec.device_map == "auto" and spec.dtype in ("bf16", "bfloat16")


@pytest.mark.parametrize(("dtype", "warned"), [("float32", False), ("bfloat16", True), ("float16", False)])
def test_run_in_reduced_precision_warns_where_not_measured_safe(
    tmp_path: Path, llama_path: Path, dtype: str, warned: bool
) -> None:
    """crows_pairs was measured to flip pairs in bf16 but not in fp16 (audit/precision.py): a run
    in bf16 says so in the probe's summary warnings; fp32 and fp16 runs do not."""
    from audit.runner import run_audit
    from tests.test_runner import make_config

    cfg = load_config(make_config(tmp_path, llama_path))
    cfg.models[0].dtype = dtype  # type: ignore[assignment]
    [o] = run_audit(cfg, run_id="r", progress=False)
    assert o.status == "complete"
    warnings = RunView(o.run_dir).probe("cp_a").summary.get("warnings", [])
    assert any("crows_pairs ran in bfloat16" in w for w in warnings) is warned


def test_converted_gguf_config_keeps_no_quantization_entry(tmp_path: Path) -> None:
    """A dequantized GGUF cache must not claim to be quantized (transformers would then report
    packed weights computing in fp32 for a bf16 load)."""
    import json

    from audit.models import _drop_gguf_quantization

    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"model_type": "llama", "quantization_config": {"quant_method": "gguf"}}))
    _drop_gguf_quantization(cfg)
    assert json.loads(cfg.read_text()) == {"model_type": "llama"}
    before = cfg.stat().st_mtime_ns
    _drop_gguf_quantization(cfg)  # nothing to drop: the file is left alone
    assert cfg.stat().st_mtime_ns == before
