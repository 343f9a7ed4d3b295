//! Rebuilding read models blue/green while Herald runs, resuming a rebuild that died, and point-in-time snapshots.

use std::sync::Arc;
use std::time::Duration;

use projections::rebuild::{self, Rebuild, RebuildError, Snapshot, Target};
use serde_json::{json, Value};

use herald::Role;

use crate::helpers::{
    drop_database, fixture_with, fresh_database, read_models, spawn_app, spawn_app_configured,
    url_of, wait_until, Bus, CreatedProject, TestApp,
};

fn run_body(id: i64, conclusion: &'static str) -> Vec<u8> {
    fixture_with("workflow_run/completed.payload.json", move |v| {
        v["workflow_run"]["id"] = id.into();
        v["workflow_run"]["conclusion"] = conclusion.into();
    })
}

async fn post_runs(app: &TestApp, project: &CreatedProject, ids: std::ops::Range<i64>) {
    for id in ids {
        let status = app
            .post_github(
                project,
                "workflow_run",
                &run_body(id, if id % 3 == 0 { "failure" } else { "success" }),
                &format!("r-{id}"),
            )
            .await
            .status();
        assert_eq!(status, 202);
    }
}

/// The read models a fresh database gets from the same log.
async fn rebuilt_elsewhere(app: &TestApp) -> Vec<String> {
    let other = fresh_database().await;
    let pool = herald::connect(&url_of(&other)).await.unwrap();
    commands::migrate(&pool).await.unwrap();
    let projector = projections::Projector::all(pool.clone());
    for event in projections::log::read_all(&app.pool).await.unwrap() {
        projector.handle(&event).await.unwrap();
    }
    let models = read_models(&pool).await;
    pool.close().await;
    drop_database(&other).await;
    models
}

fn options(progress: &mut (dyn FnMut(u64, u64) + Send)) -> Rebuild<'_> {
    Rebuild {
        target: Target::All,
        snapshot: None,
        progress,
        stop_after: None,
        batch_size: None,
    }
}

#[tokio::test]
async fn a_rebuild_while_webhooks_keep_arriving_misses_nothing_at_the_swap() {
    // Dozens of messages to one chat: Telegram's one-a-second limit would make the drain wait for them.
    let app = Arc::new(
        spawn_app_configured(Bus::InProcess, &Role::ALL, |s| {
            s.delivery.telegram_limits.per_chat_per_sec = 0;
        })
        .await,
    );
    let project = Arc::new(app.create_project("busy rebuild").await);
    app.subscribe(project.id, 61, Some(vec!["broken"])).await;
    post_runs(&app, &project, 0..30).await;
    let ingest = {
        let (app, project) = (app.clone(), project.clone());
        tokio::spawn(async move { post_runs(&app, &project, 30..70).await })
    };
    let mut reports = Vec::new();
    let mut progress = |done: u64, total: u64| reports.push((done, total));
    let run = rebuild::run(
        &app.pool,
        Rebuild {
            batch_size: Some(10),
            ..options(&mut progress)
        },
    )
    .await
    .unwrap();
    assert_eq!(run.status, "done");
    assert!(!reports.is_empty(), "progress was reported");
    ingest.await.unwrap();
    app.drain().await;
    let finished: i64 = app
        .count("SELECT count(*) FROM build_runs WHERE status = 'completed'")
        .await;
    assert_eq!(finished, 70);
    assert_eq!(read_models(&app.pool).await, rebuilt_elsewhere(&app).await);
    let leftovers: i64 = app
        .count("SELECT count(*) FROM information_schema.schemata WHERE schema_name IN ('herald_rebuild', 'herald_retired')")
        .await;
    assert_eq!(leftovers, 0);
    Arc::try_unwrap(app)
        .ok()
        .expect("no other owner")
        .finish()
        .await;
}

#[tokio::test]
async fn a_rebuild_that_dies_resumes_where_it_stopped() {
    let app = spawn_app(Bus::InProcess).await;
    let project = app.create_project("resumed").await;
    post_runs(&app, &project, 0..12).await;
    app.drain().await;
    let total = app.event_count().await as u64;
    let mut quiet = |_: u64, _: u64| {};
    let crashed = rebuild::run(
        &app.pool,
        Rebuild {
            batch_size: Some(4),
            stop_after: Some(4),
            ..options(&mut quiet)
        },
    )
    .await;
    assert!(
        matches!(crashed, Err(RebuildError::Interrupted(4))),
        "{crashed:?}"
    );
    let state: (String, i64) =
        sqlx::query_as("SELECT status, applied FROM rebuild_runs WHERE id = 'live'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(state, ("running".to_owned(), 4));

    let mut calls = Vec::new();
    let mut progress = |done: u64, _: u64| calls.push(done);
    let run = rebuild::run(
        &app.pool,
        Rebuild {
            batch_size: Some(4),
            ..options(&mut progress)
        },
    )
    .await
    .unwrap();
    assert_eq!(
        run.applied as u64, total,
        "every event exactly once across both calls"
    );
    assert_eq!(
        calls.first(),
        Some(&8),
        "resumed after the first batch instead of starting over"
    );
    app.drain().await;
    assert_eq!(read_models(&app.pool).await, rebuilt_elsewhere(&app).await);
    app.finish().await;
}

#[tokio::test]
async fn one_damaged_read_model_is_rebuilt_alone() {
    let app = spawn_app(Bus::InProcess).await;
    let project = app.create_project("repaired").await;
    post_runs(&app, &project, 0..5).await;
    app.drain().await;
    let good = read_models(&app.pool).await;
    sqlx::query("UPDATE build_runs SET status = 'bogus'")
        .execute(&app.pool)
        .await
        .unwrap();
    sqlx::query("UPDATE projects SET name = 'untouched'")
        .execute(&app.pool)
        .await
        .unwrap();
    let mut quiet = |_: u64, _: u64| {};
    rebuild::run(
        &app.pool,
        Rebuild {
            target: Target::parse("build_runs").unwrap(),
            ..options(&mut quiet)
        },
    )
    .await
    .unwrap();
    assert_eq!(
        app.count("SELECT count(*) FROM build_runs WHERE status = 'bogus'")
            .await,
        0
    );
    assert_eq!(
        app.count("SELECT count(*) FROM projects WHERE name = 'untouched'")
            .await,
        1,
        "other read models are left alone"
    );
    sqlx::query("UPDATE projects SET name = 'repaired'")
        .execute(&app.pool)
        .await
        .unwrap();
    assert_eq!(read_models(&app.pool).await, good);
    assert!(Target::parse("everything").is_err());
    app.finish().await;
}

#[tokio::test]
async fn a_snapshot_answers_as_the_read_models_were_then() {
    let app = spawn_app(Bus::InProcess).await;
    let project = app.create_project("time travel").await;
    post_runs(&app, &project, 1..3).await;
    app.drain().await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let then = chrono::Utc::now();
    tokio::time::sleep(Duration::from_millis(20)).await;
    post_runs(&app, &project, 3..5).await;
    app.drain().await;

    let started = app
        .post_json(
            "/api/v1/operations/rebuilds",
            json!({ "target": "all", "snapshot": { "name": "before_more", "as_of": then } }),
        )
        .await;
    assert_eq!(started.status(), 202);
    let pool = app.pool.clone();
    wait_until("the snapshot is built", Duration::from_secs(20), || {
        let pool = pool.clone();
        async move {
            let runs = rebuild::runs(&pool).await.unwrap();
            runs.iter()
                .any(|r| r.id == "snapshot:before_more" && r.status == "done")
        }
    })
    .await;
    let _ = Snapshot {
        name: String::new(),
        at: then,
    };
    let past: Value = app
        .get(&format!(
            "/api/v1/projects/{}?as_of=before_more",
            project.id
        ))
        .await
        .json()
        .await
        .unwrap();
    let now: Value = app
        .get(&format!("/api/v1/projects/{}", project.id))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(past["builds_finished"], 2);
    assert_eq!(now["builds_finished"], 4);
    let builds: Value = app
        .get(&format!(
            "/api/v1/projects/{}/builds?as_of=before_more",
            project.id
        ))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(builds["items"].as_array().unwrap().len(), 2);
    assert_eq!(
        app.get("/api/v1/projects?as_of=never_taken").await.status(),
        404
    );
    assert_eq!(
        app.get("/api/v1/projects?as_of=Bad-Name").await.status(),
        422
    );
    let refused = app
        .post_json(
            "/api/v1/operations/rebuilds",
            json!({ "target": "sometimes" }),
        )
        .await;
    assert_eq!(refused.status(), 422);
    let runs: Value = app
        .get("/api/v1/operations/rebuilds")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(runs["items"][0]["status"], "done");
    app.finish().await;
}

/// A reader of the log in global order must not pass an event still being written. Here the transaction that
/// commits first holds the larger number: a reader that read it and moved on would never see the smaller one.
/// The reader waits for the append in flight, then reads both, in order.
#[tokio::test]
async fn the_log_reader_waits_for_an_append_in_flight_rather_than_pass_it() {
    let database = fresh_database().await;
    let pool = herald::connect(&url_of(&database)).await.unwrap();
    commands::migrate(&pool).await.unwrap();
    let insert = "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload,
                                      metadata)
                  VALUES ('Probe', $1, 1, 'Probed', '1.0', '{}'::json, '{}'::json) RETURNING global_seq";
    let mut first = pool.begin().await.unwrap();
    // The transaction that will commit first takes its id first, as one that wrote something else would.
    sqlx::query("SELECT pg_current_xact_id()")
        .execute(&mut *first)
        .await
        .unwrap();
    let mut in_flight = pool.begin().await.unwrap();
    let smaller: i64 = sqlx::query_scalar(insert)
        .bind("in-flight")
        .fetch_one(&mut *in_flight)
        .await
        .unwrap();
    let larger: i64 = sqlx::query_scalar(insert)
        .bind("first")
        .fetch_one(&mut *first)
        .await
        .unwrap();
    first.commit().await.unwrap();
    assert!(smaller < larger);

    let reader = tokio::spawn({
        let pool = pool.clone();
        async move { projections::log::read_after(&pool, 0, 100).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !reader.is_finished(),
        "the reader waits while an append is in flight"
    );
    in_flight.commit().await.unwrap();
    let read: Vec<i64> = reader
        .await
        .unwrap()
        .unwrap()
        .iter()
        .map(|e| e.global_seq)
        .collect();
    assert_eq!(read, vec![smaller, larger]);
    pool.close().await;
    drop_database(&database).await;
}
