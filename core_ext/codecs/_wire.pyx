# cython: language_level=3, boundscheck=False, wraparound=False
"""The protobuf wire format of the hot messages: SelectRequest / SelectResponse and
RewardRequest / RewardResponse (``proto/banditd/v1/decision.proto``), in C.

The server registers Select and Reward with raw bytes in and out: a generated
message class costs a parse into a message object, one string conversion per field
read, and a message object plus a serialisation per response (about 4 us per Select
in a warm loop, three times that inside the loaded server). Here a request becomes
the Python values the handler needs in one call, and a response is written straight
into its bytes.

The encoding is protobuf's ("Encoding", protobuf.dev/programming-guides/encoding):
a message is a sequence of fields, each a varint tag ``field_number << 3 |
wire_type`` and a value: wire type 0 a varint, 1 eight little-endian bytes, 2 a
varint length and that many bytes (strings, nested messages, map entries), 5 four
little-endian bytes. Parsing follows proto3: fields may come in any order, the last
occurrence of a singular field wins, repeated fields accumulate, a map field is a
repeated ``{key = 1, value = 2}`` entry message (the last entry of a key wins),
unknown fields are skipped, and string fields must be valid UTF-8. Serialising writes
fields in field-number order and leaves out fields at their default (empty string,
zero), as protobuf's own serialiser does, so the bytes equal its output.

Malformed input raises ``WireFormatError`` (a ``ValueError``) saying what is wrong.
One deliberate difference from protobuf's parser: a known field with another wire type
(``experiment_id`` sent as a varint, say) is refused, where protobuf would keep it as
an unknown field and read the default; only a broken client sends one.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.unicode cimport PyUnicode_AsUTF8AndSize, PyUnicode_DecodeUTF8
from libc.stdint cimport int32_t, int64_t, uint8_t, uint64_t
from libc.string cimport memcpy


class WireFormatError(ValueError):
    """The bytes are not a valid encoding of the expected message."""


# Every field of every message this codec reads or writes: number -> (name, type,
# label), in protobuf's descriptor terms. The parsers skip a field they do not know,
# so a field added to decision.proto would be dropped without a word:
# tests/core_ext/codecs/test_wire_contract.py fails unless this table and the generated
# descriptors agree, and checks that each field here survives the codec.
CODEC_FIELDS = {
    "banditd.v1.SelectRequest": {
        1: ("experiment_id", "string", "singular"),
        2: ("user_id", "string", "singular"),
        3: ("candidate_arms", "string", "repeated"),
        4: ("context", "message", "repeated"),          # map<string, string>
    },
    "banditd.v1.SelectRequest.ContextEntry": {
        1: ("key", "string", "singular"),
        2: ("value", "string", "singular"),
    },
    "banditd.v1.SelectResponse": {
        1: ("decision_id", "string", "singular"),
        2: ("arm", "string", "singular"),
        3: ("policy", "string", "singular"),
        4: ("propensity", "double", "singular"),
        5: ("served_by", "enum", "singular"),
    },
    "banditd.v1.RewardRequest": {
        1: ("decision_id", "string", "singular"),
        2: ("value", "double", "singular"),
        3: ("event_time", "message", "singular"),       # google.protobuf.Timestamp
    },
    "google.protobuf.Timestamp": {
        1: ("seconds", "int64", "singular"),
        2: ("nanos", "int32", "singular"),
    },
}


cdef enum:
    _VARINT = 0
    _FIXED64 = 1
    _LENGTH = 2
    _FIXED32 = 5


cdef struct _Reader:
    const uint8_t* pos
    const uint8_t* end


cdef uint64_t _varint(_Reader* r) except? 0xFFFFFFFFFFFFFFFF:
    """Read one varint (at most 10 bytes, 7 bits each, least significant group first)."""
    cdef uint64_t value = 0
    cdef int shift = 0
    cdef uint8_t byte
    while shift < 70:
        if r.pos >= r.end:
            raise WireFormatError("truncated varint")
        byte = r.pos[0]
        r.pos += 1
        value |= (<uint64_t> (byte & 0x7F)) << shift
        if byte < 0x80:
            return value
        shift += 7
    raise WireFormatError("varint longer than 10 bytes")


cdef const uint8_t* _length_delimited(_Reader* r, Py_ssize_t* size) except NULL:
    """The start of a length-delimited value (its length in ``size``), skipped past."""
    cdef uint64_t n = _varint(r)
    cdef const uint8_t* start = r.pos
    if n > <uint64_t> (r.end - r.pos):
        raise WireFormatError("length-delimited field runs past the end of the message")
    size[0] = <Py_ssize_t> n
    r.pos += n
    return start


cdef int _skip(_Reader* r, int wire_type, uint64_t field) except -1:
    """Skip the value of an unknown field."""
    cdef Py_ssize_t size
    if wire_type == _VARINT:
        _varint(r)
    elif wire_type == _FIXED64 or wire_type == _FIXED32:
        size = 8 if wire_type == _FIXED64 else 4
        if r.end - r.pos < size:
            raise WireFormatError(f"field {field} is truncated")
        r.pos += size
    elif wire_type == _LENGTH:
        _length_delimited(r, &size)
    else:  # 3 and 4 (groups, removed in proto3), 6 and 7 (undefined)
        raise WireFormatError(f"field {field} has unsupported wire type {wire_type}")
    return 0


cdef uint64_t _tag(_Reader* r, int* wire_type) except? 0:
    """The next field's number (its wire type in ``wire_type``)."""
    cdef uint64_t tag = _varint(r)
    cdef uint64_t field = tag >> 3
    wire_type[0] = <int> (tag & 7)
    if field == 0 or field > 536870911:     # field numbers are 1 .. 2**29 - 1
        raise WireFormatError(f"invalid field number {field}")
    return field


cdef str _string(_Reader* r, str name):
    cdef Py_ssize_t size
    cdef const uint8_t* data = _length_delimited(r, &size)
    try:
        return PyUnicode_DecodeUTF8(<const char*> data, size, NULL)
    except UnicodeDecodeError:
        raise WireFormatError(f"{name} is not valid UTF-8") from None


cdef inline int _expect(int wire_type, int expected, str name) except -1:
    if wire_type != expected:
        raise WireFormatError(f"{name} has wire type {wire_type}, expected {expected}")
    return 0


cdef str _string_field(_Reader* r, int wire_type, str name):
    """The value of string field ``name``, which must come length-delimited."""
    _expect(wire_type, _LENGTH, name)
    return _string(r, name)


cdef inline _Reader _nested(_Reader* outer) except *:
    """A reader over the nested message that is ``outer``'s next value."""
    cdef Py_ssize_t size
    cdef const uint8_t* data = _length_delimited(outer, &size)
    return _Reader(data, data + size)


cdef inline _Reader _reader_of(bytes data):
    cdef const uint8_t* start = <const uint8_t*> PyBytes_AS_STRING(data)
    return _Reader(start, start + PyBytes_GET_SIZE(data))


cdef tuple _map_entry(_Reader* outer):
    """One ``map<string, string>`` entry: ``(key, value)``, each "" when absent."""
    cdef _Reader r = _nested(outer)
    cdef int wire_type
    cdef uint64_t field
    key = value = ""
    while r.pos < r.end:
        field = _tag(&r, &wire_type)
        if field == 1:
            key = _string_field(&r, wire_type, "context key")
        elif field == 2:
            value = _string_field(&r, wire_type, "context value")
        else:
            _skip(&r, wire_type, field)
    return key, value


def parse_select_request(bytes data not None):
    """``(experiment_id, user_id, candidate_arms, context)`` of a serialised
    SelectRequest: two strings, a list of strings (None when empty) and a dict of
    strings (None when empty)."""
    cdef _Reader r = _reader_of(data)
    cdef int wire_type
    cdef uint64_t field
    experiment_id = user_id = ""
    candidates = context = None
    while r.pos < r.end:
        field = _tag(&r, &wire_type)
        if field == 1:
            experiment_id = _string_field(&r, wire_type, "experiment_id")
        elif field == 2:
            user_id = _string_field(&r, wire_type, "user_id")
        elif field == 3:
            if candidates is None:
                candidates = []
            candidates.append(_string_field(&r, wire_type, "candidate_arms"))
        elif field == 4:
            _expect(wire_type, _LENGTH, "context")
            if context is None:
                context = {}
            key, value = _map_entry(&r)
            context[key] = value
        else:
            _skip(&r, wire_type, field)
    return experiment_id, user_id, candidates, context


# google.protobuf.Timestamp's range: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z.
cdef int64_t _MIN_SECONDS = -62135596800
cdef int64_t _MAX_SECONDS = 253402300799


def parse_reward_request(bytes data not None):
    """``(decision_id, value, event_time_us)`` of a serialised RewardRequest;
    ``event_time_us`` is the event time in Unix microseconds (rounded down, as
    ``Timestamp.ToMicroseconds``), None when the field is absent. A Timestamp outside
    its documented range (seconds within years 1 to 9999, nanos in [0, 10**9)) is
    refused."""
    cdef _Reader r = _reader_of(data)
    cdef int wire_type
    cdef uint64_t field
    cdef double value = 0.0
    cdef bint has_time = False
    cdef int64_t seconds = 0
    cdef int32_t nanos = 0
    cdef uint64_t bits
    cdef int i
    decision_id = ""
    while r.pos < r.end:
        field = _tag(&r, &wire_type)
        if field == 1:
            decision_id = _string_field(&r, wire_type, "decision_id")
        elif field == 2:
            _expect(wire_type, _FIXED64, "value")
            if r.end - r.pos < 8:
                raise WireFormatError("value is truncated")
            bits = 0
            for i in range(8):
                bits |= (<uint64_t> r.pos[i]) << (8 * i)
            memcpy(&value, &bits, 8)            # the IEEE 754 double, little-endian on the wire
            r.pos += 8
        elif field == 3:
            _expect(wire_type, _LENGTH, "event_time")
            has_time = True                     # a message field seen twice merges
            _timestamp(&r, &seconds, &nanos)
        else:
            _skip(&r, wire_type, field)
    if not has_time:
        return decision_id, value, None
    if not _MIN_SECONDS <= seconds <= _MAX_SECONDS:
        raise WireFormatError(f"event_time.seconds {seconds} is outside a Timestamp's range "
                              "(0001-01-01 to 9999-12-31)")
    if not 0 <= nanos <= 999999999:
        raise WireFormatError(f"event_time.nanos {nanos} is outside [0, 999999999]")
    return decision_id, value, seconds * 1000000 + nanos // 1000


cdef int _timestamp(_Reader* outer, int64_t* seconds, int32_t* nanos) except -1:
    """Merge a google.protobuf.Timestamp (seconds = 1: int64, nanos = 2: int32)."""
    cdef _Reader r = _nested(outer)
    cdef int wire_type
    cdef uint64_t field
    while r.pos < r.end:
        field = _tag(&r, &wire_type)
        if field == 1:
            _expect(wire_type, _VARINT, "event_time.seconds")
            seconds[0] = <int64_t> _varint(&r)
        elif field == 2:
            _expect(wire_type, _VARINT, "event_time.nanos")
            nanos[0] = <int32_t> _varint(&r)    # int32: the low 32 bits
        else:
            _skip(&r, wire_type, field)
    return 0


cdef inline Py_ssize_t _put_varint(char* p, uint64_t v) noexcept:
    cdef Py_ssize_t n = 0
    while v >= 0x80:
        p[n] = <char> ((v & 0x7F) | 0x80)
        v >>= 7
        n += 1
    p[n] = <char> v
    return n + 1


cdef inline Py_ssize_t _varint_size(uint64_t v) noexcept:
    cdef Py_ssize_t n = 1
    while v >= 0x80:
        v >>= 7
        n += 1
    return n


cdef inline Py_ssize_t _string_size(Py_ssize_t n) noexcept:
    return 0 if n == 0 else 1 + _varint_size(<uint64_t> n) + n


cdef inline Py_ssize_t _put_string(char* p, char tag, const char* s, Py_ssize_t n) noexcept:
    """A length-delimited field (nothing when empty); returns the bytes written."""
    cdef Py_ssize_t k
    if n == 0:
        return 0
    p[0] = tag
    k = 1 + _put_varint(p + 1, <uint64_t> n)
    memcpy(p + k, s, n)
    return k + n


def select_response(str decision_id not None, str arm not None, str policy not None,
                    double propensity, int served_by):
    """A serialised SelectResponse."""
    cdef Py_ssize_t n_id, n_arm, n_policy, n
    cdef const char* id_ = PyUnicode_AsUTF8AndSize(decision_id, &n_id)
    cdef const char* arm_ = PyUnicode_AsUTF8AndSize(arm, &n_arm)
    cdef const char* policy_ = PyUnicode_AsUTF8AndSize(policy, &n_policy)
    cdef uint64_t bits
    cdef int i
    if served_by < 0:
        raise ValueError(f"served_by must not be negative, got {served_by}")
    memcpy(&bits, &propensity, 8)
    # a double is left out when its bits are all zero (0.0; -0.0 is written)
    n = (_string_size(n_id) + _string_size(n_arm) + _string_size(n_policy)
         + (9 if bits else 0) + (1 + _varint_size(<uint64_t> served_by) if served_by else 0))
    out = PyBytes_FromStringAndSize(NULL, n)
    cdef char* p = PyBytes_AS_STRING(out)
    n = _put_string(p, 0x0A, id_, n_id)
    n += _put_string(p + n, 0x12, arm_, n_arm)
    n += _put_string(p + n, 0x1A, policy_, n_policy)
    if bits:
        p[n] = 0x21
        for i in range(8):
            p[n + 1 + i] = <char> (bits >> (8 * i))
        n += 9
    if served_by:
        p[n] = 0x28
        _put_varint(p + n + 1, <uint64_t> served_by)
    return out
