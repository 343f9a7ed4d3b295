//! `herald backup` / `herald restore`: the event log (and what the log deliberately does not hold: the pending
//! outbox and the webhook secrets) as gzip-compressed NDJSON files with a manifest of SHA-256 checksums.
//!
//! A backup is read in one REPEATABLE READ transaction, so every file is consistent to the same point in time
//! while Herald keeps running. A restore goes into a database with no events, verifies every checksum before it
//! writes anything, loads the log in one transaction (without re-enqueueing the events for publishing: the
//! backed-up outbox is restored as it was), and rebuilds the read models from the log.
//!
//! The secrets file is as sensitive as the database itself: keep backups where you keep database dumps.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
use domain::StoredEvent;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::{PgPool, Row};
use uuid::Uuid;

use super::progress::Progress;

/// Bumped when the layout of a backup changes; restore refuses formats it does not know.
pub const FORMAT_VERSION: u32 = 1;
const EVENTS: &str = "events.ndjson.gz";
const OUTBOX: &str = "outbox.ndjson.gz";
const SECRETS: &str = "project_secrets.ndjson.gz";
const MANIFEST: &str = "manifest.json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub name: String,
    pub sha256: String,
    pub records: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format_version: u32,
    pub herald_version: String,
    pub created_at: DateTime<Utc>,
    /// The highest `global_seq` in the backup (0 for an empty log).
    pub last_global_seq: i64,
    pub files: Vec<FileEntry>,
}

#[derive(Serialize, Deserialize)]
struct OutboxRow {
    global_seq: i64,
    enqueued_at: DateTime<Utc>,
}

#[derive(Serialize, Deserialize)]
struct SecretRow {
    project_id: Uuid,
    version: i32,
    secret: String,
    created_at: DateTime<Utc>,
}

/// Writes gzip NDJSON while hashing the compressed bytes, as the manifest records them.
struct NdjsonWriter {
    encoder: GzEncoder<HashingWriter<BufWriter<File>>>,
    records: u64,
}

struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl NdjsonWriter {
    fn create(path: &Path) -> anyhow::Result<Self> {
        let file =
            File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
        let hashing = HashingWriter {
            inner: BufWriter::new(file),
            hasher: Sha256::new(),
            bytes: 0,
        };
        Ok(Self {
            encoder: GzEncoder::new(hashing, Compression::default()),
            records: 0,
        })
    }

    fn write<T: Serialize>(&mut self, record: &T) -> anyhow::Result<()> {
        serde_json::to_writer(&mut self.encoder, record)?;
        self.encoder.write_all(b"\n")?;
        self.records += 1;
        Ok(())
    }

    fn finish(self, name: &str) -> anyhow::Result<FileEntry> {
        let mut hashing = self.encoder.finish()?;
        hashing.flush()?;
        Ok(FileEntry {
            name: name.to_owned(),
            sha256: hex::encode(hashing.hasher.finalize()),
            records: self.records,
            bytes: hashing.bytes,
        })
    }
}

/// Write a backup of `pool`'s database into the new directory `dir`.
pub async fn backup(
    pool: &PgPool,
    dir: &Path,
    progress: &mut Progress,
) -> anyhow::Result<Manifest> {
    if dir.exists() && dir.read_dir()?.next().is_some() {
        bail!(
            "{} exists and is not empty; a backup goes into a new directory",
            dir.display()
        );
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .execute(&mut *tx)
        .await?;
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&mut *tx)
        .await?;
    progress.start("backing up events", total as u64);

    let mut events = NdjsonWriter::create(&dir.join(EVENTS))?;
    let mut last = 0_i64;
    loop {
        let batch: Vec<projections::log::EventRow> = sqlx::query_as(&format!(
            "SELECT {} FROM events e WHERE e.global_seq > $1 ORDER BY e.global_seq LIMIT 5000",
            projections::log::EVENT_COLUMNS
        ))
        .bind(last)
        .fetch_all(&mut *tx)
        .await?;
        if batch.is_empty() {
            break;
        }
        for row in batch {
            let event = StoredEvent::from(row);
            last = event.global_seq;
            events.write(&event)?;
        }
        progress.set(events.records);
    }
    let mut files = vec![events.finish(EVENTS)?];

    let mut outbox = NdjsonWriter::create(&dir.join(OUTBOX))?;
    for row in sqlx::query("SELECT global_seq, enqueued_at FROM outbox ORDER BY global_seq")
        .fetch_all(&mut *tx)
        .await?
    {
        outbox.write(&OutboxRow {
            global_seq: row.try_get("global_seq")?,
            enqueued_at: row.try_get("enqueued_at")?,
        })?;
    }
    files.push(outbox.finish(OUTBOX)?);

    let mut secrets = NdjsonWriter::create(&dir.join(SECRETS))?;
    for row in sqlx::query("SELECT project_id, version, secret, created_at FROM project_secrets ORDER BY project_id, version")
        .fetch_all(&mut *tx)
        .await?
    {
        secrets.write(&SecretRow {
            project_id: row.try_get("project_id")?,
            version: row.try_get("version")?,
            secret: row.try_get("secret")?,
            created_at: row.try_get("created_at")?,
        })?;
    }
    files.push(secrets.finish(SECRETS)?);
    tx.commit().await?;

    let manifest = Manifest {
        format_version: FORMAT_VERSION,
        herald_version: env!("CARGO_PKG_VERSION").to_owned(),
        created_at: Utc::now(),
        last_global_seq: last,
        files,
    };
    std::fs::write(dir.join(MANIFEST), serde_json::to_vec_pretty(&manifest)?)?;
    progress.finish(&format!("backed up {total} events to {}", dir.display()));
    Ok(manifest)
}

/// Read and check the manifest and every file's checksum; nothing is written.
pub fn verify(dir: &Path) -> anyhow::Result<Manifest> {
    let raw = std::fs::read(dir.join(MANIFEST))
        .with_context(|| format!("{} has no {MANIFEST}: not a Herald backup", dir.display()))?;
    let manifest: Manifest = serde_json::from_slice(&raw).context("the manifest is not valid")?;
    if manifest.format_version != FORMAT_VERSION {
        bail!(
            "backup format {} is not supported (this Herald reads format {FORMAT_VERSION})",
            manifest.format_version
        );
    }
    for name in [EVENTS, OUTBOX, SECRETS] {
        let entry = manifest
            .files
            .iter()
            .find(|f| f.name == name)
            .with_context(|| format!("the manifest does not list {name}"))?;
        let mut file = File::open(dir.join(name)).with_context(|| format!("{name} is missing"))?;
        let mut hasher = Sha256::new();
        let mut buffer = vec![0_u8; 64 * 1024];
        loop {
            let n = file.read(&mut buffer)?;
            if n == 0 {
                break;
            }
            hasher.update(&buffer[..n]);
        }
        let actual = hex::encode(hasher.finalize());
        if actual != entry.sha256 {
            bail!(
                "{name} is damaged: its SHA-256 is {actual}, the manifest says {}",
                entry.sha256
            );
        }
    }
    Ok(manifest)
}

fn read_ndjson<T: serde::de::DeserializeOwned>(
    path: PathBuf,
) -> anyhow::Result<impl Iterator<Item = anyhow::Result<T>>> {
    let file = File::open(&path).with_context(|| format!("cannot open {}", path.display()))?;
    let lines = BufReader::new(GzDecoder::new(file)).lines();
    Ok(lines.map(move |line| -> anyhow::Result<T> {
        let line = line?;
        serde_json::from_str(&line)
            .with_context(|| format!("a record of {} is not valid", path.display()))
    }))
}

/// Restore the backup in `dir` into `pool`'s database, which must hold no events; then rebuild the read models.
pub async fn restore(
    pool: &PgPool,
    dir: &Path,
    progress: &mut Progress,
) -> anyhow::Result<Manifest> {
    let manifest = verify(dir)?;
    commands::migrate(pool)
        .await
        .context("cannot apply migrations")?;
    let existing: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(pool)
        .await?;
    if existing > 0 {
        bail!("the database already holds {existing} events; restore only into an empty Herald database");
    }
    let total = manifest
        .files
        .iter()
        .find(|f| f.name == EVENTS)
        .map_or(0, |f| f.records);
    progress.start("restoring events", total);

    let mut tx = pool.begin().await?;
    // The restored events were already published (or wait in the restored outbox): do not enqueue them again.
    sqlx::query("ALTER TABLE events DISABLE TRIGGER events_to_outbox")
        .execute(&mut *tx)
        .await?;
    let mut count = 0_u64;
    let mut batch: Vec<StoredEvent> = Vec::with_capacity(1000);
    for event in read_ndjson::<StoredEvent>(dir.join(EVENTS))? {
        batch.push(event?);
        if batch.len() == 1000 {
            insert_events(&mut tx, &batch).await?;
            count += batch.len() as u64;
            batch.clear();
            progress.set(count);
        }
    }
    insert_events(&mut tx, &batch).await?;
    count += batch.len() as u64;
    if count != total {
        bail!("{EVENTS} holds {count} events, the manifest says {total}");
    }
    sqlx::query("ALTER TABLE events ENABLE TRIGGER events_to_outbox")
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "SELECT setval(pg_get_serial_sequence('events', 'global_seq'), GREATEST($1, 1), $1 > 0)",
    )
    .bind(manifest.last_global_seq)
    .execute(&mut *tx)
    .await?;
    for row in read_ndjson::<OutboxRow>(dir.join(OUTBOX))? {
        let row = row?;
        sqlx::query("INSERT INTO outbox (global_seq, enqueued_at) VALUES ($1, $2)")
            .bind(row.global_seq)
            .bind(row.enqueued_at)
            .execute(&mut *tx)
            .await?;
    }
    for row in read_ndjson::<SecretRow>(dir.join(SECRETS))? {
        let row = row?;
        sqlx::query("INSERT INTO project_secrets (project_id, version, secret, created_at) VALUES ($1, $2, $3, $4)")
            .bind(row.project_id)
            .bind(row.version)
            .bind(row.secret)
            .bind(row.created_at)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    progress.finish(&format!("restored {count} events"));

    super::rebuild::rebuild_in_place(pool, progress).await?;
    Ok(manifest)
}

async fn insert_events(tx: &mut sqlx::PgConnection, events: &[StoredEvent]) -> anyhow::Result<()> {
    for event in events {
        sqlx::query(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata,
                                 global_seq, recorded_at)
             VALUES ($1, $2, $3, $4, $5, $6::json, $7::json, $8, $9)",
        )
        .bind(&event.aggregate_type)
        .bind(&event.aggregate_id)
        .bind(event.sequence)
        .bind(&event.event_type)
        .bind(&event.event_version)
        .bind(&event.payload)
        .bind(&event.metadata)
        .bind(event.global_seq)
        .bind(event.recorded_at)
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

/// Backups taken on a timer by a running Herald.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// Each backup is a new directory `herald-<UTC time>` in here.
    pub dir: PathBuf,
    pub every: std::time::Duration,
    /// How many backups to keep; older ones are deleted after a new one succeeded.
    pub keep: usize,
}

/// Parse `90s`, `15m`, `6h`, `1d` (or plain seconds).
pub fn parse_interval(raw: &str) -> Result<std::time::Duration, String> {
    let raw = raw.trim();
    let (number, unit) = raw.split_at(raw.find(|c: char| !c.is_ascii_digit()).unwrap_or(raw.len()));
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{raw:?} is not an interval like 90s, 15m, 6h or 1d"))?;
    let seconds = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => {
            return Err(format!(
                "{raw:?} is not an interval like 90s, 15m, 6h or 1d"
            ))
        }
    };
    if seconds == 0 {
        return Err("the backup interval must be at least one second".into());
    }
    Ok(std::time::Duration::from_secs(seconds))
}

/// Take a backup every `schedule.every` until `shutdown`. With several Herald processes, one takes each backup
/// (an advisory lock decides); the others skip that turn.
pub async fn run_schedule(
    pool: PgPool,
    schedule: Schedule,
    shutdown: tokio_util::sync::CancellationToken,
) {
    const LOCK: i64 = 0x6865_726c_6462_6b70;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(schedule.every) => {}
        }
        let mut conn = match pool.acquire().await {
            Ok(c) => c.detach(),
            Err(e) => {
                tracing::warn!(error = %e, "scheduled backup: no database connection");
                continue;
            }
        };
        let ours: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(LOCK)
            .fetch_one(&mut conn)
            .await
            .unwrap_or(false);
        if !ours {
            continue;
        }
        let dir = schedule.dir.join(format!(
            "herald-{}",
            Utc::now().format("%Y%m%dT%H%M%S%.3fZ")
        ));
        match backup(&pool, &dir, &mut Progress::silent()).await {
            Ok(manifest) => {
                tracing::info!(dir = %dir.display(), last_global_seq = manifest.last_global_seq, "scheduled backup written");
                prune(&schedule.dir, schedule.keep);
            }
            Err(e) => tracing::error!(dir = %dir.display(), error = %e, "scheduled backup failed"),
        }
        let _ = sqlx::Connection::close(conn).await;
    }
}

/// Keep the newest `keep` backups (names sort by time) in `dir`.
fn prune(dir: &Path, keep: usize) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut backups: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_dir()
                && p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("herald-"))
        })
        .filter(|p| p.join(MANIFEST).exists())
        .collect();
    backups.sort();
    let excess = backups.len().saturating_sub(keep.max(1));
    for old in &backups[..excess] {
        if let Err(e) = std::fs::remove_dir_all(old) {
            tracing::warn!(dir = %old.display(), error = %e, "cannot delete an old backup");
        }
    }
}
