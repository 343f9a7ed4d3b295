//! Stand-ins for the push services Herald talks to, strict where the real ones are strict:
//!
//! - [`FakeFcm`]: Google's OAuth token endpoint (checks the RS256 assertion against the test key's public half)
//!   and FCM HTTP v1 `messages:send` (checks the bearer token it issued, answers errors the way FCM does).
//! - [`FakeWebPush`]: an RFC 8030 push service that checks the VAPID JWT (RFC 8292) and decrypts every body
//!   with its own RFC 8291 implementation (RustCrypto's p256, hkdf and aes-gcm, not the ring code Herald uses),
//!   so a message it records is one a browser could read.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes128Gcm, Nonce};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Form, Json, Router};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hkdf::Hkdf;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::{PublicKey, SecretKey};
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::Sha256;
use uuid::Uuid;
use workers::push::{ServiceAccount, WebPushTarget};

use crate::helpers::any_fixture;

/// A hung provider answers after this long: far beyond any timeout the tests give the clients.
const HANG: Duration = Duration::from_secs(30);

async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

// ---------------------------------------------------------------------------------------------------------
// FCM
// ---------------------------------------------------------------------------------------------------------

pub const FCM_PROJECT: &str = "herald-test";
pub const FCM_CLIENT_EMAIL: &str = "herald-push@herald-test.iam.gserviceaccount.com";

/// How the fake FCM answers the next `messages:send` (after checking the bearer token).
#[derive(Clone, Debug)]
pub enum FcmReply {
    /// An FCM error: HTTP status, FCM `errorCode`, and a `Retry-After` header.
    Fail {
        status: u16,
        error_code: &'static str,
        retry_after: Option<u64>,
    },
    /// 401 UNAUTHENTICATED, as for a revoked access token.
    Unauthenticated,
    /// No answer within any sane timeout.
    Hang,
}

struct FcmState {
    token_url: String,
    expires_in: u64,
    /// Access tokens issued, with when they expire.
    tokens: HashMap<String, Instant>,
    token_requests: usize,
    /// Why token requests were refused.
    token_refusals: Vec<String>,
    send_attempts: usize,
    accepted: Vec<Value>,
    script: VecDeque<FcmReply>,
    unregistered: HashSet<String>,
}

/// Google's token endpoint and FCM HTTP v1, in one server.
#[derive(Clone)]
pub struct FakeFcm {
    pub url: String,
    state: Arc<Mutex<FcmState>>,
}

#[derive(Deserialize)]
struct TokenRequest {
    grant_type: String,
    assertion: String,
}

#[derive(Deserialize)]
struct AssertionClaims {
    scope: String,
    iat: i64,
    exp: i64,
}

fn google_error(status: StatusCode, google_status: &str, fcm_code: Option<&str>) -> Response {
    let details = fcm_code.map_or(json!([]), |code| {
        json!([{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": code}])
    });
    let body = json!({"error": {
        "code": status.as_u16(),
        "message": format!("fake FCM says {}", fcm_code.unwrap_or(google_status)),
        "status": google_status,
        "details": details,
    }});
    (status, Json(body)).into_response()
}

async fn fcm_token(
    State(state): State<Arc<Mutex<FcmState>>>,
    Form(request): Form<TokenRequest>,
) -> Response {
    let mut state = state.lock().unwrap();
    state.token_requests += 1;
    let checked = check_assertion(&state.token_url, &request);
    match checked {
        Ok(()) => {
            let token = format!("ya29.fake-{}", Uuid::new_v4().simple());
            let expires_at = Instant::now() + Duration::from_secs(state.expires_in);
            state.tokens.insert(token.clone(), expires_at);
            Json(json!({"access_token": token, "expires_in": state.expires_in, "token_type": "Bearer"}))
                .into_response()
        }
        Err(why) => {
            state.token_refusals.push(why.clone());
            (
                StatusCode::BAD_REQUEST,
                Json(json!({"error": "invalid_grant", "error_description": why})),
            )
                .into_response()
        }
    }
}

/// What Google checks of a JWT-bearer grant.
fn check_assertion(token_url: &str, request: &TokenRequest) -> Result<(), String> {
    if request.grant_type != "urn:ietf:params:oauth:grant-type:jwt-bearer" {
        return Err(format!("unsupported grant_type {}", request.grant_type));
    }
    let public = any_fixture("push/fcm-test-service-account-key.pub.pem");
    let key = DecodingKey::from_rsa_pem(&public).map_err(|e| e.to_string())?;
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_audience(&[token_url]);
    validation.set_issuer(&[FCM_CLIENT_EMAIL]);
    validation.set_required_spec_claims(&["exp", "iat", "aud", "iss"]);
    validation.leeway = 0;
    let claims = jsonwebtoken::decode::<AssertionClaims>(&request.assertion, &key, &validation)
        .map_err(|e| format!("invalid assertion: {e}"))?
        .claims;
    if claims
        .scope
        .split(' ')
        .all(|s| s != "https://www.googleapis.com/auth/firebase.messaging")
    {
        return Err(format!("scope {} does not allow FCM", claims.scope));
    }
    if claims.exp - claims.iat > 3600 {
        return Err("assertion valid for more than an hour".into());
    }
    Ok(())
}

async fn fcm_send(
    State(state): State<Arc<Mutex<FcmState>>>,
    Path(project): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let reply = {
        let mut state = state.lock().unwrap();
        state.send_attempts += 1;
        let bearer = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        let valid = state
            .tokens
            .get(bearer)
            .is_some_and(|expires| Instant::now() < *expires);
        if !valid {
            return google_error(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED", None);
        }
        if project != FCM_PROJECT {
            return google_error(
                StatusCode::FORBIDDEN,
                "PERMISSION_DENIED",
                Some("SENDER_ID_MISMATCH"),
            );
        }
        let message = &body["message"];
        let token = message["token"].as_str().unwrap_or_default();
        if token.is_empty()
            || !message["data"]
                .as_object()
                .is_none_or(|d| d.values().all(Value::is_string))
        {
            return google_error(
                StatusCode::BAD_REQUEST,
                "INVALID_ARGUMENT",
                Some("INVALID_ARGUMENT"),
            );
        }
        match state.script.pop_front() {
            Some(reply) => reply,
            None if state.unregistered.contains(token) => {
                return google_error(StatusCode::NOT_FOUND, "NOT_FOUND", Some("UNREGISTERED"));
            }
            None => {
                state.accepted.push(message.clone());
                let name = format!("projects/{project}/messages/{}", state.accepted.len());
                return Json(json!({ "name": name })).into_response();
            }
        }
    };
    match reply {
        FcmReply::Fail {
            status,
            error_code,
            retry_after,
        } => {
            let status = StatusCode::from_u16(status).unwrap();
            let google_status = match status.as_u16() {
                400 => "INVALID_ARGUMENT",
                403 => "PERMISSION_DENIED",
                404 => "NOT_FOUND",
                429 => "RESOURCE_EXHAUSTED",
                503 => "UNAVAILABLE",
                _ => "INTERNAL",
            };
            let mut response = google_error(status, google_status, Some(error_code));
            if let Some(secs) = retry_after {
                response
                    .headers_mut()
                    .insert("retry-after", HeaderValue::from(secs));
            }
            response
        }
        FcmReply::Unauthenticated => {
            google_error(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED", None)
        }
        FcmReply::Hang => {
            tokio::time::sleep(HANG).await;
            google_error(StatusCode::GATEWAY_TIMEOUT, "DEADLINE_EXCEEDED", None)
        }
    }
}

impl FakeFcm {
    pub async fn start() -> Self {
        let state = Arc::new(Mutex::new(FcmState {
            token_url: String::new(),
            expires_in: 3599,
            tokens: HashMap::new(),
            token_requests: 0,
            token_refusals: Vec::new(),
            send_attempts: 0,
            accepted: Vec::new(),
            script: VecDeque::new(),
            unregistered: HashSet::new(),
        }));
        let app = Router::new()
            .route("/token", post(fcm_token))
            .route("/v1/projects/{project}/messages:send", post(fcm_send))
            .with_state(state.clone());
        let url = serve(app).await;
        state.lock().unwrap().token_url = format!("{url}/token");
        Self { url, state }
    }

    /// A service-account JSON file like the Firebase console's, with the test key and the fake's token URI.
    pub fn service_account_json(&self) -> String {
        let key = String::from_utf8(any_fixture("push/fcm-test-service-account-key.pem")).unwrap();
        json!({
            "type": "service_account",
            "project_id": FCM_PROJECT,
            "private_key_id": "0123456789abcdef",
            "private_key": key,
            "client_email": FCM_CLIENT_EMAIL,
            "client_id": "1234567890",
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": format!("{}/token", self.url),
        })
        .to_string()
    }

    pub fn service_account(&self) -> ServiceAccount {
        ServiceAccount::from_json(&self.service_account_json()).unwrap()
    }

    /// The `expires_in` of tokens issued from now on.
    pub fn set_token_lifetime(&self, secs: u64) {
        self.state.lock().unwrap().expires_in = secs;
    }

    /// Answer the next authenticated `messages:send` with an FCM error.
    pub fn fail_next(&self, status: u16, error_code: &'static str, retry_after: Option<u64>) {
        self.script(FcmReply::Fail {
            status,
            error_code,
            retry_after,
        });
    }

    /// Answer the next authenticated `messages:send` with `reply`.
    pub fn script(&self, reply: FcmReply) {
        self.state.lock().unwrap().script.push_back(reply);
    }

    /// Invalidate every access token issued so far, as revoking the key would.
    pub fn revoke_tokens(&self) {
        self.state.lock().unwrap().tokens.clear();
    }

    /// This registration token answers 404 UNREGISTERED from now on (the app was uninstalled).
    pub fn unregister(&self, token: &str) {
        self.state
            .lock()
            .unwrap()
            .unregistered
            .insert(token.to_owned());
    }

    pub fn token_requests(&self) -> usize {
        self.state.lock().unwrap().token_requests
    }

    pub fn token_refusals(&self) -> Vec<String> {
        self.state.lock().unwrap().token_refusals.clone()
    }

    /// Every `messages:send` call, accepted or not.
    pub fn send_attempts(&self) -> usize {
        self.state.lock().unwrap().send_attempts
    }

    /// The `message` objects FCM accepted, in order.
    pub fn messages(&self) -> Vec<Value> {
        self.state.lock().unwrap().accepted.clone()
    }
}

// ---------------------------------------------------------------------------------------------------------
// Web Push
// ---------------------------------------------------------------------------------------------------------

/// How the fake push service answers the next valid push.
#[derive(Clone, Debug)]
pub enum WebPushReply {
    Created,
    NotFound,
    Gone,
    TooManyRequests { retry_after: u64 },
    ServerError,
    Hang,
}

/// A push as the browser would get it, with the headers the push service acted on.
#[derive(Clone, Debug)]
pub struct ReceivedPush {
    pub subscription: String,
    /// The decrypted payload.
    pub payload: Value,
    pub ttl: Option<u64>,
    pub topic: Option<String>,
    pub urgency: Option<String>,
    /// The VAPID JWT it came with.
    pub jwt: String,
    pub jwt_claims: Value,
}

struct Receiver {
    secret: SecretKey,
    auth: [u8; 16],
    /// The applicationServerKey the subscription was made with, if the test cares.
    server_key: Option<String>,
}

#[derive(Default)]
struct WebPushState {
    origin: String,
    receivers: HashMap<String, Receiver>,
    expired: HashSet<String>,
    script: VecDeque<WebPushReply>,
    attempts: usize,
    received: Vec<ReceivedPush>,
    /// Why pushes were refused with 400/401/403.
    refusals: Vec<String>,
}

/// An RFC 8030 push service.
#[derive(Clone)]
pub struct FakeWebPush {
    /// The origin (`http://127.0.0.1:port`): what a VAPID JWT's `aud` must be.
    pub url: String,
    state: Arc<Mutex<WebPushState>>,
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// RFC 8292: `vapid t=<jwt>, k=<key>`, checked like a push service checks it. `(jwt, claims, k)`.
fn check_vapid(origin: &str, headers: &HeaderMap) -> Result<(String, Value, String), String> {
    let authorization = header(headers, "authorization").ok_or("no Authorization")?;
    let params = authorization
        .strip_prefix("vapid ")
        .ok_or("not a vapid Authorization")?;
    let mut t = None;
    let mut k = None;
    for param in params.split(',') {
        match param.trim().split_once('=') {
            Some(("t", v)) => t = Some(v.to_owned()),
            Some(("k", v)) => k = Some(v.to_owned()),
            _ => return Err(format!("unexpected parameter {param}")),
        }
    }
    let (t, k) = t.zip(k).ok_or("t or k missing")?;
    let point = URL_SAFE_NO_PAD.decode(&k).map_err(|e| e.to_string())?;
    if point.len() != 65 || point[0] != 4 {
        return Err("k is not an uncompressed P-256 point".into());
    }
    let key = DecodingKey::from_ec_components(
        &URL_SAFE_NO_PAD.encode(&point[1..33]),
        &URL_SAFE_NO_PAD.encode(&point[33..65]),
    )
    .map_err(|e| e.to_string())?;
    let mut validation = Validation::new(Algorithm::ES256);
    validation.set_audience(&[origin]);
    validation.set_required_spec_claims(&["exp", "aud", "sub"]);
    validation.leeway = 0;
    let claims = jsonwebtoken::decode::<Value>(&t, &key, &validation)
        .map_err(|e| format!("JWT refused: {e}"))?
        .claims;
    let exp = claims["exp"].as_i64().ok_or("exp is not a number")?;
    if exp > chrono::Utc::now().timestamp() + 24 * 3600 {
        return Err("exp more than 24 hours away".into());
    }
    let sub = claims["sub"].as_str().unwrap_or_default();
    if !(sub.starts_with("mailto:") || sub.starts_with("https://")) {
        return Err(format!("sub {sub:?} is no contact"));
    }
    Ok((t, claims, k))
}

/// RFC 8291 decryption, written independently of Herald's: why not, when the body is not a valid message for
/// this receiver.
fn decrypt(receiver: &Receiver, body: &[u8]) -> Result<Vec<u8>, String> {
    if body.len() < 86 + 17 {
        return Err("body shorter than a header and a tag".into());
    }
    let salt = &body[..16];
    let rs = u32::from_be_bytes([body[16], body[17], body[18], body[19]]);
    let idlen = usize::from(body[20]);
    if idlen != 65 {
        return Err(format!("keyid of {idlen} bytes, not a P-256 point"));
    }
    let as_public_bytes = &body[21..86];
    let ciphertext = &body[86..];
    if ciphertext.len() > rs as usize {
        return Err("more than one record".into());
    }
    let as_public = PublicKey::from_sec1_bytes(as_public_bytes).map_err(|e| e.to_string())?;
    let shared =
        p256::ecdh::diffie_hellman(receiver.secret.to_nonzero_scalar(), as_public.as_affine());
    let ua_public = receiver.secret.public_key().to_encoded_point(false);

    let mut key_info = b"WebPush: info\0".to_vec();
    key_info.extend_from_slice(ua_public.as_bytes());
    key_info.extend_from_slice(as_public_bytes);
    let mut ikm = [0u8; 32];
    Hkdf::<Sha256>::new(Some(&receiver.auth), shared.raw_secret_bytes())
        .expand(&key_info, &mut ikm)
        .map_err(|e| e.to_string())?;
    let hkdf = Hkdf::<Sha256>::new(Some(salt), &ikm);
    let mut cek = [0u8; 16];
    hkdf.expand(b"Content-Encoding: aes128gcm\0", &mut cek)
        .map_err(|e| e.to_string())?;
    let mut nonce = [0u8; 12];
    hkdf.expand(b"Content-Encoding: nonce\0", &mut nonce)
        .map_err(|e| e.to_string())?;

    let cipher = Aes128Gcm::new_from_slice(&cek).map_err(|e| e.to_string())?;
    let mut padded = cipher
        .decrypt(Nonce::from_slice(&nonce), ciphertext)
        .map_err(|_| "the record does not authenticate".to_owned())?;
    while padded.last() == Some(&0) {
        padded.pop();
    }
    match padded.pop() {
        Some(2) => Ok(padded),
        other => Err(format!("padding delimiter {other:?}, not 2 (last record)")),
    }
}

fn refuse(state: &mut WebPushState, status: StatusCode, why: String) -> Response {
    state.refusals.push(why.clone());
    (
        status,
        Json(json!({"code": status.as_u16(), "message": why})),
    )
        .into_response()
}

async fn web_push(
    State(state): State<Arc<Mutex<WebPushState>>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let reply = {
        let mut guard = state.lock().unwrap();
        let state = &mut *guard;
        state.attempts += 1;
        if state.expired.contains(&id) {
            return (
                StatusCode::GONE,
                "push subscription has unsubscribed or expired",
            )
                .into_response();
        }
        let Some(receiver) = state.receivers.get(&id) else {
            return (StatusCode::NOT_FOUND, "no such subscription").into_response();
        };
        let (jwt, claims, k) = match check_vapid(&state.origin, &headers) {
            Ok(vapid) => vapid,
            Err(why) => return refuse(state, StatusCode::UNAUTHORIZED, why),
        };
        if receiver.server_key.as_ref().is_some_and(|key| *key != k) {
            return refuse(
                state,
                StatusCode::FORBIDDEN,
                "k is not the subscription's key".into(),
            );
        }
        let ttl = header(&headers, "ttl").and_then(|v| v.parse::<u64>().ok());
        if ttl.is_none() {
            return refuse(state, StatusCode::BAD_REQUEST, "TTL header missing".into());
        }
        if header(&headers, "content-encoding").as_deref() != Some("aes128gcm") {
            return refuse(
                state,
                StatusCode::BAD_REQUEST,
                "Content-Encoding is not aes128gcm".into(),
            );
        }
        if body.len() > 4096 {
            return refuse(
                state,
                StatusCode::PAYLOAD_TOO_LARGE,
                "body over 4096 bytes".into(),
            );
        }
        let topic = header(&headers, "topic");
        if topic.as_ref().is_some_and(|t| {
            t.len() > 32
                || !t
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        }) {
            return refuse(
                state,
                StatusCode::BAD_REQUEST,
                "Topic is not 32 base64url characters".into(),
            );
        }
        let payload = match decrypt(receiver, &body).and_then(|plain| {
            serde_json::from_slice::<Value>(&plain).map_err(|e| format!("payload is not JSON: {e}"))
        }) {
            Ok(payload) => payload,
            Err(why) => return refuse(state, StatusCode::BAD_REQUEST, why),
        };
        let reply = state.script.pop_front().unwrap_or(WebPushReply::Created);
        if matches!(reply, WebPushReply::Created) {
            state.received.push(ReceivedPush {
                subscription: id,
                payload,
                ttl,
                topic,
                urgency: header(&headers, "urgency"),
                jwt,
                jwt_claims: claims,
            });
            let location = format!("{}/messages/{}", state.origin, state.received.len());
            return (StatusCode::CREATED, [("location", location)]).into_response();
        }
        reply
    };
    match reply {
        WebPushReply::Created => unreachable!("answered above"),
        WebPushReply::NotFound => (StatusCode::NOT_FOUND, "not found").into_response(),
        WebPushReply::Gone => (StatusCode::GONE, "gone").into_response(),
        WebPushReply::TooManyRequests { retry_after } => (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", retry_after.to_string())],
            "slow down",
        )
            .into_response(),
        WebPushReply::ServerError => (StatusCode::INTERNAL_SERVER_ERROR, "oops").into_response(),
        WebPushReply::Hang => {
            tokio::time::sleep(HANG).await;
            (StatusCode::CREATED, "late").into_response()
        }
    }
}

impl FakeWebPush {
    pub async fn start() -> Self {
        let state = Arc::new(Mutex::new(WebPushState::default()));
        let app = Router::new()
            .route("/push/{id}", post(web_push))
            .with_state(state.clone());
        let url = serve(app).await;
        state.lock().unwrap().origin = url.clone();
        Self { url, state }
    }

    /// A new browser subscription: a receiver key pair and auth secret kept by the fake, given out as a
    /// browser's `PushSubscription` would be. It takes pushes signed with any VAPID key.
    pub fn subscription(&self) -> WebPushTarget {
        self.subscribe(None)
    }

    /// A subscription made with `application_server_key`: pushes signed with another key are refused (403).
    pub fn subscription_for(&self, application_server_key: &str) -> WebPushTarget {
        self.subscribe(Some(application_server_key.to_owned()))
    }

    fn subscribe(&self, server_key: Option<String>) -> WebPushTarget {
        let secret = SecretKey::random(&mut rand::rngs::OsRng);
        let auth: [u8; 16] = rand::random();
        let id = Uuid::new_v4().simple().to_string();
        let target = WebPushTarget {
            endpoint: format!("{}/push/{id}", self.url),
            p256dh: URL_SAFE_NO_PAD.encode(secret.public_key().to_encoded_point(false).as_bytes()),
            auth: URL_SAFE_NO_PAD.encode(auth),
        };
        self.state.lock().unwrap().receivers.insert(
            id,
            Receiver {
                secret,
                auth,
                server_key,
            },
        );
        target
    }

    /// This subscription answers 410 Gone from now on (the user revoked the permission).
    pub fn expire(&self, target: &WebPushTarget) {
        let id = target
            .endpoint
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_owned();
        self.state.lock().unwrap().expired.insert(id);
    }

    /// Answer the next valid pushes with these replies, in order (then 201 Created).
    pub fn script(&self, replies: impl IntoIterator<Item = WebPushReply>) {
        self.state.lock().unwrap().script.extend(replies);
    }

    /// Every POST that reached the fake.
    pub fn attempts(&self) -> usize {
        self.state.lock().unwrap().attempts
    }

    /// Pushes accepted and decrypted, in order.
    pub fn received(&self) -> Vec<ReceivedPush> {
        self.state.lock().unwrap().received.clone()
    }

    pub fn refusals(&self) -> Vec<String> {
        self.state.lock().unwrap().refusals.clone()
    }
}
