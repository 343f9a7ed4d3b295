//! `subscriptions`: which contact (or bare chat) wants to hear about which builds; read by the notification
//! planner and the bot.

use async_trait::async_trait;
use domain::{ProjectScope, StoredEvent, SubscriptionEvent, SubscriptionTarget};
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
                target,
                filter,
                subscribed_at,
            } => {
                let (subscriber_id, contact_id, chat_id) = match &target {
                    SubscriptionTarget::Contact {
                        subscriber_id,
                        contact_id,
                    } => (Some(*subscriber_id), Some(*contact_id), None),
                    SubscriptionTarget::Chat { chat_id } => (None, None, Some(chat_id.get())),
                };
                let (project_ids, owner) = match &filter.scope {
                    ProjectScope::Projects(ids) => (ids.clone(), None),
                    ProjectScope::Owner(owner) => (Vec::new(), Some(owner.as_str())),
                };
                let globs = |g: &[domain::Glob]| {
                    g.iter().map(|g| g.as_str().to_owned()).collect::<Vec<_>>()
                };
                let outcomes: Vec<&str> = filter.outcomes.iter().map(|o| o.as_str()).collect();
                // A subscription taken out again after it was removed reuses its row.
                sqlx::query(
                    "INSERT INTO subscriptions (subscription_id, project_id, channel, chat_id, outcomes, active, created_at,
                                                version, subscriber_id, contact_id, project_ids, owner, branches,
                                                exclude_branches, workflows, min_interval_secs, filter)
                     VALUES ($1, $2, CASE WHEN $3::bigint IS NULL THEN 'contact' ELSE 'telegram' END, $3, $4, true, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
                     ON CONFLICT (subscription_id) DO UPDATE
                        SET active = true, removed_at = NULL, created_at = EXCLUDED.created_at, version = EXCLUDED.version",
                )
                .bind(subscription_id)
                .bind((project_ids.len() == 1).then(|| project_ids[0]))
                .bind(chat_id)
                .bind(outcomes)
                .bind(subscribed_at)
                .bind(event.sequence)
                .bind(subscriber_id)
                .bind(contact_id)
                .bind(&project_ids)
                .bind(owner)
                .bind(globs(&filter.branches))
                .bind(globs(&filter.exclude_branches))
                .bind(globs(&filter.workflows))
                .bind(filter.min_interval_secs as i32)
                .bind(sqlx::types::Json(&filter))
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
