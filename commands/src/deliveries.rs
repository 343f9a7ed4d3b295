//! The webhook delivery log: what each recent delivery to a project became (accepted, duplicate, stale,
//! ignored, rejected and why). Best effort and bounded; the event log is the record of what was accepted.
//! Written by [`DeliveryLog`], which groups the lines of concurrent webhooks into one statement.

use std::sync::OnceLock;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};
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

/// The delivery log's writer: deliveries that arrive while a write is under way are written together, in one
/// statement, by the next.
///
/// Every webhook ends with a line in this log, so at a few hundred webhooks a second it was one more statement
/// and commit per webhook beside the events' own. A webhook still waits for its line to be written before it is
/// answered (so the log never lags what a client was told), but under load the lines of concurrent webhooks
/// share a statement: the group commit a database does for its own log. The writer task starts on first use and
/// ends when the last handle is dropped.
pub struct DeliveryLog {
    pool: PgPool,
    queue: OnceLock<mpsc::Sender<Queued>>,
}

/// One line waiting for the writer, and who to tell when it is written.
struct Queued {
    line: Line,
    written: oneshot::Sender<Result<(), String>>,
}

/// A [`Delivery`] that owns its fields, to cross into the writer task.
struct Line {
    project_id: Uuid,
    provider: String,
    event: Option<String>,
    delivery_id: Option<String>,
    received_at: DateTime<Utc>,
    outcome: &'static str,
    reason: Option<String>,
    http_status: i32,
    build_run_id: Option<String>,
    /// As a JSON array: `unnest` cannot take an array of arrays of differing lengths.
    events: String,
}

/// The most lines one statement writes.
const MAX_GROUP: usize = 256;

impl DeliveryLog {
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            queue: OnceLock::new(),
        }
    }

    /// Record one delivery; returns once it is committed.
    pub async fn record(&self, delivery: &Delivery<'_>) -> Result<(), DeliveryLogError> {
        let queue = self.queue.get_or_init(|| {
            let (sender, receiver) = mpsc::channel(4 * MAX_GROUP);
            tokio::spawn(write_groups(self.pool.clone(), receiver));
            sender
        });
        let (written, done) = oneshot::channel();
        let line = Line {
            project_id: delivery.project_id,
            provider: delivery.provider.to_owned(),
            event: delivery.event.map(str::to_owned),
            delivery_id: delivery.delivery_id.map(str::to_owned),
            received_at: delivery.received_at,
            outcome: delivery.outcome.as_str(),
            reason: delivery.reason.map(str::to_owned),
            http_status: i32::from(delivery.http_status),
            build_run_id: delivery.build_run_id.map(str::to_owned),
            events: serde_json::to_string(delivery.events).unwrap_or_else(|_| "[]".to_owned()),
        };
        queue
            .send(Queued { line, written })
            .await
            .map_err(|_| DeliveryLogError::Stopped)?;
        done.await
            .map_err(|_| DeliveryLogError::Stopped)?
            .map_err(DeliveryLogError::Write)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DeliveryLogError {
    #[error("the delivery log's writer has stopped")]
    Stopped,
    #[error("writing the delivery log failed: {0}")]
    Write(String),
}

/// The writer: take what is queued (at least one line, at most [`MAX_GROUP`]), write it, tell the waiters.
async fn write_groups(pool: PgPool, mut queue: mpsc::Receiver<Queued>) {
    let mut group = Vec::with_capacity(MAX_GROUP);
    while queue.recv_many(&mut group, MAX_GROUP).await > 0 {
        let lines: Vec<&Line> = group.iter().map(|q| &q.line).collect();
        let result = write(&pool, &lines).await.map_err(|e| e.to_string());
        for queued in group.drain(..) {
            // A waiter that went away (its client hung up) needs no answer.
            let _ = queued.written.send(result.clone());
        }
    }
}

/// Insert `lines` in one statement, then trim the log of any project whose new ids crossed a multiple of
/// [`TRIM_EVERY`].
///
/// The log is trimmed to [`KEPT_PER_PROJECT`] every [`TRIM_EVERY`] deliveries, not on each one: trimming on
/// every delivery made concurrent webhooks of one project queue on each other's row locks (measured with
/// `herald bench ingest`: the trim took up to 2 s at 400 webhooks/s and capped ingest at 200/s).
async fn write(pool: &PgPool, lines: &[&Line]) -> Result<(), sqlx::Error> {
    let rows: Vec<(i64, Uuid)> = sqlx::query_as(
        "INSERT INTO webhook_deliveries (project_id, provider, event, delivery_id, received_at, outcome, reason,
                                         http_status, build_run_id, events)
         SELECT d.project_id, d.provider, d.event, d.delivery_id, d.received_at, d.outcome, d.reason,
                d.http_status, d.build_run_id,
                ARRAY(SELECT json_array_elements_text(d.events::json))
           FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::timestamptz[], $6::text[], $7::text[],
                       $8::int4[], $9::text[], $10::text[])
                WITH ORDINALITY AS d(project_id, provider, event, delivery_id, received_at, outcome, reason,
                                     http_status, build_run_id, events, n)
          ORDER BY d.n
         RETURNING id, project_id",
    )
    .bind(lines.iter().map(|l| l.project_id).collect::<Vec<_>>())
    .bind(lines.iter().map(|l| l.provider.as_str()).collect::<Vec<_>>())
    .bind(lines.iter().map(|l| l.event.as_deref()).collect::<Vec<_>>())
    .bind(lines.iter().map(|l| l.delivery_id.as_deref()).collect::<Vec<_>>())
    .bind(lines.iter().map(|l| l.received_at).collect::<Vec<_>>())
    .bind(lines.iter().map(|l| l.outcome).collect::<Vec<_>>())
    .bind(lines.iter().map(|l| l.reason.as_deref()).collect::<Vec<_>>())
    .bind(lines.iter().map(|l| l.http_status).collect::<Vec<_>>())
    .bind(lines.iter().map(|l| l.build_run_id.as_deref()).collect::<Vec<_>>())
    .bind(lines.iter().map(|l| l.events.as_str()).collect::<Vec<_>>())
    .fetch_all(pool)
    .await?;
    let mut due: Vec<Uuid> = rows
        .iter()
        .filter(|(id, _)| id % TRIM_EVERY == 0)
        .map(|(_, project)| *project)
        .collect();
    due.sort_unstable();
    due.dedup();
    for project_id in due {
        sqlx::query(
            "DELETE FROM webhook_deliveries WHERE project_id = $1 AND id <= (
                 SELECT id FROM webhook_deliveries WHERE project_id = $1 ORDER BY id DESC OFFSET $2 LIMIT 1)",
        )
        .bind(project_id)
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
