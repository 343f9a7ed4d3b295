//! Reads over the read models. Nothing here touches the event log.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct ProjectView {
    pub project_id: Uuid,
    pub name: String,
    pub archived: bool,
    pub secret_version: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub builds_finished: i32,
    pub builds_succeeded: i32,
    pub builds_failed: i32,
    pub builds_cancelled: i32,
    pub last_build_at: Option<DateTime<Utc>>,
    pub last_outcome: Option<String>,
    pub last_transition: Option<String>,
}

impl ProjectView {
    /// Passed over passed-or-failed; cancelled and skipped runs say nothing about health. `None` before any verdict.
    pub fn success_rate(&self) -> Option<f64> {
        let judged = self.builds_succeeded + self.builds_failed;
        (judged > 0).then(|| f64::from(self.builds_succeeded) / f64::from(judged))
    }
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct BuildRunView {
    pub build_run_id: String,
    pub project_id: Uuid,
    pub provider: String,
    pub repository: String,
    pub workflow: String,
    pub branch: Option<String>,
    pub run_id: i64,
    pub run_number: Option<i64>,
    pub attempt: i32,
    pub commit_sha: Option<String>,
    pub commit_message: Option<String>,
    pub author: Option<String>,
    pub url: Option<String>,
    pub status: String,
    pub outcome: Option<String>,
    pub transition: Option<String>,
    pub failure_streak: Option<i32>,
    pub queued_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub duration_secs: Option<i64>,
    pub jobs: serde_json::Value,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct SubscriptionView {
    pub subscription_id: Uuid,
    /// The subscriber whose contact this subscription notifies; absent for a bare chat.
    pub subscriber_id: Option<Uuid>,
    pub contact_id: Option<Uuid>,
    /// `telegram` for a bare chat, `contact` for a subscriber's contact.
    pub channel: String,
    /// A bare chat's id.
    pub chat_id: Option<i64>,
    /// The one project, when the subscription names exactly one.
    pub project_id: Option<Uuid>,
    pub project_ids: Vec<Uuid>,
    /// Every repository of this owner, instead of listed projects.
    pub owner: Option<String>,
    pub branches: Vec<String>,
    pub exclude_branches: Vec<String>,
    pub workflows: Vec<String>,
    pub outcomes: Vec<String>,
    pub min_interval_secs: i32,
    pub active: bool,
    pub created_at: DateTime<Utc>,
    pub removed_at: Option<DateTime<Utc>>,
    /// The sequence of the subscription's last event applied here.
    pub version: i64,
}

/// What the planner needs of one active subscription: its filter, and the state of the contact and the
/// subscriber behind it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PlannerSubscription {
    pub subscription_id: Uuid,
    pub version: i64,
    pub filter: sqlx::types::Json<domain::SubscriptionFilter>,
    pub chat_id: Option<i64>,
    pub subscriber_id: Option<Uuid>,
    pub contact_id: Option<Uuid>,
    pub contact_address: Option<sqlx::types::Json<domain::ContactAddress>>,
    /// `None` for a bare chat, or a contact the projection has not seen yet.
    pub contact_enabled: Option<bool>,
    pub contact_verified: Option<bool>,
    pub contact_removed: Option<bool>,
    pub muted: Option<bool>,
    pub muted_until: Option<DateTime<Utc>>,
    pub language: Option<String>,
    pub time_zone: Option<String>,
    pub quiet_start: Option<chrono::NaiveTime>,
    pub quiet_end: Option<chrono::NaiveTime>,
    pub digest_minutes: Option<i32>,
    pub edit_in_place: Option<bool>,
}

const SUBSCRIPTION_COLUMNS: &str = "subscription_id, subscriber_id, contact_id, channel, chat_id, project_id,
    project_ids, owner, branches, exclude_branches, workflows, outcomes, min_interval_secs, active, created_at,
    removed_at, version";

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct NotificationView {
    pub notification_id: Uuid,
    pub build_run_id: String,
    pub project_id: Uuid,
    pub subscription_id: Uuid,
    pub channel: Option<String>,
    pub status: String,
    pub reason: Option<String>,
    pub attempts: i32,
    pub provider_message_id: Option<String>,
    pub last_error: Option<String>,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub planned_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A page request: at most `limit` rows after skipping `offset`.
#[derive(Debug, Clone, Copy)]
pub struct Page {
    pub limit: i64,
    pub offset: i64,
}

pub async fn projects(
    pool: &PgPool,
    include_archived: bool,
    page: Page,
) -> Result<Vec<ProjectView>, sqlx::Error> {
    sqlx::query_as(
        "SELECT * FROM projects WHERE $1 OR NOT archived ORDER BY created_at, project_id LIMIT $2 OFFSET $3",
    )
    .bind(include_archived)
    .bind(page.limit)
    .bind(page.offset)
    .fetch_all(pool)
    .await
}

pub async fn project(pool: &PgPool, project_id: Uuid) -> Result<Option<ProjectView>, sqlx::Error> {
    sqlx::query_as("SELECT * FROM projects WHERE project_id = $1")
        .bind(project_id)
        .fetch_optional(pool)
        .await
}

/// The project's most recently changed builds first.
pub async fn builds(
    pool: &PgPool,
    project_id: Uuid,
    page: Page,
) -> Result<Vec<BuildRunView>, sqlx::Error> {
    sqlx::query_as(
        "SELECT * FROM build_runs WHERE project_id = $1
          ORDER BY updated_at DESC, build_run_id LIMIT $2 OFFSET $3",
    )
    .bind(project_id)
    .bind(page.limit)
    .bind(page.offset)
    .fetch_all(pool)
    .await
}

pub async fn build(pool: &PgPool, build_run_id: &str) -> Result<Option<BuildRunView>, sqlx::Error> {
    sqlx::query_as("SELECT * FROM build_runs WHERE build_run_id = $1")
        .bind(build_run_id)
        .fetch_optional(pool)
        .await
}

/// Which subscriptions a listing shows.
#[derive(Debug, Clone, Copy, Default)]
pub struct SubscriptionQuery {
    pub project_id: Option<Uuid>,
    pub subscriber_id: Option<Uuid>,
    pub contact_id: Option<Uuid>,
    pub chat_id: Option<i64>,
}

pub async fn subscriptions(
    pool: &PgPool,
    query: SubscriptionQuery,
    page: Page,
) -> Result<Vec<SubscriptionView>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions
          WHERE active AND ($1::uuid IS NULL OR $1 = ANY(project_ids))
            AND ($2::uuid IS NULL OR subscriber_id = $2) AND ($3::uuid IS NULL OR contact_id = $3)
            AND ($4::bigint IS NULL OR chat_id = $4)
          ORDER BY created_at, subscription_id LIMIT $5 OFFSET $6"
    ))
    .bind(query.project_id)
    .bind(query.subscriber_id)
    .bind(query.contact_id)
    .bind(query.chat_id)
    .bind(page.limit)
    .bind(page.offset)
    .fetch_all(pool)
    .await
}

pub async fn subscription(
    pool: &PgPool,
    subscription_id: Uuid,
) -> Result<Option<SubscriptionView>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE subscription_id = $1"
    ))
    .bind(subscription_id)
    .fetch_optional(pool)
    .await
}

/// Every active subscription that names this project or the owner of `repository`, with its contact and
/// subscriber, for the planner.
pub async fn active_subscriptions(
    pool: &PgPool,
    project_id: Uuid,
    repository: &str,
) -> Result<Vec<PlannerSubscription>, sqlx::Error> {
    let owner = repository
        .split_once('/')
        .map(|(owner, _)| owner.to_lowercase());
    sqlx::query_as(
        "SELECT s.subscription_id, s.version, s.filter, s.chat_id, s.subscriber_id, s.contact_id,
                c.address AS contact_address, c.enabled AS contact_enabled, c.verified AS contact_verified,
                c.removed AS contact_removed, r.muted, r.muted_until, r.language, r.time_zone, r.quiet_start,
                r.quiet_end, r.digest_minutes, r.edit_in_place
           FROM subscriptions s
           LEFT JOIN contacts c ON c.contact_id = s.contact_id
           LEFT JOIN subscribers r ON r.subscriber_id = s.subscriber_id
          WHERE s.active AND ($1 = ANY(s.project_ids) OR s.owner = $2)
          ORDER BY s.subscription_id",
    )
    .bind(project_id)
    .bind(owner)
    .fetch_all(pool)
    .await
}

/// When this subscription last had a message planned for a project, for digest mode.
pub async fn last_planned_for_project(
    pool: &PgPool,
    subscription_id: Uuid,
    project_id: Uuid,
) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT max(planned_at) FROM notifications
          WHERE subscription_id = $1 AND project_id = $2 AND status NOT IN ('suppressed', 'held', 'digested')",
    )
    .bind(subscription_id)
    .bind(project_id)
    .fetch_one(pool)
    .await
}

/// Held notifications whose digest is due: `(subscription, until, notification ids oldest first)`.
pub async fn due_digests(
    pool: &PgPool,
    now: DateTime<Utc>,
) -> Result<Vec<(Uuid, DateTime<Utc>, Vec<Uuid>)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT subscription_id, next_attempt_at, array_agg(notification_id ORDER BY planned_at, notification_id)
           FROM notifications WHERE status = 'held' AND next_attempt_at <= $1
          GROUP BY subscription_id, next_attempt_at ORDER BY next_attempt_at LIMIT 100",
    )
    .bind(now)
    .fetch_all(pool)
    .await
}

/// When this subscription last had a message planned, for its minimum interval.
pub async fn last_planned(
    pool: &PgPool,
    subscription_id: Uuid,
) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT max(planned_at) FROM notifications
          WHERE subscription_id = $1 AND status NOT IN ('suppressed', 'held', 'digested')",
    )
    .bind(subscription_id)
    .fetch_one(pool)
    .await
}

pub async fn notifications_for_build(
    pool: &PgPool,
    build_run_id: &str,
) -> Result<Vec<NotificationView>, sqlx::Error> {
    sqlx::query_as(
        "SELECT * FROM notifications WHERE build_run_id = $1 ORDER BY planned_at, notification_id",
    )
    .bind(build_run_id)
    .fetch_all(pool)
    .await
}

/// Dead letters, oldest first, optionally of one project.
pub async fn dead_letters(
    pool: &PgPool,
    project_id: Option<Uuid>,
    page: Page,
) -> Result<Vec<NotificationView>, sqlx::Error> {
    sqlx::query_as(
        "SELECT * FROM notifications WHERE status = 'dead_lettered' AND ($1::uuid IS NULL OR project_id = $1)
          ORDER BY updated_at, notification_id LIMIT $2 OFFSET $3",
    )
    .bind(project_id)
    .bind(page.limit)
    .bind(page.offset)
    .fetch_all(pool)
    .await
}

pub async fn notification(
    pool: &PgPool,
    notification_id: Uuid,
) -> Result<Option<NotificationView>, sqlx::Error> {
    sqlx::query_as("SELECT * FROM notifications WHERE notification_id = $1")
        .bind(notification_id)
        .fetch_optional(pool)
        .await
}

/// A subscriber with its preferences, mute state and contacts, for `/api/v1/subscribers`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SubscriberView {
    pub subscriber_id: Uuid,
    pub name: String,
    pub preferences: PreferencesView,
    /// Muted now: until `muted_until`, or until unmuted when that is absent.
    pub muted: bool,
    /// When the mute ends; absent when not muted, or muted until unmuted.
    pub muted_until: Option<DateTime<Utc>>,
    /// The contacts that were not removed, oldest first.
    pub contacts: Vec<ContactView>,
    /// Absent only for a subscriber registered a moment ago that the read model has not caught up with.
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
}

/// How a subscriber wants to be told.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct PreferencesView {
    /// An IANA time zone, e.g. `Europe/Berlin`.
    pub time_zone: String,
    /// `en` or `de`.
    pub language: String,
    /// No messages between these wall-clock times in `time_zone` (may wrap midnight).
    pub quiet_hours: Option<QuietHoursView>,
    /// At most one message per this many minutes per project; absent: every message.
    pub digest_minutes: Option<u32>,
    /// A run's verdict edits its "started" Telegram message in place.
    pub edit_in_place: bool,
}

/// Quiet hours as `HH:MM` wall-clock times.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct QuietHoursView {
    /// e.g. `22:00`
    pub start: String,
    /// e.g. `07:00`
    pub end: String,
}

impl From<&domain::Preferences> for PreferencesView {
    fn from(p: &domain::Preferences) -> Self {
        Self {
            time_zone: p.time_zone.as_str().to_owned(),
            language: p.language.as_str().to_owned(),
            quiet_hours: p.quiet_hours.map(|q| QuietHoursView {
                start: q.start.format("%H:%M").to_string(),
                end: q.end.format("%H:%M").to_string(),
            }),
            digest_minutes: p.digest_minutes,
            edit_in_place: p.edit_in_place,
        }
    }
}

/// One contact of a subscriber. Never shows verification hashes, nor a push token or Web Push keys in full.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ContactView {
    pub contact_id: Uuid,
    /// `telegram`, `email`, `fcm` or `web_push`.
    pub kind: String,
    /// Telegram: the chat.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chat_id: Option<i64>,
    /// Telegram: `private`, `group`, `supergroup` or `channel`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chat_type: Option<String>,
    /// Telegram: a forum topic of a supergroup.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topic_id: Option<i64>,
    /// Email: the address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Web Push: the push service's host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub push_service: Option<String>,
    /// FCM and Web Push: the first characters of the token (for Web Push, of the endpoint's last path segment),
    /// enough to tell two devices apart and useless for sending.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_hint: Option<String>,
    /// False for an email address until its owner follows the verification link.
    pub verified: bool,
    /// False once Herald stopped using it (bot blocked, address bounced) or an operator disabled it.
    pub enabled: bool,
    /// Why it is disabled.
    pub disabled_reason: Option<String>,
    /// Absent only for a contact the read model has not caught up with yet.
    pub created_at: Option<DateTime<Utc>>,
}

/// The first eight characters of a secret-ish token, then an ellipsis.
fn token_hint(token: &str) -> String {
    let head: String = token.chars().take(8).collect();
    format!("{head}…")
}

impl ContactView {
    /// A contact as its address and state say, with the secret parts redacted.
    pub fn from_address(
        contact_id: Uuid,
        address: &domain::ContactAddress,
        verified: bool,
        enabled: bool,
    ) -> Self {
        let mut view = Self {
            contact_id,
            kind: address.kind().to_owned(),
            chat_id: None,
            chat_type: None,
            topic_id: None,
            email: None,
            push_service: None,
            token_hint: None,
            verified,
            enabled,
            disabled_reason: None,
            created_at: None,
        };
        match address {
            domain::ContactAddress::Telegram {
                chat_id,
                chat_type,
                topic_id,
            } => {
                view.chat_id = Some(chat_id.get());
                view.chat_type = Some(chat_type.as_str().to_owned());
                view.topic_id = *topic_id;
            }
            domain::ContactAddress::Email { address } => view.email = Some(address.clone()),
            domain::ContactAddress::Fcm { token } => view.token_hint = Some(token_hint(token)),
            domain::ContactAddress::WebPush { endpoint, .. } => {
                let rest = endpoint
                    .split_once("://")
                    .map_or(endpoint.as_str(), |(_, rest)| rest);
                let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
                // Credentials in the authority never show.
                let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
                let path = rest.split(['?', '#']).next().unwrap_or_default();
                let last = path
                    .trim_end_matches('/')
                    .rsplit('/')
                    .next()
                    .unwrap_or_default();
                view.push_service = (!host.is_empty()).then(|| host.to_owned());
                view.token_hint = Some(token_hint(if last == host { "" } else { last }));
            }
        }
        view
    }
}

impl SubscriberView {
    /// A subscriber as its own events say (the read model has not caught up yet): no timestamps, no disable
    /// reasons.
    pub fn from_aggregate(subscriber: &domain::Subscriber, at: DateTime<Utc>) -> Option<Self> {
        let muted = subscriber.is_muted(at);
        Some(Self {
            subscriber_id: subscriber.subscriber_id?,
            name: subscriber.name.clone(),
            preferences: PreferencesView::from(&subscriber.preferences),
            muted,
            muted_until: subscriber.muted.flatten().filter(|_| muted),
            contacts: subscriber
                .contacts
                .iter()
                .map(|(id, c)| ContactView::from_address(*id, &c.address, c.verified, c.enabled))
                .collect(),
            created_at: None,
            updated_at: None,
        })
    }
}

#[derive(sqlx::FromRow)]
struct SubscriberRow {
    subscriber_id: Uuid,
    name: String,
    time_zone: String,
    language: String,
    quiet_start: Option<chrono::NaiveTime>,
    quiet_end: Option<chrono::NaiveTime>,
    digest_minutes: Option<i32>,
    edit_in_place: bool,
    muted_now: bool,
    muted_until: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct ContactRow {
    contact_id: Uuid,
    subscriber_id: Uuid,
    address: sqlx::types::Json<domain::ContactAddress>,
    verified: bool,
    enabled: bool,
    disabled_reason: Option<String>,
    created_at: DateTime<Utc>,
}

const SUBSCRIBER_COLUMNS: &str = "subscriber_id, name, time_zone, language, quiet_start, quiet_end,
    digest_minutes, edit_in_place, (muted AND (muted_until IS NULL OR muted_until > now())) AS muted_now,
    CASE WHEN muted AND muted_until > now() THEN muted_until END AS muted_until, created_at, updated_at";

/// Subscribers, oldest first; `name` keeps those whose name contains it (any case).
pub async fn subscribers(
    pool: &PgPool,
    name: Option<&str>,
    page: Page,
) -> Result<Vec<SubscriberView>, sqlx::Error> {
    let rows: Vec<SubscriberRow> = sqlx::query_as(&format!(
        "SELECT {SUBSCRIBER_COLUMNS} FROM subscribers
          WHERE $1::text IS NULL OR strpos(lower(name), lower($1)) > 0
          ORDER BY created_at, subscriber_id LIMIT $2 OFFSET $3"
    ))
    .bind(name)
    .bind(page.limit)
    .bind(page.offset)
    .fetch_all(pool)
    .await?;
    with_contacts(pool, rows).await
}

pub async fn subscriber(
    pool: &PgPool,
    subscriber_id: Uuid,
) -> Result<Option<SubscriberView>, sqlx::Error> {
    let row: Option<SubscriberRow> = sqlx::query_as(&format!(
        "SELECT {SUBSCRIBER_COLUMNS} FROM subscribers WHERE subscriber_id = $1"
    ))
    .bind(subscriber_id)
    .fetch_optional(pool)
    .await?;
    Ok(with_contacts(pool, row.into_iter().collect()).await?.pop())
}

/// The subscribers' views, each with its contacts (one query for all of them).
async fn with_contacts(
    pool: &PgPool,
    rows: Vec<SubscriberRow>,
) -> Result<Vec<SubscriberView>, sqlx::Error> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<Uuid> = rows.iter().map(|r| r.subscriber_id).collect();
    let contacts: Vec<ContactRow> = sqlx::query_as(
        "SELECT contact_id, subscriber_id, address, verified, enabled, disabled_reason, created_at
           FROM contacts WHERE subscriber_id = ANY($1) AND NOT removed
          ORDER BY created_at, contact_id",
    )
    .bind(&ids)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let quiet_hours =
                row.quiet_start
                    .zip(row.quiet_end)
                    .map(|(start, end)| QuietHoursView {
                        start: start.format("%H:%M").to_string(),
                        end: end.format("%H:%M").to_string(),
                    });
            SubscriberView {
                subscriber_id: row.subscriber_id,
                name: row.name,
                preferences: PreferencesView {
                    time_zone: row.time_zone,
                    language: row.language,
                    quiet_hours,
                    digest_minutes: row.digest_minutes.and_then(|m| u32::try_from(m).ok()),
                    edit_in_place: row.edit_in_place,
                },
                muted: row.muted_now,
                muted_until: row.muted_until,
                contacts: contacts
                    .iter()
                    .filter(|c| c.subscriber_id == row.subscriber_id)
                    .map(|c| ContactView {
                        disabled_reason: c.disabled_reason.clone().filter(|_| !c.enabled),
                        created_at: Some(c.created_at),
                        ..ContactView::from_address(
                            c.contact_id,
                            &c.address.0,
                            c.verified,
                            c.enabled,
                        )
                    })
                    .collect(),
                created_at: Some(row.created_at),
                updated_at: Some(row.updated_at),
            }
        })
        .collect())
}
