use sqlx::migrate::{MigrateError, Migrator};
use sqlx::PgPool;

/// Herald's schema: the event log and outbox, command-side tables and read models (`migrations/`).
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

/// Bring the database up to date. Safe to call from every process at start: sqlx takes an advisory lock.
pub async fn migrate(pool: &PgPool) -> Result<(), MigrateError> {
    MIGRATOR.run(pool).await
}
