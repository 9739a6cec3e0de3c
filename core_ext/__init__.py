"""banditd's compiled core, in three rooms.

- :mod:`banditd.core_ext.policies`: the bandit kernels (Thompson sampling, UCB1,
  ε-greedy, control) over caller-owned per-arm statistics, their RNG, and the policy
  table (names, wire codes, validated parameters). Replay and off-policy evaluation
  use this room alone.
- :mod:`banditd.core_ext.codecs`: the server's byte formats: the hand-written
  protobuf codec of Select/Reward, the binary COPY encoder of the decision log, and
  the signed decision ids.
- :mod:`banditd.core_ext.decider`: one Select in one C call (assignment hashing, the
  policy's choice, the signed id, the log row), joining the other two rooms.

Importing this package loads nothing compiled; each room loads its own extensions on
import, so an offline tool never pays for the server's codecs. There is no
pure-Python fallback: a missing extension is a build problem and fails loudly with the
command that fixes it.
"""

from __future__ import annotations

import importlib
from types import ModuleType


def load_compiled(module: str) -> ModuleType:
    """Import the compiled extension ``module`` (a full dotted name); ImportError naming
    the build command when it was never built."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"banditd's compiled kernels are missing ({module}); "
            "build them with `pip install -e .` (or `make test`)"
        ) from exc
