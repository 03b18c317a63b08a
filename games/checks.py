"""Argument checks that fail with a clear ``ValueError`` naming the argument."""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    """Raise a clear ``ValueError`` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")


def check_int(name: str, value: Any, minimum: int, maximum: int | None = None) -> int:
    """``value`` as an int in ``[minimum, maximum]``; else a ``ValueError`` naming ``name``."""
    bounds = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
    if (isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum
            or (maximum is not None and value > maximum)):
        raise ValueError(f"{name} must be an integer {bounds}, got {value!r}")
    return int(value)


def check_number(name: str, value: Any, minimum: float | None = None) -> None:
    """Raise a clear ``ValueError`` unless ``value`` is a finite number (>= ``minimum``)."""
    if (isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value)
            or (minimum is not None and value < minimum)):
        bound = "" if minimum is None else f" >= {minimum}"
        raise ValueError(f"{name} must be a finite number{bound}, got {value!r}")

