//! Herald's read models: the tables dashboards and the planner read, the idempotent handlers that keep them
//! from the event stream, and the queries over them.
//!
//! A read model is never a source of truth: every table here can be dropped and rebuilt from the log. Each
//! handler runs in one transaction with its checkpoint (the last aggregate sequence it applied), so applying an
//! event twice, or out of a replay, leaves the same rows.

pub mod analytics;
pub mod audit;
mod builds;
pub mod changes;
mod checkpoint;
pub mod live_feed;
pub mod log;
mod notifications;
mod projects;
pub mod queries;
pub mod rebuild;
mod series_health;
pub mod status;
mod subscribers;
mod subscriptions;
mod templates;

use async_trait::async_trait;
use domain::StoredEvent;
use sqlx::{PgConnection, PgPool};

pub use builds::BuildRunsProjection;
pub use live_feed::LiveFeedProjection;
pub use notifications::NotificationsProjection;
pub use projects::ProjectsProjection;
pub use series_health::SeriesHealthProjection;
pub use subscribers::{ContactsProjection, SubscribersProjection};
pub use subscriptions::SubscriptionsProjection;
pub use templates::{TemplateVersionsProjection, TemplatesProjection};

#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// The payload does not decode as the event its type says: a bug or a missing upcaster, never transient.
    #[error("event {aggregate_type}/{aggregate_id}#{sequence} does not decode: {source}")]
    Decode {
        aggregate_type: String,
        aggregate_id: String,
        sequence: i64,
        source: serde_json::Error,
    },
}

impl ProjectionError {
    /// Worth retrying: the database may come back; a payload that does not decode will not.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Database(_))
    }
}

pub(crate) fn decode<E: serde::de::DeserializeOwned>(
    event: &StoredEvent,
) -> Result<E, ProjectionError> {
    event.decode().map_err(|source| ProjectionError::Decode {
        aggregate_type: event.aggregate_type.clone(),
        aggregate_id: event.aggregate_id.clone(),
        sequence: event.sequence,
        source,
    })
}

/// One read model: which aggregates it listens to and how it applies one of their events.
#[async_trait]
pub trait Projection: Send + Sync {
    /// Stable name, used as the checkpoint key.
    fn name(&self) -> &'static str;
    fn wants(&self, aggregate_type: &str) -> bool;
    /// Apply one event inside the caller's transaction. Called at most once per (aggregate, sequence).
    ///
    /// A projection implements this or [`Self::apply_many`]; each defaults to the other. The read models every
    /// build event reaches implement `apply_many`, reading and writing each row once per batch, and so apply a
    /// single event as a batch of one: the live stream and a rebuild go through the same fold.
    async fn apply(
        &self,
        tx: &mut PgConnection,
        event: &StoredEvent,
    ) -> Result<(), ProjectionError> {
        self.apply_many(tx, &[event]).await
    }

    /// Apply events none of which was applied before, in log order, inside the caller's transaction; by
    /// default one at a time.
    async fn apply_many(
        &self,
        tx: &mut PgConnection,
        events: &[&StoredEvent],
    ) -> Result<(), ProjectionError> {
        for event in events {
            self.apply(tx, event).await?;
        }
        Ok(())
    }

    /// [`Self::apply_many`] for a rebuild, which reads the whole log: a read model that keeps only a window
    /// (the live feed) can leave out what is outside it there, where the live stream must not (a client
    /// following it would miss changes without being told). The same as `apply_many` unless overridden.
    async fn apply_rebuilding(
        &self,
        tx: &mut PgConnection,
        events: &[&StoredEvent],
    ) -> Result<(), ProjectionError> {
        self.apply_many(tx, events).await
    }
}

/// Postgres keeps timestamps to the microsecond (sqlx truncates when it sends one); a read model that compares
/// times in memory compares what Postgres holds.
pub(crate) fn micros(at: chrono::DateTime<chrono::Utc>) -> chrono::DateTime<chrono::Utc> {
    chrono::DurationRound::duration_trunc(at, chrono::Duration::microseconds(1)).unwrap_or(at)
}

/// What applying an event did, per projection that wanted it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Applied {
    pub applied: usize,
    /// Already applied before (a redelivery): nothing changed.
    pub skipped: usize,
}

/// How many read models apply one batch at the same time ([`Projector::handle_batch`]).
pub const BATCH_CONCURRENCY: usize = 4;

/// Applies events to a set of projections, each idempotently, each in its own transaction with its checkpoint.
pub struct Projector {
    pool: PgPool,
    projections: Vec<Box<dyn Projection>>,
}

impl Projector {
    pub fn new(pool: PgPool, projections: Vec<Box<dyn Projection>>) -> Self {
        Self { pool, projections }
    }

    /// Every read model Herald has.
    pub fn all(pool: PgPool) -> Self {
        Self::new(pool, every_projection())
    }

    /// Apply one event: a batch of one, so the read models that want it apply it side by side, each in its own
    /// transaction. One after the other, a build event's three read models were three commits in a row, and
    /// that sum was most of the projection lag at low load.
    pub async fn handle(&self, event: &StoredEvent) -> Result<Applied, ProjectionError> {
        self.handle_batch(std::slice::from_ref(event)).await
    }

    /// Apply a batch of events, one transaction per projection for the whole batch: what a rebuild and the
    /// in-process bus use, where per-event commits and checkpoint round trips would dominate. The batch's
    /// checkpoints are read in one query (rows locked), kept in memory while the batch applies, and written back
    /// in one statement, in the same transaction; so a batch applied twice still changes nothing.
    ///
    /// The read models are independent (none reads another's tables), so up to [`BATCH_CONCURRENCY`] of them
    /// apply the batch at once, each on its own connection: one projection's work is a string of round trips
    /// that leaves the cores idle (a profile of the rebuild showed the machine 59 % idle).
    pub async fn handle_batch(&self, events: &[StoredEvent]) -> Result<Applied, ProjectionError> {
        // Boxed up front: a stream of borrowing futures built lazily is not provably `Send` to the compiler.
        let applying: Vec<futures::future::BoxFuture<'_, Result<Applied, ProjectionError>>> = self
            .projections
            .iter()
            .map(|projection| Box::pin(self.apply_batch(projection.as_ref(), events)) as _)
            .collect();
        sum_concurrently(applying).await
    }

    /// One projection's part of [`Self::handle_batch`], in one transaction.
    async fn apply_batch(
        &self,
        projection: &dyn Projection,
        events: &[StoredEvent],
    ) -> Result<Applied, ProjectionError> {
        let mut result = Applied::default();
        let wanted: Vec<&StoredEvent> = events
            .iter()
            .filter(|e| projection.wants(&e.aggregate_type))
            .collect();
        if wanted.is_empty() {
            return Ok(result);
        }
        let mut tx = self.pool.begin().await?;
        let mut last = checkpoint::lock_many(&mut tx, projection.name(), &wanted).await?;
        let before = last.clone();
        let mut fresh = Vec::with_capacity(wanted.len());
        for event in wanted {
            let key = (event.aggregate_type.clone(), event.aggregate_id.clone());
            if last.get(&key).is_some_and(|seq| event.sequence <= *seq) {
                result.skipped += 1;
                continue;
            }
            last.insert(key, event.sequence);
            fresh.push(event);
        }
        result.applied = fresh.len();
        if !fresh.is_empty() {
            projection.apply_many(&mut tx, &fresh).await?;
        }
        last.retain(|key, seq| before.get(key) != Some(seq));
        checkpoint::store_many(&mut tx, projection.name(), &last).await?;
        tx.commit().await?;
        Ok(result)
    }

    /// Apply a batch of a rebuild, which reads the log in global order: one transaction per projection, as in
    /// [`Self::handle_batch`], but what a projection has applied is one number, the last global sequence it
    /// saw (table `rebuild_marks`, in the rebuild's schema), instead of a checkpoint per aggregate. Keeping
    /// those current cost as much as the read models themselves (docs/benchmarks.md); the rebuild writes them
    /// once at the end ([`rebuild`]). A batch applied again after a crash is skipped by the mark.
    pub async fn handle_rebuild_batch(
        &self,
        events: &[StoredEvent],
    ) -> Result<Applied, ProjectionError> {
        let Some(last) = events.last().map(|e| e.global_seq) else {
            return Ok(Applied::default());
        };
        let applying: Vec<futures::future::BoxFuture<'_, Result<Applied, ProjectionError>>> = self
            .projections
            .iter()
            .map(|projection| Box::pin(self.apply_marked(projection.as_ref(), events, last)) as _)
            .collect();
        sum_concurrently(applying).await
    }

    /// One projection's part of [`Self::handle_rebuild_batch`], in one transaction with its mark.
    async fn apply_marked(
        &self,
        projection: &dyn Projection,
        events: &[StoredEvent],
        last: i64,
    ) -> Result<Applied, ProjectionError> {
        let wanted: Vec<&StoredEvent> = events
            .iter()
            .filter(|e| projection.wants(&e.aggregate_type))
            .collect();
        if wanted.is_empty() {
            // Nothing to protect from a second application, so no transaction (ten read models, most of which
            // want nothing of most batches, would otherwise each commit once a batch).
            return Ok(Applied::default());
        }
        let mut tx = self.pool.begin().await?;
        let mark: Option<i64> = sqlx::query_scalar(
            "SELECT last_global_seq FROM rebuild_marks WHERE projection = $1 FOR UPDATE",
        )
        .bind(projection.name())
        .fetch_optional(&mut *tx)
        .await?;
        let mark = mark.unwrap_or(0);
        let (fresh, seen): (Vec<&StoredEvent>, Vec<&StoredEvent>) =
            wanted.into_iter().partition(|e| e.global_seq > mark);
        if !fresh.is_empty() {
            projection.apply_rebuilding(&mut tx, &fresh).await?;
        }
        sqlx::query(
            "INSERT INTO rebuild_marks (projection, last_global_seq) VALUES ($1, $2)
             ON CONFLICT (projection) DO UPDATE SET last_global_seq = GREATEST(rebuild_marks.last_global_seq, $2)",
        )
        .bind(projection.name())
        .bind(last)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Applied {
            applied: fresh.len(),
            skipped: seen.len(),
        })
    }

    /// The aggregate types each projection applies, of those given: what a rebuild writes checkpoints for.
    pub fn wanted_types<'a>(&self, types: &'a [String]) -> Vec<(&'static str, &'a str)> {
        self.projections
            .iter()
            .flat_map(|projection| {
                types
                    .iter()
                    .filter(|t| projection.wants(t))
                    .map(|t| (projection.name(), t.as_str()))
            })
            .collect()
    }

    /// Apply `event` to every projection inside the caller's transaction (a rebuild's final catch-up).
    pub async fn handle_in(
        &self,
        conn: &mut PgConnection,
        event: &StoredEvent,
    ) -> Result<Applied, ProjectionError> {
        let mut result = Applied::default();
        for projection in &self.projections {
            if !projection.wants(&event.aggregate_type) {
                continue;
            }
            if apply_one(projection.as_ref(), conn, event).await? {
                result.applied += 1;
            } else {
                result.skipped += 1;
            }
        }
        Ok(result)
    }

    /// The names of the projections, which are also the tables they own.
    pub fn names(&self) -> Vec<&'static str> {
        self.projections.iter().map(|p| p.name()).collect()
    }
}

/// Each projection's part of a batch, [`BATCH_CONCURRENCY`] at a time, summed. A slot frees as soon as a
/// projection is done, so the few that build events reach run side by side rather than each waiting for a
/// fixed group to finish.
async fn sum_concurrently(
    applying: Vec<futures::future::BoxFuture<'_, Result<Applied, ProjectionError>>>,
) -> Result<Applied, ProjectionError> {
    use futures::{StreamExt, TryStreamExt};
    futures::stream::iter(applying)
        .buffer_unordered(BATCH_CONCURRENCY)
        .try_fold(Applied::default(), |total, applied| async move {
            Ok(Applied {
                applied: total.applied + applied.applied,
                skipped: total.skipped + applied.skipped,
            })
        })
        .await
}

/// Apply one event to one projection with its checkpoint; `false` when it was applied before.
async fn apply_one(
    projection: &dyn Projection,
    conn: &mut PgConnection,
    event: &StoredEvent,
) -> Result<bool, ProjectionError> {
    let last = checkpoint::lock(conn, projection.name(), event).await?;
    if last.is_some_and(|last| event.sequence <= last) {
        return Ok(false);
    }
    projection.apply(conn, event).await?;
    checkpoint::advance(conn, projection.name(), event).await?;
    Ok(true)
}

/// A projection by name, for rebuilding one read model.
pub fn projection_named(name: &str) -> Option<Box<dyn Projection>> {
    every_projection().into_iter().find(|p| p.name() == name)
}

fn every_projection() -> Vec<Box<dyn Projection>> {
    vec![
        Box::new(ProjectsProjection),
        Box::new(BuildRunsProjection),
        Box::new(SubscribersProjection),
        Box::new(ContactsProjection),
        Box::new(SubscriptionsProjection),
        Box::new(NotificationsProjection),
        Box::new(TemplatesProjection),
        Box::new(TemplateVersionsProjection),
        Box::new(LiveFeedProjection),
        Box::new(SeriesHealthProjection),
    ]
}

/// The names of every projection (each owns the table of the same name).
pub const PROJECTIONS: [&str; 10] = [
    "projects",
    "build_runs",
    "subscribers",
    "contacts",
    "subscriptions",
    "notifications",
    "templates",
    "template_versions",
    "live_feed",
    "series_health",
];
