-- Read models. Each is owned by one projection, updated idempotently from the stream, and can be rebuilt from
-- the log at any time. Nothing here is a source of truth.

-- The last aggregate sequence each projection applied, updated in the same transaction as the read model.
CREATE TABLE projection_checkpoints
(
    projection     text   NOT NULL,
    aggregate_type text   NOT NULL,
    aggregate_id   text   NOT NULL,
    last_sequence  bigint NOT NULL,
    PRIMARY KEY (projection, aggregate_type, aggregate_id)
);

CREATE TABLE projects
(
    project_id       uuid PRIMARY KEY,
    name             text        NOT NULL,
    archived         boolean     NOT NULL DEFAULT false,
    secret_version   integer     NOT NULL,
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL,
    builds_finished  integer     NOT NULL DEFAULT 0,
    builds_succeeded integer     NOT NULL DEFAULT 0,
    builds_failed    integer     NOT NULL DEFAULT 0,
    builds_cancelled integer     NOT NULL DEFAULT 0,
    last_build_at    timestamptz,
    last_outcome     text,
    last_transition  text
);

CREATE TABLE build_runs
(
    build_run_id   text PRIMARY KEY,
    project_id     uuid        NOT NULL,
    provider       text        NOT NULL,
    repository     text        NOT NULL,
    workflow       text        NOT NULL,
    branch         text,
    run_id         bigint      NOT NULL,
    run_number     bigint,
    attempt        integer     NOT NULL,
    commit_sha     text,
    commit_message text,
    author         text,
    url            text,
    status         text        NOT NULL,
    outcome        text,
    transition     text,
    failure_streak integer,
    queued_at      timestamptz,
    started_at     timestamptz,
    completed_at   timestamptz,
    duration_secs  bigint,
    jobs           jsonb       NOT NULL DEFAULT '{}',
    updated_at     timestamptz NOT NULL
);
CREATE INDEX build_runs_by_project ON build_runs (project_id, updated_at DESC, build_run_id);

CREATE TABLE subscriptions
(
    subscription_id uuid PRIMARY KEY,
    project_id      uuid        NOT NULL,
    channel         text        NOT NULL,
    chat_id         bigint      NOT NULL,
    outcomes        text[]      NOT NULL,
    active          boolean     NOT NULL,
    created_at      timestamptz NOT NULL,
    removed_at      timestamptz
);
CREATE INDEX subscriptions_by_project ON subscriptions (project_id) WHERE active;

CREATE TABLE notifications
(
    notification_id     uuid PRIMARY KEY,
    build_run_id        text        NOT NULL,
    project_id          uuid        NOT NULL,
    subscription_id     uuid        NOT NULL,
    channel             text,
    status              text        NOT NULL,
    reason              text,
    attempts            integer     NOT NULL DEFAULT 0,
    provider_message_id text,
    last_error          text,
    next_attempt_at     timestamptz,
    planned_at          timestamptz NOT NULL,
    updated_at          timestamptz NOT NULL
);
CREATE INDEX notifications_by_build ON notifications (build_run_id);
