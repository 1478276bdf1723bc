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


def compute_section(doc: Mapping[str, Any]) -> dict[str, Any]:
    """``{"rows", "probe", "hardware_type", "hours", "audit_cost", "carbon", "note"}`` for the
    report and model card; ``rows`` is empty when no ``cost`` probe finished."""
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
    audit_cost = [{"name": k, "duration_s": v} for k, v in (repro.get("durations") or {}).items()]
    return {
        "probe": cost.get("name") if cost else None,
        "rows": rows,
        "hardware_type": hardware,
        "hours": duration / 3600 if isinstance(duration, (int, float)) else None,
        "audit_cost": audit_cost,
        "carbon": CARBON,
        "note": "" if cost else "no cost probe ran in this audit; add `- cost` to the probes to measure the model",
    }
