//! Configuration export and import: projects and subscriptions as one JSON document, to move a Herald's setup
//! to another Herald or keep it in version control. Import goes through the same commands as the API, so every
//! imported project and subscription is an event; importing the same document twice changes nothing.
//! (Templates join the document when they become configurable.)

use chrono::{DateTime, Utc};
use domain::{ChatId, ProjectName, SubscriptionFilter, SubscriptionTarget};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

use crate::subscribers::FilterInput;
use crate::{CommandError, Commands, Metadata};

pub const FORMAT: &str = "herald-config";
/// Version 2 carries whole subscription filters; version 1 documents (`project_id`, `chat_id`, `outcomes`)
/// still import, since that shape is a subset of version 2's.
pub const VERSION: u32 = 2;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfigDocument {
    pub format: String,
    pub version: u32,
    pub exported_at: DateTime<Utc>,
    pub projects: Vec<ProjectConfig>,
    pub subscriptions: Vec<SubscriptionConfig>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProjectConfig {
    pub project_id: Uuid,
    pub name: String,
    #[serde(default)]
    pub archived: bool,
    /// Only with `--include-secrets`; without it an imported project gets a new secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_secret: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionConfig {
    pub subscription_id: Uuid,
    pub chat_id: i64,
    /// Version 2: the whole filter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<FilterInput>,
    /// Version 1: one project ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_id: Option<Uuid>,
    /// ... and its outcomes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcomes: Option<Vec<String>>,
}

impl SubscriptionConfig {
    fn checked(&self) -> Result<(ChatId, SubscriptionFilter), ConfigError> {
        let id = self.subscription_id;
        let invalid =
            |e: domain::InvalidValue| ConfigError::Invalid(format!("subscription {id}: {e}"));
        let filter = match (&self.filter, self.project_id) {
            (Some(filter), None) if self.outcomes.is_none() => filter.clone(),
            (None, Some(project_id)) => FilterInput {
                project_id: Some(project_id),
                outcomes: self.outcomes.clone(),
                ..FilterInput::default()
            },
            _ => {
                return Err(ConfigError::Invalid(format!(
                    "subscription {id}: give either `filter` or `project_id` with `outcomes`"
                )))
            }
        };
        Ok((
            ChatId::parse(self.chat_id).map_err(invalid)?,
            filter.parse().map_err(invalid)?,
        ))
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ImportReport {
    pub projects_created: usize,
    pub projects_existing: usize,
    pub subscriptions_created: usize,
    pub subscriptions_existing: usize,
    /// New secrets of imported projects that came without one, as `[project_id, secret]` pairs: shown once,
    /// here. (Described as pairs of strings: the tuple schema utoipa derives is not valid OpenAPI 3.1.)
    #[schema(value_type = Vec<Vec<String>>)]
    pub new_secrets: Vec<(Uuid, String)>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("not a Herald configuration: {0}")]
    Invalid(String),
    #[error(transparent)]
    Command(#[from] CommandError),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

/// The configuration as the read models hold it now.
pub async fn export(
    pool: &PgPool,
    commands: &Commands,
    include_secrets: bool,
) -> Result<ConfigDocument, ConfigError> {
    let projects: Vec<(Uuid, String, bool)> = sqlx::query_as(
        "SELECT project_id, name, archived FROM projects ORDER BY created_at, project_id",
    )
    .fetch_all(pool)
    .await?;
    let mut project_configs = Vec::with_capacity(projects.len());
    for (project_id, name, archived) in projects {
        let webhook_secret = if include_secrets {
            commands.current_secret(project_id).await?
        } else {
            None
        };
        project_configs.push(ProjectConfig {
            project_id,
            name,
            archived,
            webhook_secret,
        });
    }
    let subscriptions: Vec<(Uuid, i64, sqlx::types::Json<SubscriptionFilter>)> = sqlx::query_as(
        "SELECT subscription_id, chat_id, filter FROM subscriptions
          WHERE active AND subscriber_id IS NULL AND chat_id IS NOT NULL
          ORDER BY created_at, subscription_id",
    )
    .fetch_all(pool)
    .await?;
    Ok(ConfigDocument {
        format: FORMAT.to_owned(),
        version: VERSION,
        exported_at: Utc::now(),
        projects: project_configs,
        subscriptions: subscriptions
            .into_iter()
            .map(|(subscription_id, chat_id, filter)| SubscriptionConfig {
                subscription_id,
                chat_id,
                filter: Some(FilterInput::from_filter(&filter)),
                project_id: None,
                outcomes: None,
            })
            .collect(),
    })
}

/// Check the whole document before the first command, so a bad document changes nothing.
fn validate(document: &ConfigDocument) -> Result<(), ConfigError> {
    if document.format != FORMAT || !(1..=VERSION).contains(&document.version) {
        return Err(ConfigError::Invalid(format!(
            "format {:?} version {} (expected {FORMAT:?} version 1 to {VERSION})",
            document.format, document.version
        )));
    }
    for project in &document.projects {
        ProjectName::parse(&project.name)
            .map_err(|e| ConfigError::Invalid(format!("project {}: {e}", project.project_id)))?;
    }
    for subscription in &document.subscriptions {
        subscription.checked()?;
    }
    Ok(())
}

pub async fn import(
    commands: &Commands,
    document: &ConfigDocument,
) -> Result<ImportReport, ConfigError> {
    validate(document)?;
    let metadata = Metadata::from([("source".to_owned(), "config-import".to_owned())]);
    let mut report = ImportReport::default();
    for project in &document.projects {
        if commands.project(project.project_id).await?.exists() {
            report.projects_existing += 1;
            continue;
        }
        let name =
            ProjectName::parse(&project.name).map_err(|e| ConfigError::Invalid(e.to_string()))?;
        let secret = project
            .webhook_secret
            .clone()
            .unwrap_or_else(crate::secrets::generate);
        commands
            .create_project_with(project.project_id, name, secret.clone(), &metadata)
            .await?;
        if project.webhook_secret.is_none() {
            report.new_secrets.push((project.project_id, secret));
        }
        report.projects_created += 1;
    }
    for subscription in &document.subscriptions {
        if commands
            .subscription_exists(subscription.subscription_id)
            .await?
        {
            report.subscriptions_existing += 1;
            continue;
        }
        let (chat_id, filter) = subscription.checked()?;
        commands
            .subscribe_with(
                subscription.subscription_id,
                SubscriptionTarget::Chat { chat_id },
                filter,
                &metadata,
            )
            .await?;
        report.subscriptions_created += 1;
    }
    // Archive last, so subscriptions of archived projects could still be recorded above.
    for project in document.projects.iter().filter(|p| p.archived) {
        commands
            .archive_project(project.project_id, &metadata)
            .await?;
    }
    Ok(report)
}
