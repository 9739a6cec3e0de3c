"""Every bad request gets the right status code and an actionable message, and changes
nothing: no decision is logged, no reward is stored, no statistic moves."""

import math
import random

import grpc
import pytest
from google.protobuf.message import DecodeError

from banditd.server.database import connect
from banditd.v1 import decision_pb2 as pb
from tests.conftest import make_experiment

INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND

SELECT_CASES = [
    ({"experiment_id": "", "user_id": "u"}, INVALID, "experiment_id is required"),
    ({"experiment_id": "e" * 129, "user_id": "u"}, INVALID, "limit is 128"),
    ({"experiment_id": "exp\x07", "user_id": "u"}, INVALID, "control characters"),
    ({"experiment_id": "exp", "user_id": ""}, INVALID, "user_id is required"),
    ({"experiment_id": "exp", "user_id": "u" * 257}, INVALID, "limit is 256"),
    ({"experiment_id": "exp", "user_id": "a\nb"}, INVALID, "control characters"),
    ({"experiment_id": "missing", "user_id": "u"}, NOT_FOUND, "experiment 'missing' not found"),
    ({"experiment_id": "exp", "user_id": "u", "candidate_arms": ["arm-0", "zzz"]}, INVALID,
     "candidate arm 'zzz' is not an arm"),
    ({"experiment_id": "exp", "user_id": "u", "candidate_arms": ["arm-0", "arm-0"]}, INVALID,
     "names 'arm-0' more than once"),
    ({"experiment_id": "exp", "user_id": "u", "context": {"k": "v" * 5000}}, INVALID,
     "context is"),
]


async def _row_counts(url):
    conn = await connect(url)
    try:
        return (
            await conn.fetchval("SELECT count(*) FROM decisions"),
            await conn.fetchval("SELECT count(*) FROM rewards"),
            await conn.fetchval("SELECT coalesce(sum(pulls), 0) FROM arm_stats"),
        )
    finally:
        await conn.close()


@pytest.fixture
async def running(migrated_db_url, start_server):
    await make_experiment(migrated_db_url, reward_min=0.0, reward_max=1.0)
    return await start_server()


@pytest.mark.parametrize(("fields", "code", "message"), SELECT_CASES)
async def test_bad_select(running, migrated_db_url, fields, code, message):
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await running.stub.Select(pb.SelectRequest(**fields))
    assert err.value.code() == code
    assert message in err.value.details()
    await running.server.decision_log.flush()
    assert await _row_counts(migrated_db_url) == (0, 0, 0)


async def test_bad_request_inside_a_batch_fails_the_batch_and_names_it(running, migrated_db_url):
    requests = [pb.SelectRequest(experiment_id="exp", user_id="ok"),
                pb.SelectRequest(experiment_id="exp", user_id="")]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await running.stub.SelectBatch(pb.SelectBatchRequest(requests=requests))
    assert err.value.code() == INVALID
    assert err.value.details().startswith("requests[1]: user_id is required")


async def test_oversized_batch_is_refused(running):
    requests = [pb.SelectRequest(experiment_id="exp", user_id=f"u{i}") for i in range(1001)]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await running.stub.SelectBatch(pb.SelectBatchRequest(requests=requests))
    assert err.value.code() == INVALID
    assert "at most 1000" in err.value.details()


async def test_full_decision_buffer_answers_resource_exhausted(migrated_db_url, start_server):
    await make_experiment(migrated_db_url)
    running = await start_server(decision_buffer=3)
    running.server.decision_log.interval = 3600  # keep the flusher from emptying it
    for i in range(3):
        await running.stub.Select(pb.SelectRequest(experiment_id="exp", user_id=f"u{i}"))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await running.stub.Select(pb.SelectRequest(experiment_id="exp", user_id="one-too-many"))
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "back off and retry" in err.value.details()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (math.nan, "finite number"),
        (math.inf, "finite number"),
        (-math.inf, "finite number"),
        (1.5, r"outside this experiment's range [0.0, 1.0]"),
        (-0.01, "outside this experiment's range"),
    ],
)
async def test_bad_reward_value(running, migrated_db_url, value, message):
    decision = await running.stub.Select(pb.SelectRequest(experiment_id="exp", user_id="u"))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await running.stub.Reward(pb.RewardRequest(decision_id=decision.decision_id, value=value))
    assert err.value.code() == INVALID
    assert message in err.value.details()
    assert (await _row_counts(migrated_db_url))[1:] == (0, 0)
    # The decision is still rewardable afterwards.
    ok = await running.stub.Reward(pb.RewardRequest(decision_id=decision.decision_id, value=1.0))
    assert ok.status == pb.APPLIED


@pytest.mark.parametrize(
    ("decision_id", "message"),
    [
        ("", "decision_id is required"),
        ("not-a-decision", "a banditd decision id is exactly 53"),
        ("d" + "A" * 51 + "=", "version"),
    ],
)
async def test_malformed_decision_id(running, decision_id, message):
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await running.stub.Reward(pb.RewardRequest(decision_id=decision_id, value=1.0))
    assert err.value.code() == INVALID
    assert message in err.value.details()


@pytest.mark.parametrize(
    ("method", "data", "message"),
    [
        ("Select", b"\x0a\x05ex", "malformed SelectRequest: length-delimited field runs past"),
        ("Select", b"\x0a\x03exp\x12\x02\xc3\x28", "malformed SelectRequest: user_id is not "
         "valid UTF-8"),
        ("Reward", b"\x10\x01", "malformed RewardRequest: value has wire type 0"),
        # event_time {seconds: 5, nanos: -1}
        ("Reward", b"\x1a\x0d\x08\x05\x10" + b"\xff" * 9 + b"\x01",
         "malformed RewardRequest: event_time.nanos -1 is outside [0, 999999999]"),
    ],
)
async def test_malformed_bytes_are_invalid_argument(running, migrated_db_url, method, data,
                                                    message):
    """Bytes that are no valid message (a broken or hand-rolled client) get
    INVALID_ARGUMENT naming the field (not UNKNOWN for a DecodeError, as the generated
    classes would give), and change nothing."""
    call = running.channel.unary_unary(f"/banditd.v1.DecisionService/{method}")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call(data)
    assert err.value.code() == INVALID
    assert message in err.value.details()
    await running.server.decision_log.flush()
    assert await _row_counts(migrated_db_url) == (0, 0, 0)


async def test_event_time_outside_a_timestamps_range_is_invalid(running, migrated_db_url):
    decision = await running.stub.Select(pb.SelectRequest(experiment_id="exp", user_id="u"))
    request = pb.RewardRequest(decision_id=decision.decision_id, value=1.0)
    request.event_time.seconds = 253402300800  # 10000-01-01
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await running.stub.Reward(request)
    assert err.value.code() == INVALID
    assert "event_time.seconds 253402300800 is outside" in err.value.details()
    assert (await _row_counts(migrated_db_url))[1:] == (0, 0)


async def test_forged_decision_id(running, migrated_db_url):
    decision = await running.stub.Select(pb.SelectRequest(experiment_id="exp", user_id="u"))
    genuine = decision.decision_id
    forged = genuine[:10] + ("B" if genuine[10] != "B" else "C") + genuine[11:]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await running.stub.Reward(pb.RewardRequest(decision_id=forged, value=1.0))
    assert err.value.code() == INVALID
    assert (await _row_counts(migrated_db_url))[1:] == (0, 0)


async def test_decision_of_a_deleted_experiment_is_not_found(running, migrated_db_url):
    decision = await running.stub.Select(pb.SelectRequest(experiment_id="exp", user_id="u"))
    conn = await connect(migrated_db_url)
    try:
        await conn.execute(
            "UPDATE experiments SET deleted_at = now(), updated_at = clock_timestamp()"
        )
    finally:
        await conn.close()
    await running.server.feed.poll()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await running.stub.Reward(pb.RewardRequest(decision_id=decision.decision_id, value=1.0))
    assert err.value.code() == NOT_FOUND
    assert "no longer exists" in err.value.details()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await running.stub.Select(pb.SelectRequest(experiment_id="exp", user_id="u"))
    assert err.value.code() == NOT_FOUND


async def test_failed_calls_are_logged_for_the_runbook(running, tmp_path):

    from banditd.server import logs

    logs.configure(tmp_path, console=False)
    try:
        with pytest.raises(grpc.aio.AioRpcError):
            await running.stub.Select(pb.SelectRequest(experiment_id="missing", user_id="u"))
        logs.flush()
        text = (tmp_path / "api.log").read_text()
    finally:
        logs.configure(None, console=False)
    assert "ERROR Select NOT_FOUND: experiment 'missing' not found" in text


def _hostile_payloads(valid: bytes, count: int, seed: int) -> list[bytes]:
    """Half random bytes, half mutations of ``valid`` (flipped bits, truncation, a byte
    inserted or deleted): the inputs of a broken client or a fuzzer."""
    rng = random.Random(seed)
    payloads = []
    for i in range(count):
        if i % 2 == 0:
            payloads.append(rng.randbytes(rng.randint(1, 64)))
            continue
        data = bytearray(valid)
        kind = rng.randrange(4)
        position = rng.randrange(len(data))
        if kind == 0:
            data[position] ^= 1 << rng.randrange(8)
        elif kind == 1:
            del data[position:]
        elif kind == 2:
            data.insert(position, rng.randrange(256))
        else:
            del data[position]
        payloads.append(bytes(data))
    return payloads


def _parses(message_class, data: bytes) -> bool:
    try:
        message_class.FromString(data)
    except DecodeError:
        return False
    return True


HOSTILE_CASES = {
    "Select": (pb.SelectRequest, pb.SelectRequest(
        experiment_id="exp", user_id="u", candidate_arms=["arm-0", "arm-1"],
        context={"k": "v"})),
    "SelectBatch": (pb.SelectBatchRequest, pb.SelectBatchRequest(requests=[
        pb.SelectRequest(experiment_id="exp", user_id=f"u{i}", candidate_arms=["arm-2"])
        for i in range(3)])),
    "Reward": (pb.RewardRequest, None),
}


@pytest.mark.parametrize("method", sorted(HOSTILE_CASES))
async def test_hostile_bytes_never_answer_unknown(running, tmp_path, method):
    """1,000 random or mutated payloads per method through a bytes-in channel: whatever
    the generated classes cannot parse is INVALID_ARGUMENT, nothing is UNKNOWN or
    INTERNAL, and every failed call is one ``ERROR <method> <code>`` line in api.log."""
    from banditd.server import logs

    message_class, valid = HOSTILE_CASES[method]
    if valid is None:
        decision = await running.stub.Select(pb.SelectRequest(experiment_id="exp", user_id="u"))
        valid = pb.RewardRequest(decision_id=decision.decision_id, value=1.0)
        valid.event_time.seconds = 1_700_000_000
    call = running.channel.unary_unary(f"/banditd.v1.DecisionService/{method}")
    codes: dict[grpc.StatusCode, int] = {}
    unparsable_codes: set[grpc.StatusCode] = set()
    logs.configure(tmp_path, console=False)
    try:
        for data in _hostile_payloads(valid.SerializeToString(), 1000, seed=len(method)):
            try:
                await call(data, timeout=10)
                code = grpc.StatusCode.OK
            except grpc.aio.AioRpcError as err:
                code = err.code()
            codes[code] = codes.get(code, 0) + 1
            if not _parses(message_class, data):
                unparsable_codes.add(code)
        logs.flush()
        logged = (tmp_path / "api.log").read_text().count(f"ERROR {method} ")
    finally:
        logs.configure(None, console=False)
    assert unparsable_codes == {INVALID}, codes
    assert not {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL} & set(codes), codes
    assert logged == sum(n for code, n in codes.items() if code != grpc.StatusCode.OK)
