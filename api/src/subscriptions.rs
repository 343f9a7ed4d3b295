//! `/api/v1/subscriptions`: subscribe a Telegram chat to a project, list, show, unsubscribe (DELETE).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use domain::{ChatId, OutcomeFilter};
use projections::queries::{self, SubscriptionView};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::extract::{Json, Paged, Paging, PathId, Query};
use crate::{metadata, ApiError, AppState};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(show, remove))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct SubscriptionInput {
    /// An active project.
    project_id: Uuid,
    /// The Telegram chat to notify.
    chat_id: i64,
    /// Which finished builds to notify about: `all`, `succeeded`, `failed`, `cancelled`, `broken`, `fixed`,
    /// `still_failing`. Defaults to every finished build.
    outcomes: Option<Vec<String>>,
}

/// A new subscription.
#[derive(Serialize, ToSchema)]
struct CreatedSubscription {
    /// Always true.
    active: bool,
    /// Always `telegram`.
    channel: &'static str,
    chat_id: i64,
    outcomes: Vec<&'static str>,
    project_id: Uuid,
    subscription_id: Uuid,
}

/// Subscribe a Telegram chat to a project's finished builds. Operators and admins.
#[utoipa::path(post, path = "/api/v1/subscriptions", tag = "subscriptions",
    operation_id = "create_subscription",
    security(("bearer" = []), ("api_key" = [])),
    request_body = SubscriptionInput,
    responses(
        (status = 201, description = "subscribed", body = CreatedSubscription,
            headers(("Location" = String, description = "the new subscription's URL"))),
        (status = 400, description = "malformed JSON"),
        (status = 404, description = "no such project"),
        (status = 410, description = "the project is archived"),
        (status = 415, description = "the body is not `application/json`"),
        (status = 422, description = "invalid chat id or outcome, no outcomes, or unknown fields")))]
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
    let subscription_id = state
        .commands
        .subscribe(
            input.project_id,
            chat_id,
            outcomes.clone(),
            &metadata("subscribe"),
        )
        .await?;
    let outcomes: Vec<&'static str> = outcomes.iter().map(|o| o.as_str()).collect();
    Ok((
        StatusCode::CREATED,
        [(
            axum::http::header::LOCATION,
            format!("/api/v1/subscriptions/{subscription_id}"),
        )],
        axum::Json(CreatedSubscription {
            active: true,
            channel: "telegram",
            chat_id: chat_id.get(),
            outcomes,
            project_id: input.project_id,
            subscription_id,
        }),
    ))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ListParams {
    #[serde(flatten)]
    #[param(ignore)]
    paging: Paging,
    /// Only this project's subscriptions.
    project_id: Option<Uuid>,
}

/// List active subscriptions, oldest first. Readers, operators and admins.
#[utoipa::path(get, path = "/api/v1/subscriptions", tag = "subscriptions",
    operation_id = "list_subscriptions",
    security(("bearer" = []), ("api_key" = [])),
    params(Paging, ListParams),
    responses(
        (status = 200, description = "one page of subscriptions", body = Paged<SubscriptionView>),
        (status = 422, description = "invalid `limit`, `offset` or `project_id`")))]
async fn list(
    State(state): State<AppState>,
    Query(params): Query<ListParams>,
) -> Result<impl IntoResponse, ApiError> {
    let page = params.paging.page()?;
    let items = queries::subscriptions(&state.pool, params.project_id, page).await?;
    Ok(axum::Json(Paged::new(items, page)))
}

/// A subscription, active or removed. Readers, operators and admins.
#[utoipa::path(get, path = "/api/v1/subscriptions/{id}", tag = "subscriptions",
    operation_id = "show_subscription",
    security(("bearer" = []), ("api_key" = [])),
    params(("id" = Uuid, Path, description = "the subscription's id")),
    responses(
        (status = 200, description = "the subscription", body = SubscriptionView),
        (status = 404, description = "no such subscription")))]
async fn show(
    State(state): State<AppState>,
    PathId(id): PathId,
) -> Result<impl IntoResponse, ApiError> {
    let view = queries::subscription(&state.pool, id)
        .await?
        .ok_or(ApiError::NotFound("subscription"))?;
    Ok(axum::Json(view))
}

/// Unsubscribe: no more notifications from this subscription. Operators and admins.
///
/// Removing a removed subscription changes nothing and answers 204 too.
#[utoipa::path(delete, path = "/api/v1/subscriptions/{id}", tag = "subscriptions",
    operation_id = "remove_subscription",
    security(("bearer" = []), ("api_key" = [])),
    params(("id" = Uuid, Path, description = "the subscription's id")),
    responses(
        (status = 204, description = "unsubscribed"),
        (status = 404, description = "no such subscription"),
        (status = 409, description = "concurrent changes to the subscription; retry")))]
async fn remove(
    State(state): State<AppState>,
    PathId(id): PathId,
) -> Result<impl IntoResponse, ApiError> {
    state
        .commands
        .unsubscribe(id, &metadata("unsubscribe"))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
