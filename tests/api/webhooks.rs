//! GitHub webhooks: every fixture lands as the right build state, and every bad delivery changes nothing.

use serde_json::Value;

use crate::helpers::{fixture, fixture_with, spawn_app, Bus};

#[tokio::test]
async fn each_github_fixture_gives_the_right_build_state_and_read_model_row() {
    let app = spawn_app(Bus::InProcess).await;
    // (event, fixture, events recorded, run status, run outcome, job status, job outcome)
    let cases = [
        (
            "workflow_run",
            "workflow_run/requested.payload.json",
            vec!["BuildQueued"],
            "queued",
            None,
            None,
            None,
        ),
        (
            "workflow_run",
            "workflow_run/completed.payload.json",
            vec!["BuildSucceeded"],
            "completed",
            Some("succeeded"),
            None,
            None,
        ),
        (
            "workflow_run",
            "workflow_run/completed.with-pull-requests.payload.json",
            vec!["BuildSucceeded"],
            "completed",
            Some("succeeded"),
            None,
            None,
        ),
        (
            "workflow_job",
            "workflow_job/queued.payload.json",
            vec!["BuildQueued", "JobQueued"],
            "queued",
            None,
            Some("queued"),
            None,
        ),
        (
            "workflow_job",
            "workflow_job/in_progress.payload.json",
            vec!["BuildQueued", "BuildStarted", "JobStarted"],
            "started",
            None,
            Some("started"),
            None,
        ),
        (
            "workflow_job",
            "workflow_job/completed.success.with-organization.payload.json",
            vec!["BuildQueued", "BuildStarted", "JobFinished"],
            "started",
            None,
            Some("completed"),
            Some("succeeded"),
        ),
        (
            "workflow_job",
            "workflow_job/completed.failure.with-organization.payload.json",
            vec!["BuildQueued", "BuildStarted", "JobFinished"],
            "started",
            None,
            Some("completed"),
            Some("failed"),
        ),
    ];
    for (event, path, recorded, status, outcome, job_status, job_outcome) in cases {
        let project = app.create_project(path).await;
        let response = app
            .post_github(&project, event, &fixture(path), "delivery-1")
            .await;
        assert_eq!(response.status(), 202, "{path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(
            body["recorded_events"],
            serde_json::json!(recorded),
            "{path}"
        );
        let build_run_id = body["build_run_id"].as_str().unwrap().to_owned();
        app.drain().await;
        let row = projections::queries::build(&app.pool, &build_run_id)
            .await
            .unwrap()
            .expect("read model row");
        assert_eq!(row.project_id, project.id, "{path}");
        assert_eq!(row.status, status, "{path}");
        assert_eq!(row.outcome.as_deref(), outcome, "{path}");
        assert_eq!(row.provider, "github");
        let job = row
            .jobs
            .as_object()
            .unwrap()
            .values()
            .next()
            .cloned()
            .unwrap_or_default();
        assert_eq!(job["status"].as_str(), job_status, "{path}");
        assert_eq!(job["outcome"].as_str(), job_outcome, "{path}");
        let expected_branch = if event == "workflow_run" {
            "master"
        } else {
            "main"
        };
        assert_eq!(row.branch.as_deref(), Some(expected_branch));
    }
    let project = app.create_project("pinged").await;
    let response = app
        .post_github(&project, "ping", &fixture("ping/payload.json"), "ping-1")
        .await;
    assert_eq!(response.status(), 202);
    assert_eq!(
        app.count("SELECT count(*) FROM events WHERE event_type = 'WebhookPinged'")
            .await,
        1
    );
    app.finish().await;
}

#[tokio::test]
async fn a_wrong_or_missing_signature_is_refused_with_401_and_records_nothing() {
    let app = spawn_app(Bus::InProcess).await;
    let project = app.create_project("guarded").await;
    let body = fixture("workflow_run/completed.payload.json");
    let other_body = fixture("workflow_run/requested.payload.json");
    let cases = [
        ("missing", None),
        (
            "wrong secret",
            Some(commands::providers::sign("not-the-secret", &body)),
        ),
        (
            "another body",
            Some(commands::providers::sign(&project.secret, &other_body)),
        ),
        ("sha1 form", Some("sha1=0123456789abcdef".to_owned())),
        ("not hex", Some("sha256=zzzz".to_owned())),
    ];
    let before = app.event_count().await;
    for (case, signature) in cases {
        let response = app
            .post_github_signed(
                project.id,
                "workflow_run",
                &body,
                "d-1",
                signature.as_deref(),
            )
            .await;
        assert_eq!(response.status(), 401, "{case}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json",
            "{case}"
        );
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["type"], "urn:herald:problem:unauthorized");
    }
    assert_eq!(app.event_count().await, before);
    app.finish().await;
}

#[tokio::test]
async fn the_same_delivery_posted_twice_records_one_set_of_events() {
    let app = spawn_app(Bus::InProcess).await;
    let project = app.create_project("retried").await;
    let body = fixture("workflow_job/in_progress.payload.json");
    let first: Value = app
        .post_github(&project, "workflow_job", &body, "same-delivery")
        .await
        .json()
        .await
        .unwrap();
    let before = app.event_count().await;
    let second = app
        .post_github(&project, "workflow_job", &body, "same-delivery")
        .await;
    assert_eq!(second.status(), 202);
    let second: Value = second.json().await.unwrap();
    assert_eq!(first["status"], "accepted");
    assert_eq!(second["status"], "duplicate");
    assert_eq!(second["recorded_events"], serde_json::json!([]));
    assert_eq!(app.event_count().await, before);
    app.finish().await;
}

#[tokio::test]
async fn bad_deliveries_get_clear_errors_and_record_nothing() {
    let app = spawn_app(Bus::InProcess).await;
    let project = app.create_project("strict").await;
    let before = app.event_count().await;

    let garbled = b"{\"workflow_run\": ".to_vec();
    let response = app
        .post_github(&project, "workflow_run", &garbled, "g-1")
        .await;
    assert_eq!(response.status(), 400);
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["type"], "urn:herald:problem:bad-request");

    let wrong_shape = br#"{"workflow_run": {"status": "completed"}}"#.to_vec();
    assert_eq!(
        app.post_github(&project, "workflow_run", &wrong_shape, "g-2")
            .await
            .status(),
        400
    );

    let unknown_status = fixture_with("workflow_run/completed.payload.json", |v| {
        v["workflow_run"]["conclusion"] = "exploded".into();
    });
    assert_eq!(
        app.post_github(&project, "workflow_run", &unknown_status, "g-3")
            .await
            .status(),
        400
    );

    let body = fixture("workflow_run/completed.payload.json");
    let signature = commands::providers::sign(&project.secret, &body);
    let no_event = app
        .http
        .post(app.url(&format!("/api/v1/webhooks/github/{}", project.id)))
        .header("x-hub-signature-256", signature)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(no_event.status(), 400);

    let unknown = app
        .post_github_signed(uuid::Uuid::new_v4(), "workflow_run", &body, "g-4", None)
        .await;
    assert_eq!(unknown.status(), 404);
    let not_a_uuid = app
        .http
        .post(app.url("/api/v1/webhooks/github/not-a-project"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(not_a_uuid.status(), 404);

    let ignored = app.post_github(&project, "push", b"{}", "g-5").await;
    assert_eq!(ignored.status(), 202);
    assert_eq!(ignored.json::<Value>().await.unwrap()["status"], "ignored");

    assert_eq!(app.event_count().await, before);

    let response = app
        .http
        .delete(app.url(&format!("/api/v1/projects/{}", project.id)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    let archived = app
        .post_github(&project, "workflow_run", &body, "g-6")
        .await;
    assert_eq!(archived.status(), 410);
    app.finish().await;
}

#[tokio::test]
async fn a_late_in_progress_after_completion_changes_nothing() {
    let app = spawn_app(Bus::InProcess).await;
    let project = app.create_project("ordered").await;
    let completed = fixture("workflow_run/completed.payload.json");
    let late = fixture_with("workflow_run/completed.payload.json", |v| {
        v["action"] = "in_progress".into();
        v["workflow_run"]["status"] = "in_progress".into();
        v["workflow_run"]["conclusion"] = Value::Null;
    });
    app.post_github(&project, "workflow_run", &completed, "c-1")
        .await;
    let response: Value = app
        .post_github(&project, "workflow_run", &late, "c-2")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(response["status"], "stale");
    app.drain().await;
    let row = projections::queries::build(&app.pool, response["build_run_id"].as_str().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.status, "completed");
    app.finish().await;
}

#[tokio::test]
async fn consecutive_runs_say_broken_still_failing_and_fixed() {
    let app = spawn_app(Bus::InProcess).await;
    let project = app.create_project("streaks").await;
    let run = |id: i64, conclusion: &'static str| {
        fixture_with("workflow_run/completed.payload.json", move |v| {
            v["workflow_run"]["id"] = id.into();
            v["workflow_run"]["conclusion"] = conclusion.into();
        })
    };
    let mut transitions = Vec::new();
    // Delivered out of order: run 4 arrives before run 3, yet "previous" is by run id.
    for (id, conclusion) in [
        (1, "success"),
        (2, "failure"),
        (4, "success"),
        (3, "failure"),
        (5, "timed_out"),
    ] {
        let response: Value = app
            .post_github(
                &project,
                "workflow_run",
                &run(id, conclusion),
                &format!("r-{id}"),
            )
            .await
            .json()
            .await
            .unwrap();
        app.drain().await;
        let row =
            projections::queries::build(&app.pool, response["build_run_id"].as_str().unwrap())
                .await
                .unwrap()
                .unwrap();
        transitions.push((id, row.transition.unwrap(), row.failure_streak.unwrap()));
    }
    assert_eq!(
        transitions,
        [
            (1, "passing".to_owned(), 0),
            (2, "broken".to_owned(), 1),
            (4, "fixed".to_owned(), 0),
            (3, "still_failing".to_owned(), 2),
            (5, "broken".to_owned(), 1),
        ]
    );
    let project_view: Value = app
        .get(&format!("/api/v1/projects/{}", project.id))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(project_view["builds_finished"], 5);
    assert_eq!(project_view["success_rate"], 0.4);
    app.finish().await;
}

#[tokio::test]
async fn a_rerun_is_a_new_attempt_of_the_same_run_and_can_fix_it() {
    let app = spawn_app(Bus::InProcess).await;
    let project = app.create_project("reruns").await;
    let attempt = |n: i64, conclusion: &'static str| {
        fixture_with("workflow_run/completed.payload.json", move |v| {
            v["workflow_run"]["run_attempt"] = n.into();
            v["workflow_run"]["conclusion"] = conclusion.into();
        })
    };
    let first: Value = app
        .post_github(&project, "workflow_run", &attempt(1, "failure"), "a-1")
        .await
        .json()
        .await
        .unwrap();
    let second: Value = app
        .post_github(&project, "workflow_run", &attempt(2, "success"), "a-2")
        .await
        .json()
        .await
        .unwrap();
    assert_ne!(first["build_run_id"], second["build_run_id"]);
    app.drain().await;
    let rerun = projections::queries::build(&app.pool, second["build_run_id"].as_str().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((rerun.run_id, rerun.attempt), (289782451, 2));
    assert_eq!(rerun.transition.as_deref(), Some("fixed"));
    app.finish().await;
}

/// "The previous run" is looked up per workflow and branch, a run without a branch being a branch of its own:
/// the failure streak counts only the earlier failures on the same branch.
#[tokio::test]
async fn a_failure_streak_counts_earlier_failures_of_the_same_branch_only() {
    let app = spawn_app(Bus::InProcess).await;
    let project = app.create_project("streaks").await;
    let runs: [(i64, Option<&str>); 6] = [
        (10, Some("main")),
        (11, Some("dev")),
        (12, Some("main")),
        (13, None),
        (14, None),
        (15, Some("main")),
    ];
    for (run, branch) in runs {
        let body = fixture_with("workflow_run/completed.payload.json", |v| {
            v["workflow_run"]["id"] = run.into();
            v["workflow_run"]["conclusion"] = "failure".into();
            v["workflow_run"]["head_branch"] = branch.into();
        });
        let response = app
            .post_github(&project, "workflow_run", &body, &format!("streak-{run}"))
            .await;
        assert_eq!(response.status(), 202);
    }
    let streaks: Vec<(i64, Option<String>, i32)> =
        sqlx::query_as("SELECT run_id, branch, failure_streak FROM build_verdicts ORDER BY run_id")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    let expected = [
        (10, Some("main"), 1),
        (11, Some("dev"), 1),
        (12, Some("main"), 2),
        (13, None, 1),
        (14, None, 2),
        (15, Some("main"), 3),
    ];
    let expected: Vec<(i64, Option<String>, i32)> = expected
        .iter()
        .map(|(run, branch, streak)| (*run, branch.map(str::to_owned), *streak))
        .collect();
    assert_eq!(streaks, expected);
    app.finish().await;
}

#[tokio::test]
async fn concurrent_webhooks_for_one_run_are_all_recorded_in_order() {
    let app = spawn_app(Bus::InProcess).await;
    let project = app.create_project("busy-run").await;
    // Twelve jobs of one run, posted at once: they all append to the same BuildRun, so most appends meet another
    // writer's and are retried on fresh state.
    let jobs = 12;
    let posts = (0..jobs).map(|i| {
        let body = fixture_with("workflow_job/queued.payload.json", |v| {
            v["workflow_job"]["id"] = (1_000 + i).into();
            v["workflow_job"]["name"] = format!("job-{i}").into();
        });
        let (app, project) = (&app, &project);
        async move {
            app.post_github(project, "workflow_job", &body, &format!("job-{i}"))
                .await
        }
    });
    for response in futures::future::join_all(posts).await {
        assert_eq!(response.status(), 202);
        let answer: Value = response.json().await.unwrap();
        assert_eq!(answer["status"], "accepted", "{answer}");
    }
    let rows: Vec<(i64, String, i64)> = sqlx::query_as(
        "SELECT sequence, event_type, global_seq FROM events
          WHERE aggregate_type = 'BuildRun' ORDER BY sequence",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    // One stream, numbered 1..n without a gap or a repeat, and in the log's global order as well.
    let sequences: Vec<i64> = rows.iter().map(|r| r.0).collect();
    assert_eq!(sequences, (1..=rows.len() as i64).collect::<Vec<_>>());
    assert!(rows.windows(2).all(|w| w[0].2 < w[1].2), "{rows:?}");
    let queued = rows.iter().filter(|r| r.1 == "JobQueued").count();
    assert_eq!(queued, jobs as usize, "{rows:?}");
    // The delivery log, written for concurrent webhooks together, lists every one of them once.
    let log: Value = app
        .get(&format!("/api/v1/projects/{}/deliveries", project.id))
        .await
        .json()
        .await
        .unwrap();
    let mut listed: Vec<&str> = log["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["outcome"] == "accepted")
        .filter_map(|d| d["delivery_id"].as_str())
        .collect();
    listed.sort_unstable();
    let mut posted: Vec<String> = (0..jobs).map(|i| format!("job-{i}")).collect();
    posted.sort_unstable();
    assert_eq!(listed, posted, "{log}");
    app.finish().await;
}
