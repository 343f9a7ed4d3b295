-- The event log. Columns up to `metadata` are exactly postgres-es 0.5's `events` table, so its repository
-- keeps working unchanged (its INSERT names its columns). Herald adds:
--   global_seq   a total order over the log, for rebuilds and backups (postgres-es has none);
--   recorded_at  when the event was committed;
--   txid         the writing transaction, so offset readers can wait for older transactions to finish:
--                read only rows with txid < pg_snapshot_xmin(pg_current_snapshot()).
CREATE TABLE events
(
    aggregate_type text                         NOT NULL,
    aggregate_id   text                         NOT NULL,
    sequence       bigint CHECK (sequence >= 0) NOT NULL,
    event_type     text                         NOT NULL,
    event_version  text                         NOT NULL,
    payload        json                         NOT NULL,
    metadata       json                         NOT NULL,
    global_seq     bigserial                    NOT NULL,
    recorded_at    timestamptz                  NOT NULL DEFAULT now(),
    txid           xid8                         NOT NULL DEFAULT pg_current_xact_id(),
    PRIMARY KEY (aggregate_type, aggregate_id, sequence)
);
CREATE UNIQUE INDEX events_global_seq ON events (global_seq);

-- Events are facts: never edited, never deleted. Corrections are new events.
CREATE FUNCTION herald_events_are_immutable() RETURNS trigger
    LANGUAGE plpgsql AS
$$
BEGIN
    RAISE EXCEPTION 'events are immutable: % on events is not allowed', TG_OP;
END
$$;
CREATE TRIGGER events_immutable
    BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION herald_events_are_immutable();
CREATE TRIGGER events_no_truncate
    BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION herald_events_are_immutable();

-- The transactional outbox: a row per event, written by a trigger in the transaction that appends the event,
-- so "committed" and "will be published" are the same fact. The relay deletes a row once the stream has it.
CREATE TABLE outbox
(
    global_seq bigint PRIMARY KEY,
    enqueued_at timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION herald_enqueue_outbox() RETURNS trigger
    LANGUAGE plpgsql AS
$$
BEGIN
    INSERT INTO outbox (global_seq) VALUES (NEW.global_seq);
    -- Wake the relay at commit; Postgres folds identical notifications of one transaction into one.
    PERFORM pg_notify('herald_outbox', '');
    RETURN NEW;
END
$$;
CREATE TRIGGER events_to_outbox
    AFTER INSERT ON events
    FOR EACH ROW EXECUTE FUNCTION herald_enqueue_outbox();
