-- Progress of read-model rebuilds and snapshots, so a rebuild resumes after a crash and its progress can be
-- watched from the API. `id` is 'live' for the blue/green rebuild, 'snapshot:<name>' for a point-in-time copy.
CREATE TABLE rebuild_runs
(
    id                text PRIMARY KEY,
    target            text        NOT NULL,
    schema_name       text        NOT NULL,
    as_of             timestamptz,
    status            text        NOT NULL CHECK (status IN ('running', 'done', 'failed')),
    last_global_seq   bigint      NOT NULL,
    head_global_seq   bigint      NOT NULL,
    applied           bigint      NOT NULL,
    events_per_second double precision,
    started_at        timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL,
    finished_at       timestamptz,
    error             text
);
