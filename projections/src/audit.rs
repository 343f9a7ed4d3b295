//! The notification trail, for auditors: for a build, a project, a subscription or a time range, every event in
//! order — the webhook that was received, the decision per subscriber (planned or suppressed, with the reason
//! and the subscription and template versions in force), each attempt with the provider's answer, the outcome.
//!
//! The entries come from the event log itself; read models are used only to find which aggregates belong to the
//! question (which notifications a build caused), never for what happened.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use domain::{
    BuildRunEvent, Channel, NotificationEvent, ProjectEvent, StoredEvent, SubscriberEvent,
    SubscriptionEvent, SubscriptionTarget,
};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::log::{aggregate_events, EventRow, EVENT_COLUMNS};

/// What the auditor asks about.
#[derive(Debug, Clone)]
pub enum Scope {
    Build(String),
    Project {
        project_id: Uuid,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
    },
    Subscription(Uuid),
    Range {
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    },
}

/// One line of the trail.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TrailEntry {
    pub at: DateTime<Utc>,
    pub global_seq: i64,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    /// One sentence a person can read.
    pub summary: String,
    pub payload: serde_json::Value,
    pub metadata: serde_json::Value,
}

/// Range queries are capped; ask for a narrower range to see more.
pub const MAX_ENTRIES: i64 = 10_000;

pub async fn trail(pool: &PgPool, scope: &Scope) -> Result<Vec<TrailEntry>, sqlx::Error> {
    let mut events: BTreeMap<i64, StoredEvent> = BTreeMap::new();
    let mut add = |batch: Vec<StoredEvent>| {
        for e in batch {
            events.insert(e.global_seq, e);
        }
    };
    match scope {
        Scope::Build(build_run_id) => add(build_trail(pool, build_run_id).await?),
        Scope::Project {
            project_id,
            from,
            to,
        } => {
            add(aggregate_events(pool, "Project", &project_id.to_string()).await?);
            let builds: Vec<String> = sqlx::query_scalar(
                "SELECT build_run_id FROM build_runs WHERE project_id = $1
                   AND ($2::timestamptz IS NULL OR updated_at >= $2) AND ($3::timestamptz IS NULL OR updated_at < $3)
                 ORDER BY updated_at LIMIT 1000",
            )
            .bind(project_id)
            .bind(from)
            .bind(to)
            .fetch_all(pool)
            .await?;
            for build in builds {
                add(build_trail(pool, &build).await?);
            }
            events.retain(|_, e| {
                from.is_none_or(|f| e.recorded_at >= f) && to.is_none_or(|t| e.recorded_at < t)
            });
        }
        Scope::Subscription(subscription_id) => {
            add(aggregate_events(pool, "Subscription", &subscription_id.to_string()).await?);
            let notifications: Vec<Uuid> = sqlx::query_scalar(
                "SELECT notification_id FROM notifications WHERE subscription_id = $1 ORDER BY planned_at LIMIT 1000",
            )
            .bind(subscription_id)
            .fetch_all(pool)
            .await?;
            for id in notifications {
                add(aggregate_events(pool, "Notification", &id.to_string()).await?);
            }
        }
        Scope::Range { from, to } => {
            let rows: Vec<EventRow> = sqlx::query_as(&format!(
                "SELECT {EVENT_COLUMNS} FROM events e WHERE e.recorded_at >= $1 AND e.recorded_at < $2
                  ORDER BY e.global_seq LIMIT $3"
            ))
            .bind(from)
            .bind(to)
            .bind(MAX_ENTRIES)
            .fetch_all(pool)
            .await?;
            add(rows.into_iter().map(StoredEvent::from).collect());
        }
    }
    Ok(events.into_values().map(entry).collect())
}

/// A build's own events and those of every notification it caused.
async fn build_trail(pool: &PgPool, build_run_id: &str) -> Result<Vec<StoredEvent>, sqlx::Error> {
    let mut events = aggregate_events(pool, "BuildRun", build_run_id).await?;
    let notifications: Vec<Uuid> =
        sqlx::query_scalar("SELECT notification_id FROM notifications WHERE build_run_id = $1")
            .bind(build_run_id)
            .fetch_all(pool)
            .await?;
    for id in notifications {
        events.extend(aggregate_events(pool, "Notification", &id.to_string()).await?);
    }
    Ok(events)
}

fn entry(event: StoredEvent) -> TrailEntry {
    TrailEntry {
        summary: summarize(&event),
        at: event.recorded_at,
        global_seq: event.global_seq,
        aggregate_type: event.aggregate_type,
        aggregate_id: event.aggregate_id,
        sequence: event.sequence,
        event_type: event.event_type,
        payload: event.payload,
        metadata: event.metadata,
    }
}

fn meta(event: &StoredEvent, key: &str) -> String {
    event.metadata[key].as_str().unwrap_or("?").to_owned()
}

/// One readable sentence per event.
pub fn summarize(event: &StoredEvent) -> String {
    match event.aggregate_type.as_str() {
        "BuildRun" => match event.decode::<BuildRunEvent>() {
            Ok(e) => {
                let source = format!(
                    "{} {} delivery {}",
                    meta(event, "provider"),
                    meta(event, "event"),
                    e.delivery_id()
                );
                match &e {
                    BuildRunEvent::BuildQueued { run, .. } => format!("{}: {} queued ({source})", run.repository, run.workflow),
                    BuildRunEvent::BuildStarted { run, .. } => format!("{}: {} started ({source})", run.repository, run.workflow),
                    BuildRunEvent::JobQueued { job, .. } => format!("job {} queued ({source})", job.name),
                    BuildRunEvent::JobStarted { job, .. } => format!("job {} started ({source})", job.name),
                    BuildRunEvent::JobFinished { job, .. } => format!(
                        "job {} finished: {} ({source})",
                        job.name,
                        job.outcome.map_or("unknown", |o| o.as_str())
                    ),
                    BuildRunEvent::BuildSucceeded { run, verdict, .. }
                    | BuildRunEvent::BuildFailed { run, verdict, .. }
                    | BuildRunEvent::BuildCancelled { run, verdict, .. } => format!(
                        "{}: {} on {} {} ({}) ({source})",
                        run.repository,
                        run.workflow,
                        run.branch.as_deref().unwrap_or("no branch"),
                        verdict.outcome,
                        verdict.transition.as_str()
                    ),
                }
            }
            Err(e) => format!("undecodable {}: {e}", event.event_type),
        },
        "Notification" => match event.decode::<NotificationEvent>() {
            Ok(NotificationEvent::NotificationPlanned {
                subscription_id,
                subscription_version,
                template,
                channel,
                details,
                ..
            }) => format!(
                "planned: {}{} (subscription {subscription_id} v{subscription_version}, template {})",
                describe_channel(&channel),
                details.replaces.map_or_else(String::new, |id| format!(", editing the message of {id}")),
                template.as_deref().unwrap_or("unrecorded")
            ),
            Ok(NotificationEvent::NotificationSuppressed {
                subscription_id,
                subscription_version,
                reason,
                ..
            }) => format!("not sent: {reason} (subscription {subscription_id} v{subscription_version})"),
            Ok(NotificationEvent::AttemptStarted { attempt, .. }) => format!("attempt {attempt} started"),
            Ok(NotificationEvent::Delivered {
                attempt,
                provider_message_id,
                latency_ms,
                possible_duplicate,
                ..
            }) => format!(
                "delivered on attempt {attempt} (provider message {}){}{}",
                provider_message_id.as_deref().unwrap_or("?"),
                latency_ms.map_or_else(String::new, |ms| format!(" in {ms} ms")),
                if possible_duplicate { "; possibly a duplicate: an earlier attempt was interrupted" } else { "" }
            ),
            Ok(NotificationEvent::AttemptInterrupted { attempt, .. }) => {
                format!("attempt {attempt} was interrupted: whether the provider got it is unknown")
            }
            Ok(NotificationEvent::AttemptFailed {
                attempt,
                failure,
                retry_at,
                latency_ms,
                ..
            }) => format!(
                "attempt {attempt} failed: {} {}{}{}",
                failure.code.map_or_else(|| "no answer".to_owned(), |c| c.to_string()),
                failure.description,
                retry_at.map_or_else(String::new, |t| format!("; retry at {}", t.to_rfc3339())),
                latency_ms.map_or_else(String::new, |ms| format!(" (answered in {ms} ms)"))
            ),
            Ok(NotificationEvent::DeadLettered { reason, .. }) => format!("dead-lettered: {reason}"),
            Ok(NotificationEvent::NotificationHeld { reason, held_until, .. }) => {
                format!("held ({reason}) for the digest at {}", held_until.to_rfc3339())
            }
            Ok(NotificationEvent::FoldedIntoDigest { digest_id, .. }) => format!("sent in digest {digest_id}"),
            Ok(NotificationEvent::NotificationRedriven { by, .. }) => format!("redriven by {by}"),
            Ok(NotificationEvent::DeadLetterDiscarded { by, reason, .. }) => format!("discarded by {by}: {reason}"),
            Err(e) => format!("undecodable {}: {e}", event.event_type),
        },
        "Subscription" => match event.decode::<SubscriptionEvent>() {
            Ok(SubscriptionEvent::Subscribed { target, filter, .. }) => format!(
                "{} subscribed to {}",
                match target {
                    SubscriptionTarget::Chat { chat_id } => format!("Telegram chat {}", chat_id.get()),
                    SubscriptionTarget::Contact { contact_id, .. } => format!("contact {contact_id}"),
                },
                filter.outcomes.iter().map(|o| o.as_str()).collect::<Vec<_>>().join(", ")
            ),
            Ok(SubscriptionEvent::Unsubscribed { .. }) => "unsubscribed".to_owned(),
            Err(e) => format!("undecodable {}: {e}", event.event_type),
        },
        "Subscriber" => match event.decode::<SubscriberEvent>() {
            Ok(SubscriberEvent::SubscriberRegistered { name, .. }) => format!("subscriber {name} registered"),
            Ok(SubscriberEvent::ContactAdded { contact_id, address, verified, .. }) => format!(
                "{} contact {contact_id} added{}",
                address.kind(),
                if verified { "" } else { ", waiting for verification" }
            ),
            Ok(SubscriberEvent::VerificationRenewed { contact_id, .. }) => {
                format!("verification of contact {contact_id} sent again")
            }
            Ok(SubscriberEvent::ContactVerified { contact_id, .. }) => format!("contact {contact_id} verified"),
            Ok(SubscriberEvent::LinkCodeIssued { .. }) => "Telegram link code issued".to_owned(),
            Ok(SubscriberEvent::TelegramLinked { contact_id, .. }) => {
                format!("Telegram chat linked as contact {contact_id}")
            }
            Ok(SubscriberEvent::ContactDisabled { contact_id, reason, .. }) => {
                format!("contact {contact_id} disabled: {reason}")
            }
            Ok(SubscriberEvent::ContactEnabled { contact_id, .. }) => format!("contact {contact_id} enabled again"),
            Ok(SubscriberEvent::ContactRemoved { contact_id, .. }) => format!("contact {contact_id} removed"),
            Ok(SubscriberEvent::PreferencesChanged { .. }) => "preferences changed".to_owned(),
            Ok(SubscriberEvent::Muted { until, .. }) => match until {
                Some(until) => format!("muted until {}", until.to_rfc3339()),
                None => "muted until unmuted".to_owned(),
            },
            Ok(SubscriberEvent::Unmuted { .. }) => "unmuted".to_owned(),
            Err(e) => format!("undecodable {}: {e}", event.event_type),
        },
        "Project" => match event.decode::<ProjectEvent>() {
            Ok(ProjectEvent::ProjectCreated { name, .. }) => format!("project {name} created"),
            Ok(ProjectEvent::ProjectRenamed { name, .. }) => format!("renamed to {name}"),
            Ok(ProjectEvent::WebhookSecretRotated { secret_version, .. }) => {
                format!("webhook secret rotated to version {secret_version}")
            }
            Ok(ProjectEvent::ProjectArchived { .. }) => "archived".to_owned(),
            Ok(ProjectEvent::WebhookPinged { delivery_id, .. }) => format!("webhook ping (delivery {delivery_id})"),
            Err(e) => format!("undecodable {}: {e}", event.event_type),
        },
        other => format!("{other} {}", event.event_type),
    }
}

/// Where a notification went, in words an auditor can read, without spelling out tokens or keys.
fn describe_channel(channel: &Channel) -> String {
    match channel {
        Channel::Telegram { chat_id, .. } => format!("Telegram chat {}", chat_id.get()),
        Channel::Email { address } => format!("email to {address}"),
        Channel::Fcm { token } => format!(
            "FCM token …{}",
            token
                .chars()
                .rev()
                .take(6)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<String>()
        ),
        Channel::WebPush { endpoint, .. } => format!(
            "Web Push via {}",
            endpoint
                .split('/')
                .nth(2)
                .unwrap_or("an unknown push service")
        ),
    }
}
