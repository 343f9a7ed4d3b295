//! Herald's HTTP edge: webhooks in, REST `/api/v1` for projects, builds and subscriptions, `/health` and
//! `/ready`. Handlers validate, call the command services or read models, and shape answers; every error leaves
//! through [`ApiError`] as RFC 7807 problem+json.

mod audit;
mod dlq;
mod error;
mod extract;
mod health;
mod projects;
mod subscriptions;
mod webhooks;

use std::sync::Arc;

use async_trait::async_trait;
use axum::Router;
use commands::Commands;
use sqlx::PgPool;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;

pub use error::ApiError;

/// Something `/ready` checks besides Postgres (Kafka, when configured).
#[async_trait]
pub trait Dependency: Send + Sync {
    fn name(&self) -> &'static str;
    async fn check(&self) -> Result<(), String>;
}

/// Everything a handler needs; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub commands: Arc<Commands>,
    pub pool: PgPool,
    /// The base URL users reach Herald at, for the webhook URLs Herald hands out.
    pub public_url: String,
    pub dependencies: Vec<Arc<dyn Dependency>>,
}

/// Webhook bodies above this are refused (GitHub caps its payloads at 25 MB; real build events are far smaller).
pub const MAX_BODY_BYTES: usize = 5 * 1024 * 1024;

pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(health::router())
        .merge(projects::router())
        .merge(subscriptions::router())
        .merge(webhooks::router())
        .merge(dlq::router())
        .merge(audit::router())
        .fallback(|| async { ApiError::RouteNotFound })
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(CatchPanicLayer::custom(|_| {
            axum::response::IntoResponse::into_response(ApiError::Internal(
                "a handler panicked".into(),
            ))
        }))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}
