//! Liveness (`/health`: the process answers) and readiness (`/ready`: Postgres and, when configured, Kafka
//! answer too).

use axum::extract::State;
use axum::Json;
use serde::Serialize;
use serde_json::{json, Map, Value};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::{ApiError, AppState};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(health))
        .routes(routes!(ready))
}

#[derive(Serialize, ToSchema)]
struct Health {
    /// Always `ok`: the process answers.
    status: &'static str,
}

#[derive(Serialize, ToSchema)]
struct Ready {
    /// `ready`.
    status: &'static str,
    /// Each dependency checked, with `ok`.
    checks: Map<String, Value>,
}

/// Liveness: the process answers. Public.
#[utoipa::path(get, path = "/health", tag = "health", operation_id = "health", responses((status = 200, description = "the process answers", body = Health)))]
async fn health() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// Readiness: Postgres (and Kafka, when configured) answer. Public.
#[utoipa::path(get, path = "/ready", tag = "health",
    operation_id = "ready", responses((status = 200, description = "every dependency answers", body = Ready), (status = 503, description = "a dependency does not answer")))]
async fn ready(State(state): State<AppState>) -> Result<Json<Ready>, ApiError> {
    sqlx::query("SELECT 1")
        .execute(&state.pool)
        .await
        .map_err(|e| ApiError::Unavailable(format!("postgres: {e}")))?;
    let mut checks = Map::new();
    checks.insert("postgres".into(), json!("ok"));
    for dependency in &state.dependencies {
        dependency
            .check()
            .await
            .map_err(|e| ApiError::Unavailable(format!("{}: {e}", dependency.name())))?;
        checks.insert(dependency.name().into(), json!("ok"));
    }
    Ok(Json(Ready {
        status: "ready",
        checks,
    }))
}
