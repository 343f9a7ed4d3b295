//! `herald dlq list|show|redrive|discard`: the same operations as `/api/v1/dlq`, from a terminal.

use anyhow::Context;
use commands::{Commands, Metadata};
use projections::queries::{self, Page};
use sqlx::PgPool;
use uuid::Uuid;

pub enum Action {
    List { project: Option<Uuid>, limit: i64 },
    Show(Uuid),
    Redrive(Uuid),
    Discard(Uuid, String),
}

/// Who did it, as the events record it: the operating-system user running the command.
fn operator() -> String {
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".to_owned());
    format!("cli:{user}")
}

pub async fn run(pool: &PgPool, action: Action) -> anyhow::Result<()> {
    let metadata = Metadata::from([("source".to_owned(), "cli".to_owned())]);
    match action {
        Action::List { project, limit } => {
            let items = queries::dead_letters(
                pool,
                project,
                Page {
                    limit: limit.clamp(1, 1000),
                    offset: 0,
                },
            )
            .await?;
            println!(
                "{:<36}  {:<20}  {:>8}  reason",
                "notification", "dead-lettered at", "attempts"
            );
            for n in &items {
                println!(
                    "{:<36}  {:<20}  {:>8}  {}",
                    n.notification_id,
                    n.updated_at.format("%Y-%m-%d %H:%M:%S"),
                    n.attempts,
                    n.reason.as_deref().unwrap_or("")
                );
            }
            eprintln!("{} dead letter(s)", items.len());
        }
        Action::Show(id) => {
            let view = queries::notification(pool, id)
                .await?
                .context("no such notification")?;
            let trail =
                projections::log::aggregate_events(pool, "Notification", &id.to_string()).await?;
            println!(
                "{}",
                serde_json::to_string_pretty(
                    &serde_json::json!({ "notification": view, "trail": trail })
                )?
            );
        }
        Action::Redrive(id) => {
            Commands::new(pool.clone())
                .redrive(id, &operator(), &metadata)
                .await?;
            println!("{id} redriven");
        }
        Action::Discard(id, reason) => {
            Commands::new(pool.clone())
                .discard(id, &operator(), &reason, &metadata)
                .await?;
            println!("{id} discarded");
        }
    }
    Ok(())
}
