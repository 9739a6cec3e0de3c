-- banditd core schema: experiments, learned statistics, the decision log and rewards.

-- Keys that sign decision ids (HMAC), so that any replica can attribute a Reward
-- without a lookup and nobody can forge one. Rows are created by `banditctl migrate`.
CREATE TABLE signing_keys (
    key_id      smallint PRIMARY KEY CHECK (key_id BETWEEN 0 AND 255),
    secret      bytea NOT NULL CHECK (octet_length(secret) >= 32),
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE experiments (
    key                    integer GENERATED ALWAYS AS IDENTITY UNIQUE,
    id                     text PRIMARY KEY,
    name                   text NOT NULL,
    arms                   text[] NOT NULL CHECK (cardinality(arms) >= 1),
    policies               text[] NOT NULL CHECK (cardinality(policies) >= 1),
    policy_split           double precision[] NOT NULL,
    traffic_pct            double precision NOT NULL CHECK (traffic_pct >= 0 AND traffic_pct <= 1),
    default_policy         text NOT NULL DEFAULT 'control',
    policy_params          jsonb NOT NULL DEFAULT '{}',
    reward_min             double precision NOT NULL DEFAULT 0,
    reward_max             double precision NOT NULL DEFAULT 1 CHECK (reward_max > reward_min),
    reward_window_seconds  double precision NOT NULL DEFAULT 86400 CHECK (reward_window_seconds > 0),
    default_reward         double precision NOT NULL DEFAULT 0,
    guardrails             jsonb NOT NULL DEFAULT '{}',
    decision_criteria      jsonb NOT NULL DEFAULT '{}',
    status                 text NOT NULL DEFAULT 'draft'
                           CHECK (status IN ('draft', 'running', 'stopped', 'rolled_back', 'completed')),
    duration_days          double precision CHECK (duration_days > 0),
    start_at               timestamptz,
    end_at                 timestamptz,
    salt                   text NOT NULL,
    notes                  text NOT NULL DEFAULT '',
    status_reason          text,
    status_changed_by      text,
    created_at             timestamptz NOT NULL DEFAULT now(),
    updated_at             timestamptz NOT NULL DEFAULT now(),
    deleted_at             timestamptz,
    CHECK (array_length(policies, 1) = array_length(policy_split, 1)),
    CHECK (default_reward >= reward_min AND default_reward <= reward_max)
);

-- Audit trail: who changed what, when, old -> new.
CREATE TABLE experiment_events (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    experiment_id  text NOT NULL REFERENCES experiments (id) ON DELETE CASCADE,
    at             timestamptz NOT NULL DEFAULT now(),
    actor          text NOT NULL,
    action         text NOT NULL,
    old_value      jsonb,
    new_value      jsonb,
    reason         text
);
CREATE INDEX experiment_events_by_experiment ON experiment_events (experiment_id, at);

-- Sufficient statistics per (experiment, policy, arm), over committed rewards only.
-- Rewards are normalised to [0, 1] by the experiment's reward range before they count.
CREATE TABLE arm_stats (
    experiment_key  integer NOT NULL REFERENCES experiments (key) ON DELETE CASCADE,
    policy          text NOT NULL,
    arm             text NOT NULL,
    pulls           double precision NOT NULL DEFAULT 0 CHECK (pulls >= 0),
    reward_sum      double precision NOT NULL DEFAULT 0,
    reward_sum_sq   double precision NOT NULL DEFAULT 0,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (experiment_key, policy, arm)
);

-- The decision log, written in batches off the request path.
CREATE TABLE decisions (
    decision_id     text PRIMARY KEY,
    experiment_key  integer NOT NULL,
    user_id         text NOT NULL,
    policy          text NOT NULL,
    arm             text NOT NULL,
    propensity      double precision NOT NULL,
    served_by       text NOT NULL,
    decided_at      timestamptz NOT NULL,
    latency_us      integer NOT NULL,
    context         jsonb,
    server_id       text NOT NULL
);
CREATE INDEX decisions_by_time ON decisions (experiment_key, decided_at);

-- One row per rewarded decision: decision_id is unique, so a retried Reward (on any
-- replica) conflicts at commit and counts nothing. source is 'client' or 'default'
-- (the experiment's default reward, applied when the wait window closed).
CREATE TABLE rewards (
    decision_id     text PRIMARY KEY,
    experiment_key  integer NOT NULL,
    policy          text NOT NULL,
    arm             text NOT NULL,
    served_by       text NOT NULL,
    value           double precision NOT NULL,
    source          text NOT NULL CHECK (source IN ('client', 'default')),
    decided_at      timestamptz NOT NULL,
    event_time      timestamptz,
    committed_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX rewards_by_time ON rewards (experiment_key, committed_at);

-- Calls per experiment, method and status code, per minute and server: what the
-- error-rate guardrail reads. Latency lives on each decision row.
CREATE TABLE rpc_counts (
    experiment_key  integer NOT NULL,
    minute          timestamptz NOT NULL,
    server_id       text NOT NULL,
    method          text NOT NULL,
    code            text NOT NULL,
    calls           bigint NOT NULL,
    PRIMARY KEY (experiment_key, minute, server_id, method, code)
);
