-- "The previous verdict of this workflow on this branch" must stay one index probe however long the history.
-- The first index could not give that: the lookup matched the branch with `IS NOT DISTINCT FROM` (a run may have
-- no branch), which Postgres cannot use as an index condition, so every webhook scanned and sorted all of its
-- workflow's verdicts: 118 ms at 100,000 runs, and ingest slowed down as the history grew (docs/benchmarks.md).
-- Keyed by `COALESCE('b:' || branch, 'none')` instead, equality covers both cases exactly (every branch key
-- starts with "b:", the missing branch's does not), and the newest earlier run is the first entry: 0.03 ms.
CREATE INDEX build_verdicts_previous
    ON build_verdicts (project_id, provider, repository, workflow, (COALESCE('b:' || branch, 'none')),
                       run_id DESC, attempt DESC);

DROP INDEX build_verdicts_lookup;
