//! The `Project` aggregate: a thing that CI systems report builds for, with a webhook secret.
//!
//! The secret itself never enters the log (the log is streamed to Kafka and kept forever); events carry only
//! its version and a fingerprint, and the command side keeps the secret in its own table.

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::values::ProjectName;

#[derive(Debug, Clone, PartialEq)]
pub enum ProjectCommand {
    Create {
        project_id: Uuid,
        name: ProjectName,
        secret_fingerprint: String,
        at: DateTime<Utc>,
    },
    Rename {
        name: ProjectName,
        at: DateTime<Utc>,
    },
    RotateSecret {
        secret_version: i32,
        secret_fingerprint: String,
        at: DateTime<Utc>,
    },
    Archive {
        at: DateTime<Utc>,
    },
    RecordPing {
        delivery_id: String,
        hook_id: Option<i64>,
        at: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ProjectEvent {
    ProjectCreated {
        project_id: Uuid,
        name: ProjectName,
        secret_version: i32,
        secret_fingerprint: String,
        created_at: DateTime<Utc>,
    },
    ProjectRenamed {
        name: ProjectName,
        renamed_at: DateTime<Utc>,
    },
    WebhookSecretRotated {
        secret_version: i32,
        secret_fingerprint: String,
        rotated_at: DateTime<Utc>,
    },
    ProjectArchived {
        archived_at: DateTime<Utc>,
    },
    WebhookPinged {
        delivery_id: String,
        hook_id: Option<i64>,
        pinged_at: DateTime<Utc>,
    },
}

impl DomainEvent for ProjectEvent {
    fn event_type(&self) -> String {
        match self {
            Self::ProjectCreated { .. } => "ProjectCreated",
            Self::ProjectRenamed { .. } => "ProjectRenamed",
            Self::WebhookSecretRotated { .. } => "WebhookSecretRotated",
            Self::ProjectArchived { .. } => "ProjectArchived",
            Self::WebhookPinged { .. } => "WebhookPinged",
        }
        .to_owned()
    }
    fn event_version(&self) -> String {
        crate::upcast::current_version(&self.event_type()).to_owned()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProjectError {
    #[error("project not found")]
    NotFound,
    #[error("project already exists")]
    AlreadyExists,
    #[error("project is archived")]
    Archived,
    #[error("secret version must increase: current {current}, given {given}")]
    StaleSecretVersion { current: i32, given: i32 },
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Project {
    pub project_id: Option<Uuid>,
    pub name: Option<ProjectName>,
    pub secret_version: i32,
    pub archived: bool,
    pub created_at: Option<DateTime<Utc>>,
    /// Ping deliveries already recorded, so a redelivered ping records nothing.
    pub pings: Vec<String>,
}

impl Project {
    pub fn exists(&self) -> bool {
        self.project_id.is_some()
    }

    /// Usable: exists and not archived.
    pub fn require_active(&self) -> Result<(), ProjectError> {
        if !self.exists() {
            Err(ProjectError::NotFound)
        } else if self.archived {
            Err(ProjectError::Archived)
        } else {
            Ok(())
        }
    }
}

impl Aggregate for Project {
    const TYPE: &'static str = "Project";
    type Command = ProjectCommand;
    type Event = ProjectEvent;
    type Error = ProjectError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let event = match command {
            ProjectCommand::Create {
                project_id,
                name,
                secret_fingerprint,
                at,
            } => {
                if self.exists() {
                    return Err(ProjectError::AlreadyExists);
                }
                ProjectEvent::ProjectCreated {
                    project_id,
                    name,
                    secret_version: 1,
                    secret_fingerprint,
                    created_at: at,
                }
            }
            ProjectCommand::Rename { name, at } => {
                self.require_active()?;
                if self.name.as_ref() == Some(&name) {
                    return Ok(());
                }
                ProjectEvent::ProjectRenamed {
                    name,
                    renamed_at: at,
                }
            }
            ProjectCommand::RotateSecret {
                secret_version,
                secret_fingerprint,
                at,
            } => {
                self.require_active()?;
                if secret_version <= self.secret_version {
                    return Err(ProjectError::StaleSecretVersion {
                        current: self.secret_version,
                        given: secret_version,
                    });
                }
                ProjectEvent::WebhookSecretRotated {
                    secret_version,
                    secret_fingerprint,
                    rotated_at: at,
                }
            }
            ProjectCommand::Archive { at } => {
                if !self.exists() {
                    return Err(ProjectError::NotFound);
                }
                if self.archived {
                    return Ok(());
                }
                ProjectEvent::ProjectArchived { archived_at: at }
            }
            ProjectCommand::RecordPing {
                delivery_id,
                hook_id,
                at,
            } => {
                self.require_active()?;
                if self.pings.contains(&delivery_id) {
                    return Ok(());
                }
                ProjectEvent::WebhookPinged {
                    delivery_id,
                    hook_id,
                    pinged_at: at,
                }
            }
        };
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            ProjectEvent::ProjectCreated {
                project_id,
                name,
                secret_version,
                created_at,
                ..
            } => {
                self.project_id = Some(project_id);
                self.name = Some(name);
                self.secret_version = secret_version;
                self.created_at = Some(created_at);
            }
            ProjectEvent::ProjectRenamed { name, .. } => self.name = Some(name),
            ProjectEvent::WebhookSecretRotated { secret_version, .. } => {
                self.secret_version = secret_version
            }
            ProjectEvent::ProjectArchived { .. } => self.archived = true,
            ProjectEvent::WebhookPinged { delivery_id, .. } => self.pings.push(delivery_id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::test::TestFramework;

    type Given = TestFramework<Project>;

    fn at() -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000, 0).unwrap()
    }

    fn created() -> ProjectEvent {
        ProjectEvent::ProjectCreated {
            project_id: Uuid::nil(),
            name: ProjectName::parse("api").unwrap(),
            secret_version: 1,
            secret_fingerprint: "f1".into(),
            created_at: at(),
        }
    }

    #[test]
    fn a_project_is_created_once() {
        Given::with(())
            .given(vec![created()])
            .when(ProjectCommand::Create {
                project_id: Uuid::nil(),
                name: ProjectName::parse("api").unwrap(),
                secret_fingerprint: "f".into(),
                at: at(),
            })
            .then_expect_error(ProjectError::AlreadyExists);
    }

    #[test]
    fn an_archived_project_takes_no_pings_or_renames() {
        let archived = vec![
            created(),
            ProjectEvent::ProjectArchived { archived_at: at() },
        ];
        Given::with(())
            .given(archived.clone())
            .when(ProjectCommand::Rename {
                name: ProjectName::parse("web").unwrap(),
                at: at(),
            })
            .then_expect_error(ProjectError::Archived);
        Given::with(())
            .given(archived)
            .when(ProjectCommand::Archive { at: at() })
            .then_expect_events(vec![]);
    }

    #[test]
    fn secret_versions_only_move_forward() {
        Given::with(())
            .given(vec![created()])
            .when(ProjectCommand::RotateSecret {
                secret_version: 1,
                secret_fingerprint: "f2".into(),
                at: at(),
            })
            .then_expect_error(ProjectError::StaleSecretVersion {
                current: 1,
                given: 1,
            });
    }

    #[test]
    fn a_redelivered_ping_records_nothing() {
        let ping = ProjectEvent::WebhookPinged {
            delivery_id: "d1".into(),
            hook_id: Some(7),
            pinged_at: at(),
        };
        Given::with(())
            .given(vec![created(), ping])
            .when(ProjectCommand::RecordPing {
                delivery_id: "d1".into(),
                hook_id: Some(7),
                at: at(),
            })
            .then_expect_events(vec![]);
    }

    #[test]
    fn commands_on_a_missing_project_are_refused() {
        Given::with(())
            .given_no_previous_events()
            .when(ProjectCommand::Archive { at: at() })
            .then_expect_error(ProjectError::NotFound);
    }
}
