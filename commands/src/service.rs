//! The command services: the only door to the write side, used by the HTTP edge and the workers alike.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::Utc;
use cqrs_es::DomainEvent;
use domain::{
    BuildEvent, BuildHistory, BuildRun, BuildRunCommand, Notification, NotificationCommand,
    NotificationError, Project, ProjectCommand, ProjectError, ProjectName, Subscriber,
    Subscription,
};
use sqlx::PgPool;
use uuid::Uuid;

use crate::deliveries::{Delivery, DeliveryLog, DeliveryLogError};
use crate::history::{AnsweredHistory, PgBuildHistory};
use crate::outbox_signal::LocalRelay;
use crate::webhook_target::{self, PreparedRun, WebhookTarget};
use crate::{secrets, CommandError, Decided, Executor, Loaded};

/// Who or what caused a command (delivery id, user agent, ...), stored as the events' metadata.
pub type Metadata = HashMap<String, String>;

/// What recording a build webhook did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedBuild {
    pub build_run_id: String,
    /// Types of the events committed; empty when the delivery changed nothing (seen before, or stale).
    pub events: Vec<String>,
    /// Nothing was recorded because this delivery id was recorded before.
    pub duplicate: bool,
}

pub struct Commands {
    pub(crate) pool: PgPool,
    projects: Executor<Project>,
    builds: Executor<BuildRun>,
    /// The builds' own history, for questions a prepared run did not answer.
    history: Arc<dyn BuildHistory>,
    pub(crate) subscribers: Executor<Subscriber>,
    pub(crate) subscriptions: Executor<Subscription>,
    notifications: Executor<Notification>,
    /// Shared by the executors above: see [`crate::outbox_signal`].
    local_relay: Arc<LocalRelay>,
    delivery_log: DeliveryLog,
    secret_overlap: std::time::Duration,
}

/// An executor whose commits wake this process's relay while it leads.
fn executor<A>(pool: &PgPool, services: A::Services, local: &Arc<LocalRelay>) -> Executor<A>
where
    A: cqrs_es::Aggregate,
    A::Command: Clone,
    CommandError: From<A::Error>,
{
    Executor::new(pool.clone(), services).with_local_relay(local.clone())
}

/// How long a rotated-out webhook secret keeps working, so CI systems can be switched to the new one without
/// a window of refused webhooks.
pub const DEFAULT_SECRET_OVERLAP: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

impl Commands {
    pub fn new(pool: PgPool) -> Self {
        let history: Arc<dyn BuildHistory> = Arc::new(PgBuildHistory::new(pool.clone()));
        let local_relay = Arc::new(LocalRelay::default());
        Self {
            projects: executor(&pool, (), &local_relay),
            builds: executor(&pool, history.clone(), &local_relay),
            history,
            subscribers: executor(&pool, (), &local_relay),
            subscriptions: executor(&pool, (), &local_relay),
            notifications: executor(&pool, (), &local_relay),
            local_relay,
            delivery_log: DeliveryLog::new(pool.clone()),
            pool,
            secret_overlap: DEFAULT_SECRET_OVERLAP,
        }
    }

    /// The wake-up of a relay in this process: give it to the relay (`Relay::with_local`) so that these
    /// commands' commits reach it without a notice through Postgres.
    pub fn local_relay(&self) -> Arc<LocalRelay> {
        self.local_relay.clone()
    }

    /// Keep the previous webhook secret valid this long after a rotation (zero: not at all).
    pub fn with_secret_overlap(mut self, overlap: std::time::Duration) -> Self {
        self.secret_overlap = overlap;
        self
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// List a webhook delivery in its project's delivery log; returns once the line is committed.
    pub async fn record_delivery(&self, delivery: &Delivery<'_>) -> Result<(), DeliveryLogError> {
        self.delivery_log.record(delivery).await
    }

    /// Create a project; returns its id and its webhook secret (shown once to the caller).
    pub async fn create_project(
        &self,
        name: ProjectName,
        metadata: &Metadata,
    ) -> Result<(Uuid, String), CommandError> {
        self.create_project_with(Uuid::new_v4(), name, secrets::generate(), metadata)
            .await
    }

    /// Create a project with a given id and secret (a configuration import); refused if the id exists.
    pub async fn create_project_with(
        &self,
        project_id: Uuid,
        name: ProjectName,
        secret: String,
        metadata: &Metadata,
    ) -> Result<(Uuid, String), CommandError> {
        if self.project(project_id).await?.exists() {
            return Err(ProjectError::AlreadyExists.into());
        }
        // The secret row is written first: if the command then fails, an unused secret row is harmless, while
        // a project without its secret could never verify a webhook.
        secrets::store(&self.pool, project_id, 1, &secret).await?;
        let command = ProjectCommand::Create {
            project_id,
            name,
            secret_fingerprint: secrets::fingerprint(&secret),
            at: Utc::now(),
        };
        self.projects
            .execute(&project_id.to_string(), command, metadata)
            .await?;
        Ok((project_id, secret))
    }

    pub async fn rename_project(
        &self,
        project_id: Uuid,
        name: ProjectName,
        metadata: &Metadata,
    ) -> Result<(), CommandError> {
        let command = ProjectCommand::Rename {
            name,
            at: Utc::now(),
        };
        self.projects
            .execute(&project_id.to_string(), command, metadata)
            .await?;
        Ok(())
    }

    pub async fn archive_project(
        &self,
        project_id: Uuid,
        metadata: &Metadata,
    ) -> Result<(), CommandError> {
        let command = ProjectCommand::Archive { at: Utc::now() };
        self.projects
            .execute(&project_id.to_string(), command, metadata)
            .await?;
        Ok(())
    }

    /// Replace the webhook secret; returns the new one.
    pub async fn rotate_secret(
        &self,
        project_id: Uuid,
        metadata: &Metadata,
    ) -> Result<String, CommandError> {
        let project = self.active_project(project_id).await?;
        let version = project.secret_version + 1;
        let secret = secrets::generate();
        secrets::store(&self.pool, project_id, version, &secret).await?;
        let command = ProjectCommand::RotateSecret {
            secret_version: version,
            secret_fingerprint: secrets::fingerprint(&secret),
            at: Utc::now(),
        };
        self.projects
            .execute(&project_id.to_string(), command, metadata)
            .await?;
        Ok(secret)
    }

    /// The project as its events say it is now.
    pub async fn project(&self, project_id: Uuid) -> Result<Project, CommandError> {
        self.projects.load(&project_id.to_string()).await
    }

    /// The project, if it exists and is not archived.
    pub async fn active_project(&self, project_id: Uuid) -> Result<Project, CommandError> {
        let project = self.project(project_id).await?;
        project.require_active()?;
        Ok(project)
    }

    /// The active project a webhook is for and the secrets it may be signed with (the current one, and the
    /// previous one while it is inside the rotation overlap), in one round trip.
    pub async fn webhook_target(&self, project_id: Uuid) -> Result<WebhookTarget, CommandError> {
        webhook_target::load(&self.pool, project_id, self.secret_overlap).await
    }

    pub async fn record_ping(
        &self,
        project_id: Uuid,
        delivery_id: String,
        hook_id: Option<i64>,
        metadata: &Metadata,
    ) -> Result<bool, CommandError> {
        let command = ProjectCommand::RecordPing {
            delivery_id,
            hook_id,
            at: Utc::now(),
        };
        let events = self
            .projects
            .execute(&project_id.to_string(), command, metadata)
            .await?;
        Ok(!events.is_empty())
    }

    /// [`Commands::webhook_target`] for a build webhook, with its run read in the same statement for
    /// [`Commands::record_build`] (see `webhook_target`'s docs). The outer error is the database's.
    pub async fn build_webhook_target(
        &self,
        project_id: Uuid,
        event: &BuildEvent,
    ) -> Result<(Result<WebhookTarget, CommandError>, Option<PreparedRun>), CommandError> {
        webhook_target::load_for_build(&self.pool, project_id, self.secret_overlap, event).await
    }

    /// Record one normalized build webhook on its `BuildRun`. `prepared`, when given, is the run as read with the
    /// webhook's target: the first decision is made on it instead of reading the run again.
    pub async fn record_build(
        &self,
        event: BuildEvent,
        delivery_id: String,
        metadata: &Metadata,
        prepared: Option<PreparedRun>,
    ) -> Result<RecordedBuild, CommandError> {
        // Checked before the run is decided, not only at the append: the run's fields are query parameters on
        // the way (its previous verdict), and Postgres refuses a NUL there as a database error.
        if let Some(path) = crate::event_log::nul_in_webhook(&event) {
            return Err(crate::NulInText { path }.into());
        }
        let build_run_id = event.run.build_run_id();
        let loaded = prepared
            .filter(|p| p.build_run_id == build_run_id)
            .map(|p| Loaded {
                events: p.events,
                services: p.previous.map(|(run, previous)| {
                    Arc::new(AnsweredHistory {
                        run,
                        previous,
                        rest: self.history.clone(),
                    }) as Arc<dyn BuildHistory>
                }),
            });
        let command = BuildRunCommand::Record {
            event,
            delivery_id: delivery_id.clone(),
        };
        let decided = self
            .builds
            .decide(&build_run_id, command, metadata, loaded)
            .await?;
        Ok(match decided {
            Decided::Committed(events) => RecordedBuild {
                build_run_id,
                events: events.iter().map(|e| e.payload.event_type()).collect(),
                duplicate: false,
            },
            // Nothing new: a redelivery (this delivery id was recorded) or a stale event.
            Decided::Unchanged(run) => RecordedBuild {
                build_run_id,
                events: Vec::new(),
                duplicate: run.deliveries.contains(&delivery_id),
            },
        })
    }

    /// Send a dead letter again (an operator's decision, recorded with who made it).
    pub async fn redrive(
        &self,
        notification_id: Uuid,
        by: &str,
        metadata: &Metadata,
    ) -> Result<(), CommandError> {
        self.existing_notification(notification_id).await?;
        let command = NotificationCommand::Redrive {
            by: by.to_owned(),
            at: Utc::now(),
        };
        self.notifications
            .execute(&notification_id.to_string(), command, metadata)
            .await?;
        Ok(())
    }

    /// Give a dead letter up for good.
    pub async fn discard(
        &self,
        notification_id: Uuid,
        by: &str,
        reason: &str,
        metadata: &Metadata,
    ) -> Result<(), CommandError> {
        self.existing_notification(notification_id).await?;
        let command = NotificationCommand::Discard {
            by: by.to_owned(),
            reason: reason.to_owned(),
            at: Utc::now(),
        };
        self.notifications
            .execute(&notification_id.to_string(), command, metadata)
            .await?;
        Ok(())
    }

    async fn existing_notification(
        &self,
        notification_id: Uuid,
    ) -> Result<Notification, CommandError> {
        let notification = self
            .notifications
            .load(&notification_id.to_string())
            .await?;
        if notification.notification_id.is_none() {
            return Err(NotificationError::NotPlanned.into());
        }
        Ok(notification)
    }

    /// Does this subscription exist (active or not)?
    pub async fn subscription_exists(&self, subscription_id: Uuid) -> Result<bool, CommandError> {
        Ok(self
            .subscriptions
            .load(&subscription_id.to_string())
            .await?
            .subscription_id
            .is_some())
    }

    /// The current webhook secret of a project, for a configuration export.
    pub async fn current_secret(&self, project_id: Uuid) -> Result<Option<String>, CommandError> {
        let project = self.project(project_id).await?;
        if !project.exists() {
            return Ok(None);
        }
        Ok(secrets::load(&self.pool, project_id, project.secret_version).await?)
    }

    /// Notifications are commanded by the planner and the delivery workers.
    pub fn notifications(&self) -> &Executor<Notification> {
        &self.notifications
    }
}
