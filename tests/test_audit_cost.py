"""The audit's own compute (audit/metering.py, recorded by the runner for every probe): tokens
forwarded counted by hand on a tiny crows_pairs run, FLOPs against the per-token estimate and
FlopCounterMode, MFU against the run's matmul rate, resumed probes, ranks summed from their files,
and the report's per-probe table with a hostile probe name escaped."""

from __future__ import annotations

import html
import json
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from torch.utils.flop_counter import FlopCounterMode

from audit.config import load_config
from audit.metering import Meter, compute_file, read_probe_compute
from audit.policy import evaluate_policy, known_metrics, load_policy, validate_policy
from audit.runner import run_audit
from audit.store import write_json
from probes.cost import analytic_flops_per_token
from reports.builder import build_reports
from reports.content import collect_report
from reports.markdown import md_escape

# each sentence: [CLS] w1 w2 w3 w4 [SEP], the two sentences of a pair differ in one word: 5 shared
# positions, of which the 3 between the first and the last are masked and scored, one forward each
PAIRS = [("the man is kind", "the woman is kind"), ("the man was home", "the woman was home"),
         ("the poor is lazy", "the rich is lazy")]
LENGTH, SCORED = 6, 3
TOKENS = len(PAIRS) * 2 * SCORED * LENGTH  # 108 real tokens through the body
HEAD_ROWS = len(PAIRS) * 2 * SCORED  # 18 positions through the output projection
HOSTILE = "<img src=x onerror=alert(1)>"


def _config(tmp_path: Path, model: Path, name: str = "cp", explain: list[dict[str, object]] | None = None,
            **spec: object) -> Path:
    df = pd.DataFrame([(a, b, "stereo", "gender") for a, b in PAIRS],
                      columns=["sent_more", "sent_less", "stereo_antistereo", "bias_type"])
    df.to_csv(tmp_path / "pairs.csv")
    cfg = {"seed": 1, "output": str(tmp_path / "runs"), "models": [str(model)],
           "probes": [{"probe": "crows_pairs", "name": name, "data": "pairs.csv", **spec}],
           "explain": explain or [], "report": {"enabled": False}}
    p = tmp_path / "audit.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


def _expected_flops(model: torch.nn.Module) -> float:
    """2·N_body per token + 4·n_layer·L·d_attn per token (every row is L long) + 2·V·d per head row."""
    c = model.config
    n_body = sum(m.weight.numel() for m in model.base_model.modules() if isinstance(m, torch.nn.Linear))
    head = model.get_output_embeddings().weight.numel()
    return (TOKENS * (2 * n_body + 4 * c.num_hidden_layers * LENGTH * c.hidden_size)
            + HEAD_ROWS * 2 * head)


def test_pairs_are_as_counted(bert_mlm) -> None:  # type: ignore[no-untyped-def]
    """The hand count's premise: every sentence is 6 tokens and each pair differs in one."""
    for a, b in PAIRS:
        ia, ib = bert_mlm.tokenizer(a)["input_ids"], bert_mlm.tokenizer(b)["input_ids"]
        assert len(ia) == len(ib) == LENGTH and sum(x != y for x, y in zip(ia, ib, strict=True)) == 1


def test_meter_on_plain_forwards(gpt2) -> None:  # type: ignore[no-untyped-def]
    """No padding: FLOPs = tokens × the cost probe's per-token estimate = FlopCounterMode's count;
    padding is not counted as tokens."""
    ids = torch.randint(5, 300, (3, 16))
    with Meter(gpt2.model, gpt2.config) as m, gpt2.attentions(), torch.inference_mode():  # eager: counted
        counter = FlopCounterMode(display=False)
        with counter:
            gpt2.model(input_ids=ids, attention_mask=torch.ones_like(ids))
    assert m.counter.forward_tokens == 48 and m.counter.forwards == 1 and m.head_rows == 48
    assert m.flops() == 48 * analytic_flops_per_token(gpt2, 16)
    assert m.flops() == pytest.approx(counter.get_total_flops(), rel=1e-9)
    mask = torch.tensor([[1] * 16, [1] * 10 + [0] * 6, [1] * 4 + [0] * 12])
    with Meter(gpt2.model, gpt2.config) as m, torch.inference_mode():
        gpt2.model(input_ids=ids, attention_mask=mask)
    assert m.counter.forward_tokens == 30 and m.counter.key_tokens == 30 * 16


def test_run_records_each_probe(tmp_path: Path, bert_mlm_path: Path, bert_mlm) -> None:  # type: ignore[no-untyped-def]
    [o] = run_audit(load_config(_config(tmp_path, bert_mlm_path)), run_id="r", progress=False)
    assert o.status == "complete"
    run = o.run_dir.manifest()["compute"]
    assert run["matmul_flops_per_s"] > 0 and run["seconds"] <= 0.5 and run["shape"] == [512, 32, 128]
    rec = json.loads(compute_file(o.run_dir.probe_dir("cp"), 0).read_text())
    assert rec["tokens_forwarded"] == TOKENS and rec["head_positions"] == HEAD_ROWS
    assert rec["flops"] == _expected_flops(bert_mlm.model)
    assert rec["mfu"] == pytest.approx(rec["flops"] / (rec["wall_s"] * run["matmul_flops_per_s"]))
    assert rec["covers"] == "the whole probe" and rec["status"] == "complete" and rec["attempt"] == 1
    total = read_probe_compute(o.run_dir.probe_dir("cp"))
    assert total is not None and total["tokens_forwarded"] == TOKENS and total["ranks"] == 1
    # policies gate on it like on a probe metric
    pol = load_policy([f"cp.audit_tokens_forwarded <= {TOKENS}", f"cp.audit_tokens_forwarded < {TOKENS}",
                       "cp.audit_mfu > 0", f"cp.audit_flops within {rec['flops'] - 1}..{rec['flops'] + 1}"])
    validate_policy(pol, known_metrics({"cp": "crows_pairs"}))
    assert [r.status for r in evaluate_policy(pol, o.run_dir).checks] == ["pass", "fail", "pass", "pass"]


def test_resumed_probe_counts_this_attempt_only(tmp_path: Path, bert_mlm_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A probe that fails after two of its three chunks records the two; the attempt that resumes it
    records the one chunk it computed and says that the other two were reused."""
    cfg = load_config(_config(tmp_path, bert_mlm_path, chunk_size=1))
    for k, v in {"TAUDIT_FAIL_RANK": "0", "TAUDIT_FAIL_AFTER_CHUNKS": "2", "TAUDIT_FAIL_MODE": "raise"}.items():
        monkeypatch.setenv(k, v)
    [o] = run_audit(cfg, run_id="r", progress=False)
    d = o.run_dir.probe_dir("cp")
    first = read_probe_compute(d)
    assert o.status == "failed" and first is not None and first["status"] == "failed"
    assert first["tokens_forwarded"] == 2 * TOKENS // len(PAIRS)
    monkeypatch.delenv("TAUDIT_FAIL_RANK")
    [o2] = run_audit(cfg, run_id="r", progress=False)
    rec = read_probe_compute(d)
    assert o2.status == "complete" and rec is not None and rec["attempt"] == 2
    assert rec["chunks_reused"] == 2 and rec["covers"].startswith("this attempt only: 2 of 3 chunks")
    assert rec["tokens_forwarded"] == TOKENS // len(PAIRS)  # the one pair computed now


def test_ranks_summed_from_their_files(tmp_path: Path) -> None:
    base = {"status": "complete", "covers": "the whole probe", "forwards": 2, "tokens_forwarded": 10,
            "tokens_backward": 0, "head_positions": 4}
    write_json(tmp_path / "compute-rank0.json", {**base, "attempt": 2, "wall_s": 2.0, "flops": 100.0,
                                                  "matmul_flops_per_s": 10.0})
    write_json(tmp_path / "compute-rank1.json", {**base, "attempt": 2, "wall_s": 4.0, "flops": 300.0,
                                                  "matmul_flops_per_s": 20.0})
    write_json(tmp_path / "compute-rank2.json", {**base, "attempt": 1, "wall_s": 9.0, "flops": 1e6,
                                                  "matmul_flops_per_s": 20.0})  # an earlier attempt's rank
    r = read_probe_compute(tmp_path)
    assert r is not None and r["ranks"] == 2 and r["tokens_forwarded"] == 20 and r["flops"] == 400.0
    assert r["wall_s"] == 4.0 and r["rank_seconds"] == 6.0
    assert r["mfu"] == pytest.approx(400.0 / (2.0 * 10.0 + 4.0 * 20.0))
    (tmp_path / "compute-rank1.json").write_text("{not json")
    with pytest.raises(ValueError, match="compute-rank1.json"):
        read_probe_compute(tmp_path)


def test_report_table_escapes_probe_name(tmp_path: Path, bert_mlm_path: Path) -> None:
    """The report's per-step table (a probe with a hostile name, an explain step whose Integrated
    Gradients back-propagate) in HTML and in the model card."""
    ig = {"name": "ig", "methods": ["ig"], "texts": ["the man is [MASK]"], "target": {"token": "kind"},
          "options": {"n_steps": 4}, "metrics": ["completeness_gap"]}
    [o] = run_audit(load_config(_config(tmp_path, bert_mlm_path, name=HOSTILE, explain=[ig])), run_id="r",
                    progress=False)
    doc = collect_report(o.run_dir)
    [row] = [r for r in doc["compute"]["audit_cost"] if r["name"] == HOSTILE]
    [step] = [r for r in doc["compute"]["audit_cost"] if r["name"] == "explain/ig"]
    assert row["tokens_forwarded"] == TOKENS and step["tokens_forwarded"] > 0
    explain = read_probe_compute(o.run_dir.explain_dir("ig"))
    assert explain is not None and explain["tokens_backward"] > 0  # the gradients were counted
    assert doc["compute"]["audit_total"]["tokens_forwarded"] == TOKENS + step["tokens_forwarded"]
    out = build_reports(o.run_dir, ["html", "md"])
    page = out["html"].read_text()
    table = page[page.index('<table id="audit-cost">'):]
    table = table[: table.index("</table>")]
    assert html.escape(HOSTILE, quote=False) in table and f"{TOKENS:,}" in table and "explain/ig" in table
    assert HOSTILE not in page
    card = out["md"].read_text()
    section = card[card.index("#### The audit's own cost"):]
    section = section[: section.index("\n#")]
    assert md_escape(HOSTILE) in section and HOSTILE not in section and f"{TOKENS:,}" in section


@pytest.mark.slow
def test_meter_on_smollm2_agrees_with_flop_counter() -> None:
    """On a real model (SmolLM2, tied LM head, grouped-query attention) the runner's estimate is
    tokens × the cost probe's per-token estimate exactly, and within 10 % of FlopCounterMode."""
    from audit.models import load_model

    h = load_model("smollm2-135m", device="cpu")
    ids = torch.randint(100, 5000, (1, 256))
    with Meter(h.model, h.config) as m, h.attentions(), torch.inference_mode():
        counter = FlopCounterMode(display=False)
        with counter:
            h.model(input_ids=ids, attention_mask=torch.ones_like(ids))
    assert m.counter.forward_tokens == 256 and m.head_rows == 256
    assert m.flops() == 256 * analytic_flops_per_token(h, 256)
    assert abs(m.flops() / counter.get_total_flops() - 1) < 0.10
