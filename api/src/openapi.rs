//! The OpenAPI 3.1 description, generated from the handlers' annotations (utoipa) as the router is built, so a
//! route cannot be served without being described. Served at `/api/v1/openapi.json`, with Swagger UI at
//! `/api/v1/docs` from files compiled into the binary (nothing is fetched from the internet).

use axum::Router;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{InfoBuilder, OpenApi, OpenApiBuilder};
use utoipa_swagger_ui::SwaggerUi;

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
        "api_key",
        SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-Api-Key"))),
    );
    spec
}

/// `/api/v1/openapi.json` and the docs UI.
pub fn router(spec: OpenApi) -> Router<AppState> {
    Router::new().merge(SwaggerUi::new(DOCS_PATH).url(SPEC_PATH, spec))
}
