//! `spawn_app` and the typed helpers the tests read like stories with.

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use herald::{Role, Running, Settings};
use serde_json::{json, Value};
use sqlx::{Connection, PgConnection, PgPool};
use uuid::Uuid;
use workers::{KafkaConfig, TelegramConfig};

pub const BOT_TOKEN: &str = "123456:test-token";

/// The server tests create their databases on (trust auth, as on the development machines).
pub fn admin_url() -> String {
    std::env::var("HERALD_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

fn database_url(name: &str) -> String {
    let admin = admin_url();
    let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
    format!("{base}/{name}")
}

/// Kafka brokers for tests, as started by the test script.
pub fn kafka_brokers() -> String {
    std::env::var("HERALD_TEST_KAFKA_BROKERS").expect(
        "HERALD_TEST_KAFKA_BROKERS is not set: run the suite with the README's test command, which starts tansu",
    )
}

/// A GitHub fixture (`tests/fixtures/github/<path>`).
pub fn fixture(path: &str) -> Vec<u8> {
    any_fixture(&format!("github/{path}"))
}

/// Any provider's fixture (`tests/fixtures/<path>`).
pub fn any_fixture(path: &str) -> Vec<u8> {
    let file = format!("{}/tests/fixtures/{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&file).unwrap_or_else(|e| panic!("cannot read fixture {file}: {e}"))
}

/// A fixture with some fields changed, for scenarios the real payloads do not cover.
pub fn fixture_with(path: &str, edit: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut value: Value = serde_json::from_slice(&fixture(path)).expect("fixture is JSON");
    edit(&mut value);
    serde_json::to_vec(&value).expect("serializes")
}

/// How the fake Telegram answers the next `sendMessage`.
#[derive(Clone, Debug)]
pub enum Reply {
    Ok,
    /// Take the message (the chat shows it), then never answer: what a worker killed mid-call leaves behind.
    AcceptThenHang,
    TooManyRequests {
        retry_after: u64,
    },
    Blocked,
    ChatNotFound,
    ServerError,
}

#[derive(Clone, Debug)]
pub struct SentMessage {
    pub chat_id: i64,
    pub text: String,
    pub parse_mode: Option<String>,
    /// `message_thread_id`: the forum topic.
    pub topic_id: Option<i64>,
    /// The inline keyboard's buttons, row by row flattened: `(text, callback_data)`.
    pub buttons: Vec<(String, String)>,
}

#[derive(Default)]
struct FakeState {
    calls: Vec<SentMessage>,
    delivered: Vec<SentMessage>,
    script: VecDeque<Reply>,
    /// Updates not yet confirmed by a `getUpdates` offset past them.
    updates: Vec<Value>,
    /// `(chat, user)` pairs that are chat administrators.
    admins: Vec<(i64, i64)>,
    /// Every Bot API call other than `sendMessage`: `(method, body)`.
    other_calls: Vec<(String, Value)>,
    /// Enforce Telegram's rate limits, answering 429 like the real API.
    enforce_limits: bool,
    /// When each accepted message arrived, with its chat: what the limits are checked against.
    accepted_at: Vec<(std::time::Instant, i64)>,
    /// 429s the limits caused.
    limited: usize,
    /// `editMessageText` calls that changed a message: `(chat, message_id, new text)`.
    edits: Vec<(i64, i64, String)>,
    /// Seeded misbehaviour for `sendMessage` calls the script does not decide.
    chaos: Option<Chaos>,
    /// Messages taken and then left without an answer (`AcceptThenHang`), so far.
    hung: usize,
}

/// How often the fake misbehaves, as Telegram does on a bad day: each `sendMessage` draws one fate.
#[derive(Clone, Copy, Debug)]
pub struct ChaosRates {
    /// 429 with `retry_after: 1`.
    pub too_many_requests: f64,
    /// 502 Bad Gateway, the message not taken.
    pub server_error: f64,
    /// Taken, answered after 200-800 ms (within the client's timeout).
    pub slow: f64,
    /// Not taken, and no answer for 30 s: the client times out.
    pub timeout: f64,
}

struct Chaos {
    rng: rand::rngs::StdRng,
    rates: ChaosRates,
}

/// What chaos decided for one call.
enum Fate {
    Reply(Reply),
    Slow(Duration),
    Timeout,
}

impl Chaos {
    fn draw(&mut self) -> Fate {
        use rand::Rng;
        let r: f64 = self.rng.gen();
        let ChaosRates {
            too_many_requests,
            server_error,
            slow,
            timeout,
        } = self.rates;
        if r < too_many_requests {
            Fate::Reply(Reply::TooManyRequests { retry_after: 1 })
        } else if r < too_many_requests + server_error {
            Fate::Reply(Reply::ServerError)
        } else if r < too_many_requests + server_error + slow {
            Fate::Slow(Duration::from_millis(self.rng.gen_range(200..800)))
        } else if r < too_many_requests + server_error + slow + timeout {
            Fate::Timeout
        } else {
            Fate::Reply(Reply::Ok)
        }
    }
}

/// Telegram's documented limits, with the slack the real service shows: a chat gets about one message a
/// second (here: none closer than 900 ms), a group twenty a minute, a bot about thirty a second in all (here:
/// 33).
fn over_telegram_limits(state: &FakeState, chat_id: i64) -> Option<u64> {
    let now = std::time::Instant::now();
    let within = |window: Duration, chat: Option<i64>| {
        state
            .accepted_at
            .iter()
            .filter(|(at, c)| now.duration_since(*at) < window && chat.is_none_or(|x| x == *c))
            .count()
    };
    if within(Duration::from_millis(900), Some(chat_id)) > 0 {
        return Some(1);
    }
    if chat_id < 0 && within(Duration::from_secs(60), Some(chat_id)) >= 21 {
        return Some(3);
    }
    if within(Duration::from_secs(1), None) >= 33 {
        return Some(1);
    }
    None
}

/// A Telegram Bot API stand-in that answers like the real one, errors included.
#[derive(Clone)]
pub struct FakeTelegram {
    pub url: String,
    state: Arc<Mutex<FakeState>>,
}

fn ok(result: Value) -> (StatusCode, Json<Value>) {
    (StatusCode::OK, Json(json!({"ok": true, "result": result})))
}

async fn fake_bot_api(
    State(state): State<Arc<Mutex<FakeState>>>,
    Path((bot, method)): Path<(String, String)>,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    if bot != format!("bot{BOT_TOKEN}") {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"ok": false, "error_code": 401, "description": "Unauthorized"})),
        );
    }
    if method == "sendMessage" {
        let fate = {
            let mut guard = state.lock().unwrap();
            match (guard.script.is_empty(), guard.chaos.as_mut()) {
                (true, Some(chaos)) => Some(chaos.draw()),
                _ => None,
            }
        };
        match fate {
            Some(Fate::Timeout) => {
                tokio::time::sleep(Duration::from_secs(30)).await;
                return (
                    StatusCode::GATEWAY_TIMEOUT,
                    Json(json!({"ok": false, "error_code": 504, "description": "Gateway Timeout"})),
                );
            }
            Some(Fate::Slow(delay)) => tokio::time::sleep(delay).await,
            Some(Fate::Reply(reply)) => state.lock().unwrap().script.push_front(reply),
            None => {}
        }
        let hang = matches!(
            state.lock().unwrap().script.front(),
            Some(Reply::AcceptThenHang)
        );
        let answer = fake_send_message(&state, &body);
        if hang {
            state.lock().unwrap().hung += 1;
            tokio::time::sleep(Duration::from_secs(600)).await;
        }
        return answer;
    }
    if method == "editMessageText" {
        return fake_edit_message(&state, &body);
    }
    let (answer, idle) = fake_other_method(&state, &method, &body);
    if idle {
        // A long poll with nothing to say waits a little, as the real one waits up to `timeout`.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    answer
}

/// Every method but `sendMessage`; `true` when a `getUpdates` found nothing.
fn fake_other_method(
    state: &Arc<Mutex<FakeState>>,
    method: &str,
    body: &Value,
) -> ((StatusCode, Json<Value>), bool) {
    let mut guard = state.lock().unwrap();
    guard.other_calls.push((method.to_owned(), body.clone()));
    let answer = match method {
        "getMe" => ok(
            json!({"id": 123456, "is_bot": true, "first_name": "Herald", "username": "herald_test_bot"}),
        ),
        "getUpdates" => {
            // Telegram forgets every update below the offset, and answers from there on.
            let offset = body["offset"].as_i64().unwrap_or(0);
            guard
                .updates
                .retain(|u| u["update_id"].as_i64().unwrap_or(0) >= offset);
            let batch: Vec<Value> = guard.updates.iter().take(100).cloned().collect();
            return (ok(json!(batch)), batch.is_empty());
        }
        "getChatMember" => {
            let pair = (
                body["chat_id"].as_i64().unwrap_or(0),
                body["user_id"].as_i64().unwrap_or(0),
            );
            let status = if guard.admins.contains(&pair) {
                "administrator"
            } else {
                "member"
            };
            ok(
                json!({"status": status, "user": {"id": pair.1, "is_bot": false, "first_name": "u"}}),
            )
        }
        "setWebhook" | "deleteWebhook" | "answerCallbackQuery" => ok(json!(true)),
        _ => (
            StatusCode::NOT_FOUND,
            Json(
                json!({"ok": false, "error_code": 404, "description": "Not Found: method not found"}),
            ),
        ),
    };
    (answer, false)
}

fn fake_send_message(state: &Arc<Mutex<FakeState>>, body: &Value) -> (StatusCode, Json<Value>) {
    let message = SentMessage {
        chat_id: body["chat_id"].as_i64().unwrap_or_default(),
        text: body["text"].as_str().unwrap_or_default().to_owned(),
        parse_mode: body["parse_mode"].as_str().map(str::to_owned),
        topic_id: body["message_thread_id"].as_i64(),
        buttons: body["reply_markup"]["inline_keyboard"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|row| row.as_array().cloned().unwrap_or_default())
            .map(|b| {
                (
                    b["text"].as_str().unwrap_or_default().to_owned(),
                    b["callback_data"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect(),
    };
    let mut state = state.lock().unwrap();
    state.calls.push(message.clone());
    let mut reply = state.script.pop_front().unwrap_or(Reply::Ok);
    if state.enforce_limits {
        if let Some(retry_after) = over_telegram_limits(&state, message.chat_id) {
            state.limited += 1;
            reply = Reply::TooManyRequests { retry_after };
        }
    }
    if message.text.encode_utf16().count() > 4096 {
        return (
            StatusCode::BAD_REQUEST,
            Json(
                json!({"ok": false, "error_code": 400, "description": "Bad Request: message is too long"}),
            ),
        );
    }
    match reply {
        Reply::Ok | Reply::AcceptThenHang => {
            state
                .accepted_at
                .push((std::time::Instant::now(), message.chat_id));
            state.delivered.push(message.clone());
            let message_id = state.delivered.len();
            ok(
                json!({"message_id": message_id, "chat": {"id": message.chat_id}, "text": message.text}),
            )
        }
        Reply::TooManyRequests { retry_after } => (
            StatusCode::TOO_MANY_REQUESTS,
            Json(
                json!({"ok": false, "error_code": 429, "description": format!("Too Many Requests: retry after {retry_after}"), "parameters": {"retry_after": retry_after}}),
            ),
        ),
        Reply::Blocked => (
            StatusCode::FORBIDDEN,
            Json(
                json!({"ok": false, "error_code": 403, "description": "Forbidden: bot was blocked by the user"}),
            ),
        ),
        Reply::ChatNotFound => (
            StatusCode::BAD_REQUEST,
            Json(
                json!({"ok": false, "error_code": 400, "description": "Bad Request: chat not found"}),
            ),
        ),
        Reply::ServerError => (
            StatusCode::BAD_GATEWAY,
            Json(json!({"ok": false, "error_code": 502, "description": "Bad Gateway"})),
        ),
    }
}

fn fake_edit_message(state: &Arc<Mutex<FakeState>>, body: &Value) -> (StatusCode, Json<Value>) {
    let chat_id = body["chat_id"].as_i64().unwrap_or_default();
    let message_id = body["message_id"].as_i64().unwrap_or_default();
    let text = body["text"].as_str().unwrap_or_default().to_owned();
    let mut state = state.lock().unwrap();
    state
        .other_calls
        .push(("editMessageText".to_owned(), body.clone()));
    let bad = |description: &str| {
        (
            StatusCode::BAD_REQUEST,
            Json(json!({"ok": false, "error_code": 400, "description": description})),
        )
    };
    // Message ids are positions in `delivered`, starting at 1.
    let index = usize::try_from(message_id - 1).ok();
    let Some(message) = index
        .and_then(|i| state.delivered.get_mut(i))
        .filter(|m| m.chat_id == chat_id)
    else {
        return bad("Bad Request: message to edit not found");
    };
    if message.text == text {
        return bad("Bad Request: message is not modified: specified new message content and reply markup are exactly the same as a current content and reply markup of the message");
    }
    message.text = text.clone();
    state.edits.push((chat_id, message_id, text.clone()));
    ok(json!({"message_id": message_id, "chat": {"id": chat_id}, "text": text}))
}

impl FakeTelegram {
    pub async fn start() -> Self {
        let state = Arc::new(Mutex::new(FakeState::default()));
        let app = Router::new()
            .route("/{bot}/{method}", post(fake_bot_api))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url, state }
    }

    /// Answer the next calls with these replies, in order (then `Ok`).
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.state.lock().unwrap().script.extend(replies);
    }

    /// Every `sendMessage` call, answered or refused.
    pub fn calls(&self) -> Vec<SentMessage> {
        self.state.lock().unwrap().calls.clone()
    }

    /// Messages the fake accepted (what a chat would show).
    pub fn delivered(&self) -> Vec<SentMessage> {
        self.state.lock().unwrap().delivered.clone()
    }

    /// Queue an update for `getUpdates`.
    pub fn push_update(&self, update: Value) {
        self.state.lock().unwrap().updates.push(update);
    }

    /// Updates `getUpdates` would still return (not yet confirmed by an offset).
    pub fn unconfirmed_updates(&self) -> usize {
        self.state.lock().unwrap().updates.len()
    }

    /// From now on, answer 429 to whatever breaks Telegram's rate limits, as the real API does.
    pub fn enforce_limits(&self) {
        self.state.lock().unwrap().enforce_limits = true;
    }

    /// When the messages to `chat` were accepted, in order.
    pub fn accepted_times(&self, chat: i64) -> Vec<std::time::Instant> {
        self.state
            .lock()
            .unwrap()
            .accepted_at
            .iter()
            .filter(|(_, c)| *c == chat)
            .map(|(at, _)| *at)
            .collect()
    }

    /// From now on, misbehave at these rates (seeded, so a run can be repeated) where no script decides.
    pub fn chaos(&self, seed: u64, rates: ChaosRates) {
        use rand::SeedableRng;
        self.state.lock().unwrap().chaos = Some(Chaos {
            rng: rand::rngs::StdRng::seed_from_u64(seed),
            rates,
        });
    }

    /// Forget the replies scripted and not used yet.
    pub fn unscript(&self) {
        self.state.lock().unwrap().script.clear();
    }

    /// Behave again.
    pub fn calm(&self) {
        self.state.lock().unwrap().chaos = None;
    }

    /// Messages taken and left unanswered (`AcceptThenHang`) so far.
    pub fn hung(&self) -> usize {
        self.state.lock().unwrap().hung
    }

    /// How many sends the rate limits refused.
    pub fn limited(&self) -> usize {
        self.state.lock().unwrap().limited
    }

    /// Messages changed by `editMessageText`: `(chat, message_id, new text)`.
    pub fn edits(&self) -> Vec<(i64, i64, String)> {
        self.state.lock().unwrap().edits.clone()
    }

    pub fn make_admin(&self, chat_id: i64, user_id: i64) {
        self.state.lock().unwrap().admins.push((chat_id, user_id));
    }

    /// Calls of `method` (other than `sendMessage`), with their bodies.
    pub fn calls_of(&self, method: &str) -> Vec<Value> {
        self.state
            .lock()
            .unwrap()
            .other_calls
            .iter()
            .filter(|(m, _)| m == method)
            .map(|(_, body)| body.clone())
            .collect()
    }
}

pub struct CreatedProject {
    pub id: Uuid,
    pub secret: String,
}

pub struct TestApp {
    pub addr: SocketAddr,
    /// Sends the admin key with every request.
    pub http: reqwest::Client,
    /// Sends no credentials, as a CI system posting a signed webhook does.
    pub anonymous: reqwest::Client,
    pub pool: PgPool,
    pub telegram: FakeTelegram,
    pub settings: Settings,
    pub database: String,
    running: Option<Running>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Bus {
    InProcess,
    Kafka,
}

/// A fresh database on the local server, migrated by Herald at start.
pub async fn fresh_database() -> String {
    let name = format!("herald_test_{}", Uuid::new_v4().simple());
    let mut admin = PgConnection::connect(&admin_url())
        .await
        .expect("the test Postgres is reachable (127.0.0.1:5432 or HERALD_TEST_DATABASE_URL)");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .expect("create test database");
    name
}

pub fn settings_for(database: &str, bus: Bus, telegram: &FakeTelegram) -> Settings {
    let unique = Uuid::new_v4().simple().to_string();
    Settings {
        listen: "127.0.0.1:0".parse().unwrap(),
        public_url: "http://herald.test".into(),
        kafka: (bus == Bus::Kafka).then(|| KafkaConfig {
            brokers: kafka_brokers(),
            topic: format!("herald-test-{unique}"),
            partitions: 3,
            group_prefix: format!("herald-test-{unique}"),
            fetch_wait_ms: workers::DEFAULT_FETCH_WAIT_MS,
        }),
        telegram: Some(TelegramConfig {
            api_url: telegram.url.clone(),
            bot_token: BOT_TOKEN.into(),
            timeout: Duration::from_secs(5),
        }),
        delivery: workers::DeliverySettings {
            default_max_attempts: 3,
            ..workers::DeliverySettings::default()
        },
        jwt: api::auth::jwt::JwtKeys::new(JWT_SECRET),
        // Tests drive far more traffic from one address than a person would; the limits get their own tests.
        limits: api::limits::LimitSettings {
            api: api::limits::Rate::new(100_000, 100_000).unwrap(),
            webhooks: api::limits::Rate::new(100_000, 100_000).unwrap(),
            trust_forwarded_for: false,
        },
        ..Settings::new(database_url(database))
    }
}

/// Rebuild `target` ("all" or one read model) blue/green now, in batches of `batch_size` (the default when
/// `None`), showing no progress.
pub async fn rebuild_now(pool: &PgPool, target: &str, batch_size: Option<i64>) {
    let mut progress = |_: u64, _: u64| {};
    projections::rebuild::run(
        pool,
        projections::rebuild::Rebuild {
            target: projections::rebuild::Target::parse(target).unwrap(),
            snapshot: None,
            progress: &mut progress,
            stop_after: None,
            batch_size,
        },
    )
    .await
    .unwrap();
}

/// The JWT secret test apps accept.
pub const JWT_SECRET: &str = "test-jwt-secret-0123456789abcdef0123456789";

/// A key with `role` on `pool`'s Herald (producers need `projects`).
pub async fn create_key(pool: &PgPool, role: api::auth::Role, projects: &[Uuid]) -> String {
    api::auth::keys::ApiKeys::new(pool.clone())
        .create(&api::auth::keys::KeySpec {
            name: &format!("test {}", role.as_str()),
            role,
            projects,
            subscriber_id: None,
            expires_at: None,
        })
        .await
        .expect("create key")
        .key
}

/// An HTTP client that sends `credential` as a bearer token with every request.
pub fn client_with(credential: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {credential}").parse().unwrap(),
    );
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap()
}

/// Herald all-in-one on a fresh database.
pub async fn spawn_app(bus: Bus) -> TestApp {
    spawn_app_with(bus, &Role::ALL).await
}

/// Herald with only `roles` running (the API is always started, on a free port).
pub async fn spawn_app_with(bus: Bus, roles: &[Role]) -> TestApp {
    spawn_app_configured(bus, roles, |_| {}).await
}

/// [`spawn_app_with`], with settings changed by `edit` first.
pub async fn spawn_app_configured(
    bus: Bus,
    roles: &[Role],
    edit: impl FnOnce(&mut Settings),
) -> TestApp {
    let telegram = FakeTelegram::start().await;
    let database = fresh_database().await;
    let mut settings = settings_for(&database, bus, &telegram);
    edit(&mut settings);
    let mut roles = roles.to_vec();
    if !roles.contains(&Role::Api) {
        roles.push(Role::Api);
    }
    let running = herald::start(&settings, &roles)
        .await
        .expect("herald starts");
    let pool = herald::connect(&settings.database_url).await.unwrap();
    let admin_key = create_key(&pool, api::auth::Role::Admin, &[]).await;
    TestApp {
        addr: running.api_addr.expect("api runs"),
        http: client_with(&admin_key),
        anonymous: reqwest::Client::new(),

        pool,
        telegram,
        settings,
        database,
        running: Some(running),
    }
}

/// Poll `check` until it holds or `timeout` passes; panics with `what` on timeout.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http.get(self.url(path)).send().await.unwrap()
    }

    pub async fn post_json(&self, path: &str, body: Value) -> reqwest::Response {
        self.http
            .post(self.url(path))
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    pub async fn create_project(&self, name: &str) -> CreatedProject {
        let response = self
            .post_json("/api/v1/projects", json!({ "name": name }))
            .await;
        assert_eq!(response.status(), 201);
        let body: Value = response.json().await.unwrap();
        CreatedProject {
            id: body["project_id"].as_str().unwrap().parse().unwrap(),
            secret: body["webhook_secret"].as_str().unwrap().to_owned(),
        }
    }

    /// POST a GitHub delivery signed with the project's secret, as GitHub would.
    pub async fn post_github(
        &self,
        project: &CreatedProject,
        event: &str,
        body: &[u8],
        delivery: &str,
    ) -> reqwest::Response {
        let signature = commands::providers::sign(&project.secret, body);
        self.post_github_signed(project.id, event, body, delivery, Some(&signature))
            .await
    }

    pub async fn post_github_signed(
        &self,
        project_id: Uuid,
        event: &str,
        body: &[u8],
        delivery: &str,
        signature: Option<&str>,
    ) -> reqwest::Response {
        let mut request = self
            .anonymous
            .post(self.url(&format!("/api/v1/webhooks/github/{project_id}")))
            .header("content-type", "application/json")
            .header("x-github-event", event)
            .header("x-github-delivery", delivery)
            .header("user-agent", "GitHub-Hookshot/test")
            .body(body.to_vec());
        if let Some(signature) = signature {
            request = request.header("x-hub-signature-256", signature);
        }
        request.send().await.unwrap()
    }

    /// POST a delivery to any provider's webhook URL with the given headers and query string.
    pub async fn post_webhook(
        &self,
        provider: &str,
        project_id: Uuid,
        query: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> reqwest::Response {
        let mut request = self
            .anonymous
            .post(self.url(&format!("/api/v1/webhooks/{provider}/{project_id}{query}")))
            .header("content-type", "application/json")
            .body(body.to_vec());
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send().await.unwrap()
    }

    pub async fn subscribe(
        &self,
        project: Uuid,
        chat_id: i64,
        outcomes: Option<Vec<&str>>,
    ) -> Uuid {
        let mut body = json!({ "project_id": project, "chat_id": chat_id });
        if let Some(outcomes) = outcomes {
            body["outcomes"] = json!(outcomes);
        }
        let response = self.post_json("/api/v1/subscriptions", body).await;
        assert_eq!(response.status(), 201);
        let body: Value = response.json().await.unwrap();
        let id: Uuid = body["subscription_id"].as_str().unwrap().parse().unwrap();
        // The planner reads the subscriptions read model: wait until it has the new row.
        let pool = self.pool.clone();
        wait_until(
            "the subscription is projected",
            Duration::from_secs(10),
            || {
                let pool = pool.clone();
                async move {
                    projections::queries::subscription(&pool, id)
                        .await
                        .unwrap()
                        .is_some()
                }
            },
        )
        .await;
        id
    }

    /// Post GitHub's "workflow run `run` completed with failure" for `project`; 202 expected.
    pub async fn fail_run(&self, project: &CreatedProject, run: i64) {
        let body = fixture_with("workflow_run/completed.payload.json", |v| {
            v["workflow_run"]["id"] = run.into();
            v["workflow_run"]["conclusion"] = "failure".into();
        });
        let response = self
            .post_github(project, "workflow_run", &body, &format!("failed-run-{run}"))
            .await;
        assert_eq!(response.status(), 202);
    }

    /// A subscriber with `preferences` and one verified contact at `address`,
    /// subscribed to `outcomes` of `project`, once the planner can see it. Returns (subscriber, contact).
    pub async fn contact_subscription(
        &self,
        project: Uuid,
        address: domain::ContactAddress,
        preferences: domain::Preferences,
        outcomes: &[&str],
    ) -> (Uuid, Uuid) {
        let commands = commands::Commands::new(self.pool.clone());
        let none = commands::Metadata::new();
        let subscriber = commands
            .register_subscriber("Someone", preferences.clone(), &none)
            .await
            .unwrap();
        let contact = Uuid::new_v4();
        if address.needs_verification() {
            let (token, hash) = commands::Commands::verification_token(subscriber, contact);
            commands
                .add_contact(subscriber, contact, address, Some(hash), &none)
                .await
                .unwrap();
            commands.verify_contact(&token, &none).await.unwrap();
        } else {
            commands
                .add_contact(subscriber, contact, address, None, &none)
                .await
                .unwrap();
        }
        let filter = commands::FilterInput {
            project_id: Some(project),
            outcomes: Some(outcomes.iter().map(|o| o.to_string()).collect()),
            ..commands::FilterInput::default()
        };
        let target = domain::SubscriptionTarget::Contact {
            subscriber_id: subscriber,
            contact_id: contact,
        };
        let subscription = commands
            .subscribe(target, filter.parse().unwrap(), &none)
            .await
            .unwrap();
        let pool = self.pool.clone();
        wait_until(
            "the subscription, its contact and its subscriber are projected",
            Duration::from_secs(10),
            || {
                let pool = pool.clone();
                async move {
                    sqlx::query_scalar::<_, bool>(
                        "SELECT EXISTS (SELECT 1 FROM subscriptions s JOIN contacts c USING (contact_id)
                           JOIN subscribers r ON r.subscriber_id = s.subscriber_id
                          WHERE s.subscription_id = $1 AND r.edit_in_place = $2)",
                    )
                    .bind(subscription)
                    .bind(preferences.edit_in_place)
                    .fetch_one(&pool)
                    .await
                    .unwrap()
                }
            },
        )
        .await;
        (subscriber, contact)
    }

    /// A delivery worker with only this app's (fake) Telegram, for a test that runs delivery turns itself.
    pub fn telegram_worker(&self, commands: Arc<commands::Commands>) -> workers::DeliveryWorker {
        let mut providers = workers::Providers::new(None);
        providers.telegram =
            Some(workers::TelegramClient::new(self.settings.telegram.clone().unwrap()).unwrap());
        workers::DeliveryWorker::new(
            commands,
            providers,
            self.settings.delivery.clone(),
            Arc::new(tokio::sync::Notify::new()),
        )
    }

    pub async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sql).fetch_one(&self.pool).await.unwrap()
    }

    /// Events in the log, all aggregates.
    pub async fn event_count(&self) -> i64 {
        self.count("SELECT count(*) FROM events").await
    }

    /// Wait until the fake Telegram has accepted at least `n` messages.
    pub async fn wait_for_messages(&self, n: usize) {
        let telegram = self.telegram.clone();
        wait_until(
            &format!("{n} message(s) reach Telegram"),
            Duration::from_secs(20),
            || {
                let telegram = telegram.clone();
                async move { telegram.delivered().len() >= n }
            },
        )
        .await;
    }

    /// Wait until `n` notifications have `status` in the read model.
    pub async fn wait_for_notifications(&self, status: &str, n: i64) {
        let pool = self.pool.clone();
        let status = status.to_owned();
        wait_until(
            &format!("{n} notification(s) are {status}"),
            Duration::from_secs(20),
            || {
                let (pool, status) = (pool.clone(), status.clone());
                async move {
                    sqlx::query_scalar::<_, i64>(
                        "SELECT count(*) FROM notifications WHERE status = $1",
                    )
                    .bind(status)
                    .fetch_one(&pool)
                    .await
                    .unwrap()
                        == n
                }
            },
        )
        .await;
    }

    /// Wait until every committed event went through the stream and every queued notification was handled.
    pub async fn drain(&self) {
        let pool = self.pool.clone();
        wait_until("outbox and delivery queue drain", Duration::from_secs(20), || {
            let pool = pool.clone();
            async move {
                let pending: i64 = sqlx::query_scalar(
                    "SELECT (SELECT count(*) FROM outbox) + (SELECT count(*) FROM delivery_queue WHERE next_attempt_at <= now())",
                )
                .fetch_one(&pool)
                .await
                .unwrap();
                let unprojected: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM (SELECT aggregate_type, aggregate_id, max(sequence) AS last FROM events GROUP BY 1, 2) e
                      WHERE NOT EXISTS (SELECT 1 FROM projection_checkpoints c WHERE c.aggregate_type = e.aggregate_type
                                        AND c.aggregate_id = e.aggregate_id AND c.last_sequence = e.last)",
                )
                .fetch_one(&pool)
                .await
                .unwrap();
                pending == 0 && unprojected == 0
            }
        })
        .await;
    }

    /// Stop Herald and drop the test database.
    pub async fn finish(mut self) {
        if let Some(running) = self.running.take() {
            running.stop().await;
        }
        self.pool.close().await;
        drop_database(&self.database).await;
    }
}

pub async fn drop_database(name: &str) {
    if let Ok(mut admin) = PgConnection::connect(&admin_url()).await {
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut admin)
            .await;
    }
}

/// Every read-model row, as sorted JSON text, for comparing two databases.
pub async fn read_models(pool: &PgPool) -> Vec<String> {
    let mut rows = Vec::new();
    for table in projections::PROJECTIONS {
        let json: Vec<String> = sqlx::query_scalar(&format!(
            "SELECT to_jsonb(t)::text FROM {table} t ORDER BY to_jsonb(t)::text"
        ))
        .fetch_all(pool)
        .await
        .unwrap();
        rows.extend(json.into_iter().map(|j| format!("{table}: {j}")));
    }
    rows
}

/// The connection URL of another database on the test server.
pub fn url_of(database: &str) -> String {
    database_url(database)
}
