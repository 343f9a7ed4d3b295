//! A Telegram Bot API stand-in for the benchmarks: answers `sendMessage` the way Telegram does, including its
//! `429 Too Many Requests` with `retry_after` when a chat gets more than its share, and counts what it took.
//!
//! The limits it enforces are Telegram's documented ones for bots (about one message per second in a chat; an
//! overall rate when one is set), so a 429 here means Herald broke the limits it is configured to keep. The tests'
//! fake (tests/api/helpers.rs) does more (chaos, getUpdates); this one is only what the benchmarks measure with.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

/// The limits the fake holds callers to; 0 turns one off.
#[derive(Debug, Clone, Copy)]
pub struct FakeLimits {
    pub per_chat_per_sec: u32,
    pub overall_per_sec: u32,
}

#[derive(Default)]
struct Windows {
    /// When each chat last got messages, within the last second.
    chats: HashMap<i64, Vec<Instant>>,
    overall: std::collections::VecDeque<Instant>,
}

struct Shared {
    limits: FakeLimits,
    sent: AtomicU64,
    rejected: AtomicU64,
    windows: Mutex<Windows>,
    /// Who waits for the message about which run (the number after `run-` in the text).
    waiters: Mutex<HashMap<u64, oneshot::Sender<Instant>>>,
}

pub struct FakeTelegram {
    pub url: String,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
}

/// A window of one second, counted a little short: the caller's clock and ours see the same gap a few
/// milliseconds apart, and Telegram itself does not cut at the millisecond.
const WINDOW: Duration = Duration::from_millis(950);

impl FakeTelegram {
    pub async fn start(limits: FakeLimits) -> anyhow::Result<Self> {
        let shared = Arc::new(Shared {
            limits,
            sent: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            windows: Mutex::new(Windows::default()),
            waiters: Mutex::new(HashMap::new()),
        });
        let app = Router::new()
            .route("/{bot}/{method}", post(call))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let url = format!("http://{}", listener.local_addr()?);
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await;
        });
        Ok(Self {
            url,
            shared,
            shutdown,
        })
    }

    /// Messages taken (answered 200).
    pub fn sent(&self) -> u64 {
        self.shared.sent.load(Ordering::Relaxed)
    }

    /// Messages refused with 429.
    pub fn rejected(&self) -> u64 {
        self.shared.rejected.load(Ordering::Relaxed)
    }

    /// Resolves when a message naming `run-{run}` arrives, with the instant it did.
    pub fn wait_for_run(&self, run: u64) -> oneshot::Receiver<Instant> {
        let (tx, rx) = oneshot::channel();
        if let Ok(mut waiters) = self.shared.waiters.lock() {
            waiters.insert(run, tx);
        }
        rx
    }

    /// Wait until `count` messages were taken, or `timeout` passed; returns whether they were.
    pub async fn wait_for_sent(&self, count: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.sent() < count {
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        true
    }

    /// Wait until no message arrived for `quiet`, or `timeout` passed.
    pub async fn wait_until_quiet(&self, quiet: Duration, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let (mut seen, mut since) = (self.sent(), Instant::now());
        while Instant::now() < deadline && since.elapsed() < quiet {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let now = self.sent();
            if now != seen {
                (seen, since) = (now, Instant::now());
            }
        }
    }
}

impl Drop for FakeTelegram {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// The run number in a message text: the digits after `run-`.
fn run_in(text: &str) -> Option<u64> {
    let rest = &text[text.find("run-")? + 4..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

fn too_many(retry_after: u64) -> (StatusCode, Json<Value>) {
    (
        StatusCode::TOO_MANY_REQUESTS,
        Json(json!({
            "ok": false,
            "error_code": 429,
            "description": format!("Too Many Requests: retry after {retry_after}"),
            "parameters": { "retry_after": retry_after },
        })),
    )
}

async fn call(
    State(shared): State<Arc<Shared>>,
    Path((bot, method)): Path<(String, String)>,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    if !bot.starts_with("bot") {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"ok": false, "error_code": 404, "description": "Not Found"})),
        );
    }
    match method.as_str() {
        "getMe" => (
            StatusCode::OK,
            Json(
                json!({"ok": true, "result": {"id": 1, "is_bot": true, "first_name": "Herald", "username": "herald_bench_bot"}}),
            ),
        ),
        "sendMessage" => send_message(&shared, &body),
        _ => (StatusCode::OK, Json(json!({"ok": true, "result": true}))),
    }
}

fn send_message(shared: &Shared, body: &Value) -> (StatusCode, Json<Value>) {
    let (Some(chat), Some(text)) = (body["chat_id"].as_i64(), body["text"].as_str()) else {
        return (
            StatusCode::BAD_REQUEST,
            Json(
                json!({"ok": false, "error_code": 400, "description": "Bad Request: chat_id and text are required"}),
            ),
        );
    };
    let now = Instant::now();
    {
        let Ok(mut windows) = shared.windows.lock() else {
            return too_many(1);
        };
        let limits = shared.limits;
        if limits.overall_per_sec > 0 {
            while windows
                .overall
                .front()
                .is_some_and(|t| now.duration_since(*t) >= WINDOW)
            {
                windows.overall.pop_front();
            }
            if windows.overall.len() >= limits.overall_per_sec as usize {
                shared.rejected.fetch_add(1, Ordering::Relaxed);
                return too_many(1);
            }
        }
        if limits.per_chat_per_sec > 0 {
            let times = windows.chats.entry(chat).or_default();
            times.retain(|t| now.duration_since(*t) < WINDOW);
            if times.len() >= limits.per_chat_per_sec as usize {
                shared.rejected.fetch_add(1, Ordering::Relaxed);
                return too_many(1);
            }
            times.push(now);
        }
        if limits.overall_per_sec > 0 {
            windows.overall.push_back(now);
        }
    }
    let id = shared.sent.fetch_add(1, Ordering::Relaxed) + 1;
    if let Some(run) = run_in(text) {
        if let Some(waiter) = shared.waiters.lock().ok().and_then(|mut w| w.remove(&run)) {
            let _ = waiter.send(now);
        }
    }
    (
        StatusCode::OK,
        Json(json!({
            "ok": true,
            "result": {
                "message_id": id,
                "date": chrono::Utc::now().timestamp(),
                "chat": { "id": chat, "type": if chat > 0 { "private" } else { "group" } },
                "text": text,
            }
        })),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_run_is_read_from_the_branch_in_the_text() {
        assert_eq!(run_in("Branch: <code>run-42</code>"), Some(42));
        assert_eq!(run_in("no run here"), None);
        assert_eq!(run_in("run-x"), None);
    }

    #[tokio::test]
    async fn a_second_message_to_a_chat_within_a_second_is_refused_with_retry_after() {
        let fake = FakeTelegram::start(FakeLimits {
            per_chat_per_sec: 1,
            overall_per_sec: 0,
        })
        .await
        .unwrap();
        let http = reqwest::Client::new();
        let send = |chat: i64| {
            http.post(format!("{}/botT/sendMessage", fake.url))
                .json(&json!({"chat_id": chat, "text": "run-1"}))
                .send()
        };
        assert_eq!(send(7).await.unwrap().status(), 200);
        assert_eq!(send(8).await.unwrap().status(), 200);
        let refused = send(7).await.unwrap();
        assert_eq!(refused.status(), 429);
        let body: Value = refused.json().await.unwrap();
        assert_eq!(body["parameters"]["retry_after"], 1);
        assert_eq!((fake.sent(), fake.rejected()), (2, 1));
    }
}
