//! Per projection and aggregate, the last sequence applied.

use std::collections::HashMap;

use domain::StoredEvent;
use sqlx::PgConnection;

/// The last applied sequence, with the checkpoint row locked (or, for a new aggregate, the insert slot taken)
/// until the transaction ends, so two workers cannot apply the same event concurrently.
pub(crate) async fn lock(
    tx: &mut PgConnection,
    projection: &str,
    event: &StoredEvent,
) -> Result<Option<i64>, sqlx::Error> {
    // Insert-if-absent first so that there is always a row to lock.
    sqlx::query(
        "INSERT INTO projection_checkpoints (projection, aggregate_type, aggregate_id, last_sequence)
         VALUES ($1, $2, $3, 0) ON CONFLICT DO NOTHING",
    )
    .bind(projection)
    .bind(&event.aggregate_type)
    .bind(&event.aggregate_id)
    .execute(&mut *tx)
    .await?;
    let last: i64 = sqlx::query_scalar(
        "SELECT last_sequence FROM projection_checkpoints
          WHERE projection = $1 AND aggregate_type = $2 AND aggregate_id = $3 FOR UPDATE",
    )
    .bind(projection)
    .bind(&event.aggregate_type)
    .bind(&event.aggregate_id)
    .fetch_one(&mut *tx)
    .await?;
    Ok((last > 0).then_some(last))
}

pub(crate) async fn advance(
    tx: &mut PgConnection,
    projection: &str,
    event: &StoredEvent,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE projection_checkpoints SET last_sequence = $4
          WHERE projection = $1 AND aggregate_type = $2 AND aggregate_id = $3",
    )
    .bind(projection)
    .bind(&event.aggregate_type)
    .bind(&event.aggregate_id)
    .bind(event.sequence)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Checkpoints of a batch's aggregates, keyed by (aggregate type, id), with their rows locked.
pub(crate) async fn lock_many(
    tx: &mut PgConnection,
    projection: &str,
    events: &[&StoredEvent],
) -> Result<HashMap<(String, String), i64>, sqlx::Error> {
    // Each aggregate once: a batch holds several events of most of its aggregates.
    let aggregates: std::collections::BTreeSet<(&str, &str)> = events
        .iter()
        .map(|e| (e.aggregate_type.as_str(), e.aggregate_id.as_str()))
        .collect();
    let (types, ids): (Vec<&str>, Vec<&str>) = aggregates.into_iter().unzip();
    // Planned for the keys given, every time: a plan cached while the table was small reads all of it
    // (why: LOAD_MANY in commands/src/event_log.rs).
    let rows: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT c.aggregate_type, c.aggregate_id, c.last_sequence FROM projection_checkpoints c
           JOIN UNNEST($2::text[], $3::text[]) AS b(t, i) ON c.aggregate_type = b.t AND c.aggregate_id = b.i
          WHERE c.projection = $1 FOR UPDATE OF c",
    )
    .persistent(false)
    .bind(projection)
    .bind(&types)
    .bind(&ids)
    .fetch_all(&mut *tx)
    .await?;
    Ok(rows.into_iter().map(|(t, i, s)| ((t, i), s)).collect())
}

/// Write many checkpoints in one statement.
pub(crate) async fn store_many(
    tx: &mut PgConnection,
    projection: &str,
    checkpoints: &HashMap<(String, String), i64>,
) -> Result<(), sqlx::Error> {
    if checkpoints.is_empty() {
        return Ok(());
    }
    let (mut types, mut ids, mut sequences) = (Vec::new(), Vec::new(), Vec::new());
    for ((t, i), s) in checkpoints {
        types.push(t.as_str());
        ids.push(i.as_str());
        sequences.push(*s);
    }
    sqlx::query(
        "INSERT INTO projection_checkpoints (projection, aggregate_type, aggregate_id, last_sequence)
         SELECT $1, t, i, s FROM UNNEST($2::text[], $3::text[], $4::bigint[]) AS b(t, i, s)
         ON CONFLICT (projection, aggregate_type, aggregate_id) DO UPDATE SET last_sequence = EXCLUDED.last_sequence",
    )
    .bind(projection)
    .bind(&types)
    .bind(&ids)
    .bind(&sequences)
    .execute(&mut *tx)
    .await?;
    Ok(())
}
