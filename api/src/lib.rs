//! Herald's HTTP edge: webhooks in, REST `/api/v1` for projects, builds and subscriptions, `/health` and
//! `/ready`. Handlers validate, call the command services or read models, and shape answers; every error leaves
//! through [`ApiError`] as RFC 7807 problem+json.

mod analytics;
mod audit;
pub mod auth;
mod dashboard;
mod deprecation;
mod dlq;
mod email_events;
mod error;
mod etag;
mod extract;
mod health;
mod keys;
pub mod limits;
mod live;
mod me;
mod openapi;
mod operations;
mod projects;
pub mod read_cache;
mod session;
mod status;
mod subscribers;
mod subscriptions;
mod telegram;
mod telemetry;
mod templates;
mod unsubscribe;
mod webhooks;

use std::sync::Arc;

use async_trait::async_trait;
use axum::Router;
use commands::Commands;
use metrics_exporter_prometheus::PrometheusHandle;
use projections::status::PartitionLag;
use sqlx::PgPool;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::CorsLayer;
use tower_http::timeout::TimeoutLayer;

use auth::jwt::JwtKeys;
use auth::keys::ApiKeys;
pub use error::ApiError;
use limits::{LimitSettings, Limits};
pub use subscribers::{BoxFuture, VerificationMailer};

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
    pub auth: Auth,
    pub limits: Limits,
    /// This process's counters and histograms, rendered by `/metrics`.
    pub metrics: Option<PrometheusHandle>,
    pub http: HttpSettings,
    /// The delivery circuit breakers running in this process, for the status answer.
    pub breakers: Option<BreakerViews>,
    /// The secret Telegram echoes on webhook calls; `None`: the bot webhook is off (404).
    pub telegram_webhook_secret: Option<String>,
    /// Sends email verification links; without it, email contacts are refused (503).
    pub mailer: Option<Arc<dyn VerificationMailer>>,
    /// The Telegram bot's username, for link-code deep links (`https://t.me/<bot>?start=<code>`).
    pub bot_username: Option<String>,
    /// Analytics answers, and the change signal the live streams wait on.
    pub read_cache: read_cache::ReadCache,
    /// Cancelled when the process shuts down: live streams end then, so the server's graceful shutdown does
    /// not wait on connections that never finish by themselves.
    pub shutdown: tokio_util::sync::CancellationToken,
}

/// Reads the circuit breakers of delivery workers in this process.
pub type BreakerViews = Arc<dyn Fn() -> Vec<serde_json::Value> + Send + Sync>;

/// How callers prove who they are.
#[derive(Clone)]
pub struct Auth {
    pub keys: ApiKeys,
    pub jwt: JwtKeys,
}

/// Limits of the HTTP edge.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// A request (body included) that takes longer than this is answered 408.
    pub request_timeout: std::time::Duration,
    /// Origins allowed to call the API from a browser; empty (the default) sends no CORS headers at all.
    pub cors_origins: Vec<String>,
    /// Live-update streams send a heartbeat this often.
    pub heartbeat: std::time::Duration,
    /// The longest an analytics answer is cached without a change notice (zero: not cached).
    pub cache_ttl: std::time::Duration,
    /// How long a dashboard login lasts.
    pub session_ttl: std::time::Duration,
    /// Serve the dashboard's files from this directory instead of the embedded copy (front-end work).
    pub ui_dir: Option<std::path::PathBuf>,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            request_timeout: std::time::Duration::from_secs(30),
            cors_origins: Vec::new(),
            heartbeat: std::time::Duration::from_secs(15),
            cache_ttl: std::time::Duration::from_secs(10),
            session_ttl: std::time::Duration::from_secs(12 * 3600),
            ui_dir: None,
        }
    }
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
            pool: pool.clone(),
            public_url,
            dependencies,
            snapshots: moka::future::Cache::builder()
                .max_capacity(16)
                .time_to_idle(std::time::Duration::from_secs(600))
                .build(),
            stream: None,
            auth: Auth {
                keys: ApiKeys::new(pool),
                jwt: JwtKeys::disabled(),
            },
            limits: Limits::new(&LimitSettings::default()),
            metrics: None,
            http: HttpSettings::default(),
            breakers: None,
            telegram_webhook_secret: None,
            mailer: None,
            bot_username: None,
            read_cache: read_cache::ReadCache::new(&read_cache::CacheSettings::default()),
            shutdown: tokio_util::sync::CancellationToken::new(),
        }
    }

    /// Send email verification links with this mailer.
    pub fn with_mailer(mut self, mailer: Arc<dyn VerificationMailer>) -> Self {
        self.mailer = Some(mailer);
        self
    }

    /// The bot's username (with or without `@`), for link-code deep links.
    pub fn with_bot_username(mut self, username: impl Into<String>) -> Self {
        let username = username.into();
        let username = username.trim().trim_start_matches('@');
        self.bot_username = (!username.is_empty()).then(|| username.to_owned());
        self
    }

    /// End live streams when `token` is cancelled.
    pub fn with_shutdown(mut self, token: tokio_util::sync::CancellationToken) -> Self {
        self.read_cache = self.read_cache.with_shutdown(token.clone());
        self.shutdown = token;
        self
    }

    pub fn with_breakers(mut self, breakers: BreakerViews) -> Self {
        self.breakers = Some(breakers);
        self
    }

    /// Accept Telegram bot updates on `/api/v1/telegram/webhook` carrying this secret.
    pub fn with_telegram_webhook(mut self, secret: String) -> Self {
        self.telegram_webhook_secret = Some(secret);
        self
    }

    /// Accept bearer JWTs signed with these secrets.
    pub fn with_jwt(mut self, jwt: JwtKeys) -> Self {
        self.auth.jwt = jwt;
        self
    }

    pub fn with_limits(mut self, limits: &LimitSettings) -> Self {
        self.limits = Limits::new(limits);
        self
    }

    pub fn with_metrics(mut self, handle: PrometheusHandle) -> Self {
        self.metrics = Some(handle);
        self
    }

    pub fn with_http(mut self, http: HttpSettings) -> Self {
        self.read_cache = read_cache::ReadCache::new(&read_cache::CacheSettings {
            ttl: http.cache_ttl,
            ..read_cache::CacheSettings::default()
        })
        .with_shutdown(self.shutdown.clone());
        self.http = http;
        self
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
        let cached = self.snapshots.contains_key(name);
        metrics::counter!("herald_cache_requests_total", "cache" => "snapshots", "result" => if cached { "hit" } else { "miss" })
            .increment(1);
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
            .map_err(|e: Arc<ApiError>| (*e).clone())
    }
}

/// The metadata of events an API call commits: where they came from and what was asked. (The caller and the
/// trace id are added by the command executor from the request's context.)
fn metadata(action: &str) -> commands::Metadata {
    commands::Metadata::from([
        ("source".to_owned(), "api".to_owned()),
        ("action".to_owned(), action.to_owned()),
    ])
}

/// Request bodies above this are refused (GitHub caps its payloads at 25 MB; real build events are far smaller).
pub const MAX_BODY_BYTES: usize = 5 * 1024 * 1024;

/// Every route, each with its OpenAPI description: the spec and the server come from the same list.
fn routes() -> utoipa_axum::router::OpenApiRouter<AppState> {
    utoipa_axum::router::OpenApiRouter::with_openapi(openapi::base())
        .merge(health::router())
        .merge(projects::router())
        .merge(subscribers::router())
        .merge(subscriptions::router())
        .merge(telegram::router())
        .merge(webhooks::router())
        .merge(dlq::router())
        .merge(audit::router())
        .merge(operations::router())
        .merge(status::router())
        .merge(keys::router())
        .merge(templates::router())
        .merge(email_events::router())
        .merge(unsubscribe::router())
        .merge(analytics::router())
        .merge(live::router())
        .merge(session::router())
        .merge(me::router())
}

/// The API: every route behind the guard (authentication, the role policy, rate limits), every answer with a
/// trace id, every failure (panics included) as problem+json.
pub fn router(state: AppState) -> Router {
    let (routes, mut spec) = routes().split_for_parts();
    openapi::add_common_responses(&mut spec);
    let cors = cors(&state.http.cors_origins);
    let timeout = state.http.request_timeout;
    routes
        .merge(openapi::router(spec))
        .merge(dashboard::router())
        .route_layer(axum::middleware::from_fn(etag::tag))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::guard,
        ))
        .route_layer(axum::middleware::from_fn(deprecation::headers))
        .route_layer(axum::middleware::from_fn(telemetry::http_metrics))
        .fallback(|| async { ApiError::RouteNotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            timeout,
        ))
        .layer(axum::middleware::map_response(timeout_problem))
        .layer(CatchPanicLayer::custom(panicked))
        .layer(cors)
        .layer(axum::middleware::from_fn(telemetry::trace))
        .with_state(state)
}

/// The timeout layer answers 408 with an empty body; every other error of the API is a problem document, so
/// this one becomes one too.
async fn timeout_problem(response: axum::response::Response) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let bare = !response
        .headers()
        .contains_key(axum::http::header::CONTENT_TYPE);
    if response.status() == axum::http::StatusCode::REQUEST_TIMEOUT && bare {
        return ApiError::RequestTimeout.into_response();
    }
    response
}

/// The OpenAPI document of every route (also served at `/api/v1/openapi.json`).
pub fn spec() -> utoipa::openapi::OpenApi {
    let mut spec = routes().split_for_parts().1;
    openapi::add_common_responses(&mut spec);
    spec
}

/// A handler panicked: log what it said, answer a plain 500 that says nothing about it.
fn panicked(payload: Box<dyn std::any::Any + Send + 'static>) -> axum::response::Response {
    let message = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    tracing::error!(panic = %message, "a handler panicked");
    axum::response::IntoResponse::into_response(ApiError::Internal("a handler panicked".into()))
}

fn cors(origins: &[String]) -> CorsLayer {
    if origins.is_empty() {
        return CorsLayer::new();
    }
    let origins: Vec<axum::http::HeaderValue> =
        origins.iter().filter_map(|o| o.parse().ok()).collect();
    CorsLayer::new()
        .allow_origin(origins)
        .allow_methods([
            axum::http::Method::GET,
            axum::http::Method::POST,
            axum::http::Method::PATCH,
            axum::http::Method::PUT,
            axum::http::Method::DELETE,
        ])
        .allow_headers([
            axum::http::header::AUTHORIZATION,
            axum::http::header::CONTENT_TYPE,
        ])
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    use super::*;

    #[tokio::test]
    async fn a_panic_is_a_plain_500_problem_that_leaks_nothing() {
        let app = Router::new()
            .route(
                "/boom",
                axum::routing::get(|| async {
                    if true {
                        panic!("database password is hunter2");
                    }
                }),
            )
            .layer(CatchPanicLayer::custom(panicked));
        let response = app
            .oneshot(Request::get("/boom").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), 500);
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&body);
        assert!(text.contains("internal error"));
        assert!(!text.contains("hunter2"));
    }
}
