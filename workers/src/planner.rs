//! The notification planner (a process manager): for every build verdict (and every start, for subscriptions
//! that asked for starts), one decision per subscription, recorded as a `Notification` event: planned (with
//! the rendered text and buttons) or suppressed (with the reason).
//!
//! The notification id is derived from the build event and the subscription, so handling the same event
//! twice commands the same aggregates and records nothing new.
//!
//! Each message is rendered for its channel (Telegram HTML, an email's subject, text and HTML, a push
//! notification's title and body) in its subscriber's language, once per event and channel and language.
//! A contact reached through two overlapping subscriptions gets the news once: the second decision is
//! `duplicate`. With `edit_in_place`, a verdict names the run's "started" message it replaces, and delivery
//! edits that message instead of sending a second one.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use async_trait::async_trait;
use chrono::Utc;
use commands::planning::{decide, ContactFacts, Decision, Recipient};
use commands::template::{BuildContext, MessageRenderer};
use commands::templates::Templates;
use commands::{Batched, Commands, Metadata};
use domain::{
    BuildRunEvent, Button, Channel, ChannelKind, ChatId, ContactAddress, Language, MessageDetails,
    NotificationCommand, OutcomeFilter, Preferences, QuietHours, RunFacts, RunInfo, StoredEvent,
    TimeZone, Verdict,
};
use domain::{TemplateChannel, TemplateKind};
use projections::queries::{self, PlannerSubscription};
use uuid::Uuid;

use crate::bot::command::callback_data;
use crate::bot::i18n::{button_label, Button as ButtonKind};
use crate::consumer::{EventHandler, HandlerError};

/// Namespace for notification ids (UUIDv5 over "build_run_id#sequence/subscription_id").
const NOTIFICATION_NAMESPACE: Uuid = Uuid::from_u128(0x6865_7261_6c64_4e6f_7469_6669_6361_7469);

pub struct Planner {
    commands: Arc<Commands>,
    templates: Templates,
    /// The channels this Herald has a provider for; a contact on any other is `channel_unavailable`.
    channels: BTreeSet<ChannelKind>,
}

/// A message rendered for one channel and language.
#[derive(Clone)]
struct Message {
    template: String,
    text: String,
    details: MessageDetails,
}

impl Planner {
    pub fn new(commands: Arc<Commands>, channels: BTreeSet<ChannelKind>) -> Self {
        Self {
            templates: Templates::new(commands.pool().clone()),
            commands,
            channels,
        }
    }

    pub fn notification_id(event: &StoredEvent, subscription_id: Uuid) -> Uuid {
        Self::notification_id_at(&event.aggregate_id, event.sequence, subscription_id)
    }

    fn notification_id_at(build_run_id: &str, sequence: i64, subscription_id: Uuid) -> Uuid {
        let name = format!("{build_run_id}#{sequence}/{subscription_id}");
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
            edit_in_place: s.edit_in_place.unwrap_or(false),
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
                channel_available: s
                    .contact_address
                    .as_ref()
                    .and_then(|a| channel_of(&a.0))
                    .is_some_and(|c| self.channels.contains(&c.kind())),
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

/// Where messages to a contact go.
fn channel_of(address: &ContactAddress) -> Option<Channel> {
    Some(match address {
        ContactAddress::Telegram {
            chat_id, topic_id, ..
        } => Channel::Telegram {
            chat_id: *chat_id,
            topic_id: *topic_id,
        },
        ContactAddress::Email { address } => Channel::Email {
            address: address.clone(),
        },
        ContactAddress::Fcm { token } => Channel::Fcm {
            token: token.clone(),
        },
        ContactAddress::WebPush {
            endpoint,
            p256dh,
            auth,
        } => Channel::WebPush {
            endpoint: endpoint.clone(),
            p256dh: p256dh.clone(),
            auth: auth.clone(),
        },
    })
}

/// Where a subscription's messages go: its contact, or its bare chat.
fn subscription_channel(s: &PlannerSubscription) -> Option<Channel> {
    match (&s.contact_address, s.chat_id) {
        (Some(address), _) => channel_of(&address.0),
        (None, Some(chat_id)) => ChatId::parse(chat_id)
            .ok()
            .map(|chat_id| Channel::Telegram {
                chat_id,
                topic_id: None,
            }),
        _ => None,
    }
}

impl Planner {
    /// The message for one channel and language, from the current version of its template.
    async fn render(
        &self,
        kind: ChannelKind,
        run: &RunInfo,
        verdict: Option<&Verdict>,
        language: Language,
    ) -> Result<Message, HandlerError> {
        let template_kind = match verdict {
            Some(_) => TemplateKind::BuildFinished,
            None => TemplateKind::BuildStarted,
        };
        let channel = match kind {
            ChannelKind::Telegram => TemplateChannel::Telegram,
            ChannelKind::Email => TemplateChannel::Email,
            ChannelKind::Fcm | ChannelKind::WebPush => TemplateChannel::Push,
        };
        let context = BuildContext::new(run, verdict, language);
        let rendered = self
            .templates
            .render(template_kind, channel, language, &context)
            .await
            .map_err(|e| {
                if e.is_transient() {
                    HandlerError::transient(e)
                } else {
                    HandlerError::permanent(e)
                }
            })?;
        Ok(Message {
            template: rendered.template,
            text: rendered.text,
            details: MessageDetails {
                subject: rendered.subject,
                html: rendered.html,
                link: (channel == TemplateChannel::Push)
                    .then(|| run.url.clone())
                    .flatten(),
                replaces: None,
            },
        })
    }

    /// The sequence of the run's latest `BuildStarted`: its "started" notifications are the ones a verdict
    /// edits in place.
    async fn started_sequence(&self, build_run_id: &str) -> Result<Option<i64>, HandlerError> {
        Ok(sqlx::query_scalar(
            "SELECT max(sequence) FROM events
              WHERE aggregate_type = 'BuildRun' AND aggregate_id = $1 AND event_type = 'BuildStarted'",
        )
        .bind(build_run_id)
        .fetch_one(self.commands.pool())
        .await?)
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
        // Rendered once per channel and language, then shared.
        let mut rendered: HashMap<(ChannelKind, Language), Message> = HashMap::new();
        // Who already has this news, through an earlier subscription.
        let mut reached: Vec<Channel> = Vec::new();
        // Looked up once, for the first subscriber who wants verdicts edited in place.
        let mut started_sequence: Option<Option<i64>> = None;
        let mut decisions = Vec::new();
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
            let channel = subscription_channel(&subscription);
            if channel.is_none() && subscription.contact_id.is_none() {
                tracing::error!(subscription = %subscription.subscription_id, "subscription has no valid chat");
                continue;
            }
            let mut decision = decide(&subscription.filter, &facts, &recipient, Utc::now());
            if let (Decision::Send | Decision::Hold { .. }, Some(channel)) = (&decision, &channel) {
                if reached.contains(channel) {
                    decision = Decision::Suppress {
                        reason: commands::planning::DUPLICATE,
                    };
                } else {
                    reached.push(channel.clone());
                }
            }
            let language = subscription
                .language
                .as_deref()
                .and_then(Language::from_tag)
                .unwrap_or_default();
            let command = match (decision, channel) {
                (Decision::Send, Some(channel)) => {
                    let key = (channel.kind(), language);
                    let message = match rendered.get(&key) {
                        Some(message) => message.clone(),
                        None => {
                            let message =
                                self.render(channel.kind(), run, verdict, language).await?;
                            rendered.insert(key, message.clone());
                            message
                        }
                    };
                    let mut details = message.details;
                    let edit = recipient
                        .preferences
                        .as_ref()
                        .is_some_and(|p| p.edit_in_place);
                    if edit && verdict.is_some() && channel.kind() == ChannelKind::Telegram {
                        let sequence = match started_sequence {
                            Some(sequence) => sequence,
                            None => *started_sequence
                                .insert(self.started_sequence(&event.aggregate_id).await?),
                        };
                        details.replaces = sequence.map(|sequence| {
                            Self::notification_id_at(
                                &event.aggregate_id,
                                sequence,
                                subscription.subscription_id,
                            )
                        });
                    }
                    NotificationCommand::Plan {
                        notification_id,
                        build_run_id: event.aggregate_id.clone(),
                        project_id: run.project_id,
                        subscription_id: subscription.subscription_id,
                        subscription_version: subscription.version,
                        template: message.template,
                        buttons: if channel.kind() == ChannelKind::Telegram {
                            Self::buttons(run, language)
                        } else {
                            Vec::new()
                        },
                        channel,
                        text: message.text,
                        details,
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
            decisions.push(Batched {
                id: notification_id.to_string(),
                command,
                metadata: metadata.clone(),
            });
        }
        // Recorded a few hundred decisions to a statement: a run watched by thousands of chats is a handful
        // of commits, not thousands. A failure fails the event, and handling it again records only what is
        // still missing (the notification ids are the same).
        for chunk in decisions.chunks(PLAN_BATCH) {
            for result in self.commands.notifications().execute_many(chunk).await {
                result?;
            }
        }
        Ok(())
    }
}

/// Decisions recorded in one statement.
const PLAN_BATCH: usize = 500;

/// Telegram HTML as plain text: tags dropped, the four entities Herald writes turned back into characters.
pub(crate) fn plain_text(html: &str) -> String {
    crate::telegram::strip_tags(html)
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_drops_tags_and_unescapes_once() {
        assert_eq!(
            plain_text("<b>a &amp;lt; b</b> <a href=\"x\">run</a> &quot;q&quot; &lt;i&gt;"),
            "a &lt; b run \"q\" <i>"
        );
    }
}
