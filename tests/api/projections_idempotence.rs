//! Projections are idempotent and rebuildable: the same events applied again, or applied twice to an empty
//! database, leave exactly the read models the live pipeline built.

use projections::Projector;

use crate::helpers::{
    drop_database, fixture, fixture_with, fresh_database, read_models, spawn_app, Bus, Reply,
    TestApp,
};

#[tokio::test]
async fn a_projection_that_processes_the_same_event_twice_leaves_the_same_read_model() {
    let app = spawn_app(Bus::InProcess).await;
    let project = app.create_project("twice").await;
    app.subscribe(project.id, 21, None).await;
    for (event, path) in [
        ("workflow_run", "workflow_run/requested.payload.json"),
        ("workflow_job", "workflow_job/queued.payload.json"),
        (
            "workflow_job",
            "workflow_job/completed.failure.with-organization.payload.json",
        ),
        ("workflow_run", "workflow_run/completed.payload.json"),
    ] {
        app.post_github(&project, event, &fixture(path), path).await;
    }
    app.drain().await;
    let live = read_models(&app.pool).await;
    assert!(live.iter().any(|r| r.starts_with("notifications:")));

    let events = projections::log::read_all(&app.pool).await.unwrap();
    let again = Projector::all(app.pool.clone());
    for event in &events {
        let applied = again.handle(event).await.unwrap();
        assert_eq!(
            applied.applied, 0,
            "already applied: {}#{}",
            event.aggregate_id, event.sequence
        );
    }
    assert_eq!(read_models(&app.pool).await, live);

    let rebuilt = built_elsewhere(&app, async |projector| {
        for _ in 0..2 {
            for event in &events {
                projector.handle(event).await.unwrap();
            }
        }
    })
    .await;
    assert_eq!(
        rebuilt, live,
        "a rebuild from the log equals the live read models"
    );
    app.finish().await;
}

/// The read models a fresh database of the test server ends with after `apply` fed its projector.
async fn built_elsewhere(app: &TestApp, apply: impl AsyncFnOnce(&Projector)) -> Vec<String> {
    let database = fresh_database().await;
    let pool = herald::connect(&app.settings.database_url.replace(&app.database, &database))
        .await
        .unwrap();
    commands::migrate(&pool).await.unwrap();
    apply(&Projector::all(pool.clone())).await;
    let built = read_models(&pool).await;
    pool.close().await;
    drop_database(&database).await;
    built
}

/// The read models that build and notification events reach fold a batch in memory and write each row once.
/// Whatever the batch boundaries (one event, a few, the whole log), they must end in the rows one-at-a-time
/// application builds: runs with jobs, failures and fixes, two runs completing in the same instant, a run whose
/// jobs span batches, and notifications delivered and dead-lettered.
#[tokio::test]
async fn batches_of_any_size_build_the_same_read_models_as_one_event_at_a_time() {
    let app = spawn_app(Bus::InProcess).await;
    // The first message is refused for good (dead-lettered), the rest are delivered.
    app.telegram.script([Reply::Blocked]);
    let run_fixture: serde_json::Value =
        serde_json::from_slice(&fixture("workflow_run/requested.payload.json")).unwrap();
    let repository = run_fixture["repository"].clone();
    for (p, name) in ["folded-a", "folded-b"].into_iter().enumerate() {
        let project = app.create_project(name).await;
        app.subscribe(project.id, 700 + p as i64, None).await;
        for run in 0..6_i64 {
            let id = 5000 + run;
            // Pairs of runs complete in the same second; every third run fails.
            let completed = format!("2026-03-0{}T10:00:{:02}Z", p + 1, run / 2);
            let conclusion = if run % 3 == 2 { "failure" } else { "success" };
            let requested = fixture_with("workflow_run/requested.payload.json", |v| {
                v["workflow_run"]["id"] = id.into();
                v["workflow_run"]["run_number"] = (100 + run).into();
            });
            let job = |path: &str, job_id: i64| {
                let repository = repository.clone();
                fixture_with(path, move |v| {
                    v["repository"] = repository;
                    v["workflow_job"]["run_id"] = id.into();
                    v["workflow_job"]["id"] = job_id.into();
                    v["workflow_job"]["head_branch"] = "master".into();
                })
            };
            let completed_run = fixture_with("workflow_run/completed.payload.json", |v| {
                v["workflow_run"]["id"] = id.into();
                v["workflow_run"]["run_number"] = (100 + run).into();
                v["workflow_run"]["updated_at"] = completed.clone().into();
                v["workflow_run"]["conclusion"] = conclusion.into();
            });
            let posts = [
                ("workflow_run", requested),
                (
                    "workflow_job",
                    job("workflow_job/queued.payload.json", id * 10),
                ),
                (
                    "workflow_job",
                    job(
                        "workflow_job/completed.failure.with-organization.payload.json",
                        id * 10,
                    ),
                ),
                (
                    "workflow_job",
                    job("workflow_job/queued.payload.json", id * 10 + 1),
                ),
                ("workflow_run", completed_run),
            ];
            for (i, (event, body)) in posts.iter().enumerate() {
                let delivery = format!("{name}-{run}-{i}");
                let response = app.post_github(&project, event, body, &delivery).await;
                assert_eq!(response.status(), 202, "{delivery}");
            }
        }
    }
    app.drain().await;
    let live = read_models(&app.pool).await;
    let jobs: i64 = app
        .count("SELECT count(*) FROM build_runs WHERE jobs <> '{}'::jsonb")
        .await;
    assert_eq!(jobs, 12, "every run has its jobs: {live:#?}");
    let delivered = app
        .count("SELECT count(*) FROM notifications WHERE status = 'delivered' AND latency_ms IS NOT NULL")
        .await;
    let dead = app
        .count("SELECT count(*) FROM notifications WHERE status = 'dead_lettered' AND attempts = 1")
        .await;
    assert!(
        delivered > 0 && dead == 1,
        "delivered {delivered}, dead-lettered {dead}: {live:#?}"
    );
    let events = projections::log::read_all(&app.pool).await.unwrap();

    for batch in [1, 3, 7, events.len()] {
        let rebuilt = built_elsewhere(&app, async |projector| {
            for chunk in events.chunks(batch) {
                projector.handle_batch(chunk).await.unwrap();
            }
        })
        .await;
        assert_eq!(
            rebuilt, live,
            "batches of {batch} build what the live pipeline built"
        );
    }
    app.finish().await;
}
