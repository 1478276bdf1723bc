"""The project documents itself (issue 14, item 8): the metric tables of docs/metrics.md are the
current metric declarations, and no code or generated output cites a file that is not in the
repository."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _generator():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("metrics_doc", ROOT / "scripts" / "metrics_doc.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_metrics_doc_is_current() -> None:
    gen = _generator()
    text = (ROOT / "docs" / "metrics.md").read_text(encoding="utf-8")
    assert gen.render(text) == text, "docs/metrics.md is out of date: run python scripts/metrics_doc.py"


def test_every_registered_metric_is_documented() -> None:
    import probes  # noqa: F401
    from audit.metrics import METRICS
    from audit.probe import PROBES

    text = (ROOT / "docs" / "metrics.md").read_text(encoding="utf-8")
    names = {m for p in PROBES.names() for m in PROBES.get(p).metrics} | set(METRICS)
    assert {n for n in names if f"| `{n}` |" not in text} == set()
    assert all(f"| `{p}` |" in text or f"`{p}` —" in text for p in PROBES.names())


def test_no_citation_of_a_missing_file() -> None:
    """No source file, template or packaged data cites DESIGN.md (a file the repository does not
    have), and every ``docs/*.md`` it names exists."""
    missing: dict[str, list[str]] = {}
    for f in [*ROOT.glob("audit/**/*"), *ROOT.glob("probes/*.py"), *ROOT.glob("reports/**/*"),
              *ROOT.glob("dashboard/**/*"), *ROOT.glob("scripts/*"), ROOT / "README.md"]:
        if f.is_file() and f.suffix in {".py", ".html", ".j2", ".md", ".json", ".yaml", ".sh"}:
            text = f.read_text(encoding="utf-8", errors="replace")
            for name in ["DESIGN.md", *re.findall(r"\bdocs/[\w-]+\.md\b", text)]:
                if name in text and not (ROOT / name).is_file():
                    missing.setdefault(name, []).append(str(f.relative_to(ROOT)))
    assert missing == {}
