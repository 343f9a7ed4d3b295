//! `POST /api/v1/webhooks/{provider}/{project}`: authenticate, normalize, record; answer only after the commit.
//!
//! Checks run from cheapest-to-leak to most: unknown provider or project (404), then the signature or token
//! (401) before the body is even parsed, then the event name and body (400 naming the field). None of the
//! refusals writes an event; every delivery to a known project, refused or not, is listed in its delivery log
//! (`GET /api/v1/projects/{id}/deliveries`).

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::Router;
use chrono::{DateTime, Utc};
use commands::deliveries::{self, Delivery, DeliveryOutcome};
use commands::providers::{Normalized, Provider, WebhookRequest};
use commands::{CommandError, Metadata};
use domain::ProjectError;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::{ApiError, AppState};

pub fn router() -> Router<AppState> {
    Router::new().route("/api/v1/webhooks/{provider}/{project}", post(receive))
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

async fn receive(
    State(state): State<AppState>,
    Path((provider, project)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let received_at = Utc::now();
    let provider: Provider = provider.parse().map_err(|_| {
        ApiError::NotFound("provider (one of github, gitlab, jenkins, circleci, generic)")
    })?;
    let project_id: Uuid = project.parse().map_err(|_| ApiError::NotFound("project"))?;
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
        if let Err(e) = deliveries::record(&state.pool, &delivery).await {
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
) -> Result<(DeliveryOutcome, Value), ApiError> {
    let project = match state.commands.active_project(project_id).await {
        Err(CommandError::Project(ProjectError::NotFound)) => {
            return Err(ApiError::NotFound("project"))
        }
        other => other?,
    };
    let body = body.map_err(|e| match e {
        BytesRejection::FailedToBufferBody(_) => ApiError::PayloadTooLarge(format!(
            "webhook bodies are limited to {} bytes",
            crate::MAX_BODY_BYTES
        )),
        other => ApiError::BadRequest(other.body_text()),
    })?;
    let headers: BTreeMap<String, String> = headers
        .iter()
        .filter_map(|(name, value)| {
            Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned()))
        })
        .collect();
    let token = query_token(query);
    let request = WebhookRequest {
        headers: &headers,
        body: &body,
        query_token: token.as_deref(),
    };
    seen.delivery_id = Some(provider.delivery_id(&request));
    let secret = state.commands.webhook_secret(&project).await?;
    provider
        .authenticate(&secret, &request)
        .map_err(|e| ApiError::Unauthorized(e.to_string()))?;
    let event = provider
        .event_name(&request)
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    seen.event = Some(event.clone());
    let delivery_id = seen.delivery_id.clone().unwrap_or_default();
    let normalized = provider
        .normalize(project_id, &event, &body, received_at)
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
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
                json!({ "status": outcome.as_str(), "event": event, "delivery_id": delivery_id }),
            ))
        }
        Normalized::Build(build) => {
            let recorded = state
                .commands
                .record_build(*build, delivery_id.clone(), &metadata)
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
                json!({
                    "status": outcome.as_str(),
                    "event": event,
                    "delivery_id": delivery_id,
                    "build_run_id": recorded.build_run_id,
                    "recorded_events": recorded.events,
                }),
            ))
        }
        Normalized::Ignored { event, reason } => Ok((
            DeliveryOutcome::Ignored,
            json!({ "status": "ignored", "event": event, "reason": reason, "delivery_id": delivery_id }),
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
