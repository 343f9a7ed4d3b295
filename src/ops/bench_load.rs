//! `herald bench load`: many users at once against a real `herald run` process, and its memory over time.
//!
//! Herald runs as a child process (this binary, `herald run`, all-in-one on the in-process bus) so that its
//! resident memory is its own and not the load generator's. Then, for a bounded time:
//!
//! - **readers** (80 % of the users) each ask for the overview, the project list or a project's statistics once
//!   a second;
//! - **writers** (10 %) each post a signed generic webhook once a second;
//! - **live** users (10 %) each hold the SSE stream open for the whole run and read what it sends.
//!
//! Every reader and writer has its own fixed schedule (open-loop per user): a request is due at
//! `start + offset + k seconds` and its latency counts from then, so a stall shows as latency instead of as fewer
//! requests. Herald's memory is sampled every second: idle before the load, then under it; the first and last
//! fifth of the samples tell whether it stays flat over a soak run.
//!
//! The read model holds `builds` generated runs (as `herald bench analytics` seeds them).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use sqlx::postgres::PgConnectOptions;
use sqlx::ConnectOptions;
use tokio::sync::Mutex;

/// What one kind of user saw.
#[derive(Debug, Clone, Serialize)]
pub struct UserKind {
    pub kind: &'static str,
    pub users: usize,
    pub requests: u64,
    pub errors: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
}

#[derive(Debug, Serialize)]
pub struct LoadBench {
    pub scenario: &'static str,
    pub users: usize,
    pub seconds: u64,
    pub builds: u64,
    pub kinds: Vec<UserKind>,
    /// SSE frames (events and heartbeats) the live users received in all.
    pub live_frames: u64,
    pub errors: u64,
    /// Why requests failed, `<kind>: <reason>` → how many.
    pub error_reasons: BTreeMap<String, u64>,
    pub idle_rss_mib: f64,
    pub peak_rss_mib: f64,
    /// Mean resident memory over the first and the last fifth of the run.
    pub rss_first_fifth_mib: f64,
    pub rss_last_fifth_mib: f64,
    /// One sample a second, from the start of the load.
    pub rss_samples_mib: Vec<f64>,
}

/// A `herald run` child, stopped when dropped.
struct Herald {
    child: std::process::Child,
    base: String,
}

impl Herald {
    fn start(exe: &std::path::Path, database_url: &str) -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let child = std::process::Command::new(exe)
            .arg("run")
            .env("DATABASE_URL", database_url)
            .env("HERALD_DATABASE_URL", database_url)
            .env("HERALD_LISTEN", format!("127.0.0.1:{port}"))
            .env("HERALD_LOG", "warn")
            // Every user comes from 127.0.0.1: per-client limits would refuse them as one abusive client.
            .env("HERALD_RATE_LIMIT_PER_SECOND", "1000000")
            .env("HERALD_RATE_LIMIT_BURST", "1000000")
            .env("HERALD_WEBHOOK_RATE_LIMIT_PER_SECOND", "1000000")
            .env("HERALD_WEBHOOK_RATE_LIMIT_BURST", "1000000")
            .env("HERALD_DATABASE_MAX_CONNECTIONS", "40")
            .env_remove("HERALD_KAFKA_BROKERS")
            .env_remove("HERALD_TELEGRAM_BOT_TOKEN")
            .env_remove("HERALD_CONFIG")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .context("cannot start `herald run`")?;
        Ok(Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
        })
    }

    /// `VmRSS` (now) or `VmHWM` (peak) of the child, in MiB.
    fn memory(&self, field: &str) -> f64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with(field))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|kb| kb.parse::<f64>().ok())
            })
            .map_or(f64::NAN, |kb| kb / 1024.0)
    }

    async fn ready(&mut self, http: &reqwest::Client) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(status) = self.child.try_wait()? {
                anyhow::bail!("`herald run` exited ({status}) before it was ready");
            }
            if let Ok(r) = http.get(format!("{}/ready", self.base)).send().await {
                if r.status().is_success() {
                    return Ok(());
                }
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "`herald run` was not ready in 2 minutes"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for Herald {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One user's fixed schedule: a turn due at `first + k seconds` for k = 0, 1, … before `deadline`, kept
/// whatever the answers take (a late answer makes the next request late, and its latency counts from its turn).
struct Schedule {
    first: Instant,
    deadline: Instant,
    k: u64,
}

impl Schedule {
    fn new(first: Instant, deadline: Instant) -> Self {
        Self {
            first,
            deadline,
            k: 0,
        }
    }

    /// Wait for the next turn; its number and when it was due, or `None` once the run is over.
    async fn next(&mut self) -> Option<(u64, Instant)> {
        let due = self.first + Duration::from_secs(self.k);
        if due >= self.deadline {
            return None;
        }
        tokio::time::sleep_until(due.into()).await;
        self.k += 1;
        Some((self.k - 1, due))
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1]
}

fn mean(values: &[f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.iter().sum::<f64>() / values.len() as f64
}

#[derive(Default)]
struct Tally {
    latencies: Mutex<HashMap<&'static str, Vec<f64>>>,
    errors: Mutex<HashMap<&'static str, u64>>,
    /// Why requests failed, `<kind>: <reason>` → how many.
    reasons: Mutex<BTreeMap<String, u64>>,
    live_frames: AtomicU64,
}

impl Tally {
    async fn record(&self, kind: &'static str, outcome: Result<f64, String>) {
        match outcome {
            Ok(ms) => self
                .latencies
                .lock()
                .await
                .entry(kind)
                .or_default()
                .push(ms),
            Err(reason) => {
                *self.errors.lock().await.entry(kind).or_default() += 1;
                *self.reasons.lock().await.entry(reason).or_default() += 1;
            }
        }
    }
}

/// What went wrong with a request, in a word or two.
fn error_kind(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else if e.is_body() || e.is_decode() {
        "broken body"
    } else if e.is_request() {
        "request failed (connection closed?)"
    } else {
        "failed"
    }
}

/// `exe`: the `herald` binary to run (the CLI passes itself).
pub async fn load(
    exe: &std::path::Path,
    database_url: &str,
    users: usize,
    seconds: u64,
    builds: u64,
) -> anyhow::Result<LoadBench> {
    super::bench::in_scratch_database(database_url, "herald_bench_load", async |options| {
        run(exe, options, users.max(10), seconds.max(1), builds).await
    })
    .await
}

async fn run(
    exe: &std::path::Path,
    options: PgConnectOptions,
    users: usize,
    seconds: u64,
    builds: u64,
) -> anyhow::Result<LoadBench> {
    let url = options.to_url_lossy().to_string();
    let pool = crate::connect(&url).await?;
    commands::migrate(&pool).await?;
    eprintln!("seeding {builds} runs into the read model");
    super::bench_analytics::seed(&pool, builds).await?;
    let commands = commands::Commands::new(pool.clone());
    let mut writable = Vec::new();
    for i in 0..10 {
        let name = domain::ProjectName::parse(&format!("load-{i}"))?;
        writable.push(commands.create_project(name, &Default::default()).await?);
    }
    let readable: Vec<uuid::Uuid> =
        sqlx::query_scalar("SELECT project_id FROM projects ORDER BY name LIMIT 100")
            .fetch_all(&pool)
            .await?;

    let mut herald = Herald::start(exe, &url)?;
    let http = super::bench::reader_client(&pool, users, Duration::from_secs(30)).await?;
    // CI systems post webhooks with their signature alone, no API key.
    let hooks = reqwest::Client::builder()
        .pool_max_idle_per_host(users)
        .pool_idle_timeout(super::bench::CLIENT_IDLE)
        .timeout(Duration::from_secs(30))
        .build()?;
    herald.ready(&http).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle_rss_mib = herald.memory("VmRSS:");
    eprintln!("herald idle: {idle_rss_mib:.1} MiB resident");

    let live_users = users / 10;
    let writers = users / 10;
    let readers = users - live_users - writers;
    eprintln!(
        "{users} users for {seconds} s: {readers} readers, {writers} webhook writers, {live_users} live streams"
    );
    let tally = Arc::new(Tally::default());
    let start = Instant::now() + Duration::from_millis(500);
    let deadline = start + Duration::from_secs(seconds);
    let mut tasks = Vec::with_capacity(users);
    let base = herald.base.clone();

    for user in 0..live_users {
        let (http, base, tally) = (http.clone(), base.clone(), tally.clone());
        tasks.push(tokio::spawn(async move {
            let opened = Instant::now();
            let response = http
                .get(format!("{base}/api/v1/stream"))
                .timeout(Duration::from_secs(seconds + 60))
                .send()
                .await;
            let mut response = match response {
                Ok(r) if r.status() == 200 => r,
                Ok(r) => {
                    return tally
                        .record("live", Err(format!("live: HTTP {}", r.status())))
                        .await
                }
                Err(e) => {
                    return tally
                        .record("live", Err(format!("live: {}", error_kind(&e))))
                        .await
                }
            };
            tally
                .record("live", Ok(opened.elapsed().as_secs_f64() * 1000.0))
                .await;
            loop {
                let chunk = tokio::time::timeout_at(deadline.into(), response.chunk()).await;
                match chunk {
                    Err(_) => return,
                    Ok(Ok(Some(bytes))) => {
                        let frames = bytes.windows(2).filter(|w| w == b"\n\n").count() as u64;
                        tally.live_frames.fetch_add(frames, Ordering::Relaxed);
                    }
                    // The stream ended or broke before the run did.
                    Ok(_) => {
                        tracing::warn!(user, "a live stream ended early");
                        return tally
                            .record("live", Err("live: the stream ended early".into()))
                            .await;
                    }
                }
            }
        }));
    }

    let writable = Arc::new(writable);
    for user in 0..writers {
        let (http, base, tally, writable) =
            (hooks.clone(), base.clone(), tally.clone(), writable.clone());
        let offset = Duration::from_secs_f64(user as f64 / writers as f64);
        tasks.push(tokio::spawn(async move {
            let mut schedule = Schedule::new(start + offset, deadline);
            while let Some((k, due)) = schedule.next().await {
                let (project, secret) = &writable[user % writable.len()];
                let body = serde_json::json!({
                    "repository": format!("acme/load-{}", user % writable.len()),
                    "workflow": "ci",
                    "run_id": user as u64 * 1_000_000 + k,
                    "status": if k % 7 == 3 { "failed" } else { "succeeded" },
                    "branch": "main",
                });
                let body = serde_json::to_vec(&body).unwrap_or_default();
                let signature = commands::providers::sign(secret, &body);
                let answer = http
                    .post(format!("{base}/api/v1/webhooks/generic/{project}"))
                    .header("content-type", "application/json")
                    .header("x-herald-signature-256", signature)
                    .header("x-herald-delivery", format!("load-{user}-{k}"))
                    .body(body)
                    .send()
                    .await;
                let outcome = match answer {
                    Ok(r) if r.status() == 202 => Ok(due.elapsed().as_secs_f64() * 1000.0),
                    Ok(r) => Err(format!("webhook: HTTP {}", r.status())),
                    Err(e) => Err(format!("webhook: {}", error_kind(&e))),
                };
                tally.record("webhook", outcome).await;
            }
        }));
    }

    let readable = Arc::new(readable);
    for user in 0..readers {
        let (http, base, tally, readable) =
            (http.clone(), base.clone(), tally.clone(), readable.clone());
        let offset = Duration::from_secs_f64(user as f64 / readers as f64);
        tasks.push(tokio::spawn(async move {
            let mut schedule = Schedule::new(start + offset, deadline);
            while let Some((k, due)) = schedule.next().await {
                let project = readable[(user + k as usize) % readable.len().max(1)];
                let (kind, path) = match (user as u64 + k) % 3 {
                    0 => ("overview", "/api/v1/dashboard/overview".to_owned()),
                    1 => ("projects", "/api/v1/projects".to_owned()),
                    _ => (
                        "statistics",
                        format!("/api/v1/projects/{project}/statistics"),
                    ),
                };
                let outcome = match http.get(format!("{base}{path}")).send().await {
                    Ok(r) if r.status().is_success() => match r.bytes().await {
                        Ok(_) => Ok(due.elapsed().as_secs_f64() * 1000.0),
                        Err(e) => Err(format!("{kind}: body {}", error_kind(&e))),
                    },
                    Ok(r) => Err(format!("{kind}: HTTP {}", r.status())),
                    Err(e) => Err(format!("{kind}: {}", error_kind(&e))),
                };
                tally.record(kind, outcome).await;
            }
        }));
    }

    let mut samples = Vec::new();
    let mut tick = tokio::time::interval_at(start.into(), Duration::from_secs(1));
    for _ in 0..seconds {
        tick.tick().await;
        samples.push(herald.memory("VmRSS:"));
    }
    for task in tasks {
        let _ = task.await;
    }
    let peak_rss_mib = herald.memory("VmHWM:");
    drop(herald);
    pool.close().await;

    let kind_users = |kind: &str| match kind {
        "live" => live_users,
        "webhook" => writers,
        _ => readers,
    };
    let mut latencies = std::mem::take(&mut *tally.latencies.lock().await);
    let errors = std::mem::take(&mut *tally.errors.lock().await);
    let error_reasons = std::mem::take(&mut *tally.reasons.lock().await);
    let mut kinds = Vec::new();
    for kind in ["overview", "projects", "statistics", "webhook", "live"] {
        let mut all = latencies.remove(kind).unwrap_or_default();
        all.sort_by(f64::total_cmp);
        let errors = errors.get(kind).copied().unwrap_or(0);
        kinds.push(UserKind {
            kind,
            users: kind_users(kind),
            requests: all.len() as u64 + errors,
            errors,
            p50_ms: percentile(&all, 0.50),
            p99_ms: percentile(&all, 0.99),
            p999_ms: percentile(&all, 0.999),
        });
    }
    let fifth = (samples.len() / 5).max(1).min(samples.len());
    Ok(LoadBench {
        scenario: "load",
        users,
        seconds,
        builds,
        errors: kinds.iter().map(|k| k.errors).sum(),
        kinds,
        live_frames: tally.live_frames.load(Ordering::Relaxed),
        error_reasons,
        idle_rss_mib,
        peak_rss_mib,
        rss_first_fifth_mib: mean(&samples[..fifth]),
        rss_last_fifth_mib: mean(&samples[samples.len() - fifth..]),
        rss_samples_mib: samples,
    })
}

pub fn print(bench: &LoadBench) {
    println!("scenario  kind        users  requests  errors  p50 ms   p99 ms  p99.9 ms");
    for k in &bench.kinds {
        println!(
            "{:<8}  {:<10}  {:>5}  {:>8}  {:>6}  {:>6.1}  {:>7.1}  {:>8.1}",
            bench.scenario, k.kind, k.users, k.requests, k.errors, k.p50_ms, k.p99_ms, k.p999_ms
        );
    }
    println!(
        "herald RSS: idle {:.1} MiB, peak {:.1} MiB, first fifth {:.1} MiB, last fifth {:.1} MiB; {} live frames; {} errors",
        bench.idle_rss_mib,
        bench.peak_rss_mib,
        bench.rss_first_fifth_mib,
        bench.rss_last_fifth_mib,
        bench.live_frames,
        bench.errors
    );
    for (reason, count) in &bench.error_reasons {
        println!("  {count} × {reason}");
    }
}
