//! `POST /api/v1/webhooks/github/{project}`: verify, normalize, record; answer only after the commit.
//!
//! Checks run from cheapest-to-leak to most: unknown project (404), then the signature (401) before the body is
//! even parsed, then the event header and body (400). None of the refusals writes anything.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::Router;
use chrono::Utc;
use commands::github::{self, GithubWebhook};
use commands::signature::{body_delivery_id, verify_github};
use commands::{CommandError, Metadata};
use domain::ProjectError;
use serde_json::json;

use crate::extract::PathId;
use crate::{ApiError, AppState};

pub fn router() -> Router<AppState> {
    Router::new().route("/api/v1/webhooks/github/{project}", post(github_webhook))
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

async fn github_webhook(
    State(state): State<AppState>,
    PathId(project_id): PathId,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let received_at = Utc::now();
    let body = body.map_err(|e| match e {
        BytesRejection::FailedToBufferBody(_) => ApiError::PayloadTooLarge(format!(
            "webhook bodies are limited to {} bytes",
            crate::MAX_BODY_BYTES
        )),
        other => ApiError::BadRequest(other.body_text()),
    })?;
    let project = match state.commands.active_project(project_id).await {
        Err(CommandError::Project(ProjectError::NotFound)) => {
            return Err(ApiError::NotFound("project"))
        }
        other => other?,
    };
    let secret = state.commands.webhook_secret(&project).await?;
    verify_github(&secret, &body, header(&headers, "x-hub-signature-256"))
        .map_err(|e| ApiError::Unauthorized(e.to_string()))?;
    let event = header(&headers, "x-github-event")
        .ok_or_else(|| ApiError::BadRequest("the X-GitHub-Event header is missing".into()))?;
    let delivery_id = header(&headers, "x-github-delivery")
        .map(str::to_owned)
        .unwrap_or_else(|| body_delivery_id(&body));
    let webhook = github::normalize(project_id, event, &body, received_at)
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let mut metadata = Metadata::from([
        ("source".to_owned(), "webhook".to_owned()),
        ("provider".to_owned(), "github".to_owned()),
        ("github_event".to_owned(), event.to_owned()),
        ("delivery_id".to_owned(), delivery_id.clone()),
        ("received_at".to_owned(), received_at.to_rfc3339()),
    ]);
    if let Some(agent) = header(&headers, "user-agent") {
        metadata.insert("user_agent".to_owned(), agent.to_owned());
    }
    let answer = match webhook {
        GithubWebhook::Ping { hook_id } => {
            let recorded = state
                .commands
                .record_ping(project_id, delivery_id.clone(), hook_id, &metadata)
                .await?;
            json!({ "status": if recorded { "recorded" } else { "no_change" }, "event": "ping", "delivery_id": delivery_id })
        }
        GithubWebhook::Build(build) => {
            let recorded = state
                .commands
                .record_build(*build, delivery_id.clone(), &metadata)
                .await?;
            json!({
                "status": if recorded.events.is_empty() { "no_change" } else { "recorded" },
                "event": event,
                "delivery_id": delivery_id,
                "build_run_id": recorded.build_run_id,
                "recorded_events": recorded.events,
            })
        }
        GithubWebhook::Ignored { event } => {
            json!({ "status": "ignored", "event": event, "delivery_id": delivery_id })
        }
    };
    Ok((StatusCode::ACCEPTED, axum::Json(answer)))
}
