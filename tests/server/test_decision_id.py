"""Decision ids round-trip, and any change to one is detected."""

import base64

import pytest

from server.decision_id import ENCODED_LENGTH, DecisionIdCodec, InvalidDecisionId

KEY = bytes(range(32))


@pytest.fixture
def codec():
    return DecisionIdCodec({1: KEY}, 1, server_nonce=0xDEADBEEF)


def test_round_trip_preserves_every_field(codec):
    decision_id = codec.encode(
        experiment_key=123456, policy_index=2, served_by=5, arm_index=65_000,
        decided_at_ms=1_764_000_000_123, counter=2**32 + 7,
    )
    assert len(decision_id) == ENCODED_LENGTH
    ref = codec.decode(decision_id)
    assert (ref.experiment_key, ref.policy_index, ref.served_by, ref.arm_index) == (
        123456, 2, 5, 65_000,
    )
    assert ref.decided_at_ms == 1_764_000_000_123
    assert ref.key_id == 1


def test_ids_are_unique_per_counter(codec):
    ids = {codec.encode(1, 0, 1, 0, 1_000, counter) for counter in range(1000)}
    assert len(ids) == 1000


def test_any_flipped_byte_is_rejected(codec):
    raw = bytearray(base64.urlsafe_b64decode(codec.encode(7, 1, 1, 3, 99, 1)[1:]))
    for position in range(len(raw)):
        tampered = bytearray(raw)
        tampered[position] ^= 0x01
        forged = "d" + base64.urlsafe_b64encode(bytes(tampered)).decode()
        with pytest.raises(InvalidDecisionId):
            codec.decode(forged)


def test_id_signed_with_another_secret_is_rejected(codec):
    other = DecisionIdCodec({1: bytes(32)}, 1, server_nonce=1)
    with pytest.raises(InvalidDecisionId, match="signature"):
        codec.decode(other.encode(7, 1, 1, 3, 99, 1))


@pytest.mark.parametrize(
    ("decision_id", "message"),
    [
        ("", "char id returned by Select"),
        ("x" * ENCODED_LENGTH, "char id returned by Select"),
        ("d" + "!" * (ENCODED_LENGTH - 1), "base64url"),
        ("d" + "A" * (ENCODED_LENGTH - 2) + "=", "version"),
    ],
)
def test_malformed_ids_are_rejected_with_a_reason(codec, decision_id, message):
    with pytest.raises(InvalidDecisionId, match=message):
        codec.decode(decision_id)


def test_unknown_key_id_is_rejected():
    old = DecisionIdCodec({2: KEY}, 2, server_nonce=1)
    current = DecisionIdCodec({1: KEY}, 1, server_nonce=1)
    with pytest.raises(InvalidDecisionId, match="unknown key 2"):
        current.decode(old.encode(7, 1, 1, 3, 99, 1))
