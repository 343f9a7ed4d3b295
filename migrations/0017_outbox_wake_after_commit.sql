-- The relay's wake-up moves out of the events' transaction (see commands/src/outbox_signal.rs).
-- A transaction that calls pg_notify takes a database-wide lock at commit and holds it until the commit is on
-- disk, so every append of events queued behind every other one's WAL flush: under `herald bench delivery`,
-- pg_stat_activity showed appends waiting on "Lock: object" most of the time. The writer now sends one
-- NOTIFY per burst of commits, after them; the relay still polls each second for writers that do not.
CREATE OR REPLACE FUNCTION herald_enqueue_outbox() RETURNS trigger
    LANGUAGE plpgsql AS
$$
BEGIN
    INSERT INTO outbox (global_seq) VALUES (NEW.global_seq);
    RETURN NEW;
END
$$;
