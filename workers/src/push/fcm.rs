//! The Firebase Cloud Messaging HTTP v1 client: an OAuth2 access token from the service account (RFC 7523
//! JWT-bearer grant), shared by every sender and refreshed before it expires, and one `messages:send` call per
//! notification whose answer is classified by FCM's own error code.
//!
//! The service account's private key and the access token never reach a log line, a `Debug` output or a
//! failure's description.

use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::Mutex;

use super::{excerpt, retry_after, ttl_secs, PushConfigError, PushMessage, PushRefusal};

/// The scope `messages:send` needs.
const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// How long an assertion is valid: Google accepts at most an hour.
const ASSERTION_SECS: i64 = 3600;
/// A token is replaced this long before Google says it expires, so none expires between check and use.
const TOKEN_MARGIN: Duration = Duration::from_secs(60);
/// FCM's longest TTL: four weeks.
const FCM_MAX_TTL_SECS: u64 = 28 * 24 * 3600;
/// APNs refuses a longer `apns-collapse-id`.
const APNS_COLLAPSE_ID_MAX: usize = 64;

fn default_token_uri() -> String {
    "https://oauth2.googleapis.com/token".to_owned()
}

/// The parts of a Google service-account JSON file Herald uses.
#[derive(Clone, Deserialize)]
pub struct ServiceAccount {
    pub project_id: String,
    pub client_email: String,
    /// PKCS#8 PEM of the account's RSA key.
    pub private_key: String,
    #[serde(default = "default_token_uri")]
    pub token_uri: String,
}

impl std::fmt::Debug for ServiceAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccount")
            .field("project_id", &self.project_id)
            .field("client_email", &self.client_email)
            .field("private_key", &"<redacted>")
            .field("token_uri", &self.token_uri)
            .finish()
    }
}

impl ServiceAccount {
    /// Read the JSON file the Firebase console downloads ("Generate new private key").
    pub fn from_json(json: &str) -> Result<Self, PushConfigError> {
        let account: Self = serde_json::from_str(json)?;
        for (name, value) in [
            ("project_id", &account.project_id),
            ("client_email", &account.client_email),
            ("private_key", &account.private_key),
        ] {
            if value.trim().is_empty() {
                return Err(PushConfigError::MissingField(name));
            }
        }
        check_url("FCM token_uri", &account.token_uri)?;
        Ok(account)
    }
}

#[derive(Clone, Debug)]
pub struct FcmConfig {
    pub service_account: ServiceAccount,
    /// "https://fcm.googleapis.com" in production; a fake server in tests.
    pub api_url: String,
    pub timeout: Duration,
}

pub struct FcmClient {
    http: reqwest::Client,
    config: FcmConfig,
    key: EncodingKey,
    /// The cached access token. A tokio mutex held across the refresh, so concurrent senders wait for one
    /// token request instead of each making their own.
    token: Mutex<Option<AccessToken>>,
}

impl std::fmt::Debug for FcmClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FcmClient")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

#[derive(Clone)]
struct AccessToken {
    value: String,
    renew_at: Instant,
}

#[derive(Serialize)]
struct Assertion<'a> {
    iss: &'a str,
    scope: &'a str,
    aud: &'a str,
    iat: i64,
    exp: i64,
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    #[serde(default = "default_expires_in")]
    expires_in: u64,
}

fn default_expires_in() -> u64 {
    3600
}

#[derive(Deserialize)]
struct SendAnswer {
    name: String,
}

#[derive(Deserialize)]
struct ErrorAnswer {
    error: GoogleError,
}

#[derive(Deserialize)]
struct GoogleError {
    #[serde(default)]
    message: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    details: Vec<Value>,
}

impl GoogleError {
    /// FCM's own code (`UNREGISTERED`, `QUOTA_EXCEEDED`...), in the `FcmError` detail.
    fn fcm_error_code(&self) -> Option<&str> {
        self.details
            .iter()
            .find(|d| {
                d["@type"]
                    .as_str()
                    .is_some_and(|t| t.ends_with("google.firebase.fcm.v1.FcmError"))
            })
            .and_then(|d| d["errorCode"].as_str())
    }
}

/// One `messages:send` that did not succeed, and whether a fresh access token could make it succeed.
struct Refused {
    refusal: PushRefusal,
    stale_token: bool,
}

impl FcmClient {
    pub fn new(config: FcmConfig) -> Result<Self, PushConfigError> {
        check_url("FCM api_url", &config.api_url)?;
        check_url("FCM token_uri", &config.service_account.token_uri)?;
        let key = EncodingKey::from_rsa_pem(config.service_account.private_key.as_bytes())
            // jsonwebtoken's message names the problem, never the key's bytes.
            .map_err(|e| PushConfigError::ServiceAccountKey(e.to_string()))?;
        let http = reqwest::Client::builder().timeout(config.timeout).build()?;
        Ok(Self {
            http,
            config,
            key,
            token: Mutex::new(None),
        })
    }

    /// Returns FCM's message name ("projects/p/messages/123").
    pub async fn send(&self, token: &str, message: &PushMessage) -> Result<String, PushRefusal> {
        let access = self.access_token().await?;
        match self.post(&access, token, message).await {
            Ok(name) => Ok(name),
            Err(Refused {
                stale_token: true, ..
            }) => {
                // Revoked, or expired early: one fresh token, one more try.
                tracing::info!("FCM refused the access token; fetching a new one");
                self.forget(&access).await;
                let access = self.access_token().await?;
                self.post(&access, token, message)
                    .await
                    .map_err(|r| r.refusal)
            }
            Err(refused) => Err(refused.refusal),
        }
    }

    async fn post(
        &self,
        access_token: &str,
        token: &str,
        message: &PushMessage,
    ) -> Result<String, Refused> {
        let url = format!(
            "{}/v1/projects/{}/messages:send",
            self.config.api_url.trim_end_matches('/'),
            self.config.service_account.project_id
        );
        let body =
            json!({ "message": fcm_message(token, message, chrono::Utc::now().timestamp()) });
        let response = self
            .http
            .post(url)
            .bearer_auth(access_token)
            .json(&body)
            .send()
            .await
            .map_err(|e| Refused {
                refusal: PushRefusal::no_answer("FCM", e),
                stale_token: false,
            })?;
        let status = response.status();
        let wait = retry_after(response.headers());
        let text = response.text().await.unwrap_or_default();
        if status.is_success() {
            return serde_json::from_str::<SendAnswer>(&text)
                .map(|a| a.name)
                .map_err(|_| Refused {
                    // FCM took it, but Herald cannot tell which message it is: sending again would duplicate
                    // (on devices the collapse key hides that), so it is not retried.
                    refusal: PushRefusal::permanent(
                        Some(status.as_u16()),
                        format!(
                            "FCM: accepted with an unreadable answer: {}",
                            excerpt(&text, 200)
                        ),
                    ),
                    stale_token: false,
                });
        }
        Err(classify(status, wait, &text))
    }

    /// The cached access token, or a new one when there is none or it is about to expire.
    async fn access_token(&self) -> Result<String, PushRefusal> {
        let mut cached = self.token.lock().await;
        if let Some(token) = cached.as_ref() {
            if Instant::now() < token.renew_at {
                return Ok(token.value.clone());
            }
        }
        let fresh = self.fetch_token().await?;
        let value = fresh.value.clone();
        *cached = Some(fresh);
        Ok(value)
    }

    /// Drop `used` from the cache, unless another sender already replaced it.
    async fn forget(&self, used: &str) {
        let mut cached = self.token.lock().await;
        if cached.as_ref().is_some_and(|t| t.value == used) {
            *cached = None;
        }
    }

    async fn fetch_token(&self) -> Result<AccessToken, PushRefusal> {
        let account = &self.config.service_account;
        let iat = chrono::Utc::now().timestamp();
        let assertion = Assertion {
            iss: &account.client_email,
            scope: SCOPE,
            aud: &account.token_uri,
            iat,
            exp: iat + ASSERTION_SECS,
        };
        let jwt = jsonwebtoken::encode(&Header::new(Algorithm::RS256), &assertion, &self.key)
            .map_err(|e| {
                PushRefusal::permanent(None, format!("FCM: cannot sign the OAuth assertion: {e}"))
            })?;
        let asked_at = Instant::now();
        let response = self
            .http
            .post(&account.token_uri)
            .form(&[("grant_type", GRANT_TYPE), ("assertion", jwt.as_str())])
            .send()
            .await
            .map_err(|e| PushRefusal::no_answer("FCM OAuth token", e))?;
        let status = response.status();
        let wait = retry_after(response.headers());
        let text = response.text().await.unwrap_or_default();
        if !status.is_success() {
            // Google's token errors (`invalid_grant`: a deleted key, a clock off by hours) carry no secret.
            let description = format!("FCM OAuth token: HTTP {status}: {}", excerpt(&text, 200));
            let retryable = status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error();
            return Err(PushRefusal::new(
                Some(status.as_u16()),
                description,
                retryable,
                wait,
            ));
        }
        let answer: TokenAnswer = serde_json::from_str(&text).map_err(|e| {
            // Not the body: it may hold a token after all.
            PushRefusal::new(
                Some(status.as_u16()),
                format!("FCM OAuth token: unreadable answer ({e})"),
                true,
                None,
            )
        })?;
        let lifetime = Duration::from_secs(answer.expires_in).saturating_sub(TOKEN_MARGIN);
        tracing::debug!(expires_in = answer.expires_in, "new FCM access token");
        Ok(AccessToken {
            value: answer.access_token,
            renew_at: asked_at + lifetime,
        })
    }
}

/// The `message` of a `messages:send` request: the notification for every platform, with the collapse key
/// wherever that platform has one, so a retried notification replaces itself instead of showing twice.
fn fcm_message(token: &str, message: &PushMessage, now: i64) -> Value {
    // FCM refuses (INVALID_ARGUMENT) a TTL over its four-week maximum; it would keep it no longer anyway.
    let ttl = ttl_secs(message.ttl).min(FCM_MAX_TTL_SECS);
    let mut data = message.data.clone();
    if let Some(link) = &message.link {
        data.insert("link".to_owned(), link.clone());
    }
    // APNs: 0 means "deliver now or never", like a TTL of 0 elsewhere.
    let expiration = if ttl == 0 {
        0
    } else {
        now.saturating_add(i64::try_from(ttl).unwrap_or(i64::MAX))
    };
    let mut webpush = json!({ "headers": { "TTL": ttl.to_string() } });
    // FCM refuses the whole message (INVALID_ARGUMENT) for a link that is not https; the app still gets it in
    // `data`.
    if let Some(link) = message
        .link
        .as_deref()
        .filter(|l| l.starts_with("https://"))
    {
        webpush["fcm_options"] = json!({ "link": link });
    }
    json!({
        "token": token,
        "notification": { "title": message.title, "body": message.body },
        "data": data,
        "android": {
            "collapse_key": message.collapse_key,
            "ttl": format!("{ttl}s"),
            "notification": { "tag": message.collapse_key },
        },
        "apns": {
            "headers": {
                "apns-collapse-id": apns_collapse_id(&message.collapse_key),
                "apns-expiration": expiration.to_string(),
            },
        },
        "webpush": webpush,
    })
}

/// The collapse key as APNs takes it: at most 64 bytes, else a digest (the same key, the same id).
fn apns_collapse_id(key: &str) -> String {
    if key.len() <= APNS_COLLAPSE_ID_MAX {
        return key.to_owned();
    }
    let digest = ring::digest::digest(&ring::digest::SHA256, key.as_bytes());
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// What an FCM refusal means for Herald (firebase.google.com/docs/reference/fcm/rest/v1/ErrorCode).
fn classify(status: StatusCode, retry_after_secs: Option<u64>, body: &str) -> Refused {
    let code = Some(status.as_u16());
    let Ok(ErrorAnswer { error }) = serde_json::from_str::<ErrorAnswer>(body) else {
        // Not Google speaking (a proxy, a load balancer): judge by the status alone, and never call a token
        // gone on a stranger's word.
        let description = format!("FCM: HTTP {status}: {}", excerpt(body, 200));
        let retryable = status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error();
        return Refused {
            refusal: PushRefusal::new(code, description, retryable, retry_after_secs),
            stale_token: false,
        };
    };
    let fcm_code = error.fcm_error_code();
    let named = fcm_code.unwrap_or(error.status.as_str());
    let description = format!(
        "FCM: HTTP {} {named}: {}",
        status.as_u16(),
        excerpt(&error.message, 200)
    );
    let refusal = match (fcm_code, status.as_u16()) {
        // The app was uninstalled or the token rotated; or the token belongs to another Firebase project.
        (Some("UNREGISTERED" | "SENDER_ID_MISMATCH"), _) => PushRefusal::gone(code, description),
        (Some("QUOTA_EXCEEDED" | "UNAVAILABLE" | "INTERNAL"), _) => {
            PushRefusal::new(code, description, true, retry_after_secs)
        }
        // APNs or Web Push credentials in the Firebase console are wrong: fixing them is an operator's job.
        (Some("INVALID_ARGUMENT" | "THIRD_PARTY_AUTH_ERROR"), _) => {
            PushRefusal::permanent(code, description)
        }
        (_, 404) => PushRefusal::gone(code, description),
        (_, 429 | 500..=599) => PushRefusal::new(code, description, true, retry_after_secs),
        _ => PushRefusal::permanent(code, description),
    };
    Refused {
        // A 401 that is not about APNs credentials is about ours: the access token.
        stale_token: status == StatusCode::UNAUTHORIZED
            && fcm_code != Some("THIRD_PARTY_AUTH_ERROR"),
        refusal,
    }
}

fn check_url(what: &'static str, url: &str) -> Result<(), PushConfigError> {
    let ok = reqwest::Url::parse(url)
        .is_ok_and(|u| matches!(u.scheme(), "https" | "http") && u.has_host());
    if ok {
        Ok(())
    } else {
        Err(PushConfigError::BadUrl {
            what,
            url: url.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    const KEY: &str = include_str!("../../../tests/fixtures/push/fcm-test-service-account-key.pem");

    fn account_json() -> String {
        json!({
            "type": "service_account",
            "project_id": "herald-test",
            "private_key_id": "abc",
            "private_key": KEY,
            "client_email": "herald@herald-test.iam.gserviceaccount.com",
            "token_uri": "https://oauth2.googleapis.com/token",
        })
        .to_string()
    }

    fn message() -> PushMessage {
        PushMessage {
            title: "main failed".into(),
            body: "build #42 failed".into(),
            link: Some("https://ci.example/runs/42".into()),
            data: BTreeMap::from([("outcome".to_owned(), "failure".to_owned())]),
            collapse_key: "0123456789abcdef0123456789abcdef".into(),
            ttl: Duration::from_secs(3600),
        }
    }

    fn google_error(code: u16, status: &str, fcm: Option<&str>) -> String {
        let details = fcm.map_or(json!([]), |c| {
            json!([{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": c}])
        });
        json!({"error": {"code": code, "message": "m", "status": status, "details": details}})
            .to_string()
    }

    #[test]
    fn a_service_account_file_is_read_and_its_key_never_printed() {
        let account = ServiceAccount::from_json(&account_json()).unwrap();
        assert_eq!(account.project_id, "herald-test");
        let printed = format!("{account:?}");
        assert!(!printed.contains("PRIVATE KEY"), "{printed}");
        let config = FcmConfig {
            service_account: account,
            api_url: "https://fcm.googleapis.com".into(),
            timeout: Duration::from_secs(5),
        };
        let client = FcmClient::new(config).unwrap();
        assert!(!format!("{client:?}").contains("PRIVATE KEY"));
    }

    #[test]
    fn broken_service_accounts_are_refused_at_start() {
        assert!(matches!(
            ServiceAccount::from_json("{"),
            Err(PushConfigError::ServiceAccountJson(_))
        ));
        let mut v: Value = serde_json::from_str(&account_json()).unwrap();
        v["project_id"] = json!("");
        assert!(matches!(
            ServiceAccount::from_json(&v.to_string()),
            Err(PushConfigError::MissingField("project_id"))
        ));
        let mut v: Value = serde_json::from_str(&account_json()).unwrap();
        v["private_key"] = json!("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n");
        let account = ServiceAccount::from_json(&v.to_string()).unwrap();
        let err = FcmClient::new(FcmConfig {
            service_account: account,
            api_url: "https://fcm.googleapis.com".into(),
            timeout: Duration::from_secs(5),
        })
        .unwrap_err();
        assert!(
            matches!(err, PushConfigError::ServiceAccountKey(_)),
            "{err}"
        );
    }

    #[test]
    fn the_message_carries_the_collapse_key_for_every_platform() {
        let m = fcm_message("device-token", &message(), 1_000);
        assert_eq!(m["token"], "device-token");
        assert_eq!(m["notification"]["title"], "main failed");
        assert_eq!(m["data"]["outcome"], "failure");
        assert_eq!(m["data"]["link"], "https://ci.example/runs/42");
        assert_eq!(
            m["android"]["collapse_key"],
            "0123456789abcdef0123456789abcdef"
        );
        assert_eq!(m["android"]["ttl"], "3600s");
        assert_eq!(
            m["android"]["notification"]["tag"],
            "0123456789abcdef0123456789abcdef"
        );
        assert_eq!(
            m["apns"]["headers"]["apns-collapse-id"],
            "0123456789abcdef0123456789abcdef"
        );
        assert_eq!(m["apns"]["headers"]["apns-expiration"], "4600");
        assert_eq!(m["webpush"]["headers"]["TTL"], "3600");
        assert_eq!(
            m["webpush"]["fcm_options"]["link"],
            "https://ci.example/runs/42"
        );
    }

    #[test]
    fn a_plain_http_link_stays_out_of_fcm_options() {
        let mut msg = message();
        msg.link = Some("http://herald.test/runs/1".into());
        msg.ttl = Duration::ZERO;
        let m = fcm_message("t", &msg, 1_000);
        assert!(m["webpush"].get("fcm_options").is_none());
        assert_eq!(m["data"]["link"], "http://herald.test/runs/1");
        assert_eq!(m["apns"]["headers"]["apns-expiration"], "0");
        msg.ttl = Duration::from_secs(90 * 24 * 3600);
        let m = fcm_message("t", &msg, 1_000);
        assert_eq!(m["android"]["ttl"], "2419200s");
    }

    #[test]
    fn long_collapse_keys_become_a_64_char_apns_id() {
        let id = apns_collapse_id(&"k".repeat(100));
        assert_eq!(id.len(), 64);
        assert_eq!(id, apns_collapse_id(&"k".repeat(100)));
    }

    #[test]
    fn errors_are_classified_by_fcm_error_code() {
        // (status, google status, FCM errorCode, retryable, gone, stale token)
        let cases = [
            (404, "NOT_FOUND", Some("UNREGISTERED"), false, true, false),
            (
                403,
                "PERMISSION_DENIED",
                Some("SENDER_ID_MISMATCH"),
                false,
                true,
                false,
            ),
            (
                400,
                "INVALID_ARGUMENT",
                Some("INVALID_ARGUMENT"),
                false,
                false,
                false,
            ),
            (
                429,
                "RESOURCE_EXHAUSTED",
                Some("QUOTA_EXCEEDED"),
                true,
                false,
                false,
            ),
            (503, "UNAVAILABLE", Some("UNAVAILABLE"), true, false, false),
            (500, "INTERNAL", Some("INTERNAL"), true, false, false),
            (
                401,
                "UNAUTHENTICATED",
                Some("THIRD_PARTY_AUTH_ERROR"),
                false,
                false,
                false,
            ),
            (401, "UNAUTHENTICATED", None, false, false, true),
            (502, "UNKNOWN", None, true, false, false),
        ];
        for (status, google, fcm, retryable, gone, stale) in cases {
            let r = classify(
                StatusCode::from_u16(status).unwrap(),
                Some(7),
                &google_error(status, google, fcm),
            );
            assert_eq!(r.refusal.failure.retryable, retryable, "{status} {fcm:?}");
            assert_eq!(r.refusal.token_gone, gone, "{status} {fcm:?}");
            assert_eq!(r.stale_token, stale, "{status} {fcm:?}");
            assert_eq!(r.refusal.failure.code, Some(i64::from(status)));
            assert!(r
                .refusal
                .failure
                .description
                .contains(fcm.unwrap_or(google)));
            let wait = retryable.then_some(7);
            assert_eq!(r.refusal.failure.retry_after_secs, wait, "{status}");
        }
    }

    #[test]
    fn a_404_from_something_other_than_google_does_not_disable_the_contact() {
        let r = classify(StatusCode::NOT_FOUND, None, "<html>Not Found</html>");
        assert!(!r.refusal.token_gone);
        assert!(!r.refusal.failure.retryable);
        let r = classify(StatusCode::BAD_GATEWAY, None, "<html>bad gateway</html>");
        assert!(r.refusal.failure.retryable);
    }
}
