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

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use commands::outbox_signal::LocalRelay;
use domain::StoredEvent;
use futures::future::BoxFuture;
use projections::log::{EventRow, EVENT_COLUMNS};
use sqlx::postgres::PgListener;
use sqlx::{Connection, PgConnection, PgPool};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::vacuum::QueueVacuum;

/// Where the relay publishes: Kafka or the in-process bus.
#[async_trait]
pub trait Publisher: Send + Sync {
    /// Publish a batch in order; `Ok` means every event is durably on the stream (or, in process, handled).
    async fn publish(&self, events: &[StoredEvent]) -> Result<(), PublishError>;

    /// Hand a batch over behind every batch handed over before it, returning once it is handed over with what
    /// resolves as [`Self::publish`] would; `None` when this publisher cannot keep several batches in flight.
    ///
    /// Only a publisher whose consumers see the batches in the order handed over, and handle none after one
    /// they failed, may return `Some` (the in-process bus): the relay then keeps up to [`IN_FLIGHT`] batches
    /// in flight. Kafka does not: a batch that failed after a later one was acknowledged would be sent again
    /// behind it, and a consumer that has seen an aggregate's later event skips its earlier one.
    async fn hand_over(
        &self,
        _events: &Arc<Vec<StoredEvent>>,
    ) -> Result<Option<Published>, PublishError> {
        Ok(None)
    }
}

/// What resolves once a handed-over batch is published.
pub type Published = BoxFuture<'static, Result<(), PublishError>>;

/// How many batches the relay keeps in flight on a publisher that takes them by hand-over.
///
/// The in-process bus acknowledges a batch when every consumer group has handled it, so with one batch in
/// flight every group waited for the slowest before seeing the next: the planner's notifications waited for
/// the projections of the build that caused them, and a delivery pipeline ran at the pace of its slowest
/// read model with the others idle between batches (docs/benchmarks.md).
///
/// Four kept the planner at most four small batches ahead of the projections: at 160 runs/s end to end, a
/// notification was planned 20-27 ms after its webhook, queued behind read models it does not need. Sixteen
/// (with each group's channel as deep, so that handing over never waits for a slow group) planned it 7-18 ms
/// after, and the `sendMessage` p50 went from 47-61 to 19-40 ms in three paired runs; the delivery broadcast
/// was unchanged and its peak memory 10-20 MiB higher (docs/benchmarks.md, ninth run).
pub const IN_FLIGHT: usize = 16;

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

/// A batch on its way to the stream.
struct InFlight {
    global_seqs: Vec<i64>,
    publishing: JoinHandle<Result<(), PublishError>>,
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
    /// The outbox is a queue: what the relay deletes, it has vacuumed (`crate::vacuum`).
    vacuum: QueueVacuum,
    /// The commits of this process wake the relay through this while it leads (`commands::outbox_signal`).
    local: Option<Arc<LocalRelay>>,
}

/// While alive, this process's relay leads: its commits wake it directly. Dropped on every way out of
/// leadership, a panic included.
struct Leading(Option<Arc<LocalRelay>>);

impl Leading {
    fn new(local: Option<Arc<LocalRelay>>) -> Self {
        if let Some(local) = &local {
            local.set_leading(true);
        }
        Self(local)
    }
}

impl Drop for Leading {
    fn drop(&mut self) {
        if let Some(local) = &self.0 {
            local.set_leading(false);
        }
    }
}

/// A commit in this process, where one can wake the relay; never, where none can.
async fn local_commit(local: Option<&LocalRelay>) {
    match local {
        Some(local) => local.woken().await,
        None => std::future::pending().await,
    }
}

impl Relay {
    pub fn new(pool: PgPool, publisher: Arc<dyn Publisher>) -> Self {
        Self {
            vacuum: QueueVacuum::new(pool.clone(), "outbox"),
            pool,
            publisher,
            batch_size: 2_000,
            poll_interval: Duration::from_secs(1),
            local: None,
        }
    }

    /// Be woken by this process's commits (`Commands::local_relay`) while leading, with no notice through Postgres.
    pub fn with_local(mut self, local: Arc<LocalRelay>) -> Self {
        self.local = Some(local);
        self
    }

    /// Vacuum the outbox after every `rows` deleted rows, at most once per `interval`.
    pub fn with_vacuum_every(mut self, rows: u64, interval: Duration) -> Self {
        self.vacuum = self.vacuum.with_every(rows, interval);
        self
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
    pub async fn drain(&self, conn: &mut PgConnection) -> Result<usize, RelayError> {
        self.relay(conn, None).await
    }

    /// Publish until the outbox is empty and nothing is in flight; returns how many events moved.
    ///
    /// The next batch is read while the current one is on its way to the stream, because reading and decoding a
    /// batch costs about as much as publishing it (docs/benchmarks.md). Rows leave the outbox in the order
    /// their batches were read, each only after its batch was acknowledged. With one batch in flight (Kafka),
    /// the next is handed over only after the one before it was acknowledged and cleared. With several (the
    /// in-process bus, see [`IN_FLIGHT`]), a batch read is handed over at once, and `wake` (the outbox's
    /// notice) makes rows committed while batches are in flight be read at once rather than after the oldest
    /// batch's acknowledgement. After a short batch the relay reads again only once a notice says rows were
    /// committed: at low rates each batch was followed by two reads that found nothing (docs/benchmarks.md).
    ///
    /// Neither can reorder an aggregate: the next batch leaves out only the rows in flight, and an aggregate's
    /// later event cannot be in flight while its earlier one is not, because the earlier one committed first,
    /// has the smaller `global_seq`, and so was read into the same or an earlier batch.
    async fn relay(
        &self,
        conn: &mut PgConnection,
        mut wake: Option<&mut PgListener>,
    ) -> Result<usize, RelayError> {
        let mut moved = 0;
        let mut in_flight: VecDeque<InFlight> = VecDeque::new();
        let mut room = 1;
        // A batch read but not yet handed over.
        let mut ready: Option<Vec<StoredEvent>> = None;
        // Whether the outbox may hold rows not read yet. A short batch took every row there was; with a
        // listener, rows committed since announce themselves with a notice, so until one comes there is
        // nothing to read. Without one (a drain), every turn reads.
        let mut maybe_more = true;
        loop {
            if ready.is_none() && (maybe_more || wake.is_none()) {
                let flying: Vec<i64> = in_flight
                    .iter()
                    .flat_map(|b| b.global_seqs.iter().copied())
                    .collect();
                let batch = self.read_batch(conn, &flying).await?;
                maybe_more = batch.len() as i64 >= self.batch_size;
                ready = (!batch.is_empty()).then_some(batch);
            }
            if in_flight.len() < room {
                if let Some(batch) = ready.take() {
                    let (flight, pipelined) = self.hand_over(batch).await?;
                    if pipelined {
                        room = IN_FLIGHT;
                    }
                    in_flight.push_back(flight);
                    continue;
                }
            }
            // Nothing new to read and room to send it: new rows are worth waking for, too.
            let woken_by_rows = ready.is_none() && in_flight.len() < room;
            let Some(oldest) = in_flight.front_mut() else {
                return Ok(moved);
            };
            let settled = match wake.as_mut().filter(|_| woken_by_rows) {
                Some(listener) => tokio::select! {
                    settled = &mut oldest.publishing => Some(settled),
                    notice = listener.try_recv() => {
                        if notice.is_err() {
                            // The listener is broken; the rest of this drain reads after acknowledgements only.
                            wake = None;
                        }
                        maybe_more = true;
                        None
                    }
                    () = local_commit(self.local.as_deref()) => {
                        maybe_more = true;
                        None
                    }
                },
                None => Some((&mut oldest.publishing).await),
            };
            if let Some(settled) = settled {
                if let Some(flight) = in_flight.pop_front() {
                    moved += self.clear(conn, flight.global_seqs, settled).await?;
                }
            }
        }
    }

    /// Start publishing `batch`: handed over where the publisher takes several batches (`true`), else published
    /// in a task of its own, so that serializing this batch and decoding the next use both cores.
    async fn hand_over(&self, batch: Vec<StoredEvent>) -> Result<(InFlight, bool), RelayError> {
        let global_seqs = batch.iter().map(|e| e.global_seq).collect();
        let batch = Arc::new(batch);
        let (publishing, pipelined) = match self.publisher.hand_over(&batch).await? {
            Some(published) => (tokio::spawn(published), true),
            None => {
                let publisher = self.publisher.clone();
                (
                    tokio::spawn(async move { publisher.publish(&batch).await }),
                    false,
                )
            }
        };
        let flight = InFlight {
            global_seqs,
            publishing,
        };
        Ok((flight, pipelined))
    }

    /// Clear an acknowledged batch's rows from the outbox; returns how many there were.
    async fn clear(
        &self,
        conn: &mut PgConnection,
        global_seqs: Vec<i64>,
        settled: Result<Result<(), PublishError>, tokio::task::JoinError>,
    ) -> Result<usize, RelayError> {
        settled.map_err(|e| PublishError(format!("the publishing task failed: {e}")))??;
        sqlx::query("DELETE FROM outbox WHERE global_seq = ANY($1)")
            .bind(&global_seqs)
            .execute(&mut *conn)
            .await?;
        self.vacuum.deleted(global_seqs.len() as u64);
        tracing::debug!(events = global_seqs.len(), "relayed");
        Ok(global_seqs.len())
    }

    /// The oldest `batch_size` outbox events, leaving out those in flight.
    ///
    /// The rows in flight are left out with `NOT IN` a subquery, which Postgres hashes once, not with
    /// `<> ALL(array)`, which compares every outbox row it passes with every element: with 8,000 rows in flight
    /// and as many passed, that took 273 ms a read against 6.6 ms (`EXPLAIN ANALYZE`), and was what the relay's
    /// connection spent its time on in `bench delivery`.
    async fn read_batch(
        &self,
        conn: &mut PgConnection,
        in_flight: &[i64],
    ) -> Result<Vec<StoredEvent>, sqlx::Error> {
        Ok(sqlx::query_as::<_, EventRow>(&format!(
            "SELECT {EVENT_COLUMNS} FROM outbox o JOIN events e ON e.global_seq = o.global_seq
              WHERE o.global_seq NOT IN (SELECT unnest($2::bigint[]))
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
            let leading = Leading::new(self.local.clone());
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
                    relayed = self.relay(&mut conn, listener.as_mut()) => relayed,
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
                    () = local_commit(self.local.as_deref()) => {}
                    _ = tokio::time::sleep(self.poll_interval) => {}
                }
            };
            drop(leading);
            tracing::warn!(error = %error, "relay stopped leading after an error; retrying");
            let _ = conn.close().await;
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(self.poll_interval) => {}
            }
        }
    }
}
