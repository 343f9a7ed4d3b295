//! Telegram delivery as a chat sees it: Telegram's rate limits kept on Herald's side (the fake answers 429 to
//! whatever breaks them, as the real API does), and a run's verdict editing its "started" message in place.

use std::time::{Duration, Instant};

use domain::{ChatId, ChatKind, ContactAddress, Preferences};
use uuid::Uuid;

use crate::helpers::{fixture_with, spawn_app, Bus, CreatedProject, TestApp};

#[tokio::test]
async fn a_hundred_chats_get_their_message_without_a_single_429() {
    let app = spawn_app(Bus::InProcess).await;
    app.telegram.enforce_limits();
    let project = app.create_project("popular").await;
    for chat in 1..=100 {
        app.subscribe(project.id, 10_000 + chat, Some(vec!["failed"]))
            .await;
    }
    let started = Instant::now();
    app.fail_run(&project, 1).await;
    app.wait_for_messages(100).await;
    let elapsed = started.elapsed();
    assert_eq!(app.telegram.limited(), 0, "no send broke Telegram's limits");
    assert_eq!(
        app.telegram.calls().len(),
        100,
        "and none had to be retried"
    );
    let mut chats: Vec<i64> = app.telegram.delivered().iter().map(|m| m.chat_id).collect();
    chats.sort_unstable();
    chats.dedup();
    assert_eq!(chats.len(), 100, "one message to each chat");
    // Thirty a second in all: a hundred messages take more than three seconds.
    assert!(elapsed >= Duration::from_millis(3200), "{elapsed:?}");
    app.finish().await;
}

#[tokio::test]
async fn one_chat_gets_a_message_a_second_and_one_group_one_every_three() {
    let app = spawn_app(Bus::InProcess).await;
    app.telegram.enforce_limits();
    let project = app.create_project("busy repo").await;
    app.subscribe(project.id, 7, Some(vec!["failed"])).await;
    app.subscribe(project.id, -100_123, Some(vec!["failed"]))
        .await;
    for run in 1..=3 {
        app.fail_run(&project, 100 + run).await;
    }
    app.wait_for_messages(6).await;
    assert_eq!(app.telegram.limited(), 0);
    let gaps = |chat: i64| -> Vec<Duration> {
        let times = app.telegram.accepted_times(chat);
        times.windows(2).map(|w| w[1] - w[0]).collect()
    };
    assert!(
        gaps(7).iter().all(|g| *g >= Duration::from_millis(900)),
        "{:?}",
        gaps(7)
    );
    assert!(
        gaps(-100_123)
            .iter()
            .all(|g| *g >= Duration::from_millis(2900)),
        "{:?}",
        gaps(-100_123)
    );
    app.finish().await;
}

/// A subscriber whose chat follows `project` from start to verdict.
async fn follower(app: &TestApp, project: Uuid, chat: i64, edit_in_place: bool) {
    let address = ContactAddress::Telegram {
        chat_id: ChatId::parse(chat).unwrap(),
        chat_type: ChatKind::Private,
        topic_id: None,
    };
    let preferences = Preferences {
        edit_in_place,
        ..Preferences::default()
    };
    app.contact_subscription(project, address, preferences, &["started", "failed"])
        .await;
}

async fn start_then_fail(app: &TestApp, project: &CreatedProject) {
    let running = fixture_with("workflow_run/requested.payload.json", |v| {
        v["action"] = "in_progress".into();
        v["workflow_run"]["status"] = "in_progress".into();
    });
    let response = app
        .post_github(project, "workflow_run", &running, "run-started")
        .await;
    assert_eq!(response.status(), 202);
    app.wait_for_messages(1).await;
    app.wait_for_notifications("delivered", 1).await;
    let done = fixture_with("workflow_run/completed.payload.json", |v| {
        v["workflow_run"]["conclusion"] = "failure".into();
    });
    let response = app
        .post_github(project, "workflow_run", &done, "run-failed")
        .await;
    assert_eq!(response.status(), 202);
    app.wait_for_notifications("delivered", 2).await;
}

#[tokio::test]
async fn a_verdict_edits_the_started_message_when_the_subscriber_asked_for_it() {
    let app = spawn_app(Bus::InProcess).await;
    let project = app.create_project("edited").await;
    follower(&app, project.id, 55, true).await;
    start_then_fail(&app, &project).await;
    let delivered = app.telegram.delivered();
    assert_eq!(delivered.len(), 1, "one message in the chat");
    let edits = app.telegram.edits();
    assert_eq!(edits.len(), 1);
    let (chat, message_id, text) = &edits[0];
    assert_eq!((*chat, *message_id), (55, 1));
    assert!(text.contains("failed") || text.contains("broken"), "{text}");
    assert_eq!(delivered[0].text, *text, "the chat shows the verdict");
    app.finish().await;
}

#[tokio::test]
async fn without_edit_in_place_the_verdict_is_a_second_message() {
    let app = spawn_app(Bus::InProcess).await;
    let project = app.create_project("not edited").await;
    follower(&app, project.id, 56, false).await;
    start_then_fail(&app, &project).await;
    assert_eq!(app.telegram.delivered().len(), 2);
    assert!(app.telegram.edits().is_empty());
    app.finish().await;
}
