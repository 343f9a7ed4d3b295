//! What a webhook is checked against, in one round trip: its project as the events say it is now, and the
//! secrets a delivery may be signed with.
//!
//! These were two queries (the project's events through the event store, then its secrets), each a round trip
//! on every webhook. Both are small (a project has a handful of events: created, renamed, rotated, archived, a
//! ping per hook) and both are needed on every delivery, so one statement returns them as two JSON arrays, and
//! the project is folded here with the same upcasting and `apply` the event store uses. Nothing is cached: an
//! archive or a rotation counts from the next webhook on, as it did.

use cqrs_es::Aggregate;
use domain::{Project, ProjectEvent};
use serde::Deserialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::CommandError;

const LOOKUP: &str = "
SELECT (SELECT COALESCE(json_agg(json_build_object('type', event_type, 'version', event_version,
                                                   'payload', payload) ORDER BY sequence), '[]')
          FROM events WHERE aggregate_type = $1 AND aggregate_id = $2) AS events,
       (SELECT COALESCE(json_agg(json_build_object('version', version, 'secret', secret,
                                                   'fresh', created_at > now() - make_interval(secs => $4))), '[]')
          FROM project_secrets WHERE project_id = $3) AS secrets";

/// A project that takes webhooks, and the secrets to check them with (the current one first).
#[derive(Debug)]
pub struct WebhookTarget {
    pub project: Project,
    pub secrets: Vec<String>,
}

#[derive(Deserialize)]
struct Row {
    #[serde(rename = "type")]
    event_type: String,
    version: String,
    payload: serde_json::Value,
}

#[derive(Deserialize)]
struct SecretRow {
    version: i32,
    secret: String,
    /// Created less than the rotation overlap ago, by the database's clock.
    fresh: bool,
}

/// The active project `project_id` and its accepted secrets: the current one, and the one before it while the
/// current one is younger than `overlap`. Not found and archived are the project's own errors.
pub(crate) async fn load(
    pool: &PgPool,
    project_id: Uuid,
    overlap: std::time::Duration,
) -> Result<WebhookTarget, CommandError> {
    let (events, secrets): (
        sqlx::types::Json<Vec<Row>>,
        sqlx::types::Json<Vec<SecretRow>>,
    ) = sqlx::query_as(LOOKUP)
        .bind(Project::TYPE)
        .bind(project_id.to_string())
        .bind(project_id)
        .bind(overlap.as_secs_f64())
        .fetch_one(pool)
        .await?;
    let mut project = Project::default();
    for row in events.0 {
        let (_, payload) = domain::upcast::upcast(&row.event_type, &row.version, row.payload);
        let event: ProjectEvent = serde_json::from_value(payload).map_err(|e| {
            CommandError::Store(format!("project {project_id}: {}: {e}", row.event_type))
        })?;
        project.apply(event);
    }
    project.require_active()?;
    let secrets = accepted(&secrets.0, project.secret_version);
    if secrets.is_empty() {
        return Err(CommandError::Store(format!(
            "no secret stored for project {project_id}"
        )));
    }
    Ok(WebhookTarget { project, secrets })
}

/// The secret of `version`, then the one before it if `version`'s was created inside the overlap.
fn accepted(rows: &[SecretRow], version: i32) -> Vec<String> {
    let Some(current) = rows.iter().find(|r| r.version == version) else {
        return Vec::new();
    };
    let previous = rows
        .iter()
        .find(|r| current.fresh && r.version == version - 1);
    std::iter::once(current)
        .chain(previous)
        .map(|r| r.secret.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(version: i32, fresh: bool) -> SecretRow {
        SecretRow {
            version,
            secret: format!("s{version}"),
            fresh,
        }
    }

    #[test]
    fn the_previous_secret_counts_only_while_the_current_one_is_fresh() {
        let rows = [row(1, false), row(2, true), row(3, true)];
        // Version 3 is the project's, and fresh: 3 then 2.
        assert_eq!(accepted(&rows, 3), ["s3", "s2"]);
        // A row written for a rotation whose command failed (4 here) is never used.
        let rows = [row(1, false), row(2, false), row(4, true)];
        assert_eq!(accepted(&rows, 2), ["s2"]);
        assert!(accepted(&rows, 3).is_empty());
    }
}
