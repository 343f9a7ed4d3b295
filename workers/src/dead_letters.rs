//! The dead-letter topic: every `DeadLettered` notification is also published to `{topic}.dead-letters`, one
//! JSON record per dead letter, keyed by notification id, for systems that react to them (alerting, tickets).
//! The DLQ endpoint and redrive stay the operator's tools; this topic is a feed.
//!
//! At least once, like every consumer: a record may be published twice after a crash; `event_id`
//! (`notification_id#sequence`) tells copies apart.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use commands::Commands;
use domain::{NotificationEvent, StoredEvent};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::Serialize;

use crate::consumer::{EventHandler, HandlerError};
use crate::kafka::KafkaConfig;

pub struct DeadLetterTopic {
    producer: FutureProducer,
    topic: String,
    commands: Arc<Commands>,
}

/// One record on the dead-letter topic.
#[derive(Debug, Serialize)]
pub struct DeadLetterRecord<'a> {
    pub event_id: String,
    pub notification_id: &'a str,
    pub channel: Option<&'static str>,
    pub build_run_id: &'a str,
    pub project_id: Option<uuid::Uuid>,
    pub subscription_id: Option<uuid::Uuid>,
    pub attempts: u32,
    pub reason: &'a str,
    pub dead_lettered_at: chrono::DateTime<chrono::Utc>,
}

impl DeadLetterTopic {
    pub fn new(
        config: &KafkaConfig,
        commands: Arc<Commands>,
    ) -> Result<Self, rdkafka::error::KafkaError> {
        let producer = config
            .client()
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("message.timeout.ms", "30000")
            .create()?;
        Ok(Self {
            producer,
            topic: config.dead_letter_topic(),
            commands,
        })
    }
}

#[async_trait]
impl EventHandler for DeadLetterTopic {
    fn group(&self) -> &'static str {
        "dead-letters"
    }

    async fn handle(&self, event: &StoredEvent) -> Result<(), HandlerError> {
        if event.aggregate_type != "Notification" || event.event_type != "DeadLettered" {
            return Ok(());
        }
        let NotificationEvent::DeadLettered {
            attempts,
            reason,
            dead_lettered_at,
        } = event.decode().map_err(HandlerError::permanent)?
        else {
            return Ok(());
        };
        let notification = self
            .commands
            .notifications()
            .load(&event.aggregate_id)
            .await?;
        let record = DeadLetterRecord {
            event_id: format!("{}#{}", event.aggregate_id, event.sequence),
            notification_id: &event.aggregate_id,
            channel: notification.channel.as_ref().map(|c| c.kind().as_str()),
            build_run_id: &notification.build_run_id,
            project_id: notification.project_id,
            subscription_id: notification.subscription_id,
            attempts,
            reason: &reason,
            dead_lettered_at,
        };
        let payload = serde_json::to_vec(&record).map_err(HandlerError::permanent)?;
        let send = FutureRecord::to(&self.topic)
            .key(event.aggregate_id.as_bytes())
            .payload(&payload);
        self.producer
            .send(send, Duration::from_secs(30))
            .await
            .map_err(|(e, _)| HandlerError::transient(e))?;
        Ok(())
    }
}
