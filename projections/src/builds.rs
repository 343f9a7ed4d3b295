//! `build_runs`: one row per run attempt, copied from the events (which carry the run, the verdict and the
//! transition whole, so nothing is recomputed here).
//!
//! Events are applied a batch at a time: the batch's runs are read once, every event is folded onto them in
//! memory, and each touched run is written back once. A rebuild feeds thousands of events per batch, three or
//! more per run, and writing them one statement each was most of its time (docs/benchmarks.md); the live stream
//! feeds a handful, and goes through the same fold, so the two cannot disagree.

use std::collections::{BTreeSet, HashMap};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use domain::{BuildRunEvent, BuildStatus, JobReport, RunInfo, StoredEvent};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{decode, Projection, ProjectionError};

pub struct BuildRunsProjection;

/// A `build_runs` row, as the fold holds it.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
struct RunRow {
    build_run_id: String,
    project_id: Uuid,
    provider: String,
    repository: String,
    workflow: String,
    branch: Option<String>,
    run_id: i64,
    run_number: Option<i64>,
    attempt: i32,
    commit_sha: Option<String>,
    commit_message: Option<String>,
    author: Option<String>,
    url: Option<String>,
    status: String,
    outcome: Option<String>,
    transition: Option<String>,
    failure_streak: Option<i32>,
    queued_at: Option<DateTime<Utc>>,
    started_at: Option<DateTime<Utc>>,
    completed_at: Option<DateTime<Utc>>,
    duration_secs: Option<i64>,
    jobs: serde_json::Value,
    updated_at: DateTime<Utc>,
    first_seen_at: DateTime<Utc>,
}

/// What one run-level event says; `None` leaves the stored value.
#[derive(Default)]
struct Changes<'a> {
    queued_at: Option<DateTime<Utc>>,
    started_at: Option<DateTime<Utc>>,
    verdict: Option<&'a domain::Verdict>,
}

/// The run after a run-level event: a new row, or the stored one with what the event knows laid over it.
/// Descriptive fields keep their known value when the event lacks one; the start time of a finished run keeps
/// the earlier report (a verdict's own start time only fills a gap).
fn fold_run(
    stored: Option<RunRow>,
    id: &str,
    run: &RunInfo,
    status: BuildStatus,
    at: DateTime<Utc>,
    changes: &Changes<'_>,
) -> RunRow {
    let verdict = changes.verdict;
    let started_at = changes.started_at.or(verdict.and_then(|v| v.started_at));
    let outcome = verdict.map(|v| v.outcome.as_str().to_owned());
    let Some(old) = stored else {
        return RunRow {
            build_run_id: id.to_owned(),
            project_id: run.project_id,
            provider: run.provider.clone(),
            repository: run.repository.clone(),
            workflow: run.workflow.clone(),
            branch: run.branch.clone(),
            run_id: run.run_id,
            run_number: run.run_number,
            attempt: run.attempt,
            commit_sha: run.commit_sha.clone(),
            commit_message: run.commit_message.clone(),
            author: run.author.clone(),
            url: run.url.clone(),
            status: status.as_str().to_owned(),
            outcome,
            transition: verdict.map(|v| v.transition.as_str().to_owned()),
            failure_streak: verdict.map(streak),
            queued_at: changes.queued_at,
            started_at,
            completed_at: verdict.map(|v| v.completed_at),
            duration_secs: verdict.and_then(|v| v.duration_secs),
            jobs: serde_json::Value::Object(serde_json::Map::new()),
            updated_at: at,
            first_seen_at: at,
        };
    };
    RunRow {
        workflow: run.workflow.clone(),
        branch: run.branch.clone(),
        run_number: run.run_number.or(old.run_number),
        commit_sha: run.commit_sha.clone().or(old.commit_sha),
        commit_message: run.commit_message.clone().or(old.commit_message),
        author: run.author.clone().or(old.author),
        url: run.url.clone().or(old.url),
        status: status.as_str().to_owned(),
        updated_at: at,
        queued_at: changes.queued_at.or(old.queued_at),
        started_at: if outcome.is_none() {
            started_at.or(old.started_at)
        } else {
            old.started_at.or(started_at)
        },
        transition: verdict
            .map(|v| v.transition.as_str().to_owned())
            .or(old.transition),
        outcome: outcome.or(old.outcome),
        failure_streak: verdict.map(streak).or(old.failure_streak),
        completed_at: verdict.map(|v| v.completed_at).or(old.completed_at),
        duration_secs: verdict.and_then(|v| v.duration_secs).or(old.duration_secs),
        ..old
    }
}

fn streak(verdict: &domain::Verdict) -> i32 {
    i32::try_from(verdict.failure_streak).unwrap_or(i32::MAX)
}

/// Record a job's latest report on its run; a job of a run not seen yet changes nothing.
fn fold_job(row: Option<&mut RunRow>, job: &JobReport) {
    let Some(row) = row else { return };
    let report = serde_json::json!({
        "name": job.name,
        "status": job.status,
        "outcome": job.outcome,
        "runner": job.runner,
        "started_at": job.started_at,
        "completed_at": job.completed_at,
        "failed_steps": job.failed_steps,
    });
    if !row.jobs.is_object() {
        row.jobs = serde_json::Value::Object(serde_json::Map::new());
    }
    if let Some(jobs) = row.jobs.as_object_mut() {
        jobs.insert(job.job_id.to_string(), report);
    }
}

async fn load(tx: &mut PgConnection, ids: &[&str]) -> Result<HashMap<String, RunRow>, sqlx::Error> {
    // Planned for the ids given, every time: a plan cached while the table was small reads all of it (why:
    // LOAD_MANY in commands/src/event_log.rs).
    let rows: Vec<RunRow> = sqlx::query_as(
        "SELECT build_run_id, project_id, provider, repository, workflow, branch, run_id, run_number, attempt,
                commit_sha, commit_message, author, url, status, outcome, transition, failure_streak, queued_at,
                started_at, completed_at, duration_secs, jobs, updated_at, first_seen_at
           FROM build_runs WHERE build_run_id = ANY($1)",
    )
    .persistent(false)
    .bind(ids)
    .fetch_all(&mut *tx)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| (row.build_run_id.clone(), row))
        .collect())
}

/// Write the folded runs and queue their projects' change notices, one statement for all of them.
async fn store(tx: &mut PgConnection, rows: &[&RunRow]) -> Result<(), sqlx::Error> {
    macro_rules! column {
        ($field:ident) => {
            rows.iter().map(|r| r.$field.clone()).collect::<Vec<_>>()
        };
    }
    let statement = format!(
        "WITH stored AS (
         INSERT INTO build_runs (build_run_id, project_id, provider, repository, workflow, branch, run_id,
                                 run_number, attempt, commit_sha, commit_message, author, url, status, outcome,
                                 transition, failure_streak, queued_at, started_at, completed_at, duration_secs,
                                 jobs, updated_at, first_seen_at)
         SELECT * FROM UNNEST($1::text[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bigint[],
                              $8::bigint[], $9::int[], $10::text[], $11::text[], $12::text[], $13::text[], $14::text[],
                              $15::text[], $16::text[], $17::int[], $18::timestamptz[], $19::timestamptz[],
                              $20::timestamptz[], $21::bigint[], $22::jsonb[], $23::timestamptz[], $24::timestamptz[])
         ON CONFLICT (build_run_id) DO UPDATE SET
             workflow = EXCLUDED.workflow, branch = EXCLUDED.branch, run_number = EXCLUDED.run_number,
             commit_sha = EXCLUDED.commit_sha, commit_message = EXCLUDED.commit_message,
             author = EXCLUDED.author, url = EXCLUDED.url, status = EXCLUDED.status, outcome = EXCLUDED.outcome,
             transition = EXCLUDED.transition, failure_streak = EXCLUDED.failure_streak,
             queued_at = EXCLUDED.queued_at, started_at = EXCLUDED.started_at,
             completed_at = EXCLUDED.completed_at, duration_secs = EXCLUDED.duration_secs,
             jobs = EXCLUDED.jobs, updated_at = EXCLUDED.updated_at
         RETURNING project_id)
         {}",
        crate::changes::notify_stored("build_runs")
    );
    sqlx::query(&statement)
        .bind(column!(build_run_id))
        .bind(column!(project_id))
        .bind(column!(provider))
        .bind(column!(repository))
        .bind(column!(workflow))
        .bind(column!(branch))
        .bind(column!(run_id))
        .bind(column!(run_number))
        .bind(column!(attempt))
        .bind(column!(commit_sha))
        .bind(column!(commit_message))
        .bind(column!(author))
        .bind(column!(url))
        .bind(column!(status))
        .bind(column!(outcome))
        .bind(column!(transition))
        .bind(column!(failure_streak))
        .bind(column!(queued_at))
        .bind(column!(started_at))
        .bind(column!(completed_at))
        .bind(column!(duration_secs))
        .bind(column!(jobs))
        .bind(column!(updated_at))
        .bind(column!(first_seen_at))
        .execute(&mut *tx)
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

    async fn apply_many(
        &self,
        tx: &mut PgConnection,
        events: &[&StoredEvent],
    ) -> Result<(), ProjectionError> {
        let decoded = events
            .iter()
            .map(|event| Ok((*event, decode::<BuildRunEvent>(event)?)))
            .collect::<Result<Vec<_>, ProjectionError>>()?;
        let ids: Vec<&str> = events.iter().map(|e| e.aggregate_id.as_str()).collect();
        let mut runs = load(tx, &ids).await?;
        let mut touched = BTreeSet::new();
        for (event, build) in &decoded {
            let id = event.aggregate_id.as_str();
            let at = event.recorded_at;
            let (run, status, changes) = match build {
                BuildRunEvent::BuildQueued { run, queued_at, .. } => {
                    let changes = Changes {
                        queued_at: Some(*queued_at),
                        ..Changes::default()
                    };
                    (run, BuildStatus::Queued, changes)
                }
                BuildRunEvent::BuildStarted {
                    run, started_at, ..
                } => {
                    let changes = Changes {
                        started_at: Some(*started_at),
                        ..Changes::default()
                    };
                    (run, BuildStatus::Started, changes)
                }
                BuildRunEvent::JobQueued { job, .. }
                | BuildRunEvent::JobStarted { job, .. }
                | BuildRunEvent::JobFinished { job, .. } => {
                    let row = runs.get_mut(id);
                    if row.is_some() {
                        touched.insert(id);
                    }
                    fold_job(row, job);
                    continue;
                }
                BuildRunEvent::BuildSucceeded { run, verdict, .. }
                | BuildRunEvent::BuildFailed { run, verdict, .. }
                | BuildRunEvent::BuildCancelled { run, verdict, .. } => {
                    let changes = Changes {
                        verdict: Some(verdict),
                        ..Changes::default()
                    };
                    (run, BuildStatus::Completed, changes)
                }
            };
            let folded = fold_run(runs.remove(id), id, run, status, at, &changes);
            runs.insert(id.to_owned(), folded);
            touched.insert(id);
        }
        if touched.is_empty() {
            return Ok(());
        }
        let rows: Vec<&RunRow> = touched.iter().filter_map(|id| runs.get(*id)).collect();
        store(tx, &rows).await?;
        Ok(())
    }
}
