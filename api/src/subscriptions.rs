//! `/api/v1/subscriptions`: subscribe a Telegram chat to a project, list, show, unsubscribe (DELETE).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use commands::Metadata;
use domain::{ChatId, OutcomeFilter};
use projections::queries;
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use crate::extract::{Json, Paging, PathId, Query};
use crate::{ApiError, AppState};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/subscriptions", post(create).get(list))
        .route("/api/v1/subscriptions/{id}", get(show).delete(remove))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SubscriptionInput {
    project_id: Uuid,
    chat_id: i64,
    /// Defaults to every finished build.
    outcomes: Option<Vec<String>>,
}

async fn create(
    State(state): State<AppState>,
    Json(input): Json<SubscriptionInput>,
) -> Result<impl IntoResponse, ApiError> {
    let chat_id = ChatId::parse(input.chat_id)?;
    let outcomes = match input.outcomes {
        None => vec![OutcomeFilter::All],
        Some(raw) => raw
            .iter()
            .map(|o| o.parse::<OutcomeFilter>())
            .collect::<Result<Vec<_>, _>>()?,
    };
    let metadata = Metadata::from([("source".to_owned(), "api".to_owned())]);
    let subscription_id = state
        .commands
        .subscribe(input.project_id, chat_id, outcomes.clone(), &metadata)
        .await?;
    let outcomes: Vec<&str> = outcomes.iter().map(|o| o.as_str()).collect();
    Ok((
        StatusCode::CREATED,
        [(
            axum::http::header::LOCATION,
            format!("/api/v1/subscriptions/{subscription_id}"),
        )],
        axum::Json(json!({
            "subscription_id": subscription_id,
            "project_id": input.project_id,
            "channel": "telegram",
            "chat_id": chat_id.get(),
            "outcomes": outcomes,
            "active": true,
        })),
    ))
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
    let items = queries::subscriptions(&state.pool, params.project_id, page).await?;
    Ok(axum::Json(
        json!({ "items": items, "limit": page.limit, "offset": page.offset }),
    ))
}

async fn show(
    State(state): State<AppState>,
    PathId(id): PathId,
) -> Result<impl IntoResponse, ApiError> {
    let view = queries::subscription(&state.pool, id)
        .await?
        .ok_or(ApiError::NotFound("subscription"))?;
    Ok(axum::Json(view))
}

async fn remove(
    State(state): State<AppState>,
    PathId(id): PathId,
) -> Result<impl IntoResponse, ApiError> {
    let metadata = Metadata::from([("source".to_owned(), "api".to_owned())]);
    state.commands.unsubscribe(id, &metadata).await?;
    Ok(StatusCode::NO_CONTENT)
}
