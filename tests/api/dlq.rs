//! The dead-letter queue: a notification Telegram refused is listed, redriven (and then delivered) or
//! discarded, and every operator action is an event in its trail.

use serde_json::{json, Value};

use crate::helpers::{fixture, spawn_app, Bus, Reply, TestApp};

async fn dead_letter(app: &TestApp) -> String {
    app.telegram.script([Reply::Blocked]);
    let project = app.create_project("dlq").await;
    app.subscribe(project.id, 41, None).await;
    app.post_github(
        &project,
        "workflow_run",
        &fixture("workflow_run/completed.payload.json"),
        "dl-1",
    )
    .await;
    app.wait_for_notifications("dead_lettered", 1).await;
    let listed: Value = app.get("/api/v1/dlq").await.json().await.unwrap();
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
    listed["items"][0]["notification_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn a_redriven_dead_letter_is_delivered_and_leaves_the_queue() {
    let app = spawn_app(Bus::InProcess).await;
    let id = dead_letter(&app).await;
    let redriven = app
        .post_json(&format!("/api/v1/dlq/{id}/redrive"), json!({}))
        .await;
    assert_eq!(redriven.status(), 202);
    app.wait_for_messages(1).await;
    app.drain().await;
    assert_eq!(app.telegram.calls().len(), 2);
    let listed: Value = app.get("/api/v1/dlq").await.json().await.unwrap();
    assert_eq!(listed["items"], json!([]));
    let shown: Value = app
        .get(&format!("/api/v1/dlq/{id}"))
        .await
        .json()
        .await
        .unwrap();
    let trail: Vec<&str> = shown["trail"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(
        trail,
        [
            "NotificationPlanned",
            "AttemptStarted",
            "AttemptFailed",
            "DeadLettered",
            "NotificationRedriven",
            "AttemptStarted",
            "Delivered"
        ]
    );
    assert_eq!(shown["notification"]["status"], "delivered");
    let again = app
        .post_json(&format!("/api/v1/dlq/{id}/redrive"), json!({}))
        .await;
    assert_eq!(
        again.status(),
        409,
        "a delivered notification is not redriven"
    );
    app.finish().await;
}

#[tokio::test]
async fn a_discarded_dead_letter_is_never_sent() {
    let app = spawn_app(Bus::InProcess).await;
    let id = dead_letter(&app).await;
    let empty = app
        .post_json(
            &format!("/api/v1/dlq/{id}/discard"),
            json!({ "reason": " " }),
        )
        .await;
    assert_eq!(empty.status(), 422);
    let discarded = app
        .post_json(
            &format!("/api/v1/dlq/{id}/discard"),
            json!({ "reason": "chat deleted" }),
        )
        .await;
    assert_eq!(discarded.status(), 200);
    app.drain().await;
    let listed: Value = app.get("/api/v1/dlq").await.json().await.unwrap();
    assert_eq!(listed["items"], json!([]));
    let shown: Value = app
        .get(&format!("/api/v1/dlq/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(shown["notification"]["status"], "discarded");
    assert_eq!(
        shown["trail"].as_array().unwrap().last().unwrap()["event_type"],
        "DeadLetterDiscarded"
    );
    assert_eq!(
        app.post_json(&format!("/api/v1/dlq/{id}/redrive"), json!({}))
            .await
            .status(),
        409
    );
    let unknown = uuid::Uuid::new_v4();
    assert_eq!(
        app.post_json(&format!("/api/v1/dlq/{unknown}/redrive"), json!({}))
            .await
            .status(),
        404
    );
    assert_eq!(
        app.get(&format!("/api/v1/dlq/{unknown}")).await.status(),
        404
    );
    assert_eq!(app.telegram.calls().len(), 1);
    app.finish().await;
}

#[tokio::test]
async fn the_cli_lists_shows_redrives_and_discards_dead_letters() {
    use herald::ops::dlq::{run, Action};
    let app = spawn_app(Bus::InProcess).await;
    let id: uuid::Uuid = dead_letter(&app).await.parse().unwrap();
    run(
        &app.pool,
        Action::List {
            project: None,
            limit: 10,
        },
    )
    .await
    .unwrap();
    run(&app.pool, Action::Show(id)).await.unwrap();
    assert!(run(&app.pool, Action::Show(uuid::Uuid::new_v4()))
        .await
        .is_err());
    run(&app.pool, Action::Discard(id, "chat gone".into()))
        .await
        .unwrap();
    assert!(
        run(&app.pool, Action::Redrive(id)).await.is_err(),
        "a discarded letter stays discarded"
    );
    let trail = projections::log::aggregate_events(&app.pool, "Notification", &id.to_string())
        .await
        .unwrap();
    let last = trail.last().unwrap();
    assert_eq!(last.event_type, "DeadLetterDiscarded");
    assert!(last.payload["DeadLetterDiscarded"]["by"]
        .as_str()
        .unwrap()
        .starts_with("cli:"));
    app.finish().await;
}
