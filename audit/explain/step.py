"""Explainers as a step of an audit run, writing ``explain/<name>/`` in the run directory.

An ``explain:`` entry of the audit config::

    - name: nurse
      methods: [ig, occlusion, rollout]       # or method: ig
      texts: ["The nurse said [MASK] was tired."]   # or data: file.txt / file.csv (text column)
      target: {token: "she"}                  # kind-specific, see audit.explain.targets
      options: {n_steps: 64, ig: {internal_batch_size: 16}}   # shared, or per method
      metrics: [comprehensiveness, sufficiency, tau_loo]

:func:`run_explain_step` writes ``attributions.parquet``, ``metrics.parquet`` and, last,
``summary.json`` with ``"status": "complete"``. :func:`explain_bias_items` explains both sentences
of the items a bias probe flags most strongly (``explain/<probe>-items/``).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveInt,
    ValidationError,
    field_validator,
    model_validator,
)

from audit.errors import OptionsError
from audit.explain.base import check_valid as _check_valid
from audit.explain.base import explain_prepared, get_explainer, list_explainers, resolve_options
from audit.explain.errors import ExplainError, MethodNotValidError
from audit.explain.evaluate import DEFAULT_METRICS, check_metrics, evaluate, summarize
from audit.explain.perturbation import Removal
from audit.explain.targets import prepare, target_mode
from audit.options import Options, problems
from audit.rundir_view import RunView
from audit.store import SCHEMA_VERSION, RunDir, now_iso, write_json, write_parquet

if TYPE_CHECKING:
    from audit.explain.attributions import Attributions
    from audit.models import ModelHandle

logger = logging.getLogger(__name__)



class StepOptions(Options):
    """Options that shape the metrics, shared by all methods of a step (:mod:`audit.metrics`)."""

    removal: Removal = Field(default="baseline", description="how faithfulness metrics remove a token")
    curve_points: PositiveInt = Field(default=50, description="points of the deletion / insertion curves")
    infidelity_samples: PositiveInt = 16
    infidelity_noise: float = Field(default=0.1, gt=0, description="std of the infidelity perturbations")
    sensitivity_samples: PositiveInt = 8
    sensitivity_radius: float = Field(default=0.02, gt=0, description="radius of the sensitivity-max ball")


class ExplainSpecError(OptionsError):
    """An invalid ``explain:`` entry; ``problems`` locates each field (``options.ig.n_steps``)."""

    def __str__(self) -> str:
        return f"{self.owner}: " + "; ".join(f"field {loc!r}: {msg}" if loc else msg for loc, msg in self.problems)


class ExplainSpec(BaseModel):
    """One ``explain:`` entry of the audit config."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1)
    methods: list[str] | None = None
    method: str | None = None
    texts: list[str | tuple[str, str]] | None = None
    data: str | None = None
    text_column: str = "text"
    pair_column: str | None = None
    rationale_column: str | None = None
    rationales: list[list[str] | None] | None = None
    target: dict[str, Any] = Field(default_factory=dict)
    options: dict[str, Any] = Field(default_factory=dict)
    metrics: list[str] | None = None
    max_examples: int | None = Field(default=None, gt=0)

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v: str | None) -> str | None:
        if v is not None and ("/" in v or "\\" in v or v.startswith(".")):
            raise ValueError(f"{v!r} must be a plain folder name")
        return v

    @field_validator("methods", "method")
    @classmethod
    def _known_methods(cls, v: list[str] | str | None) -> list[str] | str | None:
        known = list_explainers()
        for m in [v] if isinstance(v, str) else v or []:
            if m not in known:
                raise ValueError(f"unknown method {m!r}; known: {', '.join(known)}")
        return v

    @field_validator("metrics")
    @classmethod
    def _known_metrics(cls, v: list[str] | None) -> list[str] | None:
        return None if v is None else check_metrics(v)

    @model_validator(mode="after")
    def _consistent(self) -> ExplainSpec:
        methods = list(self.methods or []) + ([self.method] if self.method else [])
        if not methods:
            raise ValueError("give 'methods' (a list) or 'method'")
        self.methods = list(dict.fromkeys(methods))
        self.method = None
        if (self.texts is None) == (self.data is None):
            raise ValueError("give exactly one of 'texts' and 'data'")
        if self.texts is not None and not self.texts:
            raise ValueError("'texts' is empty")
        if self.rationales is not None and self.texts is not None and len(self.rationales) != len(self.texts):
            raise ValueError(f"'rationales' has {len(self.rationales)} entries for {len(self.texts)} texts")
        return self


def method_options(methods: list[str], options: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Split shared / per-method options (as given, each validated by its method's options model);
    every option must fit at least one method or the step. :class:`ExplainSpecError` locates each
    problem (``options.ig.n_steps``, ``options.curve_points``)."""
    shared = {k: v for k, v in options.items() if k not in methods}
    found: list[tuple[str, str]] = []
    out: dict[str, dict[str, Any]] = {}
    for m in methods:
        if m in options and not isinstance(options[m], dict):
            found.append((f"options.{m}", f"must be a mapping of {m} options"))
            continue
        model = get_explainer(m).options
        per = dict(options.get(m) or {})
        if "baseline" in per:
            found.append((f"options.{m}.baseline", "set 'baseline' in the shared options (all methods share the input)"))
        out[m] = {**{k: v for k, v in shared.items() if k in model.model_fields}, **per}
        try:
            model.model_validate(out[m])
        except ValidationError as exc:  # a shared option is named where it was given
            found += [(f"options.{loc}" if loc.split(".")[0] in shared and loc.split(".")[0] not in per
                       else f"options.{m}.{loc}" if loc else f"options.{m}", msg)
                      for loc, msg in problems(exc, model, f"method {m!r}")]
    step = {k: v for k, v in shared.items() if k in StepOptions.model_fields}
    try:
        StepOptions.model_validate(step)
    except ValidationError as exc:
        found += [(f"options.{loc}", msg) for loc, msg in problems(exc, StepOptions, "the step")]
    unknown = set(shared) - set(step) - {k for m in methods for k in out.get(m, {})}
    if unknown:
        found.append(("", f"options: {sorted(unknown)} fit none of the methods {methods}"))
    if found:
        raise ExplainSpecError("options", list(dict.fromkeys(found)))
    return out


def validate_explain_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """Check an ``explain:`` entry; returns it normalised (``methods`` list). Errors name the field."""
    if not isinstance(spec, dict):
        raise ValueError(f"explain entry must be a mapping, got {type(spec).__name__}")
    owner = f"explain entry {spec.get('name', '?')!r}"
    try:
        out = ExplainSpec.model_validate(spec).model_dump()
    except ValidationError as exc:
        raise ExplainSpecError(owner, [(".".join(str(x) for x in err["loc"]), err["msg"].removeprefix("Value error, "))
                                       for err in exc.errors()]) from None
    try:
        method_options(out["methods"], out["options"])
    except ExplainSpecError as exc:
        raise ExplainSpecError(owner, exc.problems) from None
    return out


def load_inputs(spec: dict[str, Any]) -> tuple[list[Any], list[list[str] | None] | None]:
    """The inputs (texts or (text, pair) tuples) and rationales of a validated spec."""
    if spec.get("texts") is not None:
        inputs = [tuple(t) if isinstance(t, (list, tuple)) else t for t in spec["texts"]]
        rationales = spec.get("rationales")
    else:
        path = Path(spec["data"])
        if not path.is_file():
            raise ExplainError(f"explain entry {spec['name']!r}: data file {str(path)!r} not found")
        if path.suffix.lower() in {".csv", ".tsv"}:
            df = pd.read_csv(path, sep="\t" if path.suffix.lower() == ".tsv" else ",")
            for col in [spec["text_column"], spec.get("pair_column"), spec.get("rationale_column")]:
                if col and col not in df.columns:
                    raise ExplainError(f"data file {path}: no column {col!r} (columns: {', '.join(df.columns)})")
            texts = df[spec["text_column"]]
            bad = texts.isna() | (texts.astype(str).str.strip() == "")
            if bad.any():
                raise ExplainError(f"data file {path}: row {int(bad.idxmax()) + 2}: empty {spec['text_column']!r}")
            pc = spec.get("pair_column")
            inputs = ([(str(a), str(b)) for a, b in zip(texts, df[pc], strict=True)] if pc
                      else [str(t) for t in texts])
            rc = spec.get("rationale_column")
            rationales = ([[s for s in str(r).split("|") if s.strip()] if isinstance(r, str) else None
                           for r in df[rc]] if rc else spec.get("rationales"))
        else:
            inputs = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
            rationales = spec.get("rationales")
        if not inputs:
            raise ExplainError(f"data file {path} has no texts")
    n = spec.get("max_examples")
    if n:
        inputs = inputs[:n]
        rationales = rationales[:n] if rationales else rationales
    return inputs, rationales


def _write_outputs(out_dir: Path, handle: ModelHandle, frame: pd.DataFrame, metrics: pd.DataFrame,
                   **summary: Any) -> None:
    """The tables, then ``summary.json``: ``summary`` with the status, metric means and model."""
    write_parquet(out_dir / "attributions.parquet", frame)
    write_parquet(out_dir / "metrics.parquet", metrics)
    write_json(out_dir / "summary.json", {  # the completion marker, always last
        "schema_version": SCHEMA_VERSION, "status": "complete", **summary, "metrics": summarize(metrics),
        "model": handle.name, "kind": handle.kind, "finished_at": now_iso()})


def completeness_table(attrs: list[Attributions]) -> list[dict[str, Any]]:
    """Per method, example and target: the IG completeness gap, steps, gradient evaluations and
    ``met`` (what the report and dashboard show beside each heat map)."""
    rows = []
    for a in attrs:
        for e in a.examples:
            for k, name in enumerate(e.target_names if e.completeness else []):
                rows.append({"method": a.method, "example": e.index, "target": name, **e.target_completeness(k)})
    return rows


def run_explain_step(handle: ModelHandle, spec: dict[str, Any], run_dir: RunDir, name: str, seed: int = 0,
                     progress: bool = True) -> dict[str, Any]:
    """Run one ``explain:`` entry and write ``explain/<name>/`` (summary.json last)."""
    t0 = time.perf_counter()
    spec = validate_explain_spec({**spec, "name": spec.get("name", name)})
    out_dir = run_dir.explain_dir(name)
    methods: list[str] = spec["methods"]
    per = method_options(methods, spec["options"])
    for m in methods:  # stochastic methods follow the run's seed unless the entry sets one
        if "seed" in get_explainer(m).options.model_fields:
            per[m].setdefault("seed", seed)
    step = StepOptions.model_validate({k: v for k, v in spec["options"].items() if k in StepOptions.model_fields})
    target = spec["target"]
    try:
        mode = target_mode(handle.kind, target)
        for m in methods:  # fail before any work
            _check_valid(handle, get_explainer(m), mode)
        inputs, rationales = load_inputs(spec)
        torch.manual_seed(seed)
        baseline = resolve_options(get_explainer(methods[0]), per[methods[0]])["baseline"]  # shared by all methods
        preps = prepare(handle, inputs, target, baseline=baseline)
        attrs: list[Attributions] = []
        for m in methods:
            attrs.append(explain_prepared(handle, preps, m, target=target, progress=progress, **per[m]))
            logger.info("explain %s: %d examples in %.1f s", m, len(preps), attrs[-1].duration_s)
        timings = {a.method: round(a.duration_s, 3) for a in attrs}
        metric_names = spec["metrics"] if spec["metrics"] is not None else list(DEFAULT_METRICS)
        t1 = time.perf_counter()
        mdf = evaluate(handle, preps, attrs, metric_names, rationales=rationales, **step.values(), seed=seed,
                       progress=progress)
        timings["metrics"] = round(time.perf_counter() - t1, 3)
        frame = pd.concat([a.to_frame() for a in attrs], ignore_index=True)
        warnings = [w for a in attrs for w in a.warnings]
        duration = time.perf_counter() - t0
        _write_outputs(
            out_dir, handle, frame, mdf, name=name, methods=methods, texts=[p.text for p in preps],
            pairs=[p.pair for p in preps] if handle.kind == "encoder" else None,
            target={"spec": target, "mode": mode, "per_example": [p.target_names for p in preps]},
            metric_names=metric_names, warnings=warnings, options={a.method: a.options for a in attrs},
            completeness=completeness_table(attrs), seed=seed, timings_s=timings, duration_s=round(duration, 3),
            n_examples=len(preps))
    except Exception as exc:
        write_json(out_dir / "summary.json", {"schema_version": SCHEMA_VERSION, "name": name, "status": "failed",
                                              "error": f"{type(exc).__name__}: {exc}", "finished_at": now_iso()})
        raise
    return {"status": "complete", "name": name, "duration_s": round(duration, 3), "n_examples": len(preps),
            "methods": methods, "warnings": len(warnings)}


def explain_bias_items(handle: ModelHandle, run_dir: RunDir | str | Path, probe_name: str, top_k: int = 3,
                       method: str = "ig", *, metrics: list[str] | None = None, progress: bool = False,
                       **options: Any) -> dict[str, Any]:
    """Explain both sentences of the ``top_k`` items a completed probe ranks most biased.

    Items are ranked by the magnitude of the probe's ``item_effect`` column; the two sentences are
    its first two ``item_text`` columns (e.g. CrowS-Pairs ``sent_more`` / ``sent_less``).
    The target is the sentence score the probe compares: the log-likelihood for causal LMs, the
    pseudo-log-likelihood for masked LMs (a proxy: every token is scored, not only the shared
    ones). Writes ``explain/<probe>-items/`` with the extra columns ``item`` and ``side``.
    """
    t0 = time.perf_counter()
    rd = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    rec = RunView(rd).probe(probe_name)
    if not rec.complete:
        raise ExplainError(f"probe {probe_name!r} has no complete result in {rd.path} ({rec.message})")
    effect, text_cols = rec.item_effect, rec.item_text
    if not effect or len(text_cols) < 2:
        raise ExplainError(f"probe {probe_name!r}: its result needs an item_effect and two item_text columns "
                           f"to link items to explanations (got item_effect={effect!r}, item_text={text_cols})")
    items, problem = rec.items()
    if items is None:
        raise ExplainError(f"probe {probe_name!r}: {problem}")
    for col in [effect, *text_cols[:2]]:
        if col not in items.columns:
            raise ExplainError(f"probe {probe_name!r}: items.parquet has no column {col!r}")
    target = {"causal-lm": {"mode": "sentence"}, "masked-lm": {"mode": "pll"}}.get(handle.kind)
    if target is None:
        raise MethodNotValidError(f"explaining bias items scores sentences, which needs a causal or masked LM; "
                                  f"{handle.name} is a {handle.kind} model")
    ranked = items[effect].dropna().abs().sort_values(ascending=False, kind="stable").index[:top_k]
    sides = text_cols[:2]
    texts, keys = [], []
    for idx in ranked:
        for side in sides:
            texts.append(str(items.at[idx, side]))
            keys.append((int(idx), side))
    name = f"{probe_name}-items"
    out_dir = rd.explain_dir(name)
    preps = prepare(handle, texts, target, baseline=options.pop("baseline", "auto"))
    attr = explain_prepared(handle, preps, method, target=target, progress=progress, **options)
    mdf = evaluate(handle, preps, [attr], metrics or ["completeness_gap"], progress=progress)
    frame = attr.to_frame()
    for df in (frame, mdf):
        df["item"] = [keys[e][0] for e in df["example"]]
        df["side"] = [keys[e][1] for e in df["example"]]
    f_input = [((e.completeness or {}).get("f_input") or [None])[0] for e in attr.examples]  # the sentence scores
    item_rows = [{"item": int(idx), "effect": float(items.at[idx, effect]),
                  "texts": {side: str(items.at[idx, side]) for side in sides},
                  "score": {side: f_input[2 * j + s] for s, side in enumerate(sides)}} for j, idx in enumerate(ranked)]
    duration = round(time.perf_counter() - t0, 3)
    _write_outputs(out_dir, handle, frame, mdf, name=name, probe=probe_name, item_effect=effect, sides=sides,
                   items=item_rows, methods=[method], texts=texts, target={"spec": target, "mode": target["mode"]},
                   warnings=attr.warnings, duration_s=duration)
    return {"status": "complete", "name": name, "n_items": len(ranked), "duration_s": duration,
            "warnings": len(attr.warnings)}
