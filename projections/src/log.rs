//! Reading the event log in global order, for rebuilds and replays.
//!
//! `global_seq` is assigned at insert, not at commit, so a transaction that commits late can leave a smaller
//! number behind a larger one already visible. A reader that remembers "I have read up to N" must therefore only
//! read rows whose writing transaction is older than every transaction still running
//! (`txid < pg_snapshot_xmin(pg_current_snapshot())`); later rows are read on the next call.

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

/// Up to `limit` committed events after `after`, in global order, never skipping a late committer.
pub async fn read_after(
    pool: &PgPool,
    after: i64,
    limit: i64,
) -> Result<Vec<StoredEvent>, sqlx::Error> {
    let rows: Vec<EventRow> = sqlx::query_as(&format!(
        "SELECT {EVENT_COLUMNS} FROM events e
          WHERE e.global_seq > $1 AND e.txid < pg_snapshot_xmin(pg_current_snapshot())
          ORDER BY e.global_seq LIMIT $2"
    ))
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(StoredEvent::from).collect())
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
