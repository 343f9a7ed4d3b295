//! `/api/v1/templates`: the notification templates (12 ids: `{kind}.{channel}.{language}`), their versions,
//! saving and resetting them, and previewing a draft with sample data or a real build run.
//!
//! A template that does not pass validation is answered 422 with the problem's `part`, `line` and `variable`
//! beside the usual problem fields, so an editor can point at the spot. Nothing invalid is ever recorded.

use std::collections::BTreeMap;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use commands::template::{BuildContext, Rendered, TemplateError, Variable, HELPERS};
use commands::templates::{TemplateSource, TemplateVersionView, Templates, TemplatesError};
use domain::{BuildRunEvent, RunInfo, TemplateId, TemplateKind, Verdict};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::extract::{Json, OptionalJson};
use crate::{metadata, ApiError, AppState};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(show, save, reset))
        .routes(routes!(versions))
        .routes(routes!(version))
        .routes(routes!(preview))
}

/// The templates service over the request's database. Built per request: it is two handles on the pool, and
/// the API renders only previews, which are compiled afresh anyway.
fn templates(state: &AppState) -> Templates {
    Templates::new(state.pool.clone())
}

// ---------------------------------------------------------------------------------------------------------------
// Errors

/// An [`ApiError`], or a template that failed validation (422 with where).
enum TemplateProblem {
    Api(ApiError),
    Invalid(TemplateError),
}

impl From<ApiError> for TemplateProblem {
    fn from(e: ApiError) -> Self {
        Self::Api(e)
    }
}

impl From<sqlx::Error> for TemplateProblem {
    fn from(e: sqlx::Error) -> Self {
        Self::Api(e.into())
    }
}

impl From<TemplatesError> for TemplateProblem {
    fn from(e: TemplatesError) -> Self {
        match e {
            TemplatesError::Invalid(e) if !e.is_transient() => Self::Invalid(e),
            TemplatesError::Invalid(e) => Self::Api(ApiError::Unavailable(e.to_string())),
            e @ TemplatesError::Conflict { .. } => Self::Api(ApiError::Conflict(e.to_string())),
            TemplatesError::NoSuchVersion { .. } => {
                Self::Api(ApiError::NotFound("template version"))
            }
            TemplatesError::Command(e) => Self::Api(e.into()),
            TemplatesError::Database(e) => Self::Api(e.into()),
        }
    }
}

impl IntoResponse for TemplateProblem {
    fn into_response(self) -> Response {
        let error = match self {
            Self::Api(e) => return e.into_response(),
            Self::Invalid(e) => e,
        };
        // The same problem shape `ApiError` writes, with the template's coordinates as extension members.
        let mut body = json!({
            "type": "urn:herald:problem:invalid",
            "title": "Unprocessable Content",
            "status": 422,
            "detail": error.to_string(),
            "error": error.kind,
            "part": error.part,
            "line": error.line,
            "variable": error.variable,
        });
        if let Some(trace_id) = commands::trace::current() {
            body["trace_id"] = trace_id.into();
        }
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            [(header::CONTENT_TYPE, "application/problem+json")],
            body.to_string(),
        )
            .into_response()
    }
}

/// A 422 problem about a template, as `PUT` and `preview` answer it.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)] // described, never built: built by `TemplateProblem`.
struct TemplateProblemBody {
    r#type: String,
    title: String,
    status: u16,
    detail: String,
    /// `syntax`, `unknown_variable`, `unknown_helper`, `parts`, `not_allowed` or `render`.
    error: String,
    /// The part at fault (`text`, `subject`, `html`, `title`, `body`).
    part: Option<String>,
    /// The 1-based line in that part.
    line: Option<usize>,
    /// The unknown variable or helper.
    variable: Option<String>,
    trace_id: String,
}

// ---------------------------------------------------------------------------------------------------------------
// Paths

/// `{id}`: a template id; anything that is not one of the 12 names nothing (404).
struct TemplatePath(TemplateId);

impl<S: Send + Sync> FromRequestParts<S> for TemplatePath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let axum::extract::Path(raw) =
            axum::extract::Path::<String>::from_request_parts(parts, state)
                .await
                .map_err(|e| ApiError::BadRequest(e.body_text()))?;
        TemplateId::parse(&raw)
            .map(Self)
            .map_err(|_| ApiError::NotFound("template"))
    }
}

/// `{id}/versions/{version}`.
struct VersionPath(TemplateId, u32);

impl<S: Send + Sync> FromRequestParts<S> for VersionPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let axum::extract::Path((raw, version)) =
            axum::extract::Path::<(String, String)>::from_request_parts(parts, state)
                .await
                .map_err(|e| ApiError::BadRequest(e.body_text()))?;
        let id = TemplateId::parse(&raw).map_err(|_| ApiError::NotFound("template"))?;
        let version = version
            .parse()
            .map_err(|_| ApiError::NotFound("template version"))?;
        Ok(Self(id, version))
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Bodies

/// A template in the list.
#[derive(Serialize, ToSchema)]
struct TemplateSummary {
    template_id: String,
    /// `build_finished` or `build_started`.
    kind: &'static str,
    /// `telegram`, `email` or `push`.
    channel: &'static str,
    /// `en` or `de`.
    language: &'static str,
    /// The current version (0: the built-in, never replaced).
    version: u32,
    source: TemplateSource,
    /// When the current version was saved or reset; null for the untouched built-in.
    updated_at: Option<DateTime<Utc>>,
    updated_by: Option<String>,
    /// What notifications record: `builtin/{id}@{n}` or `{id}@{version}`.
    reference: String,
}

impl From<TemplateVersionView> for TemplateSummary {
    fn from(v: TemplateVersionView) -> Self {
        Self {
            template_id: v.template_id.to_string(),
            kind: v.template_id.kind.as_str(),
            channel: v.template_id.channel.as_str(),
            language: v.template_id.language.as_str(),
            version: v.version,
            source: v.source,
            updated_at: v.saved_at,
            updated_by: v.saved_by,
            reference: v.reference,
        }
    }
}

#[derive(Serialize, ToSchema)]
struct TemplateList {
    items: Vec<TemplateSummary>,
}

/// A template's current version, with what it may use.
#[derive(Serialize, ToSchema)]
struct TemplateDetail {
    #[serde(flatten)]
    current: TemplateVersionView,
    kind: &'static str,
    channel: &'static str,
    language: &'static str,
    /// The parts this channel's template has.
    part_names: &'static [&'static str],
    /// The variables this kind's templates may use.
    variables: Vec<Variable>,
    /// The handlebars helpers templates may call.
    helpers: &'static [&'static str],
}

#[derive(Serialize, ToSchema)]
struct VersionList {
    items: Vec<TemplateVersionView>,
}

/// A new version of a template.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct SaveInput {
    /// Every part of the channel's template, and no other: telegram `text`; email `subject`, `text`, `html`;
    /// push `title`, `body`.
    parts: BTreeMap<String, String>,
    /// The version the edit started from: when someone saved in between, the save is refused (409).
    #[serde(default)]
    expected_version: Option<u32>,
}

/// What a save or reset did.
#[derive(Serialize, ToSchema)]
struct SavedBody {
    template_id: String,
    /// The current version afterwards.
    version: u32,
    /// False when nothing changed (the same parts again, or a reset of a built-in).
    recorded: bool,
}

/// What to preview: a draft (or the current version) with sample data (or a real build run).
#[derive(Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct PreviewInput {
    /// Draft parts, validated like a save; absent: the current version.
    #[serde(default)]
    parts: Option<BTreeMap<String, String>>,
    /// Render with this build run's data instead of the sample (a failing GitHub Actions run).
    #[serde(default)]
    build_run_id: Option<String>,
}

/// The rendered message.
#[derive(Serialize, ToSchema)]
struct PreviewBody {
    /// What it was rendered from: `builtin/{id}@{n}`, `{id}@{version}`, or `{id}@draft`.
    template: String,
    /// Email subject or push title.
    #[serde(skip_serializing_if = "Option::is_none")]
    subject: Option<String>,
    /// Telegram text, email plain text or push body.
    text: String,
    /// Email HTML body.
    #[serde(skip_serializing_if = "Option::is_none")]
    html: Option<String>,
    /// `sample` or the build run's id.
    data: String,
}

// ---------------------------------------------------------------------------------------------------------------
// Handlers

/// Every template with its current version. Readers, operators, admins.
#[utoipa::path(get, path = "/api/v1/templates", tag = "templates",
    operation_id = "list_templates",
    security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, description = "all 12 templates", body = TemplateList)))]
async fn list(
    axum::extract::State(state): axum::extract::State<AppState>,
) -> Result<impl IntoResponse, TemplateProblem> {
    let items = templates(&state).list().await?;
    Ok(axum::Json(TemplateList {
        items: items.into_iter().map(TemplateSummary::from).collect(),
    }))
}

/// A template's current parts and version, and the variables and helpers it may use. Readers, operators,
/// admins.
#[utoipa::path(get, path = "/api/v1/templates/{id}", tag = "templates",
    operation_id = "show_template",
    security(("bearer" = []), ("api_key" = [])),
    params(("id" = String, Path, description = "`{kind}.{channel}.{language}`, e.g. `build_finished.telegram.en`")),
    responses(
        (status = 200, description = "the current version", body = TemplateDetail),
        (status = 404, description = "no such template")))]
async fn show(
    axum::extract::State(state): axum::extract::State<AppState>,
    TemplatePath(id): TemplatePath,
) -> Result<impl IntoResponse, TemplateProblem> {
    let current = templates(&state).current(id).await?;
    Ok(axum::Json(TemplateDetail {
        current,
        kind: id.kind.as_str(),
        channel: id.channel.as_str(),
        language: id.language.as_str(),
        part_names: id.channel.parts(),
        variables: commands::template::variables(id.kind).copied().collect(),
        helpers: HELPERS,
    }))
}

/// Every version of a template, oldest first, starting with the built-in (version 0). Readers, operators,
/// admins.
#[utoipa::path(get, path = "/api/v1/templates/{id}/versions", tag = "templates",
    operation_id = "list_template_versions",
    security(("bearer" = []), ("api_key" = [])),
    params(("id" = String, Path, description = "the template id")),
    responses(
        (status = 200, description = "the versions", body = VersionList),
        (status = 404, description = "no such template")))]
async fn versions(
    axum::extract::State(state): axum::extract::State<AppState>,
    TemplatePath(id): TemplatePath,
) -> Result<impl IntoResponse, TemplateProblem> {
    let items = templates(&state).versions(id).await?;
    Ok(axum::Json(VersionList { items }))
}

/// One version of a template. Readers, operators, admins.
#[utoipa::path(get, path = "/api/v1/templates/{id}/versions/{version}", tag = "templates",
    operation_id = "show_template_version",
    security(("bearer" = []), ("api_key" = [])),
    params(("id" = String, Path, description = "the template id"),
        ("version" = u32, Path, description = "the version (0: the built-in)")),
    responses(
        (status = 200, description = "the version", body = TemplateVersionView),
        (status = 404, description = "no such template or version")))]
async fn version(
    axum::extract::State(state): axum::extract::State<AppState>,
    VersionPath(id, version): VersionPath,
) -> Result<impl IntoResponse, TemplateProblem> {
    Ok(axum::Json(templates(&state).version(id, version).await?))
}

/// Save a new version of a template; it is used by the next notification. Admins.
///
/// The parts are validated first: handlebars syntax, only the kind's variables, only built-in helpers.
/// Saving the current parts again records nothing.
#[utoipa::path(put, path = "/api/v1/templates/{id}", tag = "templates",
    operation_id = "save_template",
    security(("bearer" = []), ("api_key" = [])),
    params(("id" = String, Path, description = "the template id")),
    request_body = SaveInput,
    responses(
        (status = 200, description = "saved (or unchanged)", body = SavedBody),
        (status = 400, description = "malformed JSON"),
        (status = 404, description = "no such template"),
        (status = 409, description = "`expected_version` is not the current version"),
        (status = 415, description = "the body is not `application/json`"),
        (status = 422, description = "the template is invalid: see `part`, `line`, `variable`",
            body = TemplateProblemBody, content_type = "application/problem+json")))]
async fn save(
    axum::extract::State(state): axum::extract::State<AppState>,
    TemplatePath(id): TemplatePath,
    Caller(caller): Caller,
    Json(input): Json<SaveInput>,
) -> Result<impl IntoResponse, TemplateProblem> {
    let by = caller.map_or_else(|| "api".to_owned(), |p| p.id);
    let saved = templates(&state)
        .save(
            id,
            input.parts,
            input.expected_version,
            &by,
            &metadata("save_template"),
        )
        .await?;
    Ok(axum::Json(SavedBody {
        template_id: id.to_string(),
        version: saved.version,
        recorded: saved.recorded,
    }))
}

/// Go back to the built-in text, as a new version. Admins.
#[utoipa::path(delete, path = "/api/v1/templates/{id}", tag = "templates",
    operation_id = "reset_template",
    security(("bearer" = []), ("api_key" = [])),
    params(("id" = String, Path, description = "the template id")),
    responses(
        (status = 200, description = "reset (or already built-in)", body = SavedBody),
        (status = 404, description = "no such template")))]
async fn reset(
    axum::extract::State(state): axum::extract::State<AppState>,
    TemplatePath(id): TemplatePath,
    Caller(caller): Caller,
) -> Result<impl IntoResponse, TemplateProblem> {
    let by = caller.map_or_else(|| "api".to_owned(), |p| p.id);
    let saved = templates(&state)
        .reset(id, &by, &metadata("reset_template"))
        .await?;
    Ok(axum::Json(SavedBody {
        template_id: id.to_string(),
        version: saved.version,
        recorded: saved.recorded,
    }))
}

/// Render a draft (or the current version) with sample data or a real build run. Records nothing. Readers,
/// operators, admins.
#[utoipa::path(post, path = "/api/v1/templates/{id}/preview", tag = "templates",
    operation_id = "preview_template",
    security(("bearer" = []), ("api_key" = [])),
    params(("id" = String, Path, description = "the template id")),
    request_body = PreviewInput,
    responses(
        (status = 200, description = "the rendered message, escaped for the channel", body = PreviewBody),
        (status = 400, description = "malformed JSON"),
        (status = 404, description = "no such template or build run"),
        (status = 422, description = "the draft is invalid (see `part`, `line`, `variable`), or the build run has no verdict yet",
            body = TemplateProblemBody, content_type = "application/problem+json")))]
async fn preview(
    axum::extract::State(state): axum::extract::State<AppState>,
    TemplatePath(id): TemplatePath,
    OptionalJson(input): OptionalJson<PreviewInput>,
) -> Result<impl IntoResponse, TemplateProblem> {
    let (context, data) = match &input.build_run_id {
        None => (
            BuildContext::sample(id.kind, id.language),
            "sample".to_owned(),
        ),
        Some(build_run_id) => {
            let (run, verdict) = build_run(&state, build_run_id).await?;
            let verdict = match id.kind {
                TemplateKind::BuildStarted => None,
                TemplateKind::BuildFinished => Some(verdict.ok_or_else(|| {
                    ApiError::Invalid(format!(
                        "build_run_id: run {build_run_id} has not finished yet; preview a build_started template"
                    ))
                })?),
            };
            (
                BuildContext::new(&run, verdict.as_ref(), id.language),
                build_run_id.clone(),
            )
        }
    };
    let Rendered {
        template,
        subject,
        text,
        html,
    } = templates(&state)
        .preview(id, input.parts.as_ref(), &context)
        .await?;
    Ok(axum::Json(PreviewBody {
        template,
        subject,
        text,
        html,
        data,
    }))
}

/// A build run's facts as its events tell them: the run (from its latest event that carries it) and its last
/// verdict, if it finished.
async fn build_run(
    state: &AppState,
    build_run_id: &str,
) -> Result<(RunInfo, Option<Verdict>), ApiError> {
    let events = projections::log::aggregate_events(&state.pool, "BuildRun", build_run_id).await?;
    let mut run = None;
    let mut verdict = None;
    for event in &events {
        let event: BuildRunEvent = event
            .decode()
            .map_err(|e| ApiError::Internal(format!("build run event does not decode: {e}")))?;
        match event {
            BuildRunEvent::BuildQueued { run: r, .. }
            | BuildRunEvent::BuildStarted { run: r, .. } => run = Some(r),
            other => {
                if let Some((r, v)) = other.verdict() {
                    run = Some(r.clone());
                    verdict = Some(v.clone());
                }
            }
        }
    }
    let run = run.ok_or(ApiError::NotFound("build run"))?;
    Ok((run, verdict))
}
