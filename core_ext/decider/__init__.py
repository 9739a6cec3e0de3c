"""One Select in one C call: assignment hashing and the Decider.

``Decider`` ties an experiment's kernels (:mod:`banditd.core_ext.policies`) to the
signed id and the log row (:mod:`banditd.core_ext.codecs`), ``candidate_indices``
turns a request's candidate arm names into the indices it takes; ``hash64`` and
``assignment_bucket`` are the assignment hash it uses, exposed for tests and tools.
"""

from __future__ import annotations

from banditd.core_ext import load_compiled

_hashing, _decide = (
    load_compiled(f"banditd.core_ext.decider.{name}") for name in ("_hashing", "_decide")
)

Decider = _decide.Decider
candidate_indices = _decide.candidate_indices
hash64 = _hashing.hash64
assignment_bucket = _hashing.assignment_bucket
BUCKETS: int = _hashing.BUCKETS

__all__ = ["BUCKETS", "Decider", "assignment_bucket", "candidate_indices", "hash64"]
