//! Every CI provider through HTTP, with its own authentication, and the delivery log that shows what became of
//! each delivery.

use serde_json::{json, Value};

use crate::helpers::{any_fixture, fixture, spawn_app, Bus, TestApp};

async fn status_of(app: &TestApp, build_run_id: &str) -> (String, Option<String>) {
    app.drain().await;
    let row = projections::queries::build(&app.pool, build_run_id)
        .await
        .unwrap()
        .expect("a build_runs row");
    (row.status, row.outcome)
}

#[tokio::test]
async fn gitlab_pipelines_and_jobs_are_accepted_with_the_project_token() {
    let app = spawn_app(Bus::InProcess).await;
    let project = app.create_project("gitlab").await;
    let token = project.secret.as_str();
    let pipeline = any_fixture("gitlab/pipeline.payload.json");
    let headers = [
        ("x-gitlab-event", "Pipeline Hook"),
        ("x-gitlab-token", token),
        ("idempotency-key", "p-1"),
    ];
    let response = app
        .post_webhook("gitlab", project.id, "", &headers, &pipeline)
        .await;
    assert_eq!(response.status(), 202);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "accepted");
    let (status, outcome) = status_of(&app, body["build_run_id"].as_str().unwrap()).await;
    let documented: Value = serde_json::from_slice(&pipeline).unwrap();
    let expected = documented["object_attributes"]["status"].as_str().unwrap();
    assert_eq!(
        outcome
            .as_deref()
            .map(|o| o.replace("succeeded", "success")),
        Some(expected.to_owned()),
        "{status}"
    );

    let again = app
        .post_webhook("gitlab", project.id, "", &headers, &pipeline)
        .await;
    assert_eq!(again.json::<Value>().await.unwrap()["status"], "duplicate");

    let job = any_fixture("gitlab/job.payload.json");
    let job_headers = [("x-gitlab-event", "Job Hook"), ("x-gitlab-token", token)];
    assert_eq!(
        app.post_webhook("gitlab", project.id, "", &job_headers, &job)
            .await
            .status(),
        202
    );

    let wrong = [
        ("x-gitlab-event", "Pipeline Hook"),
        ("x-gitlab-token", "guess"),
    ];
    assert_eq!(
        app.post_webhook("gitlab", project.id, "", &wrong, &pipeline)
            .await
            .status(),
        401
    );
    let no_event = [("x-gitlab-token", token)];
    assert_eq!(
        app.post_webhook("gitlab", project.id, "", &no_event, &pipeline)
            .await
            .status(),
        400
    );
    app.finish().await;
}

#[tokio::test]
async fn jenkins_phases_with_the_token_in_the_url_end_in_the_verdict() {
    let app = spawn_app(Bus::InProcess).await;
    let project = app.create_project("jenkins").await;
    let query = format!("?token={}", project.secret);
    let mut build_run_id = String::new();
    let mut statuses = Vec::new();
    for phase in ["queued", "started", "completed", "finalized"] {
        let body = any_fixture(&format!("jenkins/{phase}.payload.json"));
        let response = app
            .post_webhook("jenkins", project.id, &query, &[], &body)
            .await;
        assert_eq!(response.status(), 202, "{phase}");
        let body: Value = response.json().await.unwrap();
        statuses.push(body["status"].as_str().unwrap().to_owned());
        build_run_id = body["build_run_id"].as_str().unwrap().to_owned();
    }
    assert_eq!(statuses, ["accepted", "accepted", "accepted", "stale"]);
    assert_eq!(
        status_of(&app, &build_run_id).await,
        ("completed".into(), Some("succeeded".into()))
    );
    let body = any_fixture("jenkins/completed.payload.json");
    assert_eq!(
        app.post_webhook("jenkins", project.id, "", &[], &body)
            .await
            .status(),
        401
    );
    assert_eq!(
        app.post_webhook("jenkins", project.id, "?token=nope", &[], &body)
            .await
            .status(),
        401
    );
    app.finish().await;
}

#[tokio::test]
async fn circleci_deliveries_are_signed_and_deduplicated_on_their_id() {
    let app = spawn_app(Bus::InProcess).await;
    let project = app.create_project("circleci").await;
    let body = any_fixture("circleci/workflow-completed.payload.json");
    let signature = commands::providers::sign(&project.secret, &body).replace("sha256=", "v1=");
    let headers = [
        ("circleci-event-type", "workflow-completed"),
        ("circleci-signature", signature.as_str()),
    ];
    let first: Value = app
        .post_webhook("circleci", project.id, "", &headers, &body)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(first["status"], "accepted");
    assert_eq!(first["delivery_id"], "3888f21b-eaa7-38e3-8f3d-75a63bba8895");
    let second: Value = app
        .post_webhook("circleci", project.id, "", &headers, &body)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(second["status"], "duplicate");
    let forged = [
        ("circleci-event-type", "workflow-completed"),
        ("circleci-signature", "v1=00"),
    ];
    assert_eq!(
        app.post_webhook("circleci", project.id, "", &forged, &body)
            .await
            .status(),
        401
    );
    app.finish().await;
}

#[tokio::test]
async fn a_shell_step_reports_a_build_with_the_generic_webhook() {
    let app = spawn_app(Bus::InProcess).await;
    let project = app.create_project("generic").await;
    let token = project.secret.as_str();
    let report = json!({
        "repository": "acme/api", "workflow": "nightly", "run_id": 42, "status": "failed",
        "branch": "main", "commit_sha": "abc123", "url": "https://ci.acme.test/42"
    });
    let body = serde_json::to_vec(&report).unwrap();
    let response = app
        .post_webhook(
            "generic",
            project.id,
            "",
            &[("x-herald-token", token)],
            &body,
        )
        .await;
    assert_eq!(response.status(), 202);
    let accepted: Value = response.json().await.unwrap();
    assert_eq!(
        status_of(&app, accepted["build_run_id"].as_str().unwrap()).await,
        ("completed".into(), Some("failed".into()))
    );

    let signature = commands::providers::sign(token, &body);
    let signed = app
        .post_webhook(
            "generic",
            project.id,
            "",
            &[("x-herald-signature-256", signature.as_str())],
            &body,
        )
        .await;
    assert_eq!(signed.json::<Value>().await.unwrap()["status"], "duplicate");

    let bad = serde_json::to_vec(&json!({"repository": "acme/api", "workflow": "nightly", "run_id": 43, "status": "sometimes"})).unwrap();
    let refused = app
        .post_webhook(
            "generic",
            project.id,
            "",
            &[("x-herald-token", token)],
            &bad,
        )
        .await;
    assert_eq!(refused.status(), 400);
    let problem: Value = refused.json().await.unwrap();
    assert!(
        problem["detail"].as_str().unwrap().contains("status"),
        "{problem}"
    );
    app.finish().await;
}

#[tokio::test]
async fn a_signed_timestamp_older_than_five_minutes_is_refused_and_records_nothing() {
    let app = spawn_app(Bus::InProcess).await;
    let project = app.create_project("timestamped").await;
    let body = serde_json::to_vec(&json!({
        "repository": "acme/api", "workflow": "deploy", "run_id": 7, "status": "succeeded"
    }))
    .unwrap();
    let post = |at: i64| {
        let signature = commands::providers::generic::sign_timestamped(&project.secret, at, &body);
        let at = at.to_string();
        let app = &app;
        let body = &body;
        async move {
            app.post_webhook(
                "generic",
                project.id,
                "",
                &[
                    ("x-herald-timestamp", at.as_str()),
                    ("x-herald-signature-256", signature.as_str()),
                ],
                body,
            )
            .await
        }
    };
    let now = chrono::Utc::now().timestamp();
    let before = app.event_count().await;
    let captured_long_ago = post(now - 3600).await;
    assert_eq!(captured_long_ago.status(), 401);
    let problem: Value = captured_long_ago.json().await.unwrap();
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("more than 5 minutes"),
        "{problem}"
    );
    assert_eq!(app.event_count().await, before);

    let fresh = post(now).await;
    assert_eq!(fresh.status(), 202);
    assert_eq!(fresh.json::<Value>().await.unwrap()["status"], "accepted");
    let replayed = post(now).await;
    assert_eq!(
        replayed.json::<Value>().await.unwrap()["status"],
        "duplicate"
    );
    app.finish().await;
}

#[tokio::test]
async fn the_delivery_log_shows_what_became_of_each_delivery() {
    let app = spawn_app(Bus::InProcess).await;
    let project = app.create_project("log").await;
    let completed = fixture("workflow_run/completed.payload.json");
    app.post_github(&project, "workflow_run", &completed, "one")
        .await;
    app.post_github(&project, "workflow_run", &completed, "one")
        .await;
    app.post_github(&project, "push", b"{}", "two").await;
    app.post_github_signed(
        project.id,
        "workflow_run",
        &completed,
        "three",
        Some("sha256=00"),
    )
    .await;
    app.post_github(&project, "workflow_run", b"{\"workflow_run\":", "four")
        .await;
    let unknown = app
        .post_webhook("bitbucket", project.id, "", &[], b"{}")
        .await;
    assert_eq!(unknown.status(), 404);

    let log: Value = app
        .get(&format!("/api/v1/projects/{}/deliveries", project.id))
        .await
        .json()
        .await
        .unwrap();
    let rows: Vec<(String, String, i64)> = log["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["delivery_id"].as_str().unwrap().to_owned(),
                d["outcome"].as_str().unwrap().to_owned(),
                d["http_status"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("four".to_owned(), "rejected".to_owned(), 400),
            ("three".to_owned(), "rejected".to_owned(), 401),
            ("two".to_owned(), "ignored".to_owned(), 202),
            ("one".to_owned(), "duplicate".to_owned(), 202),
            ("one".to_owned(), "accepted".to_owned(), 202),
        ]
    );
    assert!(log["items"][1]["reason"]
        .as_str()
        .unwrap()
        .contains("signature"));
    assert_eq!(log["items"][4]["events"], json!(["BuildSucceeded"]));
    app.finish().await;
}
