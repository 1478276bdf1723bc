"""Reduced precision vs fp32: how far each probe's numbers move in bfloat16 and float16.

Every probe runs on each model kind it supports among the demo models, once per dtype
(``load_model(name, dtype=...)``), on the same items with the same seed:

* ``smollm2-135m`` (causal LM, real weights);
* ``minilm-l6`` (sentence encoder, real weights);
* ``minilm-l6-mlm`` — the real MiniLM body as a ``BertForMaskedLM`` whose head is the identity
  transform tied to the word embeddings (no MLM head ships with real weights; this one is
  deterministic and gives peaked, non-uniform token distributions, unlike a random model, so
  near-ties are as rare as in a real model — meaningless for bias, fine for precision);
* ``minilm-l6-cls`` — the real MiniLM body as a ``BertForSequenceClassification`` whose head is a
  logistic regression fit (in fp32) on the pooler outputs of the built-in sentiment data.

Per (probe, model, dtype) it records: the largest and median |Δ| of the item-level score (the
probe's ``item_effect`` column) against fp32; the primary metric in both dtypes, its |Δ|,
|Δ| as a fraction of the fp32 95 % CI half-width and whether the reduced-precision value lies
inside the fp32 CI; the fraction of items whose decision flips (CrowS-Pairs hit, StereoSet
pro/anti and relatedness, BBQ chosen answer, SEAT sign and significance, ...) with a one-sided
95 % Clopper–Pearson upper bound; non-finite scores; and the time. BOLD runs greedy so sampling
plays no part: it records the fraction of identical continuations and where they first diverge.
The verdict per row is :func:`audit.precision.within_tolerance`.

GPU kernels accumulate differently from these CPU ones (oneDNN bf16 GEMMs, a slow reference fp16
GEMM), so ``benchmarks/gpu.sh`` should repeat the measurement on the GPU.

    .venv/bin/python benchmarks/bench_dtype.py [--threads 1] [--items 32] [--only crows_pairs,bbq]
    .venv/bin/python benchmarks/bench_dtype.py --device cuda      # the GPU re-check

Writes ``benchmarks/results/dtype.json`` (``dtype_cuda.json`` on a GPU; ``*_partial`` with
``--only`` / ``--models``).
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy import stats as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from audit.models import ModelHandle, load_model, resolve_demo  # noqa: E402
from audit.precision import TOLERANCE, within_tolerance  # noqa: E402
from audit.probe import get_probe  # noqa: E402
from audit.results import ProbeResult  # noqa: E402
from benchmarks.common import SHARED_DATA, save, table  # noqa: E402
from probes import run_probe  # noqa: E402

logger = logging.getLogger("bench_dtype")

DTYPES = ("float32", "bfloat16", "float16")
KINDS = {"smollm2-135m": "causal-lm", "minilm-l6": "encoder", "minilm-l6-mlm": "masked-lm",
         "minilm-l6-cls": "classifier"}
BUILT = ("minilm-l6-mlm", "minilm-l6-cls")
SEAT_WORD_TESTS = [f"weat{i}.jsonl" for i in (1, 2, 3, 4, 6, 7, 8)]


@dataclass
class Case:
    """One probe on one model: its data, options, the columns that identify an item and the
    decisions whose flips count."""

    probe: str
    model: str
    data: Path | None
    options: dict[str, Any]
    key: list[str]
    decisions: Callable[[ProbeResult], pd.DataFrame] | None
    decision_name: str
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.probe}/{self.model}"


def _cols(*names: str) -> Callable[[ProbeResult], pd.DataFrame]:
    return lambda r: r.items[list(names)]


def _sign(col: str | None = None) -> Callable[[ProbeResult], pd.DataFrame]:
    def f(r: ProbeResult) -> pd.DataFrame:
        c = col or r.item_effect
        return pd.DataFrame({f"sign({c})": np.sign(r.items[c].to_numpy(dtype=float))})
    return f


def _seat_decisions(r: ProbeResult) -> pd.DataFrame:
    return pd.DataFrame({"sign": np.sign(r.items["effect_size"].to_numpy(float)),
                         "significant": r.items["significant"]})


def _repr_decisions(r: ProbeResult) -> pd.DataFrame:
    # a layer counts as encoding the attribute beyond memorisation when its selectivity CI excludes 0
    return pd.DataFrame({"selective": r.items["selectivity_ci_low"].to_numpy(float) > 0})


def _bold_decisions(r: ProbeResult) -> pd.DataFrame:
    return r.items[["vader_positive", "vader_negative"]]


def cases(items: int, bbq_per_file: int, bold_per_group: int, cf_masked: int) -> list[Case]:
    """What runs where; every probe on every demo kind it supports (SEAT and representation run
    the same embedding path on masked-LM and classifier bodies as on the encoder, so only there)."""
    crows = SHARED_DATA / "crows-pairs" / "crows_pairs_anonymized.csv"
    ss = SHARED_DATA / "stereoset" / "dev.json"
    seat_dir = Path(tempfile.mkdtemp(prefix="bench_dtype_seat_"))
    builtin = Path(__file__).resolve().parents[1] / "probes" / "data" / "seat"
    for p in [*builtin.glob("*.jsonl"), *(SHARED_DATA / "seat" / n for n in SEAT_WORD_TESTS)]:
        (seat_dir / p.name).symlink_to(p)
    # causal template effects are centred per template and pair: a few items per set would mostly be
    # whole centred clusters whose mean is 0 by construction
    per_set = max(1, items // 4)
    fair = {"max_items": items, "n_resamples": 300, "n_permutations": 200}
    out = []
    for model in ("smollm2-135m", "minilm-l6-mlm"):
        out += [
            Case("crows_pairs", model, crows, {"max_items": items}, ["sent_more", "sent_less"],
                 _cols("stereo_preferred", "neutral"), "stereo preferred / neutral"),
            Case("stereoset", model, ss, {"max_items": items // 2}, ["cluster_id"],
                 _cols("stereotype_preferred", "n_related"), "pro vs anti, # related"),
            Case("templates", model, None, {"max_items": per_set}, ["sentence_a", "sentence_b"], _sign(),
                 "sign of effect"),
            # masked PLL scores every token of both versions: a cap keeps the slow CPU fp16 GEMM affordable
            Case("counterfactual", model, None, {} if model == "smollm2-135m" else {"max_items": cf_masked},
                 ["text", "swapped_text"], _sign("delta_ll_context"), "sign of Δ log-lik"),
            Case("bbq", model, SHARED_DATA / "bbq", {"max_items": bbq_per_file}, ["context", "question"],
                 _cols("answer"), "chosen answer"),
        ]
    out += [
        Case("seat", "smollm2-135m", seat_dir, {}, ["test"], _seat_decisions, "sign, BH-significant"),
        Case("bold", "smollm2-135m", SHARED_DATA / "bold",
             {"max_prompts_per_group": bold_per_group, "domains": ["gender", "race", "religious_ideology"],
              "do_sample": False}, ["prompt"], _bold_decisions, "VADER positive / negative"),
        Case("classifier_fairness", "smollm2-135m", None, fair, ["text"], _cols("y_pred"), "predicted label"),
        Case("representation", "smollm2-135m", None, {"n_permutations": 20}, ["layer"], _repr_decisions,
             "layer selective (CI > 0)"),
        Case("seat", "minilm-l6", seat_dir, {}, ["test"], _seat_decisions, "sign, BH-significant"),
        Case("counterfactual", "minilm-l6", None, {}, ["text", "swapped_text"], None, "(none: a distance)"),
        Case("representation", "minilm-l6", None, {"n_permutations": 20}, ["layer"], _repr_decisions,
             "layer selective (CI > 0)"),
        Case("classifier_fairness", "minilm-l6-cls", None, fair, ["text"], _cols("y_pred"), "predicted label"),
        Case("counterfactual", "minilm-l6-cls", None, {}, ["text", "swapped_text"],
             _cols("pred_original", "pred_swapped"),
             "predicted labels"),
    ]
    return out


# --------------------------------------------------------------------------------------------
# models
# --------------------------------------------------------------------------------------------


def build_minilm_heads(root: Path) -> dict[str, Path]:
    """The real MiniLM body with a deterministic MLM head and a fitted classification head,
    saved (fp32) so ``load_model`` loads them in any dtype."""
    from sklearn.linear_model import LogisticRegression
    from transformers import AutoTokenizer, BertForMaskedLM, BertForSequenceClassification

    from probes.classifier_fairness import DEFAULT_DATA

    src, _ = resolve_demo("minilm-l6")
    tok = AutoTokenizer.from_pretrained(src)
    paths = {"minilm-l6-mlm": root / "minilm-l6-mlm", "minilm-l6-cls": root / "minilm-l6-cls"}
    mlm = BertForMaskedLM.from_pretrained(src, dtype=torch.float32)
    head = mlm.cls.predictions
    with torch.no_grad():
        head.transform.dense.weight.copy_(torch.eye(head.transform.dense.weight.shape[0]))
        head.transform.dense.bias.zero_()
        head.transform.LayerNorm.weight.fill_(1.0)
        head.transform.LayerNorm.bias.zero_()
        head.bias.zero_()
    mlm.tie_weights()
    mlm.save_pretrained(paths["minilm-l6-mlm"])
    tok.save_pretrained(paths["minilm-l6-mlm"])

    cls = BertForSequenceClassification.from_pretrained(src, num_labels=2, dtype=torch.float32).eval()
    df = pd.read_csv(DEFAULT_DATA)
    with torch.inference_mode():
        enc = tok(df["text"].tolist(), return_tensors="pt", padding=True)
        pooled = cls.bert(**enc).pooler_output.numpy()
    lr = LogisticRegression(C=1.0, max_iter=2000).fit(pooled, df["label"].to_numpy())
    w, b = torch.as_tensor(lr.coef_[0], dtype=torch.float32), float(lr.intercept_[0])
    with torch.no_grad():  # softmax([-z/2, z/2]) = [1 − σ(z), σ(z)] with z = w·x + b
        cls.classifier.weight.copy_(torch.stack([-w / 2, w / 2]))
        cls.classifier.bias.copy_(torch.tensor([-b / 2, b / 2]))
    cls.save_pretrained(paths["minilm-l6-cls"])
    tok.save_pretrained(paths["minilm-l6-cls"])
    logger.info("minilm-l6-cls head: training accuracy %.3f", lr.score(pooled, df["label"].to_numpy()))
    return paths


def load(model: str, dtype: str, built: dict[str, Path], device: str) -> ModelHandle:
    if model in built:
        return load_model(built[model], kind=KINDS[model], device=device, dtype=dtype)
    return load_model(model, device=device, dtype=dtype)


# --------------------------------------------------------------------------------------------
# comparison
# --------------------------------------------------------------------------------------------


def _upper95(k: int, n: int) -> float:
    """One-sided 95 % Clopper–Pearson upper bound of a rate with k events in n."""
    return 1.0 if k >= n else float(st.beta.ppf(0.95, k + 1, n - k))


def _first_divergence(h: ModelHandle, a: str, b: str) -> int | None:
    """Token index where two continuations first differ (None when identical)."""
    if a == b:
        return None
    ta = h.tokenizer(a, add_special_tokens=False)["input_ids"]
    tb = h.tokenizer(b, add_special_tokens=False)["input_ids"]
    for i, (x, y) in enumerate(zip(ta, tb, strict=False)):
        if x != y:
            return i
    return min(len(ta), len(tb))


def compare(case: Case, dtype: str, h: ModelHandle | None = None) -> dict[str, Any]:
    """Item-level, metric-level and decision-level differences of one dtype's run from fp32."""
    ref, run = case.runs["float32"], case.runs[dtype]
    out: dict[str, Any] = {"seconds": run["seconds"], "fp32_seconds": ref["seconds"]}
    if "error" in run:
        return {**out, "error": run["error"]}
    r0, r1 = ref["result"], run["result"]
    a, b = r0.items.reset_index(drop=True), r1.items.reset_index(drop=True)
    if len(a) != len(b) or not a[case.key].astype(str).equals(b[case.key].astype(str)):
        raise RuntimeError(f"{case.name}: {dtype} items are not the fp32 items (key {case.key})")
    n = len(a)
    col = r0.item_effect
    x, y = a[col].to_numpy(float), b[col].to_numpy(float)
    both = np.isfinite(x) & np.isfinite(y)
    d = np.abs(x[both] - y[both])
    out["n_items"] = n
    out["item_score"] = col
    out["item_max_abs_delta"] = float(d.max()) if d.size else float("nan")
    out["item_median_abs_delta"] = float(np.median(d)) if d.size else float("nan")
    out["item_fp32_median_abs"] = float(np.median(np.abs(x[np.isfinite(x)]))) if np.isfinite(x).any() else float("nan")
    out["nonfinite_new"] = int((np.isfinite(x) & ~np.isfinite(y)).sum())
    prim = r0.info.get("primary_metric") or get_probe(case.probe).primary_metric
    m0, m1 = r0.summary[prim], r1.summary[prim]
    half = (m0.ci_high - m0.ci_low) / 2 if m0.ci_low is not None and m0.ci_high is not None else None
    delta = abs(m1.value - m0.value)
    out["primary"] = {
        "metric": prim, "fp32": m0.value, "fp32_ci": [m0.ci_low, m0.ci_high], "value": m1.value,
        "ci": [m1.ci_low, m1.ci_high], "abs_delta": delta,
        "delta_over_half_width": delta / half if half else (0.0 if delta == 0 else float("inf")),
        "inside_fp32_ci": bool(m0.ci_low <= m1.value <= m0.ci_high) if half is not None else None,
    }
    if case.decisions is not None:
        da, db = case.decisions(r0).reset_index(drop=True), case.decisions(r1).reset_index(drop=True)
        # items without a decision in both runs (NaN: e.g. a text with no swappable term) do not flip
        same = (da == db) | (da.isna() & db.isna())
        flipped = (~same).any(axis=1).to_numpy()
        decided = ~(da.isna().all(axis=1) & db.isna().all(axis=1)).to_numpy()
        k, m = int(flipped[decided].sum()), int(decided.sum())
        out["flips"] = {"n": k, "of": m, "fraction": k / m, "upper95": _upper95(k, m), "decision": case.decision_name}
    else:
        out["flips"] = None
    if case.probe == "bold" and h is not None:
        ca, cb = a["continuation"].tolist(), b["continuation"].tolist()
        div = [_first_divergence(h, p, q) for p, q in zip(ca, cb, strict=True)]
        diverged = [v for v in div if v is not None]
        out["generation"] = {"identical": sum(v is None for v in div) / n, "n": n,
                             "median_first_divergence_token": float(np.median(diverged)) if diverged else None,
                             "max_new_tokens": r0.info.get("generation", {}).get("max_new_tokens")}
    fl = out["flips"]["fraction"] if out["flips"] else 0.0
    out["within_tolerance"] = within_tolerance(fl, out["primary"]["delta_over_half_width"], out["nonfinite_new"])
    return out


def run_case(case: Case, h: ModelHandle, dtype: str) -> None:
    t0 = time.perf_counter()
    try:
        res = run_probe(case.probe, h, case.data, seed=0, progress=False, **case.options)
        case.runs[dtype] = {"result": res, "seconds": time.perf_counter() - t0}
    except Exception as exc:  # a dtype a probe cannot run in is a finding, not a crash
        tb = traceback.extract_tb(exc.__traceback__)
        where = next((f"{Path(f.filename).name}:{f.lineno}" for f in reversed(tb)
                      if "/probes/" in f.filename or "/audit/" in f.filename), "?")
        case.runs[dtype] = {"error": f"{type(exc).__name__}: {exc} (at {where})", "seconds": time.perf_counter() - t0}
        logger.error("%s in %s failed: %s", case.name, dtype, case.runs[dtype]["error"])
    logger.info("%s %s: %.1f s", case.name, dtype, case.runs[dtype]["seconds"])


def _fmt_row(case: Case, dtype: str, c: dict[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {"probe": case.probe, "model": case.model, "dtype": dtype}
    if "error" in c:
        return {**row, "verdict": "ERROR: " + c["error"][:80]}
    p, f = c["primary"], c["flips"]
    row.update({
        "n": c["n_items"], "item max Δ": c["item_max_abs_delta"], "item med Δ": c["item_median_abs_delta"],
        "fp32 item med": c["item_fp32_median_abs"], "metric": p["metric"],
        "fp32 [95 % CI]": f"{p['fp32']:.3g}" + (f" [{p['fp32_ci'][0]:.3g}, {p['fp32_ci'][1]:.3g}]"
                                                if p["fp32_ci"][0] is not None else ""),
        "value": p["value"], "Δ / half-CI": p["delta_over_half_width"],
        "in CI": {True: "yes", False: "NO", None: "–"}[p["inside_fp32_ci"]],
        "flips": f"{f['n']}/{f['of']} (≤{100 * f['upper95']:.0f} %)" if f else "–",
        "s (fp32→dtype)": f"{c['fp32_seconds']:.1f}→{c['seconds']:.1f}",
        "verdict": "within" if c["within_tolerance"] else "OUT",
    })
    if "generation" in c:
        g = c["generation"]
        row["flips"] += f"; {100 * g['identical']:.0f} % identical"
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu", help="cpu or cuda (the GPU re-check: results/dtype_cuda.json)")
    ap.add_argument("--items", type=int, default=32, help="items per probe where the probe takes max_items")
    ap.add_argument("--bbq-per-file", type=int, default=3, help="BBQ items per file (six English files)")
    ap.add_argument("--bold-per-group", type=int, default=2, help="BOLD prompts per group (3 domains)")
    ap.add_argument("--cf-masked", type=int, default=16, help="counterfactual texts on the masked LM")
    ap.add_argument("--only", default=None, help="comma-separated probe names")
    ap.add_argument("--models", default=None, help="comma-separated model names")
    ap.add_argument("--dtypes", default=",".join(DTYPES[1:]), help="reduced dtypes to compare with float32")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("transformers").setLevel(logging.ERROR)
    torch.set_num_threads(args.threads)
    dtypes = ["float32", *args.dtypes.split(",")]
    todo = cases(args.items, args.bbq_per_file, args.bold_per_group, args.cf_masked)
    if args.only:
        todo = [c for c in todo if c.probe in args.only.split(",")]
    if args.models:
        todo = [c for c in todo if c.model in args.models.split(",")]
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_dtype_") as tmp:
        built = build_minilm_heads(Path(tmp)) if any(c.model in BUILT for c in todo) else {}
        compared: dict[str, dict[str, Any]] = {}
        load_s: dict[str, dict[str, float]] = {}
        for model in dict.fromkeys(c.model for c in todo):
            mine = [c for c in todo if c.model == model]
            ref: ModelHandle | None = None
            for dtype in dtypes:
                t0 = time.perf_counter()
                h = load(model, dtype, built, args.device)
                load_s.setdefault(model, {})[dtype] = time.perf_counter() - t0
                assert h.dtype == getattr(torch, dtype), (h.dtype, dtype)
                for case in mine:
                    run_case(case, h, dtype)
                ref = ref or h  # the fp32 handle: its tokenizer finds where BOLD continuations diverge
            for case in mine:
                if "error" in case.runs["float32"]:
                    compared[case.name] = {"error_fp32": case.runs["float32"]["error"]}
                    continue
                compared[case.name] = {dt: compare(case, dt, ref) for dt in dtypes[1:]}
    total = time.perf_counter() - t_start
    rows = []
    for case in todo:
        for dt in dtypes[1:]:
            c = compared[case.name]
            rows.append(_fmt_row(case, dt, {"error": "fp32: " + c["error_fp32"]} if "error_fp32" in c else c[dt]))
    cols = ["probe", "model", "dtype", "n", "item max Δ", "item med Δ", "fp32 item med", "metric",
            "fp32 [95 % CI]",
            "value", "Δ / half-CI", "in CI", "flips", "s (fp32→dtype)", "verdict"]
    print(table(rows, cols))
    print(f"total {total:.0f} s")
    payload = {
        "threads": args.threads, "device": args.device, "argv": sys.argv[1:], "total_s": total, "load_s": load_s,
        "tolerance": TOLERANCE,
        "kinds": KINDS, "results": {
            case.name: {"probe": case.probe, "model": case.model, "kind": KINDS[case.model], "options": case.options,
                        "data": str(case.data) if case.data else "built-in", "decision": case.decision_name,
                        **compared[case.name]} for case in todo},
        "note": "CPU kernels (oneDNN bf16 GEMM with avx512_bf16; reference fp16 GEMM); GPU kernels accumulate "
                "differently — rerun on the GPU",
    }
    name = ("dtype" + ("_cuda" if args.device.startswith("cuda") else "")
            + ("_partial" if args.only or args.models else ""))
    print("wrote", save(name, payload))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
