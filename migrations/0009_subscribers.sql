-- Subscribers (people and teams), their contacts and preferences, richer subscription filters, and the Telegram
-- bot's inbox.

CREATE TABLE subscribers
(
    subscriber_id      uuid PRIMARY KEY,
    name               text        NOT NULL,
    time_zone          text        NOT NULL,
    language           text        NOT NULL,
    quiet_start        time,
    quiet_end          time,
    digest_minutes     integer,
    -- Muted: `muted` with `muted_until` NULL is "until unmuted".
    muted              boolean     NOT NULL DEFAULT false,
    muted_until        timestamptz,
    created_at         timestamptz NOT NULL,
    updated_at         timestamptz NOT NULL,
    version            bigint      NOT NULL
);

CREATE TABLE contacts
(
    contact_id      uuid PRIMARY KEY,
    subscriber_id   uuid        NOT NULL,
    kind            text        NOT NULL,
    -- The address as the events record it (chat, email, push token or Web Push keys).
    address         jsonb       NOT NULL,
    chat_id         bigint,
    topic_id        bigint,
    email           text,
    verified        boolean     NOT NULL,
    enabled         boolean     NOT NULL,
    disabled_reason text,
    removed         boolean     NOT NULL DEFAULT false,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL
);
CREATE INDEX contacts_by_subscriber ON contacts (subscriber_id) WHERE NOT removed;
CREATE INDEX contacts_by_chat ON contacts (chat_id) WHERE kind = 'telegram' AND NOT removed;

-- Subscriptions now target a subscriber's contact (or, as before, a bare chat) and filter on projects or an
-- owner, branch and workflow globs, outcomes and a minimum interval. `filter` is the whole filter as recorded;
-- the columns beside it are what the planner's query selects on.
ALTER TABLE subscriptions
    ALTER COLUMN project_id DROP NOT NULL,
    ALTER COLUMN chat_id DROP NOT NULL,
    ADD COLUMN subscriber_id     uuid,
    ADD COLUMN contact_id        uuid,
    ADD COLUMN project_ids       uuid[]  NOT NULL DEFAULT '{}',
    ADD COLUMN owner             text,
    ADD COLUMN branches          text[]  NOT NULL DEFAULT '{}',
    ADD COLUMN exclude_branches  text[]  NOT NULL DEFAULT '{}',
    ADD COLUMN workflows         text[]  NOT NULL DEFAULT '{}',
    ADD COLUMN min_interval_secs integer NOT NULL DEFAULT 0,
    ADD COLUMN filter            jsonb;
UPDATE subscriptions
   SET project_ids = ARRAY[project_id],
       filter      = jsonb_build_object('scope', jsonb_build_object('projects', jsonb_build_array(project_id)),
                                        'outcomes', to_jsonb(outcomes));
ALTER TABLE subscriptions ALTER COLUMN filter SET NOT NULL;
DROP INDEX subscriptions_by_project;
CREATE INDEX subscriptions_by_projects ON subscriptions USING gin (project_ids) WHERE active;
CREATE INDEX subscriptions_by_owner ON subscriptions (owner) WHERE active AND owner IS NOT NULL;
CREATE INDEX subscriptions_by_contact ON subscriptions (contact_id) WHERE active;
CREATE INDEX subscriptions_by_chat ON subscriptions (chat_id) WHERE active;

-- The bot's inbox: every Telegram update is stored here (from getUpdates or the webhook) before Telegram is told
-- it arrived, and marked handled once its command ran, so a restart neither drops nor repeats a command.
CREATE TABLE telegram_updates
(
    update_id   bigint PRIMARY KEY,
    payload     jsonb       NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    handled_at  timestamptz
);
CREATE INDEX telegram_updates_pending ON telegram_updates (update_id) WHERE handled_at IS NULL;
