//! Backup and restore: a round trip gives the same log and identical read models; a damaged backup or a
//! non-empty target is refused before anything is written.

use std::path::PathBuf;

use herald::ops::backup;
use herald::ops::progress::Progress;
use sqlx::PgPool;

use crate::helpers::{drop_database, fixture, fresh_database, read_models, spawn_app, url_of, Bus};

fn temp_dir() -> PathBuf {
    std::env::temp_dir().join(format!("herald-backup-{}", uuid::Uuid::new_v4().simple()))
}

async fn log(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT jsonb_build_array(global_seq, aggregate_type, aggregate_id, sequence, event_type, event_version,
                                  payload::jsonb, metadata::jsonb, recorded_at)::text
           FROM events ORDER BY global_seq",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_backup_restored_into_an_empty_database_gives_the_same_log_and_read_models() {
    let app = spawn_app(Bus::InProcess).await;
    let project = app.create_project("backed up").await;
    app.subscribe(project.id, 31, None).await;
    for (event, path, delivery) in [
        ("workflow_run", "workflow_run/requested.payload.json", "b-1"),
        (
            "workflow_job",
            "workflow_job/completed.failure.with-organization.payload.json",
            "b-2",
        ),
        ("workflow_run", "workflow_run/completed.payload.json", "b-3"),
    ] {
        app.post_github(&project, event, &fixture(path), delivery)
            .await;
    }
    app.wait_for_messages(1).await;
    app.drain().await;

    let dir = temp_dir();
    let manifest = backup::backup(&app.pool, &dir, &mut Progress::silent())
        .await
        .unwrap();
    let events = app.event_count().await;
    assert_eq!(
        manifest
            .files
            .iter()
            .find(|f| f.name == "events.ndjson.gz")
            .unwrap()
            .records,
        events as u64
    );
    assert!(
        backup::backup(&app.pool, &dir, &mut Progress::silent())
            .await
            .is_err(),
        "never overwrites a backup"
    );

    let restored = fresh_database().await;
    let pool = herald::connect(&url_of(&restored)).await.unwrap();
    backup::restore(&pool, &dir, &mut Progress::silent())
        .await
        .unwrap();
    assert_eq!(log(&pool).await, log(&app.pool).await);
    assert_eq!(read_models(&pool).await, read_models(&app.pool).await);
    let secrets: i64 = sqlx::query_scalar("SELECT count(*) FROM project_secrets")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        secrets, 1,
        "webhook secrets come back, so webhooks keep verifying"
    );
    let outbox: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(outbox, 0, "restored events are not published again");

    // The sequence continues after the restored log.
    let commands = commands::Commands::new(pool.clone());
    commands
        .create_project(
            domain::ProjectName::parse("after restore").unwrap(),
            &commands::Metadata::new(),
        )
        .await
        .unwrap();
    let next: i64 = sqlx::query_scalar("SELECT max(global_seq) FROM events")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(next, manifest.last_global_seq + 1);

    assert!(
        backup::restore(&pool, &dir, &mut Progress::silent())
            .await
            .is_err(),
        "a database with events is never restored into"
    );
    pool.close().await;
    drop_database(&restored).await;
    let _ = std::fs::remove_dir_all(&dir);
    app.finish().await;
}

#[tokio::test]
async fn a_damaged_backup_is_refused_before_anything_is_written() {
    let app = spawn_app(Bus::InProcess).await;
    app.create_project("damaged").await;
    app.drain().await;
    let dir = temp_dir();
    backup::backup(&app.pool, &dir, &mut Progress::silent())
        .await
        .unwrap();
    let events = dir.join("events.ndjson.gz");
    let mut bytes = std::fs::read(&events).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&events, bytes).unwrap();
    let error = backup::verify(&dir).unwrap_err().to_string();
    assert!(error.contains("damaged"), "{error}");

    let restored = fresh_database().await;
    let pool = herald::connect(&url_of(&restored)).await.unwrap();
    assert!(backup::restore(&pool, &dir, &mut Progress::silent())
        .await
        .is_err());
    let tables: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'events'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(tables, 0, "nothing was written, not even the schema");
    pool.close().await;
    drop_database(&restored).await;
    let _ = std::fs::remove_dir_all(&dir);
    app.finish().await;
}

#[tokio::test]
async fn scheduled_backups_are_taken_and_old_ones_pruned() {
    let telegram = crate::helpers::FakeTelegram::start().await;
    let database = fresh_database().await;
    let mut settings = crate::helpers::settings_for(&database, Bus::InProcess, &telegram);
    let dir = temp_dir();
    settings.backups = Some(backup::Schedule {
        dir: dir.clone(),
        every: std::time::Duration::from_millis(300),
        keep: 2,
    });
    let running = herald::start(&settings, &[herald::Role::Api])
        .await
        .unwrap();
    let count = || {
        std::fs::read_dir(&dir)
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok())
                    .filter(|e| e.path().join("manifest.json").exists())
                    .count()
            })
            .unwrap_or(0)
    };
    tokio::time::sleep(std::time::Duration::from_millis(1800)).await;
    running.stop().await;
    assert_eq!(count(), 2, "only the newest two are kept");
    for entry in std::fs::read_dir(&dir).unwrap() {
        backup::verify(&entry.unwrap().path()).unwrap();
    }
    assert_eq!(
        backup::parse_interval("15m").unwrap(),
        std::time::Duration::from_secs(900)
    );
    assert!(backup::parse_interval("0s").is_err());
    assert!(backup::parse_interval("soon").is_err());
    let _ = std::fs::remove_dir_all(&dir);
    drop_database(&database).await;
}
