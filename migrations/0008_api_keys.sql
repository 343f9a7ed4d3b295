-- API keys. The key itself is shown once at creation and never stored: only its argon2 hash. `prefix` is the
-- public part every key starts with (`hrld_<prefix>_<secret>`), so a key is found by an index lookup and one
-- hash verification, and operators can tell keys apart in logs and listings without seeing a secret.
--
-- Keys are access control, not facts about builds or notifications, so they live in a table rather than the
-- event log (which is streamed to every consumer and kept forever). Rows are never deleted: a revoked key keeps
-- its row, with when it was revoked, for the audit of who could do what when.
CREATE TABLE api_keys
(
    key_id       uuid PRIMARY KEY,
    prefix       text        NOT NULL UNIQUE,
    name         text        NOT NULL,
    role         text        NOT NULL CHECK (role IN ('admin', 'operator', 'reader', 'auditor', 'producer')),
    -- For producers: the projects whose webhooks the key may post. Empty for every other role.
    projects     uuid[]      NOT NULL DEFAULT '{}',
    hash         text        NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz,
    revoked_at   timestamptz,
    last_used_at timestamptz
);

-- The trace id of the request that caused a notification, so the delivery attempt logs under the same trace as
-- the webhook that started it.
ALTER TABLE delivery_queue ADD COLUMN trace_id text;
