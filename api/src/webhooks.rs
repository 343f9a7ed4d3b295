//! `POST /api/v1/webhooks/{provider}/{project}`: authenticate, normalize, record; answer only after the commit.
//!
//! Checks run from cheapest-to-leak to most: unknown provider or project (404), then the signature or token
//! (401), then the event name and body (400 naming the field). The body is parsed before the signature is
//! checked, so that a build webhook's run can be read with its project in one statement; what the parse found is
//! neither acted on nor answered until the signature has passed. None of the
//! refusals writes an event; every delivery to a known project, refused or not, is listed in its delivery log
//! (`GET /api/v1/projects/{id}/deliveries`).

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use commands::deliveries::{Delivery, DeliveryOutcome};
use commands::providers::{Normalized, Provider, WebhookRequest};
use commands::{CommandError, Metadata};
use domain::ProjectError;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::auth::Caller;
use crate::{ApiError, AppState};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(receive))
}

/// What became of a delivery (which fields are present depends on what the delivery was).
// Fields in alphabetical order: the order the answer had when it was built with `json!`.
#[derive(Serialize, ToSchema)]
struct WebhookAnswer {
    /// Build events only: the build run the delivery was recorded on.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    build_run_id: Option<String>,
    /// The provider's delivery id, or a hash of the body when the provider sends none.
    delivery_id: String,
    /// The provider's event name.
    event: String,
    /// Ignored events only: why.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    reason: Option<String>,
    /// Build events only: the events recorded (empty when nothing changed).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    recorded_events: Option<Vec<String>>,
    /// `accepted`, `duplicate` (a redelivery: nothing recorded), `stale` (older than what is recorded: nothing
    /// recorded) or `ignored` (an event Herald does not track).
    status: &'static str,
}

/// What the handler learned before it answered, for the delivery log.
#[derive(Default)]
struct Seen {
    event: Option<String>,
    delivery_id: Option<String>,
    build_run_id: Option<String>,
    events: Vec<String>,
}

fn query_token(query: Option<&str>) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        (key == "token").then(|| value.to_owned())
    })
}

/// Receive a CI webhook. Signature-authenticated; producer keys only for their own projects.
///
/// The delivery is authenticated, normalized and recorded; the answer comes after the commit. It is
/// authenticated by the project's webhook secret (the current one, or the previous one inside the rotation
/// overlap), as each provider signs: GitHub `X-Hub-Signature-256`, GitLab `X-Gitlab-Token`, Jenkins
/// `X-Herald-Token` (or `?token=`), CircleCI `circleci-signature`, generic `X-Herald-Signature-256` (over
/// `<X-Herald-Timestamp>.<body>` when that header is sent, refused when it is more than 5 minutes off) or
/// `X-Herald-Token`. An API key or token is optional; when one is presented it must be an admin's, or a
/// producer's whose projects include this one. Every delivery to a known project, refused or not, is listed in
/// the project's delivery log.
#[utoipa::path(post, path = "/api/v1/webhooks/{provider}/{project}", tag = "webhooks",
    operation_id = "receive_webhook",
    security((), ("bearer" = []), ("api_key" = [])),
    params(
        ("provider" = String, Path,
            description = "`github`, `gitlab`, `jenkins`, `circleci` or `generic`"),
        ("project" = Uuid, Path, description = "the project's id"),
        ("token" = Option<String>, Query,
            description = "Jenkins only: the webhook secret, when it cannot be sent as `X-Herald-Token`")),
    request_body(content = Object, content_type = "application/json",
        description = "The provider's webhook payload, as the provider sends it (read as raw bytes: the \
                       signature is checked over them, and nothing in the body is acted on before it passes). At most 5 MiB."),
    responses(
        (status = 202, body = WebhookAnswer,
            description = "recorded (or recognized as a duplicate, stale or ignored delivery)"),
        (status = 400, description = "a missing event header, or a body the provider's format does not parse"),
        (status = 401, description = "missing or wrong signature or token, or a signed timestamp more than 5 minutes off"),
        (status = 403, description = "the API key presented may not post webhooks for this project"),
        (status = 404, description = "no such provider or project"),
        (status = 409, description = "concurrent changes to the build run; retry"),
        (status = 410, description = "the project is archived"),
        (status = 413, description = "the body is over 5 MiB"),
        (status = 422, description = "an event that contradicts the build run (a completed run without an \
                                      outcome, another run's event)"),
        (status = 503, description = "the build history needed to judge the build is unavailable")))]
async fn receive(
    State(state): State<AppState>,
    caller: Caller,
    Path((provider, project)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let received_at = Utc::now();
    let project_id: Uuid = project.parse().map_err(|_| ApiError::NotFound("project"))?;
    if let Some(principal) = &caller.0 {
        if !principal.may_post_for(project_id) {
            return Err(ApiError::Forbidden(format!(
                "this key may not post webhooks for project {project_id}"
            )));
        }
    }
    let provider: Provider = provider.parse().map_err(|_| {
        ApiError::NotFound("provider (one of github, gitlab, jenkins, circleci, generic)")
    })?;
    let mut seen = Seen::default();
    let result = accept(
        &state,
        provider,
        project_id,
        query.as_deref(),
        &headers,
        body,
        received_at,
        &mut seen,
    )
    .await;
    if !matches!(result, Err(ApiError::NotFound(_))) {
        let (outcome, reason, status) = match &result {
            Ok((outcome, _)) => (*outcome, None, StatusCode::ACCEPTED),
            Err(e) => (DeliveryOutcome::Rejected, Some(e.to_string()), e.status()),
        };
        let delivery = Delivery {
            project_id,
            provider: provider.as_str(),
            event: seen.event.as_deref(),
            delivery_id: seen.delivery_id.as_deref(),
            received_at,
            outcome,
            reason: reason.as_deref(),
            http_status: status.as_u16(),
            build_run_id: seen.build_run_id.as_deref(),
            events: &seen.events,
        };
        if let Err(e) = state.commands.record_delivery(&delivery).await {
            tracing::warn!(error = %e, "could not record the delivery in the delivery log");
        }
    }
    let (_, answer) = result?;
    Ok((StatusCode::ACCEPTED, axum::Json(answer)))
}

#[allow(clippy::too_many_arguments)]
async fn accept(
    state: &AppState,
    provider: Provider,
    project_id: Uuid,
    query: Option<&str>,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    received_at: DateTime<Utc>,
    seen: &mut Seen,
) -> Result<(DeliveryOutcome, WebhookAnswer), ApiError> {
    let headers: BTreeMap<String, String> = headers
        .iter()
        .filter_map(|(name, value)| {
            Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned()))
        })
        .collect();
    let token = query_token(query);
    // Parsed before the signature is checked, so that a build webhook's run is read with its project and secrets
    // in one statement (see `commands::webhook_target`). The answers keep their order: nothing parsed here is
    // acted on, or shown, before the signature has passed.
    let body = body.map(|body| {
        let request = WebhookRequest {
            headers: &headers,
            body: &body,
            query_token: token.as_deref(),
            received_at,
        };
        let parsed = provider.event_name(&request).map(|event| {
            let normalized = provider.normalize(project_id, &event, &body, received_at);
            (event, normalized)
        });
        (body, parsed)
    });
    let (target, prepared) = match &body {
        Ok((_, Ok((_, Ok(Normalized::Build(build)))))) => {
            state
                .commands
                .build_webhook_target(project_id, build)
                .await?
        }
        _ => (state.commands.webhook_target(project_id).await, None),
    };
    let target = match target {
        Err(CommandError::Project(ProjectError::NotFound)) => {
            return Err(ApiError::NotFound("project"))
        }
        other => other?,
    };
    let (body, parsed) = body.map_err(|e| match e {
        BytesRejection::FailedToBufferBody(_) => ApiError::PayloadTooLarge(format!(
            "webhook bodies are limited to {} bytes",
            crate::MAX_BODY_BYTES
        )),
        other => ApiError::BadRequest(other.body_text()),
    })?;
    let request = WebhookRequest {
        headers: &headers,
        body: &body,
        query_token: token.as_deref(),
        received_at,
    };
    seen.delivery_id = Some(provider.delivery_id(&request));
    let mut verdict = Ok(());
    for secret in &target.secrets {
        verdict = provider.authenticate(secret, &request);
        if verdict.is_ok() {
            break;
        }
    }
    verdict.map_err(|e| ApiError::Unauthorized(e.to_string()))?;
    let (event, normalized) = parsed.map_err(|e| ApiError::BadRequest(e.to_string()))?;
    seen.event = Some(event.clone());
    let delivery_id = seen.delivery_id.clone().unwrap_or_default();
    let normalized = normalized.map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let mut metadata = Metadata::from([
        ("source".to_owned(), "webhook".to_owned()),
        ("provider".to_owned(), provider.as_str().to_owned()),
        ("event".to_owned(), event.clone()),
        ("delivery_id".to_owned(), delivery_id.clone()),
        ("received_at".to_owned(), received_at.to_rfc3339()),
    ]);
    if let Some(agent) = headers.get("user-agent") {
        metadata.insert("user_agent".to_owned(), agent.clone());
    }
    match normalized {
        Normalized::Ping { hook_id } => {
            let recorded = state
                .commands
                .record_ping(project_id, delivery_id.clone(), hook_id, &metadata)
                .await?;
            let outcome = if recorded {
                DeliveryOutcome::Accepted
            } else {
                DeliveryOutcome::Duplicate
            };
            seen.events = if recorded {
                vec!["WebhookPinged".to_owned()]
            } else {
                vec![]
            };
            Ok((
                outcome,
                WebhookAnswer {
                    status: outcome.as_str(),
                    event,
                    delivery_id,
                    build_run_id: None,
                    recorded_events: None,
                    reason: None,
                },
            ))
        }
        Normalized::Build(build) => {
            let recorded = state
                .commands
                .record_build(*build, delivery_id.clone(), &metadata, prepared)
                .await?;
            let outcome = match (recorded.events.is_empty(), recorded.duplicate) {
                (false, _) => DeliveryOutcome::Accepted,
                (true, true) => DeliveryOutcome::Duplicate,
                (true, false) => DeliveryOutcome::Stale,
            };
            seen.build_run_id = Some(recorded.build_run_id.clone());
            seen.events = recorded.events.clone();
            Ok((
                outcome,
                WebhookAnswer {
                    status: outcome.as_str(),
                    event,
                    delivery_id,
                    build_run_id: Some(recorded.build_run_id),
                    recorded_events: Some(recorded.events),
                    reason: None,
                },
            ))
        }
        Normalized::Ignored { event, reason } => Ok((
            DeliveryOutcome::Ignored,
            WebhookAnswer {
                status: DeliveryOutcome::Ignored.as_str(),
                event,
                delivery_id,
                build_run_id: None,
                recorded_events: None,
                reason: Some(reason),
            },
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::query_token;

    #[test]
    fn the_token_is_read_from_the_query() {
        assert_eq!(
            query_token(Some("a=1&token=s3cret")).as_deref(),
            Some("s3cret")
        );
        assert_eq!(query_token(Some("tokens=x")), None);
        assert_eq!(query_token(None), None);
    }
}
