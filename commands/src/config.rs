//! Configuration export and import: projects and subscriptions as one JSON document, to move a Herald's setup
//! to another Herald or keep it in version control. Import goes through the same commands as the API, so every
//! imported project and subscription is an event; importing the same document twice changes nothing.
//! (Templates join the document when they become configurable.)

use chrono::{DateTime, Utc};
use domain::{ChatId, OutcomeFilter, ProjectName};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

use crate::{CommandError, Commands, Metadata};

pub const FORMAT: &str = "herald-config";
pub const VERSION: u32 = 1;

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
    pub project_id: Uuid,
    pub chat_id: i64,
    pub outcomes: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ImportReport {
    pub projects_created: usize,
    pub projects_existing: usize,
    pub subscriptions_created: usize,
    pub subscriptions_existing: usize,
    /// New secrets of imported projects that came without one: shown once, here.
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
    let subscriptions: Vec<(Uuid, Uuid, i64, Vec<String>)> = sqlx::query_as(
        "SELECT subscription_id, project_id, chat_id, outcomes FROM subscriptions WHERE active
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
            .map(
                |(subscription_id, project_id, chat_id, outcomes)| SubscriptionConfig {
                    subscription_id,
                    project_id,
                    chat_id,
                    outcomes,
                },
            )
            .collect(),
    })
}

/// Check the whole document before the first command, so a bad document changes nothing.
fn validate(document: &ConfigDocument) -> Result<(), ConfigError> {
    if document.format != FORMAT || document.version != VERSION {
        return Err(ConfigError::Invalid(format!(
            "format {:?} version {} (expected {FORMAT:?} version {VERSION})",
            document.format, document.version
        )));
    }
    for project in &document.projects {
        ProjectName::parse(&project.name)
            .map_err(|e| ConfigError::Invalid(format!("project {}: {e}", project.project_id)))?;
    }
    for subscription in &document.subscriptions {
        let id = subscription.subscription_id;
        ChatId::parse(subscription.chat_id)
            .map_err(|e| ConfigError::Invalid(format!("subscription {id}: {e}")))?;
        for outcome in &subscription.outcomes {
            outcome
                .parse::<OutcomeFilter>()
                .map_err(|e| ConfigError::Invalid(format!("subscription {id}: {e}")))?;
        }
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
        let chat_id =
            ChatId::parse(subscription.chat_id).map_err(|e| ConfigError::Invalid(e.to_string()))?;
        let outcomes = subscription
            .outcomes
            .iter()
            .map(|o| o.parse::<OutcomeFilter>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        commands
            .subscribe_with(
                subscription.subscription_id,
                subscription.project_id,
                chat_id,
                outcomes,
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
