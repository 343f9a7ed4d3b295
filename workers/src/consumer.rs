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

    /// Handle a batch of events, in order, all or nothing; `None` when this handler has no better way than one
    /// event at a time (the default). A handler that can apply a batch in fewer transactions answers here, and
    /// under load, when the bus hands over large batches, that turns many commits into few.
    async fn handle_batch(&self, _events: &[StoredEvent]) -> Option<Result<(), HandlerError>> {
        None
    }
}

impl From<projections::ProjectionError> for HandlerError {
    fn from(e: projections::ProjectionError) -> Self {
        Self {
            transient: e.is_transient(),
            message: e.to_string(),
        }
    }
}

/// The wait between retries of a transient failure: 50 ms, doubling up to 5 s.
struct Backoff(Duration);

impl Backoff {
    fn new() -> Self {
        Self(Duration::from_millis(50))
    }

    /// Wait the current delay and double it; `false` when shut down meanwhile.
    async fn wait(&mut self, shutdown: &CancellationToken) -> bool {
        tokio::select! {
            _ = shutdown.cancelled() => return false,
            _ = tokio::time::sleep(self.0) => {}
        }
        self.0 = (self.0 * 2).min(Duration::from_secs(5));
        true
    }
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
            .map_err(HandlerError::from)
    }

    /// One transaction per read model for the whole batch instead of one per event (`Projector::handle_batch`).
    async fn handle_batch(&self, events: &[StoredEvent]) -> Option<Result<(), HandlerError>> {
        Some(
            self.0
                .handle_batch(events)
                .await
                .map(|_| ())
                .map_err(HandlerError::from),
        )
    }
}

/// Handle a batch: in one go where the handler can (retrying transient failures like one event), else, or
/// when the batch holds an event that can never be handled, event by event, so that only that event is
/// skipped. Returns `false` only when shut down before the batch was handled.
pub(crate) async fn handle_batch_with_retry(
    handler: &dyn EventHandler,
    events: &[StoredEvent],
    shutdown: &CancellationToken,
) -> bool {
    if events.len() > 1 {
        let span = tracing::info_span!(
            "consume_batch",
            group = handler.group(),
            events = events.len(),
            first_global_seq = events[0].global_seq
        );
        let mut backoff = Backoff::new();
        loop {
            match handler.handle_batch(events).instrument(span.clone()).await {
                None => break,
                Some(Ok(())) => return true,
                Some(Err(e)) if e.transient => {
                    tracing::warn!(parent: &span, error = %e, "transient failure; retrying the batch");
                    if !backoff.wait(shutdown).await {
                        return false;
                    }
                }
                Some(Err(e)) => {
                    tracing::warn!(parent: &span, error = %e, "the batch cannot be handled whole; handling it event by event");
                    break;
                }
            }
        }
    }
    for event in events {
        if !handle_with_retry(handler, event, None, shutdown).await {
            return false;
        }
    }
    true
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
    let mut backoff = Backoff::new();
    loop {
        match handler.handle(event).await {
            Ok(()) => return true,
            Err(e) if e.transient => {
                tracing::warn!(group = handler.group(), global_seq = event.global_seq, error = %e, "transient failure; retrying");
                if !backoff.wait(shutdown).await {
                    return false;
                }
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

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// Handles batches whole unless one holds the poisoned event; fails the first `transient` batch attempts.
    struct Recorder {
        poisoned: i64,
        transient: Mutex<u32>,
        batches: Mutex<Vec<Vec<i64>>>,
        one_by_one: Mutex<Vec<i64>>,
    }

    impl Recorder {
        fn new(poisoned: i64, transient: u32) -> Self {
            Self {
                poisoned,
                transient: Mutex::new(transient),
                batches: Mutex::default(),
                one_by_one: Mutex::default(),
            }
        }
    }

    #[async_trait]
    impl EventHandler for Recorder {
        fn group(&self) -> &'static str {
            "recorder"
        }

        async fn handle(&self, event: &StoredEvent) -> Result<(), HandlerError> {
            if event.global_seq == self.poisoned {
                return Err(HandlerError::permanent("does not decode"));
            }
            self.one_by_one.lock().unwrap().push(event.global_seq);
            Ok(())
        }

        async fn handle_batch(&self, events: &[StoredEvent]) -> Option<Result<(), HandlerError>> {
            let mut transient = self.transient.lock().unwrap();
            if *transient > 0 {
                *transient -= 1;
                return Some(Err(HandlerError::transient("the database is down")));
            }
            if events.iter().any(|e| e.global_seq == self.poisoned) {
                return Some(Err(HandlerError::permanent("does not decode")));
            }
            let seqs = events.iter().map(|e| e.global_seq).collect();
            self.batches.lock().unwrap().push(seqs);
            Some(Ok(()))
        }
    }

    fn events(seqs: std::ops::RangeInclusive<i64>) -> Vec<StoredEvent> {
        seqs.map(|global_seq| StoredEvent {
            global_seq,
            aggregate_type: "BuildRun".into(),
            aggregate_id: "run".into(),
            sequence: global_seq,
            event_type: "BuildStarted".into(),
            event_version: "1".into(),
            payload: serde_json::json!({}),
            metadata: serde_json::json!({}),
            recorded_at: chrono::Utc::now(),
        })
        .collect()
    }

    #[tokio::test]
    async fn a_batch_is_handled_whole_after_transient_failures() {
        let handler = Recorder::new(0, 2);
        let handled =
            handle_batch_with_retry(&handler, &events(1..=5), &CancellationToken::new()).await;
        assert!(handled);
        assert_eq!(*handler.batches.lock().unwrap(), vec![vec![1, 2, 3, 4, 5]]);
        assert!(handler.one_by_one.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_batch_with_an_event_that_can_never_be_handled_skips_only_that_event() {
        let handler = Recorder::new(3, 0);
        let handled =
            handle_batch_with_retry(&handler, &events(1..=5), &CancellationToken::new()).await;
        assert!(handled);
        assert!(handler.batches.lock().unwrap().is_empty());
        assert_eq!(*handler.one_by_one.lock().unwrap(), vec![1, 2, 4, 5]);
    }

    #[tokio::test]
    async fn shutting_down_while_the_database_is_down_leaves_the_batch_unhandled() {
        let handler = Recorder::new(0, u32::MAX);
        let shutdown = CancellationToken::new();
        shutdown.cancel();
        let handled = handle_batch_with_retry(&handler, &events(1..=3), &shutdown).await;
        assert!(!handled, "not acknowledged, so it stays in the outbox");
    }
}
