//! `herald bench ingest`: signed GitHub webhooks over HTTP into durable events, beside the same-run baseline of
//! single-row `INSERT` + `COMMIT` against the same Postgres with the same client concurrency.
//!
//! The load is **open-loop**: request *i* is due at `start + i / rate`, whether or not earlier ones have
//! answered, and its latency is measured from that intended time. A stall therefore shows as latency for every
//! request it delayed, instead of quietly lowering the offered rate (coordinated omission).
//!
//! Each side is stepped through rising rates; the highest rate it sustains (achieved ≥ 95 % of offered, no
//! errors, p99 under a second) is its maximum. Latency is then reported at half of Herald's maximum.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use tokio::sync::Semaphore;

const FIXTURE: &str =
    include_str!("../../tests/fixtures/github/workflow_run/completed.payload.json");

/// One run at one offered rate.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub target: &'static str,
    pub offered_per_second: f64,
    pub achieved_per_second: f64,
    pub requests: u64,
    pub errors: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub peak_rss_mib: f64,
}

impl Step {
    /// The step as a table row, from the target on.
    pub fn row(&self) -> String {
        format!(
            "{:<8}  {:>9.0}  {:>10.0}  {:>6.1}  {:>7.1}  {:>7.1}  {:>8.1}  {:>6}  {:.0} MiB",
            self.target,
            self.offered_per_second,
            self.achieved_per_second,
            self.p50_ms,
            self.p90_ms,
            self.p99_ms,
            self.p999_ms,
            self.errors,
            self.peak_rss_mib
        )
    }

    fn sustained(&self) -> bool {
        self.errors == 0
            && self.achieved_per_second >= 0.95 * self.offered_per_second
            && self.p99_ms < 1000.0
    }
}

#[derive(Debug, Serialize)]
pub struct IngestBench {
    pub scenario: &'static str,
    pub concurrency: usize,
    pub step_seconds: f64,
    pub herald_max_per_second: f64,
    pub baseline_max_per_second: f64,
    /// Herald's sustained maximum over the INSERT baseline's.
    pub ratio_to_baseline: f64,
    /// Herald at half its maximum.
    pub at_half_max: Option<Step>,
    pub steps: Vec<Step>,
}

/// What one request does: `Ok` when the target acknowledged it durably.
pub(crate) type Send =
    Arc<dyn Fn(u64) -> futures::future::BoxFuture<'static, bool> + Sync + std::marker::Send>;

/// Offer `rate` requests per second for `duration`, at most `concurrency` in flight.
pub(crate) async fn open_loop(
    target: &'static str,
    send: Send,
    rate: f64,
    duration: Duration,
    concurrency: usize,
    first: u64,
) -> Step {
    super::bench::reset_peak_rss();
    let total = (rate * duration.as_secs_f64()).round() as u64;
    let permits = Arc::new(Semaphore::new(concurrency));
    let start = Instant::now() + Duration::from_millis(50);
    let mut handles = Vec::with_capacity(total as usize);
    for i in 0..total {
        let intended = start + Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(intended.into()).await;
        let (send, permits) = (send.clone(), permits.clone());
        handles.push(tokio::spawn(async move {
            let _permit = permits.acquire_owned().await;
            let ok = send(first + i).await;
            (ok, intended.elapsed())
        }));
    }
    let mut latencies = Vec::with_capacity(handles.len());
    let mut errors = 0;
    for handle in handles {
        match handle.await {
            Ok((true, latency)) => latencies.push(latency.as_secs_f64() * 1000.0),
            _ => errors += 1,
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| {
        if latencies.is_empty() {
            return f64::NAN;
        }
        latencies[((latencies.len() as f64 * q).ceil() as usize).clamp(1, latencies.len()) - 1]
    };
    Step {
        target,
        offered_per_second: rate,
        achieved_per_second: latencies.len() as f64 / elapsed,
        requests: total,
        errors,
        p50_ms: at(0.50),
        p90_ms: at(0.90),
        p99_ms: at(0.99),
        p999_ms: at(0.999),
        peak_rss_mib: super::bench::peak_rss_mib(),
    }
}

/// Step `send` through doubling rates from `rates.0` until it stops keeping up or reaches `rates.1`, then
/// bisect twice between the last rate it sustained and the first it did not, so the maximum is known to within
/// an eighth of itself rather than a factor of two; returns every step and the highest rate sustained.
///
/// A step it did not sustain leaves a backlog behind; `settle` waits it out before each bisection step, which
/// would otherwise time the drain.
pub(crate) async fn find_max(
    target: &'static str,
    send: Send,
    rates: (f64, f64),
    step: Duration,
    concurrency: usize,
    steps: &mut Vec<Step>,
    settle: impl AsyncFn(),
) -> f64 {
    let (mut rate, last_rate) = rates;
    let mut best = 0.0;
    let mut next_id = 0;
    let mut try_rate = async |rate: f64, steps: &mut Vec<Step>| {
        let result = open_loop(target, send.clone(), rate, step, concurrency, next_id).await;
        next_id += result.requests;
        eprintln!(
            "  {target:<8} offered {:>6.0}/s  achieved {:>6.0}/s  p50 {:>7.1} ms  p99 {:>7.1} ms  errors {}",
            result.offered_per_second, result.achieved_per_second, result.p50_ms, result.p99_ms, result.errors
        );
        let sustained = result.sustained();
        steps.push(result);
        sustained
    };
    let failed = loop {
        if !try_rate(rate, steps).await {
            break rate;
        }
        best = rate;
        if rate >= last_rate {
            return best;
        }
        rate *= 2.0;
    };
    if best == 0.0 {
        return best;
    }
    let mut above = failed;
    for _ in 0..2 {
        settle().await;
        let middle = ((best + above) / 2.0).round();
        if try_rate(middle, steps).await {
            best = middle;
        } else {
            above = middle;
        }
    }
    best
}

pub async fn ingest(
    database_url: &str,
    step: Duration,
    concurrency: usize,
) -> anyhow::Result<IngestBench> {
    super::bench::in_scratch_database(database_url, "herald_bench_ingest", async |options| {
        run(options, step, concurrency).await
    })
    .await
}

async fn run(
    options: PgConnectOptions,
    step: Duration,
    concurrency: usize,
) -> anyhow::Result<IngestBench> {
    let mut steps = Vec::new();
    let fixture: Value = serde_json::from_str(FIXTURE)?;

    // Baseline: what Postgres itself does with one durable row per request, bodies of the same size.
    eprintln!("baseline: single-row INSERT + COMMIT, {concurrency} connections");
    let pool = PgPoolOptions::new()
        .max_connections(concurrency as u32)
        .connect_with(options.clone())
        .await?;
    sqlx::query("CREATE TABLE bench_insert (id bigint PRIMARY KEY, body jsonb NOT NULL)")
        .execute(&pool)
        .await?;
    let body = Arc::new(fixture.clone());
    let insert: Send = {
        let pool = pool.clone();
        Arc::new(move |i| {
            let (pool, body) = (pool.clone(), body.clone());
            Box::pin(async move {
                sqlx::query("INSERT INTO bench_insert (id, body) VALUES ($1, $2)")
                    .bind(i as i64)
                    .bind(body.as_ref())
                    .execute(&pool)
                    .await
                    .is_ok()
            })
        })
    };
    let baseline_max = find_max(
        "insert",
        insert,
        (50.0, 12_800.0),
        step,
        concurrency,
        &mut steps,
        async || {},
    )
    .await;
    pool.close().await;

    // Herald all-in-one on the same server: API, relay and every consumer (nothing is sent: no bot token).
    eprintln!("herald: signed GitHub webhooks over HTTP, {concurrency} connections");
    let mut settings = super::bench::unlimited_settings(&options)?;
    settings.pool.max_connections = (concurrency as u32 + 8).max(20);
    let super::bench::BenchHerald {
        running,
        pool,
        project,
        secret,
        ..
    } = super::bench::start_with_project(&settings, &crate::Role::ALL).await?;
    let addr = running.http_addr;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()?;
    let url = format!("http://{addr}/api/v1/webhooks/github/{project}");
    let post: Send = Arc::new(move |i| {
        let mut payload = fixture.clone();
        payload["workflow_run"]["id"] = (1_000_000 + i).into();
        payload["workflow_run"]["run_number"] = (i + 1).into();
        let body = serde_json::to_vec(&payload).unwrap_or_default();
        let signature = commands::providers::sign(&secret, &body);
        let request = http
            .post(&url)
            .header("content-type", "application/json")
            .header("x-github-event", "workflow_run")
            .header("x-github-delivery", format!("bench-{i}"))
            .header("x-hub-signature-256", signature)
            .body(body);
        Box::pin(async move { matches!(request.send().await, Ok(r) if r.status() == 202) })
    });
    // In process, an event has been handled by every consumer once it left the outbox.
    let caught_up = async || {
        let pending = async || {
            sqlx::query_scalar::<_, bool>("SELECT EXISTS (SELECT 1 FROM outbox)")
                .fetch_one(&pool)
                .await
                .unwrap_or(false)
        };
        while pending().await {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let herald_max = find_max(
        "herald",
        post.clone(),
        (50.0, 12_800.0),
        step,
        concurrency,
        &mut steps,
        caught_up,
    )
    .await;
    let at_half_max = if herald_max > 0.0 {
        caught_up().await;
        eprintln!("herald at half its maximum:");
        let half = open_loop(
            "herald",
            post,
            herald_max / 2.0,
            step,
            concurrency,
            50_000_000,
        )
        .await;
        eprintln!(
            "  p50 {:.1} ms  p99 {:.1} ms  p99.9 {:.1} ms",
            half.p50_ms, half.p99_ms, half.p999_ms
        );
        Some(half)
    } else {
        None
    };
    running.stop().await;
    pool.close().await;
    Ok(IngestBench {
        scenario: "ingest",
        concurrency,
        step_seconds: step.as_secs_f64(),
        herald_max_per_second: herald_max,
        baseline_max_per_second: baseline_max,
        ratio_to_baseline: if baseline_max > 0.0 {
            herald_max / baseline_max
        } else {
            f64::NAN
        },
        at_half_max,
        steps,
    })
}

pub fn print(bench: &IngestBench) {
    println!("scenario  target    offered/s  achieved/s  p50 ms   p90 ms   p99 ms  p99.9 ms  errors  peak RSS");
    for s in bench.steps.iter().chain(bench.at_half_max.iter()) {
        println!("{:<8}  {}", bench.scenario, s.row());
    }
    println!(
        "max sustained: herald {:.0}/s, INSERT baseline {:.0}/s, ratio {:.2}",
        bench.herald_max_per_second, bench.baseline_max_per_second, bench.ratio_to_baseline
    );
}
