//! Per projection and aggregate, the last sequence applied.

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
