"""Signed decision ids: any replica can attribute a Reward without a lookup.

A decision id carries everything a Reward needs — experiment, policy, arm, why the
user was served (``served_by``) and when — and a MAC, so it cannot be forged:

    payload = version:u8 | key_id:u8 | experiment_key:u32 | policy:u8 | served_by:u8
              | arm:u32 | decided_at_ms:u48 | server_nonce:u32 | counter:u32     (26 bytes)
    mac     = BLAKE2b-96(payload, key = signing_keys[key_id])                      (12 bytes)
    id      = "d" + base64url(payload | mac)                                       (53 chars)

BLAKE2b in keyed mode is a PRF designed to be used as a MAC directly (RFC 7693,
section 2.5; Aumasson et al. 2013), so no HMAC wrapping is needed. The secret
lives in PostgreSQL (``signing_keys``), shared by every replica; ``key_id`` allows
rotation. ``server_nonce`` (random per process) and ``counter`` make ids unique
across replicas and restarts.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import struct
from dataclasses import dataclass
from hashlib import blake2b

from core_ext import DecisionSigner

VERSION = 1
PREFIX = "d"
_PAYLOAD = struct.Struct(">BBIBBI6sII")
_MAC_BYTES = 12
_RAW_BYTES = _PAYLOAD.size + _MAC_BYTES
ENCODED_LENGTH = len(PREFIX) + len(base64.urlsafe_b64encode(bytes(_RAW_BYTES)))


class InvalidDecisionId(ValueError):
    """Malformed or forged decision id."""


@dataclass(frozen=True, slots=True)
class DecisionRef:
    """What a decision id says about its decision."""

    key_id: int
    experiment_key: int
    policy_index: int
    served_by: int
    arm_index: int
    decided_at_ms: int


class DecisionIdCodec:
    """Encodes and verifies decision ids with the database's signing keys."""

    __slots__ = ("_current_key_id", "_keys", "_nonce")

    def __init__(self, keys: dict[int, bytes], current_key_id: int, server_nonce: int) -> None:
        if current_key_id not in keys:
            raise ValueError(f"signing key {current_key_id} is not among the loaded keys")
        self._keys = dict(keys)
        self._current_key_id = current_key_id
        self._nonce = server_nonce & 0xFFFFFFFF

    def signer(self, counter: int = 0) -> DecisionSigner:
        """A signer of new ids under the current key, numbering them from ``counter``.

        ``core_ext.DecisionSigner`` builds the payload, its MAC and the base64url text
        in one C call (the Select hot path); ``decode`` checks the same ids with
        ``hashlib``, an independent implementation of BLAKE2b.
        """
        return DecisionSigner(
            self._keys[self._current_key_id], self._current_key_id, self._nonce, counter
        )

    def decode(self, decision_id: str) -> DecisionRef:
        """Verify and unpack; raises ``InvalidDecisionId`` with the reason."""
        if len(decision_id) != ENCODED_LENGTH or not decision_id.startswith(PREFIX):
            raise InvalidDecisionId(
                f"decision_id must be the {ENCODED_LENGTH}-char id returned by Select"
            )
        try:
            raw = base64.b64decode(
                decision_id[len(PREFIX):].encode("ascii"), altchars=b"-_", validate=True
            )
        except (binascii.Error, UnicodeEncodeError, ValueError) as exc:
            raise InvalidDecisionId("decision_id is not valid base64url") from exc
        if len(raw) != _RAW_BYTES:
            raise InvalidDecisionId("decision_id is not valid base64url")
        payload, mac = raw[: _PAYLOAD.size], raw[_PAYLOAD.size:]
        version, key_id, exp_key, policy, served_by, arm, ms, _nonce, _counter = (
            _PAYLOAD.unpack(payload)
        )
        if version != VERSION:
            raise InvalidDecisionId(f"decision_id version {version} is not supported")
        key = self._keys.get(key_id)
        if key is None:
            raise InvalidDecisionId(f"decision_id is signed with unknown key {key_id}")
        expected = blake2b(payload, key=key, digest_size=_MAC_BYTES).digest()
        if not hmac.compare_digest(mac, expected):
            raise InvalidDecisionId("decision_id signature does not verify (forged or corrupted)")
        return DecisionRef(key_id, exp_key, policy, served_by, arm, int.from_bytes(ms, "big"))
