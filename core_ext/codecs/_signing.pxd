# cython: language_level=3
"""Decision-id signing (see ``_signing.pyx``)."""

from libc.stdint cimport uint8_t, uint32_t, uint64_t


cdef class DecisionSigner:
    cdef readonly int key_id            # signing_keys.key_id, in every payload
    cdef readonly uint32_t server_nonce # random per process, in every payload
    cdef readonly uint32_t counter      # the next id's counter (wraps at 2**32)
    cdef uint64_t _keyed[8]             # BLAKE2b state after the key block

    cdef void _mac(self, const uint8_t* payload, uint8_t* mac) noexcept
    cdef str sign_c(self, uint32_t experiment_key, uint8_t policy, uint8_t served_by,
                    uint32_t arm, uint64_t decided_at_ms)
