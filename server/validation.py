"""Input checks shared by the RPC handlers: each failure is a message a caller can act on."""

from __future__ import annotations

import math

MAX_EXPERIMENT_ID = 128
MAX_USER_ID = 256
MAX_CANDIDATES = 65_535
MAX_CONTEXT_ENTRIES = 64
MAX_CONTEXT_BYTES = 4_096
MAX_BATCH = 1_000


class InvalidInput(ValueError):
    """The request is malformed; the message says which field and why."""


def check_id(value: str, field: str, max_length: int) -> None:
    if not value:
        raise InvalidInput(f"{field} is required")
    if len(value) > max_length:
        raise InvalidInput(f"{field} is {len(value)} chars; the limit is {max_length}")
    if not value.isprintable():
        raise InvalidInput(f"{field} contains control characters")


def check_context(context) -> dict[str, str] | None:
    """The request context as a dict (None when empty), within size limits."""
    if not context:
        return None
    if len(context) > MAX_CONTEXT_ENTRIES:
        raise InvalidInput(
            f"context has {len(context)} entries; the limit is {MAX_CONTEXT_ENTRIES}"
        )
    as_dict = dict(context)
    size = sum(len(k) + len(v) for k, v in as_dict.items())
    if size > MAX_CONTEXT_BYTES:
        raise InvalidInput(f"context is {size} chars; the limit is {MAX_CONTEXT_BYTES}")
    for key in as_dict:
        if "\x00" in key or "\x00" in as_dict[key]:
            raise InvalidInput("context keys and values must not contain NUL characters")
    return as_dict


def check_reward_value(value: float, low: float, high: float) -> None:
    if not math.isfinite(value):
        raise InvalidInput(f"reward value must be a finite number, got {value}")
    if not low <= value <= high:
        raise InvalidInput(
            f"reward value {value} is outside this experiment's range [{low}, {high}]"
        )
