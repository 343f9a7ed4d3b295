//! Push delivery clients: Firebase Cloud Messaging (HTTP v1) for the Android and iOS apps, and Web Push
//! (RFC 8030, encrypted per RFC 8291, authenticated per RFC 8292) for browsers.
//!
//! Both clients turn every answer into success or a [`PushRefusal`] the delivery worker can act on: retry later
//! (429, 5xx, no answer), give up (a bad request), or give up *and* disable the contact (the token or
//! subscription no longer exists). They must never log or return a secret: the service account's private key,
//! an OAuth access token or the VAPID private key.

mod ece;
mod fcm;
mod vapid;
mod web_push;

use std::collections::BTreeMap;
use std::time::Duration;

use domain::SendFailure;

pub use fcm::{FcmClient, FcmConfig, ServiceAccount};
pub use vapid::generate_vapid_key;
pub use web_push::{WebPushClient, WebPushConfig, WebPushTarget};

/// One notification as a push service carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushMessage {
    pub title: String,
    pub body: String,
    /// Opened when the notification is clicked (the CI run's page).
    pub link: Option<String>,
    /// Extra string key/values for the app (project id, build run id, outcome...).
    pub data: BTreeMap<String, String>,
    /// The same for every attempt at one notification (Herald passes the notification id, 32 hex chars): devices
    /// and push services replace a message with the same key instead of showing it twice.
    pub collapse_key: String,
    /// How long the push service keeps it for an offline device.
    pub ttl: Duration,
}

/// Why a push was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushRefusal {
    pub failure: SendFailure,
    /// The token / subscription no longer exists (FCM UNREGISTERED, Web Push 404/410): Herald disables the
    /// contact.
    pub token_gone: bool,
}

impl PushRefusal {
    /// The service will not take this message, now or later.
    fn permanent(code: Option<u16>, description: String) -> Self {
        Self::new(code, description, false, None)
    }

    /// The recipient no longer exists: permanent, and the contact should be disabled.
    fn gone(code: Option<u16>, description: String) -> Self {
        Self {
            token_gone: true,
            ..Self::permanent(code, description)
        }
    }

    fn new(
        code: Option<u16>,
        description: String,
        retryable: bool,
        retry_after_secs: Option<u64>,
    ) -> Self {
        Self {
            failure: SendFailure {
                code: code.map(i64::from),
                description,
                retryable,
                retry_after_secs,
            },
            token_gone: false,
        }
    }

    /// The request got no answer (connection refused, reset, timed out): whether the service has the message
    /// is unknown, and trying again is the only way to find out. Both services replace a message with the same
    /// collapse key / topic, so a duplicate does not show twice.
    fn no_answer(what: &str, error: reqwest::Error) -> Self {
        let why = if error.is_timeout() {
            "timed out".to_owned()
        } else {
            // Without the URL: a Web Push endpoint is a capability, and a log is no place for it.
            let error = error.without_url();
            let mut text = error.to_string();
            let mut source = std::error::Error::source(&error);
            while let Some(e) = source {
                text.push_str(": ");
                text.push_str(&e.to_string());
                source = e.source();
            }
            text
        };
        Self::new(None, format!("{what}: no answer ({why})"), true, None)
    }
}

/// A configuration Herald cannot push with: found at start-up, not at the first notification.
#[derive(Debug, thiserror::Error)]
pub enum PushConfigError {
    #[error("the FCM service account JSON is unreadable: {0}")]
    ServiceAccountJson(#[from] serde_json::Error),
    #[error("the FCM service account's {0} is empty")]
    MissingField(&'static str),
    #[error("the FCM service account's private key is not an RSA PEM key: {0}")]
    ServiceAccountKey(String),
    #[error("the {what} URL {url:?} is not an absolute http(s) URL")]
    BadUrl { what: &'static str, url: String },
    #[error("the VAPID private key is not a PKCS#8 PEM P-256 key: {0}")]
    VapidKey(String),
    #[error("the VAPID subject {0:?} is neither a mailto: address nor an https: URL (RFC 8292)")]
    VapidSubject(String),
    #[error("cannot build the HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    #[error("the system random number generator failed")]
    Random,
}

/// The `Retry-After` header in seconds: a number of seconds, or an HTTP date (both are allowed by RFC 9110).
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<u64> {
    let value = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(secs);
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let wait = at.timestamp() - chrono::Utc::now().timestamp();
    Some(u64::try_from(wait).unwrap_or(0))
}

/// At most `max` characters of a provider's answer, for a failure's description.
fn excerpt(text: &str, max: usize) -> String {
    let text = text.trim();
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

/// A TTL as the whole seconds push services speak (a fraction of a second is not worth a header).
fn ttl_secs(ttl: Duration) -> u64 {
    ttl.as_secs()
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderMap, HeaderValue, RETRY_AFTER};

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_static("120"));
        assert_eq!(retry_after(&headers), Some(120));
        let later = (chrono::Utc::now() + chrono::Duration::seconds(300))
            .format("%a, %d %b %Y %H:%M:%S GMT")
            .to_string();
        headers.insert(RETRY_AFTER, HeaderValue::from_str(&later).unwrap());
        let secs = retry_after(&headers).unwrap();
        assert!((298..=300).contains(&secs), "{secs}");
        headers.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&headers), None);
    }

    #[test]
    fn long_answers_are_cut() {
        assert_eq!(excerpt("  abcdef ", 3), "abc…");
        assert_eq!(excerpt("abc", 3), "abc");
    }
}
