//! Commands in batches: many aggregates' events in one append, and delivery turns that claim, start and record
//! many notifications at once. What a batch records must be exactly what the same commands one at a time would.

use std::sync::Arc;
use std::time::Duration;

use commands::{Batched, CommandError, Commands, Metadata};
use domain::{Channel, ChatId, MessageDetails, NotificationCommand};
use herald::Role;
use uuid::Uuid;
use workers::DeliveryOutcome;

use crate::helpers::{spawn_app_with, wait_until, Bus, TestApp};

fn plan(id: Uuid, chat: i64) -> NotificationCommand {
    NotificationCommand::Plan {
        notification_id: id,
        build_run_id: "run".into(),
        project_id: Uuid::new_v4(),
        subscription_id: Uuid::new_v4(),
        subscription_version: 1,
        template: workers::MessageRenderer::TELEGRAM_BUILD.into(),
        channel: Channel::Telegram {
            chat_id: ChatId::parse(chat).unwrap(),
            topic_id: None,
        },
        text: format!("news for {chat}"),
        buttons: vec![],
        details: MessageDetails::default(),
        at: chrono::Utc::now(),
    }
}

fn batched(id: Uuid, command: NotificationCommand) -> Batched<NotificationCommand> {
    Batched {
        id: id.to_string(),
        command,
        metadata: Metadata::new(),
    }
}

fn start() -> NotificationCommand {
    NotificationCommand::StartAttempt {
        at: chrono::Utc::now(),
    }
}

async fn event_types(app: &TestApp, id: Uuid) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT event_type FROM events WHERE aggregate_type = 'Notification' AND aggregate_id = $1
          ORDER BY sequence",
    )
    .bind(id.to_string())
    .fetch_all(&app.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_batch_records_every_command_in_order_and_a_refused_one_stops_none() {
    let app = spawn_app_with(Bus::InProcess, &[Role::Api]).await;
    let commands = Commands::new(app.pool.clone());
    let (a, b, never_planned) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let results = commands
        .notifications()
        .execute_many(&[
            batched(a, plan(a, 1)),
            batched(b, plan(b, 2)),
            batched(never_planned, start()),
            // Named again: runs after the batch, on the state it left.
            batched(a, plan(a, 1)),
            batched(a, start()),
        ])
        .await;
    let recorded: Vec<Vec<(String, usize)>> = results
        .iter()
        .map(|r| match r {
            Ok(events) => events
                .iter()
                .map(|e| (e.aggregate_id.clone(), e.sequence))
                .collect(),
            Err(_) => vec![],
        })
        .collect();
    assert_eq!(
        recorded,
        [
            vec![(a.to_string(), 1)],
            vec![(b.to_string(), 1)],
            vec![],
            vec![],
            vec![(a.to_string(), 2)]
        ]
    );
    assert!(
        matches!(results[2], Err(CommandError::Notification(_))),
        "a start on nothing is the aggregate's refusal: {:?}",
        results[2].as_ref().err()
    );
    assert_eq!(
        event_types(&app, a).await,
        ["NotificationPlanned", "AttemptStarted"]
    );
    assert_eq!(event_types(&app, b).await, ["NotificationPlanned"]);
    assert!(event_types(&app, never_planned).await.is_empty());
    let loaded = commands
        .notifications()
        .load_many(&[&b.to_string(), &a.to_string(), &never_planned.to_string()])
        .await
        .unwrap();
    assert_eq!(loaded[0].notification_id, Some(b));
    assert_eq!(loaded[1].in_flight, Some(1));
    assert_eq!(loaded[2].notification_id, None);
    app.finish().await;
}

#[tokio::test]
async fn a_batch_that_loses_a_race_records_nothing_twice_and_loses_nothing() {
    let app = spawn_app_with(Bus::InProcess, &[Role::Api]).await;
    let commands = Arc::new(Commands::new(app.pool.clone()));
    let (contested, other) = (Uuid::new_v4(), Uuid::new_v4());
    // Another writer plans `contested` and has not committed yet when the batch reads it.
    let mut rival = app.pool.begin().await.unwrap();
    let payload = serde_json::json!({ "NotificationPlanned": {
        "notification_id": contested, "build_run_id": "run", "project_id": Uuid::new_v4(),
        "subscription_id": Uuid::new_v4(), "subscription_version": 1, "template": "rival",
        "channel": { "channel": "telegram", "chat_id": 7 }, "text": "the rival's", "buttons": [],
        "planned_at": chrono::Utc::now() } });
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         VALUES ('Notification', $1, 1, 'NotificationPlanned', '1', $2::json, '{}')",
    )
    .bind(contested.to_string())
    .bind(payload.to_string())
    .execute(&mut *rival)
    .await
    .unwrap();
    let batch = {
        let commands = commands.clone();
        tokio::spawn(async move {
            commands
                .notifications()
                .execute_many(&[
                    batched(contested, plan(contested, 7)),
                    batched(other, plan(other, 8)),
                ])
                .await
        })
    };
    // The batch's append waits on the rival's uncommitted key; the rival commits first and wins.
    let pool = app.pool.clone();
    wait_until(
        "the batch waits on the rival",
        Duration::from_secs(10),
        || {
            let pool = pool.clone();
            async move {
                sqlx::query_scalar::<_, i64>(
                    "SELECT count(*) FROM pg_stat_activity
                  WHERE wait_event_type = 'Lock' AND query LIKE '%INSERT INTO events%'",
                )
                .fetch_one(&pool)
                .await
                .unwrap()
                    > 0
            }
        },
    )
    .await;
    rival.commit().await.unwrap();
    let results = batch.await.unwrap();
    assert!(
        results[0].as_ref().is_ok_and(Vec::is_empty),
        "already planned by the rival: nothing more"
    );
    assert_eq!(results[1].as_ref().map(Vec::len).unwrap(), 1);
    assert_eq!(event_types(&app, contested).await, ["NotificationPlanned"]);
    assert_eq!(event_types(&app, other).await, ["NotificationPlanned"]);
    let text: String = sqlx::query_scalar(
        "SELECT payload::jsonb->'NotificationPlanned'->>'text' FROM events WHERE aggregate_id = $1",
    )
    .bind(contested.to_string())
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(text, "the rival's");
    app.finish().await;
}

#[tokio::test]
async fn one_delivery_turn_sends_many_once_each_and_holds_back_a_chat_at_its_limit() {
    let app = spawn_app_with(Bus::InProcess, &[Role::Api]).await;
    let commands = Arc::new(Commands::new(app.pool.clone()));
    let fresh: Vec<(Uuid, i64)> = [41, 42, 43, 43]
        .into_iter()
        .map(|chat| (Uuid::new_v4(), chat))
        .collect();
    let interrupted = Uuid::new_v4();
    let mut batch: Vec<_> = fresh
        .iter()
        .map(|(id, chat)| batched(*id, plan(*id, *chat)))
        .collect();
    batch.push(batched(interrupted, plan(interrupted, 44)));
    batch.push(batched(interrupted, start()));
    for result in commands.notifications().execute_many(&batch).await {
        result.unwrap();
    }
    sqlx::query(
        "INSERT INTO delivery_queue (notification_id, next_attempt_at, channel, chat_id)
         SELECT id, now() - interval '1 minute' + interval '1 second' * n, 'telegram', chat
           FROM unnest($1::uuid[], $2::bigint[]) WITH ORDINALITY AS q(id, chat, n)",
    )
    .bind(
        fresh
            .iter()
            .map(|(id, _)| *id)
            .chain([interrupted])
            .collect::<Vec<_>>(),
    )
    .bind(
        fresh
            .iter()
            .map(|(_, chat)| *chat)
            .chain([44])
            .collect::<Vec<_>>(),
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let worker = app.telegram_worker(commands);

    let mut outcomes = worker.try_deliver(10).await.unwrap();
    outcomes.sort_by_key(|o| format!("{o:?}"));
    assert_eq!(
        outcomes,
        [
            DeliveryOutcome::DeadLettered,
            DeliveryOutcome::Deferred,
            DeliveryOutcome::Delivered,
            DeliveryOutcome::Delivered,
            DeliveryOutcome::Delivered,
        ]
    );
    let mut chats: Vec<i64> = app.telegram.calls().iter().map(|m| m.chat_id).collect();
    chats.sort_unstable();
    assert_eq!(chats, [41, 42, 43], "one message a second to chat 43");
    for (id, _) in &fresh[..3] {
        assert_eq!(
            event_types(&app, *id).await,
            ["NotificationPlanned", "AttemptStarted", "Delivered"]
        );
    }
    assert_eq!(
        event_types(&app, interrupted).await,
        [
            "NotificationPlanned",
            "AttemptStarted",
            "AttemptInterrupted",
            "DeadLettered"
        ],
        "Telegram may already show it: not sent again"
    );
    let queued: Vec<Uuid> = sqlx::query_scalar("SELECT notification_id FROM delivery_queue")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert_eq!(queued, [fresh[3].0], "only the held-back message waits");

    // A second later the chat has a slot again.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        worker.try_deliver(10).await.unwrap(),
        [DeliveryOutcome::Delivered]
    );
    assert_eq!(app.telegram.calls().len(), 4);
    assert!(worker.try_deliver(10).await.unwrap().is_empty());
    app.finish().await;
}
