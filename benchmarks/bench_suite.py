"""Every probe and every explainer on two models: items/s, model FLOP utilisation, the speed-up over
the unbatched reference with the largest score difference, and the scaling of time with items and
sequence length — one script, one table.

Models:

* ``bert-base`` — a randomly initialised ``BertForMaskedLM`` of bert-base-uncased's dimensions with
  minilm-l6's WordPiece tokenizer, built by ``bench_crows_pairs.build_random`` (timing needs no
  trained weights);
* ``smollm2-135m`` — the demo causal LM (real weights).

What the columns mean:

* **item** — what one item is for that row: a CrowS pair, a StereoSet cluster, a SEAT test, a
  template item, a counterfactual text, a BBQ question, a BOLD prompt, a labelled text, a text
  whose hidden states are probed, an example explained.
* **s, items/s** — wall time of the probe's ``run`` (statistics included) or of one
  ``explain`` call, with torch limited to ``--threads`` threads.
* **MFU** — useful FLOP/s ÷ the fp32 matmul rate measured in this script
  (:func:`audit.metering.matmul_flops`, re-measured before every row, the highest reading
  kept for all rows). Useful FLOPs = 2 × non-embedding parameters × real (non-padding) tokens through the
  model body, counted by :class:`audit.metering.TokenCounter` (a hook on the body that reads the
  attention mask); a backward counts twice its forward. The LM head, attention score FLOPs and
  work outside the model (sampling, VADER, scikit-learn, bootstraps) are not counted.
* **MFU (CPU time)** — the same FLOPs per CPU second of this process ÷ the matmul FLOPs per CPU
  second (CPU only). On a shared machine the wall-clock MFU falls whenever other jobs take the
  core; the CPU-time one does not, so it is the better measure of the code itself.
* **model %** — share of the wall time spent inside forwards of the model body (backwards not
  included).
* **naive items/s, speed-up, max |diff|** — the same probe or method on a small subset with
  batching disabled (``max_batch_tokens=1``: every forward is one row; BOLD: generation
  ``batch_size=1``), against the batched code on the same subset; the speed-up is the ratio of
  the two times on that subset, and max |diff| the largest absolute difference over every float
  column of the two items tables (probes) or of the two attribution arrays (explainers).

Scaling (unless ``--no-scaling``): CrowS-Pairs on both models, SEAT on bert-base and occlusion on
bert-base at n, 10n, 100n items (n chosen from the rate measured in the table so that 100n takes
about 60 s, at least 1; a point projected far over that is skipped) and at three sequence lengths
(each item made k = 1, 2, 4 times longer by joining k consecutive sentences), reported as seconds
per item.

    .venv/bin/python benchmarks/bench_suite.py --threads 1 [--quick] [--device cpu|cuda|auto]
        [--probes crows_pairs,seat] [--methods ig,lime] [--models bert-base,smollm2-135m]
        [--items N] [--no-scaling] [--out NAME]

Writes ``benchmarks/results/suite.json`` (``suite_<device>.json`` off the CPU).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from audit.explain import explain  # noqa: E402
from audit.metering import TokenCounter, matmul_flops  # noqa: E402
from audit.models import ModelHandle, load_model  # noqa: E402
from benchmarks.bench_crows_pairs import build_random  # noqa: E402
from benchmarks.common import (  # noqa: E402
    SHARED_DATA,
    loadavg,
    non_embedding_params,
    save,
    table,
)
from probes import get_probe, run_probe  # noqa: E402

logger = logging.getLogger("bench_suite")

MODELS = ("bert-base", "smollm2-135m")
SCALE_TARGET_S = 60.0  # the 100n point of a scaling sweep should take about this long
WARM_S = 3.0  # a subset run shorter than this is repeated: the first call is the warm-up
NAIVE = {"max_batch_tokens": 1}


@dataclass
class ProbeCase:
    """How the suite runs one probe: data, the option that sets the sample size, its values."""

    unit: str
    data: str | None  # relative to SHARED_DATA; None: the probe's built-in data
    size: Callable[[int], dict[str, Any]]  # options that select n (the probe's own sampling knob)
    n: dict[str, int]  # per model (quick mode divides by 2)
    n_naive: int
    opts: dict[str, Any] = field(default_factory=dict)
    naive: dict[str, Any] = field(default_factory=lambda: dict(NAIVE))
    count: Callable[[Any], int] = lambda r: len(r.items)
    note: str = ""


def _seat_tests(n: int) -> dict[str, Any]:
    names = ["en-gender-career-family", "tr-gender-career-family", "en-gender-science-arts", "tr-gender-science-arts"]
    return {"tests": names[:n]}


PROBES: dict[str, ProbeCase] = {
    "crows_pairs": ProbeCase("pair", "crows-pairs/crows_pairs_anonymized.csv", lambda n: {"max_items": n},
                             {"bert-base": 8, "smollm2-135m": 32}, 2,
                             note="first N pairs; masked: one copy per shared token (PLL)"),
    "stereoset": ProbeCase("cluster", "stereoset/dev.json", lambda n: {"max_items": max(1, n // 2)},
                           {"bert-base": 10, "smollm2-135m": 16}, 2,
                           note="N/2 clusters per split, evenly spaced"),
    "seat": ProbeCase("test", None, _seat_tests, {"bert-base": 2, "smollm2-135m": 2}, 1,
                      note="built-in tests, 128 texts each; 100 000 Monte Carlo permutations + 1000 bootstraps per test"),
    "templates": ProbeCase("template item", None, lambda n: {"max_items": max(1, n // 10)},
                           {"bert-base": 30, "smollm2-135m": 60}, 10,
                           note="N/10 items of each of the 10 built-in sets (en + tr)"),
    "counterfactual": ProbeCase("text", None, lambda n: {"max_items": n}, {"bert-base": 16, "smollm2-135m": 32}, 4,
                                note="built-in texts, Δ log-likelihood (no generation)"),
    "bbq": ProbeCase("question", "bbq", lambda n: {"max_items": max(1, n // 6)},
                     {"bert-base": 6, "smollm2-135m": 12}, 6,
                     note="N/6 questions of each English file, stratified; 3 answers scored each"),
    "bold": ProbeCase("prompt", "bold", lambda n: {"max_prompts_per_group": 1,
                                                    "domains": ["gender", "race", "religious_ideology"][: 1 + (n > 2) + (n > 6)]},
                      {"smollm2-135m": 6}, 2, naive={"batch_size": 1},
                      note="1 prompt per group; 20 sampled tokens each + VADER"),
    "classifier_fairness": ProbeCase("labelled text", None, lambda n: {"max_items": n}, {"smollm2-135m": 32}, 8,
                                     note="built-in EEC sentiment, zero-shot label words; 1000 bootstraps + 1000 permutations"),
    "representation": ProbeCase("text", None, lambda n: {"max_items": n}, {"bert-base": 40, "smollm2-135m": 40}, 20,
                                count=lambda r: int(r.info["n_rows"]),
                                note="every layer, 5-fold logistic regression, 3 control tasks, 100 permutations"),
}

# examples explained per model (quick mode divides by 2); the naive reference explains 1
METHOD_N: dict[str, tuple[int, int]] = {
    "ig": (2, 1), "saliency": (32, 32), "input_x_gradient": (32, 32), "gradient_shap": (2, 1), "occlusion": (8, 4),
    "lime": (1, 1), "kernel_shap": (1, 1), "attention": (12, 6), "rollout": (12, 6), "attention_flow": (2, 1),
    "grad_rollout": (32, 32), "head_importance": (32, 32),
}
SUBJECTS = ["nurse", "doctor", "engineer", "teacher", "lawyer", "cleaner", "pilot", "secretary", "farmer", "chef",
            "manager", "dancer", "driver", "banker", "writer", "singer", "builder", "clerk", "judge", "baker"]
FILLER = "It had rained all morning in the old town by the river."


def explain_texts(h: ModelHandle, n: int, k: int = 1) -> list[str]:
    """n distinct inputs; k > 1 puts k − 1 filler sentences first (longer inputs, same target)."""
    pre = " ".join([FILLER] * (k - 1))
    pre = pre + " " if pre else ""
    end = "said that [MASK] would be late." if h.kind == "masked-lm" else "said that she would be late because"
    return [f"{pre}The {SUBJECTS[i % len(SUBJECTS)]}{'' if i < len(SUBJECTS) else f' {i}'} {end}" for i in range(n)]


# --------------------------------------------------------------------------------------------
# measuring
# --------------------------------------------------------------------------------------------


class Peaks:
    """The fp32 matmul rate, re-measured before every row; the highest readings are the ceiling
    every MFU of the run is divided by (on a shared CPU a reading under load is too low)."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.wall = matmul_flops(device=device)
        self.cpu = matmul_flops(device=device, clock=time.process_time) if device == "cpu" else float("nan")

    def update(self) -> float:
        here = matmul_flops(device=self.device, seconds=0.5)
        self.wall = max(self.wall, here)
        if self.device == "cpu":
            self.cpu = max(self.cpu, matmul_flops(device=self.device, seconds=0.5, clock=time.process_time))
        return here


def timed(h: ModelHandle, fn: Callable[[], Any]) -> tuple[Any, float, TokenCounter]:
    """``fn()``, its wall time, and the token counter (with its CPU time) that watched it."""
    with TokenCounter(h.model.base_model) as counter:
        out = fn()
    return out, counter.wall_s, counter


def max_diff_frames(a: pd.DataFrame, b: pd.DataFrame) -> tuple[float, str]:
    """Largest |a − b| over the float columns both tables share (rows in the same order)."""
    if len(a) != len(b):
        return float("nan"), f"row counts differ ({len(a)} vs {len(b)})"
    best, where = 0.0, ""
    for c in a.columns:
        if c not in b.columns or not (pd.api.types.is_float_dtype(a[c]) and pd.api.types.is_float_dtype(b[c])):
            continue
        x, y = a[c].to_numpy(float), b[c].to_numpy(float)
        both = ~(np.isnan(x) | np.isnan(y))
        if (np.isnan(x) != np.isnan(y)).any():
            return float("inf"), f"{c}: NaN in one table only"
        if both.any():
            d = float(np.abs(x[both] - y[both]).max())
            if d >= best:
                best, where = d, c
    return best, where


def max_diff_attr(a: Any, b: Any) -> float:
    d = 0.0
    for x, y in zip(a.examples, b.examples, strict=True):
        xs, ys = np.asarray(x.scores, float), np.asarray(y.scores, float)
        ok = ~(np.isnan(xs) | np.isnan(ys))
        if ok.any():
            d = max(d, float(np.abs(xs[ok] - ys[ok]).max()))
    return d


def row(name: str, model: str, unit: str, n: int, dt: float, c: TokenCounter, params: int, peaks: Peaks,
        **extra: Any) -> dict[str, Any]:
    """One result row; the MFU columns are filled in by :func:`finish` with the run's final ceiling."""
    return {"probe/method": name, "model": model, "item": unit, "items": n, "seconds": dt, "cpu_s": c.cpu_s,
            "items/s": n / dt if dt > 0 else float("nan"), "useful_flops": c.flops(params),
            "model %": 100.0 * c.model_s / dt if dt > 0 else float("nan"), "useful GFLOP/s": c.flops(params) / dt / 1e9,
            "forward_tokens": c.forward_tokens, "backward_tokens": c.backward_tokens, "forwards": c.forwards,
            "matmul_gflops_here": peaks.update() / 1e9, **extra}


def finish(rows: list[dict[str, Any]], peaks: Peaks) -> None:
    """MFU = useful FLOP/s ÷ the highest matmul rate of the run, by wall time and by CPU time."""
    for r in rows:
        if "useful_flops" not in r:
            continue
        r["MFU"] = r["useful_flops"] / r["seconds"] / peaks.wall if r["seconds"] > 0 else float("nan")
        r["MFU (CPU time)"] = (r["useful_flops"] / r["cpu_s"] / peaks.cpu
                               if r["cpu_s"] > 0 and math.isfinite(peaks.cpu) else float("nan"))


def bench_probe(name: str, case: ProbeCase, h: ModelHandle, model: str, n: int, peaks: Peaks, params: int
                ) -> dict[str, Any]:
    probe = get_probe(name)
    base = {"probe/method": name, "model": model, "item": case.unit}
    if h.kind not in probe.kinds:
        return {**base, "note": f"cannot run on a {h.kind} model (probe kinds: {', '.join(probe.kinds)})"}
    data = None
    if case.data is not None:
        data = SHARED_DATA / case.data
        if not data.exists():
            return {**base, "note": f"skipped: {data} not found"}

    def go(k: int, extra: dict[str, Any]) -> Any:
        return run_probe(name, h, data=data, seed=0, progress=False, **case.opts, **case.size(k), **extra)

    try:
        rb, tb, cb = timed(h, lambda: go(case.n_naive, {}))
        if tb < WARM_S:  # the first call was the warm-up (allocations, caches): time it again
            rb, tb, cb = timed(h, lambda: go(case.n_naive, {}))
        r, dt, c = (rb, tb, cb) if n == case.n_naive else timed(h, lambda: go(n, {}))
        out = row(name, model, case.unit, case.count(r), dt, c, params, peaks, note=case.note,
                  options={**case.opts, **case.size(n)})
        rn, tn, cn = timed(h, lambda: go(case.n_naive, case.naive))
    except Exception as exc:  # a probe that fails is a result of the benchmark, not its end
        logger.exception("%s on %s failed", name, model)
        return {**base, "note": f"FAILED: {type(exc).__name__}: {exc}"}
    k = case.count(rb)
    diff, col = max_diff_frames(rb.items.reset_index(drop=True), rn.items.reset_index(drop=True))
    out.update({"naive items": k, "naive items/s": k / tn, "batched subset s": tb, "naive s": tn,
                "speed-up": tn / tb, "max |diff|": diff, "diff column": col,
                "naive options": case.naive, "naive forwards": cn.forwards})
    return out


def bench_method(method: str, h: ModelHandle, model: str, n: int, peaks: Peaks, params: int) -> dict[str, Any]:
    base = {"probe/method": method, "model": model, "item": "example explained"}
    texts = explain_texts(h, n)
    one = texts[:1]
    try:
        ab, tb, cb = timed(h, lambda: explain(h, one, method))
        if tb < WARM_S:  # the first call was the warm-up: time it again
            ab, tb, cb = timed(h, lambda: explain(h, one, method))
        a, dt, c = (ab, tb, cb) if n == 1 else timed(h, lambda: explain(h, texts, method))
        out = row(method, model, "example explained", n, dt, c, params, peaks, options=a.options)
        an, tn, cn = timed(h, lambda: explain(h, one, method, **NAIVE))
    except Exception as exc:
        logger.exception("%s on %s failed", method, model)
        return {**base, "note": f"FAILED: {type(exc).__name__}: {exc}"}
    out.update({"naive items": 1, "naive items/s": 1 / tn, "batched subset s": tb, "naive s": tn,
                "speed-up": tn / tb, "max |diff|": max_diff_attr(ab, an), "naive options": NAIVE,
                "naive forwards": cn.forwards})
    return out


# --------------------------------------------------------------------------------------------
# scaling
# --------------------------------------------------------------------------------------------


def _crows_file(folder: Path, n: int, k: int) -> Path:
    """n CrowS-Pairs rows, each made of k consecutive real pairs joined into one longer pair."""
    from probes.crows_pairs import load_crows_pairs

    src = load_crows_pairs(SHARED_DATA / "crows-pairs" / "crows_pairs_anonymized.csv")
    rows = []
    for i in range(n):
        part = src.iloc[[(i * k + j) % len(src) for j in range(k)]]
        rows.append({"sent_more": " ".join(part["sent_more"]), "sent_less": " ".join(part["sent_less"]),
                     "stereo_antistereo": part["stereo_antistereo"].iloc[0], "bias_type": part["bias_type"].iloc[0]})
    p = folder / f"crows_{n}_{k}.csv"
    pd.DataFrame(rows).to_csv(p)
    return p


def _seat_folder(folder: Path, n: int, k: int) -> Path:
    """n SEAT tests of 8 texts per role (C(16, 8) = 12 870: exact permutation test), drawn from the
    built-in en-gender-career-family test; copy i appends its number so every text is distinct and
    embedded (a run embeds each distinct text once); each text is the sentence repeated k times."""
    from probes import DATA_DIR

    test = json.loads((DATA_DIR / "seat" / "en-gender-career-family.jsonl").read_text())
    out = folder / f"seat_{n}_{k}"
    out.mkdir()
    for i in range(n):
        t = {role: {"category": v["category"],
                    "examples": [" ".join([e] * k) + f" {i}" for e in v["examples"][:8]]} for role, v in test.items()}
        (out / f"test{i:04d}.jsonl").write_text(json.dumps(t))
    return out


def scaling(h: ModelHandle, model: str, rates: dict[tuple[str, str], float], peaks: Peaks, params: int,
            target_s: float, quick: bool) -> list[dict[str, Any]]:
    """Seconds per item at n, 10n, 100n items (k = 1; quick: n, 10n) and at k = 1, 2, 4 (sequence
    length ×k); n is chosen so that the 100n point takes about ``target_s`` at the table's rate."""
    sweeps: list[tuple[str, str, Callable[[Path, int, int], Callable[[], Any]]]] = [
        ("crows_pairs", "pair", lambda tmp, n, k: lambda: run_probe(
            "crows_pairs", h, data=_crows_file(tmp, n, k), progress=False)),
    ]
    if model == "bert-base":
        sweeps += [
            ("seat", "test (32 texts)", lambda tmp, n, k: lambda: run_probe(
                "seat", h, data=_seat_folder(tmp, n, k), progress=False)),
            ("occlusion", "example explained", lambda tmp, n, k: lambda: explain(
                h, explain_texts(h, n, k), "occlusion")),
        ]
    out = []
    factors = (1, 10) if quick else (1, 10, 100)
    for name, unit, make in sweeps:
        rate = rates.get((name, model))
        n0 = max(1, int(target_s * rate / 100)) if rate else 1
        n_len = max(1, int(target_s / 3 * rate / 16)) if rate else 1  # k = 4 may cost 16× (masked PLL)
        points = [(n0 * f, 1) for f in factors] + [(n_len, k) for k in (1, 2, 4)]
        for n, k in dict.fromkeys(points):
            if rate and n / rate * k * k > 2.5 * target_s * (1 if k == 1 else 1 / 3):
                out.append({"probe/method": name, "model": model, "item": unit, "items": n, "length ×": k,
                            "note": f"skipped: projected {n / rate * (k * k):.0f} s, over the budget"})
                continue
            with tempfile.TemporaryDirectory() as tmp:
                fn = make(Path(tmp), n, k)  # data files written before the clock starts
                _, dt, c = timed(h, fn)
            r = row(name, model, unit, n, dt, c, params, peaks)
            r.update({"length ×": k, "s/item": dt / n, "tokens/item": c.forward_tokens / n})
            out.append(r)
            logger.info("scaling %s %s n=%d k=%d: %.2f s/item", name, model, n, k, dt / n)
    return out


# --------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------


def load(name: str, device: str, tmp: Path) -> ModelHandle:
    if name == "bert-base":
        return load_model(build_random("bert-base", tmp / "bert-base"), device=device)
    return load_model(name, device=device)


COLS = ["probe/method", "model", "item", "items", "seconds", "items/s", "naive items/s", "speed-up", "max |diff|",
        "MFU", "MFU (CPU time)", "model %", "note"]
SCALE_COLS = ["probe/method", "model", "item", "length ×", "items", "seconds", "s/item", "tokens/item", "MFU",
              "MFU (CPU time)",
              "note"]


def _pct(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows for printing: the MFU columns as percentages."""
    def f(v: Any) -> str:
        return f"{100 * v:.1f} %" if isinstance(v, float) and math.isfinite(v) else ""

    return [{**r, "MFU": f(r.get("MFU")), "MFU (CPU time)": f(r.get("MFU (CPU time)"))} for r in rows]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--probes", default=None, help="comma-separated probe names (default: all; none: no probe)")
    ap.add_argument("--methods", default=None, help="comma-separated explain methods (default: all)")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--items", type=int, default=None, help="items per probe / examples per method (overrides)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (1 on a shared machine)")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    ap.add_argument("--quick", action="store_true", help="half the items; scaling at n and 10n only")
    ap.add_argument("--no-scaling", action="store_true")
    ap.add_argument("--out", default=None, help="results/<name>.json (default suite, suite_<device> off the CPU)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for noisy in ("transformers", "audit", "probes"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    probes = [] if args.probes == "none" else args.probes.split(",") if args.probes else list(PROBES)
    methods = args.methods.split(",") if args.methods else list(METHOD_N)
    unknown = sorted(set(probes) - set(PROBES)) + sorted(set(methods) - set(METHOD_N))
    if unknown:
        raise SystemExit(f"unknown probe(s)/method(s): {unknown}; probes {sorted(PROBES)}, methods {sorted(METHOD_N)}")
    load_start, t_start = loadavg(), time.perf_counter()
    peaks = Peaks(device)
    logger.info("fp32 matmul rate %.1f GFLOP/s on %d threads, load %s", peaks.wall / 1e9, torch.get_num_threads(),
                load_start)
    rows: list[dict[str, Any]] = []
    scale_rows: list[dict[str, Any]] = []
    models: dict[str, Any] = {}
    out_name = args.out or ("suite" if device == "cpu" else f"suite_{device}")

    def payload() -> dict[str, Any]:
        finish(rows, peaks)
        finish(scale_rows, peaks)
        return {"device": device, "matmul_gflops": peaks.wall / 1e9, "matmul_gflops_per_cpu_s": peaks.cpu / 1e9,
                "threads": torch.get_num_threads(),
                "loadavg_start": load_start, "loadavg_end": loadavg(), "total_s": time.perf_counter() - t_start,
                "models": models, "rows": rows, "scaling": scale_rows, "args": vars(args)}

    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            t0 = time.perf_counter()
            h = load(name, device, Path(tmp))
            load_s = time.perf_counter() - t0
            params = non_embedding_params(h.model)
            models[name] = {"kind": h.kind, "architecture": type(h.model).__name__, "non_embedding_params": params,
                            "load_s": load_s, "loadavg_before": loadavg()}
            for p in probes:
                case = PROBES[p]
                n = args.items or case.n.get(name, case.n_naive * 4)
                n = max(case.n_naive, n // 2) if args.quick and not args.items else n
                rows.append(bench_probe(p, case, h, name, n, peaks, params))
                logger.info("%s", {k: rows[-1].get(k) for k in COLS if k in rows[-1]})
            for m in methods:
                n = args.items or METHOD_N[m][0 if name == "bert-base" else 1]
                n = max(1, n // 2) if args.quick and not args.items else n
                rows.append(bench_method(m, h, name, n, peaks, params))
                logger.info("%s", {k: rows[-1].get(k) for k in COLS if k in rows[-1]})
            if not args.no_scaling:
                rates = {(r["probe/method"], r["model"]): r["items/s"] for r in rows if "items/s" in r}
                scale_rows += scaling(h, name, rates, peaks, params, SCALE_TARGET_S / 3 if args.quick else SCALE_TARGET_S,
                                      args.quick)
            models[name]["loadavg_after"] = loadavg()
            del h
            save(out_name, payload())  # after each model: a run stopped by a time limit keeps its rows
    data = payload()
    print(f"\nfp32 matmul rate (highest reading): {peaks.wall / 1e9:.1f} GFLOP/s, {peaks.cpu / 1e9:.1f} per CPU "
          f"second ({device}, torch threads {torch.get_num_threads()}); load average {load_start} at start, "
          f"{loadavg()} at end\n")
    print(table(_pct(rows), COLS))
    if scale_rows:
        print()
        print(table(_pct(scale_rows), SCALE_COLS))
    path = save(out_name, data)
    print(f"\nsaved {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
