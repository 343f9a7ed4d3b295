//! Delivery benchmark (not a timed test; it prints figures): throughput to the fake Telegram across many chats,
//! and the latency from a webhook's 202 to the `sendMessage` that announces it. Run with
//! `cargo test --release --test api bench_delivery -- --ignored --nocapture` (Postgres needed, no Kafka).

use std::time::{Duration, Instant};

use herald::Role;

use crate::helpers::{fixture_with, spawn_app_configured, Bus};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: prints figures"]
async fn bench_delivery() {
    const CHATS: i64 = 200;
    const RUNS: i64 = 50;
    // Limits off: what the pipeline itself sustains (with them on, Telegram's 30/s caps it by design).
    let app = spawn_app_configured(Bus::InProcess, &Role::ALL, |s| {
        s.delivery.telegram_limits.per_chat_per_sec = 0;
        s.delivery.telegram_limits.overall_per_sec = 0;
    })
    .await;
    let project = app.create_project("bench").await;
    for chat in 1..=CHATS {
        app.subscribe(project.id, chat, Some(vec!["failed"])).await;
    }
    let fail = |run: i64| {
        fixture_with("workflow_run/completed.payload.json", |v| {
            v["workflow_run"]["id"] = run.into();
            v["workflow_run"]["conclusion"] = "failure".into();
        })
    };

    // Throughput: one failed run fans out to every chat.
    let started = Instant::now();
    app.post_github(&project, "workflow_run", &fail(1), "bench-fanout")
        .await;
    app.wait_for_messages(CHATS as usize).await;
    let fanout = started.elapsed();
    println!(
        "delivery fan-out: {CHATS} chats in {fanout:?} = {:.0} messages/s",
        CHATS as f64 / fanout.as_secs_f64()
    );

    // Latency: one chat, runs one after another; webhook accepted → sendMessage received.
    let app2 = spawn_app_configured(Bus::InProcess, &Role::ALL, |s| {
        s.delivery.telegram_limits.per_chat_per_sec = 0;
    })
    .await;
    let project2 = app2.create_project("bench latency").await;
    app2.subscribe(project2.id, 1, Some(vec!["failed"])).await;
    let mut latencies = Vec::new();
    for run in 0..RUNS {
        let sent = Instant::now();
        let response = app2
            .post_github(
                &project2,
                "workflow_run",
                &fail(1000 + run),
                &format!("lat-{run}"),
            )
            .await;
        assert_eq!(response.status(), 202);
        app2.wait_for_messages(run as usize + 1).await;
        latencies.push(sent.elapsed());
    }
    latencies.sort();
    println!(
        "webhook → sendMessage over {RUNS} runs: p50 {:?}, p99 {:?}, max {:?}",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies[latencies.len() - 1]
    );
    app.finish().await;
    app2.finish().await;
}
