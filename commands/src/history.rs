//! [`BuildHistory`] over the `build_verdicts` table, which a trigger fills in the same transaction as each
//! verdict event (see `migrations/0002_command_side.sql`).

use async_trait::async_trait;
use domain::{BuildHistory, Outcome, PreviousRun, RunInfo};
use sqlx::PgPool;

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
        let row: Option<(String, String, i32)> = sqlx::query_as(
            "SELECT build_run_id, outcome, failure_streak FROM build_verdicts
              WHERE project_id = $1 AND provider = $2 AND repository = $3 AND workflow = $4
                AND COALESCE('b:' || branch, 'none') = COALESCE('b:' || $5, 'none')
                AND (run_id, attempt) < ($6, $7)
              ORDER BY run_id DESC, attempt DESC LIMIT 1",
        )
        .bind(run.project_id)
        .bind(&run.provider)
        .bind(&run.repository)
        .bind(&run.workflow)
        .bind(&run.branch)
        .bind(run.run_id)
        .bind(run.attempt)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| e.to_string())?;
        row.map(|(build_run_id, outcome, streak)| {
            Ok(PreviousRun {
                build_run_id,
                outcome: outcome.parse::<Outcome>().map_err(|e| e.to_string())?,
                failure_streak: u32::try_from(streak).unwrap_or(0),
            })
        })
        .transpose()
    }
}
