//! The pipeline's benchmarks, each beside a baseline measured in the same run:
//!
//! - `e2e`: a signed webhook until its `sendMessage` reaches a fake Telegram, through Kafka and through the
//!   in-process bus, open-loop (latency from the intended send time). Baseline: the webhook's own 202, the same
//!   run, the same rate — what the pipeline behind the API adds.
//! - `relay`: outbox → Kafka, beside raw rdkafka produce of the same events with the same producer settings to
//!   the same broker.
//! - `delivery`: one failed run to N chats with Telegram's per-chat limit enforced by the fake (429s counted),
//!   beside a plain HTTP client sending the same N messages to the same fake with the same concurrency.
//!
//! Each runs in a scratch database, with its own topics and consumer groups.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt as _;
use rdkafka::producer::FutureRecord;
use serde::Serialize;
use serde_json::Value;
use sqlx::postgres::PgConnectOptions;
use sqlx::Connection;
use uuid::Uuid;
use workers::telegram::TelegramConfig;
use workers::{KafkaConfig, KafkaPublisher};

use super::bench_ingest::{find_max, open_loop, Send, Step};
use super::fake_telegram::{FakeLimits, FakeTelegram};

const FIXTURE: &str =
    include_str!("../../tests/fixtures/github/workflow_run/completed.payload.json");

/// Where Herald's events travel between its parts in a run.
#[derive(Debug, Clone)]
pub enum Bus {
    InProcess,
    Kafka(String),
}

impl Bus {
    fn name(&self) -> &'static str {
        match self {
            Bus::InProcess => "in-process",
            Bus::Kafka(_) => "kafka",
        }
    }

    fn config(&self, scenario: &str) -> Option<KafkaConfig> {
        let Bus::Kafka(brokers) = self else {
            return None;
        };
        let unique = format!(
            "herald-bench-{scenario}-{}-{}",
            std::process::id(),
            Uuid::new_v4().simple()
        );
        Some(KafkaConfig {
            brokers: brokers.clone(),
            topic: unique.clone(),
            partitions: 3,
            group_prefix: unique,
            fetch_wait_ms: workers::DEFAULT_FETCH_WAIT_MS,
        })
    }
}

#[derive(Debug, Serialize)]
pub struct EndToEnd {
    pub bus: &'static str,
    /// The highest rate at which every message arrived (≥ 95 % of offered, no errors, p99 under a second).
    pub max_per_second: f64,
    /// Webhook → `sendMessage` at half that rate.
    pub at_half_max: Option<Step>,
    /// Baseline, same run and rate: webhook → 202.
    pub accepted_at_half_max: Option<Step>,
    pub steps: Vec<Step>,
}

#[derive(Debug, Serialize)]
pub struct EndToEndBench {
    pub scenario: &'static str,
    pub runs: Vec<EndToEnd>,
}

fn telegram(fake: &FakeTelegram) -> TelegramConfig {
    TelegramConfig {
        api_url: fake.url.clone(),
        bot_token: "1:bench".into(),
        timeout: Duration::from_secs(10),
    }
}

/// Every part but the bot (it would poll the fake for updates).
const PIPELINE: [crate::Role; 5] = [
    crate::Role::Api,
    crate::Role::Relay,
    crate::Role::Projections,
    crate::Role::Planner,
    crate::Role::Delivery,
];

/// Subscribe chats `chats` to failed runs of `project`, and wait until the planner can see them all.
async fn subscribe_chats(
    commands: &commands::Commands,
    pool: &sqlx::PgPool,
    project: Uuid,
    chats: std::ops::RangeInclusive<i64>,
) -> anyhow::Result<()> {
    let filter: domain::SubscriptionFilter = serde_json::from_value(
        serde_json::json!({ "scope": { "projects": [project] }, "outcomes": ["failed"] }),
    )?;
    let expected = chats.clone().count() as i64;
    let subscribe = chats.map(|chat| {
        let filter = filter.clone();
        async move {
            let target = domain::SubscriptionTarget::Chat {
                chat_id: domain::ChatId::parse(chat).map_err(|e| anyhow::anyhow!(e))?,
            };
            commands
                .subscribe(target, filter, &Default::default())
                .await
                .map_err(anyhow::Error::from)
        }
    });
    let results: Vec<anyhow::Result<Uuid>> = futures::stream::iter(subscribe)
        .buffer_unordered(16)
        .collect()
        .await;
    for result in results {
        result?;
    }
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let projected: i64 = sqlx::query_scalar("SELECT count(*) FROM subscriptions")
            .fetch_one(pool)
            .await?;
        if projected >= expected {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {projected} of {expected} subscriptions were projected in time"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn failed_run(fixture: &Value, run: u64) -> Vec<u8> {
    let mut payload = fixture.clone();
    payload["workflow_run"]["id"] = (1_000_000 + run).into();
    payload["workflow_run"]["run_number"] = (run + 1).into();
    payload["workflow_run"]["conclusion"] = "failure".into();
    payload["workflow_run"]["head_branch"] = format!("run-{run}").into();
    serde_json::to_vec(&payload).unwrap_or_default()
}

/// Until nothing waits anywhere in the pipeline (the outbox, the delivery queue, every read model), or
/// `timeout`.
async fn wait_until_drained(pool: &sqlx::PgPool, timeout: Duration) {
    let start = Instant::now();
    while start.elapsed() < timeout {
        match projections::status::database_status(pool).await {
            Ok(s)
                if s.outbox_depth == 0
                    && s.delivery_queue_depth == 0
                    && s.projections.iter().all(|p| p.aggregates_behind == 0) =>
            {
                eprintln!(
                    "  (the pipeline drained {:.1} s after the last message)",
                    start.elapsed().as_secs_f64()
                );
                return;
            }
            Ok(_) => {}
            Err(e) => eprintln!("  (could not read the pipeline's status: {e})"),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// `rates`: the first rate offered and the highest (the rate doubles in between while every message arrives).
pub async fn end_to_end(
    database_url: &str,
    buses: &[Bus],
    rates: (f64, f64),
    step: Duration,
) -> anyhow::Result<EndToEndBench> {
    end_to_end_with(
        database_url,
        buses,
        rates,
        step,
        workers::DEFAULT_FETCH_WAIT_MS,
    )
    .await
}

/// [`end_to_end`] with the Kafka consumers' `fetch.wait.max.ms` (`HERALD_KAFKA_FETCH_WAIT_MS`).
pub async fn end_to_end_with(
    database_url: &str,
    buses: &[Bus],
    rates: (f64, f64),
    step: Duration,
    fetch_wait_ms: u32,
) -> anyhow::Result<EndToEndBench> {
    let mut runs = Vec::new();
    for bus in buses {
        let run = super::bench::in_scratch_database(
            database_url,
            &format!("herald_bench_e2e_{}", bus.name().replace('-', "_")),
            async |options| end_to_end_on(options, bus, rates, step, fetch_wait_ms).await,
        )
        .await?;
        runs.push(run);
    }
    Ok(EndToEndBench {
        scenario: "e2e",
        runs,
    })
}

async fn end_to_end_on(
    options: PgConnectOptions,
    bus: &Bus,
    rates: (f64, f64),
    step: Duration,
    fetch_wait_ms: u32,
) -> anyhow::Result<EndToEnd> {
    // Telegram's per-chat pacing is a deliberate wait, not the pipeline's cost: off on both sides here (the
    // delivery scenario keeps it on).
    let fake = Arc::new(
        FakeTelegram::start(FakeLimits {
            per_chat_per_sec: 0,
            overall_per_sec: 0,
        })
        .await?,
    );
    let mut settings = super::bench::unlimited_settings(&options)?;
    settings.kafka = bus.config("e2e").map(|kafka| KafkaConfig {
        fetch_wait_ms,
        ..kafka
    });
    settings.telegram = Some(telegram(&fake));
    settings.delivery.telegram_limits.per_chat_per_sec = 0;
    settings.delivery.telegram_limits.overall_per_sec = 0;
    settings.delivery.concurrency = 16;
    settings.pool.max_connections = 48;
    let super::bench::BenchHerald {
        running,
        pool,
        commands,
        project,
        secret,
    } = super::bench::start_with_project(&settings, &PIPELINE).await?;
    subscribe_chats(&commands, &pool, project, 1..=1).await?;

    let fixture: Value = serde_json::from_str(FIXTURE)?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()?;
    let url = format!(
        "http://{}/api/v1/webhooks/github/{project}",
        running.http_addr
    );
    let post = move |run: u64| {
        let body = failed_run(&fixture, run);
        let signature = commands::providers::sign(&secret, &body);
        http.post(&url)
            .header("content-type", "application/json")
            .header("x-github-event", "workflow_run")
            .header("x-github-delivery", format!("bench-{run}"))
            .header("x-hub-signature-256", signature)
            .body(body)
            .send()
    };
    let post = Arc::new(post);
    let delivered: Send = {
        let (fake, post) = (fake.clone(), post.clone());
        Arc::new(move |run| {
            let arrived = fake.wait_for_run(run);
            let request = post(run);
            Box::pin(async move {
                matches!(request.await, Ok(r) if r.status() == 202)
                    && tokio::time::timeout(Duration::from_secs(10), arrived)
                        .await
                        .is_ok_and(|a| a.is_ok())
            })
        })
    };
    let accepted: Send = {
        let post = post.clone();
        Arc::new(move |run| {
            let request = post(run);
            Box::pin(async move { matches!(request.await, Ok(r) if r.status() == 202) })
        })
    };

    eprintln!("e2e through the {} bus: webhook → sendMessage", bus.name());
    let mut steps = Vec::new();
    // A step that overloaded it leaves a backlog; a step timed on top of it would time the drain. Not only
    // the messages: the read models catch up on the same two cores for a long while after the last message.
    let quiet = async || {
        fake.wait_until_quiet(Duration::from_secs(2), Duration::from_secs(300))
            .await;
        wait_until_drained(&pool, Duration::from_secs(300)).await;
    };
    let max = find_max(
        "e2e",
        delivered.clone(),
        rates,
        step,
        256,
        &mut steps,
        quiet,
    )
    .await;
    let next = steps.iter().map(|s| s.requests).sum::<u64>();
    let (mut at_half_max, mut accepted_at_half_max) = (None, None);
    if max > 0.0 {
        quiet().await;
        let half = open_loop("e2e", delivered, max / 2.0, step, 256, next).await;
        let next = next + half.requests;
        let baseline = open_loop("accepted", accepted, max / 2.0, step, 256, next).await;
        eprintln!(
            "  at {:.0}/s: sendMessage p50 {:.1} ms p99 {:.1} ms; 202 p50 {:.1} ms p99 {:.1} ms",
            max / 2.0,
            half.p50_ms,
            half.p99_ms,
            baseline.p50_ms,
            baseline.p99_ms
        );
        at_half_max = Some(half);
        accepted_at_half_max = Some(baseline);
    }
    running.stop().await;
    pool.close().await;
    Ok(EndToEnd {
        bus: bus.name(),
        max_per_second: max,
        at_half_max,
        accepted_at_half_max,
        steps,
    })
}

#[derive(Debug, Serialize)]
pub struct RelayBench {
    pub scenario: &'static str,
    pub events: u64,
    pub baseline_seconds: f64,
    pub baseline_events_per_second: f64,
    pub relay_seconds: f64,
    pub relay_events_per_second: f64,
    /// Relay throughput over raw produce throughput.
    pub ratio_to_baseline: f64,
    /// While the relay ran (the baseline holds every payload in memory at once; the relay a batch).
    pub peak_rss_mib: f64,
}

pub async fn relay(database_url: &str, brokers: &str, events: u64) -> anyhow::Result<RelayBench> {
    super::bench::in_scratch_database(database_url, "herald_bench_relay", async |options| {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        commands::migrate(&pool).await?;
        eprintln!("generating {events} events into the log and the outbox…");
        let events = super::bench::generate(&pool, events).await?;
        sqlx::query("INSERT INTO outbox (global_seq) SELECT global_seq FROM events")
            .execute(&pool)
            .await?;

        // Baseline: the same events, serialized the same way, keyed the same way, produced with the same
        // settings; nothing read from or written to Postgres while it is timed.
        let bus = Bus::Kafka(brokers.to_owned());
        let baseline_config = bus.config("produce").context("a Kafka bus")?;
        baseline_config.ensure_topic().await?;
        let payloads: Vec<(String, Vec<u8>)> =
            sqlx::query_as::<_, projections::log::EventRow>(&format!(
                "SELECT {} FROM events e ORDER BY e.global_seq",
                projections::log::EVENT_COLUMNS
            ))
            .fetch_all(&pool)
            .await?
            .into_iter()
            .map(domain::StoredEvent::from)
            .map(|e| Ok((e.aggregate_id.clone(), serde_json::to_vec(&e)?)))
            .collect::<anyhow::Result<_>>()?;
        let producer = baseline_config.producer()?;
        eprintln!("baseline: raw produce of {events} events");
        super::bench::reset_peak_rss();
        let started = Instant::now();
        for chunk in payloads.chunks(10_000) {
            let sends = chunk.iter().map(|(key, payload)| {
                producer.send(
                    FutureRecord::to(&baseline_config.topic)
                        .key(key.as_bytes())
                        .payload(payload.as_slice()),
                    Duration::from_secs(30),
                )
            });
            for result in futures::future::join_all(sends).await {
                result.map_err(|(e, _)| e)?;
            }
        }
        let baseline_seconds = started.elapsed().as_secs_f64();
        drop(payloads);

        eprintln!("relay: outbox → Kafka");
        super::bench::reset_peak_rss();
        let relay_config = bus.config("relay").context("a Kafka bus")?;
        relay_config.ensure_topic().await?;
        let publisher = Arc::new(KafkaPublisher::new(&relay_config)?);
        let relay = workers::Relay::new(pool.clone(), publisher);
        let mut conn = pool.acquire().await?.detach();
        let started = Instant::now();
        let relayed = relay.drain(&mut conn).await? as u64;
        let relay_seconds = started.elapsed().as_secs_f64();
        conn.close().await?;
        anyhow::ensure!(relayed == events, "relayed {relayed} of {events} events");
        let peak_rss_mib = super::bench::peak_rss_mib();
        pool.close().await;
        let baseline_rate = events as f64 / baseline_seconds;
        let relay_rate = events as f64 / relay_seconds;
        Ok(RelayBench {
            scenario: "relay",
            events,
            baseline_seconds,
            baseline_events_per_second: baseline_rate,
            relay_seconds,
            relay_events_per_second: relay_rate,
            ratio_to_baseline: relay_rate / baseline_rate,
            peak_rss_mib,
        })
    })
    .await
}

#[derive(Debug, Serialize)]
pub struct DeliveryBench {
    pub scenario: &'static str,
    pub chats: u64,
    pub bus: &'static str,
    pub delivery_concurrency: usize,
    /// Webhook 202 → the last chat's message.
    pub seconds: f64,
    pub sent_per_second: f64,
    /// 429s the fake answered: Herald exceeding Telegram's limits.
    pub too_many_requests: u64,
    /// Baseline: the same messages straight to the fake by a plain HTTP client with the same concurrency.
    pub baseline_sent_per_second: f64,
    pub ratio_to_baseline: f64,
    pub peak_rss_mib: f64,
}

pub async fn delivery(
    database_url: &str,
    chats: u64,
    concurrency: usize,
) -> anyhow::Result<DeliveryBench> {
    super::bench::in_scratch_database(database_url, "herald_bench_delivery", async |options| {
        let limits = FakeLimits {
            per_chat_per_sec: 1,
            overall_per_sec: 0,
        };
        let fake = FakeTelegram::start(limits).await?;

        eprintln!("baseline: {chats} sendMessage calls straight to the fake, {concurrency} at a time");
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(concurrency)
            .build()?;
        let started = Instant::now();
        let calls = (1..=chats).map(|chat| {
            let request = http
                .post(format!("{}/bot1:bench/sendMessage", fake.url))
                .json(&serde_json::json!({ "chat_id": chat as i64 + 1_000_000, "text": "baseline", "parse_mode": "HTML" }))
                .send();
            async move { matches!(request.await, Ok(r) if r.status().is_success()) }
        });
        let ok = futures::stream::iter(calls)
            .buffer_unordered(concurrency)
            .filter(|ok| std::future::ready(*ok))
            .count()
            .await as u64;
        anyhow::ensure!(ok == chats, "the fake took {ok} of {chats} baseline messages");
        let baseline_rate = chats as f64 / started.elapsed().as_secs_f64();
        let baseline_sent = fake.sent();

        let mut settings = super::bench::unlimited_settings(&options)?;
        settings.telegram = Some(telegram(&fake));
        // Telegram's per-chat limit on (the fake enforces it); the overall 30/s bot limit off, as for a bot
        // with paid broadcasts: with it on, Herald sends 30/s by design.
        settings.delivery.telegram_limits.overall_per_sec = 0;
        settings.delivery.concurrency = concurrency;
        settings.pool.max_connections = (2 * concurrency as u32 + 16).min(90);
        let super::bench::BenchHerald {
            running,
            pool,
            commands,
            project,
            secret,
        } = super::bench::start_with_project(&settings, &PIPELINE).await?;
        eprintln!("subscribing {chats} chats…");
        subscribe_chats(&commands, &pool, project, 1..=chats as i64).await?;

        eprintln!("one failed run to {chats} chats");
        super::bench::reset_peak_rss();
        let fixture: Value = serde_json::from_str(FIXTURE)?;
        let body = failed_run(&fixture, 0);
        let signature = commands::providers::sign(&secret, &body);
        let started = Instant::now();
        let response = http
            .post(format!("http://{}/api/v1/webhooks/github/{project}", running.http_addr))
            .header("content-type", "application/json")
            .header("x-github-event", "workflow_run")
            .header("x-github-delivery", "bench-delivery")
            .header("x-hub-signature-256", signature)
            .body(body)
            .send()
            .await?;
        anyhow::ensure!(response.status() == 202, "the webhook got {}", response.status());
        let all = fake
            .wait_for_sent(baseline_sent + chats, Duration::from_secs(1800))
            .await;
        let seconds = started.elapsed().as_secs_f64();
        anyhow::ensure!(
            all,
            "only {} of {chats} messages arrived",
            fake.sent() - baseline_sent
        );
        let peak_rss_mib = super::bench::peak_rss_mib();
        running.stop().await;
        pool.close().await;
        let rate = chats as f64 / seconds;
        Ok(DeliveryBench {
            scenario: "delivery",
            chats,
            bus: "in-process",
            delivery_concurrency: concurrency,
            seconds,
            sent_per_second: rate,
            too_many_requests: fake.rejected(),
            baseline_sent_per_second: baseline_rate,
            ratio_to_baseline: rate / baseline_rate,
            peak_rss_mib,
        })
    })
    .await
}

pub fn print_end_to_end(bench: &EndToEndBench) {
    println!("scenario  bus         target    offered/s  achieved/s  p50 ms   p90 ms   p99 ms  p99.9 ms  errors  peak RSS");
    for run in &bench.runs {
        for s in run
            .steps
            .iter()
            .chain(run.at_half_max.iter())
            .chain(run.accepted_at_half_max.iter())
        {
            println!("{:<8}  {:<10}  {}", bench.scenario, run.bus, s.row());
        }
        println!(
            "{}: max {:.0} runs/s to sendMessage",
            run.bus, run.max_per_second
        );
    }
}

pub fn print_relay(bench: &RelayBench) {
    println!("scenario  events    raw produce ev/s  relay ev/s  ratio  peak RSS");
    println!(
        "{:<8}  {:>7}  {:>16.0}  {:>10.0}  {:>5.2}  {:.0} MiB",
        bench.scenario,
        bench.events,
        bench.baseline_events_per_second,
        bench.relay_events_per_second,
        bench.ratio_to_baseline,
        bench.peak_rss_mib
    );
}

pub fn print_delivery(bench: &DeliveryBench) {
    println!("scenario  chats  concurrency  sent/s  429s  plain client sent/s  ratio  peak RSS");
    println!(
        "{:<8}  {:>5}  {:>11}  {:>6.0}  {:>4}  {:>19.0}  {:>5.3}  {:.0} MiB",
        bench.scenario,
        bench.chats,
        bench.delivery_concurrency,
        bench.sent_per_second,
        bench.too_many_requests,
        bench.baseline_sent_per_second,
        bench.ratio_to_baseline,
        bench.peak_rss_mib
    );
}
