//! The auditor's trail: for a build, who was told what, when, through which channel, how many attempts, and
//! why someone was not told — over the API and from `herald replay`.

use serde_json::Value;

use crate::helpers::{fixture, spawn_app, Bus, Reply};

#[tokio::test]
async fn the_trail_of_a_build_says_who_was_told_and_who_was_not() {
    let app = spawn_app(Bus::InProcess).await;
    app.telegram
        .script([Reply::TooManyRequests { retry_after: 1 }]);
    let project = app.create_project("audited").await;
    let told = app.subscribe(project.id, 51, None).await;
    let not_told = app.subscribe(project.id, 52, Some(vec!["failed"])).await;
    let response: Value = app
        .post_github(
            &project,
            "workflow_run",
            &fixture("workflow_run/completed.payload.json"),
            "audit-1",
        )
        .await
        .json()
        .await
        .unwrap();
    let build_run_id = response["build_run_id"].as_str().unwrap().to_owned();
    app.wait_for_messages(1).await;
    app.drain().await;

    let trail: Value = app
        .get(&format!("/api/v1/audit/builds/{build_run_id}"))
        .await
        .json()
        .await
        .unwrap();
    let summaries: Vec<String> = trail["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["summary"].as_str().unwrap().to_owned())
        .collect();
    let expect = |needle: &str| {
        assert!(
            summaries.iter().any(|s| s.contains(needle)),
            "no {needle:?} in {summaries:#?}"
        )
    };
    expect("octo-org/octo-repo: test on master succeeded (passing) (github workflow_run delivery audit-1)");
    expect(&format!(
        "planned: Telegram chat 51 (subscription {told} v1, template builtin/build_finished.telegram.en@1)"
    ));
    expect(&format!(
        "not sent: outcome_not_subscribed (subscription {not_told} v1)"
    ));
    expect("attempt 1 failed: 429 Too Many Requests: retry after 1; retry at");
    expect("delivered on attempt 2 (provider message 1)");
    let order: Vec<i64> = trail["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["global_seq"].as_i64().unwrap())
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "in log order");

    let ndjson = app
        .get(&format!(
            "/api/v1/audit/builds/{build_run_id}?format=ndjson"
        ))
        .await;
    assert_eq!(ndjson.headers()["content-type"], "application/x-ndjson");
    let lines = ndjson.text().await.unwrap();
    assert_eq!(lines.lines().count(), summaries.len());
    assert!(lines
        .lines()
        .all(|l| serde_json::from_str::<Value>(l).is_ok()));

    let of_subscriber: Value = app
        .get(&format!("/api/v1/audit/subscriptions/{not_told}"))
        .await
        .json()
        .await
        .unwrap();
    let kinds: Vec<&str> = of_subscriber["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["Subscribed", "NotificationSuppressed"]);
    let of_project: Value = app
        .get(&format!("/api/v1/audit/projects/{}", project.id))
        .await
        .json()
        .await
        .unwrap();
    assert!(of_project["entries"].as_array().unwrap().len() > summaries.len());

    assert_eq!(app.get("/api/v1/audit/builds/nope").await.status(), 404);
    assert_eq!(app.get("/api/v1/audit").await.status(), 422);
    let range: Value = app
        .get("/api/v1/audit?from=2000-01-01T00:00:00Z&to=2100-01-01T00:00:00Z")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        range["entries"].as_array().unwrap().len() as i64,
        app.event_count().await
    );

    // The same trail from the command line.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["replay", "--build", &build_run_id, "--format", "ndjson"])
        .env("DATABASE_URL", &app.settings.database_url)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        String::from_utf8(output.stdout).unwrap().lines().count(),
        summaries.len()
    );
    let table = std::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["replay", "--build", &build_run_id])
        .env("DATABASE_URL", &app.settings.database_url)
        .output()
        .unwrap();
    let table = String::from_utf8(table.stdout).unwrap();
    assert!(table.contains("delivered on attempt 2"), "{table}");
    app.finish().await;
}
