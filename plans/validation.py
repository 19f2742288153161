"""Argument checks run before a plan moves anything.

Each check raises ``PlanArgumentError`` (a ``ValueError``) with a message that
names the argument, the value and the allowed range.
"""

from __future__ import annotations

import math
from collections.abc import Iterable


class PlanArgumentError(ValueError):
    """A plan argument is out of range; nothing has moved."""


def positive(name: str, value: float) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise PlanArgumentError(f"{name} must be a number, not {value!r}") from None
    if not math.isfinite(v) or v <= 0:
        raise PlanArgumentError(f"{name} must be > 0, not {value!r}")
    return v


def positive_int(name: str, value: int, *, minimum: int = 1) -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int,))
        and not (isinstance(value, float) and value.is_integer())
    ):
        raise PlanArgumentError(f"{name} must be an integer >= {minimum}, not {value!r}")
    v = int(value)
    if v < minimum:
        raise PlanArgumentError(f"{name} must be an integer >= {minimum}, not {value!r}")
    return v


def within(name: str, value: float, low: float, high: float, unit: str = "") -> float:
    v = float(value)
    if not (math.isfinite(v) and low <= v <= high):
        u = f" {unit}" if unit else ""
        raise PlanArgumentError(f"{name} = {value!r}{u} is outside [{low}, {high}]{u}")
    return v


def motor_positions(motor, positions: Iterable[float], name: str | None = None) -> None:
    """All positions inside the motor's soft limits (when it has any)."""
    low, high = motor.limits
    if low == high == 0:
        return
    label = name or motor.name
    unit = getattr(motor, "egu", "")
    for p in positions:
        if not low <= p <= high:
            raise PlanArgumentError(
                f"{label} position {p:g} {unit} is outside the soft limits "
                f"[{low:g}, {high:g}] {unit}"
            )


def signal_range(signal, value: float, name: str, unit: str = "") -> float:
    """``value`` inside the control limits the IOC publishes for ``signal``."""
    low, high = signal.limits
    if low == high == 0:
        return float(value)
    return within(name, value, low, high, unit)
