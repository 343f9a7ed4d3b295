//! `/api/v1/operations`: operator actions that run in the background, with their progress visible here.
//! Today: rebuilding read models (blue/green) and building named snapshots (`?as_of=<name>` on read endpoints).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use commands::config::{ConfigDocument, ImportReport};
use commands::dry_run::DryRunReport;
use projections::rebuild::{self, Rebuild, RebuildRun, Snapshot, Target};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::extract::Json;
use crate::{ApiError, AppState};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, start))
        .routes(routes!(dry_run))
        .routes(routes!(export_config, import_config))
}

/// Export the configuration. Admin only.
///
/// Projects and active subscriptions as one document, without webhook secrets (the CLI exports them on
/// request).
#[utoipa::path(get, path = "/api/v1/config", tag = "config",
    operation_id = "export_config",
    security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, description = "the configuration document", body = ConfigDocument)))]
async fn export_config(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let document = commands::config::export(&state.pool, &state.commands, false)
        .await
        .map_err(config_error)?;
    Ok(axum::Json(document))
}

/// Import a configuration document. Admin only.
///
/// Creates the projects and subscriptions it has that this Herald lacks. Idempotent: what exists already is
/// counted, not changed. Projects that come without a webhook secret get a new one, listed in the answer once.
/// The whole document is checked before the first change.
#[utoipa::path(post, path = "/api/v1/config", tag = "config",
    operation_id = "import_config",
    security(("bearer" = []), ("api_key" = [])),
    request_body = ConfigDocument,
    responses(
        (status = 200, description = "what was created and what existed already", body = ImportReport),
        (status = 400, description = "malformed JSON"),
        (status = 404, description = "a subscription's project is neither in the document nor in Herald"),
        (status = 409, description = "concurrent changes; retry"),
        (status = 410, description = "a subscription's project is archived in Herald"),
        (status = 415, description = "the body is not `application/json`"),
        (status = 422, description = "not a Herald configuration document (format, version, names, chat ids, \
                                      outcomes), or unknown fields")))]
async fn import_config(
    State(state): State<AppState>,
    Json(document): Json<ConfigDocument>,
) -> Result<impl IntoResponse, ApiError> {
    let report = commands::config::import(&state.commands, &document)
        .await
        .map_err(config_error)?;
    Ok(axum::Json(report))
}

fn config_error(e: commands::config::ConfigError) -> ApiError {
    use commands::config::ConfigError;
    match e {
        ConfigError::Invalid(why) => ApiError::Invalid(why),
        ConfigError::Command(e) => e.into(),
        ConfigError::Database(e) => e.into(),
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct DryRunInput {
    /// An active project.
    project_id: uuid::Uuid,
    /// The proposed subscription's outcome filters (`all`, `succeeded`, `failed`, `cancelled`, `broken`,
    /// `fixed`, `still_failing`).
    outcomes: Vec<String>,
    /// Verdicts recorded at or after this time.
    from: DateTime<Utc>,
    /// Verdicts recorded before this time; after `from`.
    to: DateTime<Utc>,
    /// A proposed Telegram message template; the built-in one when absent.
    template: Option<String>,
}

/// Dry-run a proposed subscription over past builds. Operators and admins.
///
/// What the subscription (and template) would have sent over a past time range; sends nothing.
#[utoipa::path(post, path = "/api/v1/operations/dry-run", tag = "operations",
    operation_id = "dry_run",
    security(("bearer" = []), ("api_key" = [])),
    request_body = DryRunInput,
    responses(
        (status = 200, description = "what would have been sent or suppressed, per verdict", body = DryRunReport),
        (status = 400, description = "malformed JSON"),
        (status = 404, description = "no such project"),
        (status = 410, description = "the project is archived"),
        (status = 415, description = "the body is not `application/json`"),
        (status = 422, description = "an invalid outcome, template or time range, or unknown fields")))]
async fn dry_run(
    State(state): State<AppState>,
    Json(input): Json<DryRunInput>,
) -> Result<impl IntoResponse, ApiError> {
    use commands::dry_run::{self, DryRunError, DryRunRequest};
    let outcomes = input
        .outcomes
        .iter()
        .map(|o| o.parse::<domain::OutcomeFilter>())
        .collect::<Result<Vec<_>, _>>()?;
    state.commands.active_project(input.project_id).await?;
    let request = DryRunRequest {
        project_id: input.project_id,
        outcomes,
        template: input.template,
        from: input.from,
        to: input.to,
    };
    let report = dry_run::dry_run(&state.pool, &request)
        .await
        .map_err(|e| match e {
            DryRunError::Template(t) => ApiError::Invalid(t.to_string()),
            DryRunError::Invalid(why) => ApiError::Invalid(why),
            DryRunError::Database(e) => ApiError::from(e),
        })?;
    Ok(axum::Json(report))
}

/// Every rebuild and snapshot run.
#[derive(Serialize, ToSchema)]
struct RebuildRuns {
    /// Most recently started first.
    items: Vec<RebuildRun>,
}

/// A rebuild that has started in the background.
#[derive(Serialize, ToSchema)]
struct RebuildStarted {
    /// `live`, or `snapshot:<name>`.
    id: String,
    /// Where to follow it.
    progress: &'static str,
    /// Always `started`.
    status: &'static str,
}

/// Rebuilds and snapshot builds, with their progress. Operators and admins.
#[utoipa::path(get, path = "/api/v1/operations/rebuilds", tag = "operations",
    operation_id = "list_rebuilds",
    security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, description = "every run, most recently started first", body = RebuildRuns)))]
async fn list(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    Ok(axum::Json(RebuildRuns {
        items: rebuild::runs(&state.pool).await?,
    }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct SnapshotInput {
    /// 1 to 40 of `a-z`, `0-9` and `_`; read it with `?as_of=<name>`.
    name: String,
    /// The snapshot shows the read models as they were at this time.
    as_of: DateTime<Utc>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct RebuildInput {
    /// `all`, or one read model: `projects`, `build_runs`, `subscriptions`, `notifications`.
    target: String,
    /// Build a named snapshot instead of rebuilding the live read models (target `all` only).
    snapshot: Option<SnapshotInput>,
}

/// Start a rebuild or a snapshot. Operators and admins.
///
/// Rebuilds the read models from the event log (blue/green), or builds a named snapshot, in the background.
#[utoipa::path(post, path = "/api/v1/operations/rebuilds", tag = "operations",
    operation_id = "start_rebuild",
    security(("bearer" = []), ("api_key" = [])),
    request_body = RebuildInput,
    responses(
        (status = 202, description = "started in the background", body = RebuildStarted),
        (status = 400, description = "malformed JSON"),
        (status = 409, description = "this rebuild is already running"),
        (status = 415, description = "the body is not `application/json`"),
        (status = 422, description = "an unknown target, an invalid snapshot name, a snapshot of one read \
                                      model, or unknown fields")))]
async fn start(
    State(state): State<AppState>,
    Json(input): Json<RebuildInput>,
) -> Result<impl IntoResponse, ApiError> {
    let target = Target::parse(&input.target).map_err(|e| ApiError::Invalid(e.to_string()))?;
    let snapshot = input.snapshot.map(|s| Snapshot {
        name: s.name,
        at: s.as_of,
    });
    let id = match &snapshot {
        Some(s) => {
            rebuild::snapshot_schema(&s.name).map_err(|e| ApiError::Invalid(e.to_string()))?;
            if target != Target::All {
                return Err(ApiError::Invalid(
                    "a snapshot holds every read model: use target all".into(),
                ));
            }
            format!("snapshot:{}", s.name)
        }
        None => "live".to_owned(),
    };
    let running: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM rebuild_runs WHERE id = $1 AND status = 'running'
                          AND updated_at > now() - interval '30 seconds')",
    )
    .bind(&id)
    .fetch_one(&state.pool)
    .await?;
    if running {
        return Err(ApiError::Conflict(format!(
            "rebuild {id} is already running"
        )));
    }
    let pool: PgPool = state.pool.clone();
    tokio::spawn(async move {
        let mut quiet = |_: u64, _: u64| {};
        let options = Rebuild {
            target,
            snapshot,
            progress: &mut quiet,
            stop_after: None,
            batch_size: None,
        };
        if let Err(e) = rebuild::run(&pool, options).await {
            tracing::error!(error = %e, "rebuild failed");
        }
    });
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(RebuildStarted {
            id,
            progress: "/api/v1/operations/rebuilds",
            status: "started",
        }),
    ))
}
