"""The DecisionService handlers: validate, decide in memory, log, answer.

``Select`` awaits nothing once its experiment is warm: parsing the request, validation,
the decision (assignment, kernel and signed id and its decision-log row, in one
``banditd.core_ext.decider.Decider`` call) and writing the response all run
synchronously on the event loop. ``Reward`` awaits only its group commit.
Every handler takes and returns raw bytes
(``add_to_server``). Every failure is a gRPC status with a message a caller can act
on, and changes no state.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime

import grpc
import numpy as np
from google.protobuf.message import DecodeError

from banditd.core_ext.codecs import (
    WireFormatError,
    parse_reward_request,
    parse_select_request,
    select_response,
)
from banditd.core_ext.decider import candidate_indices
from banditd.server.decision_id import DecisionIdCodec, InvalidDecisionId
from banditd.server.decision_log import DecisionLog
from banditd.server.metrics import METRICS
from banditd.server.registry import SERVED_BY_NAMES, ExperimentRuntime, Registry
from banditd.server.reward_commit import (
    PendingReward,
    RewardCommitter,
    RewardOutcome,
    RewardStoreUnavailable,
)
from banditd.server.validation import (
    MAX_BATCH,
    MAX_CANDIDATES,
    MAX_EXPERIMENT_ID,
    MAX_USER_ID,
    InvalidInput,
    check_context,
    check_id,
    check_reward_value,
)
from banditd.v1 import decision_pb2

api_log = logging.getLogger("banditd.api")

_CODE_NAMES = {code: code.name for code in grpc.StatusCode}
# The two successful Reward answers, serialised once.
_APPLIED = decision_pb2.RewardResponse(status=decision_pb2.APPLIED).SerializeToString()
_DUPLICATE = decision_pb2.RewardResponse(status=decision_pb2.DUPLICATE).SerializeToString()


class _Cold(Exception):
    """The experiment's Thompson policies have no propensity cache yet, or, for a
    Select with candidates (``subsets``), no subset cache (raised by ``_decide`` before
    it changes anything)."""

    def __init__(self, runtime: ExperimentRuntime, subsets: bool = False):
        super().__init__(runtime.id)
        self.runtime = runtime
        self.subsets = subsets


class RpcFailure(Exception):
    """A handled failure: the status code and message to send."""

    def __init__(self, code: grpc.StatusCode, message: str, experiment_key: int | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.experiment_key = experiment_key


class DecisionServicer:
    """Select / SelectBatch / Reward over the in-memory registry (served by
    ``add_to_server``: every handler takes and returns bytes)."""

    def __init__(
        self,
        registry: Registry,
        codec: DecisionIdCodec,
        decision_log: DecisionLog,
        committer: RewardCommitter,
    ) -> None:
        self._registry = registry
        self._codec = codec
        self._log = decision_log
        self._committer = committer
        self._latency_children: dict[tuple[str, grpc.StatusCode], object] = {}
        self._decision_counts = METRICS.decisions.counts
        self._count_first_decision = METRICS.decisions.inc
        self.draining = False
        # Bound once: the hot path calls these for every decision.
        self._registry_get = registry.get
        self._select_ok = self._latency_child("Select", grpc.StatusCode.OK)
        self._reward_ok = self._latency_child("Reward", grpc.StatusCode.OK)

    # -- Select -----------------------------------------------------------------------
    #
    # The hot path (benchmarks/load.py measures it; benchmarks/RESULTS.md has the
    # figures). Inside the loaded server every Select meets cold caches, so Python costs
    # several times its warm-loop time: the request is parsed and the response written in C
    # (core_ext's codecs), the decision itself is one C call (the Decider),
    # the registry is looked up before the experiment id is validated (ids in the
    # registry are valid), the common valid user id is checked inline, the decider
    # writes the decisions row itself, successful calls are counted from those rows at
    # flush, SelectBatch adds its responses in place, and metric children are cached.
    # The one await: an experiment's first calls wait for its Thompson propensity
    # caches, built in a worker thread (``ExperimentRuntime.warm``), not on the loop,
    # and its first calls with candidates for the subset caches (``warm_subsets``).

    async def Select(self, request: bytes, context) -> bytes:
        started = time.perf_counter()
        try:
            try:
                experiment_id, user_id, candidate_arms, request_context = (
                    parse_select_request(request))
            except WireFormatError as exc:
                raise RpcFailure(grpc.StatusCode.INVALID_ARGUMENT,
                                 f"malformed SelectRequest: {exc}") from None
            try:
                decision_id, arm, policy, propensity, served_by = self._decide(
                    experiment_id, user_id, candidate_arms, request_context, started)
            except _Cold as cold:
                decision_id, arm, policy, propensity, served_by = await self._decide_warm(
                    cold, experiment_id, user_id, candidate_arms, request_context, started)
        except RpcFailure as failure:
            await self._fail(context, "Select", failure, started)
        response = select_response(decision_id, arm, policy, propensity, served_by)
        self._select_ok.observe(time.perf_counter() - started)
        return response

    async def SelectBatch(self, request: bytes, context) -> bytes:
        started = time.perf_counter()
        reply = decision_pb2.SelectBatchResponse()
        add = reply.responses.add
        decide = self._decide
        try:
            try:
                requests = decision_pb2.SelectBatchRequest.FromString(request).requests
            except DecodeError as exc:
                raise RpcFailure(grpc.StatusCode.INVALID_ARGUMENT,
                                 f"malformed SelectBatchRequest: {exc}") from None
            if len(requests) > MAX_BATCH:
                raise RpcFailure(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"a batch holds at most {MAX_BATCH} requests, got {len(requests)}; split it",
                )
            if not self._log.has_room(len(requests)):
                raise _buffer_full()
            # Each decision counts as one successful Select (from its log row); when
            # an item fails, the decisions before it stand, as with single Selects.
            try:
                for item in requests:
                    args = (item.experiment_id, item.user_id, item.candidate_arms, item.context,
                            started)
                    try:
                        decision_id, arm, policy, propensity, served_by = decide(*args)
                    except _Cold as cold:
                        decision_id, arm, policy, propensity, served_by = (
                            await self._decide_warm(cold, *args))
                    out = add()
                    out.decision_id = decision_id
                    out.arm = arm
                    out.policy = policy
                    out.propensity = propensity
                    out.served_by = served_by
            except RpcFailure as failure:  # the failing item is the next one to add
                failure.message = f"requests[{len(reply.responses)}]: {failure.message}"
                raise
            finally:
                self._log.nudge()
        except RpcFailure as failure:
            await self._fail(context, "SelectBatch", failure, started)
        self._observe("SelectBatch", grpc.StatusCode.OK, started)
        return reply.SerializeToString()

    def _decide(
        self, experiment_id: str, user_id: str, candidate_arms, context, started: float
    ) -> tuple[str, str, str, float, int]:
        """One decision for a SelectRequest's fields: (decision_id, arm, policy,
        propensity, served_by), logged by the decider (the row counts the call) and
        counted in the decision metrics; raises RpcFailure (and changes nothing) when
        the request is refused, and ``_Cold`` (changing nothing) while the experiment's
        propensity caches are unbuilt (``_decide_warm``)."""
        if self.draining:
            raise RpcFailure(grpc.StatusCode.UNAVAILABLE, "server is draining; retry elsewhere")
        runtime = self._registry_get(experiment_id)
        if runtime is None:
            runtime = self._runtime(experiment_id)  # raises the right error
        if runtime.cold:
            raise _Cold(runtime, bool(candidate_arms))  # one build for both caches
        key = runtime.key
        try:
            if not user_id or len(user_id) > MAX_USER_ID or not user_id.isprintable():
                check_id(user_id, "user_id", MAX_USER_ID)
            candidates = _candidate_indices(runtime, candidate_arms) if candidate_arms else None
            context = check_context(context) if context else None
        except InvalidInput as exc:
            raise RpcFailure(grpc.StatusCode.INVALID_ARGUMENT, str(exc), key) from None
        if candidates is not None and runtime.subset_cold:
            raise _Cold(runtime, True)
        log = self._log
        if len(log) >= log.capacity:  # not log.has_room()
            raise _buffer_full(key)
        try:
            decision_id, slot, arm_index, propensity, served_by = runtime.decider.decide(
                user_id, time.time(), candidates, started,
                json.dumps(context).encode() if context else None,
            )
        except ValueError as exc:
            raise RpcFailure(grpc.StatusCode.INVALID_ARGUMENT, str(exc), key) from None
        arm = runtime.arms[arm_index]
        name = runtime.slot_policies[slot].name
        served_by_name = SERVED_BY_NAMES[served_by]
        labels = (runtime.id, name, arm, served_by_name)  # METRICS.decisions.inc, inlined
        n = self._decision_counts.get(labels)
        if n is None:
            self._count_first_decision(labels)
        else:
            self._decision_counts[labels] = n + 1
        return decision_id, arm, name, propensity, served_by

    async def _decide_warm(self, cold: _Cold, *args) -> tuple[str, str, str, float, int]:
        """``_decide`` once the experiment's propensity caches are built (off the event
        loop: ``ExperimentRuntime.warm``, with the subset caches ``warm_subsets``); again
        if the runtime was replaced meanwhile."""
        while True:
            if cold.subsets:
                await cold.runtime.warm_subsets()
            else:
                await cold.runtime.warm()
            try:
                return self._decide(*args)
            except _Cold as again:
                cold = again

    def _runtime(self, experiment_id: str) -> ExperimentRuntime:
        try:
            check_id(experiment_id, "experiment_id", MAX_EXPERIMENT_ID)
        except InvalidInput as exc:
            raise RpcFailure(grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from None
        runtime = self._registry.get(experiment_id)
        if runtime is None:
            raise RpcFailure(
                grpc.StatusCode.NOT_FOUND,
                f"experiment {experiment_id!r} not found; `banditctl experiment list` shows ids",
            )
        return runtime

    # -- Reward -----------------------------------------------------------------------

    async def Reward(self, request: bytes, context) -> bytes:
        started = time.perf_counter()
        try:
            try:
                decision_id, value, event_time_us = parse_reward_request(request)
            except WireFormatError as exc:
                raise RpcFailure(grpc.StatusCode.INVALID_ARGUMENT,
                                 f"malformed RewardRequest: {exc}") from None
            pending = self._pending_reward(decision_id, value, event_time_us)
            try:
                outcome = await self._committer.submit(pending)
            except RewardStoreUnavailable as exc:
                raise RpcFailure(
                    grpc.StatusCode.UNAVAILABLE, str(exc), pending.experiment_key
                ) from None
            if outcome is RewardOutcome.WINDOW_CLOSED:
                raise RpcFailure(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    "the reward window of this decision closed and the default reward was "
                    "applied; late rewards are not counted",
                    pending.experiment_key,
                )
        except RpcFailure as failure:
            await self._fail(context, "Reward", failure, started)
        self._log.count_call(pending.experiment_key, "Reward", "OK")
        self._reward_ok.observe(time.perf_counter() - started)
        return _APPLIED if outcome is RewardOutcome.APPLIED else _DUPLICATE

    def _pending_reward(
        self, decision_id: str, value: float, event_time_us: int | None
    ) -> PendingReward:
        if self.draining:
            raise RpcFailure(grpc.StatusCode.UNAVAILABLE, "server is draining; retry elsewhere")
        if not decision_id:
            raise RpcFailure(grpc.StatusCode.INVALID_ARGUMENT, "decision_id is required")
        try:
            ref = self._codec.decode(decision_id)
        except InvalidDecisionId as exc:
            raise RpcFailure(grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from None
        runtime = self._registry.by_key(ref.experiment_key)
        if runtime is None:
            raise RpcFailure(
                grpc.StatusCode.NOT_FOUND,
                "this decision's experiment no longer exists (deleted); the reward is dropped",
            )
        key = runtime.key
        spec = runtime.experiment.spec
        if ref.arm_index >= len(runtime.arms):
            raise RpcFailure(grpc.StatusCode.INVALID_ARGUMENT, "decision_id names no arm", key)
        try:
            check_reward_value(value, spec.reward_min, spec.reward_max)
        except InvalidInput as exc:
            raise RpcFailure(grpc.StatusCode.INVALID_ARGUMENT, str(exc), key) from None
        closes_ms = ref.decided_at_ms + spec.reward_window_seconds * 1000.0
        if time.time() * 1000.0 > closes_ms:
            closed = datetime.fromtimestamp(closes_ms / 1000.0, UTC).isoformat(timespec="seconds")
            raise RpcFailure(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"the reward window of this decision closed at {closed} "
                f"({spec.reward_window_seconds:g} s after the decision); the experiment's "
                "default reward applies",
                key,
            )
        return PendingReward(
            decision_id=decision_id,
            experiment_key=key,
            policy_code=ref.policy_index,
            served_by=ref.served_by,
            arm=runtime.arms[ref.arm_index],
            value=value,
            normalised=spec.normalise_reward(value),
            source="client",
            decided_at_us=ref.decided_at_ms * 1000,
            event_time_us=event_time_us,
        )

    # -- bookkeeping ------------------------------------------------------------------

    async def _fail(self, context, method: str, failure: RpcFailure, started: float):
        if failure.experiment_key is not None:
            self._log.count_call(failure.experiment_key, method, failure.code.name)
        self._observe(method, failure.code, started)
        api_log.error("ERROR %s %s: %s", method, failure.code.name, failure.message)
        await context.abort(failure.code, failure.message)

    def _observe(self, method: str, code: grpc.StatusCode, started: float) -> None:
        self._latency_child(method, code).observe(time.perf_counter() - started)

    def _latency_child(self, method: str, code: grpc.StatusCode):
        child = self._latency_children.get((method, code))
        if child is None:
            child = METRICS.rpc_seconds.labels(method, _CODE_NAMES[code])
            self._latency_children[(method, code)] = child
        return child


_SERVICE = decision_pb2.DESCRIPTOR.services_by_name["DecisionService"]


def add_to_server(servicer: DecisionServicer, server: grpc.aio.Server) -> None:
    """Serve ``servicer`` as banditd.v1.DecisionService on ``server``.

    Every handler takes and returns raw bytes, so that bytes which are not the method's
    message are the handler's INVALID_ARGUMENT, not grpc's UNKNOWN for a deserializer
    that raised. ``core_ext`` parses Select's and Reward's requests and writes Select's
    response in C (the hot path; see ``banditd.core_ext.codecs._wire``), Reward's two answers are
    serialised once, and SelectBatch parses with the generated classes.
    """
    handlers = {
        "Select": grpc.unary_unary_rpc_method_handler(servicer.Select),
        "SelectBatch": grpc.unary_unary_rpc_method_handler(servicer.SelectBatch),
        "Reward": grpc.unary_unary_rpc_method_handler(servicer.Reward),
    }
    if set(handlers) != set(_SERVICE.methods_by_name):
        raise RuntimeError(f"{_SERVICE.full_name} has methods {sorted(_SERVICE.methods_by_name)}, "
                           f"banditd serves {sorted(handlers)}")
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(_SERVICE.full_name, handlers),))
    server.add_registered_method_handlers(_SERVICE.full_name, handlers)


def _buffer_full(key: int | None = None) -> RpcFailure:
    return RpcFailure(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "decision buffer is full (PostgreSQL is not keeping up or unreachable); back off and retry",
        key,
    )


def _candidate_indices(runtime: ExperimentRuntime, candidate_arms) -> np.ndarray | None:
    """Indices of the requested candidate arms, or None for all arms."""
    n = len(candidate_arms)
    if n == 0:
        return None
    if n > MAX_CANDIDATES:
        raise InvalidInput(f"at most {MAX_CANDIDATES} candidate_arms, got {n}")
    try:
        return candidate_indices(runtime.arm_index, candidate_arms)
    except KeyError as exc:
        raise InvalidInput(
            f"candidate arm {exc.args[0]!r} is not an arm of experiment "
            f"{runtime.experiment.id!r}"
        ) from None
    except ValueError as exc:
        raise InvalidInput(
            f"candidate_arms names {exc.args[0]!r} more than once; list each arm once"
        ) from None
