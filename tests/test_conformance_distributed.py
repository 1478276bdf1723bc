"""Two-process equality generated from the probe registry (issue 14, item 7): every registered
probe gives the same result under ``torchrun --nproc-per-node=2`` (gloo on CPU) as in one process.

One config holds every registered probe, each on the tiny model and the data file of its
conformance case (:data:`tests.test_conformance.CASES`; ``cost`` reads no data) with a small
``chunk_size``, so every sharded probe spreads several chunks over both ranks (rank 1's compute
record shows forwards of its own). The config runs twice through ``taudit run``: once in one
process, once in two. Then, per probe, the two run directories hold the same metrics (NaN equal to NaN), breakdown, warnings, info and items —
floats within 1e-6 — leaving out only what depends on the machine or the launch: timings, the
world size, paths. ``cost`` measures speed and memory, so only its counts (parameters, FLOPs,
weight bytes) and the list of its timed measurements are compared.

A probe registered later fails :func:`tests.test_conformance.test_every_probe_has_a_conformance_case`
until it has a case, and :func:`test_config_holds_every_registered_probe` here until that case
runs in the two-process config.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pandas as pd
import pytest
import yaml

import probes  # noqa: F401  (registers the built-in probes)
from audit.metering import compute_file
from audit.probe import PROBES
from audit.rundir_view import RunView
from audit.store import RunDir
from tests.test_conformance import CASES, NO_DATA
from tests.test_distributed import taudit

#: items per chunk: every sharded probe's data makes several chunks, so both ranks score some
CHUNK = 3
#: ``cost`` on the tiny causal LM, small and quick (its timings are not compared)
COST = ("llama", {"lengths": [8, 16], "prefill_length": 8, "new_tokens": 2, "repeats": 1, "matmul_seconds": 0.05})
#: the cost metrics that count (the model's size and FLOPs); the others are timings and memory
COST_COUNTS = ("parameters", "embedding_parameters", "non_embedding_parameters", "forward_flops_per_token",
               "forward_flops_per_token_long", "analytic_flops_per_token", "analytic_flops_per_token_long",
               "flops_measured_over_analytic", "weight_bytes")
#: summary keys that depend on the launch, not on the probe's result
LAUNCH = ("finished_at", "duration_s", "world_size", "data", "resumed", "compute")


def _fixtures() -> dict[str, str]:
    """Probe name -> the tiny-model fixture it runs on."""
    return {**{n: c.fixture for n, c in CASES.items()}, "cost": COST[0]}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> dict[str, tuple[RunDir, RunDir]]:
    """Probe name -> (the one-process run directory, the two-process one) of the one config."""
    tmp = tmp_path_factory.mktemp("two-process")
    fixtures = _fixtures()
    paths = {f: str(request.getfixturevalue(f"{f}_path")) for f in sorted(set(fixtures.values()))}
    specs: list[dict[str, Any]] = []
    for name, case in sorted(CASES.items()):
        data, extra = case.data(tmp / "data" / name)
        specs.append({"probe": name, "models": [paths[case.fixture]], "chunk_size": CHUNK,
                      "options": {**case.options, **extra}, **({"data": str(data)} if data else {})})
    specs.append({"probe": "cost", "models": [paths[COST[0]]], "options": COST[1]})
    cfg = {"seed": 3, "models": [{"name": p, "label": f, "device": "cpu"} for f, p in paths.items()],
           "probes": specs, "report": {"enabled": False}}
    path = tmp / "audit.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    for run_id, nproc in (("one", 1), ("two", 2)):
        done = taudit(path, tmp / "runs", run_id, nproc=nproc)
        assert done.returncode == 0, done.stderr[-3000:]
    return {n: (RunDir(tmp / "runs" / f"one-{f}"), RunDir(tmp / "runs" / f"two-{f}")) for n, f in fixtures.items()}


def test_config_holds_every_registered_probe() -> None:
    assert set(_fixtures()) == set(CASES) | NO_DATA == set(PROBES.names())


def _close(a: Any, b: Any, where: str) -> None:
    """``a`` equals ``b``: floats within 1e-6 (NaN equals NaN), containers element by element."""
    if isinstance(a, dict) and isinstance(b, dict):
        assert a.keys() == b.keys(), f"{where}: keys {sorted(a)} != {sorted(b)}"
        for k in a:
            _close(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list) and isinstance(b, list):
        assert len(a) == len(b), f"{where}: {len(a)} entries != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _close(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and isinstance(b, (int, float)):
        assert (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-6), \
            f"{where}: {a!r} (1 process) != {b!r} (2 processes)"
    else:
        assert a == b, f"{where}: {a!r} (1 process) != {b!r} (2 processes)"


def _comparable(summary: dict[str, Any], name: str) -> dict[str, Any]:
    """A summary without what depends on the launch; ``cost`` keeps only its counts."""
    out = {k: v for k, v in summary.items() if k not in LAUNCH}
    if name == "cost":
        out = {"metrics": {k: v for k, v in summary["metrics"].items() if k in COST_COUNTS}}
    return json.loads(json.dumps(out))


@pytest.mark.parametrize("name", sorted(_fixtures()))
def test_two_process_run_equals_one_process_run(name: str, runs: dict[str, tuple[RunDir, RunDir]]) -> None:
    one, two = runs[name]
    assert two.manifest()["distributed"]["world_size"] == 2
    a, b = RunView(one).probe(name), RunView(two).probe(name)
    assert (a.status, b.status) == ("complete", "complete"), (a.message, b.message)
    _close(_comparable(a.summary, name), _comparable(b.summary, name), name)
    (items_a, problem_a), (items_b, problem_b) = a.items(), b.items()
    assert items_a is not None and items_b is not None, (problem_a, problem_b)
    if name == "cost":  # its items are timings: the same measurements, not the same seconds
        items_a, items_b = (i.drop(columns=["seconds", "value"]) for i in (items_a, items_b))
    pd.testing.assert_frame_equal(items_a, items_b, rtol=1e-6, atol=1e-6)
    assert not (two.probe_dir(name) / "partial").exists()
    if PROBES.get(name).sharded:  # rank 1 scored chunks of its own: the equality is not one rank's work
        rank1 = json.loads(compute_file(two.probe_dir(name), 1).read_text(encoding="utf-8"))
        assert rank1["chunks_total"] >= 2 and rank1["forwards"] > 0, rank1
