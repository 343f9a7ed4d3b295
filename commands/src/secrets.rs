//! Webhook secrets: generated here, stored in `project_secrets`, never written to the event log.

use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use uuid::Uuid;

/// A fresh secret: 32 random bytes, hex encoded.
pub fn generate() -> String {
    let mut bytes = [0_u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// What the log records instead of the secret: enough to tell versions apart, useless to an attacker.
pub fn fingerprint(secret: &str) -> String {
    hex::encode(&Sha256::digest(secret.as_bytes())[..8])
}

pub async fn store(
    pool: &PgPool,
    project_id: Uuid,
    version: i32,
    secret: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO project_secrets (project_id, version, secret) VALUES ($1, $2, $3)
         ON CONFLICT (project_id, version) DO UPDATE SET secret = EXCLUDED.secret",
    )
    .bind(project_id)
    .bind(version)
    .bind(secret)
    .execute(pool)
    .await?;
    Ok(())
}

/// The secret of the given version, if any.
pub async fn load(
    pool: &PgPool,
    project_id: Uuid,
    version: i32,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT secret FROM project_secrets WHERE project_id = $1 AND version = $2")
        .bind(project_id)
        .bind(version)
        .fetch_optional(pool)
        .await
}

/// The secret of `version`, then the one before it if `version` was created less than `overlap` ago.
pub async fn load_accepted(
    pool: &PgPool,
    project_id: Uuid,
    version: i32,
    overlap: std::time::Duration,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT s.secret FROM project_secrets s
          WHERE s.project_id = $1
            AND (s.version = $2
                 OR (s.version = $2 - 1 AND EXISTS (
                        SELECT 1 FROM project_secrets c
                         WHERE c.project_id = $1 AND c.version = $2
                           AND c.created_at > now() - make_interval(secs => $3))))
          ORDER BY s.version DESC",
    )
    .bind(project_id)
    .bind(version)
    .bind(overlap.as_secs_f64())
    .fetch_all(pool)
    .await
}
