//! One-click unsubscribe links (RFC 8058): the token in the `List-Unsubscribe` URL of every notification email.
//!
//! A token is the subscription id and an HMAC of it under a server secret, so the link needs no table of issued
//! links, never expires (a person may click a months-old email), and cannot be made up for someone else's
//! subscription. The secret lives in `server_secrets`, never in the event log or the configuration, so it
//! survives restarts and is shared by every Herald process on the database.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use sqlx::PgPool;
use subtle::ConstantTimeEq;
use uuid::Uuid;

/// The row of `server_secrets` that holds the signing key.
const KEY_NAME: &str = "unsubscribe";
/// What is signed besides the id, so a MAC made for another purpose with the same key can never pass here.
const DOMAIN: &[u8] = b"unsubscribe:";
/// Bytes of the MAC kept in a token: 128 bits, beyond guessing, and the link stays short.
const MAC_LEN: usize = 16;

/// The key unsubscribe tokens are signed with, created on first use.
///
/// Every process may call this at the same time on a fresh database: each proposes a random key, the first
/// insert wins (`ON CONFLICT DO NOTHING`), and all of them read back the winner, so they agree.
pub async fn signing_key(pool: &PgPool) -> Result<[u8; 32], sqlx::Error> {
    let mut proposed = [0_u8; 32];
    rand::thread_rng().fill_bytes(&mut proposed);
    sqlx::query(
        "INSERT INTO server_secrets (name, secret) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
    )
    .bind(KEY_NAME)
    .bind(proposed.as_slice())
    .execute(pool)
    .await?;
    let stored: Vec<u8> = sqlx::query_scalar("SELECT secret FROM server_secrets WHERE name = $1")
        .bind(KEY_NAME)
        .fetch_one(pool)
        .await?;
    <[u8; 32]>::try_from(stored.as_slice()).map_err(|_| {
        sqlx::Error::Decode(
            format!(
                "server_secrets.{KEY_NAME} holds {} bytes, expected 32",
                stored.len()
            )
            .into(),
        )
    })
}

fn mac(key: &[u8; 32], subscription_id: Uuid) -> [u8; MAC_LEN] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(DOMAIN);
    mac.update(subscription_id.as_bytes());
    let full = mac.finalize().into_bytes();
    let mut short = [0_u8; MAC_LEN];
    short.copy_from_slice(&full[..MAC_LEN]);
    short
}

/// The token for a subscription: base64url (no padding) of the 16 id bytes followed by the first 16 bytes of
/// HMAC-SHA256(key, "unsubscribe:" ‖ id bytes). 43 characters, safe in a URL path as it is.
pub fn token(key: &[u8; 32], subscription_id: Uuid) -> String {
    let mut bytes = [0_u8; 16 + MAC_LEN];
    bytes[..16].copy_from_slice(subscription_id.as_bytes());
    bytes[16..].copy_from_slice(&mac(key, subscription_id));
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The subscription a token names, if the token was made with `key`; `None` for anything else (altered,
/// truncated, made with another key, not base64url). The MAC is compared in constant time, so timing does not
/// tell an attacker how much of a forged token was right.
pub fn verify(key: &[u8; 32], token: &str) -> Option<Uuid> {
    let bytes = URL_SAFE_NO_PAD.decode(token.trim()).ok()?;
    if bytes.len() != 16 + MAC_LEN {
        return None;
    }
    let subscription_id = Uuid::from_slice(&bytes[..16]).ok()?;
    let expected = mac(key, subscription_id);
    bool::from(expected.ct_eq(&bytes[16..])).then_some(subscription_id)
}

/// The one-click unsubscribe URL for `List-Unsubscribe`: `{public_url}/api/v1/unsubscribe/{token}`.
pub fn unsubscribe_url(public_url: &str, token: &str) -> String {
    format!(
        "{}/api/v1/unsubscribe/{token}",
        public_url.trim_end_matches('/')
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 32] = [7; 32];

    #[test]
    fn a_token_names_its_subscription_under_its_key_only() {
        let id = Uuid::new_v4();
        let token = token(&KEY, id);
        assert_eq!(token.len(), 43);
        assert!(token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_eq!(verify(&KEY, &token), Some(id));
        assert_eq!(verify(&[8; 32], &token), None);
        assert_eq!(super::token(&KEY, id), token, "deterministic");
        assert_ne!(super::token(&KEY, Uuid::new_v4()), token);
    }

    #[test]
    fn an_altered_or_malformed_token_names_nothing() {
        let id = Uuid::from_u128(42);
        let good = token(&KEY, id);
        for i in 0..good.len() {
            let mut bytes = good.clone().into_bytes();
            bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
            let altered = String::from_utf8(bytes).unwrap();
            // The last character carries only 4 significant bits; a change there may decode to the same bytes.
            if URL_SAFE_NO_PAD.decode(&altered).ok() == URL_SAFE_NO_PAD.decode(&good).ok() {
                continue;
            }
            assert_eq!(verify(&KEY, &altered), None, "altered at {i}");
        }
        // Another subscription's id with this one's MAC.
        let mut swapped = URL_SAFE_NO_PAD.decode(&good).unwrap();
        swapped[..16].copy_from_slice(Uuid::from_u128(43).as_bytes());
        assert_eq!(verify(&KEY, &URL_SAFE_NO_PAD.encode(swapped)), None);
        for bad in [
            "",
            "short",
            &good[..42],
            &format!("{good}A"),
            "!!!!",
            &"A".repeat(43),
        ] {
            assert_eq!(verify(&KEY, bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_url_joins_the_public_url_and_the_token() {
        assert_eq!(
            unsubscribe_url("https://herald.example.com/", "abc"),
            "https://herald.example.com/api/v1/unsubscribe/abc"
        );
        assert_eq!(
            unsubscribe_url("http://h.test", "abc"),
            "http://h.test/api/v1/unsubscribe/abc"
        );
    }
}
