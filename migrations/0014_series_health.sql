-- The dashboard overview's "which series are failing, since when": one row per workflow and branch, kept by the
-- `series_health` projection from each run's verdict. Computing it from `build_runs` at read time took seconds on a
-- million runs (the newest run of every series, then the last success before it); this table has one row per series.
CREATE TABLE series_health
(
    project_id        uuid        NOT NULL,
    workflow          text        NOT NULL,
    -- '' for runs without a branch (a primary key column cannot be NULL).
    branch            text        NOT NULL,
    last_completed_at timestamptz NOT NULL,
    last_outcome      text        NOT NULL,
    last_build_run_id text        NOT NULL,
    -- The first failure of the current streak; NULL while the series passes.
    failing_since     timestamptz,
    PRIMARY KEY (project_id, workflow, branch)
);
CREATE INDEX series_health_failing ON series_health (project_id) WHERE failing_since IS NOT NULL;
