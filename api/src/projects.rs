//! `/api/v1/projects`: create, list, get, rename, archive (DELETE), rotate the webhook secret, list builds.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use commands::deliveries::DeliveryView;
use domain::ProjectName;
use projections::queries::{self, BuildRunView, ProjectView};
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
        .routes(routes!(show, update, archive))
        .routes(routes!(rotate_secret))
        .routes(routes!(builds))
        .routes(routes!(deliveries))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ProjectInput {
    /// The project's name.
    name: String,
}

/// A project as the read models show it, with its webhook URL and build counts.
#[derive(Serialize, ToSchema)]
struct ProjectBody {
    project_id: Uuid,
    name: String,
    archived: bool,
    /// The GitHub webhook URL (every provider's is in the creation answer).
    webhook_url: String,
    created_at: Option<chrono::DateTime<chrono::Utc>>,
    builds_finished: i32,
    builds_succeeded: i32,
    builds_failed: i32,
    builds_cancelled: i32,
    /// Succeeded over succeeded-or-failed; absent before any verdict.
    success_rate: Option<f64>,
    last_build_at: Option<chrono::DateTime<chrono::Utc>>,
    last_outcome: Option<String>,
    last_transition: Option<String>,
}

/// A project with its ten most recently changed builds.
#[derive(Serialize, ToSchema)]
struct ProjectDetail {
    #[serde(flatten)]
    project: ProjectBody,
    latest_builds: Vec<BuildRunView>,
}

/// A new project. The webhook secret is shown here once and nowhere else.
#[derive(Serialize, ToSchema)]
struct CreatedProject {
    /// Always false.
    archived: bool,
    name: String,
    project_id: Uuid,
    webhook_secret: String,
    /// The GitHub webhook URL.
    webhook_url: String,
    /// The webhook URL for every provider Herald accepts, by provider.
    webhook_urls: BTreeMap<String, String>,
}

#[derive(Serialize, ToSchema)]
struct RenamedProject {
    name: String,
    project_id: Uuid,
}

/// The new webhook secret, shown once.
#[derive(Serialize, ToSchema)]
struct RotatedSecret {
    project_id: Uuid,
    webhook_secret: String,
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
fn webhook_urls(state: &AppState, project_id: Uuid) -> BTreeMap<String, String> {
    commands::providers::Provider::ALL
        .iter()
        .map(|p| {
            (
                p.as_str().to_owned(),
                webhook_url_for(state, p.as_str(), project_id),
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

/// Create a project. Admin only.
///
/// The answer holds the webhook secret, once; Herald keeps it to verify webhooks but never shows it again.
#[utoipa::path(post, path = "/api/v1/projects", tag = "projects",
    operation_id = "create_project",
    security(("bearer" = []), ("api_key" = [])),
    request_body = ProjectInput,
    responses(
        (status = 201, description = "created; the webhook secret is in the answer, once", body = CreatedProject,
            headers(("Location" = String, description = "the new project's URL"))),
        (status = 400, description = "malformed JSON"),
        (status = 415, description = "the body is not `application/json`"),
        (status = 422, description = "invalid name, or unknown fields")))]
async fn create(
    State(state): State<AppState>,
    Json(input): Json<ProjectInput>,
) -> Result<impl IntoResponse, ApiError> {
    let name = ProjectName::parse(&input.name)?;
    let (project_id, secret) = state
        .commands
        .create_project(name.clone(), &metadata("create_project"))
        .await?;
    let body = CreatedProject {
        archived: false,
        name: name.as_str().to_owned(),
        project_id,
        webhook_secret: secret,
        webhook_url: webhook_url(&state, project_id),
        webhook_urls: webhook_urls(&state, project_id),
    };
    Ok((
        StatusCode::CREATED,
        [(
            axum::http::header::LOCATION,
            format!("/api/v1/projects/{project_id}"),
        )],
        axum::Json(body),
    ))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ListParams {
    #[serde(flatten)]
    #[param(ignore)]
    paging: Paging,
    /// `true` to list archived projects too.
    #[serde(default)]
    #[param(value_type = Option<bool>, default = false)]
    include_archived: Option<String>,
    /// A snapshot's name: read the read models as they were then.
    as_of: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct AsOf {
    /// A snapshot's name: read the read models as they were then.
    as_of: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct BuildsParams {
    #[serde(flatten)]
    #[param(ignore)]
    paging: Paging,
    /// A snapshot's name: read the read models as they were then.
    as_of: Option<String>,
}

/// List projects, oldest first. Readers, operators and admins.
#[utoipa::path(get, path = "/api/v1/projects", tag = "projects",
    operation_id = "list_projects",
    security(("bearer" = []), ("api_key" = [])),
    params(Paging, ListParams),
    responses(
        (status = 200, description = "one page of projects", body = Paged<ProjectBody>),
        (status = 404, description = "no such snapshot (`as_of`)"),
        (status = 422, description = "invalid `limit`, `offset`, `include_archived` or snapshot name")))]
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
    Ok(axum::Json(Paged::new(items, page)))
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

/// A project, with its ten most recently changed builds. Readers, operators and admins.
#[utoipa::path(get, path = "/api/v1/projects/{id}", tag = "projects",
    operation_id = "show_project",
    security(("bearer" = []), ("api_key" = [])),
    params(("id" = Uuid, Path, description = "the project's id"), AsOf),
    responses(
        (status = 200, description = "the project", body = ProjectDetail),
        (status = 404, description = "no such project, or no such snapshot (`as_of`)"),
        (status = 422, description = "invalid snapshot name")))]
async fn show(
    State(state): State<AppState>,
    PathId(id): PathId,
    Query(params): Query<AsOf>,
) -> Result<impl IntoResponse, ApiError> {
    let as_of = params.as_of.as_deref();
    let project = find(&state, id, as_of).await?;
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
    Ok(axum::Json(ProjectDetail {
        project,
        latest_builds: latest,
    }))
}

/// Rename a project. Admin only.
#[utoipa::path(patch, path = "/api/v1/projects/{id}", tag = "projects",
    operation_id = "rename_project",
    security(("bearer" = []), ("api_key" = [])),
    params(("id" = Uuid, Path, description = "the project's id")),
    request_body = ProjectInput,
    responses(
        (status = 200, description = "renamed (or already so named)", body = RenamedProject),
        (status = 400, description = "malformed JSON"),
        (status = 404, description = "no such project"),
        (status = 409, description = "concurrent changes to the project; retry"),
        (status = 410, description = "the project is archived"),
        (status = 415, description = "the body is not `application/json`"),
        (status = 422, description = "invalid name, or unknown fields")))]
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
    Ok(axum::Json(RenamedProject {
        name: name.as_str().to_owned(),
        project_id: id,
    }))
}

/// Archive a project: its webhooks are refused from now on; its history stays. Admin only.
///
/// Archiving an archived project changes nothing and answers 204 too.
#[utoipa::path(delete, path = "/api/v1/projects/{id}", tag = "projects",
    operation_id = "archive_project",
    security(("bearer" = []), ("api_key" = [])),
    params(("id" = Uuid, Path, description = "the project's id")),
    responses(
        (status = 204, description = "archived"),
        (status = 404, description = "no such project"),
        (status = 409, description = "concurrent changes to the project; retry")))]
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

/// Replace a project's webhook secret. Admin only.
///
/// The answer holds the new secret, once. The previous one keeps working for the configured overlap.
#[utoipa::path(post, path = "/api/v1/projects/{id}/secret", tag = "projects",
    operation_id = "rotate_project_secret",
    security(("bearer" = []), ("api_key" = [])),
    params(("id" = Uuid, Path, description = "the project's id")),
    responses(
        (status = 200, description = "the new secret, shown once", body = RotatedSecret),
        (status = 404, description = "no such project"),
        (status = 409, description = "concurrent changes to the project; retry"),
        (status = 410, description = "the project is archived")))]
async fn rotate_secret(
    State(state): State<AppState>,
    PathId(id): PathId,
) -> Result<impl IntoResponse, ApiError> {
    let secret = state
        .commands
        .rotate_secret(id, &metadata("rotate_secret"))
        .await?;
    Ok(axum::Json(RotatedSecret {
        project_id: id,
        webhook_secret: secret,
    }))
}

/// A project's builds, most recently changed first. Readers, operators and admins.
#[utoipa::path(get, path = "/api/v1/projects/{id}/builds", tag = "projects",
    operation_id = "list_project_builds",
    security(("bearer" = []), ("api_key" = [])),
    params(("id" = Uuid, Path, description = "the project's id"), Paging, BuildsParams),
    responses(
        (status = 200, description = "one page of builds", body = Paged<BuildRunView>),
        (status = 404, description = "no such project, or no such snapshot (`as_of`)"),
        (status = 422, description = "invalid `limit`, `offset` or snapshot name")))]
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
    Ok(axum::Json(Paged::new(items, page)))
}

/// A project's webhook delivery log, newest first. Operators and admins.
///
/// Every delivery to the project, refused ones included, with what became of it and why.
#[utoipa::path(get, path = "/api/v1/projects/{id}/deliveries", tag = "projects",
    operation_id = "list_project_deliveries",
    security(("bearer" = []), ("api_key" = [])),
    params(("id" = Uuid, Path, description = "the project's id"), Paging),
    responses(
        (status = 200, description = "one page of deliveries", body = Paged<DeliveryView>),
        (status = 404, description = "no such project"),
        (status = 422, description = "invalid `limit` or `offset`")))]
async fn deliveries(
    State(state): State<AppState>,
    PathId(id): PathId,
    Query(paging): Query<Paging>,
) -> Result<impl IntoResponse, ApiError> {
    let page = paging.page()?;
    find(&state, id, None).await?;
    let items = commands::deliveries::recent(&state.pool, id, page.limit, page.offset).await?;
    Ok(axum::Json(Paged::new(items, page)))
}
