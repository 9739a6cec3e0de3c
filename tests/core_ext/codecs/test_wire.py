"""core_ext's protobuf wire functions agree with protobuf's own parser and serialiser
(upb, through the generated classes) on every message hypothesis can build, skip
unknown fields as protobuf does, and refuse malformed bytes with a reason."""

from __future__ import annotations

import math
import struct

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import given, settings
from hypothesis import strategies as st

from banditd.core_ext.codecs import (
    WireFormatError,
    parse_reward_request,
    parse_select_request,
    select_response,
)
from banditd.v1 import decision_pb2 as pb

text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=300)


def _upb_select(data: bytes) -> tuple:
    request = pb.SelectRequest.FromString(data)
    return (request.experiment_id, request.user_id,
            list(request.candidate_arms) or None, dict(request.context) or None)


def _upb_reward(data: bytes) -> tuple:
    request = pb.RewardRequest.FromString(data)
    event_time = request.event_time.ToMicroseconds() if request.HasField("event_time") else None
    return request.decision_id, request.value, event_time


def _same(a: tuple, b: tuple) -> bool:
    """Equal, with NaN equal to NaN (a reward value may be NaN on the wire)."""
    return all(x == y or (isinstance(x, float) and math.isnan(x) and math.isnan(y))
               for x, y in zip(a, b, strict=True))


@settings(max_examples=300, deadline=None)
@given(experiment_id=text, user_id=text, candidates=st.lists(text, max_size=5),
       context=st.dictionaries(text, text, max_size=5))
def test_select_request_parses_as_protobuf_does(experiment_id, user_id, candidates, context):
    data = pb.SelectRequest(experiment_id=experiment_id, user_id=user_id,
                            candidate_arms=candidates, context=context).SerializeToString()
    assert parse_select_request(data) == _upb_select(data)


@settings(max_examples=300, deadline=None)
@given(decision_id=text, value=st.floats(allow_nan=True, allow_infinity=True),
       seconds=st.none() | st.integers(-62135596800, 253402300799),
       nanos=st.integers(0, 999_999_999))
def test_reward_request_parses_as_protobuf_does(decision_id, value, seconds, nanos):
    request = pb.RewardRequest(decision_id=decision_id, value=value)
    if seconds is not None:
        request.event_time.CopyFrom(Timestamp(seconds=seconds, nanos=nanos))
    data = request.SerializeToString()
    assert _same(parse_reward_request(data), _upb_reward(data))


@settings(max_examples=300, deadline=None)
@given(decision_id=text, arm=text, policy=text,
       propensity=st.floats(allow_nan=True, allow_infinity=True),
       served_by=st.integers(0, 2**31 - 1))
def test_select_response_is_protobufs_serialisation(decision_id, arm, policy, propensity,
                                                    served_by):
    expected = pb.SelectResponse(decision_id=decision_id, arm=arm, policy=policy,
                                 propensity=propensity, served_by=served_by)
    assert select_response(decision_id, arm, policy, propensity, served_by) == (
        expected.SerializeToString())


@pytest.mark.parametrize("propensity", [0.0, -0.0, 1.0, 5e-324])
def test_response_leaves_out_exactly_the_zero_double(propensity):
    data = select_response("d", "a", "p", propensity, 1)
    assert data == pb.SelectResponse(decision_id="d", arm="a", policy="p",
                                      propensity=propensity, served_by=1).SerializeToString()
    assert (b"\x21" in data) == (math.copysign(1.0, propensity) < 0 or propensity != 0.0)


def _field(number: int, wire_type: int, payload: bytes) -> bytes:
    return _varint(number << 3 | wire_type) + payload


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    return bytes(out) + bytes([n])


def _string(number: int, value: bytes) -> bytes:
    return _field(number, 2, _varint(len(value)) + value)


# Unknown fields of every wire type, as a newer client would send them.
UNKNOWN = (_field(9, 0, _varint(2**63)) + _field(10, 1, bytes(8)) + _string(11, b"x" * 200)
           + _field(12, 5, bytes(4)) + _field(2**29 - 1, 0, b"\x01"))


def test_unknown_fields_are_skipped_as_protobuf_does():
    data = UNKNOWN + pb.SelectRequest(experiment_id="e", user_id="u").SerializeToString() + UNKNOWN
    assert parse_select_request(data) == _upb_select(data) == ("e", "u", None, None)
    data = UNKNOWN + pb.RewardRequest(decision_id="d", value=1.0).SerializeToString() + UNKNOWN
    assert parse_reward_request(data) == _upb_reward(data) == ("d", 1.0, None)


def test_last_singular_field_wins_and_map_entries_merge():
    data = (_string(1, b"first") + _string(2, b"u") + _string(1, b"second")
            + _string(4, _string(1, b"k") + _string(2, b"v1")) + _string(4, _string(1, b"k"))
            + _string(4, _string(2, b"no key")) + _string(3, b"a") + _string(3, b"b"))
    assert parse_select_request(data) == _upb_select(data) == (
        "second", "u", ["a", "b"], {"k": "", "": "no key"})


def test_event_time_present_but_empty_is_the_epoch():
    data = _string(1, b"d") + _string(3, b"")
    assert parse_reward_request(data) == _upb_reward(data) == ("d", 0.0, 0)


def test_times_before_1970_round_down_like_to_microseconds():
    data = _string(3, _field(1, 0, _varint(-5 & (2**64 - 1))) + _field(2, 0, _varint(1999)))
    assert parse_reward_request(data) == _upb_reward(data) == ("", 0.0, -4_999_999)


@pytest.mark.parametrize(("seconds", "nanos", "reason"), [
    (5, -1, "nanos -1 is outside"),
    (5, 10**9, "nanos 1000000000 is outside"),
    (253402300800, 0, "seconds 253402300800 is outside"),
    (-62135596801, 0, "seconds -62135596801 is outside"),
])
def test_timestamps_outside_their_range_are_refused(seconds, nanos, reason):
    """protobuf's ``ToMicroseconds`` refuses these too (ValueError)."""
    data = _string(3, _field(1, 0, _varint(seconds & (2**64 - 1)))
                   + _field(2, 0, _varint(nanos & (2**64 - 1))))
    with pytest.raises(WireFormatError, match=reason):
        parse_reward_request(data)
    with pytest.raises(ValueError, match="not valid"):
        _upb_reward(data)


def test_empty_messages_are_all_defaults():
    assert parse_select_request(b"") == ("", "", None, None)
    assert parse_reward_request(b"") == ("", 0.0, None)


MALFORMED = [
    (b"\x0a", "truncated varint"),
    (b"\x0a\x05ab", "runs past the end"),
    (b"\x0a\x02\xff\xfe", "experiment_id is not valid UTF-8"),
    (b"\x12\x03\xed\xa0\x80", "user_id is not valid UTF-8"),             # a surrogate
    (b"\x22\x04\x0a\x02\xc3\x28", "context key is not valid UTF-8"),
    (b"\x08\x01", "experiment_id has wire type 0, expected 2"),
    (b"\x00\x01", "invalid field number 0"),
    (b"\x4b", "unsupported wire type 3"),                                # a group
    (b"\x4d\x00\x00", "field 9 is truncated"),
    (b"\x48" + b"\xff" * 10 + b"\x01", "varint longer than 10 bytes"),
]


@pytest.mark.parametrize(("data", "reason"), MALFORMED)
def test_malformed_select_requests_are_refused_with_the_reason(data, reason):
    with pytest.raises(WireFormatError, match=reason):
        parse_select_request(data)


@pytest.mark.parametrize(("data", "reason"), [
    (b"\x11" + struct.pack("<d", 1.0)[:5], "value is truncated"),
    (b"\x10\x01", "value has wire type 0, expected 1"),
    (b"\x1a\x01\x08", "truncated varint"),
    (b"\x1a\x02\x0a\x00", "event_time.seconds has wire type 2, expected 0"),
    (b"\x0a\x01\x80", "decision_id is not valid UTF-8"),
])
def test_malformed_reward_requests_are_refused_with_the_reason(data, reason):
    with pytest.raises(WireFormatError, match=reason):
        parse_reward_request(data)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=64))
def test_arbitrary_bytes_parse_or_raise_wire_format_error(data):
    """Any bytes: a result or WireFormatError, never another exception or a crash; and
    what this parser accepts, protobuf reads the same."""
    try:
        mine = parse_select_request(data)
    except WireFormatError:
        return
    assert mine == _upb_select(data)


def test_response_needs_a_valid_served_by():
    with pytest.raises(ValueError, match="served_by must not be negative"):
        select_response("d", "a", "p", 0.5, -1)
