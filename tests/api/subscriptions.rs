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

#[tokio::test]
async fn the_same_filter_twice_is_a_conflict_and_bad_filters_name_their_field() {
    let app = spawn_app(Bus::InProcess).await;
    let project = app.create_project("filters").await;
    let body = json!({
        "chat_id": 5, "project_id": project.id,
        "branches": ["main", "release/*"], "outcomes": ["failed", "fixed"]
    });
    let first = app.post_json("/api/v1/subscriptions", body).await;
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.unwrap();
    assert_eq!(first["branches"], json!(["main", "release/*"]));
    // The same meaning, written differently: the same subscription.
    let reordered = json!({
        "chat_id": 5, "projects": [project.id],
        "branches": ["release/*", "main", "main"], "outcomes": ["fixed", "failed"]
    });
    let again = app.post_json("/api/v1/subscriptions", reordered).await;
    assert_eq!(again.status(), 409);
    let before = app.event_count().await;
    for (body, status, field) in [
        (
            json!({"chat_id": 5, "project_id": project.id, "branches": ["release/["]}),
            422,
            "branches",
        ),
        (
            json!({"chat_id": 5, "project_id": project.id, "owner": "acme"}),
            422,
            "owner",
        ),
        (json!({"chat_id": 5, "owner": "no spaces"}), 422, "owner"),
        (
            json!({"chat_id": 5, "project_id": project.id, "min_interval_secs": 90000}),
            422,
            "min_interval_secs",
        ),
        (
            json!({"chat_id": 5, "project_id": project.id, "colour": "red"}),
            422,
            "colour",
        ),
        (
            json!({"subscriber_id": uuid::Uuid::new_v4(), "contact_id": uuid::Uuid::new_v4(), "project_id": project.id}),
            404,
            "subscriber",
        ),
        (
            json!({"subscriber_id": uuid::Uuid::new_v4(), "project_id": project.id}),
            422,
            "contact_id",
        ),
    ] {
        let response = app.post_json("/api/v1/subscriptions", body.clone()).await;
        assert_eq!(response.status(), status, "{body}");
        let problem: Value = response.json().await.unwrap();
        assert!(
            problem["detail"].as_str().unwrap().contains(field),
            "{body} → {problem}"
        );
    }
    assert_eq!(app.event_count().await, before);
    app.finish().await;
}

#[tokio::test]
async fn branch_globs_and_owners_decide_who_is_told() {
    let app = spawn_app(Bus::InProcess).await;
    let project = app.create_project("globs").await;
    // Only release branches: the fixture's run is on `master`.
    let release_only = json!({"chat_id": 11, "project_id": project.id, "branches": ["release/*"]});
    assert_eq!(
        app.post_json("/api/v1/subscriptions", release_only)
            .await
            .status(),
        201
    );
    // Every repository of the fixture's owner, whatever the project.
    let owner = json!({"chat_id": 12, "owner": "Octo-Org"});
    assert_eq!(
        app.post_json("/api/v1/subscriptions", owner).await.status(),
        201
    );
    let pool = app.pool.clone();
    crate::helpers::wait_until(
        "both subscriptions are projected",
        std::time::Duration::from_secs(10),
        || {
            let pool = pool.clone();
            async move {
                sqlx::query_scalar::<_, i64>("SELECT count(*) FROM subscriptions WHERE active")
                    .fetch_one(&pool)
                    .await
                    .unwrap()
                    == 2
            }
        },
    )
    .await;
    let response = app
        .post_github(
            &project,
            "workflow_run",
            &crate::helpers::fixture("workflow_run/completed.payload.json"),
            "globs-1",
        )
        .await;
    assert_eq!(response.status(), 202);
    app.wait_for_messages(1).await;
    app.drain().await;
    let told: Vec<i64> = app.telegram.calls().iter().map(|m| m.chat_id).collect();
    assert_eq!(
        told,
        [12],
        "the owner's subscriber is told, the release-only one is not"
    );
    let reasons: Vec<Option<String>> =
        sqlx::query_scalar("SELECT reason FROM notifications ORDER BY reason NULLS LAST")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(reasons, [Some("branch_not_subscribed".to_owned()), None]);
    app.finish().await;
}
