"""The report's "Compute cost" section and the model card's Hugging Face "Environmental Impact"
fields, from the ``cost`` probe's metrics and the run's own timings and hardware.

The model card template's Environmental Impact fields (Lacoste et al. 2019, "Quantifying the
Carbon Emissions of Machine Learning", whose calculator the Hugging Face card template cites)
are filled for what this run measured: the hardware and the hours of *this audit*; carbon is
not estimated (no power sensor was read), and the card says so instead of guessing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: the cost metrics the section shows, in order, with their label
ROWS = (
    ("parameters", "Parameters (total)"),
    ("embedding_parameters", "Embedding parameters"),
    ("non_embedding_parameters", "Non-embedding parameters (N)"),
    ("forward_flops_per_token", "Forward FLOPs per token, measured (short length)"),
    ("analytic_flops_per_token", "Forward FLOPs per token, 2N + attention (short length)"),
    ("forward_flops_per_token_long", "Forward FLOPs per token, measured (long length)"),
    ("analytic_flops_per_token_long", "Forward FLOPs per token, 2N + attention (long length)"),
    ("weight_bytes", "Weight bytes as loaded"),
    ("peak_memory_mb", "Peak memory of the audit process"),
    ("prefill_tokens_per_s", "Prefill tokens/s, batch 1"),
    ("prefill_tokens_per_s_batch", "Prefill tokens/s, budget batch"),
    ("decode_tokens_per_s", "Decode tokens/s, batch 1"),
    ("decode_tokens_per_s_batch", "Decode tokens/s, budget batch"),
    ("first_token_latency_ms", "First-token latency, batch 1"),
    ("matmul_gflops", "Device matmul rate"),
    ("prefill_mfu", "Prefill model FLOPs utilisation"),
)
CARBON = ("not estimated: no power sensor was read during this run; a figure would need the device's power "
          "draw (e.g. codecarbon) and the grid's carbon intensity")


def audit_cost_rows(repro: Mapping[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any] | None,
                                                      dict[str, Any] | None]:
    """The audit's own cost: one row per step (probe or explain step) with its wall time and, for
    probes, the runner's record (:mod:`audit.metering`, summed over the ranks): forward passes,
    tokens forwarded, estimated FLOPs and MFU; the run's matmul rate; and the total over the
    probes (FLOPs and wall seconds add up, MFU = total FLOPs / Σ rank-seconds × matmul rate)."""
    ac = repro.get("audit_compute") or {}
    figures: Mapping[str, Any] = ac.get("probes") or {}
    durations: Mapping[str, Any] = repro.get("durations") or {}
    rows = []
    for name in [*durations, *(n for n in figures if n not in durations)]:
        f = figures.get(name) or {}
        rows.append({"name": name, "duration_s": f.get("wall_s", durations.get(name)),
                     **{k: f.get(k) for k in ("status", "ranks", "forwards", "tokens_forwarded", "flops", "mfu",
                                              "covers")}})
    run = ac.get("run")
    matmul = {"gflops": run["matmul_flops_per_s"] / 1e9, "shape": run.get("shape"), "dtype": run.get("dtype"),
              "seconds": run.get("seconds"), "flops_method": run.get("flops_method")} if run else None
    total = None
    if figures:
        fl = [f.get("flops") for f in figures.values()]
        flops = None if any(x is None for x in fl) else float(sum(fl))
        rank_s = sum(float(f.get("rank_seconds") or 0) for f in figures.values())
        total = {"wall_s": sum(float(f.get("wall_s") or 0) for f in figures.values()), "flops": flops,
                 "tokens_forwarded": sum(int(f.get("tokens_forwarded") or 0) for f in figures.values()),
                 "forwards": sum(int(f.get("forwards") or 0) for f in figures.values()),
                 "mfu": flops / (rank_s * run["matmul_flops_per_s"]) if flops is not None and rank_s and run else None}
    return rows, matmul, total


def compute_section(doc: Mapping[str, Any]) -> dict[str, Any]:
    """``{"rows", "probe", "hardware_type", "hours", "audit_cost", "audit_matmul", "audit_total",
    "carbon", "note"}`` for the report and model card; ``rows`` is empty when no ``cost`` probe
    finished (see :func:`audit_cost_rows` for the audit's own cost)."""
    cost = next((p for p in doc.get("probes") or [] if p.get("probe") == "cost"), None)
    by_name = {m["name"]: m for m in (cost or {}).get("metrics") or []}
    rows = [{**by_name[k], "label": label} for k, label in ROWS if k in by_name]
    repro = doc.get("reproducibility") or {}
    hw = repro.get("hardware") or {}
    gpus = hw.get("gpus") or []
    hardware = ", ".join(map(str, gpus)) if gpus else (
        f"{hw.get('cpu_model') or hw.get('processor') or 'CPU'} ({hw.get('cpu_count', '?')} logical cores, "
        f"{hw.get('torch_threads', '?')} torch threads)")
    duration = repro.get("duration_s")
    audit_cost, matmul, total = audit_cost_rows(repro)
    return {
        "probe": cost.get("name") if cost else None,
        "rows": rows,
        "hardware_type": hardware,
        "hours": duration / 3600 if isinstance(duration, (int, float)) else None,
        "audit_cost": audit_cost,
        "audit_matmul": matmul,
        "audit_total": total,
        "carbon": CARBON,
        "note": "" if cost else "no cost probe ran in this audit; add `- cost` to the probes to measure the model",
    }
