//! Dry runs: what a proposed subscription or template would have sent over past builds, sending nothing.

use serde_json::{json, Value};

use crate::helpers::{fixture_with, spawn_app, Bus};

#[tokio::test]
async fn a_dry_run_reports_what_would_have_been_sent_and_sends_nothing() {
    let app = spawn_app(Bus::InProcess).await;
    let project = app.create_project("rehearsed").await;
    let from = chrono::Utc::now();
    for (id, conclusion) in [
        (1, "success"),
        (2, "failure"),
        (3, "failure"),
        (4, "success"),
    ] {
        let body = fixture_with("workflow_run/completed.payload.json", move |v| {
            v["workflow_run"]["id"] = id.into();
            v["workflow_run"]["conclusion"] = conclusion.into();
        });
        app.post_github(&project, "workflow_run", &body, &format!("d-{id}"))
            .await;
    }
    app.drain().await;
    let to = chrono::Utc::now();
    let events_before = app.event_count().await;

    let report: Value = app
        .post_json(
            "/api/v1/operations/dry-run",
            json!({ "project_id": project.id, "outcomes": ["broken", "fixed"], "from": from, "to": to }),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(report["verdicts"], 4);
    let decisions: Vec<(&str, &str)> = report["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["transition"].as_str().unwrap(),
                e["decision"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        decisions,
        [
            ("passing", "would_suppress"),
            ("broken", "would_send"),
            ("still_failing", "would_suppress"),
            ("fixed", "would_send")
        ]
    );
    assert!(report["entries"][1]["text"]
        .as_str()
        .unwrap()
        .contains("is broken"));

    let custom: Value = app
        .post_json(
            "/api/v1/operations/dry-run",
            json!({ "project_id": project.id, "outcomes": ["all"], "from": from, "to": to,
                    "template": "{{repository}} {{outcome}} on {{branch}}" }),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        custom["entries"][1]["text"],
        "octo-org/octo-repo failed on master"
    );

    let broken = app
        .post_json(
            "/api/v1/operations/dry-run",
            json!({ "project_id": project.id, "outcomes": ["all"], "from": from, "to": to, "template": "line\n{{#if x}}" }),
        )
        .await;
    assert_eq!(broken.status(), 422);
    assert!(broken.json::<Value>().await.unwrap()["detail"]
        .as_str()
        .unwrap()
        .contains("line 2"));
    let unknown_variable: Value = app
        .post_json(
            "/api/v1/operations/dry-run",
            json!({ "project_id": project.id, "outcomes": ["all"], "from": from, "to": to, "template": "{{nope}}" }),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(unknown_variable["template_errors"], 4);
    let bad_range = app
        .post_json(
            "/api/v1/operations/dry-run",
            json!({ "project_id": project.id, "outcomes": ["all"], "from": to, "to": from }),
        )
        .await;
    assert_eq!(bad_range.status(), 422);
    let unknown = app
        .post_json("/api/v1/operations/dry-run", json!({ "project_id": uuid::Uuid::new_v4(), "outcomes": ["all"], "from": from, "to": to }))
        .await;
    assert_eq!(unknown.status(), 404);

    assert_eq!(
        app.event_count().await,
        events_before,
        "a dry run records nothing"
    );
    assert!(app.telegram.calls().is_empty(), "and sends nothing");
    app.finish().await;
}
