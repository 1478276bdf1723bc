"""``taudit report`` and the post-run hook that writes reports at the end of ``taudit run``.

Registered in ``pyproject.toml``::

    [project.entry-points."transformer_audit.commands"]   report = "reports.cli:register"
    [project.entry-points."transformer_audit.post_run"]   reports = "reports.cli:post_run"
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from audit.policy import (
    PolicyError,
    evaluate_policy,
    is_recommended,
    known_metrics,
    load_policy,
    recommended_policy,
    validate_policy,
    write_verdict,
)
from audit.rundir_view import RunView
from audit.store import RunDir
from reports.builder import FORMATS, build_reports, parse_formats
from reports.content import ReportError
from reports.html import pdf_available

logger = logging.getLogger(__name__)

EXIT_OK, EXIT_POLICY, EXIT_ERROR = 0, 1, 2
DEFAULT_POST_RUN_FORMATS = ("html", "md", "json")


def _apply_policy(rd: RunDir, spec: str, out: Path) -> Any:
    """Evaluate a policy (a file, or ``recommended``) against an existing run and write its
    verdict.json into ``out`` (the run directory only when no --out was given)."""
    view = RunView(rd)
    run_names = {n: str(e.get("probe") or n) for n, e in view.manifest().probes.items()}
    policy = recommended_policy(run_names) if is_recommended(spec) else load_policy(spec)
    known = known_metrics(run_names)
    for rec in map(view.probe, view.probe_names()):  # probes whose package is not installed here still count
        known.setdefault(rec.name, set()).update(rec.metrics)
    validate_policy(policy, known)
    verdict = evaluate_policy(policy, rd)
    out.mkdir(parents=True, exist_ok=True)
    write_verdict(out, verdict)
    return verdict


def _cmd_report(args: argparse.Namespace) -> int:
    rd = RunDir(args.run_dir)
    if not rd.exists():
        print(f"error: {rd.path} is not a run directory (no manifest.json); "
              "give the folder taudit run wrote, e.g. runs/<run-id>", file=sys.stderr)
        return EXIT_ERROR
    try:
        # default: every format this installation can write (PDF only when WeasyPrint imports)
        formats = parse_formats(args.formats) if args.formats else [f for f in FORMATS if f != "pdf" or pdf_available()]
        if "pdf" in formats and not pdf_available():
            raise ReportError("PDF output needs WeasyPrint: pip install 'transformer-audit[pdf]'")
        verdict = None
        out = Path(args.out) if args.out else rd.path
        if args.policy:
            try:
                verdict = _apply_policy(rd, args.policy, out)
            except PolicyError as exc:
                raise ReportError(str(exc)) from None
        written = build_reports(rd, formats, out_dir=out, verdict_file=out / "verdict.json")
    except ReportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    for fmt, path in written.items():
        print(f"{fmt:5s} {path}")
    if verdict is not None:
        print(f"verdict: {verdict.status}")
        if verdict.failed:
            return EXIT_POLICY
    return EXIT_OK


def register(subparsers: Any) -> None:
    """Add ``taudit report RUN_DIR [--format html,pdf,md,json] [--policy FILE] [--out DIR]``."""
    p = subparsers.add_parser(
        "report", help="build HTML/PDF/Markdown/JSON reports from a run directory",
        description="Build reports from a run directory; runs no model. Without --out the reports (and, "
                    "with --policy, verdict.json) are written into RUN_DIR; with --out only into --out, "
                    "and RUN_DIR is only read. Exit codes: 0 ok; 1 --policy given and a fail-severity "
                    "check failed; 2 error.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by taudit run")
    p.add_argument("--format", dest="formats",
                   help=f"comma-separated formats from {','.join(FORMATS)} (default: all available)")
    p.add_argument("--policy", help="evaluate this policy YAML (or 'recommended', the built-in profile) on the "
                                    "run first and write verdict.json beside the reports")
    p.add_argument("--out", help="write the reports (and verdict.json) here instead of into RUN_DIR; "
                                 "RUN_DIR is then left untouched")
    p.set_defaults(func=_cmd_report)


def post_run(run_dir: RunDir, config: Mapping[str, Any]) -> None:
    """Runner hook: write the formats in ``config["report"]["formats"]`` into the run directory.

    Without that key: html, md, json, plus pdf when WeasyPrint imports. A listed pdf is skipped
    with a warning when WeasyPrint is missing, so a finished audit is not marked failed for it.
    Other errors propagate; the runner records them in the run's errors.
    """
    rep = config.get("report") or {}
    if rep.get("enabled") is False:
        return
    formats = rep.get("formats")
    if formats is None:
        formats = [*DEFAULT_POST_RUN_FORMATS, *(["pdf"] if pdf_available() else [])]
    wanted = parse_formats(formats)
    if "pdf" in wanted and not pdf_available():
        logger.warning("report format pdf skipped: WeasyPrint is not installed (pip install 'transformer-audit[pdf]')")
        wanted.remove("pdf")
    if wanted:
        for fmt, path in build_reports(run_dir, wanted).items():
            logger.info("report %s: %s", fmt, path)
