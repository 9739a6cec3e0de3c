# cython: language_level=3
"""Assignment hash: XXH64 (Collet, xxHash specification v0.1.1, "XXH64 algorithm"),
implemented here from the specification so that buckets are identical across
processes, platforms and Python versions (never Python's salted ``hash()``).

``assignment_bucket(salt, user_id) = XXH64(utf8(salt) + b"\\x1f" + utf8(user_id), seed 0)
mod BUCKETS`` with ``BUCKETS = 10000``. The unit separator 0x1F keeps
("ab", "c") and ("a", "bc") apart. Input bytes are read as little-endian words by
explicit shifts, so the result does not depend on the host's byte order. The modulo
bias of 2^64 mod 10^4 is below 10^-15 per bucket.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.unicode cimport PyUnicode_AsUTF8AndSize
from libc.stdint cimport uint32_t, uint64_t
from libc.string cimport memcpy

BUCKETS = 10000

cdef uint64_t _BUCKETS = 10000
cdef Py_ssize_t _STACK = 256        # salt + separator + user_id up to this size: no allocation

cdef extern from *:
    """
    /* XXH64 primes, xxHash specification §"XXH64 algorithm". */
    #define BANDITD_XXH_P1 0x9E3779B185EBCA87ULL
    #define BANDITD_XXH_P2 0xC2B2AE3D27D4EB4FULL
    #define BANDITD_XXH_P3 0x165667B19E3779F9ULL
    #define BANDITD_XXH_P4 0x85EBCA77C2B2AE63ULL
    #define BANDITD_XXH_P5 0x27D4EB2F165667C5ULL
    """
    const uint64_t P1 "BANDITD_XXH_P1"
    const uint64_t P2 "BANDITD_XXH_P2"
    const uint64_t P3 "BANDITD_XXH_P3"
    const uint64_t P4 "BANDITD_XXH_P4"
    const uint64_t P5 "BANDITD_XXH_P5"


cdef inline uint64_t _rotl(uint64_t x, int r) noexcept nogil:
    return (x << r) | (x >> (64 - r))


cdef inline uint64_t _read64(const unsigned char* p) noexcept nogil:
    return (<uint64_t> p[0] | (<uint64_t> p[1] << 8) | (<uint64_t> p[2] << 16)
            | (<uint64_t> p[3] << 24) | (<uint64_t> p[4] << 32) | (<uint64_t> p[5] << 40)
            | (<uint64_t> p[6] << 48) | (<uint64_t> p[7] << 56))


cdef inline uint64_t _read32(const unsigned char* p) noexcept nogil:
    return (<uint64_t> p[0] | (<uint64_t> p[1] << 8) | (<uint64_t> p[2] << 16)
            | (<uint64_t> p[3] << 24))


cdef inline uint64_t _round(uint64_t acc, uint64_t lane) noexcept nogil:
    acc = acc + lane * P2
    acc = _rotl(acc, 31)
    return acc * P1


cdef inline uint64_t _merge(uint64_t acc, uint64_t v) noexcept nogil:
    acc = acc ^ _round(0, v)
    return acc * P1 + P4


cdef uint64_t xxh64(const unsigned char* p, Py_ssize_t length, uint64_t seed) noexcept nogil:
    """XXH64 of ``length`` bytes at ``p``."""
    cdef const unsigned char* end = p + length
    cdef uint64_t v1, v2, v3, v4, h
    if length >= 32:            # spec step 1-3: four lanes over 32-byte stripes
        v1 = seed + P1 + P2
        v2 = seed + P2
        v3 = seed
        v4 = seed - P1
        while p + 32 <= end:
            v1 = _round(v1, _read64(p))
            v2 = _round(v2, _read64(p + 8))
            v3 = _round(v3, _read64(p + 16))
            v4 = _round(v4, _read64(p + 24))
            p += 32
        h = _rotl(v1, 1) + _rotl(v2, 7) + _rotl(v3, 12) + _rotl(v4, 18)
        h = _merge(h, v1)
        h = _merge(h, v2)
        h = _merge(h, v3)
        h = _merge(h, v4)
    else:                       # spec step 1, short input
        h = seed + P5
    h = h + <uint64_t> length   # step 4
    while p + 8 <= end:         # step 5: remaining input
        h = h ^ _round(0, _read64(p))
        h = _rotl(h, 27) * P1 + P4
        p += 8
    if p + 4 <= end:
        h = h ^ (_read32(p) * P1)
        h = _rotl(h, 23) * P2 + P3
        p += 4
    while p < end:
        h = h ^ (<uint64_t> p[0] * P5)
        h = _rotl(h, 11) * P1
        p += 1
    h = h ^ (h >> 33)           # step 6: avalanche
    h = h * P2
    h = h ^ (h >> 29)
    h = h * P3
    h = h ^ (h >> 32)
    return h


def hash64(data, uint64_t seed=0):
    """XXH64 of a bytes-like object (seed 0 unless given), as an int in [0, 2**64)."""
    cdef const unsigned char[::1] view
    if isinstance(data, bytes):
        return xxh64(<const unsigned char*> PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data), seed)
    if isinstance(data, str):
        raise TypeError("hash64 takes bytes; encode text first, e.g. s.encode('utf-8')")
    view = memoryview(data).cast("B")
    if view.shape[0] == 0:
        return xxh64(<const unsigned char*> b"", 0, seed)
    return xxh64(&view[0], view.shape[0], seed)


def assignment_bucket(str salt not None, str user_id not None):
    """Bucket in [0, BUCKETS) of ``user_id`` under the experiment's ``salt``."""
    cdef Py_ssize_t ns, nu
    cdef const char* ps = PyUnicode_AsUTF8AndSize(salt, &ns)
    cdef const char* pu = PyUnicode_AsUTF8AndSize(user_id, &nu)
    cdef unsigned char buf[256]
    cdef Py_ssize_t total = ns + 1 + nu
    if total > _STACK:
        data = salt.encode("utf-8") + b"\x1f" + user_id.encode("utf-8")
        return xxh64(<const unsigned char*> PyBytes_AS_STRING(data), total, 0) % _BUCKETS
    memcpy(buf, ps, ns)
    buf[ns] = 0x1F
    memcpy(buf + ns + 1, pu, nu)
    return xxh64(buf, total, 0) % _BUCKETS
