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

/// A one-time secret handed to a person (a Telegram link code, an email verification token): the plain text to
/// give them, and the hash and expiry the event log records instead.
///
/// The plain text starts with the ids it is for (`<id>[<id>]_<secret>`), so whoever presents it can be sent to
/// the right aggregate without a lookup table, and the secret part is 20 letters and digits (about 119 bits).
/// Telegram deep links allow `[A-Za-z0-9_-]` up to 64 characters: one id plus a secret fits.
pub fn one_time(
    ids: &[Uuid],
    ttl: chrono::Duration,
    now: chrono::DateTime<chrono::Utc>,
) -> (String, domain::SecretHash) {
    use rand::distributions::{Alphanumeric, DistString};
    let secret = Alphanumeric.sample_string(&mut rand::thread_rng(), 20);
    let prefix: String = ids.iter().map(|id| id.simple().to_string()).collect();
    let plain = format!("{prefix}_{secret}");
    let hash = domain::SecretHash {
        sha256: sha256_hex(&plain),
        expires_at: now + ttl,
    };
    (plain, hash)
}

/// Split a presented one-time secret into the ids it names and the hash to check; `None` when it is not
/// shaped like one.
pub fn read_one_time(plain: &str, ids: usize) -> Option<(Vec<Uuid>, String)> {
    let (prefix, secret) = plain.trim().split_once('_')?;
    if prefix.len() != ids * 32
        || secret.len() != 20
        || !secret.chars().all(|c| c.is_ascii_alphanumeric())
    {
        return None;
    }
    let ids = (0..ids)
        .map(|i| Uuid::try_parse(&prefix[i * 32..(i + 1) * 32]).ok())
        .collect::<Option<Vec<_>>>()?;
    Some((ids, sha256_hex(plain.trim())))
}

pub fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}
