//! The notification planner (a process manager): for every build verdict (and every start, for subscriptions
//! that asked for starts), one decision per subscription, recorded as a `Notification` event: planned (with
//! the rendered text and buttons) or suppressed (with the reason).
//!
//! The notification id is derived from the build event and the subscription, so handling the same event
//! twice commands the same aggregates and records nothing new.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::Utc;
use commands::planning::{decide, ContactFacts, Decision, Recipient};
use commands::template::MessageRenderer;
use commands::{Commands, Metadata};
use domain::{
    BuildRunEvent, Button, Channel, ChatId, ContactAddress, Language, NotificationCommand,
    OutcomeFilter, Preferences, QuietHours, RunFacts, RunInfo, StoredEvent, TimeZone,
};
use projections::queries::{self, PlannerSubscription};
use uuid::Uuid;

use crate::bot::command::callback_data;
use crate::bot::i18n::{button_label, Button as ButtonKind};
use crate::consumer::{EventHandler, HandlerError};

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

    async fn recipient(
        &self,
        s: &PlannerSubscription,
        project_id: Uuid,
    ) -> Result<Recipient, HandlerError> {
        let pool = self.commands.pool();
        let last_planned = if s.filter.min_interval_secs > 0 {
            queries::last_planned(pool, s.subscription_id).await?
        } else {
            None
        };
        let preferences = s.subscriber_id.map(|_| Preferences {
            time_zone: s
                .time_zone
                .as_deref()
                .and_then(|tz| TimeZone::parse(tz).ok())
                .unwrap_or_default(),
            language: s
                .language
                .as_deref()
                .and_then(Language::from_tag)
                .unwrap_or_default(),
            quiet_hours: s
                .quiet_start
                .zip(s.quiet_end)
                .map(|(start, end)| QuietHours { start, end }),
            digest_minutes: s.digest_minutes.and_then(|m| u32::try_from(m).ok()),
        });
        let last_planned_for_project = match preferences.as_ref().and_then(|p| p.digest_minutes) {
            Some(_) => {
                queries::last_planned_for_project(pool, s.subscription_id, project_id).await?
            }
            None => None,
        };
        Ok(Recipient {
            contact: s.contact_id.map(|_| ContactFacts {
                address: s.contact_address.as_ref().map(|a| a.0.clone()),
                removed: s.contact_removed.unwrap_or(true),
                verified: s.contact_verified.unwrap_or(false),
                enabled: s.contact_enabled.unwrap_or(false),
            }),
            muted: s.muted.unwrap_or(false),
            muted_until: s.muted_until,
            last_planned,
            preferences,
            last_planned_for_project,
        })
    }

    /// Mute and subscribe buttons in the subscriber's language.
    fn buttons(run: &RunInfo, language: Language) -> Vec<Button> {
        let project = run.project_id.to_string();
        [ButtonKind::Mute1h, ButtonKind::Subscribe]
            .into_iter()
            .filter_map(|kind| {
                Some(Button {
                    text: button_label(kind, language),
                    data: callback_data(&kind.command(&project))?,
                })
            })
            .collect()
    }
}

/// Where a subscription's messages go, when that is a Telegram chat.
fn telegram_channel(s: &PlannerSubscription) -> Option<Channel> {
    match (&s.contact_address, s.chat_id) {
        (
            Some(sqlx::types::Json(ContactAddress::Telegram {
                chat_id, topic_id, ..
            })),
            _,
        ) => Some(Channel::Telegram {
            chat_id: *chat_id,
            topic_id: *topic_id,
        }),
        (None, Some(chat_id)) => ChatId::parse(chat_id)
            .ok()
            .map(|chat_id| Channel::Telegram {
                chat_id,
                topic_id: None,
            }),
        _ => None,
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
        let (run, verdict) = match &build {
            BuildRunEvent::BuildStarted { run, .. } => (run, None),
            other => match other.verdict() {
                Some((run, verdict)) => (run, Some(verdict)),
                None => return Ok(()),
            },
        };
        let subscriptions =
            queries::active_subscriptions(self.commands.pool(), run.project_id, &run.repository)
                .await?;
        let facts = RunFacts {
            project_id: run.project_id,
            repository: &run.repository,
            branch: run.branch.as_deref(),
            workflow: &run.workflow,
            verdict: verdict.map(|v| (v.outcome, v.transition)),
        };
        let mut metadata = Metadata::new();
        metadata.insert(
            "caused_by".into(),
            format!("{}#{}", event.aggregate_id, event.sequence),
        );
        // Rendered on the first subscriber who gets a message, then shared.
        let mut text: Option<String> = None;
        for subscription in subscriptions {
            // A start is news only to those who asked for starts; nobody else gets a decision recorded.
            if verdict.is_none()
                && !subscription
                    .filter
                    .outcomes
                    .contains(&OutcomeFilter::Started)
            {
                continue;
            }
            let notification_id = Self::notification_id(event, subscription.subscription_id);
            let recipient = self.recipient(&subscription, run.project_id).await?;
            let channel = telegram_channel(&subscription);
            if channel.is_none() && subscription.contact_id.is_none() {
                tracing::error!(subscription = %subscription.subscription_id, "subscription has no valid chat");
                continue;
            }
            let decision = decide(&subscription.filter, &facts, &recipient, Utc::now());
            let command = match (decision, channel) {
                (Decision::Send, Some(channel)) => {
                    let text = match (&text, verdict) {
                        (Some(text), _) => text.clone(),
                        (None, Some(verdict)) => text
                            .insert(
                                self.renderer
                                    .telegram_build(run, verdict)
                                    .map_err(HandlerError::permanent)?,
                            )
                            .clone(),
                        (None, None) => text.insert(self.renderer.telegram_started(run)).clone(),
                    };
                    let language = subscription
                        .language
                        .as_deref()
                        .and_then(Language::from_tag)
                        .unwrap_or_default();
                    NotificationCommand::Plan {
                        notification_id,
                        build_run_id: event.aggregate_id.clone(),
                        project_id: run.project_id,
                        subscription_id: subscription.subscription_id,
                        subscription_version: subscription.version,
                        template: if verdict.is_some() {
                            MessageRenderer::TELEGRAM_BUILD
                        } else {
                            MessageRenderer::TELEGRAM_STARTED
                        }
                        .to_owned(),
                        channel,
                        text,
                        buttons: Self::buttons(run, language),
                        at: Utc::now(),
                    }
                }
                (Decision::Hold { reason, until }, Some(channel)) => NotificationCommand::Hold {
                    notification_id,
                    build_run_id: event.aggregate_id.clone(),
                    project_id: run.project_id,
                    subscription_id: subscription.subscription_id,
                    subscription_version: subscription.version,
                    reason: reason.to_owned(),
                    channel,
                    summary: MessageRenderer::telegram_summary(run, verdict),
                    until,
                    at: Utc::now(),
                },
                (decision, _) => NotificationCommand::Suppress {
                    notification_id,
                    build_run_id: event.aggregate_id.clone(),
                    project_id: run.project_id,
                    subscription_id: subscription.subscription_id,
                    subscription_version: subscription.version,
                    reason: match decision {
                        Decision::Suppress { reason } => reason,
                        Decision::Send | Decision::Hold { .. } => {
                            commands::planning::CHANNEL_UNAVAILABLE
                        }
                    }
                    .to_owned(),
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
