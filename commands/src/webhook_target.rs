//! What a webhook is checked against, in one round trip: its project as the events say it is now, and the
//! secrets a delivery may be signed with.
//!
//! These were two queries (the project's events through the event store, then its secrets), each a round trip
//! on every webhook. Both are small (a project has a handful of events: created, renamed, rotated, archived, a
//! ping per hook) and both are needed on every delivery, so one statement returns them as two JSON arrays, and
//! the project is folded here with the same upcasting and `apply` the event store uses. Nothing is cached: an
//! archive or a rotation counts from the next webhook on, as it did.

use cqrs_es::persist::SerializedEvent;
use cqrs_es::Aggregate;
use domain::{
    BuildEvent, BuildRun, BuildScope, BuildStatus, PreviousRun, Project, ProjectEvent, RunInfo,
};
use serde::Deserialize;
use sqlx::types::Json;
use sqlx::PgPool;
use uuid::Uuid;

use crate::CommandError;

/// The project's events and its secrets, given the placeholders of the project (`uuid`), its aggregate type and
/// id, and the rotation overlap in seconds.
macro_rules! target_sql {
    ($project:literal, $aggregate_type:literal, $aggregate_id:literal, $overlap:literal) => {
        concat!(
            "(SELECT COALESCE(json_agg(json_build_object('type', event_type, 'version', event_version,
                                                         'payload', payload) ORDER BY sequence), '[]')
                FROM events WHERE aggregate_type = ", $aggregate_type, " AND aggregate_id = ", $aggregate_id, ") AS events,
             (SELECT COALESCE(json_agg(json_build_object('version', version, 'secret', secret,
                                                         'fresh', created_at > now() - make_interval(secs => ", $overlap, "))), '[]')
                FROM project_secrets WHERE project_id = ", $project, ") AS secrets"
        )
    };
}

const LOOKUP: &str = concat!("SELECT ", target_sql!("$3", "$1", "$2", "$4"));

/// The target, the run's events, and the run's previous verdict (`$1` to `$7` as
/// `history::previous_verdict_sql` takes them) when `$13` says the webhook completes the run.
const BUILD_LOOKUP: &str = concat!(
    "SELECT ",
    target_sql!("$1", "$8", "$9", "$10"),
    ",
       (SELECT COALESCE(json_agg(json_build_object('sequence', sequence, 'type', event_type,
                                                   'version', event_version, 'payload', payload,
                                                   'metadata', metadata) ORDER BY sequence), '[]')
          FROM events WHERE aggregate_type = $11 AND aggregate_id = $12) AS run_events,
       (SELECT row_to_json(v) FROM (",
    crate::history::previous_verdict_sql!(),
    ") v WHERE $13) AS previous"
);

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
    let (events, secrets): (Json<Vec<Row>>, Json<Vec<SecretRow>>) = sqlx::query_as(LOOKUP)
        .bind(Project::TYPE)
        .bind(project_id.to_string())
        .bind(project_id)
        .bind(overlap.as_secs_f64())
        .fetch_one(pool)
        .await?;
    target(project_id, events.0, &secrets.0)
}

/// A build webhook's run as the log has it, read with the webhook's target (see the module's docs).
pub struct PreparedRun {
    pub(crate) build_run_id: String,
    /// Every event of the run, as stored.
    pub(crate) events: Vec<SerializedEvent>,
    /// When the webhook completes the run: the run asked about, and its previous verdict (or why it could not
    /// be read, which the aggregate turns into its own error as it would the history's).
    pub(crate) previous: Option<(RunInfo, Result<Option<PreviousRun>, String>)>,
}

#[derive(Deserialize)]
struct RunRow {
    sequence: i64,
    #[serde(rename = "type")]
    event_type: String,
    version: String,
    payload: serde_json::Value,
    metadata: serde_json::Value,
}

#[derive(Deserialize)]
struct VerdictRow {
    build_run_id: String,
    outcome: String,
    failure_streak: i32,
}

/// [`load`], and in the same statement the run `event` is about. The outer error is the database's; the target's
/// own (not found, archived) is inside, as [`load`] returns it. A webhook holding a NUL character gets no run
/// read: its fields would be query parameters, which Postgres refuses (the append names the field instead).
pub(crate) async fn load_for_build(
    pool: &PgPool,
    project_id: Uuid,
    overlap: std::time::Duration,
    event: &BuildEvent,
) -> Result<(Result<WebhookTarget, CommandError>, Option<PreparedRun>), CommandError> {
    if crate::event_log::nul_in_webhook(event).is_some() {
        return Ok((load(pool, project_id, overlap).await, None));
    }
    let run = &event.run;
    let build_run_id = run.build_run_id();
    let completes = matches!(
        event.scope,
        BuildScope::Run {
            status: BuildStatus::Completed,
            ..
        }
    );
    #[allow(clippy::type_complexity)]
    let (events, secrets, run_events, previous): (
        Json<Vec<Row>>,
        Json<Vec<SecretRow>>,
        Json<Vec<RunRow>>,
        Option<Json<VerdictRow>>,
    ) = crate::history::bind_run_key(sqlx::query_as(BUILD_LOOKUP).bind(project_id), run)
        .bind(Project::TYPE)
        .bind(project_id.to_string())
        .bind(overlap.as_secs_f64())
        .bind(BuildRun::TYPE)
        .bind(&build_run_id)
        .bind(completes)
        .fetch_one(pool)
        .await?;
    let previous = completes.then(|| {
        let previous = previous
            .map(|Json(v)| crate::history::previous(v.build_run_id, &v.outcome, v.failure_streak))
            .transpose();
        (run.clone(), previous)
    });
    let stored = run_events
        .0
        .into_iter()
        .map(|row| {
            SerializedEvent::new(
                build_run_id.clone(),
                usize::try_from(row.sequence).unwrap_or_default(),
                BuildRun::TYPE.to_owned(),
                row.event_type,
                row.version,
                row.payload,
                row.metadata,
            )
        })
        .collect();
    let prepared = PreparedRun {
        build_run_id,
        events: stored,
        previous,
    };
    Ok((target(project_id, events.0, &secrets.0), Some(prepared)))
}

/// The project folded from its events, checked to be active, with its accepted secrets.
fn target(
    project_id: Uuid,
    events: Vec<Row>,
    secrets: &[SecretRow],
) -> Result<WebhookTarget, CommandError> {
    let mut project = Project::default();
    for row in events {
        let (_, payload) = domain::upcast::upcast(&row.event_type, &row.version, row.payload);
        let event: ProjectEvent = serde_json::from_value(payload).map_err(|e| {
            CommandError::Store(format!("project {project_id}: {}: {e}", row.event_type))
        })?;
        project.apply(event);
    }
    project.require_active()?;
    let secrets = accepted(secrets, project.secret_version);
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
