"""Self-contained HTML report (Jinja2, autoescaped) and the PDF made from it (WeasyPrint).

The HTML references nothing outside itself: CSS is inlined, plots are ``data:`` PNGs, there are
no scripts and no web fonts. The PDF renderer only fetches ``data:`` URIs, so a hostile string
in a dataset can neither run nor make WeasyPrint reach the network or the file system.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader

from audit import views
from reports import plots
from reports.content import ReportError, one_line
from reports.findings import slug

logger = logging.getLogger(__name__)

MAX_BREAKDOWN_PLOTS = 3


def environment() -> Environment:
    """The report templates, then the fragments shared with the notebook views (audit/templates)."""
    env = views.environment(PackageLoader("reports", "templates"))
    env.filters.update(slug=slug, css=lambda s: slug(s).lower(), short=lambda x, n=160: views.clip(str(one_line(x)), n))
    return env


def build_plots(doc: Mapping[str, Any]) -> dict[str, Any]:
    """All figures of the HTML report, as ``data:`` URIs keyed for the template."""
    out: dict[str, Any] = {"metrics": {}, "breakdowns": {}}
    for p in doc["probes"]:
        out["metrics"][p["name"]] = plots.metric_plot(p["metrics"])
        by_metric = {m["name"]: m for m in p["metrics"]}
        combos: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for r in p["breakdown"]:
            combos.setdefault((r["group_by"], r["metric"]), []).append(r)
        order = sorted(combos, key=lambda k: (k[1] != p["primary_metric"], k[1] not in by_metric))
        uris = {(by, m): plots.breakdown_plot(combos[by, m], by_metric.get(m) or {"name": m, "unit": "", "ideal": None})
                for by, m in order[:MAX_BREAKDOWN_PLOTS]}
        out["breakdowns"][p["name"]] = [{"uri": uri, "title": f"{m} by {by} with 95% CIs"}
                                        for (by, m), uri in uris.items() if uri]
    out["mechanism"] = {m["name"]: plots.matrix_plot(m["heat"]) for m in doc.get("mechanism") or [] if m["heat"]}
    out["matrices"] = {f"{i}:{e['name']}": plots.matrix_plot(x)
                       for e in doc["explainers"] for i, x in enumerate(e["examples"]) if x["kind"] == "matrix"}
    return out


def render_html(doc: Mapping[str, Any]) -> str:
    """The report as one self-contained HTML page."""
    return environment().get_template("report.html.j2").render(doc=doc, plots=build_plots(doc))


def _fetcher() -> Any:
    """A WeasyPrint URL fetcher that only resolves ``data:`` URIs."""
    import weasyprint

    if hasattr(weasyprint, "URLFetcher"):
        return weasyprint.URLFetcher(allowed_protocols=["data"])

    def fetch(url: str, *args: Any, **kwargs: Any) -> Any:  # WeasyPrint < 66
        if not url.startswith("data:"):
            raise ValueError(f"report PDF fetches data: URIs only, refused {url[:60]!r}")
        return weasyprint.default_url_fetcher(url, *args, **kwargs)

    return fetch


def pdf_available() -> bool:
    try:
        import weasyprint  # noqa: F401
    except Exception:  # ImportError, or OSError when pango is missing
        return False
    return True


def write_pdf(html: str, path: Path) -> None:
    """Render the HTML to PDF with WeasyPrint (print CSS: A4, page numbers, wrapping tables)."""
    try:
        import weasyprint
    except Exception as exc:
        raise ReportError(f"PDF output needs WeasyPrint (pip install 'transformer-audit[pdf]'): {exc}") from None
    for name in ("weasyprint", "fontTools"):
        logging.getLogger(name).setLevel(logging.ERROR)
    weasyprint.HTML(string=html, url_fetcher=_fetcher()).write_pdf(target=str(path))
