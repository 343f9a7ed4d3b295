//! `GET /api/v1/operations/status` (JSON) and `GET /metrics` (Prometheus text): outbox depth and age, how far
//! each projection and consumer group is behind, delivery queue and dead-letter queue sizes.

use std::fmt::Write;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use projections::status::{database_status, DatabaseStatus, PartitionLag};
use serde_json::json;

use crate::{ApiError, AppState};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/operations/status", get(status))
        .route("/metrics", get(metrics))
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

async fn status(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let (database, stream) = gather(&state).await?;
    let stream = match stream {
        None => {
            json!({ "kind": "in-process", "note": "the in-process bus holds no backlog: the outbox is the backlog" })
        }
        Some(Ok(partitions)) => json!({ "kind": "kafka", "partitions": partitions }),
        Some(Err(e)) => json!({ "kind": "kafka", "error": e }),
    };
    Ok(axum::Json(json!({
        "database": database,
        "stream": stream,
        "circuit_breakers": [],
    })))
}

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
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out))
}
