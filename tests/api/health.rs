//! Liveness and readiness, and the rebuild benchmark's own sanity on a small log.

use serde_json::Value;

use crate::helpers::{admin_url, spawn_app, Bus};

#[tokio::test]
async fn health_and_readiness_name_what_they_checked() {
    let app = spawn_app(Bus::Kafka).await;
    let health: Value = app.get("/health").await.json().await.unwrap();
    assert_eq!(health["status"], "ok");
    let ready = app.get("/ready").await;
    assert_eq!(ready.status(), 200);
    let ready: Value = ready.json().await.unwrap();
    assert_eq!(ready["checks"]["postgres"], "ok");
    assert_eq!(ready["checks"]["kafka"], "ok");
    app.finish().await;
}

#[tokio::test]
async fn the_rebuild_benchmark_reports_figures_beside_its_baseline() {
    let result = herald::ops::bench::rebuild(&admin_url(), 302)
        .await
        .unwrap();
    assert_eq!(result.events, 302);
    assert!(result.baseline_events_per_second > 0.0 && result.rebuild_events_per_second > 0.0);
    assert!(
        (result.ratio_to_baseline - result.rebuild_seconds / result.baseline_copy_seconds).abs()
            < 1e-9
    );
    herald::ops::bench::print(&result);
}
