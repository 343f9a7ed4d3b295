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
    batch_size: i64,
    poll_interval: Duration,
}

impl Relay {
    pub fn new(pool: PgPool, publisher: Arc<dyn Publisher>) -> Self {
        Self {
            pool,
            publisher,
            batch_size: 500,
            poll_interval: Duration::from_secs(1),
        }
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

    /// Publish one batch from the outbox using the leader's connection; returns how many events moved.
    pub async fn relay_batch(&self, conn: &mut PgConnection) -> Result<usize, RelayError> {
        let events: Vec<StoredEvent> = sqlx::query_as::<_, EventRow>(&format!(
            "SELECT {EVENT_COLUMNS} FROM outbox o JOIN events e ON e.global_seq = o.global_seq
              ORDER BY o.global_seq LIMIT $1"
        ))
        .bind(self.batch_size)
        .fetch_all(&mut *conn)
        .await?
        .into_iter()
        .map(StoredEvent::from)
        .collect();
        if events.is_empty() {
            return Ok(0);
        }
        self.publisher.publish(&events).await?;
        let published: Vec<i64> = events.iter().map(|e| e.global_seq).collect();
        sqlx::query("DELETE FROM outbox WHERE global_seq = ANY($1)")
            .bind(&published)
            .execute(&mut *conn)
            .await?;
        Ok(events.len())
    }

    /// Lead and relay until `shutdown`; on any error, let go of leadership, wait and start over.
    pub async fn run(self, shutdown: CancellationToken) {
        while !shutdown.is_cancelled() {
            let Some(mut conn) = self.lead(&shutdown).await else {
                return;
            };
            tracing::info!("relay leads");
            let mut listener = match PgListener::connect_with(&self.pool).await {
                Ok(mut l) => match l.listen("herald_outbox").await {
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
                    relayed = self.relay_batch(&mut conn) => relayed,
                };
                match relayed {
                    Ok(n) if n > 0 => {
                        tracing::debug!(events = n, "relayed");
                        continue;
                    }
                    Ok(_) => {}
                    Err(e) => break e,
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
