"""Audit policies: thresholds on probe metrics, judged against a run directory.

A policy is a list of checks, given as a YAML file or as the ``policy:`` section of an audit
config::

    checks:                      # or the list itself at top level
      - check: crows_pairs.pct_stereotype within 45..55
        severity: fail           # fail (default) | warn
        on: ci                   # value (default) | ci: judge the 95 % CI bound, not the point
      - seat.mean_abs_effect_size <= 0.2      # a bare string: severity fail, on value
      - {check: "stereoset.icat >= 70", severity: warn}

``<probe>`` is the probe's name in the run (the registry name unless the config renamed it);
``<metric>`` is a key of that probe's summary metrics, or one of ``AUDIT_COST_METRICS``
(``audit_wall_s``, ``audit_tokens_forwarded``, ``audit_flops``, ``audit_mfu``: what the probe
itself cost this run, recorded by the runner for every probe, e.g. ``crows_pairs.audit_wall_s <= 600``). Operators: ``<=``, ``<``, ``>=``, ``>``
and ``within LOW..HIGH`` (inclusive). With ``on: ci`` an upper bound (``<=``, ``<``) is judged
on ``ci_high``, a lower bound on ``ci_low``, and ``within`` needs both bounds inside — the
check passes only when the whole interval satisfies it (a conservative gate, in the spirit of
equivalence testing with two one-sided tests, Schuirmann 1987).

Each check ends ``pass``, ``warn`` (a warn-severity check whose condition is violated),
``fail``, ``missing`` (the probe failed, did not run, or lacks the metric or its CI) or
``skipped``. A missing metric fails the verdict when the check's severity is ``fail``: an audit
gate must not pass because a probe crashed. A check with ``required: false`` is ``skipped``
instead when its probe did not apply to the model (not in the run, or skipped for the model's
kind) or does not report the metric for that kind; a probe that ran and failed is still missing.

``recommended`` (a name, not a file) is the built-in profile in ``audit/recommended_policy.yaml``:
thresholds for every probe's headline metric with their sources, restricted to the probes of
the run by :func:`recommended_policy`. It is a starting point that teams are expected to tune.

Metric names renamed since a run was written still resolve: ``crows_pairs.metric`` (the old
name) and ``crows_pairs.pct_stereotype`` (lm-evaluation-harness's name) are aliases.

The runner calls :func:`load_policy`, :func:`validate_policy` (with :func:`known_metrics`),
:func:`evaluate_policy` and :func:`write_verdict`, then exits 1 when ``verdict.failed``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from functools import cached_property
from importlib.resources import files
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from audit.config import read_yaml_file
from audit.datafiles import brief
from audit.results import MetricValue
from audit.rundir_view import CHECK_STATUSES, RunView, verdict_outcome
from audit.store import SCHEMA_VERSION, RunDir, now_iso, write_json
from audit.views import finite

Op = Literal["<=", "<", ">=", ">", "within"]
RECOMMENDED = "recommended"
#: metric names that mean the same result (old name ↔ new name)
METRIC_ALIASES = {"metric": "pct_stereotype", "pct_stereotype": "metric"}


#: the audit's own cost of each probe (``probes/<name>/compute-rank*.json``, summed over the ranks by
#: :func:`audit.metering.read_probe_compute`), checkable on any probe: policy name → record field
AUDIT_COST_METRICS = {"audit_wall_s": "wall_s", "audit_tokens_forwarded": "tokens_forwarded",
                      "audit_flops": "flops", "audit_mfu": "mfu"}


def metric_key(metric: str, available: Iterable[str]) -> str | None:
    """``metric`` itself, or its alias, whichever ``available`` has (``None``: neither)."""
    names = set(available)
    if metric in names:
        return metric
    alias = METRIC_ALIASES.get(metric)
    return alias if alias in names else None

_NUM = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_CMP_RE = re.compile(rf"^\s*(?P<ref>[^\s<>=]+)\s*(?P<op><=|>=|<|>)\s*(?P<num>{_NUM})\s*$")
_WITHIN_RE = re.compile(
    rf"^\s*(?P<ref>\S+)\s+within\s+\[?\s*(?P<lo>{_NUM})\s*(?:\.\.|,|\bto\b)\s*(?P<hi>{_NUM})\s*\]?\s*$",
    re.IGNORECASE,
)
GRAMMAR = "'<probe>.<metric> <=|<|>=|> NUMBER' or '<probe>.<metric> within LOW..HIGH'"


class PolicyError(ValueError):
    """A policy that cannot be read or names something that does not exist."""


@dataclass
class Condition:
    """A parsed check string."""

    probe: str
    metric: str
    op: Op
    threshold: float | None = None
    low: float | None = None
    high: float | None = None

    @property
    def ref(self) -> str:
        return f"{self.probe}.{self.metric}"

    def threshold_text(self) -> str:
        if self.op == "within":
            return f"within {_fmt(self.low)}..{_fmt(self.high)}"
        return f"{self.op} {_fmt(self.threshold)}"

    def holds(self, vals: list[float]) -> bool:
        """Whether every one of ``vals`` (the value, or the CI bounds judged) meets the condition."""
        if self.op == "within":
            assert self.low is not None and self.high is not None
            return all(self.low <= v <= self.high for v in vals)
        t = self.threshold
        assert t is not None
        return {"<=": vals[0] <= t, "<": vals[0] < t, ">=": vals[0] >= t, ">": vals[0] > t}[self.op]


def _fmt(x: float | None) -> str:
    return "—" if x is None else f"{x:g}"


def parse_condition(text: str) -> Condition:
    """Parse ``"crows_pairs.metric within 45..55"`` / ``"seat.mean_abs_effect_size <= 0.2"``."""
    m = _WITHIN_RE.match(text)
    if m:
        lo, hi = float(m["lo"]), float(m["hi"])
        if lo > hi:
            raise ValueError(f"empty range: LOW {lo:g} is greater than HIGH {hi:g}")
        probe, metric = _split_ref(m["ref"])
        return Condition(probe, metric, "within", low=lo, high=hi)
    m = _CMP_RE.match(text)
    if m:
        probe, metric = _split_ref(m["ref"])
        return Condition(probe, metric, m["op"], threshold=float(m["num"]))  # type: ignore[arg-type]
    raise ValueError(f"cannot parse {brief(text)}; expected {GRAMMAR}")


def _split_ref(ref: str) -> tuple[str, str]:
    probe, dot, metric = ref.partition(".")
    if not dot or not probe or not metric:
        raise ValueError(f"{ref!r} must be '<probe>.<metric>'")
    return probe, metric


class Check(BaseModel):
    """One policy check (pydantic, so a typo in a field is an error naming that field)."""

    model_config = ConfigDict(extra="forbid")

    check: str
    severity: Literal["fail", "warn"] = "fail"
    on: Literal["value", "ci"] = "value"
    description: str = ""
    source: str = ""
    required: bool = True

    @field_validator("check")
    @classmethod
    def _parse(cls, v: str) -> str:
        parse_condition(v)
        return v.strip()

    @cached_property
    def condition(self) -> Condition:
        return parse_condition(self.check)


class Policy(BaseModel):
    """A named list of checks; ``source`` says where it came from (a file path or "config")."""

    model_config = ConfigDict(extra="forbid")

    checks: list[Check]
    name: str = ""
    source: str = ""


def _normalise_check(item: Any) -> Any:
    if isinstance(item, str):
        return {"check": item}
    if isinstance(item, dict):
        # YAML 1.1 (PyYAML) reads the bare key ``on`` as the boolean True (and JSON then writes "true").
        return {("on" if k is True or k == "true" else k): v for k, v in item.items()}
    return item


def load_policy(spec: str | Path | Mapping[str, Any] | list[Any] | Policy) -> Policy:
    """Read a policy from a YAML file, an audit config's ``policy:`` section, or a list of checks.

    A file may hold the checks list itself, ``{checks: [...]}``, or a whole audit config with a
    ``policy:`` section. Errors name the source, the check (number and text) and the field.
    """
    if isinstance(spec, Policy):
        return spec
    if is_recommended(spec):
        return recommended_policy()
    source = "policy"
    data: Any = spec
    if isinstance(spec, (str, Path)):
        path = Path(spec)
        source = str(path)
        if not path.is_file():
            raise PolicyError(f"policy file {path} does not exist")
        data = read_yaml_file(path, "policy file", PolicyError)
        if isinstance(data, dict) and "policy" in data and "checks" not in data:
            data = data["policy"]
    if isinstance(data, list):
        data = {"checks": data}
    if not isinstance(data, Mapping):
        raise PolicyError(f"{source}: expected a list of checks or a mapping with 'checks', got {type(data).__name__}")
    data = dict(data)
    unknown = set(data) - {"checks", "name", "source"}
    if unknown:
        raise PolicyError(f"{source}: unknown field(s) {', '.join(sorted(map(str, unknown)))}; "
                          "a policy has 'checks' (and optionally 'name')")
    raw = data.get("checks")
    if not isinstance(raw, list) or not raw:
        raise PolicyError(f"{source}: field 'checks' must be a non-empty list of checks")
    checks = []
    for i, item in enumerate(raw, 1):
        item = _normalise_check(item)
        label = item.get("check") if isinstance(item, dict) else item
        try:
            checks.append(Check.model_validate(item))
        except ValidationError as exc:
            problems = "; ".join(
                f"field {'.'.join(map(str, e['loc'])) or 'check'!r}: {_msg(e)}" for e in exc.errors()
            )
            raise PolicyError(f"{source}: check {i} ({brief(label)}): {problems}") from None
    return Policy(checks=checks, name=str(data.get("name") or ""), source=str(data.get("source") or source))


def _msg(err: Mapping[str, Any]) -> str:
    msg = str(err.get("msg", "")).removeprefix("Value error, ")
    got = err.get("input")
    if err.get("loc") != ("check",) and isinstance(got, (str, int, float, bool)):
        msg += f" (got {brief(got)})"
    return msg


def is_recommended(spec: Any) -> bool:
    """Whether a policy spec names the built-in profile (a file of that name wins)."""
    return isinstance(spec, str) and spec.strip() == RECOMMENDED and not Path(spec).is_file()


def recommended_policy(probes: Mapping[str, str] | None = None) -> Policy:
    """The built-in ``recommended`` profile (``audit/recommended_policy.yaml``).

    ``probes`` maps the run's probe names to registry names; each gets the checks written for its
    registry name, renamed to the run's name. ``None``: every check, under the registry names.
    """

    raw = yaml.safe_load(files("audit").joinpath("recommended_policy.yaml").read_text(encoding="utf-8"))
    table: Mapping[str, list[Any]] = raw["checks"]
    mapping = {n: n for n in table} if probes is None else dict(probes)
    checks = []
    for run_name, reg in mapping.items():
        for item in table.get(reg, []):
            item = _normalise_check(item)
            text = str(item["check"])
            checks.append({**item, "check": run_name + text[len(reg):], "required": False})
    if not checks:
        raise PolicyError(f"policy {RECOMMENDED!r} has no check for the probes of this audit "
                          f"({', '.join(sorted(set(mapping.values()))) or 'none'})")
    return load_policy({"checks": checks, "name": RECOMMENDED,
                        "source": f"built-in profile {RECOMMENDED!r} (audit/recommended_policy.yaml)"})


def known_metrics(probes: Mapping[str, str] | Iterable[str] | None = None) -> dict[str, set[str]]:
    """Probe name → metric names, from the probe registry (``audit.probe.PROBES``).

    ``probes`` maps names used in a run to registry names (a config may run one probe under
    another name); an iterable means names equal registry names; ``None``: every registered
    probe. Names the registry does not know are left out, so :func:`validate_policy` reports them.
    """
    from audit.probe import PROBES

    names = PROBES.names() if probes is None else probes
    mapping = dict(names) if isinstance(names, Mapping) else {n: n for n in names}
    return {run: set(PROBES.get(reg).metrics) for run, reg in mapping.items() if reg in PROBES}


def validate_policy(policy: Policy, known: Mapping[str, Iterable[str]]) -> None:
    """Raise :class:`PolicyError` listing every check that names an unknown probe or metric."""
    problems = []
    for i, c in enumerate(policy.checks, 1):
        cond = c.condition
        if cond.probe not in known:
            names = ", ".join(sorted(known)) or "(none)"
            problems.append(f"check {i} ({c.check!r}): unknown probe {cond.probe!r}; known probes: {names}")
            continue
        metrics = set(known[cond.probe])
        if metric_key(cond.metric, metrics) is None and cond.metric not in AUDIT_COST_METRICS:
            names = ", ".join(sorted(metrics)) or "(none)"
            problems.append(f"check {i} ({c.check!r}): unknown metric {cond.metric!r} for probe "
                            f"{cond.probe!r}; its metrics: {names}")
    if problems:
        raise PolicyError(f"{policy.source or 'policy'}: {len(problems)} check(s) name something this "
                          "audit does not measure:\n  " + "\n  ".join(problems))


@dataclass(kw_only=True)
class CheckResult(Condition):
    """The outcome of one check on one run: its condition, the check's settings and what was found."""

    check: str
    severity: str
    on: str
    status: str = "missing"
    value: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    judged: list[float] = field(default_factory=list)
    unit: str = ""
    ideal: float | None = None
    reason: str = ""
    description: str = ""
    source: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The ``verdict.json`` record: the condition as text (``threshold``: ``within 45..55``)."""
        d = asdict(self)
        del d["low"], d["high"]
        return d | {"threshold": self.threshold_text()}


@dataclass
class Verdict:
    """All check results for one run; ``failed`` is true when any fail-severity check failed or
    its metric was missing."""

    checks: list[CheckResult]
    run_id: str = ""
    run_status: str = ""
    policy_source: str = ""
    policy_name: str = ""
    evaluated_at: str = field(default_factory=now_iso)

    @property
    def failed(self) -> bool:
        return verdict_outcome((c.severity, c.status) for c in self.checks)[1]

    @property
    def status(self) -> str:
        return verdict_outcome((c.severity, c.status) for c in self.checks)[0]

    def counts(self) -> dict[str, int]:
        return {s: sum(c.status == s for c in self.checks) for s in CHECK_STATUSES}

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "status": self.status,
            "failed": self.failed,
            "counts": self.counts(),
            "run_id": self.run_id,
            "run_status": self.run_status,
            "policy": {"source": self.policy_source, "name": self.policy_name},
            "evaluated_at": self.evaluated_at,
            "note": "A check whose metric is missing (probe failed, not run, or metric/CI absent) "
                    "counts as failed when its severity is 'fail'.",
            "checks": [c.to_dict() for c in self.checks],
        }


def _resolve(rd: RunView, probe: str) -> tuple[str | None, str]:
    """The run's name for ``probe`` (a run name, or the registry name of exactly one run probe)."""
    entries = rd.manifest().probes
    if probe in entries or rd.file("probes", probe).is_dir():
        return probe, ""
    aliases = sorted(n for n, e in entries.items() if e.get("probe") == probe)
    if len(aliases) == 1:
        return aliases[0], ""
    if len(aliases) > 1:
        return None, f"probe {probe!r} ran under several names ({', '.join(aliases)}); name one in the check"
    return None, f"probe {probe!r} is not in this run"


#: what a check ``on: ci`` judges, by operator: the bounds that must meet the condition, and their name
_CI_BOUNDS = {"within": (["ci_low", "ci_high"], "95% CI bounds"), "<=": (["ci_high"], "95% CI upper bound"),
              "<": (["ci_high"], "95% CI upper bound"), ">=": (["ci_low"], "95% CI lower bound"),
              ">": (["ci_low"], "95% CI lower bound")}


def _evaluate_check(c: Check, rd: RunView) -> CheckResult:
    cond = c.condition
    res = CheckResult(**asdict(cond), check=c.check, severity=c.severity, on=c.on,
                      description=c.description, source=c.source)

    def unjudged(reason: str, if_not_required: str | None = None) -> CheckResult:
        """``res`` ends ``missing`` for ``reason``, or ``skipped`` (the reason + ``if_not_required``)
        when that note is given and the check is not required."""
        skip = if_not_required is not None and not c.required
        res.status, res.reason = ("skipped", reason + (if_not_required or "")) if skip else ("missing", reason)
        return res

    name, why = _resolve(rd, cond.probe)
    if name is None:
        return unjudged(why, " (not required)")
    rec = rd.probe(name)
    if rec.status == "skipped" and not c.required:
        return unjudged(f"probe {name!r} skipped: {rec.entry.get('reason') or 'it does not apply to this model'}", "")
    if not rec.complete:
        return unjudged(f"probe {name!r} {rec.status}" + (f": {rec.reason}" if rec.reason else "") + "; no results to judge")
    metrics = rec.metrics
    if cond.metric in AUDIT_COST_METRICS and cond.metric not in metrics:
        figures, err = rec.compute()
        if err:
            return unjudged(err)
        metrics = {cond.metric: MetricValue.from_dict({"value": (figures or {}).get(AUDIT_COST_METRICS[cond.metric])})}
    key = metric_key(cond.metric, metrics)
    if key is None:
        return unjudged(f"metric {cond.metric!r} is not in probe {name!r} results (it has: "
                        f"{', '.join(sorted(metrics)) or 'none'})", "; not reported for this model (not required)")
    mv = metrics[key]
    res.value, res.ci_low, res.ci_high = finite(mv.value), finite(mv.ci_low), finite(mv.ci_high)
    res.unit, res.ideal = str(mv.unit or ""), finite(mv.ideal)
    need, what = (["value"], "value") if c.on == "value" else _CI_BOUNDS[cond.op]
    got = [getattr(res, k) for k in need]
    if any(v is None for v in got):
        return unjudged(f"metric {cond.ref} has no finite value" if c.on == "value" else f"metric {cond.ref} has "
                        f"no confidence interval ({', '.join(need)} absent); cannot judge on: ci")
    res.judged = [float(v) for v in got]
    shown = ", ".join(f"{v:g}" for v in res.judged)
    if cond.holds(res.judged):
        res.status, res.reason = "pass", f"{what} {shown} is {cond.threshold_text()}"
    else:
        res.status = "fail" if c.severity == "fail" else "warn"
        res.reason = f"{what} {shown} is not {cond.threshold_text()}"
    return res


def evaluate_policy(policy: Policy, run_dir: RunDir | str | Path) -> Verdict:
    """Judge every check of ``policy`` against the results stored in ``run_dir``."""
    rd = RunView(run_dir)
    manifest = rd.manifest()
    checks = [_evaluate_check(c, rd) for c in policy.checks]
    return Verdict(checks=checks, run_id=manifest.run_id,
                   run_status=str(manifest.raw.get("status") or ""), policy_source=policy.source,
                   policy_name=policy.name)


def write_verdict(run_dir: RunDir | str | Path, verdict: Verdict) -> Path:
    """Write ``verdict.json`` (atomically) into the run directory; returns its path."""
    path = RunView(run_dir).file("verdict.json")
    write_json(path, verdict.to_dict())
    return path
