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
                c.removed AS contact_removed, r.muted, r.muted_until, r.language
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

/// When this subscription last had a message planned, for its minimum interval.
pub async fn last_planned(
    pool: &PgPool,
    subscription_id: Uuid,
) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT max(planned_at) FROM notifications WHERE subscription_id = $1 AND status <> 'suppressed'",
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
