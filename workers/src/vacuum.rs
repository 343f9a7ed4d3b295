//! Queue tables vacuumed by the workers that empty them.
//!
//! The outbox and the delivery queue are queues in tables: every row is inserted, read once and deleted. Deleted
//! rows stay behind as dead rows until a `VACUUM` removes them, and the reads that pass over them (the relay's
//! oldest-first read, the delivery claim) get slower meanwhile. Autovacuum visits each database about once a
//! minute; under a burst that is tens of thousands of dead rows (sampled during `herald bench e2e`: 11,253 dead
//! beside 468 live in the outbox), and a run after an overloaded step was slower than the same rate before it.
//! Queue libraries on Postgres advise vacuuming such tables often; here the worker that deletes the rows asks
//! for a `VACUUM` once it has deleted [`QueueVacuum::with_every`] rows and at least the interval has passed, on a
//! pooled connection in the background, one at a time. `SKIP_LOCKED` leaves a table autovacuum is already at.
//! Only the table's owner (or the database's, or a superuser) may vacuum it; a role that may not is told so once
//! in the log and its vacuums stop, rather than Postgres warning every two seconds.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::PgPool;

/// One queue table's vacuum.
pub struct QueueVacuum {
    pool: PgPool,
    table: &'static str,
    /// The statement, for a table named in the code (never input).
    statement: String,
    every_rows: u64,
    interval: Duration,
    due: Mutex<Due>,
    running: Arc<AtomicBool>,
    /// Set once this role was found allowed to vacuum the table: asked of the catalog until then, not after.
    allowed: Arc<AtomicBool>,
}

/// Deleted rows counted since the last `VACUUM`, and when it started.
struct Due {
    deleted: u64,
    last: Option<Instant>,
}

impl QueueVacuum {
    /// Vacuum `table` after every 1,000 deleted rows, at most every 2 s.
    pub fn new(pool: PgPool, table: &'static str) -> Self {
        Self {
            pool,
            table,
            statement: format!("VACUUM (SKIP_LOCKED) {table}"),
            every_rows: 1_000,
            interval: Duration::from_secs(2),
            due: Mutex::new(Due {
                deleted: 0,
                last: None,
            }),
            running: Arc::new(AtomicBool::new(false)),
            allowed: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Vacuum after every `rows` deleted rows, at most once per `interval`.
    pub fn with_every(mut self, rows: u64, interval: Duration) -> Self {
        self.every_rows = rows.max(1);
        self.interval = interval;
        self
    }

    /// `rows` were deleted from the table (or will be, with the caller's commit): start a `VACUUM` if one is due.
    pub fn deleted(&self, rows: u64) {
        let mut due = self.due.lock().unwrap_or_else(|e| e.into_inner());
        due.deleted += rows;
        let rested = due.last.is_none_or(|last| last.elapsed() >= self.interval);
        if due.deleted < self.every_rows || !rested || self.running.swap(true, Ordering::SeqCst) {
            return;
        }
        *due = Due {
            deleted: 0,
            last: Some(Instant::now()),
        };
        let (pool, table, statement, running, allowed) = (
            self.pool.clone(),
            self.table,
            self.statement.clone(),
            self.running.clone(),
            self.allowed.clone(),
        );
        tokio::spawn(async move {
            if !allowed.load(Ordering::SeqCst) {
                match may_vacuum(&pool, table).await {
                    Ok(true) => allowed.store(true, Ordering::SeqCst),
                    Ok(false) => {
                        // `running` stays set: no vacuum is started again by this process.
                        tracing::info!(
                            table,
                            "this database role may not vacuum the queue table; autovacuum alone will"
                        );
                        return;
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, table, "cannot tell whether this role may vacuum")
                    }
                }
            }
            // The simple protocol: VACUUM runs outside any transaction block, and is not worth preparing.
            if let Err(e) = sqlx::raw_sql(&statement).execute(&pool).await {
                tracing::warn!(error = %e, statement, "vacuuming a queue table failed");
            }
            running.store(false, Ordering::SeqCst);
        });
    }
}

/// Whether the current role may vacuum `table`: its owner, the database's owner (or a member of either), or a
/// superuser.
async fn may_vacuum(pool: &PgPool, table: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT pg_has_role(current_user, c.relowner, 'USAGE')
             OR pg_has_role(current_user, d.datdba, 'USAGE')
             OR (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)
           FROM pg_class c, pg_database d
          WHERE c.oid = to_regclass($1) AND d.datname = current_database()",
    )
    .bind(table)
    .fetch_optional(pool)
    .await
    .map(|may| may.unwrap_or(false))
}
