//! `build_runs`: one row per run attempt, copied from the events (which carry the run, the verdict and the
//! transition whole, so nothing is recomputed here).

use async_trait::async_trait;
use domain::{BuildRunEvent, BuildStatus, JobReport, RunInfo, StoredEvent};
use sqlx::PgConnection;

use crate::{decode, Projection, ProjectionError};

pub struct BuildRunsProjection;

async fn upsert_run(
    tx: &mut PgConnection,
    id: &str,
    run: &RunInfo,
    status: BuildStatus,
    at: chrono::DateTime<chrono::Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO build_runs (build_run_id, project_id, provider, repository, workflow, branch, run_id,
                                 run_number, attempt, commit_sha, commit_message, author, url, status, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
         ON CONFLICT (build_run_id) DO UPDATE SET
             workflow = EXCLUDED.workflow, branch = EXCLUDED.branch,
             run_number = COALESCE(EXCLUDED.run_number, build_runs.run_number),
             commit_sha = COALESCE(EXCLUDED.commit_sha, build_runs.commit_sha),
             commit_message = COALESCE(EXCLUDED.commit_message, build_runs.commit_message),
             author = COALESCE(EXCLUDED.author, build_runs.author),
             url = COALESCE(EXCLUDED.url, build_runs.url),
             status = EXCLUDED.status, updated_at = EXCLUDED.updated_at",
    )
    .bind(id)
    .bind(run.project_id)
    .bind(&run.provider)
    .bind(&run.repository)
    .bind(&run.workflow)
    .bind(&run.branch)
    .bind(run.run_id)
    .bind(run.run_number)
    .bind(run.attempt)
    .bind(&run.commit_sha)
    .bind(&run.commit_message)
    .bind(&run.author)
    .bind(&run.url)
    .bind(status.as_str())
    .bind(at)
    .execute(tx)
    .await?;
    Ok(())
}

async fn record_job(
    tx: &mut PgConnection,
    id: &str,
    job: &JobReport,
) -> Result<(), ProjectionError> {
    let job_json = serde_json::json!({
        "name": job.name,
        "status": job.status,
        "outcome": job.outcome,
        "runner": job.runner,
        "started_at": job.started_at,
        "completed_at": job.completed_at,
        "failed_steps": job.failed_steps,
    });
    sqlx::query(
        "UPDATE build_runs SET jobs = jsonb_set(jobs, ARRAY[$2], $3) WHERE build_run_id = $1",
    )
    .bind(id)
    .bind(job.job_id.to_string())
    .bind(job_json)
    .execute(tx)
    .await?;
    Ok(())
}

#[async_trait]
impl Projection for BuildRunsProjection {
    fn name(&self) -> &'static str {
        "build_runs"
    }

    fn wants(&self, aggregate_type: &str) -> bool {
        aggregate_type == "BuildRun"
    }

    async fn apply(
        &self,
        tx: &mut PgConnection,
        event: &StoredEvent,
    ) -> Result<(), ProjectionError> {
        let id = event.aggregate_id.as_str();
        let at = event.recorded_at;
        match decode::<BuildRunEvent>(event)? {
            BuildRunEvent::BuildQueued { run, queued_at, .. } => {
                upsert_run(tx, id, &run, BuildStatus::Queued, at).await?;
                sqlx::query("UPDATE build_runs SET queued_at = $2 WHERE build_run_id = $1")
                    .bind(id)
                    .bind(queued_at)
                    .execute(tx)
                    .await?;
            }
            BuildRunEvent::BuildStarted {
                run, started_at, ..
            } => {
                upsert_run(tx, id, &run, BuildStatus::Started, at).await?;
                sqlx::query("UPDATE build_runs SET started_at = $2 WHERE build_run_id = $1")
                    .bind(id)
                    .bind(started_at)
                    .execute(tx)
                    .await?;
            }
            BuildRunEvent::JobQueued { job, .. }
            | BuildRunEvent::JobStarted { job, .. }
            | BuildRunEvent::JobFinished { job, .. } => record_job(tx, id, &job).await?,
            BuildRunEvent::BuildSucceeded { run, verdict, .. }
            | BuildRunEvent::BuildFailed { run, verdict, .. }
            | BuildRunEvent::BuildCancelled { run, verdict, .. } => {
                upsert_run(tx, id, &run, BuildStatus::Completed, at).await?;
                sqlx::query(
                    "UPDATE build_runs SET outcome = $2, transition = $3, failure_streak = $4,
                            started_at = COALESCE(started_at, $5), completed_at = $6, duration_secs = $7
                      WHERE build_run_id = $1",
                )
                .bind(id)
                .bind(verdict.outcome.as_str())
                .bind(verdict.transition.as_str())
                .bind(i32::try_from(verdict.failure_streak).unwrap_or(i32::MAX))
                .bind(verdict.started_at)
                .bind(verdict.completed_at)
                .bind(verdict.duration_secs)
                .execute(tx)
                .await?;
            }
        }
        Ok(())
    }
}
