//! Consumers: an [`EventHandler`] is the idempotent reaction to one event; [`run_consumer`] feeds it from the
//! stream, retrying transient failures (the database is down) until they pass, so that an event is never
//! skipped because of the weather, and skipping (with an error in the log) only what can never succeed.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use domain::StoredEvent;
use projections::Projector;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::bus::InProcessBus;
use crate::kafka::{KafkaConfig, KafkaConsumer};

#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct HandlerError {
    pub transient: bool,
    pub message: String,
}

impl HandlerError {
    pub fn transient(message: impl ToString) -> Self {
        Self {
            transient: true,
            message: message.to_string(),
        }
    }
    pub fn permanent(message: impl ToString) -> Self {
        Self {
            transient: false,
            message: message.to_string(),
        }
    }
}

impl From<sqlx::Error> for HandlerError {
    fn from(e: sqlx::Error) -> Self {
        Self::transient(e)
    }
}

impl From<commands::CommandError> for HandlerError {
    fn from(e: commands::CommandError) -> Self {
        use commands::CommandError::*;
        match e {
            Database(_) | Store(_) | Conflict(_) => Self::transient(e),
            other => Self::permanent(other),
        }
    }
}

/// The idempotent reaction of one consumer group to one event.
#[async_trait]
pub trait EventHandler: Send + Sync {
    /// The consumer group: Kafka's `group.id` suffix, and the name in logs.
    fn group(&self) -> &'static str;
    async fn handle(&self, event: &StoredEvent) -> Result<(), HandlerError>;
}

/// Applies events to every read model.
pub struct ProjectionHandler(pub Projector);

#[async_trait]
impl EventHandler for ProjectionHandler {
    fn group(&self) -> &'static str {
        "projections"
    }
    async fn handle(&self, event: &StoredEvent) -> Result<(), HandlerError> {
        self.0
            .handle(event)
            .await
            .map(|_| ())
            .map_err(|e| HandlerError {
                transient: e.is_transient(),
                message: e.to_string(),
            })
    }
}

/// Handle one event, retrying transient failures with backoff until they pass or `shutdown`.
/// Returns `false` only when shut down before the event was handled.
///
/// The handling runs inside the event's trace: `trace` (from the Kafka `traceparent` header) or else the
/// `trace_id` the event's metadata carries, so what the handler commits and logs joins the webhook's trace.
pub(crate) async fn handle_with_retry(
    handler: &dyn EventHandler,
    event: &StoredEvent,
    trace: Option<String>,
    shutdown: &CancellationToken,
) -> bool {
    let trace_id = trace
        .or_else(|| event.metadata.get("trace_id")?.as_str().map(str::to_owned))
        .unwrap_or_else(commands::trace::new_trace_id);
    let span = tracing::info_span!("consume", trace_id = %trace_id, group = handler.group(), global_seq = event.global_seq);
    commands::trace::scope(
        trace_id,
        retry_until_handled(handler, event, shutdown).instrument(span),
    )
    .await
}

async fn retry_until_handled(
    handler: &dyn EventHandler,
    event: &StoredEvent,
    shutdown: &CancellationToken,
) -> bool {
    let mut delay = Duration::from_millis(50);
    loop {
        match handler.handle(event).await {
            Ok(()) => return true,
            Err(e) if e.transient => {
                tracing::warn!(group = handler.group(), global_seq = event.global_seq, error = %e, "transient failure; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return false,
                    _ = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(e) => {
                tracing::error!(
                    group = handler.group(),
                    global_seq = event.global_seq,
                    aggregate_type = %event.aggregate_type,
                    aggregate_id = %event.aggregate_id,
                    sequence = event.sequence,
                    error = %e,
                    "event cannot be handled; skipped"
                );
                return true;
            }
        }
    }
}

/// Where consumers read from.
#[derive(Clone)]
pub enum Stream {
    Kafka(KafkaConfig),
    InProcess(InProcessBus),
}

/// Feed `handler` from the stream until `shutdown`.
pub async fn run_consumer(
    stream: Stream,
    handler: Arc<dyn EventHandler>,
    shutdown: CancellationToken,
) -> Result<(), String> {
    match stream {
        Stream::InProcess(bus) => {
            bus.consume(handler, shutdown).await;
            Ok(())
        }
        Stream::Kafka(config) => {
            let consumer =
                KafkaConsumer::new(&config, handler.group()).map_err(|e| e.to_string())?;
            consumer.run(handler, shutdown).await;
            Ok(())
        }
    }
}
