//! `/api/v1/subscriptions`: subscribe a chat, list, unsubscribe; bad input refused.

use serde_json::{json, Value};

use crate::helpers::{spawn_app, Bus};

#[tokio::test]
async fn a_chat_subscribes_lists_and_unsubscribes() {
    let app = spawn_app(Bus::InProcess).await;
    let project = app.create_project("subscribed").await;
    let id = app
        .subscribe(
            project.id,
            -1001234567890,
            Some(vec!["failed", "fixed", "failed"]),
        )
        .await;
    let shown: Value = app
        .get(&format!("/api/v1/subscriptions/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(shown["chat_id"], -1001234567890_i64);
    assert_eq!(shown["outcomes"], json!(["failed", "fixed"]));
    let listed: Value = app
        .get(&format!("/api/v1/subscriptions?project_id={}", project.id))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
    let removed = app
        .http
        .delete(app.url(&format!("/api/v1/subscriptions/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(removed.status(), 204);
    app.drain().await;
    let listed: Value = app.get("/api/v1/subscriptions").await.json().await.unwrap();
    assert_eq!(listed["items"], json!([]));
    let missing = app
        .http
        .delete(app.url(&format!("/api/v1/subscriptions/{}", uuid::Uuid::new_v4())))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    app.finish().await;
}

#[tokio::test]
async fn bad_subscriptions_are_refused_and_change_nothing() {
    let app = spawn_app(Bus::InProcess).await;
    let project = app.create_project("picky").await;
    let before = app.event_count().await;
    let cases = [
        (
            json!({ "project_id": uuid::Uuid::new_v4(), "chat_id": 5 }),
            404,
        ),
        (json!({ "project_id": project.id, "chat_id": 0 }), 422),
        (
            json!({ "project_id": project.id, "chat_id": 5, "outcomes": ["sometimes"] }),
            422,
        ),
        (
            json!({ "project_id": project.id, "chat_id": 5, "outcomes": [] }),
            422,
        ),
        (json!({ "project_id": "nope", "chat_id": 5 }), 422),
        (json!({ "chat_id": 5 }), 422),
    ];
    for (body, status) in cases {
        let response = app.post_json("/api/v1/subscriptions", body.clone()).await;
        assert_eq!(response.status(), status, "{body}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
    }
    assert_eq!(app.event_count().await, before);
    app.finish().await;
}
