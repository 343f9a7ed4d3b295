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

#[tokio::test]
async fn the_analytics_benchmark_reports_figures_beside_its_baseline() {
    let result = herald::ops::bench_analytics::analytics(&admin_url(), 3_000, 20, 1)
        .await
        .unwrap();
    assert_eq!(result.builds, 3_000);
    let endpoints: Vec<(&str, &str)> = result
        .loads
        .iter()
        .map(|l| (l.endpoint.as_str(), l.pacing))
        .collect();
    assert_eq!(
        endpoints,
        [
            ("/health (baseline)", "open"),
            ("overview", "open"),
            ("statistics", "open"),
            ("/health (baseline)", "closed"),
            ("overview", "closed"),
            ("statistics", "closed"),
        ]
    );
    for load in &result.loads {
        assert!(load.requests > 0 && load.errors == 0, "{load:?}");
        assert!(load.p99_ms >= load.p50_ms, "{load:?}");
    }
    // Open-loop: 20 clients once a second for one second, every request answered.
    assert!(result.loads[..3].iter().all(|l| l.requests == 20));
    for (health, pacing) in [(0, "open"), (3, "closed")] {
        for load in &result.loads[health + 1..health + 3] {
            let ratio = result.p99_ratio_to_health[&format!("{} ({pacing})", load.endpoint)];
            assert!((ratio - load.p99_ms / result.loads[health].p99_ms).abs() < 1e-9);
        }
    }
    assert_eq!(result.uncached.len(), 3);
    // 100 webhooks a second for one second, every one seen in the read model.
    assert_eq!(result.lag_samples, 100);
    assert!(result.lag_p99_ms >= result.lag_p50_ms && result.lag_p50_ms >= 0.0);
    herald::ops::bench_analytics::print(&result);
}
