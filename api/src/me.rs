//! `/api/v1/me`: who the caller is, and, for a key that stands for a subscriber (`herald keys create
//! --subscriber`), that subscriber's own subscriptions, preferences and Telegram link codes. This is what the
//! dashboard's subscriptions page calls: a person manages their own notifications without being an operator,
//! and cannot touch anybody else's, because the subscriber comes from the credential and never from the request.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Extension;
use domain::SubscriptionTarget;
use projections::queries::{
    self, PreferencesView, SubscriberView, SubscriptionQuery, SubscriptionView,
};
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::auth::{Principal, Role};
use crate::extract::{Json, Paged, Paging, PathId, Query};
use crate::subscribers::{LinkCode, PreferencesInput};
use crate::{metadata, ApiError, AppState};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(whoami))
        .routes(routes!(subscriber))
        .routes(routes!(preferences))
        .routes(routes!(link_code))
        .routes(routes!(subscriptions, subscribe))
        .routes(routes!(unsubscribe))
}

/// The caller, as the dashboard needs to know it: which buttons to show, whether there is a subscriber.
#[derive(Debug, Serialize, ToSchema)]
pub struct Me {
    /// `key:<prefix>` or `jwt:<subject>`, as the event log records it.
    pub id: String,
    pub role: Role,
    /// The subscriber this credential stands for, if any.
    pub subscriber_id: Option<Uuid>,
}

impl From<&Principal> for Me {
    fn from(p: &Principal) -> Self {
        Me {
            id: p.id.clone(),
            role: p.role,
            subscriber_id: p.subscriber,
        }
    }
}

/// The subscriber a credential stands for; a credential that stands for none has no `/me` subscriber.
fn own(principal: &Principal) -> Result<Uuid, ApiError> {
    // "subscriber of this credential not found": keys stand for one with `herald keys create --subscriber <id>`.
    principal
        .subscriber
        .ok_or(ApiError::NotFound("subscriber of this credential"))
}

/// Who is calling. Any authenticated caller.
#[utoipa::path(get, path = "/api/v1/me", tag = "me", operation_id = "whoami",
    security(("bearer" = []), ("api_key" = []), ("session" = [])),
    responses((status = 200, description = "the caller", body = Me)))]
async fn whoami(Extension(principal): Extension<Principal>) -> impl IntoResponse {
    axum::Json(Me::from(&principal))
}

/// The caller's own subscriber: contacts, preferences, mute. Any caller whose key stands for a subscriber.
#[utoipa::path(get, path = "/api/v1/me/subscriber", tag = "me", operation_id = "my_subscriber",
    security(("bearer" = []), ("api_key" = []), ("session" = [])),
    responses(
        (status = 200, description = "the caller's subscriber", body = SubscriberView),
        (status = 404, description = "the credential stands for no subscriber")))]
async fn subscriber(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> Result<impl IntoResponse, ApiError> {
    let id = own(&principal)?;
    crate::subscribers::subscriber_view(&state, id)
        .await
        .map(axum::Json)
}

/// Replace the caller's own preferences (what is left out is turned off).
#[utoipa::path(put, path = "/api/v1/me/preferences", tag = "me", operation_id = "change_my_preferences",
    security(("bearer" = []), ("api_key" = []), ("session" = [])),
    request_body = PreferencesInput,
    responses(
        (status = 200, description = "the preferences now in force", body = PreferencesView),
        (status = 404, description = "the credential stands for no subscriber"),
        (status = 409, description = "concurrent changes to the subscriber; retry"),
        (status = 422, description = "invalid time zone, language, quiet hours or digest, or unknown fields")))]
async fn preferences(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Json(input): Json<PreferencesInput>,
) -> Result<impl IntoResponse, ApiError> {
    let id = own(&principal)?;
    crate::subscribers::replace_preferences(&state, id, &input)
        .await
        .map(axum::Json)
}

/// A one-time code that links a Telegram chat to the caller's subscriber (`/start <code>` to the bot).
#[utoipa::path(post, path = "/api/v1/me/link-codes", tag = "me", operation_id = "issue_my_link_code",
    security(("bearer" = []), ("api_key" = []), ("session" = [])),
    responses(
        (status = 201, description = "a new code; the previous one stopped working", body = LinkCode),
        (status = 404, description = "the credential stands for no subscriber")))]
async fn link_code(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> Result<impl IntoResponse, ApiError> {
    let id = own(&principal)?;
    let code = crate::subscribers::link_code(&state, id).await?;
    Ok((StatusCode::CREATED, axum::Json(code)))
}

/// The caller's own active subscriptions, oldest first.
#[utoipa::path(get, path = "/api/v1/me/subscriptions", tag = "me", operation_id = "my_subscriptions",
    security(("bearer" = []), ("api_key" = []), ("session" = [])),
    params(Paging),
    responses(
        (status = 200, description = "one page of the caller's subscriptions", body = Paged<SubscriptionView>),
        (status = 404, description = "the credential stands for no subscriber")))]
async fn subscriptions(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Query(paging): Query<Paging>,
) -> Result<impl IntoResponse, ApiError> {
    let id = own(&principal)?;
    let page = paging.page()?;
    let query = SubscriptionQuery {
        subscriber_id: Some(id),
        ..SubscriptionQuery::default()
    };
    let items = queries::subscriptions(&state.pool, query, page).await?;
    Ok(axum::Json(Paged::new(items, page)))
}

/// Subscribe one of the caller's own contacts: the body is `contact_id` and the filter, as for
/// `POST /api/v1/subscriptions` (a `subscriber_id` or `chat_id` in it is refused).
#[utoipa::path(post, path = "/api/v1/me/subscriptions", tag = "me", operation_id = "subscribe_me",
    security(("bearer" = []), ("api_key" = []), ("session" = [])),
    request_body(content = Object, description = "`contact_id` and the filter fields of a subscription"),
    responses(
        (status = 201, description = "subscribed"),
        (status = 404, description = "no such project or contact of the caller's, or no subscriber"),
        (status = 409, description = "this contact already has a subscription with exactly this filter"),
        (status = 422, description = "invalid filter, a target other than the caller's contact, or unknown fields")))]
async fn subscribe(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Json(mut body): Json<Map<String, Value>>,
) -> Result<impl IntoResponse, ApiError> {
    let id = own(&principal)?;
    for foreign in ["subscriber_id", "chat_id"] {
        if body.contains_key(foreign) {
            return Err(ApiError::Invalid(format!(
                "`{foreign}` is not for /me: subscriptions here are for your own contacts (`contact_id`)"
            )));
        }
    }
    body.insert("subscriber_id".into(), Value::String(id.to_string()));
    let (target, filter) = crate::subscriptions::parse_body(body)?;
    debug_assert!(
        matches!(target, SubscriptionTarget::Contact { subscriber_id, .. } if subscriber_id == id)
    );
    crate::subscriptions::subscribe(&state, target, filter).await
}

/// Remove one of the caller's own subscriptions. Another subscriber's is "not found": its existence is not
/// the caller's business.
#[utoipa::path(delete, path = "/api/v1/me/subscriptions/{id}", tag = "me", operation_id = "unsubscribe_me",
    security(("bearer" = []), ("api_key" = []), ("session" = [])),
    params(("id" = Uuid, Path, description = "the subscription's id")),
    responses(
        (status = 204, description = "unsubscribed"),
        (status = 404, description = "no such subscription of the caller's")))]
async fn unsubscribe(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    PathId(subscription): PathId,
) -> Result<impl IntoResponse, ApiError> {
    let id = own(&principal)?;
    let mine = queries::subscription(&state.pool, subscription)
        .await?
        .is_some_and(|view| view.subscriber_id == Some(id));
    if !mine {
        return Err(ApiError::NotFound("subscription"));
    }
    state
        .commands
        .unsubscribe(subscription, &metadata("unsubscribe"))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
