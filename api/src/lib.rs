//! Herald's HTTP edge: webhooks in, REST `/api/v1` for projects, builds and subscriptions, `/health` and
//! `/ready`. Handlers validate, call the command services or read models, and shape answers; every error leaves
//! through [`ApiError`] as RFC 7807 problem+json.

mod audit;
mod dlq;
mod error;
mod extract;
mod health;
mod operations;
mod projects;
mod status;
mod subscriptions;
mod webhooks;

use std::sync::Arc;

use async_trait::async_trait;
use axum::Router;
use commands::Commands;
use projections::status::PartitionLag;
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

/// Consumer-group lag of the stream, when it is Kafka (the in-process bus has none to report).
#[async_trait]
pub trait StreamStatus: Send + Sync {
    /// One entry per group and partition.
    async fn lag(&self) -> Result<Vec<PartitionLag>, String>;
}

/// Everything a handler needs; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub commands: Arc<Commands>,
    pub pool: PgPool,
    /// The base URL users reach Herald at, for the webhook URLs Herald hands out.
    pub public_url: String,
    pub dependencies: Vec<Arc<dyn Dependency>>,
    /// Pools onto named snapshots (`?as_of=<name>`), opened on first use and closed when idle.
    pub snapshots: moka::future::Cache<String, PgPool>,
    pub stream: Option<Arc<dyn StreamStatus>>,
}

impl AppState {
    pub fn new(
        commands: Arc<Commands>,
        pool: PgPool,
        public_url: String,
        dependencies: Vec<Arc<dyn Dependency>>,
    ) -> Self {
        Self {
            commands,
            pool,
            public_url,
            dependencies,
            snapshots: moka::future::Cache::builder()
                .max_capacity(16)
                .time_to_idle(std::time::Duration::from_secs(600))
                .build(),
            stream: None,
        }
    }

    pub fn with_stream_status(mut self, stream: Arc<dyn StreamStatus>) -> Self {
        self.stream = Some(stream);
        self
    }

    /// The pool to read from: the live read models, or a named snapshot of them.
    pub async fn read_pool(&self, as_of: Option<&str>) -> Result<PgPool, ApiError> {
        let Some(name) = as_of else {
            return Ok(self.pool.clone());
        };
        let pool = self.pool.clone();
        let owned = name.to_owned();
        self.snapshots
            .try_get_with(owned.clone(), async move {
                match projections::rebuild::snapshot_pool(&pool, &owned).await {
                    Ok(Some(p)) => Ok(p),
                    Ok(None) => Err(ApiError::NotFound("snapshot")),
                    Err(projections::rebuild::RebuildError::Invalid(e)) => {
                        Err(ApiError::Invalid(e))
                    }
                    Err(e) => Err(ApiError::Internal(e.to_string())),
                }
            })
            .await
            .map_err(|e: Arc<ApiError>| match e.as_ref() {
                ApiError::NotFound(what) => ApiError::NotFound(what),
                ApiError::Invalid(why) => ApiError::Invalid(why.clone()),
                other => ApiError::Internal(other.to_string()),
            })
    }
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
        .merge(operations::router())
        .merge(status::router())
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
