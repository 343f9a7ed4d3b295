//! What an operator sees: the backlog while the relay is down, and lag back to zero once it runs.

use std::time::Duration;

use herald::Role;
use serde_json::Value;

use crate::helpers::{fixture, spawn_app_with, wait_until, Bus};

fn metric(metrics: &str, name: &str) -> Vec<(String, f64)> {
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            Some((key[name.len()..].to_owned(), value.parse().ok()?))
        })
        .collect()
}

#[tokio::test]
async fn status_and_metrics_show_the_backlog_and_the_lag_going_to_zero() {
    let app = spawn_app_with(Bus::Kafka, &[Role::Api, Role::Projections]).await;
    let project = app.create_project("watched").await;
    app.post_github(
        &project,
        "workflow_run",
        &fixture("workflow_run/completed.payload.json"),
        "s-1",
    )
    .await;
    let events = app.event_count().await;

    let status: Value = app
        .get("/api/v1/operations/status")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(status["database"]["outbox_depth"], events);
    assert_eq!(status["stream"]["kind"], "kafka");
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert_eq!(
        metric(&metrics, "herald_outbox_depth"),
        [(String::new(), events as f64)]
    );
    let behind = metric(&metrics, "herald_projection_aggregates_behind");
    assert!(
        behind
            .iter()
            .any(|(labels, n)| labels.contains("build_runs") && *n == 1.0),
        "{behind:?}"
    );

    let relay = herald::start(&app.settings, &[Role::Relay]).await.unwrap();
    app.drain().await;
    let pool_app = &app;
    wait_until(
        "the projections group has committed everything",
        Duration::from_secs(20),
        || async move {
            let metrics = pool_app.get("/metrics").await.text().await.unwrap();
            let lag = metric(&metrics, "herald_consumer_lag");
            lag.iter().any(|(labels, _)| labels.contains("projections"))
                && lag
                    .iter()
                    .filter(|(labels, _)| labels.contains("projections"))
                    .all(|(_, n)| *n == 0.0)
        },
    )
    .await;
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert_eq!(
        metric(&metrics, "herald_outbox_depth"),
        [(String::new(), 0.0)]
    );
    assert!(metric(&metrics, "herald_projection_aggregates_behind")
        .iter()
        .all(|(_, n)| *n == 0.0));
    relay.stop().await;

    let output = std::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .arg("status")
        .env("DATABASE_URL", &app.settings.database_url)
        .env_remove("HERALD_KAFKA_BROKERS")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let printed: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(printed["database"]["events_total"], events);
    app.finish().await;
}
