//! `/api/v1/audit`: the notification trail for auditors, as JSON or NDJSON (`?format=ndjson`). Read-only.

use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use chrono::{DateTime, Utc};
use projections::audit::{self, Scope, TrailEntry};
use serde::Deserialize;
use serde_json::json;

use crate::extract::{PathId, Query};
use crate::{ApiError, AppState};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/audit", get(range))
        .route("/api/v1/audit/builds/{*build_run_id}", get(build))
        .route("/api/v1/audit/projects/{id}", get(project))
        .route("/api/v1/audit/subscriptions/{id}", get(subscription))
}

#[derive(Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Format {
    #[default]
    Json,
    Ndjson,
}

#[derive(Deserialize)]
struct Params {
    #[serde(default)]
    format: Format,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
}

fn answer(entries: Vec<TrailEntry>, format: Format) -> Result<Response, ApiError> {
    match format {
        Format::Json => Ok(axum::Json(json!({ "entries": entries })).into_response()),
        Format::Ndjson => {
            let mut body = String::new();
            for entry in &entries {
                body.push_str(
                    &serde_json::to_string(entry).map_err(|e| ApiError::Internal(e.to_string()))?,
                );
                body.push('\n');
            }
            Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response())
        }
    }
}

async fn build(
    State(state): State<AppState>,
    Path(build_run_id): Path<String>,
    Query(params): Query<Params>,
) -> Result<Response, ApiError> {
    let entries = audit::trail(&state.pool, &Scope::Build(build_run_id)).await?;
    if entries.is_empty() {
        return Err(ApiError::NotFound("build"));
    }
    answer(entries, params.format)
}

async fn project(
    State(state): State<AppState>,
    PathId(project_id): PathId,
    Query(params): Query<Params>,
) -> Result<Response, ApiError> {
    let scope = Scope::Project {
        project_id,
        from: params.from,
        to: params.to,
    };
    let entries = audit::trail(&state.pool, &scope).await?;
    if entries.is_empty() && params.from.is_none() && params.to.is_none() {
        return Err(ApiError::NotFound("project"));
    }
    answer(entries, params.format)
}

async fn subscription(
    State(state): State<AppState>,
    PathId(id): PathId,
    Query(params): Query<Params>,
) -> Result<Response, ApiError> {
    let entries = audit::trail(&state.pool, &Scope::Subscription(id)).await?;
    if entries.is_empty() {
        return Err(ApiError::NotFound("subscription"));
    }
    answer(entries, params.format)
}

async fn range(
    State(state): State<AppState>,
    Query(params): Query<Params>,
) -> Result<Response, ApiError> {
    let (Some(from), Some(to)) = (params.from, params.to) else {
        return Err(ApiError::Invalid(
            "from and to (RFC 3339 times) are required".into(),
        ));
    };
    if to <= from {
        return Err(ApiError::Invalid("to must be after from".into()));
    }
    answer(
        audit::trail(&state.pool, &Scope::Range { from, to }).await?,
        params.format,
    )
}
