//! The Telegram bot's inbox: every update is stored before Telegram is told it arrived, and marked handled
//! once its command has run.
//!
//! With long polling, Telegram forgets an update only when a later `getUpdates` passes an offset above it; Herald
//! passes `max(stored update_id) + 1`, so an update is forgotten by Telegram only after it is in this table.
//! With the webhook, Herald answers 200 only after the insert. Either way, a restart finds every unhandled
//! update here and runs it once; one that was handled is never run again.

use serde_json::Value;
use sqlx::PgPool;

/// Handled updates are kept this long (for "what did the bot receive"), then pruned.
const KEEP_DAYS: i32 = 7;

#[derive(Clone)]
pub struct TelegramInbox {
    pool: PgPool,
}

impl TelegramInbox {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Store updates; one seen before is ignored. Updates without an `update_id` are refused.
    pub async fn store(&self, updates: &[Value]) -> Result<usize, InboxError> {
        let mut tx = self.pool.begin().await?;
        let mut stored = 0;
        for update in updates {
            let id = update["update_id"].as_i64().ok_or(InboxError::NoUpdateId)?;
            stored += sqlx::query(
                "INSERT INTO telegram_updates (update_id, payload) VALUES ($1, $2) ON CONFLICT (update_id) DO NOTHING",
            )
            .bind(id)
            .bind(update)
            .execute(&mut *tx)
            .await?
            .rows_affected() as usize;
        }
        tx.commit().await?;
        Ok(stored)
    }

    /// The `getUpdates` offset: one past the newest stored update.
    pub async fn next_offset(&self) -> Result<i64, InboxError> {
        Ok(
            sqlx::query_scalar("SELECT COALESCE(max(update_id) + 1, 0) FROM telegram_updates")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// Unhandled updates, oldest first.
    pub async fn pending(&self, limit: i64) -> Result<Vec<(i64, Value)>, InboxError> {
        Ok(sqlx::query_as(
            "SELECT update_id, payload FROM telegram_updates WHERE handled_at IS NULL ORDER BY update_id LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn mark_handled(&self, update_id: i64) -> Result<(), InboxError> {
        sqlx::query("UPDATE telegram_updates SET handled_at = now() WHERE update_id = $1")
            .bind(update_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Drop old handled updates, keeping the newest row so the offset never goes back.
    pub async fn prune(&self) -> Result<u64, InboxError> {
        Ok(sqlx::query(
            "DELETE FROM telegram_updates WHERE handled_at < now() - make_interval(days => $1)
               AND update_id < (SELECT max(update_id) FROM telegram_updates)",
        )
        .bind(KEEP_DAYS)
        .execute(&self.pool)
        .await?
        .rows_affected())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum InboxError {
    #[error("a Telegram update without an update_id")]
    NoUpdateId,
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}
