"""audit.precision: the rule, the measured table and the dtype warning."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from audit import precision
from audit.precision import (
    MEASUREMENTS,
    Measurement,
    dtype_name,
    dtype_warning,
    within_tolerance,
)
from audit.probe import list_probes

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "dtype.json"


def test_rule_boundaries() -> None:
    assert within_tolerance(0.0, 0.0)
    assert within_tolerance(0.01, 0.249)  # exactly 1 % of items may flip
    assert not within_tolerance(0.0101, 0.0)
    assert not within_tolerance(0.0, 0.25)  # a quarter of the half-width is already too much
    assert not within_tolerance(0.0, 0.0, nonfinite=1)


def test_measurement_flip_fraction_and_verdict() -> None:
    m = Measurement("causal-lm", "m", 40, flips=1, n_decisions=40, delta_over_half_width=0.1)
    assert m.flip_fraction == pytest.approx(0.025) and not m.within
    m = Measurement("encoder", "m", 80, flips=None, n_decisions=None, delta_over_half_width=0.1)
    assert m.flip_fraction == 0.0 and m.within
    assert "no per-item decision" in m.describe()


def test_dtype_names() -> None:
    for d in (torch.bfloat16, "bf16", "bfloat16", "torch.bfloat16", "BF16"):
        assert dtype_name(d) == "bfloat16"
    assert dtype_name(torch.float16) == dtype_name("half") == "float16"
    assert dtype_name("auto") == "float32"
    with pytest.raises(ValueError, match="int8"):
        dtype_name("int8")


def test_table_names_real_probes_and_dtypes() -> None:
    assert MEASUREMENTS, "the measured table is empty"
    assert set(MEASUREMENTS) <= set(list_probes())
    for per_dtype in MEASUREMENTS.values():
        assert set(per_dtype) <= {"bfloat16", "float16"}
        for rows in per_dtype.values():
            assert rows and all(r.kind in ("masked-lm", "causal-lm", "encoder", "classifier") for r in rows)


@pytest.mark.parametrize("probe", sorted(set(list_probes()) | {"not_a_probe"}))
def test_fp32_never_warns(probe: str) -> None:
    for d in (torch.float32, "float32", "fp32", "auto", torch.float64):
        assert dtype_warning(probe, d) is None
        assert dtype_warning(probe, d, kind="causal-lm") is None


def test_unmeasured_probe_or_kind_warns() -> None:
    w = dtype_warning("not_a_probe", torch.bfloat16)
    assert w is not None and "never measured" in w and "bfloat16" in w
    probe = next(iter(MEASUREMENTS))
    measured_kinds = {r.kind for rows in MEASUREMENTS[probe].values() for r in rows}
    other = next(k for k in ("masked-lm", "causal-lm", "encoder", "classifier") if k not in measured_kinds)
    w = dtype_warning(probe, "bf16", kind=other)
    assert w is not None and other in w


def test_warning_follows_the_measurements() -> None:
    for probe, per_dtype in MEASUREMENTS.items():
        for dtype, rows in per_dtype.items():
            w = dtype_warning(probe, dtype)
            if all(r.within for r in rows):
                assert w is None, (probe, dtype)
            else:
                assert w is not None and probe in w and dtype in w, (probe, dtype)
                # the warning quotes the failing model's numbers
                bad = next(r for r in rows if not r.within)
                assert bad.model in w
            for r in rows:  # per kind, only that kind's measurement counts
                assert (dtype_warning(probe, dtype, kind=r.kind) is None) == all(
                    x.within for x in rows if x.kind == r.kind)


def test_some_probe_is_flagged_and_some_is_safe() -> None:
    """The measurement discriminates: a rule every row passes (or fails) would say nothing."""
    verdicts = {r.within for per in MEASUREMENTS.values() for rows in per.values() for r in rows}
    assert verdicts == {True, False}


def test_table_matches_the_benchmark_results() -> None:
    if not RESULTS.is_file():
        pytest.skip(f"{RESULTS} not present")
    data = json.loads(RESULTS.read_text())
    assert data["tolerance"] == precision.TOLERANCE
    seen = set()
    for res in data["results"].values():
        for dtype in ("bfloat16", "float16"):
            c = res.get(dtype)
            if c is None or "error" in c:
                continue
            rows = [r for r in MEASUREMENTS[res["probe"]][dtype] if r.model == res["model"]]
            assert len(rows) == 1, (res["probe"], res["model"], dtype)
            r = rows[0]
            seen.add((res["probe"], dtype, r.model))
            assert r.kind == res["kind"] and r.n_items == c["n_items"] and r.nonfinite == c["nonfinite_new"]
            if c["flips"] is None:
                assert r.flips is None
            else:
                assert (r.flips, r.n_decisions) == (c["flips"]["n"], c["flips"]["of"])
            assert r.delta_over_half_width == pytest.approx(c["primary"]["delta_over_half_width"], rel=1e-2, abs=1e-3)
            assert r.within == c["within_tolerance"]
    table_rows = {(p, d, r.model) for p, per in MEASUREMENTS.items() for d, rows in per.items() for r in rows}
    assert table_rows == seen
