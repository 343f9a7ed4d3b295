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
use commands::{Batched, CommandError, Commands, Metadata};
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
use crate::vacuum::QueueVacuum;
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
        self.enqueue(std::slice::from_ref(event)).await
    }

    /// The planned notifications of a batch go in with one statement.
    async fn handle_batch(&self, events: &[StoredEvent]) -> Option<Result<(), HandlerError>> {
        Some(self.enqueue(events).await)
    }
}

/// Queue rows, column by column, as `unnest` takes them.
#[derive(Default)]
struct QueueRows {
    notification_id: Vec<Uuid>,
    next_attempt_at: Vec<chrono::DateTime<Utc>>,
    trace_id: Vec<Option<String>>,
    channel: Vec<&'static str>,
    chat_id: Vec<Option<i64>>,
}

impl DeliveryEnqueuer {
    async fn enqueue(&self, events: &[StoredEvent]) -> Result<(), HandlerError> {
        let mut rows = QueueRows::default();
        let mut redriven = Vec::new();
        for event in events.iter().filter(|e| {
            e.aggregate_type == "Notification"
                && matches!(
                    e.event_type.as_str(),
                    "NotificationPlanned" | "NotificationRedriven"
                )
        }) {
            let trace_id = event.metadata.get("trace_id").and_then(|t| t.as_str());
            match event.decode().map_err(HandlerError::permanent)? {
                NotificationEvent::NotificationPlanned {
                    notification_id,
                    planned_at,
                    channel,
                    ..
                } => {
                    rows.notification_id.push(notification_id);
                    rows.next_attempt_at.push(planned_at);
                    rows.trace_id.push(trace_id.map(str::to_owned));
                    rows.channel.push(channel.kind().as_str());
                    rows.chat_id.push(match channel {
                        domain::Channel::Telegram { chat_id, .. } => Some(chat_id.get()),
                        _ => None,
                    });
                }
                NotificationEvent::NotificationRedriven { redriven_at, .. } => {
                    let id = event
                        .aggregate_id
                        .parse::<Uuid>()
                        .map_err(HandlerError::permanent)?;
                    redriven.push((id, redriven_at, trace_id));
                }
                _ => {}
            }
        }
        if rows.notification_id.is_empty() && redriven.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        if !rows.notification_id.is_empty() {
            sqlx::query(
                "INSERT INTO delivery_queue (notification_id, next_attempt_at, trace_id, channel, chat_id)
                 SELECT * FROM unnest($1::uuid[], $2::timestamptz[], $3::text[], $4::text[], $5::bigint[])
                 ON CONFLICT (notification_id) DO NOTHING",
            )
            .bind(rows.notification_id)
            .bind(rows.next_attempt_at)
            .bind(rows.trace_id)
            .bind(rows.channel)
            .bind(rows.chat_id)
            .execute(&mut *tx)
            .await?;
        }
        for (id, redriven_at, trace_id) in redriven {
            // The channel is the planned one: read it from the notification's first event.
            sqlx::query(
                "INSERT INTO delivery_queue (notification_id, next_attempt_at, trace_id, channel, chat_id)
                 SELECT $1::uuid, $2, $3, p.body->'channel'->>'channel', (p.body->'channel'->>'chat_id')::bigint
                   FROM (SELECT payload::jsonb->'NotificationPlanned' AS body FROM events
                          WHERE aggregate_type = 'Notification' AND aggregate_id = $1::text
                            AND event_type = 'NotificationPlanned') p
                 ON CONFLICT (notification_id) DO NOTHING",
            )
            .bind(id)
            .bind(redriven_at)
            .bind(trace_id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        // One task, not all of them: the one that finds a full batch wakes the next (`run_one`).
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
            concurrency: 32,
            telegram_limits: TelegramLimits::default(),
            breaker: BreakerSettings::default(),
        }
    }
}

impl DeliverySettings {
    /// The most worker tasks: enough that one task's commits overlap another's provider calls.
    const MAX_TASKS: usize = 4;

    /// Worker tasks: `concurrency` split into at most four, each claiming a batch. Few tasks with large
    /// batches are what make delivery fast (a turn costs the same commits whatever its size); more than one
    /// keeps a turn waiting on the database from stalling every send.
    pub fn tasks(&self) -> usize {
        self.concurrency.clamp(1, Self::MAX_TASKS)
    }

    /// Notifications one task claims at a time.
    pub fn batch(&self) -> usize {
        self.concurrency.max(1).div_ceil(self.tasks())
    }

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
    /// The delivery queue is a queue: the rows a turn removes or moves, it has vacuumed (`crate::vacuum`).
    vacuum: QueueVacuum,
}

/// One claimed notification in a worker's turn.
struct Turn {
    notification_id: Uuid,
    trace_id: String,
    kind: ChannelKind,
    chat_id: Option<i64>,
    notification: domain::Notification,
    /// Decided so far; `None` while undecided, and for good when its events could not be recorded.
    outcome: Option<DeliveryOutcome>,
    retry_at: Option<chrono::DateTime<Utc>>,
}

impl Turn {
    fn metadata(&self) -> Metadata {
        Metadata::from([
            ("caused_by".to_owned(), "delivery".to_owned()),
            ("trace_id".to_owned(), self.trace_id.clone()),
        ])
    }

    fn batched(&self, command: NotificationCommand) -> Batched<NotificationCommand> {
        Batched {
            id: self.notification_id.to_string(),
            command,
            metadata: self.metadata(),
        }
    }
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
            vacuum: QueueVacuum::new(commands.pool().clone(), "delivery_queue"),
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

    /// Take a slot for one message to `chat_id` (messages off Telegram need none); a chat at its limit is
    /// left out of the claims until it has one again.
    fn take_chat_slot(&self, chat_id: Option<i64>) -> bool {
        let Some(chat_id) = chat_id else {
            return true;
        };
        match self.providers.chat_slot(chat_id) {
            Ok(()) => true,
            Err(wait) => {
                self.mark_busy(chat_id, wait);
                false
            }
        }
    }

    fn mark_busy(&self, chat_id: i64, wait: Duration) {
        self.busy_chats
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(chat_id, Instant::now() + wait);
    }

    /// Claim the next due notification that may go out now, attempt it once, record the outcome.
    pub async fn try_deliver_next(&self) -> Result<DeliveryOutcome, DeliveryError> {
        Ok(self
            .try_deliver(1)
            .await?
            .first()
            .copied()
            .unwrap_or(DeliveryOutcome::Idle))
    }

    /// Claim up to `limit` due notifications that may go out now and attempt each once: the attempts are
    /// recorded as started with one append before any provider is called, the calls run at once, and their
    /// outcomes are recorded with one append after the last has answered. Returns each claimed
    /// notification's outcome; none when nothing is due.
    ///
    /// A turn of many costs what a turn of one did (the claim, two appends, the queue's commit), which is
    /// what lets delivery outrun the database's commit rate. The price: a notification's outcome waits for
    /// the slowest call of its turn, and a worker killed mid-turn leaves every attempt of the turn
    /// interrupted, not one (each is then handled as a single interrupted attempt would be).
    pub async fn try_deliver(&self, limit: usize) -> Result<Vec<DeliveryOutcome>, DeliveryError> {
        // Channels without a provider here wait for a process that has one; open breakers wait for the provider.
        // Busy chats (thousands, in a broadcast) are left out through a hashed `NOT IN`, not `<> ALL`, which
        // compares each row with every element (see the relay's read).
        let blocked: Vec<&str> = ChannelKind::ALL
            .into_iter()
            .filter(|k| !self.providers.has(*k) || self.breaker(*k).blocked())
            .map(ChannelKind::as_str)
            .collect();
        let mut tx = self.pool.begin().await?;
        let claimed: Vec<(Uuid, Option<String>, String, Option<i64>)> = sqlx::query_as(
            "SELECT notification_id, trace_id, channel, chat_id FROM delivery_queue
              WHERE next_attempt_at <= now() AND channel <> ALL($1)
                AND (chat_id IS NULL OR chat_id NOT IN (SELECT unnest($2::bigint[])))
              ORDER BY next_attempt_at LIMIT $3 FOR UPDATE SKIP LOCKED",
        )
        .bind(&blocked)
        .bind(self.busy_chats())
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&mut *tx)
        .await?;
        if claimed.is_empty() {
            return Ok(Vec::new());
        }
        if claimed.len() == limit {
            // More may be due: another task claims the next batch while this one sends.
            self.wake.notify_one();
        }
        let ids: Vec<String> = claimed.iter().map(|c| c.0.to_string()).collect();
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        let notifications = self.commands.notifications().load_many(&refs).await?;
        let mut turns: Vec<Turn> = claimed
            .into_iter()
            .zip(notifications)
            .map(
                |((notification_id, trace_id, channel, chat_id), notification)| Turn {
                    notification_id,
                    // Continue the trace of the webhook that caused this notification.
                    trace_id: trace_id.unwrap_or_else(commands::trace::new_trace_id),
                    kind: ChannelKind::parse(&channel).unwrap_or(ChannelKind::Telegram),
                    chat_id,
                    notification,
                    outcome: None,
                    retry_at: None,
                },
            )
            .collect();
        let mut failure = None;
        let sending = self.start(&mut turns, &mut failure).await;
        let answers =
            futures::future::join_all(sending.iter().map(|&i| self.call_provider(&turns[i]))).await;
        self.record_outcomes(&mut turns, sending, answers, &mut failure)
            .await;
        self.settle_queue(&mut tx, &turns).await?;
        tx.commit().await?;
        let outcomes: Vec<DeliveryOutcome> = turns.iter().filter_map(|t| t.outcome).collect();
        match failure {
            // Nothing moved, and something failed: the caller backs off.
            Some(e) if outcomes.iter().all(|o| *o == DeliveryOutcome::Deferred) => Err(e),
            _ => {
                for (turn, outcome) in turns.iter().filter_map(|t| Some((t, t.outcome?))) {
                    record_metrics(turn.kind, outcome);
                }
                Ok(outcomes)
            }
        }
    }

    /// Decide each claimed notification's turn and record, in one append, the attempts about to start and
    /// the interrupted attempts found. Returns the turns whose provider is to be called now.
    async fn start(&self, turns: &mut [Turn], failure: &mut Option<DeliveryError>) -> Vec<usize> {
        let mut commands = Vec::new();
        let mut commanded = Vec::new();
        for (i, turn) in turns.iter_mut().enumerate() {
            if self.breaker(turn.kind).allow().is_err() {
                turn.outcome = Some(DeliveryOutcome::Deferred);
                continue;
            }
            let command =
                if turn.notification.settled.is_some() || turn.notification.channel.is_none() {
                    turn.outcome = Some(DeliveryOutcome::AlreadySettled);
                    None
                } else if turn.notification.in_flight.is_some() {
                    Some(NotificationCommand::RecordInterrupted {
                        max_attempts: self.settings.max_attempts(turn.kind),
                        at: Utc::now(),
                    })
                } else if !self.take_chat_slot(turn.chat_id) {
                    // Only a turn that will call Telegram takes a slot; the row stays as it is when the chat is
                    // at its limit.
                    turn.outcome = Some(DeliveryOutcome::Deferred);
                    None
                } else {
                    Some(NotificationCommand::StartAttempt { at: Utc::now() })
                };
            match command {
                Some(command) => {
                    commands.push(turn.batched(command));
                    commanded.push(i);
                }
                // No provider answer decides anything: a probe taken for this turn goes back.
                None => self.breaker(turn.kind).release(),
            }
        }
        let results = self.commands.notifications().execute_many(&commands).await;
        let mut sending = Vec::new();
        for (i, result) in commanded.into_iter().zip(results) {
            let turn = &mut turns[i];
            let interrupted = turn.notification.in_flight.is_some();
            match result {
                Ok(_) if !interrupted => sending.push(i),
                Ok(events) => {
                    self.breaker(turn.kind).release();
                    tracing::warn!(
                        trace_id = %turn.trace_id,
                        notification = %turn.notification_id,
                        "an attempt was interrupted before its outcome was recorded"
                    );
                    metrics::counter!("herald_interrupted_attempts_total", "channel" => turn.kind.as_str())
                        .increment(1);
                    let (outcome, retry_at) = outcome_of(&events, DeliveryOutcome::Interrupted);
                    (turn.outcome, turn.retry_at) = (Some(outcome), retry_at);
                }
                Err(e) => {
                    self.breaker(turn.kind).release();
                    tracing::warn!(trace_id = %turn.trace_id, notification = %turn.notification_id, error = %e, "cannot start the attempt");
                    failure.get_or_insert(e.into());
                }
            }
        }
        sending
    }

    /// One provider call, in the trace of the webhook that caused it, and how long it took.
    async fn call_provider(&self, turn: &Turn) -> (Result<Sent, Refusal>, Duration) {
        let span = tracing::info_span!("delivery", trace_id = %turn.trace_id, notification = %turn.notification_id, channel = turn.kind.as_str());
        let started = Instant::now();
        let result = match &turn.notification.channel {
            Some(channel) => {
                commands::trace::scope(
                    turn.trace_id.clone(),
                    self.providers
                        .send(&self.commands, &turn.notification, channel)
                        .instrument(span),
                )
                .await
            }
            None => Err(Refusal::from(domain::SendFailure {
                code: None,
                description: "the notification names no channel".into(),
                retryable: false,
                retry_after_secs: None,
            })),
        };
        (result, started.elapsed())
    }

    /// Record what the providers answered, in one append; disable the contacts whose address is gone.
    async fn record_outcomes(
        &self,
        turns: &mut [Turn],
        sent: Vec<usize>,
        answers: Vec<(Result<Sent, Refusal>, Duration)>,
        failure: &mut Option<DeliveryError>,
    ) {
        let mut commands = Vec::with_capacity(sent.len());
        let mut gone = Vec::new();
        for (&i, (result, elapsed)) in sent.iter().zip(answers) {
            let turn = &turns[i];
            let kind = turn.kind;
            let attempt = turn.notification.attempts + 1;
            let latency_ms = Some(u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX));
            metrics::histogram!("herald_delivery_latency_seconds", "channel" => kind.as_str())
                .record(elapsed.as_secs_f64());
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
                    tracing::warn!(trace_id = %turn.trace_id, notification = %turn.notification_id, attempt, code = ?failure.code, error = %failure.description, "provider refused");
                    if contact_gone {
                        gone.push((i, failure.description.clone()));
                    }
                    NotificationCommand::RecordFailure {
                        attempt,
                        failure,
                        max_attempts: self.settings.max_attempts(kind),
                        latency_ms,
                        jitter: rand::thread_rng().gen::<f64>(),
                        at: Utc::now(),
                    }
                }
            };
            commands.push(turn.batched(command));
        }
        let results = self.commands.notifications().execute_many(&commands).await;
        for (&i, result) in sent.iter().zip(results) {
            let turn = &mut turns[i];
            match result {
                Ok(events) => {
                    let (outcome, retry_at) = outcome_of(&events, DeliveryOutcome::AlreadySettled);
                    (turn.outcome, turn.retry_at) = (Some(outcome), retry_at);
                }
                // Left as started: the next turn finds the attempt interrupted.
                Err(e) => {
                    tracing::warn!(trace_id = %turn.trace_id, notification = %turn.notification_id, error = %e, "cannot record the outcome");
                    failure.get_or_insert(e.into());
                }
            }
        }
        for (i, description) in gone {
            let turn = &turns[i];
            let Some(channel) = &turn.notification.channel else {
                continue;
            };
            if let Err(e) = self
                .disable_contacts(channel, &description, &turn.metadata())
                .await
            {
                tracing::warn!(trace_id = %turn.trace_id, error = %e, "cannot disable the contacts of a gone address");
                failure.get_or_insert(e);
            }
        }
    }

    /// The queue rows of the turn: settled ones removed, retries moved to their time, the rest (deferred, or
    /// whose outcome could not be recorded) left as they were.
    async fn settle_queue(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
        turns: &[Turn],
    ) -> Result<(), DeliveryError> {
        let (mut done, mut retry, mut retry_at) = (Vec::new(), Vec::new(), Vec::new());
        for turn in turns {
            match (turn.outcome, turn.retry_at) {
                (None | Some(DeliveryOutcome::Deferred), _) => {}
                (Some(_), Some(at)) => {
                    retry.push(turn.notification_id);
                    retry_at.push(at);
                }
                (Some(_), None) => done.push(turn.notification_id),
            }
        }
        // Deleted and updated rows both leave a dead row behind.
        self.vacuum.deleted((done.len() + retry.len()) as u64);
        if !done.is_empty() {
            sqlx::query("DELETE FROM delivery_queue WHERE notification_id = ANY($1)")
                .bind(done)
                .execute(&mut **tx)
                .await?;
        }
        if !retry.is_empty() {
            sqlx::query(
                "UPDATE delivery_queue q SET next_attempt_at = r.at
                   FROM unnest($1::uuid[], $2::timestamptz[]) AS r(id, at)
                  WHERE q.notification_id = r.id",
            )
            .bind(retry)
            .bind(retry_at)
            .execute(&mut **tx)
            .await?;
        }
        Ok(())
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

    /// Deliver until `shutdown`: `concurrency` notifications in flight at most, as a few tasks that each claim
    /// a batch (see [`DeliverySettings::tasks`]).
    pub async fn run(self, shutdown: CancellationToken) {
        let worker = Arc::new(self);
        let tasks: Vec<_> = (0..worker.settings.tasks())
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
        let batch = self.settings.batch();
        loop {
            let outcomes = tokio::select! {
                _ = shutdown.cancelled() => return,
                o = self.try_deliver(batch) => o,
            };
            let wait = match outcomes {
                Ok(outcomes) if outcomes.is_empty() => poll,
                // Another row may be free: look again at once, but let the others run.
                Ok(outcomes) if outcomes.iter().all(|o| *o == DeliveryOutcome::Deferred) => {
                    Duration::from_millis(20)
                }
                // A full batch: more may be due.
                Ok(outcomes) if outcomes.len() >= batch => continue,
                // A short one took every row that was due and free; a row enqueued since has left a wake-up
                // (`Notify` keeps one for a task not yet waiting). Claiming again at once found nothing, and
                // cost a transaction per run at low rates (docs/benchmarks.md).
                Ok(_) => poll,
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
