-- Secrets Herald makes for itself, one row per purpose (the key that signs one-click unsubscribe links). Kept out
-- of the event log and the configuration: created on first use, the first writer wins, every process reads the
-- same row.
CREATE TABLE server_secrets
(
    name       text PRIMARY KEY,
    secret     bytea       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
