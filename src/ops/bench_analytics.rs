//! `herald bench analytics`: dashboard reads under many clients, and how far the read models trail ingest.
//!
//! 1. A million finished runs of 100 projects over a year go straight into the `build_runs` read model (the
//!    reads under test do not care how the rows got there; generating them through the pipeline would take an
//!    hour).
//! 2. The API alone serves `N` concurrent clients for a few seconds per endpoint: `/health` (the same-run
//!    baseline: the HTTP stack, auth and middleware with no query), the overview, and a random project's
//!    statistics, through the cache as users get them. Twice: open-loop, each client asking once a second as
//!    an open dashboard polls (latency from when the request was due, so a stall is not hidden by the clients
//!    waiting on it), and closed-loop, each client asking again as soon as it is answered (the most the
//!    server serves; latency there is mostly the queue the clients themselves make). The same queries are
//!    also timed uncached, one at a time, for what a cache miss costs.
//! 3. Herald all-in-one then takes generic webhooks at a fixed rate, and a poller notes when each run shows up
//!    in the read model: the projection lag a dashboard sees.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use sqlx::postgres::PgConnectOptions;
use sqlx::ConnectOptions;
use tokio::sync::Mutex;

/// Latency figures of one endpoint under load.
#[derive(Debug, Clone, Serialize)]
pub struct Load {
    pub endpoint: String,
    /// "open" (each client once per second) or "closed" (each client again as soon as answered).
    pub pacing: &'static str,
    pub clients: usize,
    pub requests: u64,
    pub errors: u64,
    pub per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Cold {
    pub query: String,
    pub p50_ms: f64,
    pub max_ms: f64,
}

#[derive(Debug, Serialize)]
pub struct AnalyticsBench {
    pub scenario: &'static str,
    pub builds: u64,
    pub projects: u64,
    pub seed_seconds: f64,
    pub loads: Vec<Load>,
    /// p99 of each cached endpoint over `/health`'s p99 with the same pacing, the same run.
    pub p99_ratio_to_health: HashMap<String, f64>,
    pub uncached: Vec<Cold>,
    pub ingest_per_second: f64,
    pub lag_samples: usize,
    pub lag_p50_ms: f64,
    pub lag_p99_ms: f64,
}

const PROJECTS: u64 = 100;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

pub async fn analytics(
    database_url: &str,
    builds: u64,
    clients: usize,
    seconds: u64,
) -> anyhow::Result<AnalyticsBench> {
    super::bench::in_scratch_database(database_url, "herald_bench_analytics", async |options| {
        run(options, builds, clients, Duration::from_secs(seconds)).await
    })
    .await
}

pub(crate) async fn seed(pool: &sqlx::PgPool, builds: u64) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO projects (project_id, name, secret_version, created_at, updated_at, builds_finished,
                               last_build_at, last_outcome, last_transition)
         SELECT md5('project-' || i)::uuid, 'project-' || i, 1, now() - interval '400 days', now(), 0,
                now(), 'succeeded', 'still_passing'
           FROM generate_series(0, $1 - 1) i",
    )
    .bind(PROJECTS as i64)
    .execute(pool)
    .await?;
    // Runs every 31.5 s spread over the year before now; 80 % pass, 12 % fail, the rest are cancelled.
    let spacing = 365.0 * 86_400.0 / builds.max(1) as f64;
    sqlx::query(
        "INSERT INTO build_runs (build_run_id, project_id, provider, repository, workflow, branch, run_id, attempt,
                                 commit_sha, author, status, outcome, transition, queued_at, started_at,
                                 completed_at, duration_secs, jobs, updated_at, first_seen_at)
         SELECT 'bench:' || i, md5('project-' || (i % $2))::uuid, 'generic', 'acme/repo-' || (i % $2),
                (ARRAY['ci', 'deploy', 'nightly'])[1 + i % 3],
                (ARRAY['main', 'dev', 'feature-' || (i % 40)])[1 + (i / 7) % 3],
                i, 1, md5(i::text), (ARRAY['ada', 'brian', 'chen', 'dana'])[1 + i % 4], 'completed', outcome,
                CASE WHEN outcome = 'failed' THEN 'broken' ELSE 'still_passing' END,
                t - interval '90 seconds', t - interval '60 seconds', t + make_interval(secs => d), d,
                jsonb_build_object('1', jsonb_build_object('name', 'build', 'outcome', outcome,
                                                           'failed_steps', CASE WHEN outcome = 'failed'
                                                               THEN jsonb_build_array('test') ELSE '[]' END)),
                t, t
           FROM (SELECT i, now() - make_interval(secs => i * $3) AS t, 60 + (i::bigint * 7919 % 900) AS d,
                        CASE WHEN i % 100 < 80 THEN 'succeeded' WHEN i % 100 < 92 THEN 'failed'
                             ELSE 'cancelled' END AS outcome
                   FROM generate_series(1, $1) i) s",
    )
    .bind(builds as i64)
    .bind(PROJECTS as i64)
    .bind(spacing)
    .execute(pool)
    .await?;
    // What the `series_health` projection would hold after these runs: per series, the newest judged run and
    // the first failure of its current streak.
    sqlx::query(
        "WITH series AS (
             SELECT project_id, workflow, COALESCE(branch, '') AS branch, max(completed_at) AS last_at,
                    max(completed_at) FILTER (WHERE outcome = 'succeeded') AS last_ok
               FROM build_runs WHERE outcome IN ('succeeded', 'failed', 'timed_out')
              GROUP BY 1, 2, 3),
         failing AS (
             SELECT b.project_id, b.workflow, COALESCE(b.branch, '') AS branch, min(b.completed_at) AS since
               FROM build_runs b
               JOIN series s ON s.project_id = b.project_id AND s.workflow = b.workflow
                            AND s.branch = COALESCE(b.branch, '')
              WHERE b.outcome IN ('failed', 'timed_out') AND b.completed_at > COALESCE(s.last_ok, '-infinity')
              GROUP BY 1, 2, 3)
         INSERT INTO series_health (project_id, workflow, branch, last_completed_at, last_outcome,
                                    last_build_run_id, failing_since)
         SELECT s.project_id, s.workflow, s.branch, s.last_at,
                CASE WHEN f.since IS NULL THEN 'succeeded' ELSE 'failed' END, '', f.since
           FROM series s LEFT JOIN failing f USING (project_id, workflow, branch)",

    )
    .execute(pool)
    .await?;
    sqlx::query("ANALYZE build_runs").execute(pool).await?;
    sqlx::query("ANALYZE projects").execute(pool).await?;
    Ok(())
}

/// The path of a client's i-th request.
type PathOf = Arc<dyn Fn(u64) -> String + Send + Sync>;

/// How a client paces its requests.
#[derive(Clone, Copy)]
enum Pace {
    /// One request every period, the clients' first requests spread evenly over it.
    Open(Duration),
    /// The next request as soon as the last is answered.
    Closed,
}

/// `clients` clients asking `path(i)` for `duration`, paced by `pace`.
async fn load(
    http: &reqwest::Client,
    base: &str,
    name: &str,
    path: PathOf,
    clients: usize,
    duration: Duration,
    pace: Pace,
) -> Load {
    // Warm-up, not measured: every client's connection opened and the key verified once, as on a running server.
    let warm: Vec<_> = (0..clients)
        .map(|i| http.get(format!("{base}{}", path(i as u64))).send())
        .collect();
    for response in futures::future::join_all(warm).await.into_iter().flatten() {
        let _ = response.bytes().await;
    }
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let errors = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::with_capacity(clients);
    for client in 0..clients {
        let (http, base, path) = (http.clone(), base.to_owned(), path.clone());
        let (latencies, errors) = (latencies.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            let mut i = client as u64;
            for k in 0u32.. {
                // When this request is due; latency counts from then, however late it goes out.
                let due = match pace {
                    Pace::Open(period) => {
                        started + period.mul_f64(client as f64 / clients as f64) + period * k
                    }
                    Pace::Closed => Instant::now(),
                };
                if due >= deadline {
                    break;
                }
                tokio::time::sleep_until(due.into()).await;
                let ok = match http.get(format!("{base}{}", path(i))).send().await {
                    Ok(r) if r.status().is_success() => r.bytes().await.is_ok(),
                    _ => false,
                };
                if ok {
                    mine.push(due.elapsed().as_secs_f64() * 1000.0);
                } else {
                    errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                i += clients as u64;
            }
            latencies.lock().await.extend(mine);
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let mut all = std::mem::take(&mut *latencies.lock().await);
    all.sort_by(f64::total_cmp);
    let figures = Load {
        endpoint: name.to_owned(),
        pacing: match pace {
            Pace::Open(_) => "open",
            Pace::Closed => "closed",
        },
        clients,
        requests: all.len() as u64,
        errors: errors.load(std::sync::atomic::Ordering::Relaxed),
        per_second: all.len() as f64 / elapsed,
        p50_ms: percentile(&all, 0.50),
        p99_ms: percentile(&all, 0.99),
    };
    eprintln!(
        "  {:<22} {:<6} {:>5} clients  {:>8.0} req/s  p50 {:>7.1} ms  p99 {:>7.1} ms  errors {}",
        figures.endpoint,
        figures.pacing,
        clients,
        figures.per_second,
        figures.p50_ms,
        figures.p99_ms,
        figures.errors
    );
    figures
}

async fn run(
    options: PgConnectOptions,
    builds: u64,
    clients: usize,
    duration: Duration,
) -> anyhow::Result<AnalyticsBench> {
    let url = options.to_url_lossy().to_string();
    let pool = crate::connect(&url).await?;
    commands::migrate(&pool).await?;
    eprintln!("seeding {builds} runs of {PROJECTS} projects into the read model");
    let seeding = Instant::now();
    seed(&pool, builds).await?;
    let seed_seconds = seeding.elapsed().as_secs_f64();
    eprintln!("  {seed_seconds:.1} s");

    let mut settings = super::bench::unlimited_settings(&options)?;
    settings.pool.max_connections = 32;
    let http = super::bench::reader_client(&pool, clients, Duration::from_secs(60)).await?;
    let projects: Arc<Vec<String>> = Arc::new(
        sqlx::query_scalar::<_, uuid::Uuid>("SELECT project_id FROM projects ORDER BY name")
            .fetch_all(&pool)
            .await?
            .into_iter()
            .map(|p| p.to_string())
            .collect(),
    );

    // Uncached: what one cache miss costs, one query at a time.
    let mut uncached = Vec::new();
    {
        let mut cold_settings = settings.clone();
        cold_settings.http.cache_ttl = Duration::ZERO;
        let running = crate::start(&cold_settings, &[crate::Role::Api]).await?;
        let base = format!("http://{}", running.http_addr);
        let statistics_project = projects.first().cloned().unwrap_or_default();
        for (name, path) in [
            (
                "overview".to_owned(),
                "/api/v1/dashboard/overview".to_owned(),
            ),
            (
                "statistics (30 days)".to_owned(),
                format!("/api/v1/projects/{statistics_project}/statistics"),
            ),
            (
                "timeseries (1 year, daily)".to_owned(),
                format!(
                    "/api/v1/projects/{statistics_project}/timeseries?interval=day&from={}",
                    (chrono::Utc::now() - chrono::Duration::days(364)).format("%Y-%m-%d")
                ),
            ),
        ] {
            let mut times = Vec::new();
            for _ in 0..15 {
                let at = Instant::now();
                let response = http.get(format!("{base}{path}")).send().await?;
                anyhow::ensure!(
                    response.status().is_success(),
                    "{path}: {}",
                    response.status()
                );
                response.bytes().await?;
                times.push(at.elapsed().as_secs_f64() * 1000.0);
            }
            times.sort_by(f64::total_cmp);
            let cold = Cold {
                query: name,
                p50_ms: percentile(&times, 0.5),
                max_ms: times.last().copied().unwrap_or(f64::NAN),
            };
            eprintln!(
                "  uncached {:<26} p50 {:>7.1} ms  max {:>7.1} ms",
                cold.query, cold.p50_ms, cold.max_ms
            );
            uncached.push(cold);
        }
        running.stop().await;
    }

    // Cached, under load.
    eprintln!(
        "{clients} concurrent clients, {} s per endpoint",
        duration.as_secs()
    );
    let running = crate::start(&settings, &[crate::Role::Api]).await?;
    let base = format!("http://{}", running.http_addr);
    let mut loads = Vec::new();
    let list = projects.clone();
    let endpoints: [(&str, PathOf); 3] = [
        ("/health (baseline)", Arc::new(|_| "/health".to_owned())),
        (
            "overview",
            Arc::new(|_| "/api/v1/dashboard/overview".to_owned()),
        ),
        (
            "statistics",
            Arc::new(move |i| {
                format!(
                    "/api/v1/projects/{}/statistics",
                    list[i as usize % list.len()]
                )
            }),
        ),
    ];
    for pace in [Pace::Open(Duration::from_secs(1)), Pace::Closed] {
        for (name, path) in &endpoints {
            loads.push(load(&http, &base, name, path.clone(), clients, duration, pace).await);
        }
    }
    running.stop().await;
    // Each endpoint over `/health` with the same pacing.
    let p99_ratio_to_health = loads
        .iter()
        .filter(|l| !l.endpoint.starts_with("/health"))
        .filter_map(|l| {
            let health = loads
                .iter()
                .find(|h| h.endpoint.starts_with("/health") && h.pacing == l.pacing)?;
            Some((
                format!("{} ({})", l.endpoint, l.pacing),
                l.p99_ms / health.p99_ms,
            ))
        })
        .collect();

    // Projection lag under ingest.
    let rate = 100.0;
    eprintln!(
        "projection lag: generic webhooks at {rate}/s for {} s",
        duration.as_secs()
    );
    let running = crate::start(&settings, &crate::Role::ALL).await?;
    let base = format!("http://{}", running.http_addr);
    let commands = commands::Commands::new(pool.clone());
    let (project, secret) = commands
        .create_project(domain::ProjectName::parse("lag")?, &Default::default())
        .await?;
    let accepted: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let shown: Arc<Mutex<Vec<f64>>> = Arc::default();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let poller = {
        let (pool, accepted, shown, done) =
            (pool.clone(), accepted.clone(), shown.clone(), done.clone());
        tokio::spawn(async move {
            loop {
                let pending: Vec<String> = accepted.lock().await.keys().cloned().collect();
                if pending.is_empty() && done.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                if !pending.is_empty() {
                    let found: Vec<String> = sqlx::query_scalar(
                        "SELECT build_run_id FROM build_runs WHERE build_run_id = ANY($1)",
                    )
                    .bind(&pending)
                    .fetch_all(&pool)
                    .await
                    .unwrap_or_default();
                    let now = Instant::now();
                    let mut accepted = accepted.lock().await;
                    let mut shown = shown.lock().await;
                    for id in found {
                        if let Some(at) = accepted.remove(&id) {
                            shown.push(now.duration_since(at).as_secs_f64() * 1000.0);
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    let total = (rate * duration.as_secs_f64()) as u64;
    let start = Instant::now();
    let plain = reqwest::Client::new();
    let mut senders = Vec::new();
    for i in 0..total {
        tokio::time::sleep_until((start + Duration::from_secs_f64(i as f64 / rate)).into()).await;
        let body = serde_json::json!({"repository": "acme/lag", "workflow": "ci", "run_id": i + 1,
                                      "branch": "main", "status": "succeeded"});
        let request = plain
            .post(format!("{base}/api/v1/webhooks/generic/{project}"))
            .header("content-type", "application/json")
            .header("x-herald-token", secret.as_str())
            .body(body.to_string());
        let accepted = accepted.clone();
        senders.push(tokio::spawn(async move {
            let Ok(response) = request.send().await else {
                return;
            };
            let at = Instant::now();
            if let Ok(answer) = response.json::<serde_json::Value>().await {
                if let Some(id) = answer["build_run_id"].as_str() {
                    accepted.lock().await.insert(id.to_owned(), at);
                }
            }
        }));
    }
    for sender in senders {
        let _ = sender.await;
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = tokio::time::timeout(Duration::from_secs(60), poller).await;
    running.stop().await;
    let mut lags = std::mem::take(&mut *shown.lock().await);
    lags.sort_by(f64::total_cmp);
    let bench = AnalyticsBench {
        scenario: "analytics",
        builds,
        projects: PROJECTS,
        seed_seconds,
        loads,
        p99_ratio_to_health,
        uncached,
        ingest_per_second: rate,
        lag_samples: lags.len(),
        lag_p50_ms: percentile(&lags, 0.5),
        lag_p99_ms: percentile(&lags, 0.99),
    };
    pool.close().await;
    Ok(bench)
}

pub fn print(bench: &AnalyticsBench) {
    println!(
        "analytics: {} runs of {} projects in the read model",
        bench.builds, bench.projects
    );
    for load in &bench.loads {
        println!(
            "  {:<22} {:<6} {:>5} clients  {:>8.0} req/s  p50 {:>7.1} ms  p99 {:>7.1} ms  errors {}",
            load.endpoint,
            load.pacing,
            load.clients,
            load.per_second,
            load.p50_ms,
            load.p99_ms,
            load.errors
        );
    }
    for (endpoint, ratio) in &bench.p99_ratio_to_health {
        println!("  {endpoint} p99 / /health p99: {ratio:.2}x");
    }
    for cold in &bench.uncached {
        println!(
            "  uncached {:<26} p50 {:>7.1} ms  max {:>7.1} ms",
            cold.query, cold.p50_ms, cold.max_ms
        );
    }
    println!(
        "  projection lag at {}/s ingest: p50 {:.1} ms  p99 {:.1} ms  ({} runs)",
        bench.ingest_per_second, bench.lag_p50_ms, bench.lag_p99_ms, bench.lag_samples
    );
}
