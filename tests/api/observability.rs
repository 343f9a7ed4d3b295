//! What operators see: one trace id from webhook to Telegram (through Kafka headers), Prometheus metrics after
//! traffic, problem details with the trace id, workers' own health and metrics, webhook secret rotation
//! without downtime, CORS off unless configured, and configuration errors named before anything starts.

use std::time::Duration;

use herald::Role;
use serde_json::Value;

use crate::helpers::*;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

#[tokio::test]
async fn one_trace_id_spans_the_webhook_the_stream_and_the_delivery() {
    let app = spawn_app(Bus::Kafka).await;
    let project = app.create_project("traced").await;
    app.subscribe(project.id, 77, None).await;
    let body = fixture("workflow_run/completed.payload.json");
    let response = app
        .anonymous
        .post(app.url(&format!("/api/v1/webhooks/github/{}", project.id)))
        .header("content-type", "application/json")
        .header("x-github-event", "workflow_run")
        .header("x-github-delivery", "traced-1")
        .header(
            "x-hub-signature-256",
            commands::providers::sign(&project.secret, &body),
        )
        .header("traceparent", format!("00-{TRACE_ID}-00f067aa0ba902b7-01"))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let echoed = response.headers()["traceparent"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(echoed.starts_with(&format!("00-{TRACE_ID}-")), "{echoed}");
    app.wait_for_messages(1).await;
    app.drain().await;
    // The build's events (written by the API) and the notification's (written by the planner and the delivery
    // worker, after the event crossed Kafka twice) all carry the webhook's trace id.
    let traces: Vec<(String, String, Option<String>)> = sqlx::query_as(
        "SELECT aggregate_type, event_type, metadata ->> 'trace_id' FROM events
          WHERE aggregate_type IN ('BuildRun', 'Notification') ORDER BY global_seq",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert!(traces
        .iter()
        .any(|(t, e, _)| t == "Notification" && e == "Delivered"));
    for (aggregate, event, trace) in &traces {
        assert_eq!(trace.as_deref(), Some(TRACE_ID), "{aggregate}/{event}");
    }
    app.finish().await;
}

#[tokio::test]
async fn metrics_count_requests_events_and_deliveries_after_traffic() {
    let app = spawn_app(Bus::InProcess).await;
    let project = app.create_project("metered").await;
    app.subscribe(project.id, 78, None).await;
    let response = app
        .post_github(
            &project,
            "workflow_run",
            &fixture("workflow_run/completed.payload.json"),
            "m-1",
        )
        .await;
    assert_eq!(response.status(), 202);
    app.wait_for_messages(1).await;
    app.drain().await;
    let metrics = app.anonymous.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(metrics.status(), 200);
    let text = metrics.text().await.unwrap();
    for needle in [
        "herald_http_requests_total{method=\"POST\",route=\"/api/v1/webhooks/{provider}/{project}\",status=\"202\"}",
        "herald_http_request_duration_seconds_bucket",
        "herald_events_appended_total{aggregate=\"BuildRun\"}",
        "herald_deliveries_total{channel=\"telegram\",outcome=\"delivered\"}",
        "herald_outbox_depth",
        "herald_dead_letters",
        "herald_delivery_queue_depth",
        "herald_cache_requests_total{cache=\"api_keys\",result=\"hit\"}",
    ] {
        assert!(text.contains(needle), "{needle} missing from /metrics:\n{text}");
    }
    app.finish().await;
}

#[tokio::test]
async fn every_problem_carries_the_trace_id_of_its_request() {
    let app = spawn_app_with(Bus::InProcess, &[]).await;
    let response = app
        .http
        .get(app.url("/api/v1/projects/not-a-uuid/builds?limit=oops"))
        .header("traceparent", format!("00-{TRACE_ID}-00f067aa0ba902b7-01"))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_client_error());
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["trace_id"], TRACE_ID);
    let missing = app
        .anonymous
        .get(app.url("/api/v1/nothing-here"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let problem: Value = missing.json().await.unwrap();
    assert_eq!(problem["trace_id"].as_str().unwrap().len(), 32);
    let wrong_method = app
        .http
        .put(app.url("/api/v1/projects"))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_method.status(), 405);
    app.finish().await;
}

// Multi-threaded: the `herald healthcheck` child is waited for synchronously while this runtime serves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_process_answers_health_and_metrics_only() {
    let database = fresh_database().await;
    let telegram = FakeTelegram::start().await;
    let settings = settings_for(&database, Bus::Kafka, &telegram);
    let running = herald::start(&settings, &[Role::Projections])
        .await
        .unwrap();
    assert!(running.api_addr.is_none());
    let base = format!("http://{}", running.http_addr);
    let health = reqwest::get(format!("{base}/health")).await.unwrap();
    assert_eq!(health.status(), 200);
    let metrics = reqwest::get(format!("{base}/metrics")).await.unwrap();
    assert_eq!(metrics.status(), 200);
    let api = reqwest::get(format!("{base}/api/v1/projects"))
        .await
        .unwrap();
    assert_eq!(api.status(), 404);
    let probe = std::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["healthcheck", "--url", &format!("{base}/health")])
        .output()
        .unwrap();
    assert!(
        probe.status.success(),
        "{}",
        String::from_utf8_lossy(&probe.stderr)
    );
    running.stop().await;
    let probe = std::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["healthcheck", "--url", &format!("{base}/health")])
        .output()
        .unwrap();
    assert!(!probe.status.success(), "a stopped process is not healthy");
    drop_database(&database).await;
}

#[tokio::test]
async fn the_previous_webhook_secret_works_only_inside_the_overlap() {
    for (overlap, old_secret_status) in [(Duration::from_secs(3600), 202), (Duration::ZERO, 401)] {
        let app =
            spawn_app_configured(Bus::InProcess, &[], |s| s.webhook_secret_overlap = overlap).await;
        let project = app.create_project("rotating").await;
        let rotated: Value = app
            .post_json(
                &format!("/api/v1/projects/{}/secret", project.id),
                serde_json::json!({}),
            )
            .await
            .json()
            .await
            .unwrap();
        let new_secret = rotated["webhook_secret"].as_str().unwrap().to_owned();
        assert_ne!(new_secret, project.secret);
        let ping = fixture("ping/payload.json");
        let old = app.post_github(&project, "ping", &ping, "old-secret").await;
        assert_eq!(old.status(), old_secret_status, "overlap {overlap:?}");
        let renewed = CreatedProject {
            id: project.id,
            secret: new_secret,
        };
        assert_eq!(
            app.post_github(&renewed, "ping", &ping, "new-secret")
                .await
                .status(),
            202
        );
        app.finish().await;
    }
}

#[tokio::test]
async fn cors_is_off_unless_origins_are_configured() {
    let preflight = |app: &TestApp| {
        app.anonymous
            .request(reqwest::Method::OPTIONS, app.url("/api/v1/projects"))
            .header("origin", "https://dash.example")
            .header("access-control-request-method", "GET")
            .send()
    };
    let closed = spawn_app_with(Bus::InProcess, &[]).await;
    let answer = preflight(&closed).await.unwrap();
    assert!(!answer.headers().contains_key("access-control-allow-origin"));
    closed.finish().await;
    let open = spawn_app_configured(Bus::InProcess, &[], |s| {
        s.http.cors_origins = vec!["https://dash.example".into()];
    })
    .await;
    let answer = preflight(&open).await.unwrap();
    assert_eq!(
        answer.headers()["access-control-allow-origin"],
        "https://dash.example"
    );
    open.finish().await;
}

#[test]
fn configuration_errors_are_named_before_anything_starts() {
    let run = |envs: &[(&str, &str)], args: &[&str]| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_herald"));
        command.env_clear().args(args);
        for (k, v) in envs {
            command.env(k, v);
        }
        command.output().unwrap()
    };
    let bad = run(&[("HERALD_KAFKA_PARTITIONS", "zero")], &["config", "check"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("KAFKA_PARTITIONS"));
    let bad = run(&[("HERALD_PUBLIC_URL", "herald.example")], &["serve"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("HERALD_PUBLIC_URL"));
    let good = run(
        &[
            ("DATABASE_URL", "postgres://herald:hunter2@db:5432/herald"),
            ("HERALD_TELEGRAM_BOT_TOKEN", "123:very-secret"),
        ],
        &["config", "check"],
    );
    assert!(
        good.status.success(),
        "{}",
        String::from_utf8_lossy(&good.stderr)
    );
    let shown = String::from_utf8_lossy(&good.stdout);
    assert!(shown.contains("\"telegram_bot_token\": \"<redacted>\""));
    assert!(!shown.contains("hunter2") && !shown.contains("very-secret"));
}

#[tokio::test]
async fn a_provider_outage_opens_the_breaker_instead_of_burning_every_attempt() {
    let app = spawn_app_configured(Bus::InProcess, &Role::ALL, |s| {
        s.delivery.breaker = workers::breaker::BreakerSettings {
            threshold: 2,
            cooldown: Duration::from_secs(600),
        };
        // One at a time, so that no third attempt is already in flight when the second opens the breaker.
        s.delivery.concurrency = 1;
    })
    .await;
    app.telegram
        .script([Reply::ServerError, Reply::ServerError, Reply::ServerError]);
    let project = app.create_project("outage").await;
    for chat in [501, 502, 503] {
        app.subscribe(project.id, chat, None).await;
    }
    let response = app
        .post_github(
            &project,
            "workflow_run",
            &fixture("workflow_run/completed.payload.json"),
            "outage-1",
        )
        .await;
    assert_eq!(response.status(), 202);
    wait_until("the breaker opens", Duration::from_secs(20), || async {
        let status: Value = app
            .get("/api/v1/operations/status")
            .await
            .json()
            .await
            .unwrap();
        status["circuit_breakers"][0]["open"] == true
    })
    .await;
    // Two attempts failed and opened it; the third notification was not even tried.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(app.telegram.calls().len(), 2);
    let dead: i64 = app
        .count("SELECT count(*) FROM notifications WHERE status = 'dead_lettered'")
        .await;
    assert_eq!(dead, 0);
    let metrics = app
        .anonymous
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("herald_circuit_breaker_open{channel=\"telegram\"} 1"),
        "{metrics}"
    );
    app.finish().await;
}
