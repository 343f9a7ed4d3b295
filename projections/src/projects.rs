//! `projects`: one row per project with its build counters and last verdict.
//!
//! The last verdict is the one completed last; verdicts of the same instant are ordered by their outcome and
//! transition names, an arbitrary order but a fixed one, so the row is the same whichever run the stream
//! delivered first (and equals a rebuild's).

use async_trait::async_trait;
use domain::{BuildRunEvent, ProjectEvent, StoredEvent};
use sqlx::PgConnection;

use std::collections::BTreeMap;

use uuid::Uuid;

use crate::{decode, micros, Projection, ProjectionError};

pub struct ProjectsProjection;

/// A batch's verdicts for one project: counts to add, and the newest verdict by (completion time, outcome,
/// transition), the order the row keeps.
#[derive(Default)]
struct Tally {
    finished: i32,
    succeeded: i32,
    failed: i32,
    cancelled: i32,
    newest: Option<(chrono::DateTime<chrono::Utc>, &'static str, &'static str)>,
}

/// Add the tallied verdicts to their projects in one statement. The stored last verdict is replaced only by a
/// newer one (compared byte-wise, as the tally was), so the result does not depend on how the verdicts were
/// batched or in which order different runs arrived.
async fn add_verdicts(
    tx: &mut PgConnection,
    tallies: &mut BTreeMap<Uuid, Tally>,
) -> Result<(), ProjectionError> {
    if tallies.is_empty() {
        return Ok(());
    }
    let mut columns = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut newest = (Vec::new(), Vec::new(), Vec::new());
    for (project, tally) in tallies.iter() {
        columns.0.push(*project);
        columns.1.push(tally.finished);
        columns.2.push(tally.succeeded);
        columns.3.push(tally.failed);
        columns.4.push(tally.cancelled);
        newest.0.push(tally.newest.map(|n| n.0));
        newest.1.push(tally.newest.map(|n| n.1));
        newest.2.push(tally.newest.map(|n| n.2));
    }
    sqlx::query(
        "UPDATE projects p SET builds_finished = p.builds_finished + t.finished,
                builds_succeeded = p.builds_succeeded + t.succeeded,
                builds_failed = p.builds_failed + t.failed,
                builds_cancelled = p.builds_cancelled + t.cancelled,
                last_build_at = GREATEST(p.last_build_at, t.at),
                last_outcome = CASE WHEN p.last_build_at IS NULL
                                      OR (t.at, t.outcome COLLATE \"C\", t.transition COLLATE \"C\")
                                         >= (p.last_build_at, p.last_outcome COLLATE \"C\", p.last_transition COLLATE \"C\")
                                    THEN t.outcome ELSE p.last_outcome END,
                last_transition = CASE WHEN p.last_build_at IS NULL
                                      OR (t.at, t.outcome COLLATE \"C\", t.transition COLLATE \"C\")
                                         >= (p.last_build_at, p.last_outcome COLLATE \"C\", p.last_transition COLLATE \"C\")
                                    THEN t.transition ELSE p.last_transition END
           FROM UNNEST($1::uuid[], $2::int[], $3::int[], $4::int[], $5::int[], $6::timestamptz[], $7::text[],
                       $8::text[]) AS t(project_id, finished, succeeded, failed, cancelled, at, outcome, transition)
          WHERE p.project_id = t.project_id",
    )
    .bind(columns.0)
    .bind(columns.1)
    .bind(columns.2)
    .bind(columns.3)
    .bind(columns.4)
    .bind(newest.0)
    .bind(newest.1)
    .bind(newest.2)
    .execute(&mut *tx)
    .await?;
    crate::changes::notify_projects(tx, "projects", tallies.keys().copied()).await?;
    tallies.clear();
    Ok(())
}

#[async_trait]
impl Projection for ProjectsProjection {
    fn name(&self) -> &'static str {
        "projects"
    }

    fn wants(&self, aggregate_type: &str) -> bool {
        matches!(aggregate_type, "Project" | "BuildRun")
    }

    /// Verdicts are tallied per project and added in one statement; a project event in between is applied in
    /// its place, after the verdicts before it, so a verdict never counts for a project not created yet.
    async fn apply_many(
        &self,
        tx: &mut PgConnection,
        events: &[&StoredEvent],
    ) -> Result<(), ProjectionError> {
        let mut tallies: BTreeMap<Uuid, Tally> = BTreeMap::new();
        for event in events {
            if event.aggregate_type != "BuildRun" {
                add_verdicts(tx, &mut tallies).await?;
                apply_project_event(tx, event).await?;
                continue;
            }
            let build: BuildRunEvent = decode(event)?;
            let Some((run, verdict)) = build.verdict() else {
                continue;
            };
            let health = verdict.outcome.health();
            let tally = tallies.entry(run.project_id).or_default();
            tally.finished += 1;
            tally.succeeded += i32::from(health == Some(true));
            tally.failed += i32::from(health == Some(false));
            tally.cancelled += i32::from(health.is_none());
            let this = (
                micros(verdict.completed_at),
                verdict.outcome.as_str(),
                verdict.transition.as_str(),
            );
            if tally.newest.is_none_or(|newest| this >= newest) {
                tally.newest = Some(this);
            }
        }
        add_verdicts(tx, &mut tallies).await
    }
}

async fn apply_project_event(
    tx: &mut PgConnection,
    event: &StoredEvent,
) -> Result<(), ProjectionError> {
    let at = event.recorded_at;
    match decode::<ProjectEvent>(event)? {
        ProjectEvent::ProjectCreated {
            project_id,
            name,
            secret_version,
            created_at,
            ..
        } => {
            sqlx::query(
                "INSERT INTO projects (project_id, name, secret_version, created_at, updated_at)
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (project_id) DO NOTHING",
            )
            .bind(project_id)
            .bind(name.as_str())
            .bind(secret_version)
            .bind(created_at)
            .bind(at)
            .execute(&mut *tx)
            .await?;
        }
        ProjectEvent::ProjectRenamed { name, .. } => {
            sqlx::query(
                "UPDATE projects SET name = $2, updated_at = $3 WHERE project_id::text = $1",
            )
            .bind(&event.aggregate_id)
            .bind(name.as_str())
            .bind(at)
            .execute(&mut *tx)
            .await?;
        }
        ProjectEvent::WebhookSecretRotated { secret_version, .. } => {
            sqlx::query(
                    "UPDATE projects SET secret_version = $2, updated_at = $3 WHERE project_id::text = $1",
                )
                .bind(&event.aggregate_id)
                .bind(secret_version)
                .bind(at)
                .execute(&mut *tx)
                .await?;
        }
        ProjectEvent::ProjectArchived { .. } => {
            sqlx::query(
                "UPDATE projects SET archived = true, updated_at = $2 WHERE project_id::text = $1",
            )
            .bind(&event.aggregate_id)
            .bind(at)
            .execute(&mut *tx)
            .await?;
        }
        ProjectEvent::WebhookPinged { .. } => return Ok(()),
    }
    let project = event.aggregate_id.parse().ok();
    crate::changes::notify(tx, "projects", project).await?;
    Ok(())
}
