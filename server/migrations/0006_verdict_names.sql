-- The ship / iterate / kill judgement of an experiment is its verdict: "decision" names
-- only what Select returns (the `decisions` log, decision ids). Renames keep every row.

ALTER TABLE experiments RENAME COLUMN decision_criteria TO verdict_criteria;

ALTER TABLE decision_runs RENAME TO verdict_runs;
ALTER INDEX decision_runs_by_experiment RENAME TO verdict_runs_by_experiment;
ALTER SEQUENCE decision_runs_id_seq RENAME TO verdict_runs_id_seq;

-- Constraint names were derived from the old table and column names: the primary key
-- (and its index), the foreign key and, from PostgreSQL 18, the named NOT NULL
-- constraints. Which of these exist depends on the server version, hence the loop.
DO $$
DECLARE
    c record;
BEGIN
    FOR c IN
        SELECT conrelid::regclass AS tbl, conname FROM pg_constraint
        WHERE (conrelid = 'verdict_runs'::regclass AND conname LIKE 'decision\_runs\_%')
           OR (conrelid = 'experiments'::regclass AND conname LIKE '%decision\_criteria%')
    LOOP
        EXECUTE format('ALTER TABLE %s RENAME CONSTRAINT %I TO %I',
                       c.tbl, c.conname, replace(c.conname, 'decision_', 'verdict_'));
    END LOOP;
END
$$;

-- The scheduler's daily job is keyed by name; its last and next runs carry over.
UPDATE scheduler_jobs SET job = 'verdict' WHERE job = 'decision';

-- experiment_events keeps its rows as written: the audit trail records each change under
-- the name the setting had when it was made.
