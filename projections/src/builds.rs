//! `build_runs`: one row per run attempt, copied from the events (which carry the run, the verdict and the
//! transition whole, so nothing is recomputed here).

use async_trait::async_trait;
use domain::{BuildRunEvent, BuildStatus, JobReport, RunInfo, StoredEvent};
use sqlx::PgConnection;

use crate::{decode, Projection, ProjectionError};

pub struct BuildRunsProjection;

/// What an event says about the run's times and verdict; `None` leaves the stored value.
#[derive(Default)]
struct Changes<'a> {
    queued_at: Option<chrono::DateTime<chrono::Utc>>,
    started_at: Option<chrono::DateTime<chrono::Utc>>,
    verdict: Option<&'a domain::Verdict>,
}

/// One statement per event: insert the run or update it, keeping known values the event does not carry.
async fn upsert_run(
    tx: &mut PgConnection,
    id: &str,
    run: &RunInfo,
    status: BuildStatus,
    at: chrono::DateTime<chrono::Utc>,
    changes: Changes<'_>,
) -> Result<(), sqlx::Error> {
    let verdict = changes.verdict;
    sqlx::query(
        "INSERT INTO build_runs (build_run_id, project_id, provider, repository, workflow, branch, run_id,
                                 run_number, attempt, commit_sha, commit_message, author, url, status, updated_at,
                                 queued_at, started_at, outcome, transition, failure_streak, completed_at,
                                 duration_secs, first_seen_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22,
                 $15)
         ON CONFLICT (build_run_id) DO UPDATE SET
             workflow = EXCLUDED.workflow, branch = EXCLUDED.branch,
             run_number = COALESCE(EXCLUDED.run_number, build_runs.run_number),
             commit_sha = COALESCE(EXCLUDED.commit_sha, build_runs.commit_sha),
             commit_message = COALESCE(EXCLUDED.commit_message, build_runs.commit_message),
             author = COALESCE(EXCLUDED.author, build_runs.author),
             url = COALESCE(EXCLUDED.url, build_runs.url),
             status = EXCLUDED.status, updated_at = EXCLUDED.updated_at,
             queued_at = COALESCE(EXCLUDED.queued_at, build_runs.queued_at),
             started_at = CASE WHEN EXCLUDED.outcome IS NULL THEN COALESCE(EXCLUDED.started_at, build_runs.started_at)
                               ELSE COALESCE(build_runs.started_at, EXCLUDED.started_at) END,
             outcome = COALESCE(EXCLUDED.outcome, build_runs.outcome),
             transition = COALESCE(EXCLUDED.transition, build_runs.transition),
             failure_streak = COALESCE(EXCLUDED.failure_streak, build_runs.failure_streak),
             completed_at = COALESCE(EXCLUDED.completed_at, build_runs.completed_at),
             duration_secs = COALESCE(EXCLUDED.duration_secs, build_runs.duration_secs)",
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
    .bind(changes.queued_at)
    .bind(changes.started_at.or(verdict.and_then(|v| v.started_at)))
    .bind(verdict.map(|v| v.outcome.as_str()))
    .bind(verdict.map(|v| v.transition.as_str()))
    .bind(verdict.map(|v| i32::try_from(v.failure_streak).unwrap_or(i32::MAX)))
    .bind(verdict.map(|v| v.completed_at))
    .bind(verdict.and_then(|v| v.duration_secs))
    .execute(&mut *tx)
    .await?;
    crate::changes::notify(tx, "build_runs", Some(run.project_id)).await
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
    let project: Option<uuid::Uuid> = sqlx::query_scalar(
        "UPDATE build_runs SET jobs = jsonb_set(jobs, ARRAY[$2], $3) WHERE build_run_id = $1 RETURNING project_id",
    )
    .bind(id)
    .bind(job.job_id.to_string())
    .bind(job_json)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(project) = project {
        crate::changes::notify(tx, "build_runs", Some(project)).await?;
    }
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
                let changes = Changes {
                    queued_at: Some(queued_at),
                    ..Changes::default()
                };
                upsert_run(tx, id, &run, BuildStatus::Queued, at, changes).await?;
            }
            BuildRunEvent::BuildStarted {
                run, started_at, ..
            } => {
                let changes = Changes {
                    started_at: Some(started_at),
                    ..Changes::default()
                };
                upsert_run(tx, id, &run, BuildStatus::Started, at, changes).await?;
            }
            BuildRunEvent::JobQueued { job, .. }
            | BuildRunEvent::JobStarted { job, .. }
            | BuildRunEvent::JobFinished { job, .. } => record_job(tx, id, &job).await?,
            BuildRunEvent::BuildSucceeded { run, verdict, .. }
            | BuildRunEvent::BuildFailed { run, verdict, .. }
            | BuildRunEvent::BuildCancelled { run, verdict, .. } => {
                let changes = Changes {
                    verdict: Some(&verdict),
                    ..Changes::default()
                };
                upsert_run(tx, id, &run, BuildStatus::Completed, at, changes).await?;
            }
        }
        Ok(())
    }
}
