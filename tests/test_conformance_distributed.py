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

The same config holds one ``explain:`` step per registered explainer (:data:`EXPLAIN_CASES`: a
tiny model of the probes' set, a target of a mode the method explains, small options). Explain
steps run on rank 0 after the probes, so the two run directories must hold the same
``explain/<method>/`` folder: summary (timings left out), attributions and metrics, floats within 1e-6.

A probe registered later fails :func:`tests.test_conformance.test_every_probe_has_a_conformance_case`
until it has a case, and :func:`test_config_holds_every_registered_probe` here until that case
runs in the two-process config; an explainer registered later fails
:func:`test_config_holds_every_registered_explainer` until it has an entry in :data:`EXPLAIN_CASES`.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pandas as pd
import pytest
import yaml

import probes  # noqa: F401  (registers the built-in probes)
from audit.explain import list_explainers
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
LAUNCH = ("finished_at", "duration_s", "world_size", "data", "resumed", "compute", "timings_s")

MLM_TEXTS = ["the nurse said [MASK] was tired", "a doctor thinks [MASK] is kind"]
TEXTS = ["the nurse is kind", "the man said that"]
#: explainer -> (fixture, texts, target, options): every model kind and target mode among them
EXPLAIN_CASES: dict[str, tuple[str, list[str], dict[str, Any], dict[str, Any]]] = {
    "ig": ("bert_mlm", MLM_TEXTS, {}, {"n_steps": 4, "max_steps": 16}),
    "saliency": ("bert_classifier", TEXTS, {"class": 1}, {}),
    "input_x_gradient": ("llama", TEXTS, {}, {}),
    "gradient_shap": ("bert_encoder", TEXTS, {"pair": "the doctor is kind"}, {"n_samples": 2}),
    "occlusion": ("llama", TEXTS, {"mode": "generate", "max_new_tokens": 2}, {}),
    "lime": ("bert_classifier", TEXTS, {}, {"n_samples": 16}),
    "kernel_shap": ("bert_mlm", MLM_TEXTS, {"mode": "pll"}, {"n_samples": 16}),
    "attention": ("bert_mlm", MLM_TEXTS, {}, {"layers": [-1]}),
    "rollout": ("llama", TEXTS, {}, {}),
    "attention_flow": ("bert_classifier", TEXTS, {}, {}),
    "grad_rollout": ("llama", TEXTS, {"mode": "generate", "max_new_tokens": 2}, {}),
    "head_importance": ("bert_encoder", TEXTS, {"pair": "the doctor is kind"}, {}),
    "patching": ("llama", ["the man said that"], {"token": " man", "contrast": " the"}, {"corrupt": {"man": "woman"}}),
}


def _fixtures() -> dict[str, str]:
    """Probe name -> the tiny-model fixture it runs on."""
    return {**{n: c.fixture for n, c in CASES.items()}, "cost": COST[0]}


def _explain_specs(paths: dict[str, str]) -> list[dict[str, Any]]:
    """One ``explain:`` step per :data:`EXPLAIN_CASES` entry, named after its method."""
    return [{"name": m, "method": m, "models": [paths[fixture]], "texts": texts, "target": target, "options": options}
            for m, (fixture, texts, target, options) in sorted(EXPLAIN_CASES.items())]


@pytest.fixture(scope="module")
def run_pairs(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
              ) -> dict[str, tuple[RunDir, RunDir]]:
    """Fixture name -> (the one-process run directory, the two-process one) of the one config."""
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
           "probes": specs, "explain": _explain_specs(paths), "report": {"enabled": False}}
    path = tmp / "audit.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    for run_id, nproc in (("one", 1), ("two", 2)):
        done = taudit(path, tmp / "runs", run_id, nproc=nproc)
        assert done.returncode == 0, done.stderr[-3000:]
    return {f: (RunDir(tmp / "runs" / f"one-{f}"), RunDir(tmp / "runs" / f"two-{f}")) for f in paths}


@pytest.fixture(scope="module")
def runs(run_pairs: dict[str, tuple[RunDir, RunDir]]) -> dict[str, tuple[RunDir, RunDir]]:
    """Probe name -> (the one-process run directory, the two-process one) of its model."""
    return {n: run_pairs[f] for n, f in _fixtures().items()}


def test_config_holds_every_registered_probe() -> None:
    assert set(_fixtures()) == set(CASES) | NO_DATA == set(PROBES.names())


def test_config_holds_every_registered_explainer() -> None:
    assert set(EXPLAIN_CASES) == set(list_explainers())


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


@pytest.mark.parametrize("method", sorted(EXPLAIN_CASES))
def test_two_process_explain_step_equals_one_process_step(method: str,
                                                          run_pairs: dict[str, tuple[RunDir, RunDir]]) -> None:
    one, two = run_pairs[EXPLAIN_CASES[method][0]]
    a, b = RunView(one).explain(method), RunView(two).explain(method)
    assert (a.status, b.status) == ("complete", "complete"), (a.message, b.message)
    assert a.summary["methods"] == [method] and a.summary["n_examples"] == len(EXPLAIN_CASES[method][1])
    _close(_comparable(a.summary, method), _comparable(b.summary, method), f"explain {method}")
    for table in ("attributions.parquet", "metrics.parquet"):
        (ta, problem_a), (tb, problem_b) = a.table(table), b.table(table)
        assert ta is not None and tb is not None, (problem_a, problem_b)
        assert len(ta) > 0 or table == "metrics.parquet", f"{method}: {table} is empty"
        pd.testing.assert_frame_equal(ta, tb, rtol=1e-6, atol=1e-6)
