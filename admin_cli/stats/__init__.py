"""Pure, database-free statistics behind ``banditctl``: one concept per module.

* :mod:`.sufficient` — ``SampleStats(n, sum, sum_sq)``, the sufficient statistics.
* :mod:`.intervals` — Wilson / t / normal intervals, absolute and relative (delta) lift.
* :mod:`.sequential` — always-valid p-values and intervals (normal-mixture mSPRT).
* :mod:`.srm` — sample-ratio-mismatch χ² test.
* :mod:`.trend` — weighted least-squares slope of a daily rate.
* :mod:`.guardrail_rules` — guardrail checks and the automatic-rollback rule.
* :mod:`.verdict` — the ship / iterate / kill verdict engine.

Every result object has ``to_dict()`` returning strict-JSON-serialisable data
(non-finite floats become ``None``).
"""

from banditd.admin_cli.stats.guardrail_rules import (
    CheckResult,
    GuardrailInputs,
    PolicyDrop,
    RollbackDecision,
    check_arm_share,
    check_error_rate,
    check_p95_latency,
    check_reward_drop,
    p95,
    reward_drops,
    rollback_decision,
    run_checks,
)
from banditd.admin_cli.stats.intervals import (
    Interval,
    absolute_lift,
    mean_interval,
    relative_lift,
    reward_interval,
    wilson_interval,
)
from banditd.admin_cli.stats.sequential import Look, SequentialResult, msprt, msprt_path
from banditd.admin_cli.stats.srm import SRMResult, srm_test
from banditd.admin_cli.stats.sufficient import SampleStats, pool
from banditd.admin_cli.stats.trend import TrendResult, daily_trend
from banditd.admin_cli.stats.verdict import (
    ArmSummary,
    GuardrailState,
    PolicyData,
    PolicyVerdict,
    Recommendation,
    VerdictReport,
    reach_verdict,
)

__all__ = [
    "ArmSummary",
    "CheckResult",
    "GuardrailInputs",
    "GuardrailState",
    "Interval",
    "Look",
    "PolicyData",
    "PolicyDrop",
    "PolicyVerdict",
    "Recommendation",
    "RollbackDecision",
    "SRMResult",
    "SampleStats",
    "SequentialResult",
    "TrendResult",
    "VerdictReport",
    "absolute_lift",
    "check_arm_share",
    "check_error_rate",
    "check_p95_latency",
    "check_reward_drop",
    "daily_trend",
    "mean_interval",
    "msprt",
    "msprt_path",
    "p95",
    "pool",
    "reach_verdict",
    "relative_lift",
    "reward_drops",
    "reward_interval",
    "rollback_decision",
    "run_checks",
    "srm_test",
    "wilson_interval",
]
