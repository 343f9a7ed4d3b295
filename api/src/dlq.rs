//! `/api/v1/dlq`: the dead-letter queue. Listing reads the `notifications` read model; redrive and discard are
//! commands on the `Notification` aggregate, so every operator action is an event in the log.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use commands::Metadata;
use projections::queries;
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use crate::extract::{Json, Paging, PathId, Query};
use crate::{ApiError, AppState};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/dlq", get(list))
        .route("/api/v1/dlq/{id}", get(show))
        .route("/api/v1/dlq/{id}/redrive", post(redrive))
        .route("/api/v1/dlq/{id}/discard", post(discard))
}

#[derive(Deserialize)]
struct ListParams {
    #[serde(flatten)]
    paging: Paging,
    project_id: Option<Uuid>,
}

async fn list(
    State(state): State<AppState>,
    Query(params): Query<ListParams>,
) -> Result<impl IntoResponse, ApiError> {
    let page = params.paging.page()?;
    let items = queries::dead_letters(&state.pool, params.project_id, page).await?;
    Ok(axum::Json(
        json!({ "items": items, "limit": page.limit, "offset": page.offset }),
    ))
}

/// A notification and its whole trail of events.
async fn show(
    State(state): State<AppState>,
    PathId(id): PathId,
) -> Result<impl IntoResponse, ApiError> {
    let view = queries::notification(&state.pool, id)
        .await?
        .ok_or(ApiError::NotFound("notification"))?;
    let trail =
        projections::log::aggregate_events(&state.pool, "Notification", &id.to_string()).await?;
    Ok(axum::Json(json!({ "notification": view, "trail": trail })))
}

fn metadata(action: &str) -> Metadata {
    Metadata::from([
        ("source".to_owned(), "api".to_owned()),
        ("action".to_owned(), action.to_owned()),
    ])
}

async fn redrive(
    State(state): State<AppState>,
    PathId(id): PathId,
) -> Result<impl IntoResponse, ApiError> {
    state
        .commands
        .redrive(id, "api", &metadata("redrive"))
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(json!({ "notification_id": id, "status": "redriven" })),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DiscardInput {
    reason: String,
}

async fn discard(
    State(state): State<AppState>,
    PathId(id): PathId,
    Json(input): Json<DiscardInput>,
) -> Result<impl IntoResponse, ApiError> {
    let reason = input.reason.trim();
    if reason.is_empty() {
        return Err(ApiError::Invalid("reason: must not be empty".into()));
    }
    state
        .commands
        .discard(id, "api", reason, &metadata("discard"))
        .await?;
    Ok(axum::Json(
        json!({ "notification_id": id, "status": "discarded" }),
    ))
}
