"""Decision ids round-trip, and any change to one is detected."""

import base64
import hashlib
import random
import struct

import pytest

from banditd.core_ext.codecs import DecisionSigner
from banditd.server.decision_id import ENCODED_LENGTH, DecisionIdCodec, InvalidDecisionId

KEY = bytes(range(32))


@pytest.fixture
def codec():
    return DecisionIdCodec({1: KEY}, 1, server_nonce=0xDEADBEEF)


def sign(codec, *fields, counter=1):
    """The id of a decision with these fields, signed by the C signer the server uses."""
    return codec.signer(counter).sign(*fields)


def test_round_trip_preserves_every_field(codec):
    decision_id = sign(codec, 123456, 2, 5, 65_000, 1_764_000_000_123, counter=2**32 - 1)
    assert len(decision_id) == ENCODED_LENGTH
    ref = codec.decode(decision_id)
    assert (ref.experiment_key, ref.policy_index, ref.served_by, ref.arm_index) == (
        123456, 2, 5, 65_000,
    )
    assert ref.decided_at_ms == 1_764_000_000_123
    assert ref.key_id == 1


def test_ids_are_unique_per_counter(codec):
    signer = codec.signer(2**32 - 500)  # the counter wraps at 2**32 and stays unique
    ids = {signer.sign(1, 0, 1, 0, 1_000) for _ in range(1000)}
    assert len(ids) == 1000
    assert signer.counter == 500


def test_c_signer_matches_hashlib_and_the_documented_layout():
    """The C BLAKE2b (RFC 7693) against hashlib's, over random keys of every allowed
    length and random field values; the payload packed by ``struct`` per the layout."""
    rnd = random.Random(20261128)
    for trial in range(500):
        key = rnd.randbytes(1 + trial % 64)
        nonce, counter = rnd.getrandbits(32), rnd.getrandbits(32)
        fields = (rnd.getrandbits(32), rnd.getrandbits(8), rnd.getrandbits(8),
                  rnd.getrandbits(32), rnd.getrandbits(48))
        decision_id = DecisionSigner(key, 9, nonce, counter).sign(*fields)
        exp_key, policy, served_by, arm, ms = fields
        payload = struct.pack(">BBIBBI6sII", 1, 9, exp_key, policy, served_by, arm,
                              ms.to_bytes(6, "big"), nonce, counter)
        mac = hashlib.blake2b(payload, key=key, digest_size=12).digest()
        assert decision_id == "d" + base64.urlsafe_b64encode(payload + mac).decode()


def test_ids_signed_by_hashlib_verify_with_every_field():
    """The C verifier against an independent signer: hashlib's BLAKE2b over the payload
    ``struct`` packs per the documented layout, under the current and an older key."""
    codec = DecisionIdCodec({1: KEY, 2: bytes(range(100, 132))}, 2, server_nonce=5)
    rnd = random.Random(7)
    for key_id, key in ((1, KEY), (2, bytes(range(100, 132)))):
        for _ in range(200):
            fields = (rnd.getrandbits(32), rnd.getrandbits(8), rnd.getrandbits(8),
                      rnd.getrandbits(32), rnd.getrandbits(48))
            exp_key, policy, served_by, arm, ms = fields
            payload = struct.pack(">BBIBBI6sII", 1, key_id, exp_key, policy, served_by, arm,
                                  ms.to_bytes(6, "big"), rnd.getrandbits(32), 0)
            mac = hashlib.blake2b(payload, key=key, digest_size=12).digest()
            ref = codec.decode("d" + base64.urlsafe_b64encode(payload + mac).decode())
            assert ref == (key_id, *fields)


def test_a_second_spelling_of_an_id_is_rejected(codec):
    """The last base64 character carries two bits beyond the 38 bytes; an id with them
    set decodes to the same bytes, and would be a second rewards key for one decision."""
    decision_id = sign(codec, 7, 1, 1, 3, 99)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(decision_id[-2])
    for bits in (1, 2, 3):
        variant = decision_id[:-2] + alphabet[last ^ bits] + "="
        assert base64.urlsafe_b64decode(variant[1:]) == base64.urlsafe_b64decode(decision_id[1:])
        with pytest.raises(InvalidDecisionId, match="canonical"):
            codec.decode(variant)
    assert codec.decode(decision_id).arm_index == 3


def test_c_signer_refuses_what_does_not_fit():
    with pytest.raises(ValueError, match="1-64 bytes"):
        DecisionSigner(b"", 1, 0)
    with pytest.raises(ValueError, match="1-64 bytes"):
        DecisionSigner(bytes(65), 1, 0)
    with pytest.raises(ValueError, match="one byte"):
        DecisionSigner(KEY, 256, 0)
    with pytest.raises(OverflowError, match="48 bits"):
        DecisionSigner(KEY, 1, 0).sign(1, 0, 1, 0, 2**48)
    with pytest.raises(OverflowError):
        DecisionSigner(KEY, 1, 0).sign(1, 256, 1, 0, 0)  # policy is one byte


def test_any_flipped_byte_is_rejected(codec):
    raw = bytearray(base64.urlsafe_b64decode(sign(codec, 7, 1, 1, 3, 99)[1:]))
    for position in range(len(raw)):
        tampered = bytearray(raw)
        tampered[position] ^= 0x01
        forged = "d" + base64.urlsafe_b64encode(bytes(tampered)).decode()
        with pytest.raises(InvalidDecisionId):
            codec.decode(forged)


def test_id_signed_with_another_secret_is_rejected(codec):
    other = DecisionIdCodec({1: bytes(32)}, 1, server_nonce=1)
    with pytest.raises(InvalidDecisionId, match="signature"):
        codec.decode(sign(other, 7, 1, 1, 3, 99))


@pytest.mark.parametrize(
    ("decision_id", "message"),
    [
        ("", "0 bytes long; a banditd decision id is exactly 53"),
        ("x" * ENCODED_LENGTH, "those start with 'd'"),
        ("d" + "!" * (ENCODED_LENGTH - 2) + "=", "character 2 is not base64url"),
        ("d" + "A" * (ENCODED_LENGTH - 1), "those end with '='"),
        ("d" + "A" * (ENCODED_LENGTH - 3) + "é=", "54 bytes long"),
        ("d" + "A" * (ENCODED_LENGTH - 2) + "=", "format version 0"),
    ],
)
def test_malformed_ids_are_rejected_with_a_reason(codec, decision_id, message):
    with pytest.raises(InvalidDecisionId, match=message):
        codec.decode(decision_id)


def test_unknown_key_id_is_rejected():
    old = DecisionIdCodec({2: KEY}, 2, server_nonce=1)
    current = DecisionIdCodec({1: KEY}, 1, server_nonce=1)
    with pytest.raises(InvalidDecisionId, match="unknown key 2"):
        current.decode(sign(old, 7, 1, 1, 3, 99))
