//! `/api/v1/subscriptions`: subscribe a subscriber's contact (or a bare Telegram chat) to builds matching a
//! filter; list with filters, show, unsubscribe (DELETE).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use commands::FilterInput;
use domain::{ChatId, SubscriptionTarget};
use projections::queries::{self, SubscriptionQuery, SubscriptionView};
use serde::Deserialize;
use serde_json::{Map, Value};
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

/// Who to notify (a subscriber's contact, or a bare chat) and the filter. The same target with the same
/// filter is one subscription: asking twice is a 409.
#[derive(ToSchema)]
#[allow(dead_code)]
struct SubscriptionInput {
    /// The subscriber who owns `contact_id`.
    subscriber_id: Option<Uuid>,
    /// One of the subscriber's contacts; its owner's preferences (mute, language) apply.
    contact_id: Option<Uuid>,
    /// Or: a bare Telegram chat, with no owner and no preferences.
    chat_id: Option<i64>,
    #[schema(inline)]
    #[allow(dead_code)]
    filter: FilterInput,
}

/// A new subscription: its id, target and canonical filter (sorted, deduplicated, defaults filled in).
#[derive(serde::Serialize, ToSchema)]
struct CreatedSubscription {
    subscription_id: Uuid,
    active: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    subscriber_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    contact_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    chat_id: Option<i64>,
    #[serde(flatten)]
    filter: FilterInput,
}

/// The target fields of a subscription body; everything else is the filter.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetInput {
    subscriber_id: Option<Uuid>,
    contact_id: Option<Uuid>,
    chat_id: Option<i64>,
}

/// Split a body into its target and its filter, refusing unknown fields by name (serde cannot flatten a
/// struct that denies unknown fields).
pub(crate) fn parse_body(
    mut body: Map<String, Value>,
) -> Result<(SubscriptionTarget, FilterInput), ApiError> {
    let mut target = Map::new();
    for key in ["subscriber_id", "contact_id", "chat_id"] {
        if let Some(value) = body.remove(key) {
            target.insert(key.to_owned(), value);
        }
    }
    let invalid = |e: serde_json::Error| ApiError::Invalid(e.to_string());
    let target: TargetInput = serde_json::from_value(Value::Object(target)).map_err(invalid)?;
    let filter: FilterInput = serde_json::from_value(Value::Object(body)).map_err(invalid)?;
    let target = match (target.subscriber_id, target.contact_id, target.chat_id) {
        (Some(subscriber_id), Some(contact_id), None) => SubscriptionTarget::Contact {
            subscriber_id,
            contact_id,
        },
        (None, None, Some(chat_id)) => SubscriptionTarget::Chat {
            chat_id: ChatId::parse(chat_id)?,
        },
        _ => {
            return Err(ApiError::Invalid(
                "give `subscriber_id` with `contact_id`, or a bare `chat_id`".into(),
            ))
        }
    };
    Ok((target, filter))
}

/// Subscribe a contact or a chat to builds. Operators and admins.
#[utoipa::path(post, path = "/api/v1/subscriptions", tag = "subscriptions",
    operation_id = "create_subscription",
    security(("bearer" = []), ("api_key" = [])),
    request_body = SubscriptionInput,
    responses(
        (status = 201, description = "subscribed", body = CreatedSubscription,
            headers(("Location" = String, description = "the new subscription's URL"))),
        (status = 400, description = "malformed JSON"),
        (status = 404, description = "no such project, subscriber or contact"),
        (status = 409, description = "this target already has a subscription with exactly this filter"),
        (status = 410, description = "the project is archived"),
        (status = 415, description = "the body is not `application/json`"),
        (status = 422, description = "invalid target, glob, outcome, interval, or unknown fields")))]
async fn create(
    State(state): State<AppState>,
    Json(body): Json<Map<String, Value>>,
) -> Result<impl IntoResponse, ApiError> {
    let (target, filter) = parse_body(body)?;
    subscribe(&state, target, filter).await
}

/// Subscribe `target` with `filter`: 201 with the subscription's URL and canonical form.
pub(crate) async fn subscribe(
    state: &AppState,
    target: SubscriptionTarget,
    filter: FilterInput,
) -> Result<axum::response::Response, ApiError> {
    let filter = filter.parse()?;
    let subscription_id = state
        .commands
        .subscribe(target.clone(), filter.clone(), &metadata("subscribe"))
        .await?;
    let (subscriber_id, contact_id, chat_id) = match target {
        SubscriptionTarget::Contact {
            subscriber_id,
            contact_id,
        } => (Some(subscriber_id), Some(contact_id), None),
        SubscriptionTarget::Chat { chat_id } => (None, None, Some(chat_id.get())),
    };
    Ok((
        StatusCode::CREATED,
        [(
            axum::http::header::LOCATION,
            format!("/api/v1/subscriptions/{subscription_id}"),
        )],
        axum::Json(CreatedSubscription {
            subscription_id,
            active: true,
            subscriber_id,
            contact_id,
            chat_id,
            filter: FilterInput::from_filter(&filter),
        }),
    )
        .into_response())
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ListParams {
    #[serde(flatten)]
    #[param(ignore)]
    paging: Paging,
    /// Only subscriptions naming this project.
    project_id: Option<Uuid>,
    /// Only this subscriber's subscriptions.
    subscriber_id: Option<Uuid>,
    /// Only this contact's subscriptions.
    contact_id: Option<Uuid>,
    /// Only this bare chat's subscriptions.
    chat_id: Option<i64>,
}

/// List active subscriptions, oldest first. Readers, operators and admins.
#[utoipa::path(get, path = "/api/v1/subscriptions", tag = "subscriptions",
    operation_id = "list_subscriptions",
    security(("bearer" = []), ("api_key" = [])),
    params(Paging, ListParams),
    responses(
        (status = 200, description = "one page of subscriptions", body = Paged<SubscriptionView>),
        (status = 422, description = "invalid `limit`, `offset` or filter")))]
async fn list(
    State(state): State<AppState>,
    Query(params): Query<ListParams>,
) -> Result<impl IntoResponse, ApiError> {
    let page = params.paging.page()?;
    let query = SubscriptionQuery {
        project_id: params.project_id,
        subscriber_id: params.subscriber_id,
        contact_id: params.contact_id,
        chat_id: params.chat_id,
    };
    let items = queries::subscriptions(&state.pool, query, page).await?;
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
