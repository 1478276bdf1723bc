"""Bias probes, one module per probe, registered by name.

Importing this package registers every probe module in it (the runner reaches it through the
``transformer_audit.probes`` entry point, so ``audit`` never imports ``probes``).
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from audit.probe import get_probe, list_probes

if TYPE_CHECKING:
    from audit.models import ModelHandle
    from audit.results import ProbeResult

for _m in pkgutil.iter_modules(__path__):
    if not _m.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_m.name}")

DATA_DIR = Path(__file__).parent / "data"


def run_probe(
    name: str, handle: ModelHandle, data: str | Path | None = None, **options: Any
) -> ProbeResult:
    """Run a registered probe: ``run_probe("crows_pairs", handle, data="crows.csv")``."""
    return get_probe(name).run(handle, data, **options)


__all__ = ["run_probe", "list_probes", "get_probe", "DATA_DIR"]
