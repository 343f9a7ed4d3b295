//! `live_feed`: one row per change of a build's state, numbered in commit order, for the live-update stream.
//!
//! A client that saw `feed_seq` N and reconnects asks for everything after N. That only works if no row with a
//! smaller number can become visible after a larger one, which a Postgres sequence does not promise (a
//! transaction can draw 5, another draw 6 and commit first). So the number is `max + 1` taken under a
//! transaction-scoped advisory lock: the next writer cannot read `max` until the previous one has committed.
//! The lock serialises only writers of this table, each one short insert.
//!
//! **Retention.** The feed serves clients catching up after a reconnect, which need the recent past only, so it
//! keeps a window ([`retention`], `HERALD_LIVE_FEED_RETENTION_HOURS`, a day by default): [`prune`] deletes
//! older rows, oldest first and never the newest. A rebuild, which reads the whole log, writes no row for a
//! change recorded before the window (a million-event rebuild wrote a million feed rows, most of its writes:
//! docs/benchmarks.md), but still counts it: the last change of each batch is written whatever its age, so
//! `max + 1` keeps counting across what was left out, and the rebuilt feed numbers its rows as a feed that
//! applied the log in log order did. The live stream writes every change it is given, old or not: a client
//! following it must never miss a change without being told, and the pruner takes old rows away soon enough.
//! A client that asks for changes after a number the pruner has passed is told so (`api::live`).
//!
//! Through Kafka with several partitions, the live feed numbers changes in the order they were applied,
//! which can differ from log order for changes of different runs committed a moment apart; a rebuild numbers
//! them in log order, so across a rebuild such a pair can swap numbers (as before the window existed).

use std::sync::atomic::{AtomicI64, Ordering};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use domain::{BuildRunEvent, StoredEvent};
use sqlx::{PgConnection, PgPool};

use crate::{decode, Projection, ProjectionError};

/// The advisory lock key numbering feed rows (an arbitrary constant of Herald's).
const FEED_LOCK: i64 = 0x4845_5241_4c44_4645; // "HERALDFE"

/// How long the feed keeps a change, unless configured: a day.
pub const DEFAULT_RETENTION: chrono::Duration = chrono::Duration::hours(24);

/// The window in seconds. One number for the whole process, set once at start-up from the configuration
/// ([`set_retention`]): every rebuild and pruner of a process uses the same window, and threading one number
/// through each of their callers (the command line, the API's rebuild endpoint, backups' restore) would change
/// every one of them for nothing they choose.
static RETENTION_SECS: AtomicI64 = AtomicI64::new(DEFAULT_RETENTION.num_seconds());

/// Set the feed's window for this process.
pub fn set_retention(window: chrono::Duration) {
    RETENTION_SECS.store(window.num_seconds().max(1), Ordering::Relaxed);
}

/// The feed's window.
pub fn retention() -> chrono::Duration {
    chrono::Duration::seconds(RETENTION_SECS.load(Ordering::Relaxed))
}

/// Changes recorded before this make no row and are pruned.
fn cutoff(now: DateTime<Utc>) -> DateTime<Utc> {
    now - retention()
}

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
        write(tx, FeedRows::of(events, None)?).await
    }

    /// As [`Self::apply_many`], leaving out the changes recorded before the window but counting them.
    async fn apply_rebuilding(
        &self,
        tx: &mut PgConnection,
        events: &[&StoredEvent],
    ) -> Result<(), ProjectionError> {
        write(tx, FeedRows::of(events, Some(cutoff(Utc::now())))?).await
    }
}

async fn write(tx: &mut PgConnection, rows: FeedRows<'_>) -> Result<(), ProjectionError> {
    if rows.global_seq.is_empty() {
        return Ok(());
    }
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(FEED_LOCK)
        .execute(&mut *tx)
        .await?;
    // A row already there (the same event applied under an older checkpoint) keeps its number; a new row takes
    // the number its place among the batch's changes gives it, left-out ones counted. Planned for the rows
    // given, every time: a plan cached while the feed was small reads all of it (why: LOAD_MANY in
    // commands/src/event_log.rs).
    sqlx::query(
        "INSERT INTO live_feed (feed_seq, global_seq, project_id, build_run_id, kind, payload, recorded_at)
         SELECT (SELECT COALESCE(max(feed_seq), 0) FROM live_feed) + x.place,
                x.g, x.p, x.b, x.k, x.payload, x.r
           FROM UNNEST($1::bigint[], $2::uuid[], $3::text[], $4::text[], $5::jsonb[], $6::timestamptz[],
                       $7::bigint[]) AS x(g, p, b, k, payload, r, place)
          WHERE NOT EXISTS (SELECT 1 FROM live_feed f WHERE f.global_seq = x.g)
         ON CONFLICT (global_seq) DO NOTHING",
    )
    .persistent(false)
    .bind(&rows.global_seq)
    .bind(&rows.project_id)
    .bind(&rows.build_run_id)
    .bind(&rows.kind)
    .bind(&rows.payload)
    .bind(&rows.recorded_at)
    .bind(&rows.place)
    .execute(&mut *tx)
    .await?;
    let projects: std::collections::BTreeSet<uuid::Uuid> =
        rows.project_id.iter().copied().collect();
    crate::changes::notify_projects(tx, "live_feed", projects).await?;
    Ok(())
}

/// Whether an event changes a run's state (and so makes a feed row), told from its type without decoding it:
/// job changes make none (they carry no run, and the run's own events say what a dashboard shows).
fn is_change(event_type: &str) -> bool {
    matches!(
        event_type,
        "BuildQueued" | "BuildStarted" | "BuildSucceeded" | "BuildFailed" | "BuildCancelled"
    )
}

/// A batch's feed rows, column by column as the insert binds them.
#[derive(Default)]
struct FeedRows<'a> {
    global_seq: Vec<i64>,
    project_id: Vec<uuid::Uuid>,
    build_run_id: Vec<&'a str>,
    kind: Vec<&'static str>,
    payload: Vec<serde_json::Value>,
    recorded_at: Vec<DateTime<Utc>>,
    /// Each row's place among the batch's changes, from 1: what it adds to the feed's number.
    place: Vec<i64>,
}

impl<'a> FeedRows<'a> {
    /// The rows of a batch's changes: every one, or with a `cutoff` those recorded at or after it and the
    /// batch's last change whatever its age (it carries the count of the ones left out into the numbering).
    fn of(
        events: &[&'a StoredEvent],
        cutoff: Option<DateTime<Utc>>,
    ) -> Result<Self, ProjectionError> {
        let changes: Vec<&StoredEvent> = events
            .iter()
            .copied()
            .filter(|e| is_change(&e.event_type))
            .collect();
        let mut rows = Self::default();
        for (index, event) in changes.iter().enumerate() {
            let expired = cutoff.is_some_and(|cutoff| event.recorded_at < cutoff);
            if expired && index + 1 < changes.len() {
                continue;
            }
            rows.push(event, &decode(event)?, index as i64 + 1);
        }
        Ok(rows)
    }

    fn push(&mut self, event: &'a StoredEvent, build: &BuildRunEvent, place: i64) {
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
        self.place.push(place);
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

/// Up to `limit` entries after `after`, oldest first, of the given projects (every project when empty), and
/// the oldest entry's number, read together: a client whose `after` is older than that missed pruned changes,
/// and the two must come from one moment for the client to be told.
pub async fn page_after(
    pool: &PgPool,
    after: i64,
    projects: &[uuid::Uuid],
    limit: i64,
) -> Result<(Option<i64>, Vec<FeedEntry>), sqlx::Error> {
    type Row = (
        Option<i64>,
        Option<i64>,
        Option<uuid::Uuid>,
        Option<String>,
        Option<serde_json::Value>,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "WITH page AS (SELECT feed_seq, project_id, kind, payload FROM live_feed
                        WHERE feed_seq > $1 AND (cardinality($2::uuid[]) = 0 OR project_id = ANY($2))
                        ORDER BY feed_seq LIMIT $3)
         SELECT (SELECT min(feed_seq) FROM live_feed), p.feed_seq, p.project_id, p.kind, p.payload
           FROM (VALUES (1)) AS one(x) LEFT JOIN page p ON true
          ORDER BY p.feed_seq",
    )
    .bind(after)
    .bind(projects)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    let oldest = rows.first().and_then(|row| row.0);
    let entries = rows
        .into_iter()
        .filter_map(|(_, feed_seq, project_id, kind, payload)| {
            Some(FeedEntry {
                feed_seq: feed_seq?,
                project_id: project_id?,
                kind: kind?,
                payload: payload?,
            })
        })
        .collect();
    Ok((oldest, entries))
}

/// The newest entry's number (0 for an empty feed): where a client that asks for nothing old starts.
pub async fn head(pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT COALESCE(max(feed_seq), 0) FROM live_feed")
        .fetch_one(pool)
        .await
}

/// Rows [`prune`] deletes per statement, so that no statement holds many row locks for long.
const PRUNE_CHUNK: i64 = 5_000;

/// Delete the rows recorded before the window as of `now`, oldest first, a chunk per statement, and return how
/// many went. The newest row stays whatever its age: the next number is counted from it.
///
/// Only a run of expired rows at the front goes, up to the first row still inside the window: the feed must
/// never have a hole that a client resuming before it could not see (`oldest` tells a client what was pruned).
/// Rows are numbered in commit order, so their times rise with their numbers up to the spread of concurrent
/// commits; a row recorded a moment earlier than the one before it waits until that one expires too. Walking
/// the primary key from the front, and stopping at the first kept row, needs no index on the time (which every
/// insert would pay for).
pub async fn prune(pool: &PgPool, now: DateTime<Utc>) -> Result<u64, sqlx::Error> {
    let cutoff = cutoff(now);
    let mut pruned = 0;
    loop {
        let (front, deleted): (i64, i64) = sqlx::query_as(
            "WITH front AS (SELECT feed_seq, recorded_at FROM live_feed ORDER BY feed_seq LIMIT $2),
                  stop AS (SELECT least((SELECT min(feed_seq) FROM front WHERE recorded_at >= $1),
                                        (SELECT max(feed_seq) FROM live_feed)) AS seq),
                  gone AS (DELETE FROM live_feed
                            WHERE feed_seq IN (SELECT feed_seq FROM front)
                              AND feed_seq < (SELECT seq FROM stop)
                           RETURNING 1)
             SELECT (SELECT count(*) FROM front), (SELECT count(*) FROM gone)",
        )
        .bind(cutoff)
        .bind(PRUNE_CHUNK)
        .fetch_one(pool)
        .await?;
        pruned += deleted as u64;
        if front < PRUNE_CHUNK || deleted < front {
            return Ok(pruned);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::{BuildRunEvent, RunInfo};

    fn run() -> RunInfo {
        RunInfo {
            project_id: uuid::Uuid::from_u128(7),
            provider: "github".into(),
            repository: "acme/app".into(),
            workflow: "ci".into(),
            branch: Some("main".into()),
            tag: None,
            pull_request: None,
            run_id: 1,
            run_key: None,
            run_number: Some(1),
            attempt: 1,
            commit_sha: None,
            commit_message: None,
            author: None,
            url: None,
        }
    }

    fn stored(
        global_seq: i64,
        event_type: &str,
        payload: serde_json::Value,
        recorded_at: DateTime<Utc>,
    ) -> StoredEvent {
        StoredEvent {
            global_seq,
            aggregate_type: "BuildRun".into(),
            aggregate_id: "run".into(),
            sequence: global_seq,
            event_type: event_type.into(),
            event_version: domain::upcast::current_version(event_type).into(),
            payload,
            metadata: serde_json::Value::Null,
            recorded_at,
        }
    }

    #[test]
    fn expired_changes_keep_their_places_and_only_the_last_of_them_is_written() {
        let now = Utc::now();
        let old = now - chrono::Duration::days(3);
        let queued = |seq, at| {
            let event = BuildRunEvent::BuildQueued {
                delivery_id: "d".into(),
                run: run(),
                queued_at: at,
            };
            stored(seq, "BuildQueued", serde_json::to_value(event).unwrap(), at)
        };
        let events = [
            queued(1, old),
            // A job's change: no row, no place (and never decoded).
            stored(2, "JobStarted", serde_json::Value::Null, old),
            queued(3, old),
            queued(4, now),
            queued(5, old),
        ];
        let refs: Vec<&StoredEvent> = events.iter().collect();
        let rows = FeedRows::of(&refs, Some(cutoff(now))).unwrap();
        // The job change makes no row and takes no place; 1 and 3 are expired and written by no one; 4 is in
        // the window; 5 is expired but last, so the feed's count reaches four.
        assert_eq!(rows.global_seq, [4, 5]);
        assert_eq!(rows.place, [3, 4]);

        let fresh: Vec<&StoredEvent> = events[..4].iter().collect();
        assert_eq!(FeedRows::of(&fresh, Some(cutoff(now))).unwrap().place, [3]);
        // The live stream writes every change it is given.
        assert_eq!(FeedRows::of(&refs, None).unwrap().place, [1, 2, 3, 4]);
        assert!(FeedRows::of(&[&events[1]], Some(cutoff(now)))
            .unwrap()
            .place
            .is_empty());
    }

    #[test]
    fn a_change_is_told_from_its_type_as_the_decoded_event_would_tell_it() {
        for (event_type, change) in [
            ("BuildQueued", true),
            ("BuildStarted", true),
            ("BuildSucceeded", true),
            ("BuildFailed", true),
            ("BuildCancelled", true),
            ("JobQueued", false),
            ("JobStarted", false),
            ("JobFinished", false),
        ] {
            assert_eq!(is_change(event_type), change, "{event_type}");
        }
    }
}
