"""transformer-audit engine: model loading, batched scoring, statistics, run directories.

``load_model`` and ``ModelHandle`` are imported lazily so that readers of run directories
(reports, dashboard) can ``import audit.store`` without loading torch.
"""

from __future__ import annotations

from typing import Any

from audit.results import MetricInfo, MetricValue, ProbeResult

__version__ = "0.1.0"
__all__ = ["ModelHandle", "load_model", "MetricInfo", "MetricValue", "ProbeResult", "__version__"]


def __getattr__(name: str) -> Any:
    if name in ("load_model", "ModelHandle"):
        from audit import models

        return getattr(models, name)
    raise AttributeError(f"module 'audit' has no attribute {name!r}")
