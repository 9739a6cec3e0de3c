-- Operations: server heartbeats, scheduler jobs, guardrail and decision-engine runs.

-- Each replica upserts its row every few seconds; `banditctl status` reads them.
CREATE TABLE server_heartbeats (
    server_id    text PRIMARY KEY,
    address      text NOT NULL,
    version      text NOT NULL,
    started_at   timestamptz NOT NULL,
    last_seen    timestamptz NOT NULL,
    state        text NOT NULL CHECK (state IN ('serving', 'draining', 'stopped')),
    experiments  integer NOT NULL DEFAULT 0
);

-- The scheduler's jobs with their last and next runs.
CREATE TABLE scheduler_jobs (
    job          text PRIMARY KEY,
    schedule     text NOT NULL,
    last_run_at  timestamptz,
    last_status  text,
    last_detail  text,
    next_run_at  timestamptz,
    owner        text,
    updated_at   timestamptz NOT NULL DEFAULT now()
);

-- Every guardrail check run, with its per-check results and what it did.
CREATE TABLE guardrail_runs (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    experiment_id  text NOT NULL REFERENCES experiments (id) ON DELETE CASCADE,
    at             timestamptz NOT NULL DEFAULT now(),
    window_seconds double precision NOT NULL,
    status         text NOT NULL,
    results        jsonb NOT NULL,
    rolled_back    boolean NOT NULL DEFAULT false,
    reasons        text[] NOT NULL DEFAULT '{}'
);
CREATE INDEX guardrail_runs_by_experiment ON guardrail_runs (experiment_id, at);

-- Every decision-engine run: per-policy analysis and the recommendation.
CREATE TABLE decision_runs (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    experiment_id   text NOT NULL REFERENCES experiments (id) ON DELETE CASCADE,
    at              timestamptz NOT NULL DEFAULT now(),
    recommendation  text NOT NULL,
    result          jsonb NOT NULL
);
CREATE INDEX decision_runs_by_experiment ON decision_runs (experiment_id, at);
