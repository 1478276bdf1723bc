"""Typed options: one contract between a config file, the CLI, Python callers and a component.

Every probe and every explainer declares its options as a pydantic model (lm-evaluation-harness'
``TaskConfig`` and inseq's argument dataclasses are the models for this): types, defaults,
ranges, ``Literal`` choices and required fields, with ``extra="forbid"`` so that a misspelt
option is an error. :class:`audit.config.AuditConfig` validates ``probes[i].options`` and the
options of every ``explain:`` step against these models, so ``taudit validate`` and ``taudit run``
name the field (``probes.0.options.max_items: Input should be a valid integer``) before any model
loads; ``probe.run(handle, data, **options)`` from Python validates through the same model.

Options that several components repeat live in the mixins below, with one name each.
How a component declares and reads its options: docs/architecture.md, "Plug-in contracts".
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    PositiveInt,
    ValidationError,
    model_validator,
)

from audit.errors import OptionsError, brief


class Options(BaseModel):
    """Base of every option model: unknown options are errors."""

    model_config = ConfigDict(extra="forbid")

    @classmethod
    def names(cls) -> list[str]:
        """The option names (``data`` is a probe's argument, not an option)."""
        return sorted(n for n in cls.model_fields if n != "data")

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """The default of every option that has one (for reading a result without a run)."""
        return {n: f.get_default(call_default_factory=True) for n, f in cls.model_fields.items()
                if n != "data" and not f.is_required()}

    def values(self) -> dict[str, Any]:
        """Every option with its value or default (without ``data``): what a component reads."""
        return self.model_dump(exclude={"data"})

    def given(self) -> dict[str, Any]:
        """Only the options that were set, as validated: what manifests and checkpoints record."""
        return self.model_dump(exclude={"data"}, exclude_unset=True)


def problems(exc: ValidationError, model: type[BaseModel], owner: str) -> list[tuple[str, str]]:
    """``(field path, message)`` of each error in ``exc``. Unknown options are gathered into one
    message that lists the allowed ones; a missing required field says what to give (its
    description); ``owner`` names the probe or method in those messages."""
    out: list[tuple[str, str]] = []
    unknown: list[str] = []
    for e in exc.errors():
        loc = ".".join(str(x) for x in e["loc"])
        if e["type"] == "extra_forbidden" and len(e["loc"]) == 1:
            unknown.append(loc)
            continue
        msg = e["msg"].removeprefix("Value error, ")
        field = model.model_fields.get(str(e["loc"][0])) if e["loc"] else None
        if e["type"] == "missing":
            if field is not None and field.description:
                msg = f"{owner} needs {loc}= {field.description}"
        else:
            msg += f" (got {brief(e['input'])})"
        out.append((loc, msg))
    if unknown:
        allowed = model.names() if issubclass(model, Options) else sorted(model.model_fields)
        out.insert(0, ("", f"unknown option(s) {brief(sorted(unknown), 200)} for {owner}; allowed: {allowed}"))
    return out


OptionsT = TypeVar("OptionsT", bound=Options)


def validate_options(model: type[OptionsT], options: Mapping[str, Any], owner: str,
                     error: type[OptionsError] = OptionsError) -> OptionsT:
    """``options`` validated by ``model``; ``error`` naming each field that does not fit."""
    try:
        return model.model_validate(dict(options))
    except ValidationError as exc:
        raise error(owner, problems(exc, model, owner)) from None


# --------------------------------------------------------------------------------------------
# probes
# --------------------------------------------------------------------------------------------


class ProbeOptions(Options):
    """Options every probe accepts. ``data`` is the probe's ``data`` argument (a path), checked
    here so that a probe that needs data says so before any model loads; a probe that requires it
    redeclares it without a default and describes what to give."""

    data: str | Path | None = None


class BatchingOptions(ProbeOptions):
    max_batch_tokens: PositiveInt | None = Field(
        default=None, description="padded tokens per forward pass (rows × length); None: by device")


class MaxItemsOptions(ProbeOptions):
    max_items: PositiveInt | None = Field(default=None, description="score at most this many items")


class GroupedDataOptions(MaxItemsOptions):
    """A table of texts with a protected attribute (classifier_fairness, representation)."""

    text_column: str = "text"
    attribute_column: str = "gender"
    breakdown_by: list[str] | None = Field(
        default=None, description="extra columns to break the metrics down by (built-in data: its defaults)")


class GenerationOptions(ProbeOptions):
    """Generating probes: the same names in bbq, bold and counterfactual (see
    :class:`audit.generation.GenerationSettings`)."""

    max_new_tokens: PositiveInt = 20
    batch_size: PositiveInt = Field(default=16, description="prompts per generate call")


class SamplingOptions(GenerationOptions):
    """Sampled generation (a probe that can also decode greedily adds ``do_sample``)."""

    temperature: NonNegativeFloat = 1.0
    top_p: float = Field(default=1.0, gt=0, le=1)

    @model_validator(mode="after")
    def _positive_when_sampling(self) -> SamplingOptions:
        if getattr(self, "do_sample", True) and self.temperature <= 0:
            raise ValueError(f"temperature must be > 0 when sampling, got {self.temperature}")
        return self


def comma_list(v: Any) -> Any:
    """``"a, b"`` → ``["a", "b"]`` (options that take a list also take one comma-separated string)."""
    return [s.strip() for s in v.split(",")] if isinstance(v, str) else v
