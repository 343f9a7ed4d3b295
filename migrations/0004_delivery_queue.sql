-- The delivery workers' work queue: one row per notification that still has to be sent, claimed with
-- FOR UPDATE SKIP LOCKED so any number of workers share it. Filled idempotently from NotificationPlanned events;
-- the outcome of every attempt is recorded as events on the Notification aggregate, not here.
CREATE TABLE delivery_queue
(
    notification_id uuid PRIMARY KEY,
    next_attempt_at timestamptz NOT NULL,
    enqueued_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX delivery_queue_due ON delivery_queue (next_attempt_at);
