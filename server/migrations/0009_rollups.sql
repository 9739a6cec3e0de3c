-- Rollups: what the operator commands read instead of the raw log.
--
-- `banditctl experiment summary`, `decide` and `guardrails check` read these tables,
-- whose size grows with arms, minutes and users, not with decisions; the raw log can
-- then be dropped by retention while every aggregate stays. They are maintained by
-- banditd_rollup() (below), which every server runs every few seconds and every
-- command runs before it reads, so a command sees every committed row.
--
-- Exactly once. Each log row carries the id of the transaction that wrote it
-- (written_xid, migration 0008). A run takes a horizon below which no transaction that
-- could write the log is still running (banditd_rollup_horizon): every transaction
-- below it has committed or aborted, so the committed rows with written_xid in
-- [previous horizon, horizon) are all visible and final; the run rolls those up and
-- moves the horizon, in one transaction (under an advisory lock: one run at a time). A
-- row is therefore counted once, however late it was written, whatever its decided_at.
-- A long-running *writing* transaction holds the horizon back until it ends (read-only
-- ones do not: they have no xid).

-- The horizon: every committed log row with written_xid below it has been rolled up.
CREATE TABLE rollup_horizon (
    singleton   boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    horizon     bigint NOT NULL,
    rolled_at   timestamptz NOT NULL DEFAULT now()
);
INSERT INTO rollup_horizon (horizon) VALUES (0);

-- Per experiment, UTC day of the decision, policy, served_by and arm: decisions, and the
-- rewards of those decisions (n, sum, sum of squares of the raw reward values).
CREATE TABLE rollup_arm_days (
    experiment_key  integer NOT NULL,
    day             date NOT NULL,
    policy          text NOT NULL,
    served_by       text NOT NULL,
    arm             text NOT NULL,
    decisions       bigint NOT NULL DEFAULT 0,
    rewards         double precision NOT NULL DEFAULT 0,
    reward_sum      double precision NOT NULL DEFAULT 0,
    reward_sum_sq   double precision NOT NULL DEFAULT 0,
    PRIMARY KEY (experiment_key, day, policy, served_by, arm)
);

-- Per experiment and minute of the decision: decisions per served_by and arm (the
-- guardrails' sample and arm balance) ...
CREATE TABLE rollup_decision_minutes (
    experiment_key  integer NOT NULL,
    minute          timestamptz NOT NULL,
    served_by       text NOT NULL,
    arm             text NOT NULL,
    decisions       bigint NOT NULL,
    PRIMARY KEY (experiment_key, minute, served_by, arm)
);
-- ... and the latency histogram: bucket b holds latencies in [2^(b/16), 2^((b+1)/16)) us
-- (banditd_latency_bucket), so a percentile read as its bucket's upper edge is at most
-- 2^(1/16) - 1 = 4.4 % above the exact one, never below it.
CREATE TABLE rollup_latency_minutes (
    experiment_key  integer NOT NULL,
    minute          timestamptz NOT NULL,
    bucket          smallint NOT NULL,
    decisions       bigint NOT NULL,
    PRIMARY KEY (experiment_key, minute, bucket)
);
-- Per experiment and minute of the reward's commit: rewards per policy and served_by.
CREATE TABLE rollup_reward_minutes (
    experiment_key  integer NOT NULL,
    minute          timestamptz NOT NULL,
    policy          text NOT NULL,
    served_by       text NOT NULL,
    rewards         double precision NOT NULL,
    reward_sum      double precision NOT NULL,
    reward_sum_sq   double precision NOT NULL,
    PRIMARY KEY (experiment_key, minute, policy, served_by)
);

-- The user is the decision engine's unit of analysis (admin_cli/verdict_engine.py): per
-- user, the time of their first decision, their decisions, how many were rewarded and
-- the sum of those rewards. cohort 'experiment' holds the users served by a policy under
-- test (served_by POLICY or CONTROL), per policy; cohort 'outside' the users outside the
-- experiment's traffic (policy ''). Exact: one row per user, which is what it costs.
CREATE TABLE rollup_users (
    experiment_key  integer NOT NULL,
    cohort          text NOT NULL CHECK (cohort IN ('experiment', 'outside')),
    policy          text NOT NULL,
    user_id         text NOT NULL,
    first_at        timestamptz NOT NULL,
    decisions       bigint NOT NULL,
    rewarded        bigint NOT NULL,
    total           double precision NOT NULL,
    PRIMARY KEY (experiment_key, cohort, policy, user_id)
);
-- The users summed per experiment day of their first decision (day 0 is the day of the
-- experiment's start_at, as the decision engine counts): users, users with a reward
-- (n), and the sum and sum of squares of their totals — the sufficient statistics of
-- the per-user test, kept exact as users move (a late row can make a first decision
-- earlier) and totals grow.
CREATE TABLE rollup_user_days (
    experiment_key  integer NOT NULL,
    cohort          text NOT NULL,
    policy          text NOT NULL,
    day             integer NOT NULL,
    users           bigint NOT NULL DEFAULT 0,
    n               bigint NOT NULL DEFAULT 0,
    s               double precision NOT NULL DEFAULT 0,
    ss              double precision NOT NULL DEFAULT 0,
    PRIMARY KEY (experiment_key, cohort, policy, day)
);
-- Rewards whose decision row was not written yet when they were rolled up (the decision
-- log writes every 100 ms, and keeps rows while PostgreSQL is away): their user is
-- unknown, so their per-user part waits here until the decision arrives.
CREATE TABLE rollup_pending_rewards (
    experiment_key  integer NOT NULL,
    decided_at      timestamptz NOT NULL,
    decision_id     text NOT NULL,
    value           double precision NOT NULL,
    PRIMARY KEY (experiment_key, decided_at, decision_id)
);

-- The histogram bucket of a latency in microseconds (see rollup_latency_minutes), in
-- float8: numeric's log costs ten times more. A latency that is exactly a bucket edge
-- may fall in the bucket below it, whose upper edge is then the latency itself.
CREATE FUNCTION banditd_latency_bucket(latency_us integer) RETURNS smallint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN floor(16 * ln(greatest(latency_us, 1)::float8) / ln(2.0::float8))::smallint;

-- The decision engine's day of a user's first decision: whole days since the start.
CREATE FUNCTION banditd_experiment_day(first_at timestamptz, start_at timestamptz)
RETURNS integer LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN greatest(0, floor(extract(epoch FROM first_at - coalesce(start_at, first_at)) / 86400))::int;

-- The horizon a run may roll up to. The xmin of a snapshot is the oldest transaction
-- running in the whole cluster; when this role can see every session
-- (pg_read_all_stats, or a superuser) the transactions of other databases are left
-- out, since they cannot write these tables and one long one would otherwise hold the
-- rollups back. The snapshot comes first: a transaction not among the sessions read
-- after it had either finished (the run's later statements see it) or took its xid
-- after the snapshot (at or above its xmax). Prepared transactions count too.
CREATE FUNCTION banditd_rollup_horizon() RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    snap pg_snapshot := pg_current_snapshot();
    next_xid bigint := pg_snapshot_xmax(snap)::text::bigint;
    oldest bigint;
BEGIN
    IF NOT pg_has_role('pg_read_all_stats', 'USAGE') THEN
        RETURN pg_snapshot_xmin(snap)::text::bigint;
    END IF;
    PERFORM pg_stat_clear_snapshot();  -- sessions as they are now, not as cached
    -- a 32-bit xid's full id is the one within 2^31 below next_xid
    SELECT min(next_xid - ((next_xid - xid::text::bigint) & 4294967295)) INTO oldest
    FROM (SELECT backend_xid AS xid FROM pg_stat_activity
          WHERE datname = current_database() AND backend_xid IS NOT NULL
            AND pid <> pg_backend_pid()
          UNION ALL
          SELECT transaction FROM pg_prepared_xacts
          WHERE database = current_database()) running;
    RETURN least(coalesce(oldest, next_xid), next_xid);
END $$;

-- Roll the log up to the current horizon; returns the decision and reward rows rolled
-- up (0, 0 when another run holds the lock and `wait` is false).
CREATE FUNCTION banditd_rollup(wait boolean DEFAULT true, OUT rolled_decisions bigint,
                               OUT rolled_rewards bigint)
LANGUAGE plpgsql AS $$
DECLARE
    lo bigint;
    hi bigint;
BEGIN
    rolled_decisions := 0;
    rolled_rewards := 0;
    IF wait THEN
        PERFORM pg_advisory_xact_lock(hashtext('banditd_rollup'));
    ELSIF NOT pg_try_advisory_xact_lock(hashtext('banditd_rollup')) THEN
        RETURN;
    END IF;
    SELECT horizon INTO lo FROM rollup_horizon;
    hi := banditd_rollup_horizon();
    IF hi <= lo THEN
        RETURN;
    END IF;

    -- The run's rows, read once (per session the tables are created once and emptied
    -- at every commit).
    IF to_regclass('pg_temp.rollup_new_decisions') IS NULL THEN
        CREATE TEMP TABLE rollup_new_decisions (
            experiment_key integer, user_id text, policy text, arm text, served_by text,
            decided_at timestamptz, latency_us integer) ON COMMIT DELETE ROWS;
        CREATE TEMP TABLE rollup_new_rewards (
            experiment_key integer, decided_at timestamptz, decision_id text, policy text,
            arm text, served_by text, value double precision, committed_at timestamptz,
            user_id text) ON COMMIT DELETE ROWS;
    END IF;
    INSERT INTO rollup_new_decisions
    SELECT experiment_key, user_id, policy, arm, served_by, decided_at, latency_us
    FROM decisions WHERE written_xid >= lo AND written_xid < hi;
    GET DIAGNOSTICS rolled_decisions = ROW_COUNT;
    -- each with its decision's user, when that decision's row is there already
    INSERT INTO rollup_new_rewards
    SELECT r.experiment_key, r.decided_at, r.decision_id, r.policy, r.arm, r.served_by,
           r.value, r.committed_at, d.user_id
    FROM rewards r LEFT JOIN decisions d USING (experiment_key, decided_at, decision_id)
    WHERE r.written_xid >= lo AND r.written_xid < hi;
    GET DIAGNOSTICS rolled_rewards = ROW_COUNT;

    -- Day and minute counts. Rows are added in key order, so two runs never deadlock
    -- (only one runs at a time anyway) and each page is visited once.
    INSERT INTO rollup_arm_days AS t (experiment_key, day, policy, served_by, arm, decisions,
                                      rewards, reward_sum, reward_sum_sq)
    SELECT experiment_key, day, policy, served_by, arm, sum(d), sum(n), sum(s), sum(ss)
    FROM (SELECT experiment_key, (decided_at AT TIME ZONE 'UTC')::date AS day, policy,
                 served_by, arm, 1 AS d, 0 AS n, 0 AS s, 0 AS ss
          FROM rollup_new_decisions
          UNION ALL
          SELECT experiment_key, (decided_at AT TIME ZONE 'UTC')::date, policy, served_by,
                 arm, 0, 1, value, banditd_square(value)
          FROM rollup_new_rewards) rows
    GROUP BY experiment_key, day, policy, served_by, arm
    ORDER BY experiment_key, day, policy, served_by, arm
    ON CONFLICT (experiment_key, day, policy, served_by, arm) DO UPDATE SET
        decisions = t.decisions + EXCLUDED.decisions,
        rewards = t.rewards + EXCLUDED.rewards,
        reward_sum = t.reward_sum + EXCLUDED.reward_sum,
        reward_sum_sq = t.reward_sum_sq + EXCLUDED.reward_sum_sq;

    INSERT INTO rollup_decision_minutes AS t (experiment_key, minute, served_by, arm, decisions)
    SELECT experiment_key, date_trunc('minute', decided_at), served_by, arm, count(*)
    FROM rollup_new_decisions GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
    ON CONFLICT (experiment_key, minute, served_by, arm) DO UPDATE SET
        decisions = t.decisions + EXCLUDED.decisions;

    INSERT INTO rollup_latency_minutes AS t (experiment_key, minute, bucket, decisions)
    SELECT experiment_key, date_trunc('minute', decided_at), banditd_latency_bucket(latency_us),
           count(*)
    FROM rollup_new_decisions GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
    ON CONFLICT (experiment_key, minute, bucket) DO UPDATE SET
        decisions = t.decisions + EXCLUDED.decisions;

    INSERT INTO rollup_reward_minutes AS t (experiment_key, minute, policy, served_by, rewards,
                                            reward_sum, reward_sum_sq)
    SELECT experiment_key, date_trunc('minute', committed_at), policy, served_by, count(*),
           sum(value), sum(banditd_square(value))
    FROM rollup_new_rewards GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
    ON CONFLICT (experiment_key, minute, policy, served_by) DO UPDATE SET
        rewards = t.rewards + EXCLUDED.rewards,
        reward_sum = t.reward_sum + EXCLUDED.reward_sum,
        reward_sum_sq = t.reward_sum_sq + EXCLUDED.reward_sum_sq;

    -- The per-user part of a reward needs its user, from its decision: the new rewards
    -- whose decision is there, and those that waited for theirs and find it now.
    WITH waiting AS (
        INSERT INTO rollup_pending_rewards
        SELECT experiment_key, decided_at, decision_id, value FROM rollup_new_rewards
        WHERE user_id IS NULL AND served_by IN ('POLICY', 'CONTROL', 'OUTSIDE_TRAFFIC')
        ON CONFLICT DO NOTHING
    ),
    matched AS (
        DELETE FROM rollup_pending_rewards p
        USING decisions d
        WHERE d.experiment_key = p.experiment_key AND d.decided_at = p.decided_at
          AND d.decision_id = p.decision_id
        RETURNING d.experiment_key, d.user_id, d.policy, d.served_by, d.decided_at, p.value
    ),
    touched AS (
        SELECT experiment_key, user_id, policy, served_by, decided_at, 1 AS decisions,
               0 AS rewarded, 0::float8 AS total
        FROM rollup_new_decisions
        WHERE served_by IN ('POLICY', 'CONTROL', 'OUTSIDE_TRAFFIC')
        UNION ALL
        -- a rewarded decision's time bounds its user's first decision too, and may
        -- arrive here before that decision's own row is rolled up
        SELECT experiment_key, user_id, policy, served_by, decided_at, 0, 1, value
        FROM matched
        UNION ALL
        SELECT experiment_key, user_id, policy, served_by, decided_at, 0, 1, value
        FROM rollup_new_rewards
        WHERE user_id IS NOT NULL AND served_by IN ('POLICY', 'CONTROL', 'OUTSIDE_TRAFFIC')
    ),
    delta AS (
        SELECT experiment_key,
               CASE WHEN served_by = 'OUTSIDE_TRAFFIC' THEN 'outside' ELSE 'experiment' END
                   AS cohort,
               CASE WHEN served_by = 'OUTSIDE_TRAFFIC' THEN '' ELSE policy END AS policy,
               user_id, min(decided_at) AS first_at, sum(decisions) AS decisions,
               sum(rewarded) AS rewarded, sum(total) AS total
        FROM touched GROUP BY 1, 2, 3, 4
    ),
    old AS (
        SELECT u.* FROM rollup_users u
        JOIN delta d USING (experiment_key, cohort, policy, user_id)
    ),
    new AS (
        SELECT d.experiment_key, d.cohort, d.policy, d.user_id,
               least(o.first_at, d.first_at) AS first_at,
               coalesce(o.decisions, 0) + d.decisions AS decisions,
               coalesce(o.rewarded, 0) + d.rewarded AS rewarded,
               coalesce(o.total, 0) + d.total AS total
        FROM delta d LEFT JOIN old o USING (experiment_key, cohort, policy, user_id)
    ),
    upserted AS (
        INSERT INTO rollup_users AS u
        SELECT * FROM new ORDER BY experiment_key, cohort, policy, user_id
        ON CONFLICT (experiment_key, cohort, policy, user_id) DO UPDATE SET
            first_at = EXCLUDED.first_at, decisions = EXCLUDED.decisions,
            rewarded = EXCLUDED.rewarded, total = EXCLUDED.total
    ),
    -- A user's contribution to the day rows: removed where it was, added where it is.
    moves AS (
        SELECT o.experiment_key, o.cohort, o.policy, o.first_at, -1 AS users,
               -(o.rewarded > 0)::int AS n, -o.total AS s, -banditd_square(o.total) AS ss
        FROM old o
        UNION ALL
        SELECT experiment_key, cohort, policy, first_at, 1, (rewarded > 0)::int, total,
               banditd_square(total)
        FROM new
    )
    INSERT INTO rollup_user_days AS t (experiment_key, cohort, policy, day, users, n, s, ss)
    SELECT m.experiment_key, m.cohort, m.policy,
           banditd_experiment_day(m.first_at, e.start_at) AS day,
           sum(m.users), sum(m.n), sum(m.s), sum(m.ss)
    FROM moves m JOIN experiments e ON e.key = m.experiment_key
    GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
    ON CONFLICT (experiment_key, cohort, policy, day) DO UPDATE SET
        users = t.users + EXCLUDED.users, n = t.n + EXCLUDED.n,
        s = t.s + EXCLUDED.s, ss = t.ss + EXCLUDED.ss;

    UPDATE rollup_horizon SET horizon = hi, rolled_at = now();
END $$;

-- Everything logged so far.
SELECT banditd_rollup();
