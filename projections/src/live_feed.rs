//! `live_feed`: one row per change of a build's state, numbered in commit order, for the live-update stream.
//!
//! A client that saw `feed_seq` N and reconnects asks for everything after N. That only works if no row with a
//! smaller number can become visible after a larger one, which a Postgres sequence does not promise (a
//! transaction can draw 5, another draw 6 and commit first). So the number is `max + 1` taken under a
//! transaction-scoped advisory lock: the next writer cannot read `max` until the previous one has committed.
//! The lock serialises only writers of this table, each one short insert.

use async_trait::async_trait;
use domain::{BuildRunEvent, StoredEvent};
use sqlx::PgConnection;

use crate::{decode, Projection, ProjectionError};

/// The advisory lock key numbering feed rows (an arbitrary constant of Herald's).
const FEED_LOCK: i64 = 0x4845_5241_4c44_4645; // "HERALDFE"

pub struct LiveFeedProjection;

#[async_trait]
impl Projection for LiveFeedProjection {
    fn name(&self) -> &'static str {
        "live_feed"
    }

    fn wants(&self, aggregate_type: &str) -> bool {
        aggregate_type == "BuildRun"
    }

    /// The batch's rows are numbered in log order and inserted in one statement, under the lock.
    async fn apply_many(
        &self,
        tx: &mut PgConnection,
        events: &[&StoredEvent],
    ) -> Result<(), ProjectionError> {
        let mut rows = FeedRows::default();
        for event in events {
            rows.push(event, &decode(event)?);
        }
        if rows.global_seq.is_empty() {
            return Ok(());
        }
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(FEED_LOCK)
            .execute(&mut *tx)
            .await?;
        // A row already there (the same event applied under an older checkpoint) keeps its number, and the
        // new rows are numbered without a gap.
        sqlx::query(
            "INSERT INTO live_feed (feed_seq, global_seq, project_id, build_run_id, kind, payload, recorded_at)
             SELECT (SELECT COALESCE(max(feed_seq), 0) FROM live_feed) + row_number() OVER (ORDER BY x.n),
                    x.g, x.p, x.b, x.k, x.payload, x.r
               FROM UNNEST($1::bigint[], $2::uuid[], $3::text[], $4::text[], $5::jsonb[], $6::timestamptz[])
                    WITH ORDINALITY AS x(g, p, b, k, payload, r, n)
              WHERE NOT EXISTS (SELECT 1 FROM live_feed f WHERE f.global_seq = x.g)
             ON CONFLICT (global_seq) DO NOTHING",
        )
        .bind(&rows.global_seq)
        .bind(&rows.project_id)
        .bind(&rows.build_run_id)
        .bind(&rows.kind)
        .bind(&rows.payload)
        .bind(&rows.recorded_at)
        .execute(&mut *tx)
        .await?;
        let projects: std::collections::BTreeSet<uuid::Uuid> =
            rows.project_id.iter().copied().collect();
        crate::changes::notify_projects(tx, "live_feed", projects).await?;
        Ok(())
    }
}

/// A batch's feed rows, column by column as the insert binds them.
#[derive(Default)]
struct FeedRows<'a> {
    global_seq: Vec<i64>,
    project_id: Vec<uuid::Uuid>,
    build_run_id: Vec<&'a str>,
    kind: Vec<&'static str>,
    payload: Vec<serde_json::Value>,
    recorded_at: Vec<chrono::DateTime<chrono::Utc>>,
}

impl<'a> FeedRows<'a> {
    /// The row a change of the run's state makes; job changes make none (they carry no run, and the run's own
    /// events say what a dashboard shows).
    fn push(&mut self, event: &'a StoredEvent, build: &BuildRunEvent) {
        let (run, kind, status) = match build {
            BuildRunEvent::BuildQueued { run, .. } => (run, "build", "queued"),
            BuildRunEvent::BuildStarted { run, .. } => (run, "build", "started"),
            BuildRunEvent::BuildSucceeded { run, .. }
            | BuildRunEvent::BuildFailed { run, .. }
            | BuildRunEvent::BuildCancelled { run, .. } => (run, "build", "completed"),
            BuildRunEvent::JobQueued { .. }
            | BuildRunEvent::JobStarted { .. }
            | BuildRunEvent::JobFinished { .. } => return,
        };
        let verdict = build.verdict().map(|(_, v)| v);
        self.payload.push(serde_json::json!({
            "build_run_id": event.aggregate_id,
            "project_id": run.project_id,
            "workflow": run.workflow,
            "branch": run.branch,
            "run_number": run.run_number,
            "attempt": run.attempt,
            "commit_sha": run.commit_sha,
            "author": run.author,
            "url": run.url,
            "status": status,
            "outcome": verdict.map(|v| v.outcome.as_str()),
            "transition": verdict.map(|v| v.transition.as_str()),
            "duration_secs": verdict.and_then(|v| v.duration_secs),
            "at": event.recorded_at,
        }));
        self.global_seq.push(event.global_seq);
        self.project_id.push(run.project_id);
        self.build_run_id.push(&event.aggregate_id);
        self.kind.push(kind);
        self.recorded_at.push(event.recorded_at);
    }
}

/// One change of the live feed, as a stream sends it.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct FeedEntry {
    pub feed_seq: i64,
    pub project_id: uuid::Uuid,
    pub kind: String,
    pub payload: serde_json::Value,
}

/// Entries after `after`, oldest first, of the given projects (every project when empty).
pub async fn entries_after(
    pool: &sqlx::PgPool,
    after: i64,
    projects: &[uuid::Uuid],
    limit: i64,
) -> Result<Vec<FeedEntry>, sqlx::Error> {
    sqlx::query_as(
        "SELECT feed_seq, project_id, kind, payload FROM live_feed
          WHERE feed_seq > $1 AND (cardinality($2::uuid[]) = 0 OR project_id = ANY($2))
          ORDER BY feed_seq LIMIT $3",
    )
    .bind(after)
    .bind(projects)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// The newest entry's number (0 for an empty feed): where a client that asks for nothing old starts.
pub async fn head(pool: &sqlx::PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT COALESCE(max(feed_seq), 0) FROM live_feed")
        .fetch_one(pool)
        .await
}
