# cython: language_level=3
"""One decision in one C call: assignment, the policy kernel, the signed decision id.

``Decider.decide(user_id, now, candidates, started, context)`` is the server's Select
after validation.
Assignment is ``banditd.server.assignment``'s scheme: ``h = XXH64(utf8(salt) | 0x1F |
utf8(user_id))``; the user is inside the experiment iff ``h mod B < traffic_threshold``
and then served by the policy in slot ``policy_table[(h div B) mod B]`` (B = 10,000
buckets). Outside the experiment's serving period, or outside its traffic, the default
policy serves (slot -1). The slot's kernel chooses the arm; ``DecisionSigner`` signs
the id; the decision's ``decisions`` row goes to the server's ``DecisionRows``.

Why in C: the same steps in Python cost several times more inside the loaded server,
where every Select meets cold caches between gRPC's own work, and were most of what
banditd added to an empty gRPC handler (benchmarks/RESULTS.md).
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.dict cimport PyDict_GetItem
from cpython.object cimport PyObject
from cpython.unicode cimport PyUnicode_AsUTF8AndSize
from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free
from libc.string cimport memcpy

cimport numpy as cnp

from banditd.core_ext.codecs._decision_rows cimport DecisionRows
from banditd.core_ext.decider._hashing cimport xxh64
from banditd.core_ext.codecs._signing cimport DecisionSigner

from time import perf_counter

cnp.import_array()

cdef uint64_t _BUCKETS = 10000
cdef int _MAX_SLOTS = 8
cdef Py_ssize_t _STACK = 256    # prefix + user_id up to this size hash from the stack
# Up to this many candidates duplicates are found by comparing every pair (at most 120
# comparisons), beyond by marking arms in a zeroed byte map of all K.
cdef Py_ssize_t _PAIRWISE_MAX = 16


def candidate_indices(dict arm_index not None, names not None):
    """The arm indices of ``names`` (a list or tuple of arm names, or any sequence), as
    a new intp array in their order, for ``Decider.decide``'s ``candidates``;
    ``arm_index`` maps every arm's name to its index 0..K-1. Raises KeyError(name) for
    the first name that is not an arm and ValueError(name) for the first arm named
    twice.

    Why in C: mapping ten names through ``np.fromiter`` over the dict's bound lookup
    cost more than the subset decision it feeds (benchmarks/RESULTS.md)."""
    cdef object seq = names if type(names) is list or type(names) is tuple else tuple(names)
    cdef Py_ssize_t n = len(seq), k = len(arm_index), i, j, arm
    cdef cnp.npy_intp dims[1]
    dims[0] = n
    cdef cnp.ndarray out = cnp.PyArray_EMPTY(1, dims, cnp.NPY_INTP, 0)
    cdef Py_ssize_t* index = <Py_ssize_t*> cnp.PyArray_DATA(out)
    cdef PyObject* found
    cdef unsigned char* seen
    for i in range(n):
        name = seq[i]
        found = PyDict_GetItem(arm_index, name)
        if found == NULL:
            raise KeyError(name)
        index[i] = <object> found
    if n <= _PAIRWISE_MAX:
        for i in range(1, n):
            for j in range(i):
                if index[i] == index[j]:
                    raise ValueError(seq[i])
        return out
    seen = <unsigned char*> calloc(k, 1)
    if seen == NULL:
        raise MemoryError()
    try:
        for i in range(n):
            arm = index[i]
            if not 0 <= arm < k:    # the map's values are 0..K-1: memory safety, not input
                raise IndexError(f"arm_index maps {seq[i]!r} to {arm}, outside 0..{k - 1}")
            if seen[arm]:
                raise ValueError(seq[i])
            seen[arm] = 1
    finally:
        free(seen)
    return out


cdef class Decider:
    """Decisions of one experiment.

    ``slots``: per policy under test, ``(kernel, code, served_by)``; ``default``: the
    default policy's ``(kernel, code)``. ``policy_table`` holds, per policy bucket, a
    slot index (one byte each, 10,000 bytes). Users outside the traffic get
    ``outside`` as their served_by; everyone gets ``not_serving`` before
    ``serving_from`` and from ``serving_until`` on (epoch seconds).

    Each decision is logged to ``rows`` (None: not logged) with the names its row
    needs: ``arms`` (by index), ``policy_names`` (per slot, then the default policy's)
    and ``served_by_names`` (by served_by code).
    """

    cdef readonly DecisionSigner signer
    cdef readonly uint32_t experiment_key
    cdef bytes _prefix              # utf8(salt) | 0x1F
    cdef uint64_t _threshold        # traffic buckets below this are inside
    cdef bytes _table               # policy bucket -> slot (owns _slot_of's bytes)
    cdef const uint8_t* _slot_of    # == _table's bytes
    cdef tuple _kernels             # per slot
    cdef uint8_t _codes[8]
    cdef uint8_t _served_by[8]
    cdef object _default_kernel
    cdef uint8_t _default_code
    cdef uint8_t _outside
    cdef uint8_t _not_serving
    cdef double _serving_from
    cdef double _serving_until
    cdef DecisionRows _rows
    cdef tuple _arms
    cdef tuple _policy_names
    cdef tuple _served_by_names

    def __init__(self, *, DecisionSigner signer not None, uint32_t experiment_key,
                 bytes hash_prefix not None, uint64_t traffic_threshold,
                 bytes policy_table not None, tuple slots not None, tuple default not None,
                 uint8_t outside, uint8_t not_serving, double serving_from,
                 double serving_until, DecisionRows rows, tuple arms not None,
                 tuple policy_names not None, tuple served_by_names not None):
        cdef Py_ssize_t i
        if not 1 <= len(slots) <= _MAX_SLOTS:
            raise ValueError(f"between 1 and {_MAX_SLOTS} policy slots, got {len(slots)}")
        if PyBytes_GET_SIZE(policy_table) != <Py_ssize_t> _BUCKETS:
            raise ValueError(f"policy_table must hold {_BUCKETS} slots, "
                             f"got {PyBytes_GET_SIZE(policy_table)}")
        if max(policy_table) >= len(slots):
            raise ValueError(f"policy_table names slot {max(policy_table)} of {len(slots)}")
        self.signer = signer
        self.experiment_key = experiment_key
        self._prefix = hash_prefix
        self._threshold = traffic_threshold
        self._table = policy_table
        self._slot_of = <const uint8_t*> PyBytes_AS_STRING(policy_table)
        self._kernels = tuple(kernel for kernel, _code, _served_by in slots)
        for i, (_kernel, code, served_by) in enumerate(slots):
            self._codes[i] = code
            self._served_by[i] = served_by
        self._default_kernel, self._default_code = default
        self._outside = outside
        self._not_serving = not_serving
        self._serving_from = serving_from
        self._serving_until = serving_until
        if len(policy_names) != len(slots) + 1:
            raise ValueError(f"one policy name per slot and the default's, got "
                             f"{len(policy_names)} for {len(slots)} slots")
        if len(served_by_names) <= max(outside, not_serving,
                                       *(served for _kernel, _code, served in slots)):
            raise ValueError("served_by_names must name every served_by code")
        self._rows = rows
        self._arms = arms
        self._policy_names = policy_names
        self._served_by_names = served_by_names

    cdef Py_ssize_t _assign(self, str user_id, double now, uint8_t* served_by) except -2:
        """The slot serving ``user_id`` at ``now`` (-1: the default policy)."""
        cdef Py_ssize_t n_prefix = PyBytes_GET_SIZE(self._prefix), n_user, total
        cdef const char* user = PyUnicode_AsUTF8AndSize(user_id, &n_user)
        cdef unsigned char buf[256]
        cdef uint64_t h
        cdef Py_ssize_t slot
        if not self._serving_from <= now < self._serving_until:
            served_by[0] = self._not_serving
            return -1
        total = n_prefix + n_user
        if total <= _STACK:
            memcpy(buf, PyBytes_AS_STRING(self._prefix), n_prefix)
            memcpy(buf + n_prefix, user, n_user)
            h = xxh64(buf, total, 0)
        else:
            data = self._prefix + user_id.encode("utf-8")
            h = xxh64(<const unsigned char*> PyBytes_AS_STRING(data), total, 0)
        if h % _BUCKETS >= self._threshold:
            served_by[0] = self._outside
            return -1
        slot = self._slot_of[(h // _BUCKETS) % _BUCKETS]
        served_by[0] = self._served_by[slot]
        return slot

    def assign(self, str user_id not None, double now):
        """``(slot, served_by)`` of ``user_id`` at ``now``; slot -1 is the default policy."""
        cdef uint8_t served_by
        cdef Py_ssize_t slot = self._assign(user_id, now, &served_by)
        return slot, served_by

    def decide(self, str user_id not None, double now, candidates=None,
               started=None, bytes context_json=None):
        """``(decision_id, slot, arm_index, propensity, served_by)`` for ``user_id`` at
        ``now`` (epoch seconds) over ``candidates`` (an intp array of arm indices, or
        None for every arm), logged with the request's ``context_json`` (JSON text or
        None) and its latency since ``started`` (``time.perf_counter()``; None: 0). Raises
        ValueError (kernel: bad candidates) before any state changes.

        The row's ``decided_at`` is the id's millisecond, not ``now``: a reward takes its
        decision's time from the id, and the log's key and partitions include it."""
        cdef uint8_t served_by
        cdef uint64_t ms
        if not 0.0 <= now < 2.0 ** 48 / 1000.0:     # NaN fails too
            raise OverflowError(f"time {now!r} does not fit a decision id (48-bit ms)")
        ms = <uint64_t> (now * 1000.0)
        cdef Py_ssize_t slot = self._assign(user_id, now, &served_by)
        if slot < 0:
            arm, propensity = self._default_kernel.select(candidates)
            code = self._default_code
            slot_name = self._policy_names[len(self._kernels)]
        else:
            arm, propensity = self._kernels[slot].select(candidates)
            code = self._codes[slot]
            slot_name = self._policy_names[slot]
        decision_id = self.signer.sign_c(self.experiment_key, code, served_by, arm, ms)
        if self._rows is not None:
            self._rows.add(decision_id, self.experiment_key, user_id,
                           slot_name, self._arms[arm], propensity,
                           self._served_by_names[served_by], ms / 1000.0,
                           0.0 if started is None else perf_counter() - started,
                           context_json, self._arms, candidates)
        return decision_id, slot, arm, propensity, served_by
