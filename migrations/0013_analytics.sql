-- Analytics over the read models. The dashboard, statistics, time series and build analytics are queries over
-- `build_runs` (one row per run attempt, with its times and verdict) rather than pre-aggregated rollup tables:
-- exact percentiles need the durations themselves, and a time series "per day in Europe/Berlin" cannot be
-- summed from UTC days. The indexes below keep those queries to index range scans (docs/analytics.md has the
-- EXPLAIN ANALYZE figures on a million runs).

-- When Herald first heard of a run: the order the build listing pages through (cursor pagination needs a key
-- that does not move while a run goes from queued to completed, which `updated_at` does).
ALTER TABLE build_runs ADD COLUMN first_seen_at timestamptz;
UPDATE build_runs SET first_seen_at = COALESCE(LEAST(queued_at, started_at, updated_at), updated_at);
ALTER TABLE build_runs ALTER COLUMN first_seen_at SET NOT NULL;

CREATE INDEX build_runs_seen ON build_runs (first_seen_at DESC, build_run_id DESC);
CREATE INDEX build_runs_by_project_seen ON build_runs (project_id, first_seen_at DESC, build_run_id DESC);
-- Finished runs by project and completion time: statistics, time series, analytics, the overview's windows.
CREATE INDEX build_runs_by_project_completed ON build_runs (project_id, completed_at)
    INCLUDE (workflow, branch, outcome, duration_secs)
    WHERE completed_at IS NOT NULL;
CREATE INDEX build_runs_completed ON build_runs (completed_at) WHERE completed_at IS NOT NULL;
-- Runs still going, for the overview's "running" state.
CREATE INDEX build_runs_running ON build_runs (project_id) WHERE status <> 'completed';

-- Notification metrics: when a message was delivered and how long it took from planning.
ALTER TABLE notifications
    ADD COLUMN delivered_at timestamptz,
    ADD COLUMN latency_ms   bigint;
CREATE INDEX notifications_by_planned ON notifications (planned_at);

-- The live feed behind `/api/v1/stream`: one row per build change, numbered in commit order so that a client
-- resuming after `feed_seq` N misses nothing and sees nothing twice. `feed_seq` is assigned under a
-- transaction-scoped advisory lock (so a smaller number can never commit after a larger one is visible), not by
-- a sequence (a sequence is owned by one table, and the blue/green rebuild swaps tables).
CREATE TABLE live_feed
(
    feed_seq     bigint PRIMARY KEY,
    global_seq   bigint      NOT NULL UNIQUE,
    project_id   uuid        NOT NULL,
    build_run_id text        NOT NULL,
    kind         text        NOT NULL,
    payload      jsonb       NOT NULL,
    recorded_at  timestamptz NOT NULL
);
CREATE INDEX live_feed_by_project ON live_feed (project_id, feed_seq);
