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
rotation.

Uniqueness across workers, hosts and restarts. Each process takes its
``server_nonce`` from the database sequence ``server_nonces`` when it starts, so no
two processes of a deployment hold the same nonce (until 2^32 process starts), and
numbers its ids with ``counter`` from a random start; an id repeats only if one
process signs 2^32 ids within one millisecond. A random 32-bit nonce would not do at
scale: among n = 1,000 live workers the chance that two share one is about
n^2 / 2^33 = 1.2e-4 (the birthday bound), and two workers started together with one
nonce would sign in near lockstep.

Only the canonical base64 spelling of an id verifies: the ``rewards`` key is the id
text, so a second spelling would count twice.
"""

from __future__ import annotations

from typing import NamedTuple

from banditd.core_ext.codecs import DECISION_ID_LENGTH, DecisionSigner, decision_key_id

ENCODED_LENGTH = DECISION_ID_LENGTH


class InvalidDecisionId(ValueError):
    """Malformed or forged decision id."""


class DecisionRef(NamedTuple):
    """What a decision id says about its decision."""

    key_id: int
    experiment_key: int
    policy_index: int
    served_by: int
    arm_index: int
    decided_at_ms: int


class DecisionIdCodec:
    """Signs new decision ids with the current key; verifies ids signed with any
    loaded key (older keys stay verifiable after a rotation)."""

    __slots__ = ("_current_key_id", "_keys", "_nonce", "_verifiers")

    def __init__(self, keys: dict[int, bytes], current_key_id: int, server_nonce: int) -> None:
        if current_key_id not in keys:
            raise ValueError(f"signing key {current_key_id} is not among the loaded keys")
        self._keys = dict(keys)
        self._current_key_id = current_key_id
        self._nonce = server_nonce & 0xFFFFFFFF
        self._verifiers = {
            key_id: DecisionSigner(key, key_id, self._nonce) for key_id, key in self._keys.items()
        }

    def signer(self, counter: int = 0) -> DecisionSigner:
        """A signer of new ids under the current key, numbering them from ``counter``.

        ``banditd.core_ext.codecs.DecisionSigner`` builds the payload, its MAC and the
        base64url text in one C call (the Select hot path). Tests check its ids
        against ``hashlib``'s
        BLAKE2b and ``struct``'s packing of the layout above.
        """
        return DecisionSigner(
            self._keys[self._current_key_id], self._current_key_id, self._nonce, counter
        )

    def decode(self, decision_id: str) -> DecisionRef:
        """Verify and unpack; raises ``InvalidDecisionId`` with the reason."""
        try:
            key_id = decision_key_id(decision_id)
            verifier = self._verifiers.get(key_id)
            if verifier is None:
                raise InvalidDecisionId(f"decision_id is signed with unknown key {key_id}")
            return DecisionRef(key_id, *verifier.verify(decision_id))
        except InvalidDecisionId:
            raise
        except ValueError as exc:  # the reason, from the C decoder (UnicodeError included)
            raise InvalidDecisionId(str(exc)) from None
