//! Delivery: the queue of notifications to send, and the workers that send them through Telegram, email, FCM
//! and Web Push, recording every attempt (with the provider's answer and latency) as events on the
//! `Notification` aggregate.
//!
//! **The queue.** One row per notification still to send (`delivery_queue`), filled idempotently from
//! `NotificationPlanned` and `NotificationRedriven`, claimed with `FOR UPDATE SKIP LOCKED` and held locked for the
//! whole attempt, so any number of workers (tasks or processes) never send one notification at the same time.
//! A retry is the row's `next_attempt_at` moved forward together with the `AttemptFailed` event that says when:
//! scheduled retries are data, so they survive a restart.
//!
//! **Waiting is not failing.** A channel whose circuit breaker is open, a channel this process has no
//! provider for (no bot token yet, no SMTP server) and a Telegram chat at its rate limit are left out of the
//! claim: their messages wait, and no attempt is spent on them.
//!
//! **Exactly-once effects, per channel** (see docs/delivery.md). An attempt is recorded as started before the
//! provider is called. A worker that finds a started attempt without an outcome (its predecessor died
//! mid-call) cannot know whether the provider took the message; none of the four providers offers an
//! idempotency key that would make a resend safe, so Herald records `AttemptInterrupted` and, where the channel
//! has a key its recipients' side does honour, resends with it and marks the delivery `possible_duplicate`:
//! - email: the same `Message-ID` (`<notification-id@domain>`), by which mail stores and clients recognise a copy;
//! - FCM: the same collapse key and notification tag: the device replaces the first with the second;
//! - Web Push: the same `Topic` (the push service replaces an undelivered copy) and notification tag;
//! - Telegram: no key exists, and a second message in a chat cannot be taken back: the notification is
//!   dead-lettered instead (`ChannelKind::resend_is_harmless`), and an operator redrives it knowingly.

mod send;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::Utc;
use commands::{CommandError, Commands, Metadata};
use domain::{ChannelKind, NotificationCommand, NotificationEvent, StoredEvent};
use rand::Rng;
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use crate::breaker::{Breaker, BreakerSettings};
use crate::consumer::{EventHandler, HandlerError};
use crate::rate_limit::{TelegramLimiter, TelegramLimits};
pub use send::Providers;
use send::{Refusal, Sent};

/// Fills the delivery queue from `NotificationPlanned` and `NotificationRedriven` events.
pub struct DeliveryEnqueuer {
    pool: PgPool,
    wake: Arc<Notify>,
}

impl DeliveryEnqueuer {
    pub fn new(pool: PgPool, wake: Arc<Notify>) -> Self {
        Self { pool, wake }
    }
}

#[async_trait]
impl EventHandler for DeliveryEnqueuer {
    fn group(&self) -> &'static str {
        "delivery"
    }

    async fn handle(&self, event: &StoredEvent) -> Result<(), HandlerError> {
        if event.aggregate_type != "Notification" {
            return Ok(());
        }
        let trace_id = event.metadata.get("trace_id").and_then(|t| t.as_str());
        match event.decode().map_err(HandlerError::permanent)? {
            NotificationEvent::NotificationPlanned {
                notification_id,
                planned_at,
                channel,
                ..
            } => {
                let chat_id = match channel {
                    domain::Channel::Telegram { chat_id, .. } => Some(chat_id.get()),
                    _ => None,
                };
                sqlx::query(
                    "INSERT INTO delivery_queue (notification_id, next_attempt_at, trace_id, channel, chat_id)
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (notification_id) DO NOTHING",
                )
                .bind(notification_id)
                .bind(planned_at)
                .bind(trace_id)
                .bind(channel.kind().as_str())
                .bind(chat_id)
                .execute(&self.pool)
                .await?;
            }
            NotificationEvent::NotificationRedriven { redriven_at, .. } => {
                // The channel is the planned one: read it from the notification's first event.
                sqlx::query(
                    "INSERT INTO delivery_queue (notification_id, next_attempt_at, trace_id, channel, chat_id)
                     SELECT $1::uuid, $2, $3, p.body->'channel'->>'channel', (p.body->'channel'->>'chat_id')::bigint
                       FROM (SELECT payload::jsonb->'NotificationPlanned' AS body FROM events
                              WHERE aggregate_type = 'Notification' AND aggregate_id = $1::text
                                AND event_type = 'NotificationPlanned') p
                     ON CONFLICT (notification_id) DO NOTHING",
                )
                .bind(
                    event
                        .aggregate_id
                        .parse::<Uuid>()
                        .map_err(HandlerError::permanent)?,
                )
                .bind(redriven_at)
                .bind(trace_id)
                .execute(&self.pool)
                .await?;
            }
            _ => return Ok(()),
        }
        self.wake.notify_one();
        Ok(())
    }
}

/// What one turn of a delivery worker did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// Nothing is due (that may go out now).
    Idle,
    Delivered,
    RetryScheduled,
    DeadLettered,
    /// A started attempt without an outcome was found and recorded; the resend follows.
    Interrupted,
    /// The notification was already settled (a redelivered event re-queued it).
    AlreadySettled,
    /// The claimed message's chat is at its rate limit, or its channel's breaker refused: it waits.
    Deferred,
}

#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Command(#[from] CommandError),
}

/// How deliveries behave; the defaults match the providers' documented limits.
#[derive(Debug, Clone)]
pub struct DeliverySettings {
    /// Attempts per notification before it is dead-lettered, per channel.
    pub max_attempts: HashMap<ChannelKind, u32>,
    /// Attempts when a channel has no entry in `max_attempts`.
    pub default_max_attempts: u32,
    /// Notifications in flight at once in this process.
    pub concurrency: usize,
    pub telegram_limits: TelegramLimits,
    pub breaker: BreakerSettings,
}

impl Default for DeliverySettings {
    fn default() -> Self {
        Self {
            max_attempts: HashMap::new(),
            default_max_attempts: 5,
            concurrency: 8,
            telegram_limits: TelegramLimits::default(),
            breaker: BreakerSettings::default(),
        }
    }
}

impl DeliverySettings {
    pub fn max_attempts(&self, kind: ChannelKind) -> u32 {
        self.max_attempts
            .get(&kind)
            .copied()
            .unwrap_or(self.default_max_attempts)
            .max(1)
    }
}

/// The delivery workers of one process: `concurrency` tasks sharing the providers, breakers and rate limits.
pub struct DeliveryWorker {
    pool: PgPool,
    commands: Arc<Commands>,
    providers: Providers,
    settings: DeliverySettings,
    wake: Arc<Notify>,
    breakers: HashMap<ChannelKind, Arc<Breaker>>,
    /// Telegram chats at their rate limit, and until when: left out of the claim.
    busy_chats: Mutex<HashMap<i64, Instant>>,
}

impl DeliveryWorker {
    pub fn new(
        commands: Arc<Commands>,
        mut providers: Providers,
        settings: DeliverySettings,
        wake: Arc<Notify>,
    ) -> Self {
        providers.limiter = Some(TelegramLimiter::new(settings.telegram_limits));
        let breakers = ChannelKind::ALL
            .into_iter()
            .map(|kind| {
                (
                    kind,
                    Arc::new(Breaker::new(kind.as_str(), settings.breaker)),
                )
            })
            .collect();
        Self {
            pool: commands.pool().clone(),
            commands,
            providers,
            settings,
            wake,
            breakers,
            busy_chats: Mutex::default(),
        }
    }

    /// The breakers, one per channel (for `herald status` and the operations endpoint).
    pub fn breakers(&self) -> Vec<Arc<Breaker>> {
        ChannelKind::ALL
            .iter()
            .filter_map(|k| self.breakers.get(k).cloned())
            .collect()
    }

    fn breaker(&self, kind: ChannelKind) -> &Breaker {
        &self.breakers[&kind]
    }

    /// Chats still at their limit (and forget those that are not).
    fn busy_chats(&self) -> Vec<i64> {
        let mut busy = self.busy_chats.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        busy.retain(|_, until| *until > now);
        busy.keys().copied().collect()
    }

    fn mark_busy(&self, chat_id: i64, wait: Duration) {
        self.busy_chats
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(chat_id, Instant::now() + wait);
    }

    /// Claim the next due notification that may go out now, attempt it once, record the outcome.
    pub async fn try_deliver_next(&self) -> Result<DeliveryOutcome, DeliveryError> {
        // Channels without a provider here wait for a process that has one; open breakers wait for the provider.
        let blocked: Vec<&str> = ChannelKind::ALL
            .into_iter()
            .filter(|k| !self.providers.has(*k) || self.breaker(*k).blocked())
            .map(ChannelKind::as_str)
            .collect();
        let mut tx = self.pool.begin().await?;
        let claimed: Option<(Uuid, Option<String>, String, Option<i64>)> = sqlx::query_as(
            "SELECT notification_id, trace_id, channel, chat_id FROM delivery_queue
              WHERE next_attempt_at <= now() AND channel <> ALL($1)
                AND (chat_id IS NULL OR chat_id <> ALL($2))
              ORDER BY next_attempt_at LIMIT 1 FOR UPDATE SKIP LOCKED",
        )
        .bind(&blocked)
        .bind(self.busy_chats())
        .fetch_optional(&mut *tx)
        .await?;
        let Some((notification_id, trace_id, channel, chat_id)) = claimed else {
            return Ok(DeliveryOutcome::Idle);
        };
        let kind = ChannelKind::parse(&channel).unwrap_or(ChannelKind::Telegram);
        if self.breaker(kind).allow().is_err() {
            return Ok(DeliveryOutcome::Deferred);
        }
        // Continue the trace of the webhook that caused this notification.
        let trace_id = trace_id.unwrap_or_else(commands::trace::new_trace_id);
        let span = tracing::info_span!("delivery", trace_id = %trace_id, notification = %notification_id, channel = kind.as_str());
        let result = commands::trace::scope(
            trace_id,
            self.deliver(tx, notification_id, kind, chat_id)
                .instrument(span),
        )
        .await;
        if !matches!(
            result,
            Ok(DeliveryOutcome::Delivered | DeliveryOutcome::RetryScheduled)
                | Ok(DeliveryOutcome::DeadLettered)
        ) {
            // No provider answer decided anything: a probe taken for this turn goes back.
            self.breaker(kind).release();
        }
        result
    }

    async fn deliver(
        &self,
        mut tx: sqlx::Transaction<'static, sqlx::Postgres>,
        notification_id: Uuid,
        kind: ChannelKind,
        chat_id: Option<i64>,
    ) -> Result<DeliveryOutcome, DeliveryError> {
        let id = notification_id.to_string();
        let executor = self.commands.notifications();
        let notification = executor.load(&id).await?;
        let sends = notification.settled.is_none() && notification.in_flight.is_none();
        if let (true, Some(chat_id)) = (sends, chat_id) {
            // Only a turn that will call Telegram takes a slot; the row stays as it is (the transaction rolls
            // back) when the chat is at its limit.
            if let Err(wait) = self.providers.chat_slot(chat_id) {
                self.mark_busy(chat_id, wait);
                return Ok(DeliveryOutcome::Deferred);
            }
        }
        let metadata = Metadata::from([("caused_by".to_owned(), "delivery".to_owned())]);
        let max_attempts = self.settings.max_attempts(kind);
        let (outcome, retry_at) = if notification.settled.is_some() {
            (DeliveryOutcome::AlreadySettled, None)
        } else if notification.in_flight.is_some() {
            let command = NotificationCommand::RecordInterrupted {
                max_attempts,
                at: Utc::now(),
            };
            let events = executor.execute(&id, command, &metadata).await?;
            tracing::warn!(
                notification = %notification_id,
                "an attempt was interrupted before its outcome was recorded"
            );
            metrics::counter!("herald_interrupted_attempts_total", "channel" => kind.as_str())
                .increment(1);
            outcome_of(&events, DeliveryOutcome::Interrupted)
        } else {
            self.attempt(&id, &notification, max_attempts, &metadata)
                .await?
        };
        match retry_at {
            Some(at) => {
                sqlx::query(
                    "UPDATE delivery_queue SET next_attempt_at = $2 WHERE notification_id = $1",
                )
                .bind(notification_id)
                .bind(at)
                .execute(&mut *tx)
                .await?
            }
            None => {
                sqlx::query("DELETE FROM delivery_queue WHERE notification_id = $1")
                    .bind(notification_id)
                    .execute(&mut *tx)
                    .await?
            }
        };
        tx.commit().await?;
        record_metrics(kind, outcome);
        Ok(outcome)
    }

    async fn attempt(
        &self,
        id: &str,
        notification: &domain::Notification,
        max_attempts: u32,
        metadata: &Metadata,
    ) -> Result<(DeliveryOutcome, Option<chrono::DateTime<Utc>>), DeliveryError> {
        let executor = self.commands.notifications();
        let Some(channel) = notification.channel.clone() else {
            return Ok((DeliveryOutcome::AlreadySettled, None));
        };
        let kind = channel.kind();
        let attempt = notification.attempts + 1;
        executor
            .execute(
                id,
                NotificationCommand::StartAttempt { at: Utc::now() },
                metadata,
            )
            .await?;
        let started = Instant::now();
        let result = self
            .providers
            .send(&self.commands, notification, &channel)
            .await;
        let latency_ms = Some(u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX));
        metrics::histogram!("herald_delivery_latency_seconds", "channel" => kind.as_str())
            .record(started.elapsed().as_secs_f64());
        let command = match result {
            Ok(Sent { message_id }) => {
                self.breaker(kind).record_success();
                NotificationCommand::RecordDelivered {
                    attempt,
                    provider_message_id: message_id,
                    latency_ms,
                    at: Utc::now(),
                }
            }
            Err(Refusal {
                failure,
                contact_gone,
            }) => {
                if failure.code.is_none_or(|code| code >= 500) {
                    self.breaker(kind).record_outage();
                } else {
                    self.breaker(kind).record_success();
                }
                tracing::warn!(notification = id, attempt, code = ?failure.code, error = %failure.description, "provider refused");
                if contact_gone {
                    self.disable_contacts(&channel, &failure.description, metadata)
                        .await?;
                }
                NotificationCommand::RecordFailure {
                    attempt,
                    failure,
                    max_attempts,
                    latency_ms,
                    jitter: rand::thread_rng().gen::<f64>(),
                    at: Utc::now(),
                }
            }
        };
        let events = executor.execute(id, command, metadata).await?;
        Ok(outcome_of(&events, DeliveryOutcome::AlreadySettled))
    }

    /// The address is gone (the bot was blocked or removed from the chat, the push token unregistered): every
    /// contact reaching it is disabled, so the planner stops planning messages that cannot arrive (the owner
    /// re-enables it).
    async fn disable_contacts(
        &self,
        channel: &domain::Channel,
        description: &str,
        metadata: &Metadata,
    ) -> Result<(), DeliveryError> {
        let (kind, address, reason) = match channel {
            domain::Channel::Telegram { chat_id, .. } => (
                "telegram",
                serde_json::json!({ "chat_id": chat_id.get() }),
                "telegram_forbidden",
            ),
            domain::Channel::Fcm { token } => (
                "fcm",
                serde_json::json!({ "token": token }),
                "push_token_gone",
            ),
            domain::Channel::WebPush { endpoint, .. } => (
                "web_push",
                serde_json::json!({ "endpoint": endpoint }),
                "push_subscription_gone",
            ),
            domain::Channel::Email { .. } => return Ok(()),
        };
        let contacts: Vec<(Uuid, Uuid)> = sqlx::query_as(
            "SELECT subscriber_id, contact_id FROM contacts
              WHERE kind = $1 AND address @> $2 AND NOT removed AND enabled",
        )
        .bind(kind)
        .bind(&address)
        .fetch_all(&self.pool)
        .await?;
        let reason = format!("{reason}: {description}");
        for (subscriber_id, contact_id) in contacts {
            self.commands
                .disable_contact(subscriber_id, contact_id, &reason, metadata)
                .await?;
        }
        Ok(())
    }

    /// Deliver with `concurrency` tasks until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let worker = Arc::new(self);
        let tasks: Vec<_> = (0..worker.settings.concurrency.max(1))
            .map(|_| tokio::spawn(worker.clone().run_one(shutdown.clone())))
            .collect();
        let shrink = {
            let worker = worker.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(60)) => worker.providers.shrink_limits(),
                    }
                }
            })
        };
        for task in tasks {
            let _ = task.await;
        }
        let _ = shrink.await;
    }

    /// One task: as fast as work is due, then wait for a wake-up or the next poll.
    async fn run_one(self: Arc<Self>, shutdown: CancellationToken) {
        let poll = Duration::from_millis(500);
        loop {
            let outcome = tokio::select! {
                _ = shutdown.cancelled() => return,
                o = self.try_deliver_next() => o,
            };
            let wait = match outcome {
                Ok(DeliveryOutcome::Idle) => poll,
                // Another row may be free: look again at once, but let the others run.
                Ok(DeliveryOutcome::Deferred) => Duration::from_millis(20),
                Ok(_) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "delivery turn failed");
                    poll
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}

/// What the recorded events mean for the queue row: the outcome, and when to try again.
fn outcome_of(
    events: &[cqrs_es::EventEnvelope<domain::Notification>],
    default: DeliveryOutcome,
) -> (DeliveryOutcome, Option<chrono::DateTime<Utc>>) {
    events
        .iter()
        .rev()
        .find_map(|e| match &e.payload {
            NotificationEvent::Delivered { .. } => Some((DeliveryOutcome::Delivered, None)),
            NotificationEvent::DeadLettered { .. } => Some((DeliveryOutcome::DeadLettered, None)),
            NotificationEvent::AttemptFailed { retry_at, .. } => {
                Some((DeliveryOutcome::RetryScheduled, *retry_at))
            }
            NotificationEvent::AttemptInterrupted { retry_at, .. } => {
                Some((DeliveryOutcome::Interrupted, *retry_at))
            }
            _ => None,
        })
        .unwrap_or((default, None))
}

/// `herald_deliveries_total{channel,outcome}` and `herald_delivery_retries_total{channel}`.
fn record_metrics(kind: ChannelKind, outcome: DeliveryOutcome) {
    let channel = kind.as_str();
    let label = match outcome {
        DeliveryOutcome::Delivered => "delivered",
        DeliveryOutcome::RetryScheduled => {
            metrics::counter!("herald_delivery_retries_total", "channel" => channel).increment(1);
            "failed"
        }
        DeliveryOutcome::DeadLettered => "dead_lettered",
        DeliveryOutcome::Interrupted => "interrupted",
        DeliveryOutcome::Idle | DeliveryOutcome::AlreadySettled | DeliveryOutcome::Deferred => {
            return
        }
    };
    metrics::counter!("herald_deliveries_total", "channel" => channel, "outcome" => label)
        .increment(1);
}
