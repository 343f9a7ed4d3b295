//! An event stored in an old shape is still read: by its aggregate, by the projections and by the audit trail.

use herald::Role;
use uuid::Uuid;

use crate::helpers::{spawn_app_with, Bus};

#[tokio::test]
async fn a_stored_1_0_notification_decision_is_read_as_the_current_version() {
    let app = spawn_app_with(Bus::InProcess, &[Role::Api]).await;
    let id = Uuid::new_v4();
    // Exactly what Herald wrote before decisions recorded the subscription version (event version 1.0).
    let payload = serde_json::json!({"NotificationSuppressed": {
        "notification_id": id, "build_run_id": "old-build", "project_id": Uuid::nil(),
        "subscription_id": Uuid::nil(), "reason": "outcome_not_subscribed",
        "suppressed_at": "2026-01-01T00:00:00Z"
    }});
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         VALUES ('Notification', $1, 1, 'NotificationSuppressed', '1.0', $2::json, '{}')",
    )
    .bind(id.to_string())
    .bind(payload)
    .execute(&app.pool)
    .await
    .unwrap();

    let commands = commands::Commands::new(app.pool.clone());
    let notification = commands
        .notifications()
        .load(&id.to_string())
        .await
        .unwrap();
    assert_eq!(notification.settled, Some(domain::Settled::Suppressed));

    let events = projections::log::aggregate_events(&app.pool, "Notification", &id.to_string())
        .await
        .unwrap();
    let applied = projections::Projector::all(app.pool.clone())
        .handle(&events[0])
        .await
        .unwrap();
    assert_eq!(applied.applied, 1);
    let view = projections::queries::notification(&app.pool, id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(view.status, "suppressed");
    assert!(
        projections::audit::summarize(&events[0]).contains("v0"),
        "the version is shown as unrecorded"
    );
    app.finish().await;
}
