-- A reader of the log in global order (a rebuild) must never pass an event that is still being written.
-- `global_seq` is drawn as a row is inserted, so a transaction still running can hold a smaller number than rows
-- another transaction has already committed; and the writing transaction's id does not order them either (a
-- transaction that appends two events draws two numbers with another transaction's number between them). A
-- reader that filtered on transaction ids could read 4 and 6, move its position to 6, and never read the 5 that
-- committed a moment later.
--
-- So every statement that inserts events first takes a shared advisory lock, held until its transaction ends,
-- and a reader that wants a safe horizon takes the same lock exclusively for an instant: once it has it, no
-- append is in flight, and every number up to the largest committed one is settled (committed or rolled back).
-- Appends never wait on each other; only while a reader asks for its horizon do new appends wait for the ones
-- already running to finish (milliseconds; a rebuild asks once per pass over what is settled).
CREATE FUNCTION herald_events_append_lock() RETURNS trigger
    LANGUAGE plpgsql AS
$$
BEGIN
    -- The key is b'HRLDAPND' read as a big-endian integer; projections::log::APPEND_LOCK is the same number.
    PERFORM pg_advisory_xact_lock_shared(5211311574858354244);
    RETURN NULL;
END
$$;

CREATE TRIGGER events_append_lock
    BEFORE INSERT ON events
    FOR EACH STATEMENT
EXECUTE FUNCTION herald_events_append_lock();
