//! Notification templates: saving and resetting versions (commands on the `Template` aggregate), reading them
//! (the `templates` and `template_versions` read models), and rendering a message with the current version.
//!
//! A template is validated here, before anything is commanded, so an invalid template never becomes an event.
//! Rendering reads the current version with one indexed query per message and keeps compiled templates in a
//! cache keyed by `(id, version)`: a saved version is used by the next message in every process, without a
//! restart, and an old compiled version is simply never asked for again.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use domain::{Template, TemplateCommand, TemplateId, TemplateVersionError};
use serde::Serialize;
use sqlx::PgPool;

use crate::template::{builtin, builtin_reference, CompiledTemplate};
pub use crate::template::{BuildContext, Rendered, TemplateError, TemplateErrorKind};
use crate::{CommandError, Executor, Metadata};
pub use domain::{Language, TemplateChannel, TemplateKind};

/// Compiled templates kept per process: 12 ids, a few live versions each.
const CACHE_CAPACITY: u64 = 256;
/// A compiled version nobody rendered for this long is dropped (it was probably replaced).
const CACHE_IDLE: std::time::Duration = std::time::Duration::from_secs(3600);

/// Whether a version is Herald's built-in text or one somebody saved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TemplateSource {
    Builtin,
    Custom,
}

impl TemplateSource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Builtin => "builtin",
            Self::Custom => "custom",
        }
    }
}

/// One version of a template, current or past.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct TemplateVersionView {
    /// `{kind}.{channel}.{language}`.
    #[schema(value_type = String)]
    pub template_id: TemplateId,
    /// 0: the built-in text, never replaced; then 1, 2, ... for every save and reset.
    pub version: u32,
    pub source: TemplateSource,
    /// The parts; for a built-in version, the built-in text of the running Herald.
    pub parts: BTreeMap<String, String>,
    /// Who saved or reset it (`key:<prefix>`, `jwt:<subject>`); none for version 0.
    pub saved_by: Option<String>,
    pub saved_at: Option<DateTime<Utc>>,
    /// What notifications rendered from it record: `builtin/{id}@{n}` or `{id}@{version}`.
    pub reference: String,
}

impl TemplateVersionView {
    fn builtin(template_id: TemplateId) -> Self {
        Self {
            template_id,
            version: 0,
            source: TemplateSource::Builtin,
            parts: builtin(template_id),
            saved_by: None,
            saved_at: None,
            reference: builtin_reference(template_id),
        }
    }

    fn from_row(template_id: TemplateId, row: VersionRow) -> Self {
        let version = u32::try_from(row.version).unwrap_or_default();
        match row.parts {
            Some(sqlx::types::Json(parts)) if row.source == "custom" => Self {
                template_id,
                version,
                source: TemplateSource::Custom,
                parts,
                saved_by: Some(row.saved_by),
                saved_at: Some(row.saved_at),
                reference: format!("{template_id}@{version}"),
            },
            _ => Self {
                version,
                saved_by: Some(row.saved_by),
                saved_at: Some(row.saved_at),
                ..Self::builtin(template_id)
            },
        }
    }
}

#[derive(sqlx::FromRow)]
struct VersionRow {
    template_id: String,
    version: i32,
    parts: Option<sqlx::types::Json<BTreeMap<String, String>>>,
    source: String,
    saved_by: String,
    saved_at: DateTime<Utc>,
}

/// What a save or reset did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Saved {
    /// The current version afterwards.
    pub version: u32,
    /// False when nothing was recorded (the same parts again, or a reset of a built-in).
    pub recorded: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum TemplatesError {
    /// The parts do not fit the channel, do not compile, or use unknown variables or helpers.
    #[error(transparent)]
    Invalid(#[from] TemplateError),
    #[error("template {template_id} is at version {current}, not {expected}: someone saved it meanwhile; reload and save again")]
    Conflict {
        template_id: TemplateId,
        expected: u32,
        current: u32,
    },
    #[error("template {template_id} has no version {version}")]
    NoSuchVersion {
        template_id: TemplateId,
        version: u32,
    },
    #[error(transparent)]
    Command(#[from] CommandError),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

/// The aggregate's own refusals. The service checks versions and parts before commanding, so only a race
/// (another save between the check and the commit) reaches this, as a conflict.
impl From<TemplateVersionError> for CommandError {
    fn from(e: TemplateVersionError) -> Self {
        match e {
            TemplateVersionError::Conflict { template_id, .. } => {
                CommandError::Conflict(template_id.to_string())
            }
            other => CommandError::Store(other.to_string()),
        }
    }
}

/// Templates: save, reset, read, render.
pub struct Templates {
    pool: PgPool,
    templates: Executor<Template>,
    compiled: moka::future::Cache<String, Arc<CompiledTemplate>>,
}

impl Templates {
    pub fn new(pool: PgPool) -> Self {
        Self {
            templates: Executor::new(pool.clone(), ()),
            pool,
            compiled: moka::future::Cache::builder()
                .max_capacity(CACHE_CAPACITY)
                .time_to_idle(CACHE_IDLE)
                .build(),
        }
    }

    /// Render the message for one kind, channel and language with the current version of its template.
    ///
    /// A stored version that no longer compiles (a variable a later Herald dropped) falls back to the built-in
    /// text, logged, so subscribers are still told; `Rendered::template` then names the built-in.
    pub async fn render(
        &self,
        kind: TemplateKind,
        channel: TemplateChannel,
        language: Language,
        context: &BuildContext,
    ) -> Result<Rendered, TemplateError> {
        let id = TemplateId::new(kind, channel, language);
        let current = self
            .current(id)
            .await
            .map_err(|e| TemplateError::unavailable(format!("reading template {id}: {e}")))?;
        let compiled = match self.compiled(&current).await {
            Ok(compiled) => compiled,
            Err(e) if current.source == TemplateSource::Custom => {
                tracing::warn!(template = %current.reference, error = %e, "stored template does not compile; using the built-in");
                self.compiled(&TemplateVersionView::builtin(id)).await?
            }
            Err(e) => return Err(e),
        };
        compiled.render(context)
    }

    /// Render `parts` (a draft, validated like a save) or, without them, the current version: what the preview
    /// shows. A draft is compiled afresh and not cached.
    pub async fn preview(
        &self,
        id: TemplateId,
        parts: Option<&BTreeMap<String, String>>,
        context: &BuildContext,
    ) -> Result<Rendered, TemplatesError> {
        let compiled = match parts {
            Some(parts) => Arc::new(CompiledTemplate::compile(id, parts, format!("{id}@draft"))?),
            None => self.compiled(&self.current(id).await?).await?,
        };
        Ok(compiled.render(context)?)
    }

    async fn compiled(
        &self,
        version: &TemplateVersionView,
    ) -> Result<Arc<CompiledTemplate>, TemplateError> {
        let key = version.reference.clone();
        self.compiled
            .try_get_with(key.clone(), async {
                CompiledTemplate::compile(version.template_id, &version.parts, key).map(Arc::new)
            })
            .await
            .map_err(|e: Arc<TemplateError>| e.as_ref().clone())
    }

    /// The current version of `id`: the last one saved, or the built-in.
    pub async fn current(&self, id: TemplateId) -> Result<TemplateVersionView, sqlx::Error> {
        let row: Option<VersionRow> = sqlx::query_as(
            "SELECT template_id, version, parts, source, saved_by, saved_at FROM templates WHERE template_id = $1",
        )
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await?;
        Ok(match row {
            Some(row) => TemplateVersionView::from_row(id, row),
            None => TemplateVersionView::builtin(id),
        })
    }

    /// The current version of every template, in [`TemplateId::all`]'s order.
    pub async fn list(&self) -> Result<Vec<TemplateVersionView>, sqlx::Error> {
        let rows: Vec<VersionRow> = sqlx::query_as(
            "SELECT template_id, version, parts, source, saved_by, saved_at FROM templates",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut saved: BTreeMap<String, VersionRow> = rows
            .into_iter()
            .map(|row| (row.template_id.clone(), row))
            .collect();
        Ok(TemplateId::all()
            .into_iter()
            .map(|id| match saved.remove(&id.to_string()) {
                Some(row) => TemplateVersionView::from_row(id, row),
                None => TemplateVersionView::builtin(id),
            })
            .collect())
    }

    /// Every version of `id`, oldest first, starting with the built-in (version 0).
    pub async fn versions(&self, id: TemplateId) -> Result<Vec<TemplateVersionView>, sqlx::Error> {
        let rows: Vec<VersionRow> = sqlx::query_as(
            "SELECT template_id, version, parts, source, saved_by, saved_at FROM template_versions
              WHERE template_id = $1 ORDER BY version",
        )
        .bind(id.to_string())
        .fetch_all(&self.pool)
        .await?;
        let mut versions = vec![TemplateVersionView::builtin(id)];
        versions.extend(
            rows.into_iter()
                .map(|row| TemplateVersionView::from_row(id, row)),
        );
        Ok(versions)
    }

    /// One version of `id` (0: the built-in).
    pub async fn version(
        &self,
        id: TemplateId,
        version: u32,
    ) -> Result<TemplateVersionView, TemplatesError> {
        if version == 0 {
            return Ok(TemplateVersionView::builtin(id));
        }
        let row: Option<VersionRow> = sqlx::query_as(
            "SELECT template_id, version, parts, source, saved_by, saved_at FROM template_versions
              WHERE template_id = $1 AND version = $2",
        )
        .bind(id.to_string())
        .bind(i32::try_from(version).unwrap_or(i32::MAX))
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| TemplateVersionView::from_row(id, row))
            .ok_or(TemplatesError::NoSuchVersion {
                template_id: id,
                version,
            })
    }

    /// Save `parts` as the new current version of `id`, after validating them. `expected_version`: the version
    /// the editor started from (a different current version is a conflict). The same parts as the current ones
    /// record nothing.
    pub async fn save(
        &self,
        id: TemplateId,
        parts: BTreeMap<String, String>,
        expected_version: Option<u32>,
        by: &str,
        metadata: &Metadata,
    ) -> Result<Saved, TemplatesError> {
        crate::template::validate(id, &parts)?;
        let current = self.templates.load(&id.to_string()).await?;
        if let Some(expected) = expected_version.filter(|e| *e != current.version) {
            return Err(TemplatesError::Conflict {
                template_id: id,
                expected,
                current: current.version,
            });
        }
        let command = TemplateCommand::SaveVersion {
            template_id: id,
            parts,
            expected_version,
            by: by.to_owned(),
            at: Utc::now(),
        };
        self.command(id, command, metadata).await
    }

    /// Go back to the built-in text of `id`, as a new version; nothing is recorded when it is built-in already.
    pub async fn reset(
        &self,
        id: TemplateId,
        by: &str,
        metadata: &Metadata,
    ) -> Result<Saved, TemplatesError> {
        let command = TemplateCommand::Reset {
            template_id: id,
            by: by.to_owned(),
            at: Utc::now(),
        };
        self.command(id, command, metadata).await
    }

    async fn command(
        &self,
        id: TemplateId,
        command: TemplateCommand,
        metadata: &Metadata,
    ) -> Result<Saved, TemplatesError> {
        let committed = self
            .templates
            .execute(&id.to_string(), command, metadata)
            .await?;
        let version = match committed.last() {
            Some(event) => match &event.payload {
                domain::TemplateEvent::TemplateVersionSaved { version, .. }
                | domain::TemplateEvent::TemplateReset { version, .. } => *version,
            },
            None => self.templates.load(&id.to_string()).await?.version,
        };
        Ok(Saved {
            version,
            recorded: !committed.is_empty(),
        })
    }
}
