//! Quiet hours and digest mode: messages held while a subscriber does not want them, then sent together as one
//! digest, once.

use std::time::Duration;

use chrono::{Timelike, Utc};
use commands::{Commands, FilterInput, Metadata};
use domain::{ChatId, ChatKind, ContactAddress, Preferences, QuietHours, SubscriptionTarget};
use herald::Role;
use uuid::Uuid;
use workers::digest::Digester;

use crate::helpers::{spawn_app_configured, wait_until, Bus, TestApp};

/// A subscriber with `preferences` and a Telegram chat subscribed to every failure of `project`.
async fn subscriber(app: &TestApp, project: Uuid, chat: i64, preferences: Preferences) -> Uuid {
    let commands = Commands::new(app.pool.clone());
    let none = Metadata::new();
    let subscriber = commands
        .register_subscriber("Night owl", preferences, &none)
        .await
        .unwrap();
    let contact = Uuid::new_v4();
    let address = ContactAddress::Telegram {
        chat_id: ChatId::parse(chat).unwrap(),
        chat_type: ChatKind::Private,
        topic_id: None,
    };
    commands
        .add_contact(subscriber, contact, address, None, &none)
        .await
        .unwrap();
    let filter = FilterInput {
        project_id: Some(project),
        outcomes: Some(vec!["failed".into()]),
        ..FilterInput::default()
    };
    let target = SubscriptionTarget::Contact {
        subscriber_id: subscriber,
        contact_id: contact,
    };
    commands
        .subscribe(target, filter.parse().unwrap(), &none)
        .await
        .unwrap();
    let pool = app.pool.clone();
    wait_until("the subscription and its contact are projected", Duration::from_secs(10), || {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM subscriptions s JOIN contacts c USING (contact_id) JOIN subscribers r ON r.subscriber_id = s.subscriber_id",
            )
            .fetch_one(&pool)
            .await
            .unwrap()
                > 0
        }
    })
    .await;
    subscriber
}

async fn wait_for_status(app: &TestApp, status: &str, n: i64) {
    let pool = app.pool.clone();
    let sql = format!("SELECT count(*) FROM notifications WHERE status = '{status}'");
    wait_until(
        &format!("{n} notification(s) {status}"),
        Duration::from_secs(10),
        || {
            let (pool, sql) = (pool.clone(), sql.clone());
            async move {
                sqlx::query_scalar::<_, i64>(&sql)
                    .fetch_one(&pool)
                    .await
                    .unwrap()
                    >= n
            }
        },
    )
    .await;
}

#[tokio::test]
async fn builds_in_quiet_hours_arrive_as_one_digest_when_they_end() {
    let app = spawn_app_configured(Bus::InProcess, &Role::ALL, |_| {}).await;
    let project = app.create_project("quiet").await;
    // Quiet from an hour ago to an hour from now, in UTC.
    let hour = Utc::now().hour();
    let quiet = QuietHours::parse(
        &format!("{:02}:00", (hour + 23) % 24),
        &format!("{:02}:00", (hour + 1) % 24),
    )
    .unwrap();
    let preferences = Preferences {
        quiet_hours: Some(quiet),
        ..Preferences::default()
    };
    subscriber(&app, project.id, 9001, preferences).await;
    app.fail_run(&project, 7001).await;
    app.fail_run(&project, 7002).await;
    wait_for_status(&app, "held", 2).await;
    let reasons: Vec<String> =
        sqlx::query_scalar("SELECT reason FROM notifications WHERE status = 'held'")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(reasons, ["quiet_hours", "quiet_hours"]);
    assert!(
        app.telegram.calls().is_empty(),
        "nothing is sent in quiet hours"
    );

    // Before the end nothing is due; after it, one digest carries both.
    let digester = Digester::new(std::sync::Arc::new(Commands::new(app.pool.clone())));
    assert_eq!(digester.send_due(Utc::now()).await.unwrap(), 0);
    let after = Utc::now() + chrono::Duration::hours(2);
    assert_eq!(digester.send_due(after).await.unwrap(), 1);
    app.wait_for_messages(1).await;
    wait_for_status(&app, "digested", 2).await;
    assert_eq!(
        digester.send_due(after).await.unwrap(),
        0,
        "a digest is sent once"
    );
    let digest = &app.telegram.delivered()[0];
    assert_eq!(digest.chat_id, 9001);
    assert!(digest.text.contains("2 build update(s)"), "{}", digest.text);
    assert_eq!(
        digest.text.matches("<b>octo-org/octo-repo</b>").count(),
        2,
        "{}",
        digest.text
    );
    assert!(
        digest.text.contains("broke") && digest.text.contains("still failing"),
        "{}",
        digest.text
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(app.telegram.calls().len(), 1);
    app.finish().await;
}

#[tokio::test]
async fn digest_mode_sends_the_first_message_and_folds_the_rest_of_the_window() {
    let app = spawn_app_configured(Bus::InProcess, &Role::ALL, |_| {}).await;
    let project = app.create_project("digest").await;
    let preferences = Preferences {
        digest_minutes: Some(30),
        ..Preferences::default()
    };
    subscriber(&app, project.id, 9002, preferences).await;
    app.fail_run(&project, 8001).await;
    app.wait_for_messages(1).await;
    wait_for_status(&app, "delivered", 1).await;
    app.fail_run(&project, 8002).await;
    app.fail_run(&project, 8003).await;
    wait_for_status(&app, "held", 2).await;
    let until: chrono::DateTime<Utc> = sqlx::query_scalar(
        "SELECT max(next_attempt_at) FROM notifications WHERE status = 'held' AND reason = 'digest_window'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    let minutes = (until - Utc::now()).num_minutes();
    assert!(
        (28..=30).contains(&minutes),
        "held for the rest of the window: {minutes} min"
    );
    let digester = Digester::new(std::sync::Arc::new(Commands::new(app.pool.clone())));
    assert_eq!(digester.send_due(until).await.unwrap(), 1);
    app.wait_for_messages(2).await;
    assert!(app.telegram.delivered()[1]
        .text
        .contains("2 build update(s)"));
    app.finish().await;
}
