//! Configuration export and import: one Herald's projects and subscriptions recreated in another, twice
//! without effect, and a bad document refused whole.

use serde_json::{json, Value};

use crate::helpers::{fixture, spawn_app, Bus};

#[tokio::test]
async fn a_configuration_moves_to_another_herald_and_imports_once() {
    let source = spawn_app(Bus::InProcess).await;
    let project = source.create_project("exported").await;
    let retired = source.create_project("retired").await;
    source
        .subscribe(project.id, 71, Some(vec!["failed", "fixed"]))
        .await;
    source
        .http
        .delete(source.url(&format!("/api/v1/projects/{}", retired.id)))
        .send()
        .await
        .unwrap();
    source.drain().await;
    let document: Value = source.get("/api/v1/config").await.json().await.unwrap();
    assert_eq!(document["projects"].as_array().unwrap().len(), 2);
    assert!(
        document["projects"][0].get("webhook_secret").is_none(),
        "no secrets over the API"
    );

    // The CLI exports with secrets, so CI systems keep working against the new Herald.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["config", "export", "--include-secrets"])
        .env("DATABASE_URL", &source.settings.database_url)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let with_secrets: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        with_secrets["projects"][0]["webhook_secret"],
        project.secret.as_str()
    );

    let target = spawn_app(Bus::InProcess).await;
    let report: Value = target
        .post_json("/api/v1/config", with_secrets.clone())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(report["projects_created"], 2);
    assert_eq!(report["subscriptions_created"], 1);
    let again: Value = target
        .post_json("/api/v1/config", with_secrets)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        (
            again["projects_existing"].clone(),
            again["subscriptions_existing"].clone()
        ),
        (json!(2), json!(1))
    );
    target.drain().await;
    let moved: Value = target.get("/api/v1/config").await.json().await.unwrap();
    assert_eq!(moved["projects"], document["projects"]);
    assert_eq!(moved["subscriptions"], document["subscriptions"]);
    // The same secret verifies on the new Herald.
    let accepted = target
        .post_github(
            &project,
            "workflow_run",
            &fixture("workflow_run/requested.payload.json"),
            "moved",
        )
        .await;
    assert_eq!(accepted.status(), 202);

    let events = target.event_count().await;
    let mut bad = document.clone();
    bad["subscriptions"][0]["outcomes"] = json!(["sometimes"]);
    bad["projects"][0]["project_id"] = json!(uuid::Uuid::new_v4());
    let refused = target.post_json("/api/v1/config", bad).await;
    assert_eq!(refused.status(), 422);
    assert_eq!(
        target.event_count().await,
        events,
        "a bad document changes nothing"
    );
    source.finish().await;
    target.finish().await;
}
