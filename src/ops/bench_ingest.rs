//! `herald bench ingest`: signed GitHub webhooks over HTTP into durable events, beside the same-run baseline of
//! single-row `INSERT` + `COMMIT` against the same Postgres with the same client concurrency.
//!
//! The figure compared with the baseline is Herald's ingest path: the API role, which authenticates, normalizes
//! and commits each webhook's events and outbox rows, as it runs when the workers are processes of their own.
//! The same load into Herald all-in-one is run as well and reported beside it: on one machine the consumers
//! (ten read models, the planner) then share the cores with the API, which measures the whole process rather
//! than ingest.
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
    /// Herald's ingest path (the API role: webhook in, events and outbox rows committed) at its maximum.
    pub herald_max_per_second: f64,
    pub baseline_max_per_second: f64,
    /// Herald's sustained maximum over the INSERT baseline's.
    pub ratio_to_baseline: f64,
    /// Herald's ingest path at half its maximum.
    pub at_half_max: Option<Step>,
    /// The same webhooks into Herald all-in-one on the same machine, every consumer running beside the API
    /// (the projections, the planner): what one process sustains end to end.
    pub all_in_one_max_per_second: f64,
    pub all_in_one_ratio_to_baseline: f64,
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
/// When the first rate is not sustained, the search halves it (up to three times) until one is, then bisects as
/// above: a short step on a busy machine can miss by one stall, and "nothing sustained" would be wrong.
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
    let mut above = failed;
    // The first rate was not sustained (a slow machine, or one stall in a short step on a busy one): look below
    // it, halving, rather than report nothing.
    for _ in 0..3 {
        if best > 0.0 {
            break;
        }
        settle().await;
        let lower = (above / 2.0).round().max(1.0);
        if try_rate(lower, steps).await {
            best = lower;
        } else if lower <= 1.0 {
            return 0.0;
        } else {
            above = lower;
        }
    }
    if best == 0.0 {
        return best;
    }
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

/// The baseline, then Herald's API role alone, then Herald all-in-one; each in a scratch database of its own,
/// so neither Herald run starts with the other's backlog.
pub async fn ingest(
    database_url: &str,
    step: Duration,
    concurrency: usize,
) -> anyhow::Result<IngestBench> {
    let mut steps = Vec::new();
    let baseline_max =
        super::bench::in_scratch_database(database_url, "herald_bench_insert", async |options| {
            baseline(options, step, concurrency, &mut steps).await
        })
        .await?;
    let (herald_max, at_half_max) =
        super::bench::in_scratch_database(database_url, "herald_bench_ingest", async |options| {
            let side = Side {
                target: "herald",
                roles: &[crate::Role::Api],
            };
            herald(options, side, step, concurrency, &mut steps).await
        })
        .await?;
    let (all_in_one_max, _) = super::bench::in_scratch_database(
        database_url,
        "herald_bench_ingest_all",
        async |options| {
            let side = Side {
                target: "all-in-1",
                roles: &crate::Role::ALL,
            };
            herald(options, side, step, concurrency, &mut steps).await
        },
    )
    .await?;
    let ratio = |max: f64| {
        if baseline_max > 0.0 {
            max / baseline_max
        } else {
            f64::NAN
        }
    };
    Ok(IngestBench {
        scenario: "ingest",
        concurrency,
        step_seconds: step.as_secs_f64(),
        herald_max_per_second: herald_max,
        baseline_max_per_second: baseline_max,
        ratio_to_baseline: ratio(herald_max),
        at_half_max,
        all_in_one_max_per_second: all_in_one_max,
        all_in_one_ratio_to_baseline: ratio(all_in_one_max),
        steps,
    })
}

/// What Postgres itself does with one durable row per request, bodies of the same size.
async fn baseline(
    options: PgConnectOptions,
    step: Duration,
    concurrency: usize,
    steps: &mut Vec<Step>,
) -> anyhow::Result<f64> {
    eprintln!("baseline: single-row INSERT + COMMIT, {concurrency} connections");
    // No ping before each use (sqlx's default): one round trip per request, the fastest this loop can be.
    let pool = PgPoolOptions::new()
        .max_connections(concurrency as u32)
        .test_before_acquire(false)
        .connect_with(options)
        .await?;
    sqlx::query("CREATE TABLE bench_insert (id bigint PRIMARY KEY, body jsonb NOT NULL)")
        .execute(&pool)
        .await?;
    let body = Arc::new(serde_json::from_str::<Value>(FIXTURE)?);
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
    let max = find_max(
        "insert",
        insert,
        (50.0, 12_800.0),
        step,
        concurrency,
        steps,
        async || {},
    )
    .await;
    pool.close().await;
    Ok(max)
}

/// Which Herald a run drives, and the name its steps are listed under.
struct Side {
    target: &'static str,
    roles: &'static [crate::Role],
}

/// Signed GitHub webhooks over HTTP into Herald running `side.roles`: its maximum, and a run at half of it.
async fn herald(
    options: PgConnectOptions,
    side: Side,
    step: Duration,
    concurrency: usize,
    steps: &mut Vec<Step>,
) -> anyhow::Result<(f64, Option<Step>)> {
    let Side { target, roles } = side;
    eprintln!(
        "{target}: signed GitHub webhooks over HTTP, {concurrency} connections, roles {roles:?}"
    );
    let fixture: Value = serde_json::from_str(FIXTURE)?;
    let mut settings = super::bench::unlimited_settings(&options)?;
    settings.pool.max_connections = (concurrency as u32 + 8).max(20);
    let super::bench::BenchHerald {
        running,
        pool,
        project,
        secret,
        ..
    } = super::bench::start_with_project(&settings, roles).await?;
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
    // With consumers in process, an event has been handled by every one of them once it left the outbox; with
    // the API alone the outbox only grows, and there is no backlog to wait for.
    let consumers = roles.len() > 1;
    let caught_up = async || {
        let pending = async || {
            sqlx::query_scalar::<_, bool>("SELECT EXISTS (SELECT 1 FROM outbox)")
                .fetch_one(&pool)
                .await
                .unwrap_or(false)
        };
        while consumers && pending().await {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    // One request first, so that the first step does not time opening connections and preparing statements.
    anyhow::ensure!(
        post(60_000_000).await,
        "{target}: the warm-up webhook was not accepted"
    );
    let max = find_max(
        target,
        post.clone(),
        (50.0, 12_800.0),
        step,
        concurrency,
        steps,
        caught_up,
    )
    .await;
    let at_half_max = if max > 0.0 {
        caught_up().await;
        eprintln!("{target} at half its maximum:");
        let half = open_loop(target, post, max / 2.0, step, concurrency, 50_000_000).await;
        eprintln!(
            "  p50 {:.1} ms  p99 {:.1} ms  p99.9 {:.1} ms",
            half.p50_ms, half.p99_ms, half.p999_ms
        );
        steps.push(half.clone());
        Some(half)
    } else {
        None
    };
    running.stop().await;
    pool.close().await;
    Ok((max, at_half_max))
}

pub fn print(bench: &IngestBench) {
    println!("scenario  target    offered/s  achieved/s  p50 ms   p90 ms   p99 ms  p99.9 ms  errors  peak RSS");
    for s in &bench.steps {
        println!("{:<8}  {}", bench.scenario, s.row());
    }
    println!(
        "max sustained: herald (API role) {:.0}/s, INSERT baseline {:.0}/s, ratio {:.2}; \
         all-in-one {:.0}/s, ratio {:.2}",
        bench.herald_max_per_second,
        bench.baseline_max_per_second,
        bench.ratio_to_baseline,
        bench.all_in_one_max_per_second,
        bench.all_in_one_ratio_to_baseline
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[tokio::test]
    async fn a_first_step_that_fails_is_searched_below_instead_of_reported_as_nothing() {
        // Every request of the first step fails (a stall); everything after it succeeds.
        let sent = Arc::new(AtomicU64::new(0));
        let send: Send = {
            let sent = sent.clone();
            Arc::new(move |_| {
                let n = sent.fetch_add(1, Ordering::SeqCst);
                Box::pin(async move { n >= 10 })
            })
        };
        let mut steps = Vec::new();
        let step = Duration::from_millis(200);
        let max = find_max("test", send, (50.0, 50.0), step, 4, &mut steps, async || {}).await;
        let offered: Vec<f64> = steps.iter().map(|s| s.offered_per_second).collect();
        // 50/s failed, 25/s held, and the bisection between them found 38/s and 44/s held too.
        assert_eq!(offered, [50.0, 25.0, 38.0, 44.0], "{steps:?}");
        assert_eq!(max, 44.0);

        // Nothing ever succeeds: three halvings, then nothing.
        let never: Send = Arc::new(|_| Box::pin(async { false }));
        let mut steps = Vec::new();
        let max = find_max("test", never, (8.0, 8.0), step, 4, &mut steps, async || {}).await;
        let offered: Vec<f64> = steps.iter().map(|s| s.offered_per_second).collect();
        assert_eq!(offered, [8.0, 4.0, 2.0, 1.0]);
        assert_eq!(max, 0.0);
    }
}
