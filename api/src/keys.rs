//! `/api/v1/keys`: admins create, list and revoke API keys. The key is in the creation answer and nowhere else.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use commands::CommandError;
use domain::ProjectError;

use crate::auth::keys::{KeyError, KeyInfo, KeySpec, NewKey};
use crate::auth::Role;
use crate::extract::{Json, PathId};
use crate::{ApiError, AppState};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(revoke))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    /// What the key is for, to tell keys apart ("grafana", "jenkins-prod").
    name: String,
    role: Role,
    /// Producer keys only: the projects whose webhooks the key may post.
    #[serde(default)]
    projects: Vec<Uuid>,
    /// The subscriber the key stands for: its holder manages that subscriber's own subscriptions and
    /// preferences under `/api/v1/me` (and in the dashboard).
    subscriber_id: Option<Uuid>,
    expires_at: Option<DateTime<Utc>>,
}

impl From<KeyError> for ApiError {
    fn from(e: KeyError) -> Self {
        match e {
            KeyError::Invalid(why) => ApiError::Invalid(why),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

/// Every API key, revoked ones included, never the secrets. Admin.
#[utoipa::path(get, path = "/api/v1/keys", tag = "keys", operation_id = "list_keys",
    security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, description = "every key", body = Vec<KeyInfo>)))]
async fn list(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    Ok(axum::Json(state.auth.keys.list().await?))
}

/// Create an API key; the answer holds the key once, Herald keeps only its hash. Admin.
#[utoipa::path(post, path = "/api/v1/keys", tag = "keys", operation_id = "create_key", request_body = CreateKey,
    security(("bearer" = []), ("api_key" = [])),
    responses((status = 201, description = "the key, shown this once", body = NewKey),
        (status = 422, description = "invalid name, role, projects or subscriber")))]
async fn create(
    State(state): State<AppState>,
    Json(input): Json<CreateKey>,
) -> Result<impl IntoResponse, ApiError> {
    for project in &input.projects {
        match state.commands.active_project(*project).await {
            Ok(_) => {}
            Err(CommandError::Project(ProjectError::NotFound | ProjectError::Archived)) => {
                return Err(ApiError::Invalid(format!(
                    "project {project} does not exist or is archived"
                )))
            }
            Err(e) => return Err(e.into()),
        }
    }
    let key = state
        .auth
        .keys
        .create(&KeySpec {
            name: &input.name,
            role: input.role,
            projects: &input.projects,
            subscriber_id: input.subscriber_id,
            expires_at: input.expires_at,
        })
        .await?;
    Ok((StatusCode::CREATED, axum::Json(key)))
}

/// Revoke an API key: at once on this API process, within 30 s on the others. Admin.
#[utoipa::path(delete, path = "/api/v1/keys/{id}", tag = "keys", operation_id = "revoke_key",
    params(("id" = Uuid, Path, description = "the key's id")),
    security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, description = "the revoked key", body = KeyInfo), (status = 404, description = "no such key")))]
async fn revoke(
    State(state): State<AppState>,
    PathId(id): PathId,
) -> Result<impl IntoResponse, ApiError> {
    let info = state
        .auth
        .keys
        .revoke(id)
        .await?
        .ok_or(ApiError::NotFound("key"))?;
    Ok(axum::Json(info))
}
