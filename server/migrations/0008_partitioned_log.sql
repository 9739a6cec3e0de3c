-- The decision log and the rewards, range-partitioned by the decision's UTC day.
--
-- Both tables are partitioned by `decided_at`, the decision's time, which the signed
-- decision id carries: a reward always lands in the partition of its decision's day,
-- so a day's decisions and their rewards are retained and dropped together, and the
-- key that makes a retried Reward a no-op can include the partition column.
--
-- Keys. Each table's one B-tree is its primary key (experiment_key, decided_at,
-- decision_id): it serves every range query by experiment and time (the default
-- rewards' scan, exports, evaluation), the join of a reward to its decision, and its
-- entries arrive in time order within each experiment, so B-tree pages fill as they
-- are appended instead of splitting in the middle (the text id alone sorts by policy
-- and arm before time). The decision id determines experiment_key and decided_at, so
-- the rewards' key on the same three columns is as unique as the id alone. Nothing
-- reads the raw rewards by commit time (the guardrails read the per-minute rollups).
--
-- `written_xid` is the id of the transaction that wrote the row (64-bit, never wraps):
-- the rollups read each committed transaction's rows exactly once by taking the rows
-- with xid in [last horizon, current horizon), where the horizon is the oldest xid
-- still running (banditd.server.rollups). A BRIN index makes that range cheap: rows
-- are appended to the heap in roughly xid order.
--
-- The existing rows are copied into the partitioned tables; the partitions their
-- days need are created first (banditd_ensure_log_partitions).

ALTER TABLE decisions RENAME TO decisions_unpartitioned;
ALTER TABLE decisions_unpartitioned RENAME CONSTRAINT decisions_pkey TO decisions_unpartitioned_pkey;
ALTER INDEX decisions_by_time RENAME TO decisions_unpartitioned_by_time;
ALTER TABLE rewards RENAME TO rewards_unpartitioned;
ALTER TABLE rewards_unpartitioned RENAME CONSTRAINT rewards_pkey TO rewards_unpartitioned_pkey;
ALTER INDEX rewards_by_time RENAME TO rewards_unpartitioned_by_time;

CREATE TABLE decisions (
    decision_id     text NOT NULL,
    experiment_key  integer NOT NULL,
    user_id         text NOT NULL,
    policy          text NOT NULL,
    arm             text NOT NULL,
    propensity      double precision NOT NULL,
    served_by       text NOT NULL,
    decided_at      timestamptz NOT NULL,
    latency_us      integer NOT NULL,
    context         jsonb,
    server_id       text NOT NULL,
    candidates      text[],
    written_xid     bigint NOT NULL DEFAULT pg_current_xact_id()::text::bigint,
    PRIMARY KEY (experiment_key, decided_at, decision_id)
) PARTITION BY RANGE (decided_at);
CREATE INDEX decisions_by_xid ON decisions USING brin (written_xid)
    WITH (pages_per_range = 32, autosummarize = on);

-- source is 'client' or 'default' (the experiment's default reward, applied when the
-- wait window closed).
CREATE TABLE rewards (
    decision_id     text NOT NULL,
    experiment_key  integer NOT NULL,
    policy          text NOT NULL,
    arm             text NOT NULL,
    served_by       text NOT NULL,
    value           double precision NOT NULL,
    source          text NOT NULL CHECK (source IN ('client', 'default')),
    decided_at      timestamptz NOT NULL,
    event_time      timestamptz,
    committed_at    timestamptz NOT NULL DEFAULT now(),
    written_xid     bigint NOT NULL DEFAULT pg_current_xact_id()::text::bigint,
    PRIMARY KEY (experiment_key, decided_at, decision_id)
) PARTITION BY RANGE (decided_at);
CREATE INDEX rewards_by_xid ON rewards USING brin (written_xid)
    WITH (pages_per_range = 32, autosummarize = on);

-- The partitions of the UTC days first_day .. last_day of both tables, created if
-- missing; returns how many were created. New partitions are created empty and then
-- attached: ATTACH takes a SHARE UPDATE EXCLUSIVE lock on the parent, which does not
-- wait for (or block) the writers and readers of the log, where CREATE TABLE ...
-- PARTITION OF would take an ACCESS EXCLUSIVE one. The advisory lock serialises
-- callers (every server and the scheduler call this).
CREATE FUNCTION banditd_ensure_log_partitions(first_day date, last_day date)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    day date;
    parent text;
    child text;
    created integer := 0;
BEGIN
    IF last_day - first_day > 3660 THEN
        RAISE EXCEPTION 'refusing to create % days of log partitions', last_day - first_day + 1;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('banditd_ensure_log_partitions'));
    FOR day IN SELECT generate_series(first_day, last_day, interval '1 day')::date LOOP
        FOREACH parent IN ARRAY ARRAY['decisions', 'rewards'] LOOP
            child := parent || '_' || to_char(day, 'YYYYMMDD');
            CONTINUE WHEN to_regclass(child) IS NOT NULL;
            EXECUTE format('CREATE TABLE %I (LIKE %I INCLUDING DEFAULTS INCLUDING CONSTRAINTS)',
                           child, parent);
            EXECUTE format('ALTER TABLE %I ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                           parent, child,
                           day::timestamp AT TIME ZONE 'UTC',
                           (day + 1)::timestamp AT TIME ZONE 'UTC');
            created := created + 1;
        END LOOP;
    END LOOP;
    RETURN created;
END $$;

SELECT banditd_ensure_log_partitions(
    least((now() AT TIME ZONE 'UTC')::date,
          (SELECT min(decided_at AT TIME ZONE 'UTC')::date FROM decisions_unpartitioned),
          (SELECT min(decided_at AT TIME ZONE 'UTC')::date FROM rewards_unpartitioned)),
    greatest((now() AT TIME ZONE 'UTC')::date + 7,
             (SELECT max(decided_at AT TIME ZONE 'UTC')::date FROM decisions_unpartitioned),
             (SELECT max(decided_at AT TIME ZONE 'UTC')::date FROM rewards_unpartitioned)));

INSERT INTO decisions (decision_id, experiment_key, user_id, policy, arm, propensity,
                       served_by, decided_at, latency_us, context, server_id, candidates)
SELECT decision_id, experiment_key, user_id, policy, arm, propensity, served_by,
       decided_at, latency_us, context, server_id, candidates
FROM decisions_unpartitioned;
-- A reward's decided_at is its id's millisecond, the logged decision's was the server's
-- microsecond: the copy takes the decision's, so that a reward and its decision agree
-- on the key (new decisions are logged at the id's millisecond).
INSERT INTO rewards (decision_id, experiment_key, policy, arm, served_by, value, source,
                     decided_at, event_time, committed_at)
SELECT r.decision_id, r.experiment_key, r.policy, r.arm, r.served_by, r.value, r.source,
       coalesce(d.decided_at, r.decided_at), r.event_time, r.committed_at
FROM rewards_unpartitioned r LEFT JOIN decisions_unpartitioned d USING (decision_id);

DROP TABLE decisions_unpartitioned;
DROP TABLE rewards_unpartitioned;

-- How long the raw log is kept (`banditctl retention set`), in whole days, since
-- partitions are days. The deployment's row has experiment_id NULL; an experiment's
-- row overrides it for that experiment; NULL days keep that table's rows forever. A
-- day's partition is dropped once it is older than every retention that applies to
-- an experiment that was live that day (banditd.admin_cli.retention).
CREATE TABLE log_retention (
    experiment_id   text UNIQUE REFERENCES experiments (id) ON DELETE CASCADE,
    decisions_days  integer CHECK (decisions_days >= 1),
    rewards_days    integer CHECK (rewards_days >= 1),
    updated_by      text NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX log_retention_deployment ON log_retention ((true))
    WHERE experiment_id IS NULL;
