//! Digests: notifications held for quiet hours or a digest window go out together, as one message, when the
//! hold ends.
//!
//! The digest is an ordinary planned notification (delivered, retried and dead-lettered like any other), whose
//! id is derived from the subscription and the hold's end; each held notification then records which digest
//! carried it. A digester that dies between the two steps plans the same digest id again next time (recording
//! nothing new) and finishes the folding, so no held message is lost and none is sent twice.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use commands::template::MessageRenderer;
use commands::{CommandError, Commands, Metadata};
use domain::{Channel, ChannelKind, MessageDetails, NotificationCommand, NotificationEvent};
use projections::queries;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::planner::plain_text;

const DIGEST_NAMESPACE: Uuid = Uuid::from_u128(0x6865_7261_6c64_4469_6765_7374_4964_0001);

pub struct Digester {
    commands: Arc<Commands>,
}

#[derive(Debug, thiserror::Error)]
pub enum DigestError {
    #[error(transparent)]
    Command(#[from] CommandError),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("held notification {0} does not decode: {1}")]
    Decode(Uuid, serde_json::Error),
}

/// What a held notification carries into its digest.
struct Held {
    project_id: Uuid,
    channel: Channel,
    summary: String,
}

impl Digester {
    pub fn new(commands: Arc<Commands>) -> Self {
        Self { commands }
    }

    pub fn digest_id(subscription_id: Uuid, until: DateTime<Utc>) -> Uuid {
        let name = format!("{subscription_id}@{}", until.timestamp_millis());
        Uuid::new_v5(&DIGEST_NAMESPACE, name.as_bytes())
    }

    /// Plan every digest due at `now`; returns how many.
    pub async fn send_due(&self, now: DateTime<Utc>) -> Result<usize, DigestError> {
        let due = queries::due_digests(self.commands.pool(), now).await?;
        for (subscription_id, until, ids) in &due {
            self.send_one(*subscription_id, *until, ids).await?;
        }
        Ok(due.len())
    }

    async fn send_one(
        &self,
        subscription_id: Uuid,
        until: DateTime<Utc>,
        ids: &[Uuid],
    ) -> Result<(), DigestError> {
        let held = self.held(ids).await?;
        let Some(first) = ids.first().and_then(|id| held.get(id)) else {
            return Ok(());
        };
        let lines: Vec<String> = ids
            .iter()
            .filter_map(|id| held.get(id).map(|h| h.summary.clone()))
            .collect();
        let digest_id = Self::digest_id(subscription_id, until);
        let metadata = Metadata::from([
            ("source".to_owned(), "digest".to_owned()),
            (
                "caused_by".to_owned(),
                format!("held until {}", until.to_rfc3339()),
            ),
        ]);
        let html = MessageRenderer::telegram_digest(&lines);
        // The digest is written in Telegram HTML; email and push get it as text (email with an HTML part too).
        let (text, details) = match first.channel.kind() {
            ChannelKind::Telegram => (html, MessageDetails::default()),
            _ => {
                let text = plain_text(&html);
                let details = MessageDetails {
                    subject: text.lines().next().map(str::to_owned),
                    html: Some(html.replace('\n', "<br>\n")),
                    ..MessageDetails::default()
                };
                (text, details)
            }
        };
        let plan = NotificationCommand::Plan {
            notification_id: digest_id,
            build_run_id: format!("digest:{subscription_id}"),
            project_id: first.project_id,
            subscription_id,
            subscription_version: 0,
            template: MessageRenderer::TELEGRAM_DIGEST.to_owned(),
            channel: first.channel.clone(),
            text,
            buttons: Vec::new(),
            details,
            at: Utc::now(),
        };
        let executor = self.commands.notifications();
        executor
            .execute(&digest_id.to_string(), plan, &metadata)
            .await?;
        for id in ids {
            let fold = NotificationCommand::FoldIntoDigest {
                digest_id,
                at: Utc::now(),
            };
            executor.execute(&id.to_string(), fold, &metadata).await?;
        }
        tracing::info!(%subscription_id, items = ids.len(), %digest_id, "digest planned");
        Ok(())
    }

    /// The `NotificationHeld` events of these notifications, by id.
    async fn held(&self, ids: &[Uuid]) -> Result<HashMap<Uuid, Held>, DigestError> {
        let names: Vec<String> = ids.iter().map(Uuid::to_string).collect();
        let rows: Vec<(String, serde_json::Value)> = sqlx::query_as(
            "SELECT aggregate_id, payload::jsonb FROM events
              WHERE aggregate_type = 'Notification' AND aggregate_id = ANY($1) AND event_type = 'NotificationHeld'",
        )
        .bind(&names)
        .fetch_all(self.commands.pool())
        .await?;
        let mut held = HashMap::new();
        for (id, payload) in rows {
            let id = Uuid::try_parse(&id).unwrap_or_default();
            let event: NotificationEvent =
                serde_json::from_value(payload).map_err(|e| DigestError::Decode(id, e))?;
            if let NotificationEvent::NotificationHeld {
                project_id,
                channel,
                summary,
                ..
            } = event
            {
                held.insert(
                    id,
                    Held {
                        project_id,
                        channel,
                        summary,
                    },
                );
            }
        }
        Ok(held)
    }

    /// Look for due digests every `every` until `shutdown`.
    pub async fn run(self, every: Duration, shutdown: CancellationToken) {
        loop {
            if let Err(e) = self.send_due(Utc::now()).await {
                tracing::warn!(error = %e, "digest turn failed");
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
        }
    }
}
