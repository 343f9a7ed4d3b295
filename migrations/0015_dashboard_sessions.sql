-- The web dashboard's logins. A person logs in with an API key once; the browser then holds a random session
-- token in an HttpOnly cookie instead of the key, so the key never sits in the page's reach, logging out ends
-- that one session, and revoking the key ends every session made with it.

-- A key may stand for one subscriber: whoever holds it manages that subscriber's own subscriptions and
-- preferences under `/api/v1/me`, whatever the key's role.
ALTER TABLE api_keys ADD COLUMN subscriber_id uuid;

CREATE TABLE dashboard_sessions
(
    -- SHA-256 of the token; the token itself is only in the browser's cookie.
    token_hash bytea PRIMARY KEY,
    key_id     uuid        NOT NULL REFERENCES api_keys (key_id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL
);
CREATE INDEX dashboard_sessions_expiry ON dashboard_sessions (expires_at);
