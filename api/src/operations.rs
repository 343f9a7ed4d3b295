//! `/api/v1/operations`: operator actions that run in the background, with their progress visible here.
//! Today: rebuilding read models (blue/green) and building named snapshots (`?as_of=<name>` on read endpoints).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use chrono::{DateTime, Utc};
use projections::rebuild::{self, Rebuild, Snapshot, Target};
use serde::Deserialize;
use serde_json::json;
use sqlx::PgPool;

use crate::extract::Json;
use crate::{ApiError, AppState};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/operations/rebuilds", get(list).post(start))
        .route("/api/v1/operations/dry-run", axum::routing::post(dry_run))
        .route("/api/v1/config", get(export_config).post(import_config))
}

/// The configuration document, without secrets (the CLI exports them on request).
async fn export_config(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let document = commands::config::export(&state.pool, &state.commands, false)
        .await
        .map_err(config_error)?;
    Ok(axum::Json(document))
}

async fn import_config(
    State(state): State<AppState>,
    Json(document): Json<commands::config::ConfigDocument>,
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DryRunInput {
    project_id: uuid::Uuid,
    outcomes: Vec<String>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    template: Option<String>,
}

/// What a proposed subscription (and template) would have sent over a past time range; sends nothing.
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

async fn list(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    Ok(axum::Json(
        json!({ "items": rebuild::runs(&state.pool).await? }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SnapshotInput {
    name: String,
    as_of: DateTime<Utc>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RebuildInput {
    target: String,
    snapshot: Option<SnapshotInput>,
}

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
        axum::Json(
            json!({ "id": id, "status": "started", "progress": "/api/v1/operations/rebuilds" }),
        ),
    ))
}
