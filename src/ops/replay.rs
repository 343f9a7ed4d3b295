//! `herald replay`: the notification trail on a terminal (a table), or as JSON / NDJSON for tools.

use std::io::Write;

use projections::audit::{self, Scope};
use sqlx::PgPool;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
    Ndjson,
}

pub async fn run(pool: &PgPool, scope: &Scope, format: Format) -> anyhow::Result<()> {
    let entries = audit::trail(pool, scope).await?;
    let mut out = std::io::stdout().lock();
    match format {
        Format::Json => writeln!(out, "{}", serde_json::to_string_pretty(&entries)?)?,
        Format::Ndjson => {
            for entry in &entries {
                writeln!(out, "{}", serde_json::to_string(entry)?)?;
            }
        }
        Format::Table => {
            writeln!(
                out,
                "{:<24}  {:<12}  {:<22}  what",
                "when (UTC)", "aggregate", "event"
            )?;
            for e in &entries {
                let short_id: String = e
                    .aggregate_id
                    .chars()
                    .rev()
                    .take(8)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect();
                writeln!(
                    out,
                    "{:<24}  {:<12}  {:<22}  {}",
                    e.at.format("%Y-%m-%d %H:%M:%S%.3f"),
                    format!(
                        "{}…{short_id}",
                        &e.aggregate_type[..e.aggregate_type.len().min(3)]
                    ),
                    e.event_type,
                    e.summary
                )?;
            }
            writeln!(out, "{} entries", entries.len())?;
        }
    }
    Ok(())
}
