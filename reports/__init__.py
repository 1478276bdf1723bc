"""Reports built from a run directory: self-contained HTML, PDF, Markdown model card and JSON.

Reports read the run directory only (docs/architecture.md, "Reports"); they never load a model.
"""

from __future__ import annotations

from reports.builder import FILENAMES, FORMATS, build_reports, parse_formats, report_schema
from reports.content import REPORT_SCHEMA_VERSION, ReportError, collect_report

__all__ = ["FILENAMES", "FORMATS", "REPORT_SCHEMA_VERSION", "ReportError", "build_reports", "collect_report",
           "parse_formats", "report_schema"]
