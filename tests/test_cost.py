"""The cost probe: parameter counts and FLOPs worked out by hand, the order-statistic interval of
a median checked by simulation, speed metrics present with intervals, policy checks on them, and
FlopCounterMode against the analytic estimate on SmolLM2 (slow)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from audit.probe import ProbeError
from probes import run_probe
from probes.cost import (
    analytic_flops_per_token,
    measured_flops_per_token,
    median_interval,
    parameter_counts,
)

SPEED = dict(lengths=[16, 64], prefill_length=8, new_tokens=3, repeats=3, batch_tokens=64, matmul_seconds=0.1,
             progress=False)


def test_parameter_counts_and_flops_by_hand(gpt2) -> None:  # type: ignore[no-untyped-def]
    cfg = gpt2.config  # tiny GPT-2: n_embd 32, 2 layers, 4 heads, n_positions 128, tied LM head
    d, n_layer, v = cfg.n_embd, cfg.n_layer, cfg.vocab_size
    per_layer = 2 * 2 * d + (d * 3 * d + 3 * d) + (d * d + d) + (d * 4 * d + 4 * d) + (4 * d * d + d)
    counts = parameter_counts(gpt2.model)
    assert counts["embedding_parameters"] == v * d + 128 * d
    assert counts["non_embedding_parameters"] == n_layer * per_layer + 2 * d  # + final layer norm
    # FLOPs per token: 2 per weight of each matmul (qkv, proj, mlp up/down, LM head) + attention
    matmul_weights = n_layer * (3 * d * d + d * d + 8 * d * d) + d * v
    for length in (16, 64):
        expected = 2 * matmul_weights + 4 * n_layer * length * d
        assert analytic_flops_per_token(gpt2, length) == expected
        assert measured_flops_per_token(gpt2, length) == pytest.approx(expected, rel=1e-9)


def test_median_interval_covers_in_simulation() -> None:
    rng = np.random.default_rng(0)
    for n, nominal in ((9, 0.95), (25, 0.95), (5, 0.9375)):
        hits = 0
        for _ in range(2000):
            x = rng.lognormal(0.0, 0.5, n)  # true median 1
            lo, hi, cov = median_interval(x)
            hits += lo <= 1.0 <= hi
        assert cov >= nominal - 1e-9
        assert hits / 2000 >= nominal - 0.02  # exact binomial coverage (continuous data)
    lo, hi, cov = median_interval(np.arange(1.0, 10.0))
    assert (lo, hi) == (2.0, 8.0) and cov == pytest.approx(1 - 2 * 10 / 512)  # k = 2 for n = 9


def test_cost_on_tiny_causal_and_encoder(gpt2, bert_encoder) -> None:  # type: ignore[no-untyped-def]
    r = run_probe("cost", gpt2, **SPEED)
    s = r.summary
    for k in ("prefill_tokens_per_s", "decode_tokens_per_s", "prefill_tokens_per_s_batch",
              "decode_tokens_per_s_batch", "first_token_latency_ms"):
        assert s[k].value > 0 and s[k].ci_low <= s[k].value <= s[k].ci_high and s[k].n == 3, k
    assert s["flops_measured_over_analytic"].value == pytest.approx(1.0)
    by_dtype = r.info["weight_bytes_by_dtype"]
    assert s["weight_bytes"].value == sum(by_dtype.values()) and by_dtype["float32"] >= 4 * s["parameters"].value
    assert 0 < s["prefill_mfu"].value < 5 and s["peak_memory_mb"].value > 50
    assert r.info["speed"]["batch_rows"] == 64 // (8 + 3)
    assert set(r.items["measurement"]) >= {"decode_tokens_per_s", "first_token_latency_ms"}
    e = run_probe("cost", bert_encoder, **SPEED).summary
    assert "decode_tokens_per_s" not in e and e["prefill_tokens_per_s_batch"].value > 0
    assert e["flops_measured_over_analytic"].value == pytest.approx(1.0, rel=0.1)


def test_bad_options(gpt2) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ProbeError, match=r"lengths\.1: Field required"):
        run_probe("cost", gpt2, lengths=[16], progress=False)
    with pytest.raises(ProbeError, match="repeats: Input should be greater than 0"):
        run_probe("cost", gpt2, repeats=0, progress=False)
    with pytest.raises(ProbeError, match="data: Input should be None"):
        run_probe("cost", gpt2, data="x.csv", progress=False)


def test_policy_checks_on_cost_metrics(tmp_path: Path, gpt2_path: Path) -> None:
    import yaml

    from audit.config import load_config
    from audit.runner import run_audit

    cfg = {"seed": 0, "output": str(tmp_path / "runs"), "models": [{"name": str(gpt2_path)}],
           "probes": [{"probe": "cost", "options": {k: v for k, v in SPEED.items() if k != "progress"}}],
           "report": {"enabled": False},
           "policy": {"checks": ["cost.decode_tokens_per_s >= 1",
                                 {"check": "cost.first_token_latency_ms <= 1e9", "on": "ci"},
                                 {"check": "cost.prefill_tokens_per_s >= 1e15", "severity": "warn"}]}}
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(cfg))
    [o] = run_audit(load_config(tmp_path / "a.yaml"), run_id="r", progress=False)
    assert o.status == "complete", o.errors
    status = [c.status for c in o.verdict.checks]
    assert status == ["pass", "pass", "warn"] and not o.verdict.failed


@pytest.mark.slow
def test_flop_counter_agrees_with_the_estimate_on_smollm2() -> None:
    from audit.models import load_model

    h = load_model("smollm2-135m", device="cpu")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    for length in (128, 512):
        measured, analytic = measured_flops_per_token(h, length), analytic_flops_per_token(h, length)
        assert abs(measured / analytic - 1) < 0.10, (length, measured, analytic)
    # and 2N + attention in Kaplan et al.'s form with N the non-embedding parameters: within 10 % too
    n = parameter_counts(h.model)["non_embedding_parameters"]
    cfg = h.config
    kaplan = 2 * (n + cfg.vocab_size * cfg.hidden_size) + 4 * cfg.num_hidden_layers * 512 * cfg.hidden_size
    assert abs(measured_flops_per_token(h, 512) / kaplan - 1) < 0.10
