//! `/api/v1/subscribers`: register people and teams, their preferences and mute, their contacts (Telegram chats,
//! email addresses, FCM tokens, Web Push subscriptions), and Telegram link codes; `/api/v1/contacts/verify`, the
//! link a person follows from the verification email.
//!
//! An email address is added only once the verification email went out: the API asks whether the address could
//! be added, sends the mail, and records the contact (with the token's hash) only when the mail was accepted.
//! A mail that cannot be sent leaves nothing behind, so a retry starts from a clean slate.

use std::future::Future;
use std::pin::Pin;

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use chrono::{DateTime, SubsecRound, Utc};
use commands::{CommandError, Commands};
use domain::{
    ChatId, ChatKind, ContactAddress, InvalidValue, Language, Preferences, QuietHours,
    SubscriberError, TimeZone,
};
use projections::queries::{self, PreferencesView, SubscriberView};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::extract::{Json, OptionalJson, Paged, Paging, PathId, Query};
use crate::{metadata, ApiError, AppState};

/// A boxed future that may be sent between threads (the same type as `futures::future::BoxFuture`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Sends the email that proves an address reaches its owner. The API holds one when email is configured.
pub trait VerificationMailer: Send + Sync {
    /// Mail `link` to `to`, written in `language`; `Err` says why the mail was not accepted.
    fn send_verification(
        &self,
        to: &str,
        link: &str,
        language: Language,
    ) -> BoxFuture<'_, Result<(), String>>;
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(show))
        .routes(routes!(change_preferences))
        .routes(routes!(mute, unmute))
        .routes(routes!(add_contact))
        .routes(routes!(remove_contact))
        .routes(routes!(resend_verification))
        .routes(routes!(enable_contact))
        .routes(routes!(disable_contact))
        .routes(routes!(issue_link_code))
        .routes(routes!(verify))
}

/// The longest email address Herald accepts (RFC 5321's path limit less the angle brackets).
/// Generous bounds for push tokens and keys: real ones are far shorter.
const MAX_TOKEN_LEN: usize = 4096;
const MAX_KEY_LEN: usize = 256;
const MAX_REASON_CHARS: usize = 200;
/// What a contact disabled without a reason is disabled for.
const OPERATOR_REASON: &str = "disabled by an operator";

// ---------------------------------------------------------------------------------------------------------------
// Bodies

/// Quiet hours as `HH:MM` wall-clock times in the subscriber's time zone; `22:00`–`07:00` wraps midnight.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct QuietHoursInput {
    /// e.g. `22:00`
    start: String,
    /// e.g. `07:00`
    end: String,
}

/// A new subscriber: a person or a team.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct SubscriberInput {
    /// 1 to 100 characters.
    name: String,
    /// An IANA time zone such as `Europe/Berlin`; default `UTC`.
    #[serde(default)]
    time_zone: Option<String>,
    /// `en` or `de`; default `en`.
    #[serde(default)]
    language: Option<String>,
    /// No messages between these times.
    #[serde(default)]
    quiet_hours: Option<QuietHoursInput>,
    /// At most one message per this many minutes per project (1 to 1440); absent: every message.
    #[serde(default)]
    digest_minutes: Option<u32>,
    /// A run's verdict edits its "started" Telegram message in place instead of arriving as a second message.
    #[serde(default)]
    edit_in_place: bool,
}

/// A subscriber's preferences, replaced as a whole: what is left out is turned off.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PreferencesInput {
    /// An IANA time zone such as `Europe/Berlin`.
    time_zone: String,
    /// `en` or `de`.
    language: String,
    /// No messages between these times; absent: none.
    #[serde(default)]
    quiet_hours: Option<QuietHoursInput>,
    /// At most one message per this many minutes per project (1 to 1440); absent: every message.
    #[serde(default)]
    digest_minutes: Option<u32>,
    /// A run's verdict edits its "started" Telegram message in place instead of arriving as a second message.
    #[serde(default)]
    edit_in_place: bool,
}

/// A new subscriber.
#[derive(Serialize, ToSchema)]
struct CreatedSubscriber {
    subscriber_id: Uuid,
    name: String,
    preferences: PreferencesView,
    muted: bool,
}

/// How long to mute: until a time, for a number of seconds, or (neither) until unmuted.
#[derive(Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct MuteInput {
    /// An RFC 3339 time in the future.
    #[serde(default)]
    until: Option<DateTime<Utc>>,
    /// Seconds from now (at least 1).
    #[serde(default)]
    for_secs: Option<u64>,
}

/// The mute now in force.
#[derive(Serialize, ToSchema)]
struct MuteBody {
    /// Always true.
    muted: bool,
    /// When the mute ends; null: until unmuted.
    muted_until: Option<DateTime<Utc>>,
}

/// Where a new contact reaches its subscriber; `kind` says which of the shapes it is.
#[derive(Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
enum ContactInput {
    /// A Telegram chat the bot may write to.
    Telegram {
        /// The chat's id (negative for groups and channels).
        chat_id: i64,
        /// `private` (default), `group`, `supergroup` or `channel`.
        #[serde(default)]
        chat_type: Option<String>,
        /// A forum topic of a supergroup (`message_thread_id`).
        #[serde(default)]
        topic_id: Option<i64>,
    },
    /// An email address; it receives a verification link and is used only once that link was followed.
    Email {
        /// e.g. `ann@example.com`; the domain is lower-cased.
        address: String,
    },
    /// A Firebase Cloud Messaging registration token.
    Fcm {
        /// The device's registration token.
        token: String,
    },
    /// A Web Push subscription, as the browser's `PushSubscription.toJSON()` gives it.
    WebPush {
        /// The push service's `https` URL.
        endpoint: String,
        /// The subscription's P-256 public key, base64url.
        p256dh: String,
        /// The subscription's authentication secret, base64url.
        auth: String,
    },
}

/// A new contact.
#[derive(Serialize, ToSchema)]
struct CreatedContact {
    contact_id: Uuid,
    /// `telegram`, `email`, `fcm` or `web_push`.
    kind: &'static str,
    /// False for an email address until the link in the verification email is followed.
    verified: bool,
}

/// A verification email that went out.
#[derive(Serialize, ToSchema)]
struct VerificationSent {
    contact_id: Uuid,
    /// When the new link stops working (the previous link already has).
    expires_at: DateTime<Utc>,
}

/// Why a contact is disabled.
#[derive(Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct DisableInput {
    /// Up to 200 characters; default "disabled by an operator".
    #[serde(default)]
    reason: Option<String>,
}

/// A one-time code that links a Telegram chat to the subscriber: `/start <code>` in a chat with the bot.
#[derive(Serialize, ToSchema)]
pub(crate) struct LinkCode {
    code: String,
    expires_at: DateTime<Utc>,
    /// `https://t.me/<bot>?start=<code>`, when Herald knows its bot's username.
    deep_link: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ListParams {
    #[serde(flatten)]
    #[param(ignore)]
    paging: Paging,
    /// Only subscribers whose name contains this (any case).
    name: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct VerifyParams {
    /// The token from the verification email.
    token: String,
}

// ---------------------------------------------------------------------------------------------------------------
// Extractors and answers of this module

/// `/subscribers/{id}/contacts/{contact_id}`: ids that are not UUIDs name nothing (404).
struct ContactPath {
    subscriber_id: Uuid,
    contact_id: Uuid,
}

impl<S: Send + Sync> FromRequestParts<S> for ContactPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let axum::extract::Path((subscriber, contact)) =
            axum::extract::Path::<(String, String)>::from_request_parts(parts, state)
                .await
                .map_err(|e| ApiError::BadRequest(e.body_text()))?;
        Ok(Self {
            subscriber_id: subscriber
                .parse()
                .map_err(|_| ApiError::NotFound("subscriber"))?,
            contact_id: contact.parse().map_err(|_| ApiError::NotFound("contact"))?,
        })
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Checks

fn preferences(
    time_zone: Option<&str>,
    language: Option<&str>,
    quiet_hours: Option<&QuietHoursInput>,
    digest_minutes: Option<u32>,
    edit_in_place: bool,
) -> Result<Preferences, InvalidValue> {
    Preferences {
        time_zone: time_zone.map_or_else(|| Ok(TimeZone::utc()), TimeZone::parse)?,
        language: language.map_or(Ok(Language::En), str::parse)?,
        quiet_hours: quiet_hours
            .map(|q| QuietHours::parse(&q.start, &q.end))
            .transpose()?,
        digest_minutes,
        edit_in_place,
    }
    .validate()
}

/// A push token or key: non-empty, bounded, printable ASCII without spaces.
fn token(field: &'static str, raw: &str, max: usize) -> Result<String, InvalidValue> {
    if raw.is_empty() || raw.len() > max || !raw.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(InvalidValue::new(
            field,
            format!("must be 1 to {max} printable characters without spaces"),
        ));
    }
    Ok(raw.to_owned())
}

/// A Web Push key: base64url (padding allowed), non-empty.
fn base64url(field: &'static str, raw: &str) -> Result<String, InvalidValue> {
    let body = raw.trim_end_matches('=');
    let ok = !body.is_empty()
        && raw.len() <= MAX_KEY_LEN
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !ok {
        return Err(InvalidValue::new(
            field,
            "must be a non-empty base64url string",
        ));
    }
    Ok(raw.to_owned())
}

/// A Web Push endpoint: an `https` URL with a host.
fn endpoint(raw: &str) -> Result<String, InvalidValue> {
    let invalid = || InvalidValue::new("endpoint", "must be an https URL of a push service");
    let rest = raw
        .get(..8)
        .filter(|scheme| scheme.eq_ignore_ascii_case("https://"))
        .map(|_| &raw[8..])
        .ok_or_else(invalid)?;
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if host.is_empty() || raw.len() > MAX_TOKEN_LEN || !raw.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid());
    }
    Ok(raw.to_owned())
}

impl ContactInput {
    fn address(self) -> Result<ContactAddress, InvalidValue> {
        Ok(match self {
            Self::Telegram {
                chat_id,
                chat_type,
                topic_id,
            } => {
                if topic_id.is_some_and(|t| t <= 0) {
                    return Err(InvalidValue::new(
                        "topic_id",
                        "must be a positive forum topic id",
                    ));
                }
                ContactAddress::Telegram {
                    chat_id: ChatId::parse(chat_id)?,
                    chat_type: ChatKind::parse(chat_type.as_deref().unwrap_or("private"))?,
                    topic_id,
                }
            }
            Self::Email { address } => ContactAddress::Email {
                address: domain::email_address(&address)?,
            },
            Self::Fcm { token: raw } => ContactAddress::Fcm {
                token: token("token", &raw, MAX_TOKEN_LEN)?,
            },
            Self::WebPush {
                endpoint: url,
                p256dh,
                auth,
            } => ContactAddress::WebPush {
                endpoint: endpoint(&url)?,
                p256dh: base64url("p256dh", &p256dh)?,
                auth: base64url("auth", &auth)?,
            },
        })
    }
}

fn disable_reason(raw: Option<&str>) -> Result<String, InvalidValue> {
    let reason = raw.map(str::trim).unwrap_or_default();
    if reason.is_empty() {
        return Ok(OPERATOR_REASON.to_owned());
    }
    if reason.chars().count() > MAX_REASON_CHARS || reason.chars().any(char::is_control) {
        return Err(InvalidValue::new(
            "reason",
            format!("must be at most {MAX_REASON_CHARS} characters without control characters"),
        ));
    }
    Ok(reason.to_owned())
}

/// The link a verification email carries.
fn verification_link(state: &AppState, token: &str) -> String {
    format!(
        "{}/api/v1/contacts/verify?token={token}",
        state.public_url.trim_end_matches('/')
    )
}

/// Mail a verification link; a refusal records nothing and answers 502.
async fn send_verification(
    state: &AppState,
    to: &str,
    token: &str,
    language: Language,
) -> Result<(), ApiError> {
    let mailer = state
        .mailer
        .as_ref()
        .ok_or_else(|| ApiError::Unavailable("email is not configured".into()))?;
    let link = verification_link(state, token);
    mailer
        .send_verification(to, &link, language)
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "the verification email was not sent");
            ApiError::BadGateway(format!("the verification email could not be sent: {e}"))
        })
}

// ---------------------------------------------------------------------------------------------------------------
// Subscribers

/// Register a subscriber: a person or a team. Operators and admins.
#[utoipa::path(post, path = "/api/v1/subscribers", tag = "subscribers",
    operation_id = "create_subscriber",
    security(("bearer" = []), ("api_key" = [])),
    request_body = SubscriberInput,
    responses(
        (status = 201, description = "registered", body = CreatedSubscriber,
            headers(("Location" = String, description = "the new subscriber's URL"))),
        (status = 400, description = "malformed JSON"),
        (status = 415, description = "the body is not `application/json`"),
        (status = 422, description = "invalid name, time zone, language, quiet hours or digest, or unknown fields")))]
async fn create(
    State(state): State<AppState>,
    Json(input): Json<SubscriberInput>,
) -> Result<impl IntoResponse, ApiError> {
    let name = domain::subscriber_name(&input.name)?;
    let preferences = preferences(
        input.time_zone.as_deref(),
        input.language.as_deref(),
        input.quiet_hours.as_ref(),
        input.digest_minutes,
        input.edit_in_place,
    )?;
    let subscriber_id = state
        .commands
        .register_subscriber(&name, preferences.clone(), &metadata("register_subscriber"))
        .await?;
    Ok((
        StatusCode::CREATED,
        [(
            header::LOCATION,
            format!("/api/v1/subscribers/{subscriber_id}"),
        )],
        axum::Json(CreatedSubscriber {
            subscriber_id,
            name,
            preferences: PreferencesView::from(&preferences),
            muted: false,
        }),
    ))
}

/// List subscribers with their contacts, oldest first. Readers, operators and admins.
#[utoipa::path(get, path = "/api/v1/subscribers", tag = "subscribers",
    operation_id = "list_subscribers",
    security(("bearer" = []), ("api_key" = [])),
    params(Paging, ListParams),
    responses(
        (status = 200, description = "one page of subscribers", body = Paged<SubscriberView>),
        (status = 422, description = "invalid `limit` or `offset`")))]
async fn list(
    State(state): State<AppState>,
    Query(params): Query<ListParams>,
) -> Result<impl IntoResponse, ApiError> {
    let page = params.paging.page()?;
    let name = params
        .name
        .as_deref()
        .map(str::trim)
        .filter(|n| !n.is_empty());
    let items = queries::subscribers(&state.pool, name, page).await?;
    Ok(axum::Json(Paged::new(items, page)))
}

/// A subscriber with its preferences, mute and contacts. Readers, operators and admins.
///
/// Contacts never show verification secrets; push tokens show only their first characters.
#[utoipa::path(get, path = "/api/v1/subscribers/{id}", tag = "subscribers",
    operation_id = "show_subscriber",
    security(("bearer" = []), ("api_key" = [])),
    params(("id" = Uuid, Path, description = "the subscriber's id")),
    responses(
        (status = 200, description = "the subscriber", body = SubscriberView),
        (status = 404, description = "no such subscriber")))]
async fn show(
    State(state): State<AppState>,
    PathId(id): PathId,
) -> Result<impl IntoResponse, ApiError> {
    subscriber_view(&state, id).await.map(axum::Json)
}

/// A subscriber as the API shows it: from the read model, or (registered a moment ago) from its events.
pub(crate) async fn subscriber_view(
    state: &AppState,
    id: Uuid,
) -> Result<SubscriberView, ApiError> {
    if let Some(view) = queries::subscriber(&state.pool, id).await? {
        return Ok(view);
    }
    let subscriber = state.commands.subscriber(id).await?;
    SubscriberView::from_aggregate(&subscriber, Utc::now()).ok_or(ApiError::NotFound("subscriber"))
}

/// Replace a subscriber's preferences. Operators and admins.
#[utoipa::path(put, path = "/api/v1/subscribers/{id}/preferences", tag = "subscribers",
    operation_id = "change_subscriber_preferences",
    security(("bearer" = []), ("api_key" = [])),
    params(("id" = Uuid, Path, description = "the subscriber's id")),
    request_body = PreferencesInput,
    responses(
        (status = 200, description = "the preferences now in force", body = PreferencesView),
        (status = 400, description = "malformed JSON"),
        (status = 404, description = "no such subscriber"),
        (status = 409, description = "concurrent changes to the subscriber; retry"),
        (status = 415, description = "the body is not `application/json`"),
        (status = 422, description = "invalid time zone, language, quiet hours or digest, or unknown fields")))]
async fn change_preferences(
    State(state): State<AppState>,
    PathId(id): PathId,
    Json(input): Json<PreferencesInput>,
) -> Result<impl IntoResponse, ApiError> {
    replace_preferences(&state, id, &input)
        .await
        .map(axum::Json)
}

/// Check and record a subscriber's new preferences; the answer is what is now in force.
pub(crate) async fn replace_preferences(
    state: &AppState,
    id: Uuid,
    input: &PreferencesInput,
) -> Result<PreferencesView, ApiError> {
    let preferences = preferences(
        Some(&input.time_zone),
        Some(&input.language),
        input.quiet_hours.as_ref(),
        input.digest_minutes,
        input.edit_in_place,
    )?;
    state
        .commands
        .change_preferences(id, preferences.clone(), &metadata("change_preferences"))
        .await?;
    Ok(PreferencesView::from(&preferences))
}

/// Mute a subscriber: until a time (`until`), for a while (`for_secs`), or with neither until unmuted.
/// Operators and admins.
#[utoipa::path(post, path = "/api/v1/subscribers/{id}/mute", tag = "subscribers",
    operation_id = "mute_subscriber",
    security(("bearer" = []), ("api_key" = [])),
    params(("id" = Uuid, Path, description = "the subscriber's id")),
    request_body(content = Option<MuteInput>, content_type = "application/json",
        description = "optional: without a body the mute lasts until unmuted"),
    responses(
        (status = 200, description = "muted", body = MuteBody),
        (status = 400, description = "malformed JSON"),
        (status = 404, description = "no such subscriber"),
        (status = 409, description = "concurrent changes to the subscriber; retry"),
        (status = 415, description = "a body that is not `application/json`"),
        (status = 422, description = "both `until` and `for_secs`, an end that is not in the future, or unknown fields")))]
async fn mute(
    State(state): State<AppState>,
    PathId(id): PathId,
    OptionalJson(input): OptionalJson<MuteInput>,
) -> Result<impl IntoResponse, ApiError> {
    let at = Utc::now();
    let until = match (input.until, input.for_secs) {
        (Some(_), Some(_)) => {
            return Err(ApiError::Invalid(
                "give `until` or `for_secs`, not both".into(),
            ))
        }
        // Microseconds, as the read model keeps times: the answer and a later read agree.
        (Some(until), None) => Some(until.trunc_subsecs(6)),
        (None, Some(secs)) => {
            let too_long = || InvalidValue::new("for_secs", "is too long");
            let secs = i64::try_from(secs).map_err(|_| too_long())?;
            let duration = chrono::Duration::try_seconds(secs).ok_or_else(too_long)?;
            // Whole seconds: still after `at`, since `for_secs` is at least 1.
            Some(
                at.checked_add_signed(duration)
                    .ok_or_else(too_long)?
                    .trunc_subsecs(0),
            )
        }
        (None, None) => None,
    };
    if until.is_some_and(|u| u <= at) {
        let field = if input.for_secs.is_some() {
            "for_secs"
        } else {
            "until"
        };
        return Err(InvalidValue::new(field, "the mute must end in the future").into());
    }
    state
        .commands
        .mute(id, until, at, &metadata("mute"))
        .await?;
    Ok(axum::Json(MuteBody {
        muted: true,
        muted_until: until,
    }))
}

/// Unmute a subscriber (unmuting one who is not muted changes nothing). Operators and admins.
#[utoipa::path(delete, path = "/api/v1/subscribers/{id}/mute", tag = "subscribers",
    operation_id = "unmute_subscriber",
    security(("bearer" = []), ("api_key" = [])),
    params(("id" = Uuid, Path, description = "the subscriber's id")),
    responses(
        (status = 204, description = "not muted"),
        (status = 404, description = "no such subscriber"),
        (status = 409, description = "concurrent changes to the subscriber; retry")))]
async fn unmute(
    State(state): State<AppState>,
    PathId(id): PathId,
) -> Result<impl IntoResponse, ApiError> {
    state.commands.unmute(id, &metadata("unmute")).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---------------------------------------------------------------------------------------------------------------
// Contacts

/// Add a contact to a subscriber. Operators and admins.
///
/// A Telegram chat, an FCM token or a Web Push subscription is usable at once. An email address first receives
/// a verification link (valid 24 hours) and is used only once that link was followed; the contact is recorded
/// only when the mail went out.
#[utoipa::path(post, path = "/api/v1/subscribers/{id}/contacts", tag = "subscribers",
    operation_id = "add_contact",
    security(("bearer" = []), ("api_key" = [])),
    params(("id" = Uuid, Path, description = "the subscriber's id")),
    request_body = ContactInput,
    responses(
        (status = 201, description = "added (an email address: verification mail sent)", body = CreatedContact),
        (status = 400, description = "malformed JSON"),
        (status = 404, description = "no such subscriber"),
        (status = 409, description = "the subscriber already has a contact reaching that place"),
        (status = 415, description = "the body is not `application/json`"),
        (status = 422, description = "invalid chat, address, token, endpoint or key, or unknown fields"),
        (status = 502, description = "the verification email was not accepted; nothing was recorded"),
        (status = 503, description = "an email address, and email is not configured")))]
async fn add_contact(
    State(state): State<AppState>,
    PathId(subscriber_id): PathId,
    Json(input): Json<ContactInput>,
) -> Result<Response, ApiError> {
    let address = input.address()?;
    let kind = address.kind();
    let contact_id = Uuid::new_v4();
    let metadata = metadata("add_contact");
    let ContactAddress::Email { address: to } = &address else {
        state
            .commands
            .add_contact(subscriber_id, contact_id, address, None, &metadata)
            .await?;
        return Ok(created_contact(contact_id, kind, true));
    };
    if state.mailer.is_none() {
        return Err(ApiError::Unavailable("email is not configured".into()));
    }
    // Refuse a duplicate (or an unknown subscriber) before anything is mailed.
    state
        .commands
        .check_new_contact(subscriber_id, &address)
        .await?;
    let language = state
        .commands
        .subscriber(subscriber_id)
        .await?
        .preferences
        .language;
    let (token, hash) = Commands::verification_token(subscriber_id, contact_id);
    send_verification(&state, to, &token, language).await?;
    state
        .commands
        .add_contact(subscriber_id, contact_id, address, Some(hash), &metadata)
        .await
        .inspect_err(|e| {
            tracing::warn!(error = %e, %subscriber_id, %contact_id,
                "a verification email went out but its contact was not recorded; its link will not work");
        })?;
    Ok(created_contact(contact_id, kind, false))
}

fn created_contact(contact_id: Uuid, kind: &'static str, verified: bool) -> Response {
    (
        StatusCode::CREATED,
        axum::Json(CreatedContact {
            contact_id,
            kind,
            verified,
        }),
    )
        .into_response()
}

/// Remove a contact; its subscriptions stop notifying. Operators and admins.
#[utoipa::path(delete, path = "/api/v1/subscribers/{id}/contacts/{contact_id}", tag = "subscribers",
    operation_id = "remove_contact",
    security(("bearer" = []), ("api_key" = [])),
    params(("id" = Uuid, Path, description = "the subscriber's id"),
        ("contact_id" = Uuid, Path, description = "the contact's id")),
    responses(
        (status = 204, description = "removed"),
        (status = 404, description = "no such subscriber or contact"),
        (status = 409, description = "concurrent changes to the subscriber; retry")))]
async fn remove_contact(
    State(state): State<AppState>,
    path: ContactPath,
) -> Result<impl IntoResponse, ApiError> {
    state
        .commands
        .remove_contact(
            path.subscriber_id,
            path.contact_id,
            &metadata("remove_contact"),
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Send a fresh verification email to an unverified address; the previous link stops working. Operators and
/// admins.
#[utoipa::path(post, path = "/api/v1/subscribers/{id}/contacts/{contact_id}/verification",
    tag = "subscribers",
    operation_id = "resend_verification",
    security(("bearer" = []), ("api_key" = [])),
    params(("id" = Uuid, Path, description = "the subscriber's id"),
        ("contact_id" = Uuid, Path, description = "the contact's id")),
    responses(
        (status = 202, description = "a new verification email went out", body = VerificationSent),
        (status = 404, description = "no such subscriber or contact"),
        (status = 409, description = "the contact is verified already (every non-email contact is)"),
        (status = 502, description = "the verification email was not accepted; nothing was recorded"),
        (status = 503, description = "email is not configured")))]
async fn resend_verification(
    State(state): State<AppState>,
    path: ContactPath,
) -> Result<Response, ApiError> {
    let ContactPath {
        subscriber_id,
        contact_id,
    } = path;
    let subscriber = state.commands.subscriber(subscriber_id).await?;
    let contact = subscriber
        .contacts
        .get(&contact_id)
        .ok_or(CommandError::from(SubscriberError::ContactNotFound))?;
    let ContactAddress::Email { address: to } = &contact.address else {
        return Err(CommandError::from(SubscriberError::AlreadyVerified).into());
    };
    if contact.verified {
        return Err(CommandError::from(SubscriberError::AlreadyVerified).into());
    }
    let (token, hash) = Commands::verification_token(subscriber_id, contact_id);
    let expires_at = hash.expires_at;
    send_verification(&state, to, &token, subscriber.preferences.language).await?;
    state
        .commands
        .renew_verification(
            subscriber_id,
            contact_id,
            hash,
            &metadata("renew_verification"),
        )
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(VerificationSent {
            contact_id,
            expires_at,
        }),
    )
        .into_response())
}

/// Use a disabled contact again. Operators and admins.
#[utoipa::path(post, path = "/api/v1/subscribers/{id}/contacts/{contact_id}/enable", tag = "subscribers",
    operation_id = "enable_contact",
    security(("bearer" = []), ("api_key" = [])),
    params(("id" = Uuid, Path, description = "the subscriber's id"),
        ("contact_id" = Uuid, Path, description = "the contact's id")),
    responses(
        (status = 204, description = "enabled (or was already)"),
        (status = 404, description = "no such subscriber or contact"),
        (status = 409, description = "concurrent changes to the subscriber; retry")))]
async fn enable_contact(
    State(state): State<AppState>,
    path: ContactPath,
) -> Result<impl IntoResponse, ApiError> {
    state
        .commands
        .enable_contact(
            path.subscriber_id,
            path.contact_id,
            &metadata("enable_contact"),
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Stop using a contact, keeping it and its subscriptions. Operators and admins.
#[utoipa::path(post, path = "/api/v1/subscribers/{id}/contacts/{contact_id}/disable", tag = "subscribers",
    operation_id = "disable_contact",
    security(("bearer" = []), ("api_key" = [])),
    params(("id" = Uuid, Path, description = "the subscriber's id"),
        ("contact_id" = Uuid, Path, description = "the contact's id")),
    request_body(content = Option<DisableInput>, content_type = "application/json",
        description = "optional: why"),
    responses(
        (status = 204, description = "disabled (or was already)"),
        (status = 400, description = "malformed JSON"),
        (status = 404, description = "no such subscriber or contact"),
        (status = 409, description = "concurrent changes to the subscriber; retry"),
        (status = 415, description = "a body that is not `application/json`"),
        (status = 422, description = "a reason that is too long, or unknown fields")))]
async fn disable_contact(
    State(state): State<AppState>,
    path: ContactPath,
    OptionalJson(input): OptionalJson<DisableInput>,
) -> Result<impl IntoResponse, ApiError> {
    let reason = disable_reason(input.reason.as_deref())?;
    state
        .commands
        .disable_contact(
            path.subscriber_id,
            path.contact_id,
            &reason,
            &metadata("disable_contact"),
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A one-time code (valid 15 minutes) that links a Telegram chat to this subscriber: send `/start <code>` to the
/// bot from the chat, or open `deep_link`. A new code replaces the previous one. Operators and admins.
#[utoipa::path(post, path = "/api/v1/subscribers/{id}/link-codes", tag = "subscribers",
    operation_id = "issue_link_code",
    security(("bearer" = []), ("api_key" = [])),
    params(("id" = Uuid, Path, description = "the subscriber's id")),
    responses(
        (status = 201, description = "a new code; the previous one stopped working", body = LinkCode),
        (status = 404, description = "no such subscriber"),
        (status = 409, description = "concurrent changes to the subscriber; retry")))]
async fn issue_link_code(
    State(state): State<AppState>,
    PathId(id): PathId,
) -> Result<impl IntoResponse, ApiError> {
    Ok((
        StatusCode::CREATED,
        axum::Json(link_code(&state, id).await?),
    ))
}

/// A new one-time Telegram link code for a subscriber (the previous one stops working).
pub(crate) async fn link_code(state: &AppState, id: Uuid) -> Result<LinkCode, ApiError> {
    let (code, expires_at) = state
        .commands
        .issue_link_code(id, &metadata("issue_link_code"))
        .await?;
    let deep_link = state
        .bot_username
        .as_deref()
        .map(|bot| format!("https://t.me/{bot}?start={code}"));
    Ok(LinkCode {
        code,
        expires_at,
        deep_link,
    })
}

/// Follow the link from a verification email: the address is verified. Anyone (the link is the credential).
///
/// Following it again answers the same page.
#[utoipa::path(get, path = "/api/v1/contacts/verify", tag = "subscribers",
    operation_id = "verify_contact",
    params(VerifyParams),
    responses(
        (status = 200, description = "verified: a small page saying so", content_type = "text/html", body = String),
        (status = 410, description = "the link is wrong, was replaced by a newer one, or expired"),
        (status = 422, description = "no `token`")))]
async fn verify(
    State(state): State<AppState>,
    Query(params): Query<VerifyParams>,
) -> Result<impl IntoResponse, ApiError> {
    let (subscriber_id, _) = state
        .commands
        .verify_contact(params.token.trim(), &metadata("verify_contact"))
        .await?;
    let language = state
        .commands
        .subscriber(subscriber_id)
        .await
        .map(|s| s.preferences.language)
        .unwrap_or_default();
    Ok(verified_page(language))
}

fn verified_page(language: Language) -> Html<String> {
    let (lang, title, text) = match language {
        Language::De => (
            "de",
            "Adresse bestätigt",
            "Diese Adresse kann jetzt Benachrichtigungen von Herald empfangen. Sie können dieses Fenster schließen.",
        ),
        Language::En => (
            "en",
            "Address verified",
            "This address can now receive notifications from Herald. You can close this window.",
        ),
    };
    Html(format!(
        "<!DOCTYPE html>\n<html lang=\"{lang}\">\n<head><meta charset=\"utf-8\"><meta name=\"viewport\" \
         content=\"width=device-width, initial-scale=1\"><title>{title}</title></head>\n<body style=\"font-family: \
         sans-serif; max-width: 36em; margin: 4em auto; padding: 0 1em\">\n<h1>{title}</h1>\n<p>{text}</p>\n\
         </body>\n</html>\n"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_contacts_need_an_https_endpoint_and_base64url_keys() {
        let push = |endpoint: &str, p256dh: &str, auth: &str| {
            ContactInput::WebPush {
                endpoint: endpoint.into(),
                p256dh: p256dh.into(),
                auth: auth.into(),
            }
            .address()
        };
        assert!(push("https://push.example.com/send/abc", "BNc-_x", "tBHI").is_ok());
        assert_eq!(
            push("http://push.example.com/x", "BN", "tB")
                .unwrap_err()
                .field,
            "endpoint"
        );
        assert_eq!(
            push("https:///x", "BN", "tB").unwrap_err().field,
            "endpoint"
        );
        assert_eq!(
            push("https://push.example.com/x", "", "tB")
                .unwrap_err()
                .field,
            "p256dh"
        );
        assert_eq!(
            push("https://push.example.com/x", "BN", "t+B/")
                .unwrap_err()
                .field,
            "auth"
        );
        assert!(ContactInput::Fcm { token: "".into() }.address().is_err());
        assert!(ContactInput::Fcm {
            token: "a b".into()
        }
        .address()
        .is_err());
    }

    #[test]
    fn contact_bodies_are_tagged_by_kind_and_refuse_unknown_fields() {
        let parse = |v: serde_json::Value| serde_json::from_value::<ContactInput>(v);
        assert!(matches!(
            parse(serde_json::json!({"kind": "telegram", "chat_id": 42})),
            Ok(ContactInput::Telegram { chat_id: 42, .. })
        ));
        assert!(
            parse(serde_json::json!({"kind": "email", "address": "a@b.c", "extra": 1})).is_err()
        );
        assert!(parse(serde_json::json!({"kind": "pigeon"})).is_err());
        let chat =
            parse(serde_json::json!({"kind": "telegram", "chat_id": 42, "chat_type": "castle"}))
                .unwrap()
                .address()
                .unwrap_err();
        assert_eq!(chat.field, "chat_type");
    }

    #[test]
    fn preferences_name_the_field_they_refuse() {
        let field = |tz: Option<&str>, lang: Option<&str>, digest: Option<u32>| {
            preferences(tz, lang, None, digest, false)
                .unwrap_err()
                .field
        };
        assert_eq!(field(Some("Mars/Olympus"), None, None), "time_zone");
        assert_eq!(field(None, Some("xx"), None), "language");
        assert_eq!(field(None, None, Some(0)), "digest_minutes");
        let quiet = QuietHoursInput {
            start: "25:00".into(),
            end: "07:00".into(),
        };
        assert_eq!(
            preferences(None, None, Some(&quiet), None, false)
                .unwrap_err()
                .field,
            "quiet_hours"
        );
        let ok = preferences(None, None, None, None, false).unwrap();
        assert_eq!(ok, Preferences::default());
    }

    #[test]
    fn a_disable_reason_defaults_and_is_bounded() {
        assert_eq!(disable_reason(None).unwrap(), OPERATOR_REASON);
        assert_eq!(disable_reason(Some("  ")).unwrap(), OPERATOR_REASON);
        assert_eq!(disable_reason(Some(" moved ")).unwrap(), "moved");
        assert!(disable_reason(Some(&"x".repeat(201))).is_err());
    }
}
