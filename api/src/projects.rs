//! `/api/v1/projects`: create, list, get, rename, archive (DELETE), rotate the webhook secret, list builds.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use commands::Metadata;
use domain::ProjectName;
use projections::queries::{self, ProjectView};
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use crate::extract::{Json, Paging, PathId, Query};
use crate::{ApiError, AppState};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/projects", post(create).get(list))
        .route(
            "/api/v1/projects/{id}",
            get(show).patch(update).delete(archive),
        )
        .route("/api/v1/projects/{id}/secret", post(rotate_secret))
        .route("/api/v1/projects/{id}/builds", get(builds))
        .route("/api/v1/projects/{id}/deliveries", get(deliveries))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProjectInput {
    name: String,
}

#[derive(Serialize)]
struct ProjectBody {
    project_id: Uuid,
    name: String,
    archived: bool,
    webhook_url: String,
    created_at: Option<chrono::DateTime<chrono::Utc>>,
    builds_finished: i32,
    builds_succeeded: i32,
    builds_failed: i32,
    builds_cancelled: i32,
    success_rate: Option<f64>,
    last_build_at: Option<chrono::DateTime<chrono::Utc>>,
    last_outcome: Option<String>,
    last_transition: Option<String>,
}

fn webhook_url(state: &AppState, project_id: Uuid) -> String {
    webhook_url_for(state, "github", project_id)
}

fn webhook_url_for(state: &AppState, provider: &str, project_id: Uuid) -> String {
    format!(
        "{}/api/v1/webhooks/{provider}/{project_id}",
        state.public_url.trim_end_matches('/')
    )
}

/// The webhook URL for every provider Herald accepts.
fn webhook_urls(state: &AppState, project_id: Uuid) -> serde_json::Map<String, serde_json::Value> {
    commands::providers::Provider::ALL
        .iter()
        .map(|p| {
            (
                p.as_str().to_owned(),
                json!(webhook_url_for(state, p.as_str(), project_id)),
            )
        })
        .collect()
}

impl ProjectBody {
    fn from_view(state: &AppState, view: ProjectView) -> Self {
        Self {
            success_rate: view.success_rate(),
            webhook_url: webhook_url(state, view.project_id),
            project_id: view.project_id,
            name: view.name,
            archived: view.archived,
            created_at: Some(view.created_at),
            builds_finished: view.builds_finished,
            builds_succeeded: view.builds_succeeded,
            builds_failed: view.builds_failed,
            builds_cancelled: view.builds_cancelled,
            last_build_at: view.last_build_at,
            last_outcome: view.last_outcome,
            last_transition: view.last_transition,
        }
    }

    /// A project the read model has not caught up with yet: what its own events say, with no builds.
    fn fresh(state: &AppState, project: domain::Project) -> Option<Self> {
        let project_id = project.project_id?;
        Some(Self {
            project_id,
            name: project.name.map(String::from).unwrap_or_default(),
            archived: project.archived,
            webhook_url: webhook_url(state, project_id),
            created_at: project.created_at,
            builds_finished: 0,
            builds_succeeded: 0,
            builds_failed: 0,
            builds_cancelled: 0,
            success_rate: None,
            last_build_at: None,
            last_outcome: None,
            last_transition: None,
        })
    }
}

fn metadata(action: &str) -> Metadata {
    Metadata::from([
        ("source".to_owned(), "api".to_owned()),
        ("action".to_owned(), action.to_owned()),
    ])
}

async fn create(
    State(state): State<AppState>,
    Json(input): Json<ProjectInput>,
) -> Result<impl IntoResponse, ApiError> {
    let name = ProjectName::parse(&input.name)?;
    let (project_id, secret) = state
        .commands
        .create_project(name.clone(), &metadata("create_project"))
        .await?;
    let body = json!({
        "project_id": project_id,
        "name": name.as_str(),
        "webhook_url": webhook_url(&state, project_id),
        "webhook_urls": webhook_urls(&state, project_id),
        "webhook_secret": secret,
        "archived": false,
    });
    Ok((
        StatusCode::CREATED,
        [(
            axum::http::header::LOCATION,
            format!("/api/v1/projects/{project_id}"),
        )],
        axum::Json(body),
    ))
}

#[derive(Deserialize)]
struct ListParams {
    #[serde(flatten)]
    paging: Paging,
    #[serde(default)]
    include_archived: Option<String>,
    /// A snapshot's name: read the read models as they were then.
    as_of: Option<String>,
}

#[derive(Deserialize)]
struct AsOf {
    as_of: Option<String>,
}

#[derive(Deserialize)]
struct BuildsParams {
    #[serde(flatten)]
    paging: Paging,
    as_of: Option<String>,
}

async fn list(
    State(state): State<AppState>,
    Query(params): Query<ListParams>,
) -> Result<impl IntoResponse, ApiError> {
    let page = params.paging.page()?;
    let pool = state.read_pool(params.as_of.as_deref()).await?;
    let include_archived = match params.include_archived.as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(ApiError::Invalid(format!(
                "include_archived: `{other}` is not true or false"
            )))
        }
    };
    let views = queries::projects(&pool, include_archived, page).await?;
    let items: Vec<ProjectBody> = views
        .into_iter()
        .map(|v| ProjectBody::from_view(&state, v))
        .collect();
    Ok(axum::Json(
        json!({ "items": items, "limit": page.limit, "offset": page.offset }),
    ))
}

async fn find(
    state: &AppState,
    project_id: Uuid,
    as_of: Option<&str>,
) -> Result<ProjectBody, ApiError> {
    let pool = state.read_pool(as_of).await?;
    if let Some(view) = queries::project(&pool, project_id).await? {
        return Ok(ProjectBody::from_view(state, view));
    }
    if as_of.is_some() {
        return Err(ApiError::NotFound("project"));
    }
    let project = state.commands.project(project_id).await?;
    ProjectBody::fresh(state, project).ok_or(ApiError::NotFound("project"))
}

async fn show(
    State(state): State<AppState>,
    PathId(id): PathId,
    Query(params): Query<AsOf>,
) -> Result<impl IntoResponse, ApiError> {
    let as_of = params.as_of.as_deref();
    let mut body = serde_json::to_value(find(&state, id, as_of).await?)
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let pool = state.read_pool(as_of).await?;
    let latest = queries::builds(
        &pool,
        id,
        queries::Page {
            limit: 10,
            offset: 0,
        },
    )
    .await?;
    body["latest_builds"] =
        serde_json::to_value(latest).map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(axum::Json(body))
}

async fn update(
    State(state): State<AppState>,
    PathId(id): PathId,
    Json(input): Json<ProjectInput>,
) -> Result<impl IntoResponse, ApiError> {
    let name = ProjectName::parse(&input.name)?;
    state
        .commands
        .rename_project(id, name.clone(), &metadata("rename_project"))
        .await?;
    Ok(axum::Json(
        json!({ "project_id": id, "name": name.as_str() }),
    ))
}

async fn archive(
    State(state): State<AppState>,
    PathId(id): PathId,
) -> Result<impl IntoResponse, ApiError> {
    state
        .commands
        .archive_project(id, &metadata("archive_project"))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn rotate_secret(
    State(state): State<AppState>,
    PathId(id): PathId,
) -> Result<impl IntoResponse, ApiError> {
    let secret = state
        .commands
        .rotate_secret(id, &metadata("rotate_secret"))
        .await?;
    Ok(axum::Json(
        json!({ "project_id": id, "webhook_secret": secret }),
    ))
}

async fn builds(
    State(state): State<AppState>,
    PathId(id): PathId,
    Query(params): Query<BuildsParams>,
) -> Result<impl IntoResponse, ApiError> {
    let page = params.paging.page()?;
    let as_of = params.as_of.as_deref();
    find(&state, id, as_of).await?;
    let pool = state.read_pool(as_of).await?;
    let items = queries::builds(&pool, id, page).await?;
    Ok(axum::Json(
        json!({ "items": items, "limit": page.limit, "offset": page.offset }),
    ))
}

async fn deliveries(
    State(state): State<AppState>,
    PathId(id): PathId,
    Query(paging): Query<Paging>,
) -> Result<impl IntoResponse, ApiError> {
    let page = paging.page()?;
    find(&state, id, None).await?;
    let items = commands::deliveries::recent(&state.pool, id, page.limit, page.offset).await?;
    Ok(axum::Json(
        json!({ "items": items, "limit": page.limit, "offset": page.offset }),
    ))
}
