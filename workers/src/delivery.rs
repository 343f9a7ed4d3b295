//! Delivery: the queue of notifications to send, and the worker that sends them through Telegram and records
//! every attempt as events on the `Notification` aggregate.
//!
//! Exactly-once effects: an attempt is recorded as started before the provider is called, and the queue row is
//! locked (`FOR UPDATE SKIP LOCKED`) for the whole attempt, so two workers never send the same notification. A
//! worker that dies mid-attempt leaves a started attempt without an outcome; whoever picks the row up next cannot
//! know whether Telegram got the message, so it dead-letters it (an operator may redrive it) instead of risking a
//! second message.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use commands::{CommandError, Commands, Metadata};
use domain::{Channel, NotificationCommand, NotificationEvent, StoredEvent};
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use crate::breaker::{Breaker, BreakerSettings};
use crate::consumer::{EventHandler, HandlerError};
use crate::telegram::{ChatTarget, InlineButton, TelegramClient};

/// Fills the delivery queue from `NotificationPlanned` events.
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
        let (notification_id, due) = match event.decode().map_err(HandlerError::permanent)? {
            NotificationEvent::NotificationPlanned {
                notification_id,
                planned_at,
                ..
            } => (notification_id, planned_at),
            NotificationEvent::NotificationRedriven { redriven_at, .. } => (
                event
                    .aggregate_id
                    .parse::<Uuid>()
                    .map_err(HandlerError::permanent)?,
                redriven_at,
            ),
            _ => return Ok(()),
        };
        sqlx::query(
            "INSERT INTO delivery_queue (notification_id, next_attempt_at, trace_id) VALUES ($1, $2, $3)
             ON CONFLICT (notification_id) DO NOTHING",
        )
        .bind(notification_id)
        .bind(due)
        .bind(event.metadata.get("trace_id").and_then(|t| t.as_str()))
        .execute(&self.pool)
        .await?;
        self.wake.notify_one();
        Ok(())
    }
}

/// What one turn of the delivery worker did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// Nothing is due.
    Idle,
    Delivered,
    RetryScheduled,
    DeadLettered,
    /// The notification was already settled (a redelivered event re-queued it).
    AlreadySettled,
    /// The channel's circuit breaker is open: nothing is claimed for this long.
    Paused(Duration),
}

#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Command(#[from] CommandError),
}

pub struct DeliveryWorker {
    pool: PgPool,
    commands: Arc<Commands>,
    telegram: TelegramClient,
    max_attempts: u32,
    wake: Arc<Notify>,
    breaker: Arc<Breaker>,
}

impl DeliveryWorker {
    pub fn new(
        commands: Arc<Commands>,
        telegram: TelegramClient,
        max_attempts: u32,
        wake: Arc<Notify>,
    ) -> Self {
        Self {
            pool: commands.pool().clone(),
            commands,
            telegram,
            max_attempts,
            wake,
            breaker: Arc::new(Breaker::new("telegram", BreakerSettings::default())),
        }
    }

    /// Share `breaker` (so its state can be shown) instead of the worker's own.
    pub fn with_breaker(mut self, breaker: Arc<Breaker>) -> Self {
        self.breaker = breaker;
        self
    }

    /// Claim the next due notification, attempt it once, record the outcome.
    pub async fn try_deliver_next(&self) -> Result<DeliveryOutcome, DeliveryError> {
        if let Err(wait) = self.breaker.allow() {
            return Ok(DeliveryOutcome::Paused(wait));
        }
        let mut tx = self.pool.begin().await?;
        let claimed: Option<(Uuid, Option<String>)> = sqlx::query_as(
            "SELECT notification_id, trace_id FROM delivery_queue WHERE next_attempt_at <= now()
              ORDER BY next_attempt_at LIMIT 1 FOR UPDATE SKIP LOCKED",
        )
        .fetch_optional(&mut *tx)
        .await?;
        let Some((notification_id, trace_id)) = claimed else {
            return Ok(DeliveryOutcome::Idle);
        };
        // Continue the trace of the webhook that caused this notification.
        let trace_id = trace_id.unwrap_or_else(commands::trace::new_trace_id);
        let span =
            tracing::info_span!("delivery", trace_id = %trace_id, notification = %notification_id);
        commands::trace::scope(trace_id, self.deliver(tx, notification_id).instrument(span)).await
    }

    async fn deliver(
        &self,
        mut tx: sqlx::Transaction<'static, sqlx::Postgres>,
        notification_id: Uuid,
    ) -> Result<DeliveryOutcome, DeliveryError> {
        let id = notification_id.to_string();
        let executor = self.commands.notifications();
        let notification = executor.load(&id).await?;
        let metadata = Metadata::from([("caused_by".to_owned(), "delivery".to_owned())]);
        let (outcome, retry_at) = if notification.settled.is_some() {
            (DeliveryOutcome::AlreadySettled, None)
        } else if let Some(attempt) = notification.in_flight {
            let reason = format!(
                "attempt {attempt} was interrupted before its outcome was recorded; not retried to avoid a double send"
            );
            executor
                .execute(
                    &id,
                    NotificationCommand::GiveUp {
                        reason,
                        at: Utc::now(),
                    },
                    &metadata,
                )
                .await?;
            (DeliveryOutcome::DeadLettered, None)
        } else {
            self.attempt(&id, &notification, &metadata).await?
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
        record_metrics(outcome);
        Ok(outcome)
    }

    async fn attempt(
        &self,
        id: &str,
        notification: &domain::Notification,
        metadata: &Metadata,
    ) -> Result<(DeliveryOutcome, Option<chrono::DateTime<Utc>>), DeliveryError> {
        let executor = self.commands.notifications();
        let Some(Channel::Telegram { chat_id, topic_id }) = notification.channel else {
            return Ok((DeliveryOutcome::AlreadySettled, None));
        };
        let attempt = notification.attempts + 1;
        executor
            .execute(
                id,
                NotificationCommand::StartAttempt { at: Utc::now() },
                metadata,
            )
            .await?;
        let target = ChatTarget {
            chat_id: chat_id.get(),
            topic_id,
        };
        let buttons: Vec<InlineButton> = notification
            .buttons
            .iter()
            .map(|b| InlineButton {
                text: b.text.clone(),
                callback_data: b.data.clone(),
            })
            .collect();
        let command = match self
            .telegram
            .send(target, &notification.text, &buttons)
            .await
        {
            Ok(message_id) => {
                self.breaker.record_success();
                NotificationCommand::RecordDelivered {
                    attempt,
                    provider_message_id: Some(message_id.to_string()),
                    at: Utc::now(),
                }
            }
            Err(failure) => {
                if failure.code.is_none_or(|code| code >= 500) {
                    self.breaker.record_outage();
                } else {
                    self.breaker.record_success();
                }
                tracing::warn!(notification = id, attempt, code = ?failure.code, error = %failure.description, "telegram refused");
                if failure.code == Some(403) {
                    self.disable_chat(chat_id.get(), &failure.description, metadata)
                        .await?;
                }
                NotificationCommand::RecordFailure {
                    attempt,
                    failure,
                    max_attempts: self.max_attempts,
                    at: Utc::now(),
                }
            }
        };
        let events = executor.execute(id, command, metadata).await?;
        Ok(events
            .iter()
            .rev()
            .find_map(|e| match &e.payload {
                NotificationEvent::Delivered { .. } => Some((DeliveryOutcome::Delivered, None)),
                NotificationEvent::DeadLettered { .. } => {
                    Some((DeliveryOutcome::DeadLettered, None))
                }
                NotificationEvent::AttemptFailed { retry_at, .. } => {
                    Some((DeliveryOutcome::RetryScheduled, *retry_at))
                }
                _ => None,
            })
            .unwrap_or((DeliveryOutcome::AlreadySettled, None)))
    }

    /// The bot was blocked or removed from the chat: every contact reaching it is disabled, so the planner
    /// stops planning messages that cannot arrive (the owner re-enables it).
    async fn disable_chat(
        &self,
        chat_id: i64,
        description: &str,
        metadata: &Metadata,
    ) -> Result<(), DeliveryError> {
        let contacts: Vec<(Uuid, Uuid)> = sqlx::query_as(
            "SELECT subscriber_id, contact_id FROM contacts
              WHERE kind = 'telegram' AND chat_id = $1 AND NOT removed AND enabled",
        )
        .bind(chat_id)
        .fetch_all(&self.pool)
        .await?;
        let reason = format!("telegram_forbidden: {description}");
        for (subscriber_id, contact_id) in contacts {
            self.commands
                .disable_contact(subscriber_id, contact_id, &reason, metadata)
                .await?;
        }
        Ok(())
    }

    /// Deliver until `shutdown`: as fast as work is due, then wait for a wake-up or the next poll.
    pub async fn run(self, shutdown: CancellationToken) {
        let poll = Duration::from_millis(500);
        loop {
            let outcome = tokio::select! {
                _ = shutdown.cancelled() => return,
                o = self.try_deliver_next() => o,
            };
            let mut wait = poll;
            match outcome {
                Ok(DeliveryOutcome::Idle) => {}
                Ok(DeliveryOutcome::Paused(for_)) => wait = for_.min(poll),
                Ok(_) => continue,
                Err(e) => tracing::warn!(error = %e, "delivery turn failed"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}

/// `herald_deliveries_total{channel,outcome}` and `herald_delivery_retries_total{channel}`.
fn record_metrics(outcome: DeliveryOutcome) {
    let label = match outcome {
        DeliveryOutcome::Delivered => "delivered",
        DeliveryOutcome::RetryScheduled => {
            metrics::counter!("herald_delivery_retries_total", "channel" => "telegram")
                .increment(1);
            "failed"
        }
        DeliveryOutcome::DeadLettered => "dead_lettered",
        DeliveryOutcome::Idle | DeliveryOutcome::AlreadySettled | DeliveryOutcome::Paused(_) => {
            return
        }
    };
    metrics::counter!("herald_deliveries_total", "channel" => "telegram", "outcome" => label)
        .increment(1);
}
