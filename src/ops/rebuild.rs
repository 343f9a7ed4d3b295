//! Rebuilding read models from the log.

use anyhow::Context;
use sqlx::PgPool;

use super::progress::Progress;

/// The tables every projection writes, cleared before an in-place rebuild.
const READ_MODEL_TABLES: &str =
    "projects, build_runs, subscriptions, notifications, projection_checkpoints";

/// Rebuild every read model in place: clear them and apply the whole log again. Only for a database nobody reads
/// yet (a restore); a live system rebuilds into shadow tables instead.
pub async fn rebuild_in_place(pool: &PgPool, progress: &mut Progress) -> anyhow::Result<u64> {
    sqlx::query(&format!("TRUNCATE {READ_MODEL_TABLES}"))
        .execute(pool)
        .await
        .context("cannot clear the read models")?;
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(pool)
        .await?;
    progress.start("rebuilding read models", total as u64);
    let projector = projections::Projector::all(pool.clone());
    let mut applied = 0_u64;
    // Nothing else writes this database while it is restored, so reading it page by page in short transactions
    // sees all of it (and lets vacuum keep up with the rows the rebuild updates).
    let mut after = 0_i64;
    loop {
        let batch = projections::log::read_page(pool, after, 2000).await?;
        let Some(last) = batch.last() else { break };
        after = last.global_seq;
        projector.handle_batch(&batch).await?;
        applied += batch.len() as u64;
        progress.set(applied);
    }
    progress.finish(&format!("rebuilt the read models from {applied} events"));
    Ok(applied)
}
