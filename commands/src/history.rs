//! [`BuildHistory`] over the `build_verdicts` table, which a trigger fills in the same transaction as each
//! verdict event (see `migrations/0002_command_side.sql`).

use std::sync::Arc;

use async_trait::async_trait;
use domain::{BuildHistory, Outcome, PreviousRun, RunInfo};
use sqlx::postgres::PgArguments;
use sqlx::query::QueryAs;
use sqlx::{PgPool, Postgres};

/// The previous verdict of a run, with the run's project, provider, repository, workflow, branch, run id and
/// attempt as `$1` to `$7`. A macro, so that the webhook's combined read (`webhook_target`) can `concat!` the
/// same text into its statement.
macro_rules! previous_verdict_sql {
    () => {
        "SELECT build_run_id, outcome, failure_streak FROM build_verdicts
          WHERE project_id = $1 AND provider = $2 AND repository = $3 AND workflow = $4
            AND COALESCE('b:' || branch, 'none') = COALESCE('b:' || $5, 'none')
            AND (run_id, attempt) < ($6, $7)
          ORDER BY run_id DESC, attempt DESC LIMIT 1"
    };
}
pub(crate) use previous_verdict_sql;

pub struct PgBuildHistory {
    pool: PgPool,
}

impl PgBuildHistory {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

#[async_trait]
impl BuildHistory for PgBuildHistory {
    /// The latest earlier run (by provider run id, then attempt) of the same workflow on the same branch that
    /// passed or failed. Earlier by run id, not by arrival: a late webhook for an old run does not become "previous".
    /// The branch is matched through the key of the `build_verdicts_previous` index (migration 0016), so this is
    /// one index probe whatever the length of the history.
    async fn previous_run(&self, run: &RunInfo) -> Result<Option<PreviousRun>, String> {
        let query = sqlx::query_as(previous_verdict_sql!()).bind(run.project_id);
        let row: Option<(String, String, i32)> = bind_run_key(query, run)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| e.to_string())?;
        row.map(|(build_run_id, outcome, streak)| previous(build_run_id, &outcome, streak))
            .transpose()
    }
}

/// `$2` to `$7` of [`previous_verdict_sql`]: the run's provider, repository, workflow, branch, run id and attempt.
pub(crate) fn bind_run_key<'q, O>(
    query: QueryAs<'q, Postgres, O, PgArguments>,
    run: &'q RunInfo,
) -> QueryAs<'q, Postgres, O, PgArguments> {
    query
        .bind(&run.provider)
        .bind(&run.repository)
        .bind(&run.workflow)
        .bind(&run.branch)
        .bind(run.run_id)
        .bind(run.attempt)
}

/// A `build_verdicts` row as the aggregate takes it.
pub(crate) fn previous(
    build_run_id: String,
    outcome: &str,
    failure_streak: i32,
) -> Result<PreviousRun, String> {
    Ok(PreviousRun {
        build_run_id,
        outcome: outcome.parse::<Outcome>().map_err(|e| e.to_string())?,
        failure_streak: u32::try_from(failure_streak).unwrap_or(0),
    })
}

/// The previous verdict of one run, already read (with the webhook that completes it, see `webhook_target`);
/// a question about any other run goes to `rest`. The aggregate asks about the run it holds, which can differ
/// from the webhook's (it keeps the first run info it saw), so the answer is only reused for an equal key.
pub(crate) struct AnsweredHistory {
    pub(crate) run: RunInfo,
    pub(crate) previous: Result<Option<PreviousRun>, String>,
    pub(crate) rest: Arc<dyn BuildHistory>,
}

#[async_trait]
impl BuildHistory for AnsweredHistory {
    async fn previous_run(&self, run: &RunInfo) -> Result<Option<PreviousRun>, String> {
        if same_key(run, &self.run) {
            return self.previous.clone();
        }
        self.rest.previous_run(run).await
    }
}

/// Equal in every field the previous-verdict query binds.
fn same_key(a: &RunInfo, b: &RunInfo) -> bool {
    (
        a.project_id,
        &a.provider,
        &a.repository,
        &a.workflow,
        &a.branch,
        a.run_id,
        a.attempt,
    ) == (
        b.project_id,
        &b.provider,
        &b.repository,
        &b.workflow,
        &b.branch,
        b.run_id,
        b.attempt,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    /// Answers every question with one run's verdict, standing in for the table.
    struct Table(PreviousRun);

    #[async_trait]
    impl BuildHistory for Table {
        async fn previous_run(&self, _: &RunInfo) -> Result<Option<PreviousRun>, String> {
            Ok(Some(self.0.clone()))
        }
    }

    fn run(branch: Option<&str>, run_id: i64) -> RunInfo {
        RunInfo {
            project_id: Uuid::nil(),
            provider: "github".into(),
            repository: "acme/app".into(),
            workflow: "ci".into(),
            branch: branch.map(str::to_owned),
            tag: None,
            pull_request: None,
            run_id,
            run_key: None,
            run_number: None,
            attempt: 1,
            commit_sha: Some("abc".into()),
            commit_message: None,
            author: None,
            url: None,
        }
    }

    fn verdict(build_run_id: &str, outcome: Outcome) -> PreviousRun {
        PreviousRun {
            build_run_id: build_run_id.into(),
            outcome,
            failure_streak: 0,
        }
    }

    #[tokio::test]
    async fn a_read_answer_serves_its_own_run_only_and_other_runs_ask_the_table() {
        let answered = AnsweredHistory {
            run: run(Some("main"), 7),
            previous: Ok(None),
            rest: Arc::new(Table(verdict("from-table", Outcome::Failed))),
        };
        // The same key, whatever the fields the query does not bind (the commit).
        let mut same = run(Some("main"), 7);
        same.commit_sha = Some("def".into());
        assert_eq!(answered.previous_run(&same).await, Ok(None));
        for other in [run(Some("dev"), 7), run(None, 7), run(Some("main"), 8)] {
            assert_eq!(
                answered.previous_run(&other).await,
                Ok(Some(verdict("from-table", Outcome::Failed)))
            );
        }
        let failed = AnsweredHistory {
            previous: Err("bad outcome".into()),
            ..answered
        };
        assert_eq!(
            failed.previous_run(&run(Some("main"), 7)).await,
            Err("bad outcome".into())
        );
    }

    #[test]
    fn a_stored_verdict_with_an_unknown_outcome_is_an_error() {
        assert_eq!(
            previous("r".into(), "failed", 2),
            Ok(PreviousRun {
                build_run_id: "r".into(),
                outcome: Outcome::Failed,
                failure_streak: 2
            })
        );
        assert!(previous("r".into(), "exploded", 0).is_err());
    }
}
