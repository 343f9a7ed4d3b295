//! `subscriptions`: who wants to hear about which project; read by the notification planner.

use async_trait::async_trait;
use domain::{StoredEvent, SubscriptionEvent};
use sqlx::PgConnection;

use crate::{decode, Projection, ProjectionError};

pub struct SubscriptionsProjection;

#[async_trait]
impl Projection for SubscriptionsProjection {
    fn name(&self) -> &'static str {
        "subscriptions"
    }

    fn wants(&self, aggregate_type: &str) -> bool {
        aggregate_type == "Subscription"
    }

    async fn apply(
        &self,
        tx: &mut PgConnection,
        event: &StoredEvent,
    ) -> Result<(), ProjectionError> {
        match decode::<SubscriptionEvent>(event)? {
            SubscriptionEvent::Subscribed {
                subscription_id,
                project_id,
                chat_id,
                outcomes,
                subscribed_at,
            } => {
                let outcomes: Vec<&str> = outcomes.iter().map(|o| o.as_str()).collect();
                sqlx::query(
                    "INSERT INTO subscriptions (subscription_id, project_id, channel, chat_id, outcomes, active, created_at, version)
                     VALUES ($1, $2, 'telegram', $3, $4, true, $5, $6) ON CONFLICT (subscription_id) DO NOTHING",
                )
                .bind(subscription_id)
                .bind(project_id)
                .bind(chat_id.get())
                .bind(outcomes)
                .bind(subscribed_at)
                .bind(event.sequence)
                .execute(tx)
                .await?;
            }
            SubscriptionEvent::Unsubscribed { unsubscribed_at } => {
                sqlx::query(
                    "UPDATE subscriptions SET active = false, removed_at = $2, version = $3 WHERE subscription_id::text = $1",
                )
                .bind(&event.aggregate_id)
                .bind(unsubscribed_at)
                .bind(event.sequence)
                .execute(tx)
                .await?;
            }
        }
        Ok(())
    }
}
