//! Liveness (`/health`: the process answers) and readiness (`/ready`: Postgres and, when configured, Kafka
//! answer too).

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::{ApiError, AppState};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/health", get(|| async { Json(json!({ "status": "ok" })) }))
        .route("/ready", get(ready))
}

async fn ready(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    sqlx::query("SELECT 1")
        .execute(&state.pool)
        .await
        .map_err(|e| ApiError::Unavailable(format!("postgres: {e}")))?;
    let mut checks = serde_json::Map::new();
    checks.insert("postgres".into(), json!("ok"));
    for dependency in &state.dependencies {
        dependency
            .check()
            .await
            .map_err(|e| ApiError::Unavailable(format!("{}: {e}", dependency.name())))?;
        checks.insert(dependency.name().into(), json!("ok"));
    }
    Ok(Json(json!({ "status": "ready", "checks": checks })))
}
