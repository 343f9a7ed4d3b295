//! The `Notification` aggregate: one decision to tell (or not tell) one subscriber about one build verdict,
//! and every attempt to deliver it.
//!
//! Its id is derived from the verdict and the subscription, so a planner that sees the same verdict twice
//! commands the same aggregate and records nothing new. An attempt is recorded as started *before* the provider
//! is called; a started attempt without an outcome means Herald cannot know whether the message went out, so it is
//! never retried automatically (that would risk a double send) but dead-lettered for an operator to decide.

use chrono::{DateTime, Duration, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::values::ChatId;

/// Where a notification goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "channel", rename_all = "snake_case")]
pub enum Channel {
    Telegram {
        chat_id: ChatId,
        /// The forum topic of a supergroup (`message_thread_id`); absent in events written before topics.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        topic_id: Option<i64>,
    },
    /// A verified email address.
    Email { address: String },
    /// A Firebase Cloud Messaging registration token.
    Fcm { token: String },
    /// A browser's Web Push subscription (RFC 8030 endpoint, RFC 8291 keys).
    WebPush {
        endpoint: String,
        p256dh: String,
        auth: String,
    },
}

impl Channel {
    /// The provider behind the channel: what rate limits, circuit breakers and attempt budgets are kept per.
    pub fn kind(&self) -> ChannelKind {
        match self {
            Self::Telegram { .. } => ChannelKind::Telegram,
            Self::Email { .. } => ChannelKind::Email,
            Self::Fcm { .. } => ChannelKind::Fcm,
            Self::WebPush { .. } => ChannelKind::WebPush,
        }
    }
}

impl ChannelKind {
    /// Whether sending a message a second time is harmless when the first attempt's outcome is unknown: the
    /// channel carries a key by which the recipient's side recognises the copy (email's `Message-ID`, FCM's
    /// collapse key and tag, Web Push's `Topic` and tag). Telegram offers none: a resend is a second message in
    /// the chat, so an attempt whose outcome is unknown is dead-lettered instead, and an operator decides.
    pub fn resend_is_harmless(self) -> bool {
        !matches!(self, Self::Telegram)
    }
}

/// The kinds of [`Channel`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChannelKind {
    Telegram,
    Email,
    Fcm,
    WebPush,
}

impl ChannelKind {
    pub const ALL: [Self; 4] = [Self::Telegram, Self::Email, Self::Fcm, Self::WebPush];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Telegram => "telegram",
            Self::Email => "email",
            Self::Fcm => "fcm",
            Self::WebPush => "web_push",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == raw)
    }
}

/// What a message carries beside its main text, depending on the channel: an email's subject and HTML body, a
/// push notification's title and link, and the earlier message a Telegram notification edits in place.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageDetails {
    /// The email subject, or the push notification's title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// The email's HTML alternative.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub html: Option<String>,
    /// Where a click on a push notification leads (the CI run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    /// The notification whose Telegram message this one replaces with `editMessageText` (a run's "started"
    /// message, updated with its verdict), when that message was delivered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaces: Option<Uuid>,
}

/// An inline button under a message: a label in the subscriber's language and the bot command it runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Button {
    pub text: String,
    /// Telegram's `callback_data`: at most 64 bytes.
    pub data: String,
}

/// What a provider said when it did not deliver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendFailure {
    /// The provider's error code (for Telegram, `error_code`; HTTP status otherwise), if it answered.
    pub code: Option<i64>,
    pub description: String,
    /// Whether trying again later can succeed (429, 5xx, timeouts) or not (blocked, chat not found).
    pub retryable: bool,
    /// The provider's own wait, in seconds (Telegram's `parameters.retry_after`).
    pub retry_after_secs: Option<u64>,
}

/// How long the provider took to answer an attempt, in milliseconds (absent in events written before 1.1).
pub type LatencyMs = Option<u64>;

#[derive(Debug, Clone, PartialEq)]
pub enum NotificationCommand {
    Plan {
        notification_id: Uuid,
        build_run_id: String,
        project_id: Uuid,
        subscription_id: Uuid,
        /// The subscription's version (its last event's sequence) the decision was made with.
        subscription_version: i64,
        /// The template the text was rendered with, `name@version`.
        template: String,
        channel: Channel,
        text: String,
        buttons: Vec<Button>,
        details: MessageDetails,
        at: DateTime<Utc>,
    },
    Suppress {
        notification_id: Uuid,
        build_run_id: String,
        project_id: Uuid,
        subscription_id: Uuid,
        subscription_version: i64,
        /// Machine-readable: `outcome_not_subscribed`, ...
        reason: String,
        at: DateTime<Utc>,
    },
    /// Not now: quiet hours or the digest window. The message waits, summed up in one line, and goes out in
    /// the digest at `until`.
    Hold {
        notification_id: Uuid,
        build_run_id: String,
        project_id: Uuid,
        subscription_id: Uuid,
        subscription_version: i64,
        /// `quiet_hours` or `digest_window`.
        reason: String,
        channel: Channel,
        /// The line this build gets in the digest (Telegram HTML).
        summary: String,
        until: DateTime<Utc>,
        at: DateTime<Utc>,
    },
    /// A held notification went out as part of the digest `digest_id`.
    FoldIntoDigest {
        digest_id: Uuid,
        at: DateTime<Utc>,
    },
    StartAttempt {
        at: DateTime<Utc>,
    },
    RecordDelivered {
        attempt: u32,
        provider_message_id: Option<String>,
        latency_ms: LatencyMs,
        at: DateTime<Utc>,
    },
    RecordFailure {
        attempt: u32,
        failure: SendFailure,
        max_attempts: u32,
        latency_ms: LatencyMs,
        /// A number in `[0, 1)` the caller drew: the retry waits that fraction of the backoff ("full jitter"),
        /// so notifications that failed together do not retry together. Drawn outside so the aggregate stays
        /// deterministic.
        jitter: f64,
        at: DateTime<Utc>,
    },
    /// A worker found an attempt started but never finished (it, or another worker, died mid-call): whether the
    /// provider got the message is unknown. The next attempt goes out with the same idempotency key and is
    /// marked as a possible duplicate.
    RecordInterrupted {
        max_attempts: u32,
        at: DateTime<Utc>,
    },
    /// Stop trying: the outcome of an attempt is unknown, or an operator said so.
    GiveUp {
        reason: String,
        at: DateTime<Utc>,
    },
    /// An operator sends a dead letter again, with a fresh budget of attempts.
    Redrive {
        by: String,
        at: DateTime<Utc>,
    },
    /// An operator decides a dead letter will never be sent.
    Discard {
        by: String,
        reason: String,
        at: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum NotificationEvent {
    NotificationPlanned {
        notification_id: Uuid,
        build_run_id: String,
        project_id: Uuid,
        subscription_id: Uuid,
        /// Absent (0) in events written before it was recorded.
        #[serde(default)]
        subscription_version: i64,
        #[serde(default)]
        template: Option<String>,
        channel: Channel,
        text: String,
        /// Added in 1.2; none before.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        buttons: Vec<Button>,
        /// Added in 1.3; empty before.
        #[serde(default, flatten)]
        details: MessageDetails,
        planned_at: DateTime<Utc>,
    },
    NotificationSuppressed {
        notification_id: Uuid,
        build_run_id: String,
        project_id: Uuid,
        subscription_id: Uuid,
        #[serde(default)]
        subscription_version: i64,
        reason: String,
        suppressed_at: DateTime<Utc>,
    },
    NotificationHeld {
        notification_id: Uuid,
        build_run_id: String,
        project_id: Uuid,
        subscription_id: Uuid,
        subscription_version: i64,
        reason: String,
        channel: Channel,
        summary: String,
        held_until: DateTime<Utc>,
        held_at: DateTime<Utc>,
    },
    FoldedIntoDigest {
        digest_id: Uuid,
        folded_at: DateTime<Utc>,
    },
    AttemptStarted {
        attempt: u32,
        started_at: DateTime<Utc>,
    },
    Delivered {
        attempt: u32,
        provider_message_id: Option<String>,
        /// Added in 1.1.
        #[serde(default)]
        latency_ms: LatencyMs,
        /// An earlier attempt was interrupted after it may have reached the provider: the recipient may have
        /// this message twice. Added in 1.1.
        #[serde(default)]
        possible_duplicate: bool,
        delivered_at: DateTime<Utc>,
    },
    AttemptFailed {
        attempt: u32,
        failure: SendFailure,
        /// Added in 1.1.
        #[serde(default)]
        latency_ms: LatencyMs,
        failed_at: DateTime<Utc>,
        /// When to try again; `None` when this failure ends the notification.
        retry_at: Option<DateTime<Utc>>,
    },
    /// Attempt `attempt` started but its outcome was never recorded.
    AttemptInterrupted {
        attempt: u32,
        detected_at: DateTime<Utc>,
        /// When to try again; `None` when the attempt budget is spent.
        retry_at: Option<DateTime<Utc>>,
    },
    DeadLettered {
        attempts: u32,
        reason: String,
        dead_lettered_at: DateTime<Utc>,
    },
    NotificationRedriven {
        by: String,
        redriven_at: DateTime<Utc>,
    },
    DeadLetterDiscarded {
        by: String,
        reason: String,
        discarded_at: DateTime<Utc>,
    },
}

impl DomainEvent for NotificationEvent {
    fn event_type(&self) -> String {
        match self {
            Self::NotificationPlanned { .. } => "NotificationPlanned",
            Self::NotificationSuppressed { .. } => "NotificationSuppressed",
            Self::NotificationHeld { .. } => "NotificationHeld",
            Self::FoldedIntoDigest { .. } => "FoldedIntoDigest",
            Self::AttemptStarted { .. } => "AttemptStarted",
            Self::Delivered { .. } => "Delivered",
            Self::AttemptFailed { .. } => "AttemptFailed",
            Self::AttemptInterrupted { .. } => "AttemptInterrupted",
            Self::DeadLettered { .. } => "DeadLettered",
            Self::NotificationRedriven { .. } => "NotificationRedriven",
            Self::DeadLetterDiscarded { .. } => "DeadLetterDiscarded",
        }
        .to_owned()
    }
    fn event_version(&self) -> String {
        crate::upcast::current_version(&self.event_type()).to_owned()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotificationError {
    #[error("notification not planned")]
    NotPlanned,
    #[error("notification already finished")]
    Finished,
    #[error("attempt {0} is still in flight")]
    AttemptInFlight(u32),
    #[error("no attempt {0} in flight")]
    NoSuchAttempt(u32),
    #[error("no attempt in flight")]
    NoAttemptInFlight,
    #[error("only a dead-lettered notification can be redriven or discarded")]
    NotDeadLettered,
    #[error(
        "only a held notification is folded into a digest, and a held one is never sent on its own"
    )]
    NotHeld,
}

/// Where a notification ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Settled {
    Suppressed,
    /// Held, then sent as a line of a digest.
    Digested,
    Delivered,
    DeadLettered,
    Discarded,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    pub notification_id: Option<Uuid>,
    #[serde(default)]
    pub build_run_id: String,
    #[serde(default)]
    pub project_id: Option<Uuid>,
    #[serde(default)]
    pub subscription_id: Option<Uuid>,
    pub channel: Option<Channel>,
    pub text: String,
    #[serde(default)]
    pub buttons: Vec<Button>,
    #[serde(default)]
    pub details: MessageDetails,
    /// The provider's id of the delivered message (Telegram's message id: what an edit in place needs).
    #[serde(default)]
    pub provider_message_id: Option<String>,
    /// An attempt was interrupted: the next delivery may be a duplicate.
    #[serde(default)]
    pub possible_duplicate: bool,
    pub attempts: u32,
    pub in_flight: Option<u32>,
    pub settled: Option<Settled>,
    pub retry_at: Option<DateTime<Utc>>,
    /// Held for a digest until then.
    #[serde(default)]
    pub held_until: Option<DateTime<Utc>>,
    /// Attempts made before the last redrive; the attempt budget counts from here.
    pub attempts_before_redrive: u32,
}

impl Notification {
    /// The longest wait between two attempts.
    pub const MAX_BACKOFF_SECS: i64 = 600;

    /// Exponential backoff with full jitter: a ceiling of 2 s doubling per attempt (capped at ten minutes), of
    /// which the retry waits the fraction `jitter` (at least a second). Full jitter spreads the retries of many
    /// notifications that failed together (a provider outage) over the whole window instead of sending them back
    /// in one wave. A provider's own `retry_after` is a floor: waiting less only earns another 429.
    pub fn retry_delay(attempt: u32, retry_after_secs: Option<u64>, jitter: f64) -> Duration {
        let ceiling = 2_i64
            .saturating_pow(attempt.min(20))
            .min(Self::MAX_BACKOFF_SECS);
        let jitter = if jitter.is_finite() {
            jitter.clamp(0.0, 1.0)
        } else {
            1.0
        };
        let backoff_ms = ((ceiling * 1000) as f64 * jitter) as i64;
        let provider = retry_after_secs.map_or(0, |s| i64::try_from(s).unwrap_or(i64::MAX / 2000));
        Duration::milliseconds(backoff_ms.max(1000).max(provider.saturating_mul(1000)))
    }

    /// Has this notification spent its attempts (counted from the last redrive)?
    fn budget_spent(&self, attempt: u32, max_attempts: u32) -> bool {
        attempt.saturating_sub(self.attempts_before_redrive) >= max_attempts
    }

    fn require_open(&self) -> Result<(), NotificationError> {
        match (self.notification_id, self.settled) {
            (None, _) => Err(NotificationError::NotPlanned),
            (_, Some(Settled::Suppressed)) if self.channel.is_none() => {
                Err(NotificationError::NotPlanned)
            }
            (_, Some(_)) => Err(NotificationError::Finished),
            _ => Ok(()),
        }
    }

    fn require_in_flight(&self, attempt: u32) -> Result<(), NotificationError> {
        self.require_open()?;
        if self.in_flight != Some(attempt) {
            return Err(NotificationError::NoSuchAttempt(attempt));
        }
        Ok(())
    }
}

impl Aggregate for Notification {
    const TYPE: &'static str = "Notification";
    type Command = NotificationCommand;
    type Event = NotificationEvent;
    type Error = NotificationError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let events = match command {
            NotificationCommand::Plan {
                notification_id,
                build_run_id,
                project_id,
                subscription_id,
                subscription_version,
                template,
                channel,
                text,
                buttons,
                details,
                at,
            } => {
                if self.notification_id.is_some() {
                    return Ok(());
                }
                vec![NotificationEvent::NotificationPlanned {
                    notification_id,
                    build_run_id,
                    project_id,
                    subscription_id,
                    subscription_version,
                    template: Some(template),
                    channel,
                    text,
                    buttons,
                    details,
                    planned_at: at,
                }]
            }
            NotificationCommand::Suppress {
                notification_id,
                build_run_id,
                project_id,
                subscription_id,
                subscription_version,
                reason,
                at,
            } => {
                if self.notification_id.is_some() {
                    return Ok(());
                }
                vec![NotificationEvent::NotificationSuppressed {
                    notification_id,
                    build_run_id,
                    project_id,
                    subscription_id,
                    subscription_version,
                    reason,
                    suppressed_at: at,
                }]
            }
            NotificationCommand::Hold {
                notification_id,
                build_run_id,
                project_id,
                subscription_id,
                subscription_version,
                reason,
                channel,
                summary,
                until,
                at,
            } => {
                if self.notification_id.is_some() {
                    return Ok(());
                }
                vec![NotificationEvent::NotificationHeld {
                    notification_id,
                    build_run_id,
                    project_id,
                    subscription_id,
                    subscription_version,
                    reason,
                    channel,
                    summary,
                    held_until: until,
                    held_at: at,
                }]
            }
            NotificationCommand::FoldIntoDigest { digest_id, at } => {
                if self.held_until.is_none() {
                    return Err(NotificationError::NotHeld);
                }
                if self.settled == Some(Settled::Digested) {
                    return Ok(());
                }
                vec![NotificationEvent::FoldedIntoDigest {
                    digest_id,
                    folded_at: at,
                }]
            }
            NotificationCommand::StartAttempt { at } => {
                if self.held_until.is_some() {
                    return Err(NotificationError::NotHeld);
                }
                self.require_open()?;
                if let Some(attempt) = self.in_flight {
                    return Err(NotificationError::AttemptInFlight(attempt));
                }
                vec![NotificationEvent::AttemptStarted {
                    attempt: self.attempts + 1,
                    started_at: at,
                }]
            }
            NotificationCommand::RecordDelivered {
                attempt,
                provider_message_id,
                latency_ms,
                at,
            } => {
                self.require_in_flight(attempt)?;
                vec![NotificationEvent::Delivered {
                    attempt,
                    provider_message_id,
                    latency_ms,
                    possible_duplicate: self.possible_duplicate,
                    delivered_at: at,
                }]
            }
            NotificationCommand::RecordInterrupted { max_attempts, at } => {
                self.require_open()?;
                let Some(attempt) = self.in_flight else {
                    return Err(NotificationError::NoAttemptInFlight);
                };
                let resend_is_harmless = self
                    .channel
                    .as_ref()
                    .is_some_and(|c| c.kind().resend_is_harmless());
                let reason = if !resend_is_harmless {
                    Some(format!(
                        "attempt {attempt} was interrupted after the message went to the provider, which may have \
                         delivered it and offers no way to recognise a copy: not resent, so the recipient never \
                         sees it twice (redrive it to send it again)"
                    ))
                } else if self.budget_spent(attempt, max_attempts) {
                    Some(format!(
                        "attempt {attempt} was interrupted before its outcome was recorded, and it was the last"
                    ))
                } else {
                    None
                };
                let mut events = vec![NotificationEvent::AttemptInterrupted {
                    attempt,
                    detected_at: at,
                    retry_at: reason.is_none().then_some(at),
                }];
                if let Some(reason) = reason {
                    events.push(NotificationEvent::DeadLettered {
                        attempts: attempt,
                        reason,
                        dead_lettered_at: at,
                    });
                }
                events
            }
            NotificationCommand::RecordFailure {
                attempt,
                failure,
                max_attempts,
                latency_ms,
                jitter,
                at,
            } => {
                self.require_in_flight(attempt)?;
                let give_up = !failure.retryable || self.budget_spent(attempt, max_attempts);
                let retry_at = (!give_up)
                    .then(|| at + Self::retry_delay(attempt, failure.retry_after_secs, jitter));
                let reason = if failure.retryable {
                    format!("gave up after {attempt} attempts: {}", failure.description)
                } else {
                    format!("permanent failure: {}", failure.description)
                };
                let mut events = vec![NotificationEvent::AttemptFailed {
                    attempt,
                    failure,
                    latency_ms,
                    failed_at: at,
                    retry_at,
                }];
                if give_up {
                    events.push(NotificationEvent::DeadLettered {
                        attempts: attempt,
                        reason,
                        dead_lettered_at: at,
                    });
                }
                events
            }
            NotificationCommand::GiveUp { reason, at } => {
                self.require_open()?;
                vec![NotificationEvent::DeadLettered {
                    attempts: self.attempts,
                    reason,
                    dead_lettered_at: at,
                }]
            }
            NotificationCommand::Redrive { by, at } => {
                if self.settled != Some(Settled::DeadLettered) {
                    return Err(NotificationError::NotDeadLettered);
                }
                vec![NotificationEvent::NotificationRedriven {
                    by,
                    redriven_at: at,
                }]
            }
            NotificationCommand::Discard { by, reason, at } => {
                if self.settled != Some(Settled::DeadLettered) {
                    return Err(NotificationError::NotDeadLettered);
                }
                vec![NotificationEvent::DeadLetterDiscarded {
                    by,
                    reason,
                    discarded_at: at,
                }]
            }
        };
        for event in events {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            NotificationEvent::NotificationPlanned {
                notification_id,
                build_run_id,
                project_id,
                subscription_id,
                channel,
                text,
                buttons,
                details,
                planned_at,
                ..
            } => {
                self.notification_id = Some(notification_id);
                self.build_run_id = build_run_id;
                self.project_id = Some(project_id);
                self.subscription_id = Some(subscription_id);
                self.channel = Some(channel);
                self.text = text;
                self.buttons = buttons;
                self.details = details;
                self.retry_at = Some(planned_at);
            }
            NotificationEvent::NotificationSuppressed {
                notification_id, ..
            } => {
                self.notification_id = Some(notification_id);
                self.settled = Some(Settled::Suppressed);
            }
            NotificationEvent::NotificationHeld {
                notification_id,
                channel,
                held_until,
                ..
            } => {
                self.notification_id = Some(notification_id);
                self.channel = Some(channel);
                self.held_until = Some(held_until);
            }
            NotificationEvent::FoldedIntoDigest { .. } => self.settled = Some(Settled::Digested),
            NotificationEvent::AttemptStarted { attempt, .. } => {
                self.attempts = attempt;
                self.in_flight = Some(attempt);
            }
            NotificationEvent::Delivered {
                provider_message_id,
                ..
            } => {
                self.in_flight = None;
                self.provider_message_id = provider_message_id;
                self.settled = Some(Settled::Delivered);
            }
            NotificationEvent::AttemptFailed { retry_at, .. } => {
                self.in_flight = None;
                self.retry_at = retry_at;
            }
            NotificationEvent::AttemptInterrupted { retry_at, .. } => {
                self.in_flight = None;
                self.retry_at = retry_at;
                self.possible_duplicate = true;
            }
            NotificationEvent::DeadLettered { .. } => {
                self.in_flight = None;
                self.retry_at = None;
                self.settled = Some(Settled::DeadLettered);
            }
            NotificationEvent::NotificationRedriven { redriven_at, .. } => {
                self.settled = None;
                self.in_flight = None;
                self.retry_at = Some(redriven_at);
                self.attempts_before_redrive = self.attempts;
            }
            NotificationEvent::DeadLetterDiscarded { .. } => {
                self.settled = Some(Settled::Discarded)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::test::TestFramework;

    type Given = TestFramework<Notification>;

    fn at() -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000, 0).unwrap()
    }

    fn planned() -> NotificationEvent {
        NotificationEvent::NotificationPlanned {
            notification_id: Uuid::nil(),
            build_run_id: "b".into(),
            project_id: Uuid::nil(),
            subscription_id: Uuid::nil(),
            subscription_version: 1,
            template: Some("telegram_build@1".into()),
            channel: Channel::Telegram {
                chat_id: ChatId::parse(1).unwrap(),
                topic_id: None,
            },
            text: "hi".into(),
            buttons: vec![],
            details: MessageDetails::default(),
            planned_at: at(),
        }
    }

    fn planned_by_email() -> NotificationEvent {
        let NotificationEvent::NotificationPlanned {
            notification_id,
            build_run_id,
            project_id,
            subscription_id,
            subscription_version,
            template,
            text,
            buttons,
            details,
            planned_at,
            ..
        } = planned()
        else {
            unreachable!("planned() plans")
        };
        NotificationEvent::NotificationPlanned {
            notification_id,
            build_run_id,
            project_id,
            subscription_id,
            subscription_version,
            template,
            channel: Channel::Email {
                address: "dev@example.com".into(),
            },
            text,
            buttons,
            details,
            planned_at,
        }
    }

    fn started(attempt: u32) -> NotificationEvent {
        NotificationEvent::AttemptStarted {
            attempt,
            started_at: at(),
        }
    }

    fn failure(retryable: bool, retry_after_secs: Option<u64>) -> SendFailure {
        SendFailure {
            code: Some(429),
            description: "Too Many Requests".into(),
            retryable,
            retry_after_secs,
        }
    }

    #[test]
    fn a_second_attempt_cannot_start_while_one_is_in_flight() {
        Given::with(())
            .given(vec![planned(), started(1)])
            .when(NotificationCommand::StartAttempt { at: at() })
            .then_expect_error(NotificationError::AttemptInFlight(1));
    }

    #[test]
    fn a_delivered_notification_takes_no_more_attempts() {
        Given::with(())
            .given(vec![
                planned(),
                started(1),
                NotificationEvent::Delivered {
                    attempt: 1,
                    provider_message_id: Some("7".into()),
                    latency_ms: Some(12),
                    possible_duplicate: false,
                    delivered_at: at(),
                },
            ])
            .when(NotificationCommand::StartAttempt { at: at() })
            .then_expect_error(NotificationError::Finished);
    }

    #[test]
    fn a_rate_limited_attempt_waits_for_the_providers_retry_after() {
        Given::with(())
            .given(vec![planned(), started(1)])
            .when(NotificationCommand::RecordFailure {
                attempt: 1,
                failure: failure(true, Some(30)),
                max_attempts: 5,
                latency_ms: Some(40),
                jitter: 0.5,
                at: at(),
            })
            .then_expect_events(vec![NotificationEvent::AttemptFailed {
                attempt: 1,
                failure: failure(true, Some(30)),
                latency_ms: Some(40),
                failed_at: at(),
                retry_at: Some(at() + Duration::seconds(30)),
            }]);
    }

    #[test]
    fn a_permanent_failure_dead_letters_at_once() {
        let events = Given::with(())
            .given(vec![planned(), started(1)])
            .when(NotificationCommand::RecordFailure {
                attempt: 1,
                failure: failure(false, None),
                max_attempts: 5,
                latency_ms: None,
                jitter: 0.5,
                at: at(),
            })
            .inspect_result()
            .unwrap();
        assert!(matches!(
            events[1],
            NotificationEvent::DeadLettered { attempts: 1, .. }
        ));
    }

    #[test]
    fn the_last_allowed_attempt_dead_letters() {
        let events = Given::with(())
            .given(vec![planned(), started(1)])
            .when(NotificationCommand::RecordFailure {
                attempt: 1,
                failure: failure(true, None),
                max_attempts: 1,
                latency_ms: None,
                jitter: 0.5,
                at: at(),
            })
            .inspect_result()
            .unwrap();
        assert_eq!(events.len(), 2);
    }

    #[test]
    fn planning_twice_records_once() {
        Given::with(())
            .given(vec![planned()])
            .when(NotificationCommand::Plan {
                notification_id: Uuid::nil(),
                build_run_id: "b".into(),
                project_id: Uuid::nil(),
                subscription_id: Uuid::nil(),
                subscription_version: 1,
                template: "telegram_build@1".into(),
                channel: Channel::Telegram {
                    chat_id: ChatId::parse(1).unwrap(),
                    topic_id: None,
                },
                text: "hi".into(),
                buttons: vec![],
                details: MessageDetails::default(),
                at: at(),
            })
            .then_expect_events(vec![]);
    }

    #[test]
    fn a_suppressed_notification_cannot_be_attempted() {
        Given::with(())
            .given(vec![NotificationEvent::NotificationSuppressed {
                notification_id: Uuid::nil(),
                build_run_id: "b".into(),
                project_id: Uuid::nil(),
                subscription_id: Uuid::nil(),
                subscription_version: 1,
                reason: "outcome_not_subscribed".into(),
                suppressed_at: at(),
            }])
            .when(NotificationCommand::StartAttempt { at: at() })
            .then_expect_error(NotificationError::NotPlanned);
    }

    #[test]
    fn backoff_is_a_jittered_fraction_of_a_doubling_capped_ceiling() {
        let delay = Notification::retry_delay;
        assert_eq!(delay(1, None, 1.0), Duration::seconds(2));
        assert_eq!(delay(3, None, 1.0), Duration::seconds(8));
        assert_eq!(delay(3, None, 0.5), Duration::seconds(4));
        assert_eq!(delay(30, None, 1.0), Duration::seconds(600));
        assert_eq!(delay(30, None, 0.25), Duration::seconds(150));
        assert_eq!(
            delay(3, None, 0.0),
            Duration::seconds(1),
            "never a hot loop"
        );
        assert_eq!(delay(3, None, f64::NAN), Duration::seconds(8));
        assert_eq!(
            delay(1, Some(45), 0.1),
            Duration::seconds(45),
            "the provider's retry_after is a floor"
        );
    }

    #[test]
    fn an_interrupted_attempt_is_retried_and_its_delivery_marked_a_possible_duplicate() {
        let events = Given::with(())
            .given(vec![planned_by_email(), started(1)])
            .when(NotificationCommand::RecordInterrupted {
                max_attempts: 3,
                at: at(),
            })
            .inspect_result()
            .unwrap();
        assert_eq!(
            events,
            vec![NotificationEvent::AttemptInterrupted {
                attempt: 1,
                detected_at: at(),
                retry_at: Some(at()),
            }]
        );
        let mut history = vec![planned_by_email(), started(1)];
        history.extend(events);
        history.push(started(2));
        Given::with(())
            .given(history)
            .when(NotificationCommand::RecordDelivered {
                attempt: 2,
                provider_message_id: Some("9".into()),
                latency_ms: Some(3),
                at: at(),
            })
            .then_expect_events(vec![NotificationEvent::Delivered {
                attempt: 2,
                provider_message_id: Some("9".into()),
                latency_ms: Some(3),
                possible_duplicate: true,
                delivered_at: at(),
            }]);
    }

    #[test]
    fn an_interrupted_telegram_attempt_is_dead_lettered_not_resent() {
        let events = Given::with(())
            .given(vec![planned(), started(1)])
            .when(NotificationCommand::RecordInterrupted {
                max_attempts: 5,
                at: at(),
            })
            .inspect_result()
            .unwrap();
        let [NotificationEvent::AttemptInterrupted { retry_at: None, .. }, NotificationEvent::DeadLettered {
            attempts: 1,
            reason,
            ..
        }] = events.as_slice()
        else {
            panic!("expected interrupted and dead-lettered, got {events:?}");
        };
        assert!(reason.contains("redrive"), "{reason}");
    }

    #[test]
    fn an_interrupted_last_attempt_dead_letters() {
        let events = Given::with(())
            .given(vec![planned_by_email(), started(1)])
            .when(NotificationCommand::RecordInterrupted {
                max_attempts: 1,
                at: at(),
            })
            .inspect_result()
            .unwrap();
        assert!(matches!(
            events.as_slice(),
            [
                NotificationEvent::AttemptInterrupted { retry_at: None, .. },
                NotificationEvent::DeadLettered { attempts: 1, .. }
            ]
        ));
        Given::with(())
            .given(vec![planned()])
            .when(NotificationCommand::RecordInterrupted {
                max_attempts: 1,
                at: at(),
            })
            .then_expect_error(NotificationError::NoAttemptInFlight);
    }

    #[test]
    fn old_planned_events_read_with_empty_details() {
        let old = serde_json::json!({"NotificationPlanned": {
            "notification_id": Uuid::nil(), "build_run_id": "b", "project_id": Uuid::nil(),
            "subscription_id": Uuid::nil(), "subscription_version": 1, "template": null,
            "channel": {"channel": "telegram", "chat_id": 1}, "text": "hi", "planned_at": at()
        }});
        let event: NotificationEvent = serde_json::from_value(old).unwrap();
        assert!(matches!(
            event,
            NotificationEvent::NotificationPlanned { details, .. } if details == MessageDetails::default()
        ));
        let email = NotificationEvent::NotificationPlanned {
            notification_id: Uuid::nil(),
            build_run_id: "b".into(),
            project_id: Uuid::nil(),
            subscription_id: Uuid::nil(),
            subscription_version: 1,
            template: None,
            channel: Channel::Email {
                address: "a@example.com".into(),
            },
            text: "plain".into(),
            buttons: vec![],
            details: MessageDetails {
                subject: Some("s".into()),
                html: Some("<p>h</p>".into()),
                link: None,
                replaces: None,
            },
            planned_at: at(),
        };
        let round_trip: NotificationEvent =
            serde_json::from_value(serde_json::to_value(&email).unwrap()).unwrap();
        assert_eq!(round_trip, email);
    }

    fn dead_lettered() -> Vec<NotificationEvent> {
        vec![
            planned(),
            started(1),
            NotificationEvent::DeadLettered {
                attempts: 1,
                reason: "outcome unknown".into(),
                dead_lettered_at: at(),
            },
        ]
    }

    #[test]
    fn a_redriven_dead_letter_gets_a_fresh_attempt_budget() {
        let redriven = NotificationEvent::NotificationRedriven {
            by: "ops".into(),
            redriven_at: at(),
        };
        Given::with(())
            .given(dead_lettered())
            .when(NotificationCommand::Redrive {
                by: "ops".into(),
                at: at(),
            })
            .then_expect_events(vec![redriven.clone()]);
        let mut events = dead_lettered();
        events.extend([redriven, started(2)]);
        // attempt 2 is the first of the new budget: with max_attempts 2 it is retried, not dead-lettered.
        let result = Given::with(())
            .given(events)
            .when(NotificationCommand::RecordFailure {
                attempt: 2,
                failure: failure(true, None),
                max_attempts: 2,
                latency_ms: None,
                jitter: 0.5,
                at: at(),
            })
            .inspect_result()
            .unwrap();
        assert_eq!(result.len(), 1);
    }

    #[test]
    fn only_dead_letters_are_redriven_or_discarded() {
        Given::with(())
            .given(vec![planned()])
            .when(NotificationCommand::Redrive {
                by: "ops".into(),
                at: at(),
            })
            .then_expect_error(NotificationError::NotDeadLettered);
        let mut discarded = dead_lettered();
        discarded.push(NotificationEvent::DeadLetterDiscarded {
            by: "ops".into(),
            reason: "stale".into(),
            discarded_at: at(),
        });
        Given::with(())
            .given(discarded)
            .when(NotificationCommand::Discard {
                by: "ops".into(),
                reason: "again".into(),
                at: at(),
            })
            .then_expect_error(NotificationError::NotDeadLettered);
    }
}
