"""The registry shares what experiments have in common and frees it with them."""

import asyncio
from datetime import UTC, datetime

import numpy as np

from banditd.core_ext.codecs import DecisionSigner
from banditd.core_ext.policies import Rng
from banditd.server.experiment import Experiment, ExperimentSpec
from banditd.server.propensity import PropensityRefresher
from banditd.server.registry import CONTROL, OUTSIDE_TRAFFIC, POLICY, Registry

ARMS = tuple(f"movie-{i}" for i in range(50))
SIGNER = DecisionSigner(bytes(32), 1, 0)


def _experiment(key: int, arms=ARMS, **spec) -> Experiment:
    now = datetime.now(UTC)
    return Experiment(key=key, spec=ExperimentSpec(id=f"e{key}", name="n", arms=arms, **spec),
                      status="running", start_at=now, end_at=None, updated_at=now)


def _assign(runtime, user_id: str, now_s: float):
    """The policy serving ``user_id`` and why, as the runtime's decider assigns it."""
    slot, served_by = runtime.decider.assign(user_id, now_s)
    return runtime.slot_policies[slot], served_by


def test_equal_arm_lists_share_one_tuple_and_index():
    registry = Registry(Rng(1), SIGNER)
    a = registry.upsert(_experiment(1, arms=tuple(ARMS)))
    b = registry.upsert(_experiment(2, arms=tuple(str(x) for x in ARMS)))  # equal, not same
    assert a.arms is b.arms and b.experiment.spec.arms is a.arms
    assert a.arm_index is b.arm_index
    assert a.arm_index["movie-7"] == 7


def test_shared_tables_are_dropped_with_their_last_experiment():
    registry = Registry(Rng(1), SIGNER)
    registry.upsert(_experiment(1))
    registry.upsert(_experiment(2))
    registry.upsert(_experiment(1))  # a reload replaces the runtime, keeps one user
    assert len(registry.arm_tables) == 1
    registry.remove("e1")
    assert len(registry.arm_tables) == 1
    registry.remove("e2")
    assert len(registry.arm_tables) == 0


def test_arm_index_of_a_replaced_runtime_still_answers():
    registry = Registry(Rng(1), SIGNER)
    old = registry.upsert(_experiment(1))
    registry.remove("e1")
    assert old.arm_index["movie-3"] == 3


def test_default_policy_is_control_and_learns_nothing():
    registry = Registry(Rng(1), SIGNER)
    runtime = registry.upsert(_experiment(1, traffic_pct=0.0))
    policy, served_by = _assign(runtime, "alice", datetime.now(UTC).timestamp())
    assert (policy.name, served_by) == ("control", OUTSIDE_TRAFFIC)
    before = [p.pulls.copy() for p in runtime.policies]
    for _ in range(100):
        policy.kernel.select(None)
    assert all(np.array_equal(b, p.pulls) for b, p in zip(before, runtime.policies, strict=True))


def test_policies_report_why_they_served():
    registry = Registry(Rng(1), SIGNER)
    runtime = registry.upsert(_experiment(1))
    now = datetime.now(UTC).timestamp()
    seen = {(p.name, s) for p, s in (_assign(runtime, f"user-{i}", now) for i in range(400))}
    assert seen == {
        ("thompson", POLICY), ("egreedy", POLICY), ("ucb", POLICY), ("control", CONTROL)}


async def test_propensity_refresher_brings_a_changed_thompson_cache_up_to_date():
    registry = Registry(Rng(5), SIGNER)
    registry.upsert(_experiment(1, policies=("thompson", "ucb")))
    thompson = registry.get("e1").policies[0].kernel
    thompson.select(None)  # first select builds the cache
    assert thompson.propensity_version == thompson.version
    thompson.update(0, 1.0)
    assert thompson.propensity_version != thompson.version
    task = asyncio.create_task(PropensityRefresher(registry, interval=0.01).run())
    try:
        for _ in range(200):
            await asyncio.sleep(0.01)
            if thompson.propensity_version == thompson.version:
                break
    finally:
        task.cancel()
    assert thompson.propensity_version == thompson.version


async def test_propensity_refresher_builds_an_asked_for_subset_cache_and_redraws_it():
    """A subset select on a kernel without a subset cache asks for one: the refresher
    builds it (with no reward in between), and re-draws it once the statistics move."""
    registry = Registry(Rng(8), SIGNER)
    registry.upsert(_experiment(1, policies=("thompson", "ucb")))
    thompson = registry.get("e1").policies[0].kernel
    thompson.select(None)
    thompson.select(np.array([0, 2], dtype=np.intp))  # on the spot, asks for a cache
    assert thompson.refresh_due and thompson.subset_cache_bytes == 0

    async def refreshed_until(done) -> None:
        task = asyncio.create_task(PropensityRefresher(registry, interval=0.01).run())
        try:
            for _ in range(200):
                await asyncio.sleep(0.01)
                if done():
                    break
        finally:
            task.cancel()

    await refreshed_until(lambda: thompson.subset_cache_bytes > 0)
    assert thompson.subset_cache_version == thompson.version and not thompson.refresh_due
    thompson.update(2, 1.0)
    await refreshed_until(lambda: thompson.subset_cache_version == thompson.version)
    assert thompson.subset_cache_version == thompson.propensity_version == thompson.version


def test_a_reloaded_experiment_keeps_its_thompson_caches_and_is_not_cold():
    registry = Registry(Rng(6), SIGNER)
    first = registry.upsert(_experiment(1, policies=("thompson", "ucb")))
    assert first.cold
    first.policies[0].kernel.select(None)  # builds the cache
    first.policies[0].kernel.update(3, 1.0)  # statistics move on: the cache is stale
    before = first.policies[0].kernel.cached_propensities()
    # A settings edit or status change reloads the experiment: a new runtime.
    second = registry.upsert(_experiment(1, policies=("thompson", "ucb"), traffic_pct=0.5))
    kernel = second.policies[0].kernel
    assert second is not first and not second.cold
    np.testing.assert_array_equal(kernel.cached_propensities(), before)
    assert kernel.propensity_version != kernel.version  # stale, as it was: refreshed later
    np.testing.assert_array_equal(second.policies[0].pulls, first.policies[0].pulls)


def test_a_reload_before_the_first_cache_leaves_the_experiment_cold():
    registry = Registry(Rng(7), SIGNER)
    registry.upsert(_experiment(1, policies=("thompson",)))
    second = registry.upsert(_experiment(1, policies=("thompson",), traffic_pct=0.5))
    assert second.cold and second.policies[0].kernel.propensity_version == -1
