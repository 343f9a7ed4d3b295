//! `/api/v1/email/events` and `/api/v1/email/dsn`: what mail systems report back about the addresses Herald
//! writes to. A hard bounce or a spam complaint disables every email contact with that address, so Herald stops
//! mailing an address that cannot or does not want to receive its mail (and stays in good standing with the
//! providers that count bounces and complaints against a sender).
//!
//! Reading the reports is [`commands::bounces`]' job; this module only finds the contacts and disables them. It
//! never enables or removes a contact: the owner turns a contact back on with the enable endpoint.

use axum::body::Bytes;
use axum::extract::State;
use axum::response::IntoResponse;
use commands::bounces::{self, BounceError, Feedback};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::{metadata, ApiError, AppState};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(sendgrid_events))
        .routes(routes!(delivery_report))
}

/// A contact that was disabled.
#[derive(Debug, Serialize, ToSchema)]
struct DisabledContact {
    subscriber_id: Uuid,
    contact_id: Uuid,
    /// The address as the report named it.
    address: String,
    /// `email_bounced: …` or `email_complaint: …`, as the contact now shows it.
    reason: String,
}

/// What a report changed.
#[derive(Debug, Serialize, ToSchema)]
struct Disabled {
    /// Contacts disabled by this call; empty when they were disabled already (a report posted twice).
    disabled: Vec<DisabledContact>,
    /// Events (or report recipients) that disabled nothing: not a bounce or complaint, a temporary failure, an
    /// address no enabled contact has, or one disabled before.
    ignored: usize,
}

impl From<BounceError> for ApiError {
    fn from(e: BounceError) -> Self {
        match e {
            BounceError::Malformed(_) => Self::BadRequest(e.to_string()),
            BounceError::Invalid(_) | BounceError::NotAReport(_) => Self::Invalid(e.to_string()),
        }
    }
}

/// Receive a SendGrid Event Webhook batch. Operators and admins (SendGrid can send the key as the password of
/// Basic auth in the webhook URL).
///
/// `bounce` events of type `bounce`, `dropped` events for bounced, invalid or spam-reporting addresses, and
/// `spamreport` events disable every enabled email contact with that address; everything else (`blocked`
/// bounces, `deferred`, `delivered`, `open`, `click`, ...) is ignored. A malformed batch changes nothing.
#[utoipa::path(post, path = "/api/v1/email/events", tag = "email",
    operation_id = "receive_sendgrid_events",
    security(("bearer" = []), ("api_key" = []), ("basic" = [])),
    request_body(content = Vec<serde_json::Value>, content_type = "application/json",
        description = "SendGrid's Event Webhook body: an array of events with `email`, `event`, `type`, `reason`, `status`"),
    responses(
        (status = 200, description = "the contacts disabled", body = Disabled),
        (status = 400, description = "malformed JSON; nothing changed"),
        (status = 422, description = "not an array of events with `email` and `event`; nothing changed")))]
async fn sendgrid_events(
    State(state): State<AppState>,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let feedback = bounces::sendgrid_events(&body)?;
    disable_all(&state, &feedback, "sendgrid").await
}

/// Receive a bounce or complaint message as an MTA delivers it (Postfix `pipe`, procmail, ...): the raw message
/// is the body, whatever the Content-Type. Operators and admins.
///
/// An RFC 3464 delivery status notification disables the recipients whose `Action` is `failed` with a 5.x.x
/// `Status`; delays and 4.x.x failures are ignored. An RFC 5965 abuse report (`Feedback-Type: abuse`) disables
/// its `Original-Rcpt-To` (or the included message's `To`). Any other message is refused and changes nothing.
#[utoipa::path(post, path = "/api/v1/email/dsn", tag = "email",
    operation_id = "receive_delivery_report",
    security(("bearer" = []), ("api_key" = []), ("basic" = [])),
    request_body(content = String, content_type = "message/rfc822",
        description = "the whole bounce or complaint message, headers included"),
    responses(
        (status = 200, description = "the contacts disabled", body = Disabled),
        (status = 422, description = "not a delivery status or abuse report; nothing changed")))]
async fn delivery_report(
    State(state): State<AppState>,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let feedback = bounces::mail_report(&body)?;
    disable_all(&state, &feedback, "mail_report").await
}

#[derive(sqlx::FromRow)]
struct EmailContact {
    subscriber_id: Uuid,
    contact_id: Uuid,
}

/// Disable every enabled email contact that a verdict names. The contacts read model finds them (addresses
/// compare without case: providers report them as they like); the subscriber aggregate decides, so a contact
/// the read model still shows enabled but is disabled already records nothing and is not listed.
async fn disable_all(
    state: &AppState,
    feedback: &[Feedback],
    source: &str,
) -> Result<axum::Json<Disabled>, ApiError> {
    let mut metadata = metadata("disable_email_contact");
    metadata.insert("email_feedback".to_owned(), source.to_owned());
    let mut disabled = Vec::new();
    let mut ignored = 0;
    for verdict in feedback {
        let (Some(address), Some(reason)) = (verdict.address(), verdict.reason()) else {
            ignored += 1;
            continue;
        };
        let contacts: Vec<EmailContact> = sqlx::query_as(
            "SELECT subscriber_id, contact_id FROM contacts
              WHERE kind = 'email' AND enabled AND NOT removed AND lower(email) = lower($1)
              ORDER BY subscriber_id, contact_id",
        )
        .bind(address)
        .fetch_all(&state.pool)
        .await?;
        let mut any = false;
        for contact in contacts {
            let changed = state
                .commands
                .disable_contact(
                    contact.subscriber_id,
                    contact.contact_id,
                    &reason,
                    &metadata,
                )
                .await?;
            if changed {
                tracing::info!(subscriber_id = %contact.subscriber_id, contact_id = %contact.contact_id,
                    %reason, "an email contact was disabled by a bounce or complaint");
                any = true;
                disabled.push(DisabledContact {
                    subscriber_id: contact.subscriber_id,
                    contact_id: contact.contact_id,
                    address: address.to_owned(),
                    reason: reason.clone(),
                });
            }
        }
        if !any {
            ignored += 1;
        }
    }
    Ok(axum::Json(Disabled { disabled, ignored }))
}
