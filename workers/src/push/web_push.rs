//! The Web Push client (RFC 8030): one encrypted POST per notification to the endpoint a browser's
//! subscription named, signed with VAPID, classified into accepted, retry later, refused, or gone.
//!
//! An endpoint URL is a capability (whoever has it can push to that browser): it never goes into a failure's
//! description or a log line.

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use reqwest::header::{AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE, LOCATION};
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::ece::{self, EncryptError};
use super::vapid::Vapid;
use super::{excerpt, retry_after, ttl_secs, PushConfigError, PushMessage, PushRefusal};

#[derive(Clone)]
pub struct WebPushConfig {
    /// PKCS#8 PEM of the VAPID P-256 private key.
    pub vapid_private_key_pem: String,
    /// "mailto:ops@example.com" or an https URL (RFC 8292 `sub`): whom a push service's operator contacts.
    pub subject: String,
    pub timeout: Duration,
}

impl std::fmt::Debug for WebPushConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebPushConfig")
            .field("vapid_private_key_pem", &"<redacted>")
            .field("subject", &self.subject)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// A browser's push subscription, as `PushSubscription.toJSON()` gives it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebPushTarget {
    pub endpoint: String,
    /// The browser's P-256 public key, base64url (padding optional).
    pub p256dh: String,
    /// The 16-byte authentication secret, base64url (padding optional).
    pub auth: String,
}

impl std::fmt::Debug for WebPushTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebPushTarget")
            .field("endpoint", &"<redacted>")
            .field("p256dh", &self.p256dh)
            .finish_non_exhaustive()
    }
}

pub struct WebPushClient {
    http: reqwest::Client,
    vapid: Vapid,
}

impl std::fmt::Debug for WebPushClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebPushClient")
            .field("vapid", &self.vapid)
            .finish_non_exhaustive()
    }
}

impl WebPushClient {
    pub fn new(config: WebPushConfig) -> Result<Self, PushConfigError> {
        let vapid = Vapid::new(&config.vapid_private_key_pem, &config.subject)?;
        let http = reqwest::Client::builder().timeout(config.timeout).build()?;
        Ok(Self { http, vapid })
    }

    /// The VAPID public key (base64url uncompressed point) a browser passes as applicationServerKey.
    pub fn public_key(&self) -> String {
        self.vapid.public_key().to_owned()
    }

    /// Returns the push service's message URL (Location header) when it gave one.
    pub async fn send(
        &self,
        target: &WebPushTarget,
        message: &PushMessage,
    ) -> Result<Option<String>, PushRefusal> {
        let endpoint = reqwest::Url::parse(&target.endpoint)
            .ok()
            .filter(|url| matches!(url.scheme(), "https" | "http") && url.has_host())
            .ok_or_else(|| {
                PushRefusal::permanent(None, "Web Push: the endpoint is not an http(s) URL".into())
            })?;
        let body = encrypted_body(target, message)?;
        let origin = endpoint.origin().ascii_serialization();
        let authorization = self
            .vapid
            .authorization(&origin, chrono::Utc::now().timestamp())
            .map_err(|e| PushRefusal::new(None, format!("Web Push: VAPID: {e}"), true, None))?;

        let response = self
            .http
            .post(endpoint)
            .header(AUTHORIZATION, authorization)
            .header("TTL", ttl_secs(message.ttl))
            .header(CONTENT_ENCODING, "aes128gcm")
            .header(CONTENT_TYPE, "application/octet-stream")
            // A build result is worth waking a phone for (RFC 8030 section 5.3).
            .header("Urgency", "high")
            .header("Topic", topic(&message.collapse_key))
            .body(body)
            .send()
            .await
            .map_err(|e| PushRefusal::no_answer("Web Push", e))?;

        let status = response.status();
        if status.is_success() {
            return Ok(response
                .headers()
                .get(LOCATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned));
        }
        let wait = retry_after(response.headers());
        let text = response.text().await.unwrap_or_default();
        if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
            // The push service did not take our JWT: sign a new one next time rather than repeat this one.
            self.vapid.forget(&origin);
        }
        Err(refusal(status, wait, &text))
    }
}

/// The encrypted body for `message`, or why it cannot be built (nothing is sent then).
fn encrypted_body(target: &WebPushTarget, message: &PushMessage) -> Result<Vec<u8>, PushRefusal> {
    let keys = base64url(&target.p256dh).zip(base64url(&target.auth));
    let Some((ua_public, auth)) = keys else {
        return Err(PushRefusal::permanent(
            None,
            "Web Push: the subscription's keys are not base64url".into(),
        ));
    };
    let payload = json!({
        "title": message.title,
        "body": message.body,
        "link": message.link,
        "data": message.data,
        "tag": message.collapse_key,
    });
    let plaintext = payload.to_string().into_bytes();
    ece::encrypt(&ua_public, &auth, &plaintext).map_err(|e| match e {
        // The status a push service would answer, without asking it.
        EncryptError::TooLarge(_) => PushRefusal::permanent(Some(413), format!("Web Push: {e}")),
        EncryptError::Random => PushRefusal::new(None, format!("Web Push: {e}"), true, None),
        EncryptError::BadReceiverKey | EncryptError::BadAuthSecret(_) => {
            PushRefusal::permanent(None, format!("Web Push: {e}"))
        }
    })
}

/// Browsers hand out keys base64url-encoded, with or without padding.
fn base64url(text: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD
        .decode(text.trim().trim_end_matches('='))
        .ok()
}

/// The `Topic` header for a collapse key (RFC 8030 section 5.4: at most 32 characters of the base64url
/// alphabet). Herald's notification ids already fit; anything else is replaced by a digest, which keeps the
/// property that matters: the same key gives the same topic.
fn topic(collapse_key: &str) -> String {
    let fits = !collapse_key.is_empty()
        && collapse_key.len() <= 32
        && collapse_key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if fits {
        return collapse_key.to_owned();
    }
    let digest = ring::digest::digest(&ring::digest::SHA256, collapse_key.as_bytes());
    let mut topic = URL_SAFE_NO_PAD.encode(digest.as_ref());
    topic.truncate(32);
    topic
}

/// What a push service's refusal means for Herald (RFC 8030 sections 5 and 8, and what FCM, Mozilla autopush,
/// Apple and WNS answer in practice).
fn refusal(status: StatusCode, retry_after_secs: Option<u64>, body: &str) -> PushRefusal {
    let code = Some(status.as_u16());
    let said = excerpt(body, 200);
    let description = if said.is_empty() {
        format!("Web Push: HTTP {status}")
    } else {
        format!("Web Push: HTTP {status}: {said}")
    };
    match status.as_u16() {
        // The subscription expired or was unsubscribed: it will never work again.
        404 | 410 => PushRefusal::gone(code, description),
        429 => PushRefusal::new(code, description, true, retry_after_secs),
        500..=599 => PushRefusal::new(code, description, true, retry_after_secs),
        // 400 malformed, 401/403 VAPID refused (the subscription was made with another key, or ours is
        // wrong), 413 too large: the same request will be refused again.
        _ => PushRefusal::permanent(code, description),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_notification_id_is_its_own_topic() {
        assert_eq!(
            topic("0123456789abcdef0123456789abcdef"),
            "0123456789abcdef0123456789abcdef"
        );
    }

    #[test]
    fn other_collapse_keys_become_a_stable_32_char_topic() {
        for key in ["build:42:failed", "x".repeat(33).as_str(), "", "ünïcode"] {
            let t = topic(key);
            assert_eq!(t.len(), 32, "{key}");
            assert!(t
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
            assert_eq!(t, topic(key));
        }
        assert_ne!(topic("build:42:failed"), topic("build:43:failed"));
    }

    #[test]
    fn answers_are_classified() {
        let cases = [
            (404, None, false, true),
            (410, None, false, true),
            (429, Some(30), true, false),
            (500, None, true, false),
            (503, Some(5), true, false),
            (400, None, false, false),
            (401, None, false, false),
            (403, None, false, false),
            (413, None, false, false),
        ];
        for (status, wait, retryable, gone) in cases {
            let r = refusal(StatusCode::from_u16(status).unwrap(), wait, "nope");
            assert_eq!(r.failure.code, Some(i64::from(status)));
            assert_eq!(r.failure.retryable, retryable, "{status}");
            assert_eq!(r.token_gone, gone, "{status}");
            assert_eq!(r.failure.retry_after_secs, wait, "{status}");
            assert!(r.failure.description.contains("nope"));
        }
    }

    #[test]
    fn keys_are_read_with_or_without_padding() {
        assert_eq!(base64url("AQID"), Some(vec![1, 2, 3]));
        assert_eq!(base64url("AQ=="), Some(vec![1]));
        assert_eq!(base64url("AQ"), Some(vec![1]));
        assert_eq!(base64url("A+/"), None);
    }
}
