"""What ``taudit run`` prints at the end, and the machine-readable verdict outputs for CI.

* :func:`model_table` — per model: probe, headline metric, value [95 % CI], ideal and the policy's
  pass/warn/fail for that metric, read from the run directory (``probes/*/summary.json``).
* :func:`failed_check_lines` — every check that did not pass, with value, CI and threshold.
* :func:`github_annotations` — ``::error::`` / ``::warning::`` workflow commands (GitHub Actions
  reads them from stdout and shows them on the run and the pull request).
* :func:`junit_xml` — each policy check as a JUnit test case (GitLab, Jenkins, GitHub test
  reporters and Azure DevOps read JUnit): a passing or warned check passes (a warning is written
  to its ``system-out``), a failed check — and a ``missing`` one of severity ``fail``, which fails
  the verdict — is a ``<failure>``, a ``skipped`` check (probe not applicable) or a missing
  warn-severity check is ``<skipped>``. The layout follows the Jenkins/Ant JUnit schema
  (``testsuites`` > ``testsuite`` > ``testcase``).

Only the run directory and :class:`audit.policy.Verdict` are read: nothing here imports the
report or dashboard packages.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET  # nosec B405  # builds XML only; nothing here parses XML
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from audit.rundir_view import RunView
from audit.store import RunDir, now_iso
from audit.views import finite, fmt_interval, fmt_num

_RANK = {"fail": 4, "missing": 3, "warn": 2, "pass": 1, "skipped": 0}  # nosec B105  # statuses, not passwords


def value_ci(value: Any, lo: Any, hi: Any, unit: str = "") -> str:
    """``0.881 nats [0.694, 1.06]`` (the interval only when both bounds are finite)."""
    text = fmt_num(finite(value), unit)
    if finite(lo) is not None and finite(hi) is not None:
        text += f" {fmt_interval(lo, hi)}"
    return text


def text_table(header: Sequence[str], rows: Sequence[Sequence[Any]], *, rule: bool = True, indent: str = "") -> str:
    """Columns as wide as their longest entry, two spaces apart (a ``---`` rule under the header
    when ``rule``), so a long entry never runs into the next column."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = indent + "  ".join(f"{{:{w}}}" for w in widths)
    out = [line.format(*header), *([line.format(*("-" * w for w in widths))] if rule else [])]
    out += [line.format(*map(str, r)) for r in rows]
    return "\n".join(s.rstrip() for s in out)


def model_table(rd: RunDir, verdict: Any = None) -> str:
    """The end-of-run table for one model's run directory, one row per probe: probe, headline
    metric, value [CI], ideal, policy status."""
    checks: dict[tuple[str, str], str] = {}
    for c in getattr(verdict, "checks", None) or []:
        key = (c.probe, c.metric)
        if _RANK.get(c.status, 0) >= _RANK.get(checks.get(key, "skipped"), 0):
            checks[key] = c.status
    view = RunView(rd)
    rows = []
    for rec in map(view.probe, view.probe_names()):
        if not rec.complete:
            rows.append([rec.name, "—", rec.status, "—", "fail" if rec.status == "failed" else "—"])
            continue
        primary = rec.primary_metric
        if primary is None:
            rows.append([rec.name, "—", "no metrics", "—", "—"])
            continue
        name, m = rec.name, rec.metrics[primary]
        judged = [s for (p, met), s in checks.items() if p == name and (met == primary or
                  {met, primary} == {"metric", "pct_stereotype"})]
        probe_checks = [s for (p, _), s in checks.items() if p == name]
        status = max(judged or probe_checks or ["—"], key=lambda s: _RANK.get(s, -1))
        rows.append([name, primary, value_ci(m.value, m.ci_low, m.ci_high, str(m.unit or "")), fmt_num(m.ideal), status])
    if not rows:
        return "  (no probe ran)"
    return text_table(["probe", "headline metric", "value [95% CI]", "ideal", "policy"], rows)


def _check_text(c: Any) -> str:
    """``check: value 62 % [58, 66], threshold within 40..60 (judged on the CI, severity fail)``;
    a missing or skipped check says why instead of a value."""
    judged = "95% CI" if c.on == "ci" else "value"
    if c.status in ("missing", "skipped"):
        return f"{c.check}: {c.status} — {c.reason}"
    return (f"{c.check}: value {value_ci(c.value, c.ci_low, c.ci_high, c.unit)}, threshold {c.threshold_text()} "
            f"(judged on the {judged}, severity {c.severity})")


def failed_check_lines(verdict: Any) -> list[str]:
    """``FAIL crows_pairs.pct_stereotype within 40..60 [...]: value 62 % [58, 66], threshold …``
    for every check that did not pass (skipped checks are left out)."""
    return [f"{c.status.upper():7s} {_check_text(c)}" for c in verdict.checks if c.status in ("fail", "missing", "warn")]


def _escape_data(s: str) -> str:
    """Workflow-command data escaping (GitHub Actions toolkit ``escapeData``)."""
    return s.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_prop(s: str) -> str:
    return _escape_data(s).replace(":", "%3A").replace(",", "%2C")


def github_annotations(verdict: Any, run: str) -> list[str]:
    """``::error title=…::…`` for failed (and missing fail-severity) checks, ``::warning …`` for
    warned ones."""
    out = []
    for c in verdict.checks:
        if c.status == "fail" or (c.status == "missing" and c.severity == "fail"):
            kind = "error"
        elif c.status in ("warn", "missing"):
            kind = "warning"
        else:
            continue
        title = _escape_prop(f"taudit {run}: {c.check}")
        out.append(f"::{kind} title={title}::{_escape_data(_check_text(c))}")
    return out


def junit_xml(results: Iterable[tuple[str, Mapping[str, str], Any]]) -> str:
    """JUnit XML for ``(suite name, properties, verdict)`` triples, one suite per model run."""
    root = ET.Element("testsuites", name="transformer-audit policy")
    totals = {"tests": 0, "failures": 0, "skipped": 0}
    for suite_name, props, verdict in results:
        checks = list(verdict.checks)
        suite = ET.SubElement(root, "testsuite", name=suite_name, timestamp=now_iso(), errors="0", time="0")
        if props:
            pe = ET.SubElement(suite, "properties")
            for k, v in props.items():
                ET.SubElement(pe, "property", name=str(k), value=str(v))
        counts = {"tests": len(checks), "failures": 0, "skipped": 0}
        for c in checks:
            case = ET.SubElement(suite, "testcase", classname=f"taudit.{suite_name}.{c.probe}", name=c.check, time="0")
            text = _check_text(c)
            if c.status == "fail" or (c.status == "missing" and c.severity == "fail"):
                el = ET.SubElement(case, "failure", message=text, type=f"policy.{c.status}")
                el.text = text
                counts["failures"] += 1
            elif c.status in ("skipped", "missing"):
                ET.SubElement(case, "skipped", message=text)
                counts["skipped"] += 1
            else:
                ET.SubElement(case, "system-out").text = f"{'WARNING' if c.status == 'warn' else 'PASS'} {text}"
        for key, n in counts.items():
            suite.set(key, str(n))
            totals[key] += n
    for key, n in totals.items():
        root.set(key, str(n))
    root.set("errors", "0")
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
