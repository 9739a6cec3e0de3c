"""The server's byte formats, in C.

- the Select/Reward protobuf codec (``_wire``; its fields are pinned against
  ``decision.proto`` by ``tests/core_ext/codecs/test_wire_contract.py``);
- the binary COPY encoder of the ``decisions`` log (``_decision_rows``; its columns
  are pinned against the migrated table);
- signed decision ids (``_signing``; the format is ``banditd.server.decision_id``'s).
"""

from __future__ import annotations

from banditd.core_ext import load_compiled

_wire, _decision_rows, _signing = (
    load_compiled(f"banditd.core_ext.codecs.{name}")
    for name in ("_wire", "_decision_rows", "_signing")
)

DecisionSigner = _signing.DecisionSigner
decision_key_id = _signing.key_id_of
DECISION_ID_LENGTH: int = _signing.ENCODED_LENGTH
DecisionRows = _decision_rows.DecisionRows
DECISION_COLUMNS: tuple[str, ...] = _decision_rows.COLUMNS
COPY_HEADER: bytes = _decision_rows.COPY_HEADER
COPY_TRAILER: bytes = _decision_rows.COPY_TRAILER
CODEC_FIELDS = _wire.CODEC_FIELDS
WireFormatError = _wire.WireFormatError
parse_select_request = _wire.parse_select_request
parse_reward_request = _wire.parse_reward_request
select_response = _wire.select_response

__all__ = [
    "CODEC_FIELDS",
    "COPY_HEADER",
    "COPY_TRAILER",
    "DECISION_COLUMNS",
    "DECISION_ID_LENGTH",
    "DecisionRows",
    "DecisionSigner",
    "WireFormatError",
    "decision_key_id",
    "parse_reward_request",
    "parse_select_request",
    "select_response",
]
