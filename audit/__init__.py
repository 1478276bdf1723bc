"""transformer-audit engine: model loading, batched scoring, statistics, run directories."""

from __future__ import annotations

from audit.models import ModelHandle, load_model
from audit.results import MetricInfo, MetricValue, ProbeResult

__version__ = "0.1.0"
__all__ = ["ModelHandle", "load_model", "MetricInfo", "MetricValue", "ProbeResult", "__version__"]
