//! `projects`: one row per project with its build counters and last verdict.
//!
//! The last verdict is the one completed last; verdicts of the same instant are ordered by their outcome and
//! transition names, an arbitrary order but a fixed one, so the row is the same whichever run the stream
//! delivered first (and equals a rebuild's).

use async_trait::async_trait;
use domain::{BuildRunEvent, ProjectEvent, StoredEvent};
use sqlx::PgConnection;

use crate::{decode, Projection, ProjectionError};

pub struct ProjectsProjection;

#[async_trait]
impl Projection for ProjectsProjection {
    fn name(&self) -> &'static str {
        "projects"
    }

    fn wants(&self, aggregate_type: &str) -> bool {
        matches!(aggregate_type, "Project" | "BuildRun")
    }

    async fn apply(
        &self,
        tx: &mut PgConnection,
        event: &StoredEvent,
    ) -> Result<(), ProjectionError> {
        let at = event.recorded_at;
        if event.aggregate_type == "BuildRun" {
            let build: BuildRunEvent = decode(event)?;
            let Some((run, verdict)) = build.verdict() else {
                return Ok(());
            };
            let health = verdict.outcome.health();
            sqlx::query(
                "UPDATE projects SET builds_finished = builds_finished + 1,
                        builds_succeeded = builds_succeeded + $2::int,
                        builds_failed = builds_failed + $3::int,
                        builds_cancelled = builds_cancelled + $4::int,
                        last_build_at = GREATEST(last_build_at, $5),
                        last_outcome = CASE WHEN last_build_at IS NULL
                                              OR ($5, $6, $7) >= (last_build_at, last_outcome, last_transition)
                                            THEN $6 ELSE last_outcome END,
                        last_transition = CASE WHEN last_build_at IS NULL
                                              OR ($5, $6, $7) >= (last_build_at, last_outcome, last_transition)
                                            THEN $7 ELSE last_transition END
                  WHERE project_id = $1",
            )
            .bind(run.project_id)
            .bind(i32::from(health == Some(true)))
            .bind(i32::from(health == Some(false)))
            .bind(i32::from(health.is_none()))
            .bind(verdict.completed_at)
            .bind(verdict.outcome.as_str())
            .bind(verdict.transition.as_str())
            .execute(&mut *tx)
            .await?;
            return crate::changes::notify(tx, "projects", Some(run.project_id))
                .await
                .map_err(Into::into);
        }
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
                sqlx::query("UPDATE projects SET archived = true, updated_at = $2 WHERE project_id::text = $1")
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
}
