-- The recent webhook deliveries of each project and what became of them, as a CI system's settings page shows
-- them. An operational log, not the event log: rejected deliveries are listed here and nowhere else, and only the
-- newest deliveries per project are kept.
CREATE TABLE webhook_deliveries
(
    id           bigserial PRIMARY KEY,
    project_id   uuid        NOT NULL,
    provider     text        NOT NULL,
    event        text,
    delivery_id  text,
    received_at  timestamptz NOT NULL,
    outcome      text        NOT NULL CHECK (outcome IN ('accepted', 'duplicate', 'stale', 'ignored', 'rejected')),
    reason       text,
    http_status  integer     NOT NULL,
    build_run_id text,
    events       text[]      NOT NULL DEFAULT '{}'
);
CREATE INDEX webhook_deliveries_by_project ON webhook_deliveries (project_id, id DESC);
