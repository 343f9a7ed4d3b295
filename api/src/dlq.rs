//! `/api/v1/dlq`: the dead-letter queue. Listing reads the `notifications` read model; redrive and discard are
//! commands on the `Notification` aggregate, so every operator action is an event in the log.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use domain::StoredEvent;
use projections::queries::{self, NotificationView};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::extract::{Json, Paged, Paging, PathId, Query};
use crate::{metadata, ApiError, AppState};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(show))
        .routes(routes!(redrive))
        .routes(routes!(discard))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ListParams {
    #[serde(flatten)]
    #[param(ignore)]
    paging: Paging,
    /// Only this project's dead letters.
    project_id: Option<Uuid>,
}

/// A notification with every event of its aggregate, in order.
#[derive(Serialize, ToSchema)]
struct NotificationTrail {
    notification: NotificationView,
    trail: Vec<StoredEvent>,
}

/// What an operator's action did to a dead letter.
#[derive(Serialize, ToSchema)]
struct DeadLetterAction {
    notification_id: Uuid,
    /// `redriven` or `discarded`.
    status: &'static str,
}

/// Dead letters, oldest first. Operators and admins.
#[utoipa::path(get, path = "/api/v1/dlq", tag = "dlq",
    operation_id = "list_dead_letters",
    security(("bearer" = []), ("api_key" = [])),
    params(Paging, ListParams),
    responses(
        (status = 200, description = "one page of dead letters", body = Paged<NotificationView>),
        (status = 422, description = "invalid `limit`, `offset` or `project_id`")))]
async fn list(
    State(state): State<AppState>,
    Query(params): Query<ListParams>,
) -> Result<impl IntoResponse, ApiError> {
    let page = params.paging.page()?;
    let items = queries::dead_letters(&state.pool, params.project_id, page).await?;
    Ok(axum::Json(Paged::new(items, page)))
}

/// A notification and its whole trail of events. Operators and admins.
///
/// Any notification, not only dead letters.
#[utoipa::path(get, path = "/api/v1/dlq/{id}", tag = "dlq",
    operation_id = "show_notification",
    security(("bearer" = []), ("api_key" = [])),
    params(("id" = Uuid, Path, description = "the notification's id")),
    responses(
        (status = 200, description = "the notification and its events", body = NotificationTrail),
        (status = 404, description = "no such notification")))]
async fn show(
    State(state): State<AppState>,
    PathId(id): PathId,
) -> Result<impl IntoResponse, ApiError> {
    let view = queries::notification(&state.pool, id)
        .await?
        .ok_or(ApiError::NotFound("notification"))?;
    let trail =
        projections::log::aggregate_events(&state.pool, "Notification", &id.to_string()).await?;
    Ok(axum::Json(NotificationTrail {
        notification: view,
        trail,
    }))
}

/// Send a dead letter again. Operators and admins.
#[utoipa::path(post, path = "/api/v1/dlq/{id}/redrive", tag = "dlq",
    operation_id = "redrive_dead_letter",
    security(("bearer" = []), ("api_key" = [])),
    params(("id" = Uuid, Path, description = "the notification's id")),
    responses(
        (status = 202, body = DeadLetterAction, description = "queued for delivery again"),
        (status = 404, description = "no such notification"),
        (status = 409, description = "the notification is not dead-lettered, or concurrent changes to it")))]
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
        axum::Json(DeadLetterAction {
            notification_id: id,
            status: "redriven",
        }),
    ))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct DiscardInput {
    /// Why the notification is given up; recorded in its trail.
    reason: String,
}

/// Give a dead letter up for good. Operators and admins.
#[utoipa::path(post, path = "/api/v1/dlq/{id}/discard", tag = "dlq",
    operation_id = "discard_dead_letter",
    security(("bearer" = []), ("api_key" = [])),
    params(("id" = Uuid, Path, description = "the notification's id")),
    request_body = DiscardInput,
    responses(
        (status = 200, description = "discarded", body = DeadLetterAction),
        (status = 400, description = "malformed JSON"),
        (status = 404, description = "no such notification"),
        (status = 409, description = "the notification is not dead-lettered, or concurrent changes to it"),
        (status = 415, description = "the body is not `application/json`"),
        (status = 422, description = "an empty reason, or unknown fields")))]
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
    Ok(axum::Json(DeadLetterAction {
        notification_id: id,
        status: "discarded",
    }))
}
