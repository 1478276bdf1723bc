"""Errors raised for bad explainer input; each message names the method, option, example or field."""

from __future__ import annotations

from audit.errors import OptionsError
from audit.scoring import InputTooLongError


class ExplainError(ValueError):
    """Bad input to an explainer."""


class UnknownMethodError(ExplainError):
    """A method name no explainer is registered under."""


class MethodNotValidError(ExplainError):
    """A method that cannot explain this model kind or target mode."""


class TargetError(ExplainError):
    """A target that does not fit the model or the input (e.g. out of range)."""


class OptionError(ExplainError):
    """An unknown or invalid explainer option."""


class ExplainOptionsError(OptionsError, OptionError):
    """A method's options do not fit its options model; ``problems`` names each field."""


__all__ = ["ExplainError", "ExplainOptionsError", "InputTooLongError", "MethodNotValidError", "OptionError",
           "TargetError", "UnknownMethodError"]
