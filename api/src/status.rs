//! `GET /api/v1/operations/status` (JSON) and `GET /metrics` (Prometheus text): outbox depth and age, how far
//! each projection and consumer group is behind, delivery queue and dead-letter queue sizes.

use std::fmt::Write;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use projections::status::{database_status, DatabaseStatus, PartitionLag};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::{ApiError, AppState};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(status))
        .routes(routes!(metrics))
}

/// How far behind Herald is, and what waits.
// Fields in alphabetical order, here and in `StreamReport`: the order the answer had when built with `json!`.
#[derive(Serialize, ToSchema)]
struct OperationsStatus {
    /// The delivery circuit breakers of this process (all-in-one); a separate delivery worker exports its own
    /// as `herald_circuit_breaker_open` on its `/metrics`.
    circuit_breakers: Vec<serde_json::Value>,
    database: DatabaseStatus,
    stream: StreamReport,
}

/// The event stream: the in-process bus (no backlog of its own), or Kafka with each consumer group's lag.
#[derive(Serialize, ToSchema)]
struct StreamReport {
    /// Kafka only: why the lag could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    error: Option<String>,
    /// `in-process` or `kafka`.
    kind: &'static str,
    /// In-process only.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    note: Option<&'static str>,
    /// Kafka only, when the lag could be read: one entry per consumer group and partition.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    partitions: Option<Vec<PartitionLag>>,
}

async fn gather(
    state: &AppState,
) -> Result<(DatabaseStatus, Option<Result<Vec<PartitionLag>, String>>), ApiError> {
    let database = database_status(&state.pool).await?;
    let stream = match &state.stream {
        Some(s) => Some(s.lag().await),
        None => None,
    };
    Ok((database, stream))
}

/// Operational status. Operators and admins.
///
/// Outbox depth and age, how far each projection and consumer group is behind, delivery and dead-letter queue
/// sizes.
#[utoipa::path(get, path = "/api/v1/operations/status", tag = "operations",
    operation_id = "operations_status",
    security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, description = "the status", body = OperationsStatus)))]
async fn status(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let (database, stream) = gather(&state).await?;
    let stream = match stream {
        None => StreamReport {
            error: None,
            kind: "in-process",
            note: Some("the in-process bus holds no backlog: the outbox is the backlog"),
            partitions: None,
        },
        Some(Ok(partitions)) => StreamReport {
            error: None,
            kind: "kafka",
            note: None,
            partitions: Some(partitions),
        },
        Some(Err(e)) => StreamReport {
            error: Some(e),
            kind: "kafka",
            note: None,
            partitions: None,
        },
    };
    Ok(axum::Json(OperationsStatus {
        circuit_breakers: state.breakers.as_ref().map(|b| b()).unwrap_or_default(),
        database,
        stream,
    }))
}

/// Prometheus metrics. Public.
///
/// The operational status's figures as gauges, and this process's own counters and histograms (HTTP requests,
/// events appended, deliveries, caches), in the Prometheus text format.
#[utoipa::path(get, path = "/metrics", tag = "health",
    operation_id = "metrics",
    responses((status = 200, content_type = "text/plain", body = String,
        description = "Prometheus text exposition format, version 0.0.4")))]
async fn metrics(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let (db, stream) = gather(&state).await?;
    let mut out = String::new();
    let mut gauge = |name: &str, help: &str, samples: Vec<(String, f64)>| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    gauge(
        "herald_events_total",
        "Events in the log.",
        vec![(String::new(), db.events_total as f64)],
    );
    gauge(
        "herald_outbox_depth",
        "Committed events not yet on the stream.",
        vec![(String::new(), db.outbox_depth as f64)],
    );
    gauge(
        "herald_outbox_oldest_age_seconds",
        "Age of the oldest event waiting in the outbox.",
        vec![(String::new(), db.outbox_oldest_age_seconds)],
    );
    gauge(
        "herald_delivery_queue_depth",
        "Notifications waiting to be sent (due now or retrying later).",
        vec![(String::new(), db.delivery_queue_depth as f64)],
    );
    gauge(
        "herald_dead_letters",
        "Notifications in the dead-letter queue.",
        vec![(String::new(), db.dead_letters as f64)],
    );
    gauge(
        "herald_projection_aggregates_behind",
        "Aggregates whose newest event a projection has not applied.",
        db.projections
            .iter()
            .map(|p| {
                (
                    format!("{{projection=\"{}\"}}", p.projection),
                    p.aggregates_behind as f64,
                )
            })
            .collect(),
    );
    if let Some(Ok(partitions)) = stream {
        gauge(
            "herald_consumer_lag",
            "Messages a consumer group has not committed yet, per partition.",
            partitions
                .iter()
                .map(|p| {
                    (
                        format!("{{group=\"{}\",partition=\"{}\"}}", p.group, p.partition),
                        p.lag as f64,
                    )
                })
                .collect(),
        );
    }
    // This process's own counters and histograms (HTTP, events appended, deliveries, caches).
    if let Some(handle) = &state.metrics {
        out.push_str(&handle.render());
    }
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out))
}
