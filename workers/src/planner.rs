//! The notification planner (a process manager): for every build verdict, one decision per subscriber,
//! recorded as a `Notification` event: planned (with the rendered text) or suppressed (with the reason).
//!
//! The notification id is derived from the verdict event and the subscription, so handling the same verdict
//! twice commands the same aggregates and records nothing new.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::Utc;
use commands::{Commands, Metadata};
use domain::{BuildRunEvent, Channel, ChatId, NotificationCommand, OutcomeFilter, StoredEvent};
use projections::queries;
use uuid::Uuid;

use crate::consumer::{EventHandler, HandlerError};
use commands::planning::{decide, Decision};
use commands::template::MessageRenderer;

/// Namespace for notification ids (UUIDv5 over "build_run_id#sequence/subscription_id").
const NOTIFICATION_NAMESPACE: Uuid = Uuid::from_u128(0x6865_7261_6c64_4e6f_7469_6669_6361_7469);

pub struct Planner {
    commands: Arc<Commands>,
    renderer: MessageRenderer,
}

impl Planner {
    pub fn new(commands: Arc<Commands>) -> Self {
        Self {
            commands,
            renderer: MessageRenderer::new(),
        }
    }

    pub fn notification_id(event: &StoredEvent, subscription_id: Uuid) -> Uuid {
        let name = format!(
            "{}#{}/{}",
            event.aggregate_id, event.sequence, subscription_id
        );
        Uuid::new_v5(&NOTIFICATION_NAMESPACE, name.as_bytes())
    }
}

#[async_trait]
impl EventHandler for Planner {
    fn group(&self) -> &'static str {
        "planner"
    }

    async fn handle(&self, event: &StoredEvent) -> Result<(), HandlerError> {
        if event.aggregate_type != "BuildRun" {
            return Ok(());
        }
        let build: BuildRunEvent = event.decode().map_err(HandlerError::permanent)?;
        let Some((run, verdict)) = build.verdict() else {
            return Ok(());
        };
        let subscriptions =
            queries::active_subscriptions(self.commands.pool(), run.project_id).await?;
        if subscriptions.is_empty() {
            return Ok(());
        }
        let mut metadata = Metadata::new();
        metadata.insert(
            "caused_by".into(),
            format!("{}#{}", event.aggregate_id, event.sequence),
        );
        // Rendered on the first subscriber who gets a message, then shared.
        let mut text: Option<String> = None;
        for subscription in subscriptions {
            let notification_id = Self::notification_id(event, subscription.subscription_id);
            let filters: Vec<OutcomeFilter> = subscription
                .outcomes
                .iter()
                .filter_map(|o| o.parse::<OutcomeFilter>().ok())
                .collect();
            let chat_id = match ChatId::parse(subscription.chat_id) {
                Ok(chat_id) => chat_id,
                Err(e) => {
                    tracing::error!(subscription = %subscription.subscription_id, error = %e, "subscription has an invalid chat id");
                    continue;
                }
            };
            let command = match decide(&filters, verdict) {
                Decision::Send => NotificationCommand::Plan {
                    notification_id,
                    build_run_id: event.aggregate_id.clone(),
                    project_id: run.project_id,
                    subscription_id: subscription.subscription_id,
                    subscription_version: subscription.version,
                    template: MessageRenderer::TELEGRAM_BUILD.to_owned(),
                    channel: Channel::Telegram { chat_id },
                    text: match &text {
                        Some(text) => text.clone(),
                        None => text
                            .insert(
                                self.renderer
                                    .telegram_build(run, verdict)
                                    .map_err(HandlerError::permanent)?,
                            )
                            .clone(),
                    },
                    at: Utc::now(),
                },
                Decision::Suppress { reason } => NotificationCommand::Suppress {
                    notification_id,
                    build_run_id: event.aggregate_id.clone(),
                    project_id: run.project_id,
                    subscription_id: subscription.subscription_id,
                    subscription_version: subscription.version,
                    reason: reason.to_owned(),
                    at: Utc::now(),
                },
            };
            self.commands
                .notifications()
                .execute(&notification_id.to_string(), command, &metadata)
                .await?;
        }
        Ok(())
    }
}
