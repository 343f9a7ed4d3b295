//! What an operator checks first: how much waits in the outbox, how far each projection is behind the log, how
//! many notifications wait for delivery or sit in the dead-letter queue.

use serde::Serialize;
use sqlx::PgPool;

/// One consumer group's position on one Kafka partition.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PartitionLag {
    pub group: String,
    pub partition: i32,
    pub committed: i64,
    pub end: i64,
    pub lag: i64,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ProjectionLag {
    pub projection: &'static str,
    /// Aggregates whose newest event this projection has not applied yet.
    pub aggregates_behind: i64,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DatabaseStatus {
    pub events_total: i64,
    pub head_global_seq: i64,
    pub outbox_depth: i64,
    pub outbox_oldest_age_seconds: f64,
    pub delivery_queue_depth: i64,
    pub delivery_due: i64,
    pub dead_letters: i64,
    pub projections: Vec<ProjectionLag>,
}

/// Which aggregate types each projection reads (kept beside [`crate::PROJECTIONS`]).
fn reads(projection: &str) -> &'static [&'static str] {
    match projection {
        "projects" => &["Project", "BuildRun"],
        "build_runs" | "live_feed" | "series_health" => &["BuildRun"],
        "subscriptions" => &["Subscription"],
        "subscribers" | "contacts" => &["Subscriber"],
        "notifications" => &["Notification"],
        "templates" | "template_versions" => &["Template"],
        _ => &[],
    }
}

pub async fn database_status(pool: &PgPool) -> Result<DatabaseStatus, sqlx::Error> {
    let (events_total, head_global_seq): (i64, i64) =
        sqlx::query_as("SELECT count(*), COALESCE(max(global_seq), 0) FROM events")
            .fetch_one(pool)
            .await?;
    let (outbox_depth, outbox_oldest_age_seconds): (i64, f64) = sqlx::query_as(
        "SELECT count(*), COALESCE(EXTRACT(EPOCH FROM now() - min(enqueued_at))::float8, 0) FROM outbox",
    )
    .fetch_one(pool)
    .await?;
    let (delivery_queue_depth, delivery_due): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE next_attempt_at <= now()) FROM delivery_queue",
    )
    .fetch_one(pool)
    .await?;
    let dead_letters: i64 =
        sqlx::query_scalar("SELECT count(*) FROM notifications WHERE status = 'dead_lettered'")
            .fetch_one(pool)
            .await?;
    let mut projections = Vec::new();
    for projection in crate::PROJECTIONS {
        let types: Vec<&str> = reads(projection).to_vec();
        let aggregates_behind: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM (SELECT aggregate_type, aggregate_id, max(sequence) AS head FROM events
                                    WHERE aggregate_type = ANY($2) GROUP BY 1, 2) e
              LEFT JOIN projection_checkpoints c ON c.projection = $1 AND c.aggregate_type = e.aggregate_type
                                               AND c.aggregate_id = e.aggregate_id
              WHERE COALESCE(c.last_sequence, 0) < e.head",
        )
        .bind(projection)
        .bind(&types)
        .fetch_one(pool)
        .await?;
        projections.push(ProjectionLag {
            projection,
            aggregates_behind,
        });
    }
    Ok(DatabaseStatus {
        events_total,
        head_global_seq,
        outbox_depth,
        outbox_oldest_age_seconds,
        delivery_queue_depth,
        delivery_due,
        dead_letters,
        projections,
    })
}
