//! The webhook delivery log: what each recent delivery to a project became (accepted, duplicate, stale,
//! ignored, rejected and why). Best effort and bounded; the event log is the record of what was accepted.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

/// How many deliveries are kept per project.
pub const KEPT_PER_PROJECT: i64 = 500;

/// How often (in deliveries, across projects) the log is trimmed.
pub const TRIM_EVERY: i64 = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// Recorded new events.
    Accepted,
    /// The same delivery id was recorded before.
    Duplicate,
    /// A new delivery that says nothing new (a late "in progress" after the verdict).
    Stale,
    /// An event Herald does not act on.
    Ignored,
    /// Refused: unknown project, bad signature, malformed body.
    Rejected,
}

impl DeliveryOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Duplicate => "duplicate",
            Self::Stale => "stale",
            Self::Ignored => "ignored",
            Self::Rejected => "rejected",
        }
    }
}

/// One delivery to record.
#[derive(Debug, Clone)]
pub struct Delivery<'a> {
    pub project_id: Uuid,
    pub provider: &'a str,
    pub event: Option<&'a str>,
    pub delivery_id: Option<&'a str>,
    pub received_at: DateTime<Utc>,
    pub outcome: DeliveryOutcome,
    pub reason: Option<&'a str>,
    pub http_status: u16,
    pub build_run_id: Option<&'a str>,
    pub events: &'a [String],
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct DeliveryView {
    pub id: i64,
    pub provider: String,
    pub event: Option<String>,
    pub delivery_id: Option<String>,
    pub received_at: DateTime<Utc>,
    pub outcome: String,
    pub reason: Option<String>,
    pub http_status: i32,
    pub build_run_id: Option<String>,
    pub events: Vec<String>,
}

///
/// The log is trimmed to [`KEPT_PER_PROJECT`] every [`TRIM_EVERY`] deliveries, not on each one: trimming on
/// every delivery made concurrent webhooks of one project queue on each other's row locks (measured with
/// `herald bench ingest`: the trim took up to 2 s at 400 webhooks/s and capped ingest at 200/s).
pub async fn record(pool: &PgPool, delivery: &Delivery<'_>) -> Result<(), sqlx::Error> {
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO webhook_deliveries (project_id, provider, event, delivery_id, received_at, outcome, reason,
                                         http_status, build_run_id, events)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id",
    )
    .bind(delivery.project_id)
    .bind(delivery.provider)
    .bind(delivery.event)
    .bind(delivery.delivery_id)
    .bind(delivery.received_at)
    .bind(delivery.outcome.as_str())
    .bind(delivery.reason)
    .bind(i32::from(delivery.http_status))
    .bind(delivery.build_run_id)
    .bind(delivery.events)
    .fetch_one(pool)
    .await?;
    if id % TRIM_EVERY == 0 {
        sqlx::query(
            "DELETE FROM webhook_deliveries WHERE project_id = $1 AND id <= (
                 SELECT id FROM webhook_deliveries WHERE project_id = $1 ORDER BY id DESC OFFSET $2 LIMIT 1)",
        )
        .bind(delivery.project_id)
        .bind(KEPT_PER_PROJECT)
        .execute(pool)
        .await?;
    }
    Ok(())
}

/// The newest deliveries first.
pub async fn recent(
    pool: &PgPool,
    project_id: Uuid,
    limit: i64,
    offset: i64,
) -> Result<Vec<DeliveryView>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, provider, event, delivery_id, received_at, outcome, reason, http_status, build_run_id, events
           FROM webhook_deliveries WHERE project_id = $1 ORDER BY id DESC LIMIT $2 OFFSET $3",
    )
    .bind(project_id)
    .bind(limit)
    .bind(offset)
    .fetch_all(pool)
    .await
}
