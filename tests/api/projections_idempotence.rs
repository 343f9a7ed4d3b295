//! Projections are idempotent and rebuildable: the same events applied again, or applied twice to an empty
//! database, leave exactly the read models the live pipeline built.

use crate::helpers::{drop_database, fixture, fresh_database, read_models, spawn_app, Bus};

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
    let again = projections::Projector::all(app.pool.clone());
    for event in &events {
        let applied = again.handle(event).await.unwrap();
        assert_eq!(
            applied.applied, 0,
            "already applied: {}#{}",
            event.aggregate_id, event.sequence
        );
    }
    assert_eq!(read_models(&app.pool).await, live);

    let rebuilt = fresh_database().await;
    let pool = herald::connect(&app.settings.database_url.replace(&app.database, &rebuilt))
        .await
        .unwrap();
    commands::migrate(&pool).await.unwrap();
    let projector = projections::Projector::all(pool.clone());
    for _ in 0..2 {
        for event in &events {
            projector.handle(event).await.unwrap();
        }
    }
    assert_eq!(
        read_models(&pool).await,
        live,
        "a rebuild from the log equals the live read models"
    );
    pool.close().await;
    drop_database(&rebuilt).await;
    app.finish().await;
}
