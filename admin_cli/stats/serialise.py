"""JSON helpers shared by the result objects' ``to_dict()``.

Strict JSON has no NaN or infinity, and ``banditctl --json`` output must load in any
JSON parser, so a non-finite float becomes ``None`` (``null``).
"""

from __future__ import annotations

import math


def json_float(value: float | None) -> float | None:
    """``float(value)`` when finite, else ``None`` (undefined / unbounded)."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def json_interval(lower: float, upper: float) -> list[float | None]:
    """``[lower, upper]`` with an unbounded or undefined end as ``None``."""
    return [json_float(lower), json_float(upper)]
