//! The outbox relay: moves committed events from the `outbox` table to the stream, in order, and clears each
//! row only after the stream has acknowledged it.
//!
//! One relay leads at a time, by holding a Postgres advisory lock on the very connection it reads and clears the
//! outbox with: if that connection dies the lock is gone and so is every statement that would act on it, so two
//! relays can never interleave. Any number of standby relays wait for the lock.
//!
//! The outbox is a set of pending rows, not an offset, so a row that commits late with a smaller `global_seq` is
//! simply picked up by the next batch: nothing is skipped. Per-aggregate order holds because an aggregate's next
//! event can only be appended after its previous one committed, so within an aggregate `global_seq` follows
//! `sequence`, and each batch is published in `global_seq` order.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use domain::StoredEvent;
use projections::log::{EventRow, EVENT_COLUMNS};
use sqlx::postgres::PgListener;
use sqlx::{Connection, PgConnection, PgPool};
use tokio_util::sync::CancellationToken;

/// Where the relay publishes: Kafka or the in-process bus.
#[async_trait]
pub trait Publisher: Send + Sync {
    /// Publish a batch in order; `Ok` means every event is durably on the stream (or, in process, handled).
    async fn publish(&self, events: &[StoredEvent]) -> Result<(), PublishError>;
}

#[derive(Debug, thiserror::Error)]
#[error("publish failed: {0}")]
pub struct PublishError(pub String);

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Publish(#[from] PublishError),
}

/// Advisory lock key for relay leadership ("herald" in ASCII).
const LEADER_LOCK: i64 = 0x6865_7261_6c64;

pub struct Relay {
    pool: PgPool,
    publisher: Arc<dyn Publisher>,
    /// Events per batch. 2,000 rather than the earlier 500: a batch costs two round trips and a produce flush
    /// whatever its size, and at 500 those fixed costs held the relay to 0.07× raw produce; at 2,000 it
    /// reaches 0.38×, while two batches in memory stay a few MiB (docs/benchmarks.md).
    batch_size: i64,
    poll_interval: Duration,
}

impl Relay {
    pub fn new(pool: PgPool, publisher: Arc<dyn Publisher>) -> Self {
        Self {
            pool,
            publisher,
            batch_size: 2_000,
            poll_interval: Duration::from_secs(1),
        }
    }

    /// Publish at most `batch_size` events at a time (at least one).
    pub fn with_batch_size(mut self, batch_size: i64) -> Self {
        self.batch_size = batch_size.max(1);
        self
    }

    /// Wait until this relay holds the leader lock; returns the connection that holds it, detached from the pool
    /// so that dropping it closes the session and so releases the lock.
    async fn lead(&self, shutdown: &CancellationToken) -> Option<PgConnection> {
        loop {
            match self.pool.acquire().await.map(|c| c.detach()) {
                Ok(mut conn) => {
                    let won: Result<bool, _> =
                        sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                            .bind(LEADER_LOCK)
                            .fetch_one(&mut conn)
                            .await;
                    match won {
                        Ok(true) => return Some(conn),
                        Ok(false) if shutdown.is_cancelled() => return None,
                        Ok(false) => tracing::debug!("another relay leads; standing by"),
                        Err(e) => tracing::warn!(error = %e, "relay could not ask for leadership"),
                    }
                }
                Err(e) => tracing::warn!(error = %e, "relay cannot reach Postgres"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return None,
                _ = tokio::time::sleep(self.poll_interval) => {}
            }
        }
    }

    /// Publish everything in the outbox, batch by batch, using the leader's connection; returns how many events
    /// moved.
    ///
    /// The next batch is read while the current one is on its way to the stream, because reading and decoding a
    /// batch costs about as much as publishing it (docs/benchmarks.md). The overlap does not change what the
    /// stream sees: a batch is published only after the one before it was acknowledged and cleared, exactly as
    /// one batch at a time. Nor can it reorder an aggregate: the next batch leaves out only the rows in flight,
    /// and an aggregate's later event cannot be in flight while its earlier one is not, because the earlier one
    /// committed first, has the smaller `global_seq`, and so was read into the same or an earlier batch.
    pub async fn drain(&self, conn: &mut PgConnection) -> Result<usize, RelayError> {
        let mut moved = 0;
        let mut batch = self.read_batch(conn, &[]).await?;
        while !batch.is_empty() {
            let in_flight: Vec<i64> = batch.iter().map(|e| e.global_seq).collect();
            // Its own task, so that serializing this batch and decoding the next use both cores.
            let publisher = self.publisher.clone();
            let publishing = tokio::spawn(async move {
                let published = publisher.publish(&batch).await;
                (batch, published)
            });
            let next = self.read_batch(conn, &in_flight).await;
            let (published_batch, published) = publishing
                .await
                .map_err(|e| PublishError(format!("the publishing task failed: {e}")))?;
            published?;
            let next = next?;
            sqlx::query("DELETE FROM outbox WHERE global_seq = ANY($1)")
                .bind(&in_flight)
                .execute(&mut *conn)
                .await?;
            moved += published_batch.len();
            tracing::debug!(events = published_batch.len(), "relayed");
            batch = next;
        }
        Ok(moved)
    }

    /// The oldest `batch_size` outbox events, leaving out those in flight.
    async fn read_batch(
        &self,
        conn: &mut PgConnection,
        in_flight: &[i64],
    ) -> Result<Vec<StoredEvent>, sqlx::Error> {
        Ok(sqlx::query_as::<_, EventRow>(&format!(
            "SELECT {EVENT_COLUMNS} FROM outbox o JOIN events e ON e.global_seq = o.global_seq
              WHERE o.global_seq <> ALL($2)
              ORDER BY o.global_seq LIMIT $1"
        ))
        .bind(self.batch_size)
        .bind(in_flight)
        .fetch_all(&mut *conn)
        .await?
        .into_iter()
        .map(StoredEvent::from)
        .collect())
    }

    /// Lead and relay until `shutdown`; on any error, let go of leadership, wait and start over.
    pub async fn run(self, shutdown: CancellationToken) {
        while !shutdown.is_cancelled() {
            let Some(mut conn) = self.lead(&shutdown).await else {
                return;
            };
            tracing::info!("relay leads");
            let mut listener = match PgListener::connect_with(&self.pool).await {
                Ok(mut l) => match l.listen(commands::outbox_signal::CHANNEL).await {
                    Ok(()) => Some(l),
                    Err(e) => {
                        tracing::warn!(error = %e, "relay cannot listen; polling");
                        None
                    }
                },
                Err(e) => {
                    tracing::warn!(error = %e, "relay cannot listen; polling");
                    None
                }
            };
            let error = loop {
                // Cancelling mid-publish is safe: rows leave the outbox only after the publish succeeded.
                let relayed = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    relayed = self.drain(&mut conn) => relayed,
                };
                if let Err(e) = relayed {
                    break e;
                }
                let wake = async {
                    match listener.as_mut() {
                        Some(l) => {
                            let _ = l.try_recv().await;
                        }
                        None => std::future::pending::<()>().await,
                    }
                };
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = wake => {}
                    _ = tokio::time::sleep(self.poll_interval) => {}
                }
            };
            tracing::warn!(error = %error, "relay stopped leading after an error; retrying");
            let _ = conn.close().await;
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(self.poll_interval) => {}
            }
        }
    }
}
