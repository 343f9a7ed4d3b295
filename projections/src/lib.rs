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
    async fn apply(
        &self,
        tx: &mut PgConnection,
        event: &StoredEvent,
    ) -> Result<(), ProjectionError>;
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

    pub async fn handle(&self, event: &StoredEvent) -> Result<Applied, ProjectionError> {
        let mut result = Applied::default();
        for projection in &self.projections {
            if !projection.wants(&event.aggregate_type) {
                continue;
            }
            let mut tx = self.pool.begin().await?;
            if apply_one(projection.as_ref(), &mut tx, event).await? {
                tx.commit().await?;
                result.applied += 1;
            } else {
                // Ended here rather than on drop: a rollback left to the drop is only queued, and the pooled
                // connection's next `BEGIN` can find the old transaction still open.
                tx.rollback().await?;
                result.skipped += 1;
            }
        }
        Ok(result)
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
        let mut result = Applied::default();
        for projections in self.projections.chunks(BATCH_CONCURRENCY) {
            let applying = projections
                .iter()
                .map(|projection| self.apply_batch(projection.as_ref(), events));
            for applied in futures::future::try_join_all(applying).await? {
                result.applied += applied.applied;
                result.skipped += applied.skipped;
            }
        }
        Ok(result)
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
        for event in wanted {
            let key = (event.aggregate_type.clone(), event.aggregate_id.clone());
            if last.get(&key).is_some_and(|seq| event.sequence <= *seq) {
                result.skipped += 1;
                continue;
            }
            projection.apply(&mut tx, event).await?;
            last.insert(key, event.sequence);
            result.applied += 1;
        }
        last.retain(|key, seq| before.get(key) != Some(seq));
        checkpoint::store_many(&mut tx, projection.name(), &last).await?;
        tx.commit().await?;
        Ok(result)
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
