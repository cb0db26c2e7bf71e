"""Field validators of the resilience toolkit's settings (``attrs`` validators).

:class:`~daemon.resilience.retry.RetryPolicy` and
:class:`~daemon.resilience.breaker.BreakerConfig` check their fields with
these, so a bad value fails when the settings are built, with the field's
name in the message.
"""

from __future__ import annotations

import math
from typing import Any

import attrs

__all__ = [
    "finite_non_negative",
    "finite_positive",
    "optional_positive_int",
    "positive_int",
    "ratio",
]


def positive_int(_: object, attribute: attrs.Attribute[int], value: int) -> None:
    if value < 1:
        raise ValueError(f"{attribute.name} must be >= 1, got {value}")


def optional_positive_int(_: object, attribute: attrs.Attribute[Any], value: int | None) -> None:
    if value is not None and value < 1:
        raise ValueError(f"{attribute.name} must be >= 1 or None, got {value}")


def finite_positive(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{attribute.name} must be finite and > 0, got {value}")


def finite_non_negative(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{attribute.name} must be finite and >= 0, got {value}")


def ratio(_: object, attribute: attrs.Attribute[Any], value: float | None) -> None:
    if value is not None and not 0 < value <= 1:
        raise ValueError(f"{attribute.name} must be in (0, 1] or None, got {value}")
