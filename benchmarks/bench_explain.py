"""Explainers on the demo models: seconds per example for every method, the Integrated Gradients
completeness gap at 16 / 32 / 64 steps, and generation IG against Captum's
``LLMGradientAttribution`` (and inseq when it is installed) on the same input.

* ``smollm2-135m`` (causal LM): next-token probability of a real sentence; generation IG over an
  8-token greedy continuation.
* ``minilm-l6`` (sentence encoder): cosine similarity of two real sentences.

Generation IG, three ways on the same prompt, continuation and baseline token, 32 steps:

* **ours, Captum semantics** (``attribute_generated=False``, log-probability): earlier generated
  tokens held fixed, one target at a time in Captum; here one forward over the steps and one
  backward per generated token. The two must agree to float precision (``max_abs_diff``).
* **ours, inseq semantics** (``attribute_generated=True``, probability): the source and the
  earlier generated tokens are attributed — the source/target matrix inseq produces.
* **inseq** ``integrated_gradients`` (probability target, its own baseline) when ``import inseq``
  works; its matrix is compared with ours by rank correlation only (different baseline).

Wall-clock seconds with torch limited to ``--threads`` CPU threads; the load average at start and
end is recorded because the machine may be shared.

    .venv/bin/python benchmarks/bench_explain.py [--threads 1] [--skip-peers]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from audit.explain import explain, list_explainers, prepare  # noqa: E402
from audit.explain.base import explain_prepared  # noqa: E402
from audit.models import load_model  # noqa: E402
from benchmarks.common import ROOT, save, table  # noqa: E402

CAUSAL_TEXT = "The nurse told the doctor that she would be late because"
ENCODER_PAIR = ("The nurse told the doctor that she would be late.", "The doctor told the nurse that he was late.")
STEPS = (16, 32, 64)
RESULTS_MD = ROOT / "benchmarks" / "RESULTS.md"
SECTION = "## Explainers (`benchmarks/bench_explain.py`)"


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _timed(fn: Any) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def bench_methods(handle: Any, inputs: list[Any], target: dict[str, Any]) -> list[dict[str, Any]]:
    """Every method once on the same input; seconds per example."""
    rows = []
    preps = prepare(handle, inputs, target)
    for m in list_explainers():
        try:
            a, dt = _timed(lambda m=m: explain_prepared(handle, preps, m, target=target))
        except Exception as exc:  # a method that fails is a result, not a crash of the benchmark
            rows.append({"method": m, "s_per_example": float("nan"), "error": f"{type(exc).__name__}: {exc}"})
            print(f"  {m:17s} FAILED {exc}")
            continue
        gap = float(np.nanmax(a.completeness_gaps())) if len(a.completeness_gaps()) else float("nan")
        rows.append({"method": m, "s_per_example": dt / len(preps), "layout": a.layout,
                     "completeness_gap": gap, "options": a.options})
        print(f"  {m:17s} {dt / len(preps):8.2f} s/example" + (f"  gap {gap:.2%}" if gap == gap else ""))
    return rows


def bench_gap(handle: Any, inputs: list[Any], targets: dict[str, tuple[dict[str, Any], str]]) -> list[dict[str, Any]]:
    """IG completeness gap and time at 16 / 32 / 64 steps for each named (target, baseline)."""
    rows = []
    for label, (target, baseline) in targets.items():
        preps = prepare(handle, inputs, target, baseline=baseline)
        for n in STEPS:
            a, dt = _timed(lambda n=n, pr=preps, tg=target: explain_prepared(handle, pr, "ig", target=tg, n_steps=n,
                                                                              adaptive=False))
            c = a[0].completeness or {}
            gaps = a.completeness_gaps()
            rows.append({"target": label, "baseline": preps[0].info["baseline_token"], "n_steps": n,
                         "gap_max": float(np.nanmax(gaps)),
                         "gap_median": float(np.nanmedian(gaps)), "n_targets": len(gaps), "seconds": dt,
                         "f_input": c.get("f_input"), "f_baseline": c.get("f_baseline")})
            print(f"  IG {label:28s} {n:3d} steps: gap max {np.nanmax(gaps):.2%} median {np.nanmedian(gaps):.2%} "
                  f"({dt:.1f} s)")
    return rows


def bench_generation(handle: Any, n_new: int, n_steps: int, peers: bool) -> dict[str, Any]:
    """Generation IG: ours (both semantics) vs Captum LLMGradientAttribution vs inseq."""
    from captum.attr import LayerIntegratedGradients, LLMGradientAttribution, TextTokenInput

    tok = handle.tokenizer
    out: dict[str, Any] = {"prompt": CAUSAL_TEXT, "max_new_tokens": n_new, "n_steps": n_steps}
    fixed = {"mode": "generate", "max_new_tokens": n_new, "output": "logprob", "attribute_generated": False}
    ours, dt = _timed(lambda: explain(handle, CAUSAL_TEXT, "ig", fixed, n_steps=n_steps, adaptive=False))
    e = ours[0]
    n_src = e.info["source_length"]
    all_ids = [int(x) for x in prepare(handle, CAUSAL_TEXT, {"mode": "generate", "max_new_tokens": n_new})[0].ids]
    gen_ids = all_ids[n_src:]
    out["continuation"] = tok.decode(gen_ids)
    out["ours_captum_semantics_s"] = dt
    out["ours_captum_semantics_gap_max"] = float(np.nanmax(ours.completeness_gaps()))
    print(f"  generation IG, ours (held fixed, log-prob): {dt:.1f} s; continuation {out['continuation']!r}")

    lig = LayerIntegratedGradients(handle.model, handle.input_embeddings())
    llm = LLMGradientAttribution(lig, tok)
    # the same token sequence as ours: the prefix token (BOS, else EOS), never attributed
    p0 = prepare(handle, CAUSAL_TEXT)[0]
    pre_id, base_id = int(p0.ids[0]), int(p0.baseline_ids[1])
    inp = TextTokenInput(tok.convert_ids_to_tokens(pre_id) + CAUSAL_TEXT, tok, baselines=base_id,
                         skip_tokens=[pre_id])
    if inp.inp_tensor[0].tolist() != all_ids[:n_src]:
        raise RuntimeError("Captum's tokenisation differs from ours; the comparison would be meaningless")
    base = torch.zeros_like(inp.to_tensor())  # every interpretable token absent: our baseline token
    res, dt_c = _timed(lambda: llm.attribute(inp, target=torch.tensor(gen_ids), n_steps=n_steps, baselines=base))
    captum_attr = res.token_attr.detach().numpy()
    ours_src = e.token_scores[:, 1:n_src]
    same_shape = captum_attr.shape == ours_src.shape
    out["captum_llm_s"] = dt_c
    out["captum_vs_ours_max_abs_diff"] = float(np.abs(captum_attr - ours_src).max()) if same_shape else None
    out["captum_vs_ours_max_abs_attr"] = float(np.abs(ours_src).max())
    out["speedup_vs_captum"] = dt_c / dt
    print(f"  Captum LLMGradientAttribution: {dt_c:.1f} s (ours {dt_c / dt:.2f}× faster); max |diff| "
          f"{out['captum_vs_ours_max_abs_diff']}")

    full = {"mode": "generate", "continuation": out["continuation"], "output": "prob"}
    ours_full, dt_f = _timed(lambda: explain(handle, CAUSAL_TEXT, "ig", full, n_steps=n_steps, adaptive=False))
    out["ours_inseq_semantics_s"] = dt_f
    out["ours_inseq_semantics_gap_max"] = float(np.nanmax(ours_full.completeness_gaps()))
    out["ours_inseq_semantics_gap_median"] = float(np.nanmedian(ours_full.completeness_gaps()))
    print(f"  generation IG, ours (source + earlier targets, prob): {dt_f:.1f} s, gap max "
          f"{out['ours_inseq_semantics_gap_max']:.2%}")
    if peers:
        out.update(_inseq(handle, n_steps, ours_full))
    return out


def _inseq(handle: Any, n_steps: int, ours: Any) -> dict[str, Any]:
    """inseq's integrated_gradients on the same tokens: the prompt with our prefix token, and the
    same continuation forced as the generated text (probability target, inseq's own baseline)."""
    try:
        import inseq
    except Exception as exc:  # inseq is optional (extra "peers")
        return {"inseq": f"not available: {exc}"}
    from importlib.metadata import version

    tok = handle.tokenizer
    e = ours[0]
    n_src = e.info["source_length"]
    prefix = tok.decode([int(tok.convert_tokens_to_ids(e.tokens[0]))]) if e.tokens else ""
    prompt = prefix + CAUSAL_TEXT
    model = inseq.load_model(handle.model, "integrated_gradients", tokenizer=handle.tokenizer)
    res, dt = _timed(lambda: model.attribute(prompt, generated_texts=prompt + e.info["continuation"],
                                             n_steps=n_steps, show_progress=False, skip_special_tokens=False))
    seq = res.sequence_attributions[0]
    out: dict[str, Any] = {"inseq_version": version("inseq"), "inseq_s": dt,
                           "inseq_tokens": [str(t.token) for t in seq.target]}
    ta = seq.target_attributions  # (prefix + generated positions, generated, hidden), NaN where not visible
    m = ta.detach().float().numpy()
    m = m.sum(-1) if m.ndim == 3 else m
    ours_m = e.token_scores.T  # (tokens, generated)
    if m.shape == ours_m.shape:
        ok = np.isfinite(m) & np.isfinite(ours_m)
        ok[:n_src][0] = False  # the prefix token: fixed in ours
        out["inseq_vs_ours_spearman"] = float(stats.spearmanr(m[ok], ours_m[ok]).statistic)
    else:
        out["inseq_vs_ours_spearman"] = None
        out["inseq_shape_mismatch"] = [list(m.shape), list(ours_m.shape)]
    print(f"  inseq {out['inseq_version']}: {dt:.1f} s; Spearman vs ours {out.get('inseq_vs_ours_spearman')}")
    return out


def _esc(v: Any) -> Any:
    """Markdown-table-safe cell (token strings such as <|endoftext|> contain pipes)."""
    return v.replace("|", "\\|") if isinstance(v, str) else v


def write_markdown(payload: dict[str, Any]) -> None:
    lines = [SECTION, "", f"{payload['machine']['cpu_count']} CPUs, torch threads {payload['threads']}; the machine "
             "is shared by other jobs, so times are wall-clock under the load averages given (1, 5, 15 min). One "
             "real sentence per model, default options (IG 32 steps, LIME / Kernel SHAP 200 samples, GradientSHAP "
             "16 samples; baseline token: pad for the encoder, unk for the causal LM).", ""]
    for name, r in payload["models"].items():
        when = "; ".join(f"{part} {w['date']} (load {w['load_start']} → {w['load_end']})"
                         for part, w in r.get("runs", {}).items())
        gap_rows = [{k: _esc(v) for k, v in row.items()} for row in r["ig_gap"]]
        lines += [f"### {name} ({r['kind']})", "", f"Measured: {when}.", "", f"Input: {r['input']!r}; "
                  f"target: {r['target']}", "", "Seconds per example:", "",
                  table([{k: v for k, v in row.items() if k in ("method", "s_per_example", "completeness_gap")}
                         for row in r["methods"]], ["method", "s_per_example", "completeness_gap"]), "",
                  "IG completeness gap |Σ attr − (f(x) − f(x'))| / |f(x) − f(x')|:", "",
                  table(gap_rows, ["target", "baseline", "n_steps", "gap_max", "gap_median", "n_targets",
                                   "seconds"]), ""]
        if "generation" in r:
            g = r["generation"]
            rows = [{"implementation": "ours, earlier tokens fixed, log-prob (Captum semantics)",
                     "seconds": g["ours_captum_semantics_s"], "gap_max": g["ours_captum_semantics_gap_max"]},
                    {"implementation": "Captum LLMGradientAttribution (LayerIntegratedGradients)",
                     "seconds": g["captum_llm_s"], "gap_max": ""},
                    {"implementation": "ours, source + earlier targets, prob (inseq semantics)",
                     "seconds": g["ours_inseq_semantics_s"], "gap_max": g["ours_inseq_semantics_gap_max"]}]
            if "inseq_s" in g:
                rows.append({"implementation": f"inseq {g['inseq_version']} integrated_gradients",
                             "seconds": g["inseq_s"], "gap_max": ""})
            lines += [f"Generation IG, {g['max_new_tokens']} greedy tokens ({g['continuation']!r}), "
                      f"{g['n_steps']} steps:", "", table(rows, ["implementation", "seconds", "gap_max"]), "",
                      f"Ours vs Captum (same semantics): max |diff| = {g['captum_vs_ours_max_abs_diff']:.2e} "
                      f"(largest |attribution| {g['captum_vs_ours_max_abs_attr']:.3g}); ours is "
                      f"{g['speedup_vs_captum']:.2f}× faster."
                      + (f" inseq vs ours on the same tokens (inseq's own baseline, ours the unk token): "
                         f"Spearman {g['inseq_vs_ours_spearman']:.2f}."
                         if g.get("inseq_vs_ours_spearman") is not None else ""), ""]
    text = "\n".join(lines)
    old = RESULTS_MD.read_text(encoding="utf-8") if RESULTS_MD.exists() else "# Benchmark results\n"
    pattern = re.compile(re.escape(SECTION) + r".*?(?=^## |\Z)", re.S | re.M)
    new = pattern.sub(lambda _: text + "\n", old) if pattern.search(old) else old.rstrip("\n") + "\n\n" + text + "\n"
    RESULTS_MD.write_text(new, encoding="utf-8")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is fastest on a busy machine)")
    ap.add_argument("--models", nargs="+", default=["smollm2-135m", "minilm-l6"])
    ap.add_argument("--new-tokens", type=int, default=8)
    ap.add_argument("--skip-peers", action="store_true", help="do not run inseq")
    ap.add_argument("--no-markdown", action="store_true")
    ap.add_argument("--parts", nargs="+", choices=["methods", "gap", "generation", "none"],
                    default=["methods", "gap", "generation"],
                    help="what to measure; other parts are kept from the previous results/explain.json "
                         "('none': only rewrite the RESULTS.md section)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    previous_path = ROOT / "benchmarks" / "results" / "explain.json"
    previous = json.loads(previous_path.read_text()) if previous_path.exists() else {}
    payload: dict[str, Any] = {"threads": args.threads, "models": {}}
    parts = [p for p in args.parts if p != "none"]
    for name in args.models if parts else []:
        old = previous.get("models", {}).get(name, {})
        load0 = _load()
        h, load_s = _timed(lambda name=name: load_model(name, device="cpu"))
        print(f"{name}: {h.kind}, loaded in {load_s:.1f} s")
        inputs: list[Any]
        target: dict[str, Any] = {}
        if h.kind == "causal-lm":
            inputs = [CAUSAL_TEXT]
            gen = {"mode": "generate", "max_new_tokens": args.new_tokens}
            gap_targets = {"next-token probability": ({}, "auto"),
                           "next-token probability (pad baseline)": ({}, "pad"),
                           "next-token log-probability": ({"output": "logprob"}, "auto"),
                           f"generation ({args.new_tokens} tokens), probability": (gen, "auto"),
                           f"generation ({args.new_tokens} tokens), log-probability":
                               ({**gen, "output": "logprob"}, "auto")}
        else:
            inputs = [ENCODER_PAIR]
            gap_targets = {"cosine similarity (mean pooling)": ({}, "auto")}
        r: dict[str, Any] = {"kind": h.kind, "load_s": load_s, "input": inputs[0],
                             "target": prepare(h, inputs, target)[0].target_names[0]}
        r["methods"] = bench_methods(h, inputs, target) if "methods" in parts else old.get("methods", [])
        r["ig_gap"] = bench_gap(h, inputs, gap_targets) if "gap" in parts else old.get("ig_gap", [])
        if h.kind == "causal-lm":
            r["generation"] = (bench_generation(h, args.new_tokens, 32, not args.skip_peers)
                               if "generation" in parts else old.get("generation", {}))
        stamp = {"date": time.strftime("%Y-%m-%d %H:%M"), "load_start": load0, "load_end": _load()}
        r["runs"] = {part: (stamp if part in parts else old.get("runs", {}).get(part, {}))
                     for part in ("methods", "gap", "generation") if part in r or part in ("methods", "gap")}
        r["runs"] = {k: v for k, v in r["runs"].items() if v}
        payload["models"][name] = r
    if parts:
        path = save("explain", payload)
        print(f"wrote {path}")
    else:
        payload = previous
    if not args.no_markdown:
        from benchmarks.common import machine

        payload = {**payload, "machine": payload.get("machine") or machine()}
        write_markdown(payload)
        print(f"updated {RESULTS_MD}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
