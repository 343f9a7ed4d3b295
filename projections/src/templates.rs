//! `templates` and `template_versions`: the current version of each notification template, and every version
//! ever saved; read by the renderer (one row per message) and `/api/v1/templates`. Two projections of the one
//! `Template` stream, because each owns one table and is rebuilt on its own.
//!
//! A reset is stored with `parts` NULL and source `builtin`: the built-in text belongs to the running Herald,
//! not to the log, so this crate never copies it.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use domain::{StoredEvent, TemplateEvent};
use sqlx::types::Json;
use sqlx::PgConnection;

use crate::{decode, Projection, ProjectionError};

/// One version as both tables store it.
struct VersionRow {
    template_id: String,
    version: i32,
    parts: Option<BTreeMap<String, String>>,
    source: &'static str,
    saved_by: String,
    saved_at: DateTime<Utc>,
}

fn row_of(event: &StoredEvent) -> Result<VersionRow, ProjectionError> {
    Ok(match decode::<TemplateEvent>(event)? {
        TemplateEvent::TemplateVersionSaved {
            template_id,
            version,
            parts,
            saved_by,
            saved_at,
        } => VersionRow {
            template_id: template_id.to_string(),
            version: i32::try_from(version).unwrap_or(i32::MAX),
            parts: Some(parts),
            source: "custom",
            saved_by,
            saved_at,
        },
        TemplateEvent::TemplateReset {
            template_id,
            version,
            reset_by,
            reset_at,
        } => VersionRow {
            template_id: template_id.to_string(),
            version: i32::try_from(version).unwrap_or(i32::MAX),
            parts: None,
            source: "builtin",
            saved_by: reset_by,
            saved_at: reset_at,
        },
    })
}

pub struct TemplatesProjection;

#[async_trait]
impl Projection for TemplatesProjection {
    fn name(&self) -> &'static str {
        "templates"
    }

    fn wants(&self, aggregate_type: &str) -> bool {
        aggregate_type == "Template"
    }

    async fn apply(
        &self,
        tx: &mut PgConnection,
        event: &StoredEvent,
    ) -> Result<(), ProjectionError> {
        let row = row_of(event)?;
        // A version never replaces a later one, so an event applied late (or twice) changes nothing.
        sqlx::query(
            "INSERT INTO templates (template_id, version, parts, source, saved_by, saved_at)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (template_id) DO UPDATE
                SET version = EXCLUDED.version, parts = EXCLUDED.parts, source = EXCLUDED.source,
                    saved_by = EXCLUDED.saved_by, saved_at = EXCLUDED.saved_at
              WHERE templates.version < EXCLUDED.version",
        )
        .bind(&row.template_id)
        .bind(row.version)
        .bind(row.parts.map(Json))
        .bind(row.source)
        .bind(&row.saved_by)
        .bind(row.saved_at)
        .execute(tx)
        .await?;
        Ok(())
    }
}

pub struct TemplateVersionsProjection;

#[async_trait]
impl Projection for TemplateVersionsProjection {
    fn name(&self) -> &'static str {
        "template_versions"
    }

    fn wants(&self, aggregate_type: &str) -> bool {
        aggregate_type == "Template"
    }

    async fn apply(
        &self,
        tx: &mut PgConnection,
        event: &StoredEvent,
    ) -> Result<(), ProjectionError> {
        let row = row_of(event)?;
        sqlx::query(
            "INSERT INTO template_versions (template_id, version, parts, source, saved_by, saved_at)
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (template_id, version) DO NOTHING",
        )
        .bind(&row.template_id)
        .bind(row.version)
        .bind(row.parts.map(Json))
        .bind(row.source)
        .bind(&row.saved_by)
        .bind(row.saved_at)
        .execute(tx)
        .await?;
        Ok(())
    }
}
