"""The probe interface every bias probe implements, and the probe registry.

A probe is a class with a ``name``, the model ``kinds`` it can run on, self-describing
``metrics`` and a ``run`` method. Register it with ``@register_probe("name")``; the runner and
``probes.run_probe`` find it by name.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from audit.registry import Registry
from audit.results import MetricInfo, ProbeResult

if TYPE_CHECKING:
    from audit.models import ModelHandle


class ProbeError(ValueError):
    """Bad input to a probe: the message names the file, row or field."""


class Probe:
    """Base class for bias probes.

    Subclasses set ``name``, ``kinds``, ``metrics`` and implement :meth:`run`. ``run`` returns a
    :class:`~audit.results.ProbeResult` and never prints; long loops show a progress bar when
    ``progress`` is true.
    """

    name: ClassVar[str] = ""
    kinds: ClassVar[tuple[str, ...]] = ()
    metrics: ClassVar[dict[str, MetricInfo]] = {}
    #: the metric reports and policies look at first
    primary_metric: ClassVar[str] = ""
    #: whether the model must be loaded with eager attention (attention weights)
    needs_attentions: ClassVar[bool] = False
    #: a one-line description for ``taudit list``
    description: ClassVar[str] = ""

    def check_kind(self, handle: ModelHandle) -> None:
        if handle.kind not in self.kinds:
            raise ProbeError(
                f"probe {self.name!r} cannot run on a {handle.kind} model ({handle.name}); "
                f"it supports: {', '.join(self.kinds)}"
            )

    def data_files(self, data: str | Path | None) -> list[Path]:
        """Files whose identity (sha256) goes into the manifest."""
        if data is None:
            return []
        p = Path(data)
        if p.is_dir():
            return sorted(q for q in p.rglob("*") if q.is_file())
        return [p]

    def run(
        self,
        handle: ModelHandle,
        data: str | Path | None = None,
        *,
        seed: int = 0,
        progress: bool = True,
        **options: Any,
    ) -> ProbeResult:
        raise NotImplementedError


PROBES: Registry[type[Probe]] = Registry("probe", entry_point_group="transformer_audit.probes")


def register_probe(name: str):  # type: ignore[no-untyped-def]
    """Class decorator: ``@register_probe("crows_pairs")``."""

    def deco(cls: type[Probe]) -> type[Probe]:
        cls.name = name
        return PROBES.register(name)(cls)

    return deco


def get_probe(name: str) -> Probe:
    return PROBES.get(name)()


def list_probes() -> list[str]:
    return PROBES.names()
