//! API keys: `hrld_<prefix>_<secret>`, shown once, stored as an argon2 hash, revocable.
//!
//! Verifying argon2 costs tens of milliseconds by design, which would dominate every request; so a key that
//! verified is remembered for a short while under the SHA-256 of the whole key (never the key itself). Revoking
//! through this store forgets it at once; a revocation by another API process takes effect within [`CACHE_TTL`].

use std::time::Duration;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use chrono::{DateTime, Utc};
use rand::RngCore;
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use uuid::Uuid;

use super::{AuthError, Principal, Role};

/// How long a verified key is trusted without asking Postgres again.
pub const CACHE_TTL: Duration = Duration::from_secs(30);

const SCHEME: &str = "hrld_";

/// Does this credential have the shape of a Herald API key (as opposed to a JWT)?
pub fn looks_like_key(credential: &str) -> bool {
    credential.starts_with(SCHEME)
}

/// A key as listed: everything but the secret.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct KeyInfo {
    pub key_id: Uuid,
    /// The public part every use of the key shows: `hrld_<prefix>`.
    pub prefix: String,
    pub name: String,
    #[schema(value_type = Role)]
    pub role: String,
    pub projects: Vec<Uuid>,
    /// The subscriber this key stands for under `/api/v1/me`, if any.
    pub subscriber_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
}

/// A key just created: the only time the full key is available.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct NewKey {
    #[serde(flatten)]
    pub info: KeyInfo,
    /// The key. Herald keeps only its hash: store it now.
    pub key: String,
}

#[derive(Clone)]
pub struct ApiKeys {
    pool: PgPool,
    verified: moka::future::Cache<[u8; 32], Principal>,
}

impl ApiKeys {
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            verified: moka::future::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(CACHE_TTL)
                .support_invalidation_closures()
                .build(),
        }
    }

    /// Create a key. Producers need at least one project; other roles take none. A key may stand for one
    /// subscriber (whose existence the caller has checked).
    pub async fn create(&self, new: &KeySpec<'_>) -> Result<NewKey, KeyError> {
        let KeySpec {
            name,
            role,
            projects,
            subscriber_id,
            expires_at,
        } = *new;
        let name = name.trim();
        if name.is_empty() || name.len() > 100 {
            return Err(KeyError::Invalid(
                "a key needs a name of 1 to 100 characters".into(),
            ));
        }
        match (role, projects.is_empty()) {
            (Role::Producer, true) => {
                return Err(KeyError::Invalid(
                    "a producer key needs the projects it may post webhooks for".into(),
                ))
            }
            (Role::Producer, false) | (_, true) => {}
            (_, false) => {
                return Err(KeyError::Invalid(format!(
                    "only producer keys are limited to projects; a {} key sees all of them",
                    role.as_str()
                )))
            }
        }
        if expires_at.is_some_and(|t| t <= Utc::now()) {
            return Err(KeyError::Invalid("expires_at is in the past".into()));
        }
        if let Some(subscriber) = subscriber_id {
            // The log, not the read model: a subscriber registered a moment ago is already a fact there.
            let known: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM events WHERE aggregate_type = 'Subscriber' AND aggregate_id = $1)",
            )
            .bind(subscriber.to_string())
            .fetch_one(&self.pool)
            .await?;
            if !known {
                return Err(KeyError::Invalid(format!(
                    "there is no subscriber {subscriber}"
                )));
            }
        }
        let prefix = random_hex(4);
        let secret = random_hex(24);
        let key = format!("{SCHEME}{prefix}_{secret}");
        let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
        let hash = Argon2::default()
            .hash_password(key.as_bytes(), &salt)
            .map_err(|e| KeyError::Hash(e.to_string()))?
            .to_string();
        let info: KeyInfo = sqlx::query_as(
            "INSERT INTO api_keys (key_id, prefix, name, role, projects, hash, expires_at, subscriber_id)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             RETURNING key_id, 'hrld_' || prefix AS prefix, name, role, projects, subscriber_id, created_at, expires_at,
                       revoked_at, last_used_at",
        )
        .bind(Uuid::new_v4())
        .bind(&prefix)
        .bind(name)
        .bind(role.as_str())
        .bind(projects)
        .bind(&hash)
        .bind(expires_at)
        .bind(subscriber_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(NewKey { info, key })
    }

    pub async fn list(&self) -> Result<Vec<KeyInfo>, sqlx::Error> {
        sqlx::query_as(
            "SELECT key_id, 'hrld_' || prefix AS prefix, name, role, projects, subscriber_id, created_at, expires_at,
                    revoked_at, last_used_at
             FROM api_keys ORDER BY created_at, key_id",
        )
        .fetch_all(&self.pool)
        .await
    }

    /// Revoke a key; revoking a revoked key is a no-op. `None` when there is no such key.
    pub async fn revoke(&self, key_id: Uuid) -> Result<Option<KeyInfo>, sqlx::Error> {
        let info: Option<KeyInfo> = sqlx::query_as(
            "UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE key_id = $1
             RETURNING key_id, 'hrld_' || prefix AS prefix, name, role, projects, subscriber_id, created_at, expires_at,
                       revoked_at, last_used_at",
        )
        .bind(key_id)
        .fetch_optional(&self.pool)
        .await?;
        if let Some(info) = &info {
            let id = format!("key:{}", info.prefix);
            // The cache is keyed by the key's hash, which we cannot compute from the id: drop the entries of this key.
            if let Err(e) = self
                .verified
                .invalidate_entries_if(move |_, principal| principal.id == id)
            {
                tracing::warn!(error = %e, "could not forget a revoked key; it expires from the cache in 30 s");
            }
        }
        Ok(info)
    }

    /// Is there any usable key? (A fresh install has none, and says how to make one.)
    pub async fn any_active(&self) -> Result<bool, sqlx::Error> {
        sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM api_keys WHERE revoked_at IS NULL
                            AND (expires_at IS NULL OR expires_at > now()))",
        )
        .fetch_one(&self.pool)
        .await
    }

    /// The principal a presented key stands for.
    pub async fn verify(&self, key: &str) -> Result<Principal, AuthError> {
        let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        if let Some(principal) = self.verified.get(&digest).await {
            metrics::counter!("herald_cache_requests_total", "cache" => "api_keys", "result" => "hit")
                .increment(1);
            return Ok(principal);
        }
        metrics::counter!("herald_cache_requests_total", "cache" => "api_keys", "result" => "miss")
            .increment(1);
        // Concurrent first requests with the same key wait on one verification instead of each running argon2.
        self.verified
            .try_get_with(digest, self.verify_uncached(key.to_owned()))
            .await
            .map_err(|e: std::sync::Arc<AuthError>| match e.as_ref() {
                AuthError::Invalid => AuthError::Invalid,
                AuthError::Revoked => AuthError::Revoked,
                AuthError::Expired => AuthError::Expired,
                AuthError::JwtDisabled => AuthError::JwtDisabled,
                AuthError::Store(e) => AuthError::Store(sqlx::Error::Protocol(e.to_string())),
            })
    }

    async fn verify_uncached(&self, key: String) -> Result<Principal, AuthError> {
        let prefix = key
            .strip_prefix(SCHEME)
            .and_then(|rest| rest.split_once('_'))
            .map(|(prefix, _)| prefix.to_owned())
            .ok_or(AuthError::Invalid)?;
        let row: Option<StoredKey> = sqlx::query_as(
            "SELECT hash, prefix, role, projects, subscriber_id, expires_at, revoked_at FROM api_keys
             WHERE prefix = $1",
        )
        .bind(&prefix)
        .fetch_optional(&self.pool)
        .await?;
        let Some(StoredKey { hash, state }) = row else {
            return Err(AuthError::Invalid);
        };
        // argon2 takes tens of milliseconds of CPU by design: off the async workers.
        let matches = tokio::task::spawn_blocking(move || {
            PasswordHash::new(&hash).is_ok_and(|parsed| {
                Argon2::default()
                    .verify_password(key.as_bytes(), &parsed)
                    .is_ok()
            })
        })
        .await
        .unwrap_or(false);
        if !matches {
            return Err(AuthError::Invalid);
        }
        let principal = state.principal()?;
        sqlx::query("UPDATE api_keys SET last_used_at = now() WHERE prefix = $1")
            .bind(&prefix)
            .execute(&self.pool)
            .await?;
        Ok(principal)
    }
}

/// A dashboard login: the token goes into the browser's cookie and nowhere else.
#[derive(Debug, Clone)]
pub struct Session {
    pub token: String,
    pub expires_at: DateTime<Utc>,
}

impl ApiKeys {
    /// Start a dashboard session for a caller who proved an API key. Expired sessions are swept on the way.
    pub async fn start_session(
        &self,
        principal: &Principal,
        ttl: Duration,
    ) -> Result<Session, AuthError> {
        let prefix = principal
            .id
            .strip_prefix("key:")
            .and_then(|key| key.strip_prefix(SCHEME))
            .ok_or(AuthError::Invalid)?;
        let token = random_hex(32);
        let ttl_secs = i64::try_from(ttl.as_secs()).map_err(|_| AuthError::Invalid)?;
        sqlx::query("DELETE FROM dashboard_sessions WHERE expires_at < now()")
            .execute(&self.pool)
            .await?;
        let expires_at: Option<DateTime<Utc>> = sqlx::query_scalar(
            "INSERT INTO dashboard_sessions (token_hash, key_id, expires_at)
             SELECT $1, key_id, now() + $3::bigint * interval '1 second' FROM api_keys WHERE prefix = $2
             RETURNING expires_at",
        )
        .bind(session_digest(&token).as_slice())
        .bind(prefix)
        .bind(ttl_secs)
        .fetch_optional(&self.pool)
        .await?;
        let expires_at = expires_at.ok_or(AuthError::Invalid)?;
        Ok(Session { token, expires_at })
    }

    /// The principal a session cookie stands for: its key's, as long as the session lasts and the key is valid.
    pub async fn verify_session(&self, token: &str) -> Result<Principal, AuthError> {
        let digest = session_digest(token);
        if let Some(principal) = self.verified.get(&digest).await {
            return Ok(principal);
        }
        let row: Option<KeyState> = sqlx::query_as(
            "SELECT k.prefix, k.role, k.projects, k.subscriber_id, k.expires_at, k.revoked_at
             FROM dashboard_sessions s JOIN api_keys k USING (key_id)
             WHERE s.token_hash = $1 AND s.expires_at > now()",
        )
        .bind(digest.as_slice())
        .fetch_optional(&self.pool)
        .await?;
        let principal = row.ok_or(AuthError::Invalid)?.principal()?;
        self.verified.insert(digest, principal.clone()).await;
        Ok(principal)
    }

    /// Log out: the session ends here at once (other API processes forget it within [`CACHE_TTL`]).
    pub async fn end_session(&self, token: &str) -> Result<(), sqlx::Error> {
        let digest = session_digest(token);
        sqlx::query("DELETE FROM dashboard_sessions WHERE token_hash = $1")
            .bind(digest.as_slice())
            .execute(&self.pool)
            .await?;
        self.verified.invalidate(&digest).await;
        Ok(())
    }
}

/// Session tokens and API keys share the verification cache; a distinct prefix keeps their digests apart.
fn session_digest(token: &str) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(b"herald-session\0");
    hasher.update(token.as_bytes());
    hasher.finalize().into()
}

/// A key's row, as verification needs it.
#[derive(sqlx::FromRow)]
struct StoredKey {
    hash: String,
    #[sqlx(flatten)]
    state: KeyState,
}

/// What a key stands for and whether it still may: the part of its row that an API key and a session share.
#[derive(sqlx::FromRow)]
struct KeyState {
    prefix: String,
    role: String,
    projects: Vec<Uuid>,
    subscriber_id: Option<Uuid>,
    expires_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
}

impl KeyState {
    /// The caller this key makes, unless it was revoked or has expired.
    fn principal(self) -> Result<Principal, AuthError> {
        if self.revoked_at.is_some() {
            return Err(AuthError::Revoked);
        }
        if self.expires_at.is_some_and(|t| t <= Utc::now()) {
            return Err(AuthError::Expired);
        }
        Ok(Principal {
            id: format!("key:{SCHEME}{}", self.prefix),
            role: self.role.parse().map_err(|_| AuthError::Invalid)?,
            projects: self.projects,
            subscriber: self.subscriber_id,
        })
    }
}

/// What a new key is: its name, role, scope and lifetime.
#[derive(Debug, Clone, Copy)]
pub struct KeySpec<'a> {
    pub name: &'a str,
    pub role: Role,
    /// Producers only: the projects whose webhooks the key may post.
    pub projects: &'a [Uuid],
    /// The subscriber the key stands for under `/api/v1/me`.
    pub subscriber_id: Option<Uuid>,
    pub expires_at: Option<DateTime<Utc>>,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{0}")]
    Invalid(String),
    #[error("cannot hash the key: {0}")]
    Hash(String),
    #[error(transparent)]
    Store(#[from] sqlx::Error),
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0_u8; bytes];
    rand::thread_rng().fill_bytes(&mut buf);
    hex::encode(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_tokens_are_told_apart() {
        assert!(looks_like_key("hrld_0a1b2c3d_ffff"));
        assert!(!looks_like_key("eyJhbGciOiJIUzI1NiJ9.e30.sig"));
    }
}
