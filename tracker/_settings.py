"""Typed, frozen settings objects that reject unknown options, and their validators.

Plain dataclasses (the tracker depends on numpy, scipy, pandas and trackpy only).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from numbers import Integral, Real


@dataclass(frozen=True)
class Settings:
    """Base of the tracker's settings: built from keyword options, JSON-able."""

    @classmethod
    def option_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def from_options(cls, owner: str, options: dict):
        """``cls(**options)``, with a TypeError that lists the valid options for an unknown one."""
        unknown = sorted(set(options) - set(cls.option_names()))
        if unknown:
            raise TypeError(
                f"unknown option(s) {', '.join(map(repr, unknown))} for {owner}; "
                f"valid options: {', '.join(cls.option_names())}"
            )
        return cls(**options)

    def to_dict(self) -> dict:
        """The settings as a JSON-able dict (for output metadata)."""
        return asdict(self)


def check_real(name: str, value, *, low: float | None = None, high: float | None = None, low_open: bool = False, allow_none: bool = False):
    """``value`` as a float within ``[low, high]`` (``(low, high]`` with ``low_open``), or a TypeError/ValueError naming ``name``."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if low is not None and (value < low or (low_open and value == low)):
        raise ValueError(f"{name} must be {'>' if low_open else '>='} {low:g}, got {value:g}")
    if high is not None and value > high:
        raise ValueError(f"{name} must be <= {high:g}, got {value:g}")
    return value


def check_int(name: str, value, *, low: int | None = None, high: int | None = None) -> int:
    """``value`` as an int within ``[low, high]``, or a TypeError/ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    value = int(value)
    if low is not None and value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    if high is not None and value > high:
        raise ValueError(f"{name} must be <= {high}, got {value}")
    return value


def check_choice(name: str, value, choices) -> str:
    """``value`` if it is one of ``choices``, or a ValueError listing them."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")
    return value


def set_fields(settings: Settings, **values) -> None:
    """Store normalised values on a frozen dataclass from its ``__post_init__``."""
    for key, value in values.items():
        object.__setattr__(settings, key, value)
