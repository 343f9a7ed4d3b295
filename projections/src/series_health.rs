//! `series_health`: per workflow and branch, the newest judged run and, while it fails, when the failing began.
//! What the dashboard overview reads to say which projects are red and since when.
//!
//! The state follows the newest run by completion time: a verdict older than the one stored (a late webhook)
//! leaves it as it is. Two verdicts completed in the same instant are ordered by build run id, so the row does
//! not depend on which arrived first: the stream delivers different runs in any order, and a rebuild reads
//! them in log order; both must end in the same row (the fault-injection suite compares them). Cancelled,
//! skipped and action-required runs say nothing about health and are skipped.

use async_trait::async_trait;
use domain::{BuildRunEvent, StoredEvent};
use sqlx::PgConnection;

use crate::{decode, Projection, ProjectionError};

pub struct SeriesHealthProjection;

#[async_trait]
impl Projection for SeriesHealthProjection {
    fn name(&self) -> &'static str {
        "series_health"
    }

    fn wants(&self, aggregate_type: &str) -> bool {
        aggregate_type == "BuildRun"
    }

    async fn apply(
        &self,
        tx: &mut PgConnection,
        event: &StoredEvent,
    ) -> Result<(), ProjectionError> {
        let build: BuildRunEvent = decode(event)?;
        let Some((run, verdict)) = build.verdict() else {
            return Ok(());
        };
        let Some(passed) = verdict.outcome.health() else {
            return Ok(());
        };
        sqlx::query(
            "INSERT INTO series_health (project_id, workflow, branch, last_completed_at, last_outcome,
                                        last_build_run_id, failing_since)
             VALUES ($1, $2, $3, $4, $5, $6, CASE WHEN $7 THEN NULL ELSE $4 END)
             ON CONFLICT (project_id, workflow, branch) DO UPDATE SET
                 failing_since = CASE WHEN (EXCLUDED.last_completed_at, EXCLUDED.last_build_run_id) < (series_health.last_completed_at, series_health.last_build_run_id)
                                          THEN series_health.failing_since
                                      WHEN $7 THEN NULL
                                      ELSE COALESCE(series_health.failing_since, EXCLUDED.last_completed_at) END,
                 last_outcome = CASE WHEN (EXCLUDED.last_completed_at, EXCLUDED.last_build_run_id) < (series_health.last_completed_at, series_health.last_build_run_id)
                                         THEN series_health.last_outcome ELSE EXCLUDED.last_outcome END,
                 last_build_run_id = CASE WHEN (EXCLUDED.last_completed_at, EXCLUDED.last_build_run_id) < (series_health.last_completed_at, series_health.last_build_run_id)
                                         THEN series_health.last_build_run_id ELSE EXCLUDED.last_build_run_id END,
                 last_completed_at = GREATEST(series_health.last_completed_at, EXCLUDED.last_completed_at)",
        )
        .bind(run.project_id)
        .bind(&run.workflow)
        .bind(run.branch.as_deref().unwrap_or(""))
        .bind(verdict.completed_at)
        .bind(verdict.outcome.as_str())
        .bind(&event.aggregate_id)
        .bind(passed)
        .execute(&mut *tx)
        .await?;
        crate::changes::notify(tx, "series_health", Some(run.project_id)).await?;
        Ok(())
    }
}
