//! End to end: webhook → event log → stream → planner → Telegram, through Kafka and through the in-process bus,
//! and what delivery does when Telegram says no.

use std::sync::Arc;
use std::time::{Duration, Instant};

use herald::Role;
use serde_json::{json, Value};

use crate::helpers::{
    fixture, fixture_with, spawn_app, spawn_app_configured, spawn_app_with, Bus, Reply, TestApp,
};

async fn a_completed_run_for_a_subscribed_project_sends_exactly_one_message(bus: Bus) {
    let app = spawn_app(bus).await;
    let project = app.create_project("e2e").await;
    app.subscribe(project.id, 4242, None).await;
    let posted = Instant::now();
    let response = app
        .post_github(
            &project,
            "workflow_run",
            &fixture("workflow_run/completed.payload.json"),
            "e2e-1",
        )
        .await;
    assert_eq!(response.status(), 202);
    app.wait_for_messages(1).await;
    println!(
        "webhook to sendMessage ({}): {:?}",
        if bus == Bus::Kafka {
            "kafka"
        } else {
            "in-process"
        },
        posted.elapsed()
    );
    app.drain().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let calls = app.telegram.calls();
    assert_eq!(calls.len(), 1, "exactly one sendMessage");
    let message = &calls[0];
    assert_eq!(message.chat_id, 4242);
    assert_eq!(message.parse_mode.as_deref(), Some("HTML"));
    for needle in ["octo-org/octo-repo", "master", "test", "succeeded"] {
        assert!(
            message.text.contains(needle),
            "{needle:?} missing from {:?}",
            message.text
        );
    }
    let build_run_id: String = sqlx::query_scalar("SELECT build_run_id FROM build_runs")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let notifications = projections::queries::notifications_for_build(&app.pool, &build_run_id)
        .await
        .unwrap();
    assert_eq!(notifications.len(), 1);
    assert_eq!(notifications[0].status, "delivered");
    assert_eq!(notifications[0].provider_message_id.as_deref(), Some("1"));
    let trail: Vec<String> = sqlx::query_scalar(
        "SELECT event_type FROM events WHERE aggregate_type = 'Notification' ORDER BY global_seq",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        trail,
        ["NotificationPlanned", "AttemptStarted", "Delivered"]
    );
    app.finish().await;
}

#[tokio::test]
async fn a_completed_run_reaches_telegram_once_through_kafka() {
    a_completed_run_for_a_subscribed_project_sends_exactly_one_message(Bus::Kafka).await;
}

#[tokio::test]
async fn a_completed_run_reaches_telegram_once_through_the_in_process_bus() {
    a_completed_run_for_a_subscribed_project_sends_exactly_one_message(Bus::InProcess).await;
}

/// Not a speed test (nothing is asserted about time): it prints the rate it saw, for the record.
async fn many_runs_all_arrive(bus: Bus) {
    const RUNS: i64 = 100;
    // All to one chat, as fast as the pipeline goes: Telegram's per-chat limit (which would space these a
    // second apart) is turned off; the rate-limit tests cover it.
    let app = spawn_app_configured(bus, &Role::ALL, |s| {
        s.delivery.telegram_limits.per_chat_per_sec = 0;
    })
    .await;
    let project = app.create_project("busy").await;
    app.subscribe(project.id, 77, Some(vec!["failed"])).await;
    let before = app.event_count().await;
    let started = Instant::now();
    let project = Arc::new(project);
    for chunk in (0..RUNS).collect::<Vec<_>>().chunks(10) {
        let posts = chunk.iter().map(|&i| {
            let body = fixture_with("workflow_run/completed.payload.json", |v| {
                v["workflow_run"]["id"] = (1000 + i).into();
                v["workflow_run"]["conclusion"] = "failure".into();
            });
            let (app, project) = (&app, project.clone());
            async move {
                app.post_github(&project, "workflow_run", &body, &format!("busy-{i}"))
                    .await
                    .status()
            }
        });
        for status in futures::future::join_all(posts).await {
            assert_eq!(status, 202);
        }
    }
    app.wait_for_messages(RUNS as usize).await;
    app.drain().await;
    let elapsed = started.elapsed();
    let events = app.event_count().await - before;
    println!(
        "end to end ({}): {RUNS} failed runs, {events} events through the pipeline in {elapsed:?} = {:.0} events/s",
        if bus == Bus::Kafka { "kafka" } else { "in-process" },
        events as f64 / elapsed.as_secs_f64()
    );
    assert_eq!(app.telegram.calls().len(), RUNS as usize);
    app.finish().await;
}

#[tokio::test]
async fn a_hundred_runs_all_reach_telegram_through_kafka() {
    many_runs_all_arrive(Bus::Kafka).await;
}

#[tokio::test]
async fn a_hundred_runs_all_reach_telegram_through_the_in_process_bus() {
    many_runs_all_arrive(Bus::InProcess).await;
}

async fn notification_status(app: &TestApp) -> Value {
    let row: (String, i32, Option<String>) =
        sqlx::query_as("SELECT status, attempts, reason FROM notifications")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    serde_json::json!({ "status": row.0, "attempts": row.1, "reason": row.2 })
}

#[tokio::test]
async fn telegram_rate_limits_and_outages_are_retried_until_delivered() {
    let app = spawn_app(Bus::InProcess).await;
    app.telegram.script([
        Reply::TooManyRequests { retry_after: 1 },
        Reply::ServerError,
    ]);
    let project = app.create_project("flaky provider").await;
    app.subscribe(project.id, 9, None).await;
    app.post_github(
        &project,
        "workflow_run",
        &fixture("workflow_run/completed.payload.json"),
        "rl-1",
    )
    .await;
    app.wait_for_notifications("delivered", 1).await;
    assert_eq!(app.telegram.calls().len(), 3);
    assert_eq!(app.telegram.delivered().len(), 1);
    assert_eq!(notification_status(&app).await["attempts"], 3);
    let waits: Vec<(Option<chrono::DateTime<chrono::Utc>>, chrono::DateTime<chrono::Utc>)> = sqlx::query_as(
        "SELECT (payload::jsonb -> 'AttemptFailed' ->> 'retry_at')::timestamptz, recorded_at FROM events
          WHERE event_type = 'AttemptFailed' ORDER BY global_seq",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(waits.len(), 2);
    assert!(
        waits[0].0.unwrap() - waits[0].1 >= chrono::Duration::milliseconds(900),
        "429 retry_after is honoured"
    );
    app.finish().await;
}

#[tokio::test]
async fn a_blocked_bot_or_unknown_chat_is_dead_lettered_without_retries() {
    for (reply, reason) in [
        (Reply::Blocked, "blocked"),
        (Reply::ChatNotFound, "chat not found"),
    ] {
        let app = spawn_app(Bus::InProcess).await;
        app.telegram.script([reply]);
        let project = app.create_project("unreachable").await;
        app.subscribe(project.id, 10, None).await;
        app.post_github(
            &project,
            "workflow_run",
            &fixture("workflow_run/completed.payload.json"),
            "b-1",
        )
        .await;
        app.wait_for_notifications("dead_lettered", 1).await;
        assert_eq!(app.telegram.calls().len(), 1);
        let status = notification_status(&app).await;
        assert!(
            status["reason"].as_str().unwrap().contains(reason),
            "{status}"
        );
        app.finish().await;
    }
}

#[tokio::test]
async fn an_unwanted_outcome_is_suppressed_with_a_reason() {
    let app = spawn_app(Bus::InProcess).await;
    let project = app.create_project("quiet").await;
    app.subscribe(project.id, 11, Some(vec!["failed", "fixed"]))
        .await;
    app.post_github(
        &project,
        "workflow_run",
        &fixture("workflow_run/completed.payload.json"),
        "q-1",
    )
    .await;
    app.drain().await;
    let status = notification_status(&app).await;
    assert_eq!(status["status"], "suppressed");
    assert_eq!(status["reason"], "outcome_not_subscribed");
    assert!(app.telegram.calls().is_empty());
    app.finish().await;
}

#[tokio::test]
async fn a_verdict_planned_twice_is_sent_once() {
    let app = spawn_app(Bus::InProcess).await;
    let project = app.create_project("replayed").await;
    app.subscribe(project.id, 12, None).await;
    app.post_github(
        &project,
        "workflow_run",
        &fixture("workflow_run/completed.payload.json"),
        "p-1",
    )
    .await;
    app.wait_for_messages(1).await;
    app.drain().await;
    // The stream redelivers the verdict (a consumer restarted before committing its offset).
    let commands = Arc::new(commands::Commands::new(app.pool.clone()));
    let planner = workers::Planner::new(commands, app.settings.channels());
    let verdict = projections::log::read_all(&app.pool)
        .await
        .unwrap()
        .into_iter()
        .find(|e| e.event_type == "BuildSucceeded")
        .unwrap();
    use workers::EventHandler;
    planner.handle(&verdict).await.unwrap();
    planner.handle(&verdict).await.unwrap();
    app.drain().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(app.telegram.calls().len(), 1);
    assert_eq!(
        app.count("SELECT count(*) FROM events WHERE event_type = 'NotificationPlanned'")
            .await,
        1
    );
    app.finish().await;
}

#[tokio::test]
async fn a_telegram_attempt_interrupted_mid_send_is_dead_lettered_not_sent_twice() {
    let app = spawn_app_with(Bus::InProcess, &[Role::Api, Role::Projections]).await;
    let commands = Arc::new(commands::Commands::new(app.pool.clone()));
    let id = uuid::Uuid::new_v4();
    let metadata = commands::Metadata::new();
    let plan = domain::NotificationCommand::Plan {
        notification_id: id,
        build_run_id: "b".into(),
        project_id: uuid::Uuid::new_v4(),
        subscription_id: uuid::Uuid::new_v4(),
        subscription_version: 1,
        template: workers::MessageRenderer::TELEGRAM_BUILD.into(),
        channel: domain::Channel::Telegram {
            chat_id: domain::ChatId::parse(5).unwrap(),
            topic_id: None,
        },
        text: "hello".into(),
        buttons: vec![],
        details: domain::MessageDetails::default(),
        at: chrono::Utc::now(),
    };
    commands
        .notifications()
        .execute(&id.to_string(), plan, &metadata)
        .await
        .unwrap();
    // A worker started attempt 1, then died before it could record what Telegram said.
    let start = domain::NotificationCommand::StartAttempt {
        at: chrono::Utc::now(),
    };
    commands
        .notifications()
        .execute(&id.to_string(), start, &metadata)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO delivery_queue (notification_id, next_attempt_at, chat_id) VALUES ($1, now(), 5)",
    )
    .bind(id)
    .execute(&app.pool)
    .await
    .unwrap();
    let worker = app.telegram_worker(commands.clone());
    assert_eq!(
        worker.try_deliver_next().await.unwrap(),
        workers::DeliveryOutcome::DeadLettered
    );
    assert_eq!(
        worker.try_deliver_next().await.unwrap(),
        workers::DeliveryOutcome::Idle
    );
    assert_eq!(
        app.telegram.calls().len(),
        0,
        "Telegram may already show it: not sent again"
    );
    let events: Vec<(String, serde_json::Value)> = sqlx::query_as(
        "SELECT event_type, payload::jsonb FROM events WHERE aggregate_id = $1 ORDER BY sequence",
    )
    .bind(id.to_string())
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let types: Vec<&str> = events.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        types,
        [
            "NotificationPlanned",
            "AttemptStarted",
            "AttemptInterrupted",
            "DeadLettered"
        ]
    );
    let reason = events[3].1["DeadLettered"]["reason"].as_str().unwrap();
    assert!(reason.contains("redrive"), "{reason}");
    app.finish().await;
}

#[tokio::test]
async fn a_worker_killed_after_telegram_took_the_message_leaves_a_dead_letter_not_a_duplicate() {
    // Planned, but no delivery role: the test runs the delivery workers itself.
    let app = spawn_app_with(
        Bus::InProcess,
        &[Role::Api, Role::Relay, Role::Projections, Role::Planner],
    )
    .await;
    let project = app.create_project("crashy").await;
    let subscription = app.subscribe(project.id, 31, None).await;
    app.telegram.script([Reply::AcceptThenHang]);
    app.post_github(
        &project,
        "workflow_run",
        &fixture("workflow_run/completed.payload.json"),
        "crash-1",
    )
    .await;
    app.wait_for_notifications("planned", 1).await;
    sqlx::query(
        "INSERT INTO delivery_queue (notification_id, next_attempt_at, channel, chat_id)
         SELECT notification_id, now(), channel, 31 FROM notifications",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let worker = |app: &TestApp| {
        Arc::new(app.telegram_worker(Arc::new(commands::Commands::new(app.pool.clone()))))
    };
    // The first worker sends; Telegram takes the message and the worker dies before hearing back.
    let first = worker(&app);
    let attempt = tokio::spawn(async move { first.try_deliver_next().await });
    app.wait_for_messages(1).await;
    attempt.abort();
    assert!(attempt.await.unwrap_err().is_cancelled());
    // The next worker cannot know whether it arrived, and Telegram has no idempotency key: it records that and
    // hands the message to an operator instead of risking a second copy in the chat.
    // The aborted worker's transaction is rolled back when its connection is next used, so its row lock may
    // outlive the abort by a moment; until then the row is skipped (Idle), as a real worker's next poll would.
    let second = worker(&app);
    let deadline = Instant::now() + Duration::from_secs(10);
    let outcome = loop {
        let outcome = second.try_deliver_next().await.unwrap();
        if outcome != workers::DeliveryOutcome::Idle || Instant::now() > deadline {
            break outcome;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(outcome, workers::DeliveryOutcome::DeadLettered);
    assert_eq!(
        second.try_deliver_next().await.unwrap(),
        workers::DeliveryOutcome::Idle
    );
    assert_eq!(app.telegram.delivered().len(), 1, "the chat shows it once");
    let audit: Value = app
        .get(&format!("/api/v1/audit/subscriptions/{subscription}"))
        .await
        .json()
        .await
        .unwrap();
    let text = audit.to_string();
    assert!(text.contains("was interrupted"), "{text}");
    assert!(text.contains("redrive it"), "{text}");
    // An operator who knows the chat never got it sends it again, knowingly.
    let (id,): (uuid::Uuid,) = sqlx::query_as("SELECT notification_id FROM notifications")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let redriven = app
        .post_json(&format!("/api/v1/dlq/{id}/redrive"), json!({}))
        .await;
    assert_eq!(redriven.status(), 202);
    // No delivery role runs here to queue it: the test does, as for the first attempt.
    sqlx::query(
        "INSERT INTO delivery_queue (notification_id, next_attempt_at, channel, chat_id)
         VALUES ($1, now(), 'telegram', 31)",
    )
    .bind(id)
    .execute(&app.pool)
    .await
    .unwrap();
    // The chat's one-a-second slot may hold it back for a moment (Deferred), never longer.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let outcome = second.try_deliver_next().await.unwrap();
        if outcome == workers::DeliveryOutcome::Delivered {
            break;
        }
        assert!(
            matches!(
                outcome,
                workers::DeliveryOutcome::Deferred | workers::DeliveryOutcome::Idle
            ) && Instant::now() < deadline,
            "{outcome:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(app.telegram.delivered().len(), 2);
    app.finish().await;
}
