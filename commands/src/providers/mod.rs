//! CI providers: how each one authenticates its webhooks, names its events and deliveries, and how its payloads
//! map onto Herald's one [`BuildEvent`] shape.
//!
//! Every normalizer is a pure function of the body: no I/O, no clock (the receive time comes in), so each can be
//! tested against the providers' own payload examples and fuzzed.

pub mod circleci;
pub mod generic;
pub mod github;
pub mod gitlab;
pub mod jenkins;

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use domain::{BuildEvent, BuildStatus, Outcome};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use uuid::Uuid;

/// The parts of an HTTP request a provider looks at. Header names are lower case.
#[derive(Debug, Clone, Copy)]
pub struct WebhookRequest<'a> {
    pub headers: &'a BTreeMap<String, String>,
    pub body: &'a [u8],
    /// `?token=` from the URL, for producers that cannot set headers (Jenkins' Notification plugin).
    pub query_token: Option<&'a str>,
    /// When Herald received it: a signed timestamp older (or newer) than [`REPLAY_WINDOW`] is refused.
    pub received_at: DateTime<Utc>,
}

/// How far a signed timestamp may lie from Herald's clock. Inside it, a replayed delivery is caught by its
/// delivery id (recorded on the build run for good, so a replay changes nothing); outside it, the request is
/// refused before anything is looked up. Five minutes, as Stripe and Slack use: room for clock skew and a slow
/// proxy, too short to keep a captured request useful.
pub const REPLAY_WINDOW: chrono::TimeDelta = chrono::TimeDelta::minutes(5);

impl WebhookRequest<'_> {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

/// What a delivery means to Herald.
#[derive(Debug, Clone, PartialEq)]
pub enum Normalized {
    Ping {
        hook_id: Option<i64>,
    },
    Build(Box<BuildEvent>),
    /// Accepted (so the producer's settings page shows green), recorded in the delivery log, not in the event log.
    Ignored {
        event: String,
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("the {0} header is missing")]
    Missing(&'static str),
    #[error("the {0} header is malformed")]
    Malformed(&'static str),
    #[error("the signature or token does not match")]
    Mismatch,
    #[error("the signed timestamp {0} is more than 5 minutes from Herald's clock: a replay, or a clock to fix")]
    Stale(i64),
}

#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    #[error("the body is not valid JSON for a `{event}` event: {source}")]
    Json {
        event: String,
        source: serde_json::Error,
    },
    #[error("the {0} header is missing")]
    MissingHeader(&'static str),
    #[error("{field}: `{value}` is not a value Herald knows")]
    UnknownValue { field: &'static str, value: String },
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
}

/// The CI systems Herald accepts webhooks from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    Github,
    Gitlab,
    Jenkins,
    Circleci,
    Generic,
}

impl Provider {
    pub const ALL: [Provider; 5] = [
        Self::Github,
        Self::Gitlab,
        Self::Jenkins,
        Self::Circleci,
        Self::Generic,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Github => "github",
            Self::Gitlab => "gitlab",
            Self::Jenkins => "jenkins",
            Self::Circleci => "circleci",
            Self::Generic => "generic",
        }
    }

    /// Check that the delivery was made by someone who knows the project's secret.
    pub fn authenticate(self, secret: &str, request: &WebhookRequest) -> Result<(), AuthError> {
        match self {
            Self::Github => verify_hmac_header(
                secret,
                request.body,
                request.header("x-hub-signature-256"),
                "X-Hub-Signature-256",
                "sha256=",
            ),
            Self::Gitlab => {
                verify_token(secret, request.header("x-gitlab-token"), "X-Gitlab-Token")
            }
            Self::Jenkins => verify_token(
                secret,
                request.header("x-herald-token").or(request.query_token),
                "X-Herald-Token (or ?token=)",
            ),
            Self::Circleci => circleci::verify_signature(secret, request),
            Self::Generic => match request.header("x-herald-signature-256") {
                Some(_) if request.header("x-herald-timestamp").is_some() => {
                    generic::verify_timestamped(secret, request)
                }
                Some(_) => verify_hmac_header(
                    secret,
                    request.body,
                    request.header("x-herald-signature-256"),
                    "X-Herald-Signature-256",
                    "sha256=",
                ),
                None => verify_token(secret, request.header("x-herald-token"), "X-Herald-Token"),
            },
        }
    }

    /// The provider's name for the kind of event delivered.
    pub fn event_name(self, request: &WebhookRequest) -> Result<String, PayloadError> {
        let header = |name: &'static str, shown: &'static str| {
            request
                .header(name)
                .map(str::to_owned)
                .ok_or(PayloadError::MissingHeader(shown))
        };
        match self {
            Self::Github => header("x-github-event", "X-GitHub-Event"),
            Self::Gitlab => header("x-gitlab-event", "X-Gitlab-Event"),
            Self::Circleci => Ok(request
                .header("circleci-event-type")
                .map(str::to_owned)
                .unwrap_or_else(|| circleci::event_type_of(request.body))),
            Self::Jenkins => Ok("build".to_owned()),
            Self::Generic => Ok("build".to_owned()),
        }
    }

    /// The provider's id for this delivery, or a hash of the body: a retry of the same delivery gets the same id.
    pub fn delivery_id(self, request: &WebhookRequest) -> String {
        let from_headers = match self {
            Self::Github => request.header("x-github-delivery"),
            // Idempotency-Key stays the same when GitLab retries a delivery; X-Gitlab-Event-UUID names the event.
            // (X-Gitlab-Webhook-UUID names the webhook, not the delivery.)
            Self::Gitlab => request
                .header("idempotency-key")
                .or(request.header("x-gitlab-event-uuid")),
            Self::Circleci => None,
            Self::Jenkins => None,
            Self::Generic => request.header("x-herald-delivery"),
        };
        if let Some(id) = from_headers.filter(|id| !id.trim().is_empty()) {
            return id.to_owned();
        }
        if self == Self::Circleci {
            if let Some(id) = circleci::delivery_id_of(request.body) {
                return id;
            }
        }
        body_delivery_id(request.body)
    }

    pub fn normalize(
        self,
        project_id: Uuid,
        event: &str,
        body: &[u8],
        received_at: DateTime<Utc>,
    ) -> Result<Normalized, PayloadError> {
        match self {
            Self::Github => github::normalize(project_id, event, body, received_at),
            Self::Gitlab => gitlab::normalize(project_id, event, body, received_at),
            Self::Jenkins => jenkins::normalize(project_id, body, received_at),
            Self::Circleci => circleci::normalize(project_id, event, body, received_at),
            Self::Generic => generic::normalize(project_id, body, received_at),
        }
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Provider {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|p| p.as_str() == s).ok_or(())
    }
}

/// `<prefix><hex HMAC-SHA256 of body>`, compared in constant time.
pub(crate) fn verify_hmac_header(
    secret: &str,
    body: &[u8],
    header: Option<&str>,
    name: &'static str,
    prefix: &str,
) -> Result<(), AuthError> {
    let header = header.ok_or(AuthError::Missing(name))?;
    let hex_digest = header
        .trim()
        .strip_prefix(prefix)
        .ok_or(AuthError::Malformed(name))?;
    verify_hmac_hex(secret, body, hex_digest).map_err(|e| match e {
        AuthError::Malformed(_) => AuthError::Malformed(name),
        other => other,
    })
}

pub(crate) fn verify_hmac_hex(
    secret: &str,
    body: &[u8],
    hex_digest: &str,
) -> Result<(), AuthError> {
    let expected = hex::decode(hex_digest).map_err(|_| AuthError::Malformed("signature"))?;
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).map_err(|_| AuthError::Mismatch)?;
    mac.update(body);
    mac.verify_slice(&expected).map_err(|_| AuthError::Mismatch)
}

/// A shared token compared in constant time (hashing first hides the length, too).
pub(crate) fn verify_token(
    secret: &str,
    given: Option<&str>,
    name: &'static str,
) -> Result<(), AuthError> {
    let given = given.ok_or(AuthError::Missing(name))?;
    let (a, b) = (
        Sha256::digest(secret.as_bytes()),
        Sha256::digest(given.as_bytes()),
    );
    if bool::from(a.ct_eq(&b)) {
        Ok(())
    } else {
        Err(AuthError::Mismatch)
    }
}

/// `sha256=<hex>` of `body` with `secret`, as GitHub (and Herald's generic webhook) sign.
pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC accepts keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// A delivery id for deliveries that carry none: the body's hash, so a byte-identical retry is recognized.
pub fn body_delivery_id(body: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(body)))
}

pub(crate) fn parse<T: serde::de::DeserializeOwned>(
    event: &str,
    body: &[u8],
) -> Result<T, PayloadError> {
    serde_json::from_slice(body).map_err(|source| PayloadError::Json {
        event: event.to_owned(),
        source,
    })
}

pub(crate) fn non_empty(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.trim().is_empty())
}

pub(crate) fn unknown(field: &'static str, value: &str) -> PayloadError {
    PayloadError::UnknownValue {
        field,
        value: value.to_owned(),
    }
}

/// A run-level status and outcome from one of Herald's own words (used by the generic webhook and tests).
pub(crate) fn herald_status(value: &str) -> Option<(BuildStatus, Option<Outcome>)> {
    Some(match value {
        "queued" => (BuildStatus::Queued, None),
        "started" | "running" => (BuildStatus::Started, None),
        other => (BuildStatus::Completed, Some(other.parse::<Outcome>().ok()?)),
    })
}

/// The first line of a commit message, which is what a notification shows.
pub(crate) fn seconds_between(
    start: Option<DateTime<Utc>>,
    end: Option<DateTime<Utc>>,
) -> Option<i64> {
    let secs = (end? - start?).num_seconds();
    (secs >= 0).then_some(secs)
}

#[cfg(test)]
pub(crate) mod test_support {
    use std::collections::BTreeMap;

    pub fn fixture(path: &str) -> Vec<u8> {
        let file = format!("{}/../tests/fixtures/{path}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&file).unwrap_or_else(|e| panic!("cannot read fixture {file}: {e}"))
    }

    pub fn headers(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_lowercase(), (*v).to_owned()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::headers;
    use super::*;

    fn request<'a>(headers: &'a BTreeMap<String, String>, body: &'a [u8]) -> WebhookRequest<'a> {
        WebhookRequest {
            headers,
            body,
            query_token: None,
            received_at: Utc::now(),
        }
    }

    #[test]
    fn every_provider_refuses_a_delivery_without_credentials() {
        let none = headers(&[]);
        for provider in Provider::ALL {
            assert!(
                provider.authenticate("s", &request(&none, b"{}")).is_err(),
                "{provider}"
            );
        }
    }

    #[test]
    fn tokens_and_signatures_must_match_exactly() {
        let body = b"{\"a\":1}";
        let signed = headers(&[("X-Hub-Signature-256", &sign("s3cret", body))]);
        assert_eq!(
            Provider::Github.authenticate("s3cret", &request(&signed, body)),
            Ok(())
        );
        assert_eq!(
            Provider::Github.authenticate("other", &request(&signed, body)),
            Err(AuthError::Mismatch)
        );
        let token = headers(&[("X-Gitlab-Token", "s3cret")]);
        assert_eq!(
            Provider::Gitlab.authenticate("s3cret", &request(&token, body)),
            Ok(())
        );
        assert_eq!(
            Provider::Gitlab.authenticate("s3cret2", &request(&token, body)),
            Err(AuthError::Mismatch)
        );
        let generic = headers(&[("X-Herald-Signature-256", &sign("s3cret", body))]);
        assert_eq!(
            Provider::Generic.authenticate("s3cret", &request(&generic, body)),
            Ok(())
        );
        let jenkins = WebhookRequest {
            headers: &headers(&[]),
            body,
            query_token: Some("s3cret"),
            received_at: Utc::now(),
        };
        assert_eq!(Provider::Jenkins.authenticate("s3cret", &jenkins), Ok(()));
    }

    #[test]
    fn delivery_ids_come_from_headers_or_the_body() {
        let gitlab = headers(&[("X-Gitlab-Event-UUID", "e-1"), ("Idempotency-Key", "k-1")]);
        assert_eq!(
            Provider::Gitlab.delivery_id(&request(&gitlab, b"{}")),
            "k-1"
        );
        let webhook_only = headers(&[("X-Gitlab-Webhook-UUID", "w-1")]);
        assert_eq!(
            Provider::Gitlab.delivery_id(&request(&webhook_only, b"x")),
            body_delivery_id(b"x")
        );
        let none = headers(&[]);
        assert_eq!(
            Provider::Jenkins.delivery_id(&request(&none, b"x")),
            body_delivery_id(b"x")
        );
        assert_ne!(body_delivery_id(b"x"), body_delivery_id(b"y"));
    }

    #[test]
    fn providers_are_named_in_urls() {
        for provider in Provider::ALL {
            assert_eq!(provider.as_str().parse::<Provider>(), Ok(provider));
        }
        assert!("bitbucket".parse::<Provider>().is_err());
    }
}
