//! `/api/v1/audit`: the notification trail for auditors, as JSON or NDJSON (`?format=ndjson`). Read-only.

use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use projections::audit::{self, Scope, TrailEntry};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::extract::{PathId, Query};
use crate::{ApiError, AppState};

/// Where a build's trail is served: a catch-all, because build run ids contain `/` when repositories do.
const BUILD_ROUTE: &str = "/api/v1/audit/builds/{*build_run_id}";
/// The same path in the OpenAPI document, which has no catch-all segments: clients percent-encode the id, `/`
/// included, and the catch-all takes it encoded or not.
const BUILD_DOCUMENTED: &str = "/api/v1/audit/builds/{build_run_id}";

pub fn router() -> OpenApiRouter<AppState> {
    // `routes!` routes each handler at its `#[utoipa::path]` path as written (utoipa-axum 0.2 and axum 0.8 share
    // the `{name}` syntax), so `build` is served at the catch-all; only its entry in the document is renamed.
    let mut router = OpenApiRouter::new()
        .routes(routes!(range))
        .routes(routes!(build))
        .routes(routes!(project))
        .routes(routes!(subscription));
    let paths = &mut router.get_openapi_mut().paths.paths;
    if let Some(item) = paths.remove(BUILD_ROUTE) {
        paths.insert(BUILD_DOCUMENTED.to_owned(), item);
    }
    router
}

/// How the trail is answered.
#[derive(Deserialize, ToSchema, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Format {
    /// `application/json`: `{"entries": [...]}`.
    #[default]
    Json,
    /// `application/x-ndjson`: one entry per line.
    Ndjson,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct Params {
    /// `json` (the default) or `ndjson`.
    #[serde(default)]
    #[param(inline)]
    format: Format,
    /// Only events recorded at or after this time (RFC 3339).
    from: Option<DateTime<Utc>>,
    /// Only events recorded before this time (RFC 3339).
    to: Option<DateTime<Utc>>,
}

/// The trail, oldest event first.
#[derive(Serialize, ToSchema)]
struct Trail {
    entries: Vec<TrailEntry>,
}

fn answer(entries: Vec<TrailEntry>, format: Format) -> Result<Response, ApiError> {
    match format {
        Format::Json => Ok(axum::Json(Trail { entries }).into_response()),
        Format::Ndjson => {
            let mut body = String::new();
            for entry in &entries {
                body.push_str(
                    &serde_json::to_string(entry).map_err(|e| ApiError::Internal(e.to_string()))?,
                );
                body.push('\n');
            }
            Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response())
        }
    }
}

/// A build's notification trail. Auditors and admins.
///
/// Its webhooks, the decision per subscriber, every attempt, the outcome.
#[utoipa::path(get, path = "/api/v1/audit/builds/{*build_run_id}", tag = "audit",
    operation_id = "audit_build",
    security(("bearer" = []), ("api_key" = [])),
    params(
        ("build_run_id" = String, Path,
            description = "The build run's id (`<project>:<provider>:<repository>:<run>:<attempt>`). It contains \
                           `/` when the repository does; percent-encoded or not, the rest of the path is the id."),
        ("format" = inline(Option<Format>), Query, description = "`json` (the default) or `ndjson`")),
    responses(
        (status = 200, description = "the trail, as JSON or as NDJSON (one `TrailEntry` per line)",
            content((Trail = "application/json"), (TrailEntry = "application/x-ndjson"))),
        (status = 404, description = "no events for this build run"),
        (status = 422, description = "an invalid `format`")))]
async fn build(
    State(state): State<AppState>,
    Path(build_run_id): Path<String>,
    Query(params): Query<Params>,
) -> Result<Response, ApiError> {
    let entries = audit::trail(&state.pool, &Scope::Build(build_run_id)).await?;
    if entries.is_empty() {
        return Err(ApiError::NotFound("build"));
    }
    answer(entries, params.format)
}

/// A project's notification trail. Auditors and admins.
///
/// The project's own events and those of its builds (at most 1,000 builds), optionally within a time window.
#[utoipa::path(get, path = "/api/v1/audit/projects/{id}", tag = "audit",
    operation_id = "audit_project",
    security(("bearer" = []), ("api_key" = [])),
    params(("id" = Uuid, Path, description = "the project's id"), Params),
    responses(
        (status = 200, description = "the trail, as JSON or as NDJSON (one `TrailEntry` per line)",
            content((Trail = "application/json"), (TrailEntry = "application/x-ndjson"))),
        (status = 404, description = "no events for this project (asked without `from` or `to`)"),
        (status = 422, description = "an invalid `format`, `from` or `to`")))]
async fn project(
    State(state): State<AppState>,
    PathId(project_id): PathId,
    Query(params): Query<Params>,
) -> Result<Response, ApiError> {
    let scope = Scope::Project {
        project_id,
        from: params.from,
        to: params.to,
    };
    let entries = audit::trail(&state.pool, &scope).await?;
    if entries.is_empty() && params.from.is_none() && params.to.is_none() {
        return Err(ApiError::NotFound("project"));
    }
    answer(entries, params.format)
}

/// A subscription's notification trail. Auditors and admins.
///
/// The subscription's own events and those of its notifications (at most 1,000).
#[utoipa::path(get, path = "/api/v1/audit/subscriptions/{id}", tag = "audit",
    operation_id = "audit_subscription",
    security(("bearer" = []), ("api_key" = [])),
    params(
        ("id" = Uuid, Path, description = "the subscription's id"),
        ("format" = inline(Option<Format>), Query, description = "`json` (the default) or `ndjson`")),
    responses(
        (status = 200, description = "the trail, as JSON or as NDJSON (one `TrailEntry` per line)",
            content((Trail = "application/json"), (TrailEntry = "application/x-ndjson"))),
        (status = 404, description = "no events for this subscription"),
        (status = 422, description = "an invalid `format`")))]
async fn subscription(
    State(state): State<AppState>,
    PathId(id): PathId,
    Query(params): Query<Params>,
) -> Result<Response, ApiError> {
    let entries = audit::trail(&state.pool, &Scope::Subscription(id)).await?;
    if entries.is_empty() {
        return Err(ApiError::NotFound("subscription"));
    }
    answer(entries, params.format)
}

/// Every event recorded in a time range. Auditors and admins.
///
/// At most 10,000 events; ask for a narrower range to see more.
#[utoipa::path(get, path = "/api/v1/audit", tag = "audit",
    operation_id = "audit_range",
    security(("bearer" = []), ("api_key" = [])),
    params(
        ("from" = DateTime<Utc>, Query, description = "events recorded at or after this time (RFC 3339)"),
        ("to" = DateTime<Utc>, Query, description = "events recorded before this time (RFC 3339); after `from`"),
        ("format" = inline(Option<Format>), Query, description = "`json` (the default) or `ndjson`")),
    responses(
        (status = 200, description = "the trail, as JSON or as NDJSON (one `TrailEntry` per line)",
            content((Trail = "application/json"), (TrailEntry = "application/x-ndjson"))),
        (status = 422, description = "`from` or `to` missing or invalid, `to` not after `from`, or an invalid \
                                      `format`")))]
async fn range(
    State(state): State<AppState>,
    Query(params): Query<Params>,
) -> Result<Response, ApiError> {
    let (Some(from), Some(to)) = (params.from, params.to) else {
        return Err(ApiError::Invalid(
            "from and to (RFC 3339 times) are required".into(),
        ));
    };
    if to <= from {
        return Err(ApiError::Invalid("to must be after from".into()));
    }
    answer(
        audit::trail(&state.pool, &Scope::Range { from, to }).await?,
        params.format,
    )
}

#[cfg(test)]
mod tests {
    use super::{router, BUILD_DOCUMENTED, BUILD_ROUTE};

    #[test]
    fn the_catch_all_is_documented_as_a_plain_path_parameter() {
        let spec = router().into_openapi();
        let item = &spec.paths.paths[BUILD_DOCUMENTED];
        assert!(!spec.paths.paths.contains_key(BUILD_ROUTE));
        let parameters = item.get.as_ref().unwrap().parameters.as_ref().unwrap();
        assert!(parameters.iter().any(|p| p.name == "build_run_id"));
    }
}
