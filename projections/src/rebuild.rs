//! Rebuilding read models from the log without downtime (blue/green), and building named point-in-time
//! snapshots of them.
//!
//! A rebuild builds into a shadow schema while the live tables keep serving: the projections run unchanged,
//! on connections whose `search_path` puts the shadow schema first, so their unqualified table names land
//! there. Progress is stored after every batch (`rebuild_runs`), so a rebuild that dies resumes where it was;
//! each read model's mark (the last global sequence it applied, in the same transaction as the rows) makes
//! re-applying a batch harmless.
//!
//! A rebuild is bulk work, and is built like it: the read models that build events reach fold a whole batch in
//! memory and write each row once; per-aggregate checkpoints are written once at the end from the log, not kept
//! batch by batch; the fresh tables get their secondary indexes after they are filled; and the next batch is
//! read while the current one applies. docs/benchmarks.md has the figures behind each.
//!
//! The swap is one transaction: lock the live tables (checkpoints first, the order the live projector takes
//! them, so the two cannot deadlock), apply every event committed since the shadow's last batch, move the live
//! tables out and the shadow tables in. The live projector waits on the lock and then carries on against the new
//! tables, whose checkpoints tell it which events they already hold. No read ever sees a half-built table.

use std::time::Instant;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::postgres::PgPoolOptions;
use sqlx::{Executor, PgPool};

use domain::StoredEvent;

use crate::log::{read_settled, settled_horizon, EventRow, EVENT_COLUMNS};
use crate::{projection_named, Projector, PROJECTIONS};

const CHECKPOINTS: &str = "projection_checkpoints";
const SHADOW_SCHEMA: &str = "herald_rebuild";
const RETIRED_SCHEMA: &str = "herald_retired";
/// Memory for the sorts that build the fresh tables' indexes, for the transaction that builds them: at
/// Postgres's default (64 MB) the primary key of a million aggregates' checkpoints sorts on disk.
const MAINTENANCE_MEMORY: &str = "SET LOCAL maintenance_work_mem = '256MB'";
/// How often a rebuild records its position (and after its last batch).
const RECORD_EVERY: std::time::Duration = std::time::Duration::from_secs(1);
/// Events per rebuild batch. Measured on 150,000 events: 2,500, 5,000 and 10,000 rebuild at the same rate
/// (21.7k, 22.3k, 21.5k events/s), while peak memory grows with the batch (125, 173, 285 MiB).
pub const BATCH: i64 = 2_500;

#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Projection(#[from] crate::ProjectionError),
    #[error("{0}")]
    Invalid(String),
    #[error("another rebuild of {0} is running")]
    Busy(String),
    #[error("stopped after {0} events (as asked); run the rebuild again to resume")]
    Interrupted(u64),
}

/// Which read models to rebuild.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    All,
    One(&'static str),
}

impl Target {
    pub fn parse(raw: &str) -> Result<Self, RebuildError> {
        if raw == "all" {
            return Ok(Self::All);
        }
        PROJECTIONS
            .iter()
            .find(|p| **p == raw)
            .map(|p| Self::One(p))
            .ok_or_else(|| {
                RebuildError::Invalid(format!(
                    "unknown projection {raw:?}; one of all, {}",
                    PROJECTIONS.join(", ")
                ))
            })
    }

    fn tables(&self) -> Vec<&'static str> {
        match self {
            Self::All => PROJECTIONS.to_vec(),
            Self::One(name) => vec![name],
        }
    }

    fn as_str(&self) -> &'static str {
        match self {
            Self::All => "all",
            Self::One(name) => name,
        }
    }
}

/// A named, frozen copy of every read model as of a moment, queryable with `?as_of=<name>`.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub name: String,
    pub at: DateTime<Utc>,
}

/// The schema a snapshot lives in; names are checked so they are safe as identifiers.
pub fn snapshot_schema(name: &str) -> Result<String, RebuildError> {
    let valid = !name.is_empty()
        && name.len() <= 40
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !valid {
        return Err(RebuildError::Invalid(
            "snapshot names are 1 to 40 of a-z, 0-9 and _".into(),
        ));
    }
    Ok(format!("snapshot_{name}"))
}

/// Where a rebuild stands, as `rebuild_runs` records it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct RebuildRun {
    pub id: String,
    pub target: String,
    pub schema_name: String,
    pub as_of: Option<DateTime<Utc>>,
    pub status: String,
    pub last_global_seq: i64,
    pub head_global_seq: i64,
    pub applied: i64,
    pub events_per_second: Option<f64>,
    pub started_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub error: Option<String>,
}

pub async fn runs(pool: &PgPool) -> Result<Vec<RebuildRun>, sqlx::Error> {
    sqlx::query_as("SELECT * FROM rebuild_runs ORDER BY started_at DESC")
        .fetch_all(pool)
        .await
}

/// Options for one rebuild.
pub struct Rebuild<'a> {
    pub target: Target,
    pub snapshot: Option<Snapshot>,
    /// Called after every batch with (events applied, events in the log).
    pub progress: &'a mut (dyn FnMut(u64, u64) + Send),
    /// Stop (as a crash would) after this many events: for testing resumption.
    pub stop_after: Option<u64>,
    /// Events per batch (and per progress report); [`BATCH`] unless a test wants small steps.
    pub batch_size: Option<i64>,
}

/// A pool whose connections resolve unqualified table names in `schema` first: for `building` a rebuild's
/// shadow tables (falling back to the live ones), or else for reading a snapshot (and nothing else).
///
/// A rebuild's connections commit without waiting for the WAL flush (`synchronous_commit = off`): a rebuild
/// commits each read model's part of every batch, and waiting on the disk for each was a sixth of the
/// samples of a million-event rebuild. It stays safe to resume: the position a resumed rebuild starts from
/// (`rebuild_runs`) is committed afterwards with the usual flush, which writes every earlier commit's WAL
/// with it; a crash loses only batches that a resumed rebuild then applies again. The swap commits as usual.
async fn pool_in_schema(
    pool: &PgPool,
    schema: &str,
    building: bool,
) -> Result<PgPool, sqlx::Error> {
    let setup = if building {
        format!("SET search_path TO {schema}, public; SET synchronous_commit TO off")
    } else {
        format!("SET search_path TO {schema}")
    };
    PgPoolOptions::new()
        // One per read model applying a batch at the same time.
        .max_connections(crate::BATCH_CONCURRENCY as u32)
        .after_connect(move |conn, _| {
            let setup = setup.clone();
            Box::pin(async move {
                conn.execute(setup.as_str()).await?;
                Ok(())
            })
        })
        .connect_with((*pool.connect_options()).clone())
        .await
}

/// A read-only pool onto a snapshot, for `?as_of=`; `None` when no finished snapshot has that name.
pub async fn snapshot_pool(pool: &PgPool, name: &str) -> Result<Option<PgPool>, RebuildError> {
    let schema = snapshot_schema(name)?;
    let done: Option<String> = sqlx::query_scalar("SELECT status FROM rebuild_runs WHERE id = $1")
        .bind(format!("snapshot:{name}"))
        .fetch_optional(pool)
        .await?;
    if done.as_deref() != Some("done") {
        return Ok(None);
    }
    Ok(Some(pool_in_schema(pool, &schema, false).await?))
}

/// Run (or resume) a rebuild. Returns the number of events applied in this call.
pub async fn run(pool: &PgPool, mut options: Rebuild<'_>) -> Result<RebuildRun, RebuildError> {
    let (id, schema, as_of) = match &options.snapshot {
        Some(s) => (
            format!("snapshot:{}", s.name),
            snapshot_schema(&s.name)?,
            Some(s.at),
        ),
        None => ("live".to_owned(), SHADOW_SCHEMA.to_owned(), None),
    };
    if options.snapshot.is_some() && options.target != Target::All {
        return Err(RebuildError::Invalid(
            "a snapshot holds every read model: use target all".into(),
        ));
    }
    // One rebuild per id at a time, held on a connection of its own for the whole rebuild.
    let mut guard = pool.acquire().await?.detach();
    let key = i64::from_be_bytes(*b"hrldrbld")
        ^ id.bytes()
            .fold(0_i64, |h, b| h.wrapping_mul(31).wrapping_add(i64::from(b)));
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(key)
        .fetch_one(&mut guard)
        .await?;
    if !locked {
        return Err(RebuildError::Busy(id));
    }
    let result = run_locked(pool, &mut options, &id, &schema, as_of).await;
    if let Err(e) = &result {
        if !matches!(e, RebuildError::Interrupted(_)) {
            let _ = sqlx::query("UPDATE rebuild_runs SET status = 'failed', error = $2, updated_at = now() WHERE id = $1")
                .bind(&id)
                .bind(e.to_string())
                .execute(pool)
                .await;
        }
    }
    let _ = sqlx::Connection::close(guard).await;
    result
}

async fn run_locked(
    pool: &PgPool,
    options: &mut Rebuild<'_>,
    id: &str,
    schema: &str,
    as_of: Option<DateTime<Utc>>,
) -> Result<RebuildRun, RebuildError> {
    let tables = options.target.tables();
    let resumable: Option<(String, String)> =
        sqlx::query_as("SELECT status, target FROM rebuild_runs WHERE id = $1")
            .bind(id)
            .fetch_optional(pool)
            .await?;
    // A rebuild left by an older Herald, without marks, starts over rather than apply its batches twice.
    let marked: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
        .bind(format!("{schema}.rebuild_marks"))
        .fetch_one(pool)
        .await?;
    let resume = marked
        && matches!(&resumable, Some((status, target)) if status == "running" && target == options.target.as_str());
    if !resume {
        let mut tx = pool.begin().await?;
        sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
            .execute(&mut *tx)
            .await?;
        sqlx::query(&format!("CREATE SCHEMA {schema}"))
            .execute(&mut *tx)
            .await?;
        for table in tables.iter().chain([&CHECKPOINTS]) {
            sqlx::query(&format!(
                "CREATE TABLE {schema}.{table} (LIKE public.{table} INCLUDING ALL)"
            ))
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(&format!(
            "CREATE TABLE {schema}.rebuild_marks (projection text PRIMARY KEY, last_global_seq bigint NOT NULL)"
        ))
        .execute(&mut *tx)
        .await?;
        for index in secondary_indexes(&mut tx, schema, &tables).await? {
            sqlx::query(&format!("DROP INDEX {schema}.{}", index.name))
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(
            "INSERT INTO rebuild_runs (id, target, schema_name, as_of, status, last_global_seq, head_global_seq, applied,
                                       started_at, updated_at)
             VALUES ($1, $2, $3, $4, 'running', 0, 0, 0, now(), now())
             ON CONFLICT (id) DO UPDATE SET target = $2, schema_name = $3, as_of = $4, status = 'running',
                 last_global_seq = 0, head_global_seq = 0, applied = 0, events_per_second = NULL,
                 started_at = now(), updated_at = now(), finished_at = NULL, error = NULL",
        )
        .bind(id)
        .bind(options.target.as_str())
        .bind(schema)
        .bind(as_of)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
    }
    let (mut last, mut applied): (i64, i64) =
        sqlx::query_as("SELECT last_global_seq, applied FROM rebuild_runs WHERE id = $1")
            .bind(id)
            .fetch_one(pool)
            .await?;
    let head: i64 = sqlx::query_scalar("SELECT COALESCE(max(global_seq), 0) FROM events")
        .fetch_one(pool)
        .await?;
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(pool)
        .await?;
    let shadow = pool_in_schema(pool, schema, true).await?;
    let projector = Projector::new(
        shadow.clone(),
        tables.iter().filter_map(|t| projection_named(t)).collect(),
    );
    let started = Instant::now();
    // The checkpoints come from the log alone, not from the read models, so those of every event settled now
    // are written while the batches apply, on a core the batches leave partly idle; the few events after are
    // added at the end.
    let settled = settled_horizon(pool).await?;
    let mut checkpoints = AbortOnDrop(tokio::spawn(write_checkpoints(
        pool.clone(),
        checkpoint_pairs(pool, &projector, 0, settled).await?,
        schema.to_owned(),
        settled,
        as_of,
    )));
    let mut this_call = 0_u64;
    // When and where the position was last recorded.
    let mut recorded: Option<(Instant, i64)> = None;
    let size = options.batch_size.unwrap_or(BATCH);
    // The next batch is read while this one applies: reading and decoding is a core's worth of work that
    // otherwise waits for the read models, and the read models for it. One batch ahead, no more, so memory
    // holds two batches at most.
    let reader = LogReader {
        pool: pool.clone(),
        after: last,
        size,
        horizon: 0,
    };
    let mut pending = reader.prefetch();
    loop {
        let (reader, batch) = pending
            .await
            .map_err(|e| RebuildError::Invalid(format!("the log reader stopped: {e}")))?;
        let mut batch = batch?;
        let Some(batch_last) = batch.last().map(|e| e.global_seq) else {
            break;
        };
        pending = reader.prefetch();
        let read = batch.len();
        if let Some(at) = as_of {
            batch.retain(|e| e.recorded_at <= at);
        }
        projector.handle_rebuild_batch(&batch).await?;
        drop(batch);
        last = batch_last;
        applied += read as i64;
        this_call += read as u64;
        let stopping = options.stop_after.is_some_and(|limit| this_call >= limit);
        // The position is where a rebuild that dies resumes; the marks make any batch after it harmless to
        // apply again, so it is recorded at most once a second (a flushed commit per batch was 7 % of a
        // million-event rebuild), and when stopping.
        if stopping || recorded.is_none_or(|(at, _): (Instant, i64)| at.elapsed() >= RECORD_EVERY) {
            let rate = this_call as f64 / started.elapsed().as_secs_f64().max(1e-9);
            record_position(pool, id, last, head.max(last), applied, rate).await?;
            recorded = Some((Instant::now(), last));
        }
        (options.progress)(applied as u64, total as u64);
        if stopping {
            pending.abort();
            shadow.close().await;
            return Err(RebuildError::Interrupted(this_call));
        }
    }
    if recorded.is_some_and(|(_, at)| at != last) {
        let rate = this_call as f64 / started.elapsed().as_secs_f64().max(1e-9);
        record_position(pool, id, last, head.max(last), applied, rate).await?;
    }
    if tables.contains(&"live_feed") {
        // Each batch wrote its last change whatever its age (it carries the feed's count); what is outside the
        // window goes now, so the swapped-in feed holds what the live one holds.
        crate::live_feed::prune(&shadow, Utc::now()).await?;
    }
    shadow.close().await;
    (&mut checkpoints.0)
        .await
        .map_err(|e| RebuildError::Invalid(format!("writing the checkpoints stopped: {e}")))??;
    // The loop read past every event settled before it began, so the checkpoints claim nothing it did not
    // apply (a claim too many would make the swap's catch-up skip an event).
    if last < settled {
        return Err(RebuildError::Invalid(format!(
            "the rebuild stopped at {last}, before the log's settled end {settled}"
        )));
    }
    top_up_checkpoints(pool, &projector, schema, settled, last, as_of).await?;
    create_secondary_indexes(pool, schema, &tables).await?;

    if as_of.is_none() {
        swap(pool, &projector, schema, &tables, last).await?;
    }
    sqlx::query("UPDATE rebuild_runs SET status = 'done', finished_at = now(), updated_at = now() WHERE id = $1")
        .bind(id)
        .execute(pool)
        .await?;
    Ok(sqlx::query_as("SELECT * FROM rebuild_runs WHERE id = $1")
        .bind(id)
        .fetch_one(pool)
        .await?)
}

/// A spawned task that stops when its handle is dropped, as on every early return of a rebuild: a checkpoint
/// writer left running after its rebuild failed could commit into the table of the next attempt.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Record how far a rebuild is, for its progress report and for resuming after a crash.
async fn record_position(
    pool: &PgPool,
    id: &str,
    last: i64,
    head: i64,
    applied: i64,
    rate: f64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE rebuild_runs SET last_global_seq = $2, head_global_seq = $3, applied = $4, events_per_second = $5,
                updated_at = now() WHERE id = $1",
    )
    .bind(id)
    .bind(last)
    .bind(head)
    .bind(applied)
    .bind(rate)
    .execute(pool)
    .await?;
    Ok(())
}

/// Each (read model, aggregate)'s last sequence among the events in a range of global sequences (`$3` <
/// `global_seq` <= `$4`, and recorded up to `$5` when it is set), for the read models and aggregate types paired
/// in `$1` and `$2`: the checkpoints a rebuild writes.
const CHECKPOINTS_FROM_LOG: &str = "SELECT w.projection, e.aggregate_type, e.aggregate_id, max(e.sequence)
      FROM events e JOIN UNNEST($1::text[], $2::text[]) AS w(projection, aggregate_type)
        ON w.aggregate_type = e.aggregate_type
     WHERE e.global_seq > $3 AND e.global_seq <= $4 AND ($5::timestamptz IS NULL OR e.recorded_at <= $5)
     GROUP BY 1, 2, 3";

/// The (projection, aggregate type) pairs that get checkpoints, of the aggregate types in the log between
/// `after` and `upto` (global sequences).
async fn checkpoint_pairs(
    pool: &PgPool,
    projector: &Projector,
    after: i64,
    upto: i64,
) -> Result<(Vec<String>, Vec<String>), sqlx::Error> {
    let types: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT aggregate_type FROM events WHERE global_seq > $1 AND global_seq <= $2",
    )
    .bind(after)
    .bind(upto)
    .fetch_all(pool)
    .await?;
    Ok(projector
        .wanted_types(&types)
        .into_iter()
        .map(|(projection, aggregate_type)| (projection.to_owned(), aggregate_type.to_owned()))
        .unzip())
}

/// The per-aggregate checkpoints of every event up to `upto` (up to `as_of` for a snapshot), in one
/// transaction: the swap's catch-up and the live projector after it skip what they find here. Written once
/// rather than batch by batch, where keeping them cost as much as the read models; and into a table without
/// its primary key, which is then built once, sorted, rather than row by row.
async fn write_checkpoints(
    pool: PgPool,
    (projections, wanted): (Vec<String>, Vec<String>),
    schema: String,
    upto: i64,
    as_of: Option<DateTime<Utc>>,
) -> Result<(), sqlx::Error> {
    let table = format!("{schema}.{CHECKPOINTS}");
    let mut tx = pool.begin().await?;
    // A million aggregates do not group in the default 4 MB of `work_mem`, nor sort for the primary key in
    // the default 64 MB of `maintenance_work_mem`, without spilling to disk.
    sqlx::query("SET LOCAL work_mem = '256MB'")
        .execute(&mut *tx)
        .await?;
    sqlx::query(MAINTENANCE_MEMORY).execute(&mut *tx).await?;
    let key: Option<String> = sqlx::query_scalar(
        "SELECT conname::text FROM pg_constraint WHERE conrelid = $1::regclass AND contype = 'p'",
    )
    .bind(&table)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(key) = key {
        sqlx::query(&format!("ALTER TABLE {table} DROP CONSTRAINT {key}"))
            .execute(&mut *tx)
            .await?;
    }
    sqlx::query(&format!("DELETE FROM {table}"))
        .execute(&mut *tx)
        .await?;
    sqlx::query(&format!(
        "INSERT INTO {table} (projection, aggregate_type, aggregate_id, last_sequence) {CHECKPOINTS_FROM_LOG}"
    ))
    .bind(projections)
    .bind(wanted)
    .bind(0_i64)
    .bind(upto)
    .bind(as_of)
    .execute(&mut *tx)
    .await?;
    sqlx::query(&format!(
        "ALTER TABLE {table} ADD PRIMARY KEY (projection, aggregate_type, aggregate_id)"
    ))
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

/// Add the checkpoints of the events after `after` up to `last`: those the rebuild applied after
/// [`write_checkpoints`] had taken its horizon.
async fn top_up_checkpoints(
    pool: &PgPool,
    projector: &Projector,
    schema: &str,
    after: i64,
    last: i64,
    as_of: Option<DateTime<Utc>>,
) -> Result<(), sqlx::Error> {
    let (projections, wanted) = checkpoint_pairs(pool, projector, after, last).await?;
    if projections.is_empty() {
        return Ok(());
    }
    sqlx::query(&format!(
        "INSERT INTO {schema}.{CHECKPOINTS} (projection, aggregate_type, aggregate_id, last_sequence)
         {CHECKPOINTS_FROM_LOG}
         ON CONFLICT (projection, aggregate_type, aggregate_id)
            DO UPDATE SET last_sequence = GREATEST({CHECKPOINTS}.last_sequence, EXCLUDED.last_sequence)"
    ))
    .bind(projections)
    .bind(wanted)
    .bind(after)
    .bind(last)
    .bind(as_of)
    .execute(pool)
    .await?;
    Ok(())
}

/// An index that is not unique, as `pg_indexes` has it.
#[derive(sqlx::FromRow)]
struct SecondaryIndex {
    #[sqlx(rename = "indexname")]
    name: String,
    #[sqlx(rename = "indexdef")]
    definition: String,
}

/// The indexes of `tables` in `schema` that no statement of a projection needs to be correct: every index but
/// the primary keys and unique constraints, which `ON CONFLICT` relies on.
///
/// A rebuild drops them from its fresh tables and builds them once at the end: keeping seven indexes of
/// `build_runs` current row by row costs more than sorting each once, and none of them serves the rebuild.
async fn secondary_indexes(
    conn: &mut sqlx::PgConnection,
    schema: &str,
    tables: &[&str],
) -> Result<Vec<SecondaryIndex>, sqlx::Error> {
    sqlx::query_as(
        "SELECT i.indexname, i.indexdef FROM pg_indexes i
           JOIN pg_class c ON c.relname = i.indexname
           JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = i.schemaname
           JOIN pg_index x ON x.indexrelid = c.oid
          WHERE i.schemaname = $1 AND i.tablename = ANY($2) AND NOT x.indisunique
          ORDER BY i.tablename, i.indexname",
    )
    .bind(schema)
    .bind(tables)
    .fetch_all(conn)
    .await
}

/// Give the rebuilt tables the live tables' secondary indexes, under the live names.
async fn create_secondary_indexes(
    pool: &PgPool,
    schema: &str,
    tables: &[&str],
) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query(MAINTENANCE_MEMORY).execute(&mut *tx).await?;
    for index in secondary_indexes(&mut tx, "public", tables).await? {
        let definition = index
            .definition
            .replacen("CREATE INDEX ", "CREATE INDEX IF NOT EXISTS ", 1)
            .replacen(" ON public.", &format!(" ON {schema}."), 1);
        sqlx::query(&definition).execute(&mut *tx).await?;
    }
    tx.commit().await
}

/// The log after a point, in batches, for a rebuild.
///
/// Short transactions, not one long snapshot: a snapshot held for the whole rebuild would keep vacuum from
/// cleaning the read-model rows the rebuild updates over and over, and every update would get slower.
/// It reads up to a settled horizon, so it never passes an event that commits late, and takes a new horizon
/// when it reaches the old one; it ends when a fresh horizon brings nothing new, so what it has read is
/// everything committed then. A live rebuild catches up what commits after at the swap; a snapshot has no swap
/// and needs none. (Before the horizon, a snapshot ended with an unguarded read of whatever had committed,
/// because the old reader could hold events back behind any long transaction.)
struct LogReader {
    pool: PgPool,
    after: i64,
    size: i64,
    /// Everything up to here is settled; 0 until first asked.
    horizon: i64,
}

impl LogReader {
    /// The next batch; empty once a fresh horizon holds nothing new, that is, once everything committed when
    /// it was asked has been read.
    async fn next(&mut self) -> Result<Vec<StoredEvent>, sqlx::Error> {
        if self.after >= self.horizon {
            self.horizon = settled_horizon(&self.pool).await?;
        }
        let batch = read_settled(&self.pool, self.after, self.horizon, self.size).await?;
        if let Some(last) = batch.last() {
            self.after = last.global_seq;
        }
        Ok(batch)
    }

    /// Start reading the next batch in a task of its own; the reader comes back with it.
    fn prefetch(
        mut self,
    ) -> tokio::task::JoinHandle<(Self, Result<Vec<StoredEvent>, sqlx::Error>)> {
        tokio::spawn(async move {
            let batch = self.next().await;
            (self, batch)
        })
    }
}

/// Catch up and swap, retried when Postgres picks this transaction as a deadlock victim.
async fn swap(
    pool: &PgPool,
    projector: &Projector,
    schema: &str,
    tables: &[&'static str],
    last: i64,
) -> Result<(), RebuildError> {
    let mut attempt = 0;
    loop {
        match try_swap(pool, projector, schema, tables, last).await {
            Err(RebuildError::Database(sqlx::Error::Database(e)))
                if e.code().as_deref() == Some("40P01") && attempt < 5 =>
            {
                attempt += 1;
            }
            other => return other,
        }
    }
}

async fn try_swap(
    pool: &PgPool,
    projector: &Projector,
    schema: &str,
    tables: &[&'static str],
    last: i64,
) -> Result<(), RebuildError> {
    let all = tables.len() == PROJECTIONS.len();
    let mut tx = pool.begin().await?;
    let mut locked = vec![format!("public.{CHECKPOINTS}")];
    locked.extend(tables.iter().map(|t| format!("public.{t}")));
    sqlx::query(&format!(
        "LOCK TABLE {} IN ACCESS EXCLUSIVE MODE",
        locked.join(", ")
    ))
    .execute(&mut *tx)
    .await?;
    // Everything committed up to now, which includes everything the live projector ever applied.
    sqlx::query(&format!("SET LOCAL search_path TO {schema}, public"))
        .execute(&mut *tx)
        .await?;
    let mut after = last;
    loop {
        let rows: Vec<EventRow> = sqlx::query_as(&format!(
            "SELECT {EVENT_COLUMNS} FROM public.events e WHERE e.global_seq > $1 ORDER BY e.global_seq LIMIT $2"
        ))
        .bind(after)
        .bind(BATCH)
        .fetch_all(&mut *tx)
        .await?;
        let Some(next) = rows.last().map(|r| r.global_seq()) else {
            break;
        };
        after = next;
        for row in rows {
            projector.handle_in(&mut tx, &row.into()).await?;
        }
    }
    sqlx::query("SET LOCAL search_path TO public")
        .execute(&mut *tx)
        .await?;
    sqlx::query(&format!("DROP SCHEMA IF EXISTS {RETIRED_SCHEMA} CASCADE"))
        .execute(&mut *tx)
        .await?;
    sqlx::query(&format!("CREATE SCHEMA {RETIRED_SCHEMA}"))
        .execute(&mut *tx)
        .await?;
    for table in tables {
        sqlx::query(&format!(
            "ALTER TABLE public.{table} SET SCHEMA {RETIRED_SCHEMA}"
        ))
        .execute(&mut *tx)
        .await?;
        sqlx::query(&format!("ALTER TABLE {schema}.{table} SET SCHEMA public"))
            .execute(&mut *tx)
            .await?;
    }
    if all {
        sqlx::query(&format!(
            "ALTER TABLE public.{CHECKPOINTS} SET SCHEMA {RETIRED_SCHEMA}"
        ))
        .execute(&mut *tx)
        .await?;
        sqlx::query(&format!(
            "ALTER TABLE {schema}.{CHECKPOINTS} SET SCHEMA public"
        ))
        .execute(&mut *tx)
        .await?;
    } else {
        for table in tables {
            sqlx::query(&format!(
                "DELETE FROM public.{CHECKPOINTS} WHERE projection = $1"
            ))
            .bind(table)
            .execute(&mut *tx)
            .await?;
            sqlx::query(&format!(
                "INSERT INTO public.{CHECKPOINTS} SELECT * FROM {schema}.{CHECKPOINTS} WHERE projection = $1"
            ))
            .bind(table)
            .execute(&mut *tx)
            .await?;
        }
    }
    sqlx::query(&format!("DROP SCHEMA {RETIRED_SCHEMA} CASCADE"))
        .execute(&mut *tx)
        .await?;
    sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}
