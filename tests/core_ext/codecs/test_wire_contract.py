"""The hand-written codec (``banditd.core_ext.codecs._wire``) and ``decision.proto``
describe the same messages: a field added to the .proto without the codec fails
here, not in production by being skipped."""

from __future__ import annotations

import pytest
from google.protobuf.descriptor import FieldDescriptor

from banditd.core_ext.codecs import (
    CODEC_FIELDS,
    parse_reward_request,
    parse_select_request,
    select_response,
)
from banditd.v1 import decision_pb2 as pb

TYPE_NAMES = {
    FieldDescriptor.TYPE_DOUBLE: "double", FieldDescriptor.TYPE_INT64: "int64",
    FieldDescriptor.TYPE_INT32: "int32", FieldDescriptor.TYPE_STRING: "string",
    FieldDescriptor.TYPE_MESSAGE: "message", FieldDescriptor.TYPE_ENUM: "enum",
}
# The messages the servicer takes or returns as raw bytes through the codec.
HAND_CODED = ("banditd.v1.SelectRequest", "banditd.v1.SelectResponse",
              "banditd.v1.RewardRequest")


def _label(field) -> str:
    repeated = getattr(field, "is_repeated", None)
    if repeated is None:  # protobuf < 5.28 has only the label
        repeated = field.label == FieldDescriptor.LABEL_REPEATED
    return "repeated" if repeated else "singular"


def _described(full_name: str) -> dict[int, tuple[str, str, str]]:
    message = pb.DESCRIPTOR.pool.FindMessageTypeByName(full_name)
    return {f.number: (f.name, TYPE_NAMES.get(f.type, f"type {f.type}"), _label(f))
            for f in message.fields}


def _reachable(full_name: str) -> set[str]:
    """The message and every message type its fields nest, recursively."""
    seen, todo = set(), [full_name]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            message = pb.DESCRIPTOR.pool.FindMessageTypeByName(name)
            todo += [f.message_type.full_name for f in message.fields if f.message_type]
    return seen


def test_the_codec_covers_every_message_it_handles_and_what_they_nest():
    wanted = set().union(*(_reachable(name) for name in HAND_CODED))
    assert set(CODEC_FIELDS) == wanted


@pytest.mark.parametrize("full_name", sorted(CODEC_FIELDS))
def test_the_codec_knows_exactly_the_fields_of_the_proto(full_name):
    assert CODEC_FIELDS[full_name] == _described(full_name)


def test_every_select_request_field_survives_the_codec():
    request = pb.SelectRequest(experiment_id="exp", user_id="ü-1",
                               candidate_arms=["b", "a"], context={"k": "v", "z": ""})
    assert parse_select_request(request.SerializeToString()) == (
        "exp", "ü-1", ["b", "a"], {"k": "v", "z": ""})


def test_every_reward_request_field_survives_the_codec():
    request = pb.RewardRequest(decision_id="d1", value=-2.5)
    request.event_time.seconds, request.event_time.nanos = 1_700_000_000, 123_456_789
    assert parse_reward_request(request.SerializeToString()) == (
        "d1", -2.5, 1_700_000_000_123_456)


def test_every_select_response_field_is_written_as_protobuf_writes_it():
    expected = pb.SelectResponse(decision_id="d1", arm="é", policy="ucb", propensity=0.25,
                                 served_by=pb.ROLLED_BACK)
    assert select_response("d1", "é", "ucb", 0.25, pb.ROLLED_BACK) == (
        expected.SerializeToString())
