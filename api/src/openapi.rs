//! The OpenAPI 3.1 description, generated from the handlers' annotations (utoipa) as the router is built, so a
//! route cannot be served without being described. Served at `/api/v1/openapi.json`, with a docs page at
//! `/api/v1/docs` compiled into the binary (nothing is fetched from the internet).
//!
//! The docs page is Herald's own small renderer of the document, not Swagger UI: utoipa-swagger-ui embeds 11 MB
//! of Swagger UI (source maps included, no way to leave them out or compress them), which alone would push the
//! container image past its 40 MB budget.

use axum::response::Html;
use axum::routing::get;
use axum::Router;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{InfoBuilder, OpenApi, OpenApiBuilder};

use crate::AppState;

pub const SPEC_PATH: &str = "/api/v1/openapi.json";
pub const DOCS_PATH: &str = "/api/v1/docs";

/// The document the routes are added to: title, version, how to authenticate.
pub fn base() -> OpenApi {
    let mut spec = OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("Herald")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "Self-hosted CI/CD status notifier. Authenticate with `Authorization: Bearer <API key or JWT>`. \
                     Errors are RFC 7807 problem+json with a `trace_id`. Who may call what is listed per operation \
                     in its description and enforced by one policy table.",
                ))
                .build(),
        )
        .build();
    let components = spec.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "bearer",
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some("An API key (hrld_…) or a JWT"))
                .build(),
        ),
    );
    components.add_security_scheme(
        "basic",
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Basic)
                .description(Some(
                    "An API key as the password, any user name (for mail systems)",
                ))
                .build(),
        ),
    );
    components.add_security_scheme(
        "api_key",
        SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-Api-Key"))),
    );
    components.add_security_scheme(
        "session",
        SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
            crate::auth::SESSION_COOKIE,
            "The dashboard's session (POST /api/v1/session); changes need the `X-Herald-Csrf` header too",
        ))),
    );
    spec
}

/// An RFC 7807 problem, as every error is answered.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[allow(dead_code)] // described, never built: errors are built by `ApiError`.
pub struct Problem {
    /// `urn:herald:problem:<slug>`: stable, for programs.
    r#type: String,
    title: String,
    status: u16,
    /// What was wrong, for people.
    detail: String,
    /// The request's trace id: the same id its log lines carry.
    trace_id: String,
}

/// The answers the guard and the middleware give on any route, added to every operation: 429 everywhere,
/// 401 and 403 where credentials are needed, and the problem schema for all of them.
pub fn add_common_responses(spec: &mut OpenApi) {
    use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
    use utoipa::{PartialSchema, ToSchema};
    let components = spec.components.get_or_insert_with(Default::default);
    components
        .schemas
        .insert(Problem::name().into_owned(), Problem::schema());
    let problem = |description: &str| {
        RefOr::T(
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/problem+json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("Problem")))
                        .build(),
                )
                .build(),
        )
    };
    for item in spec.paths.paths.values_mut() {
        let operations = [
            &mut item.get,
            &mut item.post,
            &mut item.put,
            &mut item.patch,
            &mut item.delete,
        ];
        for operation in operations.into_iter().flatten() {
            let responses = &mut operation.responses.responses;
            let secured = operation.security.as_ref().is_some_and(|s| !s.is_empty());
            if secured {
                responses
                    .entry("401".into())
                    .or_insert_with(|| problem("no or invalid credentials"));
                responses
                    .entry("403".into())
                    .or_insert_with(|| problem("the caller's role may not do this"));
            }
            responses
                .entry("429".into())
                .or_insert_with(|| problem("rate limit exceeded; see Retry-After"));
            responses.entry("408".into()).or_insert_with(|| {
                problem("the request, body included, took longer than the request timeout")
            });
        }
    }
}

/// `/api/v1/openapi.json` and the docs page.
pub fn router(spec: OpenApi) -> Router<AppState> {
    let spec = std::sync::Arc::new(spec);
    Router::new()
        .route(
            SPEC_PATH,
            get(move || {
                let spec = spec.clone();
                async move { axum::Json(spec.as_ref().clone()) }
            }),
        )
        .route(DOCS_PATH, get(docs))
}

async fn docs() -> Html<&'static str> {
    Html(include_str!("../assets/docs.html"))
}
