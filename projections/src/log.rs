//! Reading the event log in global order, for rebuilds and replays.
//!
//! `global_seq` is assigned at insert, not at commit, so a transaction that commits late can leave a smaller
//! number behind a larger one already visible. A reader that remembers "I have read up to N" must therefore only
//! read up to a horizon below which nothing is still being written: [`settled_horizon`] takes the lock every
//! append holds shared (migration 0018) exclusively for an instant, so no append is in flight when it reads the
//! largest committed number. (Filtering on the writing transaction's id, as this reader did before, is not
//! enough: a transaction appending two events draws two numbers with another transaction's number between them.)

use chrono::{DateTime, Utc};
use domain::StoredEvent;
use sqlx::PgPool;

/// The columns of a [`StoredEvent`], selected from `events e`.
///
/// `payload` and `metadata` are `json` columns and are read as they are: a `::jsonb` cast would make Postgres
/// parse and re-print every document only for Herald to parse it again, which was a fifth of the relay's time
/// in a profile (docs/benchmarks.md).
pub const EVENT_COLUMNS: &str =
    "e.global_seq, e.aggregate_type, e.aggregate_id, e.sequence, e.event_type, \
     e.event_version, e.payload, e.metadata, e.recorded_at";

/// One `events` row.
#[derive(sqlx::FromRow)]
pub struct EventRow {
    global_seq: i64,
    aggregate_type: String,
    aggregate_id: String,
    sequence: i64,
    event_type: String,
    event_version: String,
    payload: serde_json::Value,
    metadata: serde_json::Value,
    recorded_at: DateTime<Utc>,
}

impl EventRow {
    pub fn global_seq(&self) -> i64 {
        self.global_seq
    }
}

impl From<EventRow> for StoredEvent {
    fn from(r: EventRow) -> Self {
        Self {
            global_seq: r.global_seq,
            aggregate_type: r.aggregate_type,
            aggregate_id: r.aggregate_id,
            sequence: r.sequence,
            event_type: r.event_type,
            event_version: r.event_version,
            payload: r.payload,
            metadata: r.metadata,
            recorded_at: r.recorded_at,
        }
    }
}

/// The advisory lock every statement appending events holds shared until its transaction ends (migration 0018).
pub const APPEND_LOCK: i64 = i64::from_be_bytes(*b"HRLDAPND");

/// The largest global sequence up to which every event is settled: committed, or rolled back and never to
/// appear. Waits for the appends in flight to end (new appends wait meanwhile), so it is asked once per pass
/// over the log, not once per page.
pub async fn settled_horizon(pool: &PgPool) -> Result<i64, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(APPEND_LOCK)
        .execute(&mut *tx)
        .await?;
    let horizon: i64 = sqlx::query_scalar("SELECT COALESCE(max(global_seq), 0) FROM events")
        .fetch_one(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(horizon)
}

/// Up to `limit` events after `after` and up to `horizon` (from [`settled_horizon`]), in global order.
pub async fn read_settled(
    pool: &PgPool,
    after: i64,
    horizon: i64,
    limit: i64,
) -> Result<Vec<StoredEvent>, sqlx::Error> {
    let rows: Vec<EventRow> = sqlx::query_as(&format!(
        "SELECT {EVENT_COLUMNS} FROM events e
          WHERE e.global_seq > $1 AND e.global_seq <= $2
          ORDER BY e.global_seq LIMIT $3"
    ))
    .bind(after)
    .bind(horizon)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(StoredEvent::from).collect())
}

/// Up to `limit` committed events after `after`, in global order, never passing an event still being written.
pub async fn read_after(
    pool: &PgPool,
    after: i64,
    limit: i64,
) -> Result<Vec<StoredEvent>, sqlx::Error> {
    let horizon = settled_horizon(pool).await?;
    read_settled(pool, after, horizon, limit).await
}

/// Up to `limit` events after `after`, everything committed now, with no regard for late committers: only for
/// a log nobody is appending to (a restore, the tail end of a snapshot).
pub async fn read_page(
    pool: &PgPool,
    after: i64,
    limit: i64,
) -> Result<Vec<StoredEvent>, sqlx::Error> {
    let rows: Vec<EventRow> = sqlx::query_as(&format!(
        "SELECT {EVENT_COLUMNS} FROM events e WHERE e.global_seq > $1 ORDER BY e.global_seq LIMIT $2"
    ))
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(StoredEvent::from).collect())
}

/// Reads the log in global order from one REPEATABLE READ snapshot, page by page.
///
/// Within a single snapshot nothing can commit "behind" a page already read, so no xmin filter is needed (and
/// none is wanted: unrelated long transactions anywhere in the cluster would hold the newest events back). The
/// snapshot is of the moment the cursor opens: events committed later are for the next reader.
pub struct LogCursor {
    tx: sqlx::Transaction<'static, sqlx::Postgres>,
    after: i64,
}

impl LogCursor {
    pub async fn open(pool: &PgPool, after: i64) -> Result<Self, sqlx::Error> {
        let mut tx = pool.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .execute(&mut *tx)
            .await?;
        Ok(Self { tx, after })
    }

    /// The next page, empty at the end of the snapshot.
    pub async fn next_batch(&mut self, limit: i64) -> Result<Vec<StoredEvent>, sqlx::Error> {
        let rows: Vec<EventRow> = sqlx::query_as(&format!(
            "SELECT {EVENT_COLUMNS} FROM events e WHERE e.global_seq > $1 ORDER BY e.global_seq LIMIT $2"
        ))
        .bind(self.after)
        .bind(limit)
        .fetch_all(&mut *self.tx)
        .await?;
        if let Some(last) = rows.last() {
            self.after = last.global_seq;
        }
        Ok(rows.into_iter().map(StoredEvent::from).collect())
    }

    pub async fn close(self) -> Result<(), sqlx::Error> {
        self.tx.commit().await
    }
}

/// Every event committed when the call starts, in global order.
pub async fn read_all(pool: &PgPool) -> Result<Vec<StoredEvent>, sqlx::Error> {
    let mut cursor = LogCursor::open(pool, 0).await?;
    let mut events = Vec::new();
    loop {
        let batch = cursor.next_batch(1000).await?;
        if batch.is_empty() {
            cursor.close().await?;
            return Ok(events);
        }
        events.extend(batch);
    }
}

/// One aggregate's events, in order: its whole history.
pub async fn aggregate_events(
    pool: &PgPool,
    aggregate_type: &str,
    aggregate_id: &str,
) -> Result<Vec<StoredEvent>, sqlx::Error> {
    let rows: Vec<EventRow> = sqlx::query_as(&format!(
        "SELECT {EVENT_COLUMNS} FROM events e WHERE e.aggregate_type = $1 AND e.aggregate_id = $2 ORDER BY e.sequence"
    ))
    .bind(aggregate_type)
    .bind(aggregate_id)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(StoredEvent::from).collect())
}
