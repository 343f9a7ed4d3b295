//! `/api/v1/projects`: the life of a project, and every bad input refused with a clear problem.

use serde_json::{json, Value};

use crate::helpers::{fixture, spawn_app, Bus};

#[tokio::test]
async fn a_project_is_created_listed_renamed_and_archived() {
    let app = spawn_app(Bus::InProcess).await;
    let created = app
        .post_json("/api/v1/projects", json!({ "name": "  api  " }))
        .await;
    assert_eq!(created.status(), 201);
    let location = created.headers()["location"].to_str().unwrap().to_owned();
    let body: Value = created.json().await.unwrap();
    let id = body["project_id"].as_str().unwrap().to_owned();
    assert_eq!(body["name"], "api");
    assert_eq!(
        body["webhook_url"],
        format!("http://herald.test/api/v1/webhooks/github/{id}")
    );
    assert_eq!(body["webhook_secret"].as_str().unwrap().len(), 64);
    assert_eq!(location, format!("/api/v1/projects/{id}"));

    // Readable at once, even before the read model caught up.
    let shown: Value = app.get(&location).await.json().await.unwrap();
    assert_eq!(shown["name"], "api");
    assert!(
        shown.get("webhook_secret").is_none(),
        "the secret is shown once only"
    );

    let renamed = app
        .http
        .patch(app.url(&location))
        .json(&json!({ "name": "web" }))
        .send()
        .await
        .unwrap();
    assert_eq!(renamed.status(), 200);
    app.drain().await;
    let list: Value = app.get("/api/v1/projects").await.json().await.unwrap();
    assert_eq!(list["items"][0]["name"], "web");
    assert_eq!(list["items"].as_array().unwrap().len(), 1);

    assert_eq!(
        app.http
            .delete(app.url(&location))
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    assert_eq!(
        app.http
            .delete(app.url(&location))
            .send()
            .await
            .unwrap()
            .status(),
        204,
        "archiving is idempotent"
    );
    app.drain().await;
    let list: Value = app.get("/api/v1/projects").await.json().await.unwrap();
    assert_eq!(list["items"], json!([]));
    let all: Value = app
        .get("/api/v1/projects?include_archived=true")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(all["items"][0]["archived"], true);
    let rename_archived = app
        .http
        .patch(app.url(&location))
        .json(&json!({ "name": "x" }))
        .send()
        .await
        .unwrap();
    assert_eq!(rename_archived.status(), 410);
    app.finish().await;
}

#[tokio::test]
async fn bad_project_input_is_refused_and_changes_nothing() {
    let app = spawn_app(Bus::InProcess).await;
    let before = app.event_count().await;
    let cases = [
        (json!({ "name": "" }), 422),
        (json!({ "name": "x".repeat(101) }), 422),
        (json!({ "name": 5 }), 422),
        (json!({}), 422),
        (json!({ "name": "ok", "colour": "red" }), 422),
    ];
    for (body, status) in cases {
        let response = app.post_json("/api/v1/projects", body.clone()).await;
        assert_eq!(response.status(), status, "{body}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["status"], status);
        assert!(problem["detail"].as_str().is_some_and(|d| !d.is_empty()));
    }
    let malformed = app
        .http
        .post(app.url("/api/v1/projects"))
        .header("content-type", "application/json")
        .body("{\"name\":")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), 400);
    let not_json = app
        .http
        .post(app.url("/api/v1/projects"))
        .body("name=x")
        .send()
        .await
        .unwrap();
    assert_eq!(not_json.status(), 415);
    let missing = app
        .get(&format!("/api/v1/projects/{}", uuid::Uuid::new_v4()))
        .await;
    assert_eq!(missing.status(), 404);
    assert_eq!(
        missing.json::<Value>().await.unwrap()["type"],
        "urn:herald:problem:not-found"
    );
    assert_eq!(app.get("/api/v1/projects?limit=0").await.status(), 422);
    assert_eq!(app.get("/api/v1/projects?limit=ten").await.status(), 422);
    assert_eq!(
        app.get("/api/v1/projects?include_archived=maybe")
            .await
            .status(),
        422
    );
    assert_eq!(
        app.get("/api/v1/projects?limit=5&offset=0").await.status(),
        200
    );
    assert_eq!(app.get("/api/v1/nothing-here").await.status(), 404);
    assert_eq!(app.event_count().await, before);
    app.finish().await;
}

#[tokio::test]
async fn a_rotated_secret_replaces_the_old_one() {
    // Within the overlap the previous secret still works (see observability.rs); the one before it never does.
    let app = spawn_app(Bus::InProcess).await;
    let mut project = app.create_project("rotating").await;
    let first = project.secret.clone();
    let rotate = async || {
        let response = app
            .post_json(
                &format!("/api/v1/projects/{}/secret", project.id),
                json!({}),
            )
            .await;
        assert_eq!(response.status(), 200);
        response.json::<Value>().await.unwrap()["webhook_secret"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let second = rotate().await;
    let third = rotate().await;
    assert!(first != second && second != third);
    let body = fixture("workflow_run/requested.payload.json");
    for (secret, delivery, status) in [
        (&first, "first", 401),
        (&second, "second", 202),
        (&third, "third", 202),
    ] {
        project.secret = secret.clone();
        assert_eq!(
            app.post_github(&project, "workflow_run", &body, delivery)
                .await
                .status(),
            status,
            "{delivery} secret"
        );
    }
    app.finish().await;
}

#[tokio::test]
async fn a_project_shows_its_latest_builds_and_success_rate() {
    let app = spawn_app(Bus::InProcess).await;
    let project = app.create_project("stats").await;
    app.post_github(
        &project,
        "workflow_run",
        &fixture("workflow_run/completed.payload.json"),
        "s-1",
    )
    .await;
    app.post_github(
        &project,
        "workflow_job",
        &fixture("workflow_job/queued.payload.json"),
        "s-2",
    )
    .await;
    app.drain().await;
    let shown: Value = app
        .get(&format!("/api/v1/projects/{}", project.id))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(shown["success_rate"], 1.0);
    assert_eq!(shown["last_outcome"], "succeeded");
    assert_eq!(shown["latest_builds"].as_array().unwrap().len(), 2);
    let builds: Value = app
        .get(&format!("/api/v1/projects/{}/builds?limit=1", project.id))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(builds["items"].as_array().unwrap().len(), 1);
    let unknown = app
        .get(&format!("/api/v1/projects/{}/builds", uuid::Uuid::new_v4()))
        .await;
    assert_eq!(unknown.status(), 404);
    app.finish().await;
}
