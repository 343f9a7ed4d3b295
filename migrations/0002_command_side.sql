-- Tables the write side reads while it decides. None of them is a read model.

-- Webhook secrets live here, never in the event log (which is streamed and kept forever): events carry only
-- the secret's version and fingerprint.
CREATE TABLE project_secrets
(
    project_id uuid        NOT NULL,
    version    integer     NOT NULL CHECK (version > 0),
    secret     text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project_id, version)
);

-- The verdicts (passed/failed) of finished build runs, indexed for the BuildRun aggregate's question "what was
-- the previous verdict of this workflow on this branch?". It is derived from the log by a trigger in the same
-- transaction as the event, so it holds exactly what is committed, never more, never less.
CREATE TABLE build_verdicts
(
    build_run_id   text PRIMARY KEY,
    project_id     uuid        NOT NULL,
    provider       text        NOT NULL,
    repository     text        NOT NULL,
    workflow       text        NOT NULL,
    branch         text,
    run_id         bigint      NOT NULL,
    attempt        integer     NOT NULL,
    outcome        text        NOT NULL,
    failure_streak integer     NOT NULL,
    completed_at   timestamptz NOT NULL
);
CREATE INDEX build_verdicts_lookup
    ON build_verdicts (project_id, provider, repository, workflow, branch, run_id DESC, attempt DESC);

CREATE FUNCTION herald_index_build_verdict() RETURNS trigger
    LANGUAGE plpgsql AS
$$
DECLARE
    body json := NEW.payload -> NEW.event_type;
BEGIN
    INSERT INTO build_verdicts (build_run_id, project_id, provider, repository, workflow, branch, run_id, attempt,
                                outcome, failure_streak, completed_at)
    VALUES (NEW.aggregate_id,
            (body -> 'run' ->> 'project_id')::uuid,
            body -> 'run' ->> 'provider',
            body -> 'run' ->> 'repository',
            body -> 'run' ->> 'workflow',
            body -> 'run' ->> 'branch',
            (body -> 'run' ->> 'run_id')::bigint,
            (body -> 'run' ->> 'attempt')::integer,
            body -> 'verdict' ->> 'outcome',
            (body -> 'verdict' ->> 'failure_streak')::integer,
            (body -> 'verdict' ->> 'completed_at')::timestamptz)
    ON CONFLICT (build_run_id) DO NOTHING;
    RETURN NEW;
END
$$;
CREATE TRIGGER events_index_build_verdicts
    AFTER INSERT ON events
    FOR EACH ROW
    WHEN (NEW.aggregate_type = 'BuildRun' AND NEW.event_type IN ('BuildSucceeded', 'BuildFailed'))
EXECUTE FUNCTION herald_index_build_verdict();
