//! `notifications`: where each notification stands, for operators and tests. The trail itself is the log.

use async_trait::async_trait;
use domain::{NotificationEvent, StoredEvent};
use sqlx::PgConnection;

use crate::{decode, Projection, ProjectionError};

pub struct NotificationsProjection;

#[async_trait]
impl Projection for NotificationsProjection {
    fn name(&self) -> &'static str {
        "notifications"
    }

    fn wants(&self, aggregate_type: &str) -> bool {
        aggregate_type == "Notification"
    }

    async fn apply(
        &self,
        tx: &mut PgConnection,
        event: &StoredEvent,
    ) -> Result<(), ProjectionError> {
        record(tx, event).await?;
        crate::changes::notify(tx, "notifications", None).await?;
        Ok(())
    }

    /// One change notice for the whole batch: a notice costs as much as a row here.
    async fn apply_many(
        &self,
        tx: &mut PgConnection,
        events: &[&StoredEvent],
    ) -> Result<(), ProjectionError> {
        for event in events {
            record(tx, event).await?;
        }
        Ok(())
    }
}

/// One event's change to its notification's row. Rows are found by their key (a `uuid`): an id that is not
/// one names no row.
async fn record(tx: &mut PgConnection, event: &StoredEvent) -> Result<(), ProjectionError> {
    {
        let Ok(id) = event.aggregate_id.parse::<uuid::Uuid>() else {
            return Ok(());
        };
        let at = event.recorded_at;
        let update = |sql: &'static str| sqlx::query(sql).bind(id).bind(at);
        match decode::<NotificationEvent>(event)? {
            NotificationEvent::NotificationPlanned {
                notification_id,
                build_run_id,
                project_id,
                subscription_id,
                channel,
                planned_at,
                ..
            } => {
                sqlx::query(
                    "INSERT INTO notifications (notification_id, build_run_id, project_id, subscription_id, channel,
                                                status, next_attempt_at, planned_at, updated_at)
                     VALUES ($1, $2, $3, $4, $5, 'planned', $6, $6, $7) ON CONFLICT DO NOTHING",
                )
                .bind(notification_id)
                .bind(build_run_id)
                .bind(project_id)
                .bind(subscription_id)
                .bind(channel.kind().as_str())
                .bind(planned_at)
                .bind(at)
                .execute(&mut *tx)
                .await?;
            }
            NotificationEvent::NotificationSuppressed {
                notification_id,
                build_run_id,
                project_id,
                subscription_id,
                reason,
                suppressed_at,
                ..
            } => {
                sqlx::query(
                    "INSERT INTO notifications (notification_id, build_run_id, project_id, subscription_id,
                                                status, reason, planned_at, updated_at)
                     VALUES ($1, $2, $3, $4, 'suppressed', $5, $6, $7) ON CONFLICT DO NOTHING",
                )
                .bind(notification_id)
                .bind(build_run_id)
                .bind(project_id)
                .bind(subscription_id)
                .bind(reason)
                .bind(suppressed_at)
                .bind(at)
                .execute(&mut *tx)
                .await?;
            }
            NotificationEvent::NotificationHeld {
                notification_id,
                build_run_id,
                project_id,
                subscription_id,
                reason,
                channel,
                held_until,
                held_at,
                ..
            } => {
                sqlx::query(
                    "INSERT INTO notifications (notification_id, build_run_id, project_id, subscription_id, channel,
                                                status, reason, next_attempt_at, planned_at, updated_at)
                     VALUES ($1, $2, $3, $4, $9, 'held', $5, $6, $7, $8) ON CONFLICT DO NOTHING",
                )
                .bind(notification_id)
                .bind(build_run_id)
                .bind(project_id)
                .bind(subscription_id)
                .bind(reason)
                .bind(held_until)
                .bind(held_at)
                .bind(at)
                .bind(channel.kind().as_str())
                .execute(&mut *tx)
                .await?;
            }
            NotificationEvent::FoldedIntoDigest { digest_id, .. } => {
                update("UPDATE notifications SET status = 'digested', reason = $3, next_attempt_at = NULL, updated_at = $2 WHERE notification_id = $1")
                    .bind(format!("digest {digest_id}"))
                    .execute(&mut *tx)
                    .await?;
            }
            NotificationEvent::AttemptStarted { attempt, .. } => {
                update("UPDATE notifications SET status = 'sending', attempts = $3, updated_at = $2 WHERE notification_id = $1")
                    .bind(i32::try_from(attempt).unwrap_or(i32::MAX))
                    .execute(&mut *tx)
                    .await?;
            }
            NotificationEvent::Delivered {
                provider_message_id,
                delivered_at,
                ..
            } => {
                // Latency as the subscriber sees it: from the planner's decision to the provider's acceptance,
                // retries and rate-limit waits included.
                update("UPDATE notifications SET status = 'delivered', provider_message_id = $3, next_attempt_at = NULL,
                               updated_at = $2, delivered_at = $4,
                               latency_ms = GREATEST(0, (EXTRACT(EPOCH FROM ($4 - planned_at)) * 1000)::bigint)
                         WHERE notification_id = $1")
                    .bind(provider_message_id)
                    .bind(delivered_at)
                    .execute(&mut *tx)
                    .await?;
            }
            NotificationEvent::AttemptInterrupted { retry_at, .. } => {
                update("UPDATE notifications SET status = 'retrying', last_error = $3, next_attempt_at = $4, updated_at = $2 WHERE notification_id = $1")
                    .bind("interrupted: the outcome of the attempt is unknown")
                    .bind(retry_at)
                    .execute(&mut *tx)
                    .await?;
            }
            NotificationEvent::AttemptFailed {
                failure, retry_at, ..
            } => {
                update("UPDATE notifications SET status = 'retrying', last_error = $3, next_attempt_at = $4, updated_at = $2 WHERE notification_id = $1")
                    .bind(failure.description)
                    .bind(retry_at)
                    .execute(&mut *tx)
                    .await?;
            }
            NotificationEvent::NotificationRedriven { redriven_at, .. } => {
                update("UPDATE notifications SET status = 'redriven', reason = NULL, next_attempt_at = $3, updated_at = $2 WHERE notification_id = $1")
                    .bind(redriven_at)
                    .execute(&mut *tx)
                    .await?;
            }
            NotificationEvent::DeadLetterDiscarded { reason, .. } => {
                update("UPDATE notifications SET status = 'discarded', reason = $3, updated_at = $2 WHERE notification_id = $1")
                    .bind(reason)
                    .execute(&mut *tx)
                    .await?;
            }
            NotificationEvent::DeadLettered { reason, .. } => {
                update("UPDATE notifications SET status = 'dead_lettered', reason = $3, next_attempt_at = NULL, updated_at = $2 WHERE notification_id = $1")
                    .bind(reason)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        Ok(())
    }
}
