"""Write the report files of one run directory: report.html, report.pdf, model_card.md, report.json."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from importlib.resources import files
from pathlib import Path
from typing import Any

from audit.store import RunDir, atomic_write, write_json
from reports.content import ReportError, collect_report
from reports.html import render_html, write_pdf
from reports.markdown import render_model_card

logger = logging.getLogger(__name__)

FORMATS = ("html", "pdf", "md", "json")
FILENAMES = {"html": "report.html", "pdf": "report.pdf", "md": "model_card.md", "json": "report.json"}


def _text_writer(text: str) -> Callable[[Path], object]:
    return lambda t: t.write_text(text, encoding="utf-8")


def report_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) that ``report.json`` follows."""
    return json.loads(files("reports").joinpath("report.schema.json").read_text(encoding="utf-8"))


def parse_formats(formats: str | Iterable[str]) -> list[str]:
    """``"html,pdf"`` or ``["html", "pdf"]`` → validated, de-duplicated list."""
    items = formats.split(",") if isinstance(formats, str) else list(formats)
    out = []
    for f in (str(x).strip().lower() for x in items):
        if not f:
            continue
        f = {"markdown": "md", "htm": "html"}.get(f, f)
        if f not in FORMATS:
            raise ReportError(f"unknown report format {f!r}; choose from {', '.join(FORMATS)}")
        if f not in out:
            out.append(f)
    return out


def build_reports(run_dir: RunDir | str | Path, formats: str | Iterable[str] = FORMATS,
                  out_dir: str | Path | None = None, verdict_file: str | Path | None = None) -> dict[str, Path]:
    """Build the requested report formats from ``run_dir`` (read only) into ``out_dir``
    (default: the run directory). ``verdict_file``: the verdict to show (default: the run's
    ``verdict.json``). Returns ``{format: path}``. Never runs a model."""
    rd = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    wanted = parse_formats(formats)
    doc = collect_report(rd, verdict_file=verdict_file)
    out = Path(out_dir) if out_dir is not None else rd.path
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    html = render_html(doc) if {"html", "pdf"} & set(wanted) else ""
    for fmt in wanted:
        path = out / FILENAMES[fmt]
        if fmt == "html":
            atomic_write(path, _text_writer(html))
        elif fmt == "pdf":
            atomic_write(path, lambda t: write_pdf(html, t))
        elif fmt == "md":
            atomic_write(path, _text_writer(render_model_card(doc)))
        else:
            write_json(path, doc)
        logger.debug("wrote %s", path)
        written[fmt] = path
    return written
