//! Runs commands against one aggregate type: load, decide, commit, and retry on an optimistic-concurrency
//! conflict.
//!
//! Herald uses cqrs-es's `PersistedEventStore` directly rather than `CqrsFramework::execute`, because the
//! framework's `execute` neither retries `AggregateConflict` nor returns the events it committed, and Herald needs
//! both: concurrent webhooks for one run are normal, and the caller must know whether anything new was recorded
//! (a redelivered webhook records nothing). Framework queries are not used at all (see DESIGN.md): read models are
//! built from the stream. The repository is postgres-es's with a one-statement append (see `event_log`).

use std::collections::HashMap;

use cqrs_es::event_sink::EventSink;
use cqrs_es::persist::{EventUpcaster, PersistedEventStore, SerializedEvent};
use cqrs_es::{Aggregate, AggregateContext, AggregateError, EventEnvelope, EventStore};
use rand::Rng;
use sqlx::PgPool;

use crate::event_log::EventLog;
use crate::outbox_signal::OutboxSignal;
use crate::CommandError;

/// How often a command is re-run against fresh state when another writer got there first. Each round has one
/// winner, so n writers racing on one aggregate (the jobs of a matrix build reporting at once) need up to n
/// rounds; a short random pause between rounds spreads them out.
const MAX_CONFLICT_RETRIES: u32 = 32;

pub struct Executor<A: Aggregate> {
    store: PersistedEventStore<EventLog, A>,
    services: A::Services,
    outbox: OutboxSignal,
}

impl<A> Executor<A>
where
    A: Aggregate,
    A::Command: Clone,
    CommandError: From<A::Error>,
{
    pub fn new(pool: PgPool, services: A::Services) -> Self {
        let repo = EventLog::new(pool.clone());
        Self {
            outbox: OutboxSignal::new(pool),
            store: PersistedEventStore::new_event_store(repo)
                .with_upcasters(vec![Box::new(DomainUpcaster)]),
            services,
        }
    }

    /// Execute `command` on the aggregate `id`; returns the events committed (none when the command changed
    /// nothing).
    pub async fn execute(
        &self,
        id: &str,
        command: A::Command,
        metadata: &HashMap<String, String>,
    ) -> Result<Vec<EventEnvelope<A>>, CommandError> {
        let mut metadata = metadata.clone();
        if let Some(trace_id) = crate::trace::current() {
            metadata.entry("trace_id".to_owned()).or_insert(trace_id);
        }
        if let Some(actor) = crate::trace::actor() {
            metadata.entry("actor".to_owned()).or_insert(actor);
        }
        for round in 0..MAX_CONFLICT_RETRIES {
            let mut context = self
                .store
                .load_aggregate(id)
                .await
                .map_err(|e| CommandError::from_aggregate(id, e))?;
            let sink = EventSink::default();
            context
                .aggregate()
                .handle(command.clone(), &self.services, &sink)
                .await
                .map_err(CommandError::from)?;
            let events = sink.collect().await;
            if events.is_empty() {
                return Ok(Vec::new());
            }
            match self.store.commit(events, context, metadata.clone()).await {
                Err(AggregateError::AggregateConflict) => {
                    tracing::debug!(aggregate = A::TYPE, id, "conflict, retrying command");
                    let pause = rand::thread_rng().gen_range(0..=2 * round.min(10));
                    tokio::time::sleep(std::time::Duration::from_millis(pause.into())).await;
                }
                Ok(committed) => {
                    self.outbox.raise();
                    metrics::counter!("herald_events_appended_total", "aggregate" => A::TYPE)
                        .increment(committed.len() as u64);
                    return Ok(committed);
                }
                Err(e) => return Err(CommandError::from_aggregate(id, e)),
            }
        }
        Err(CommandError::Conflict(id.to_owned()))
    }

    /// The aggregate's current state, rebuilt from its events.
    pub async fn load(&self, id: &str) -> Result<A, CommandError> {
        let mut context = self
            .store
            .load_aggregate(id)
            .await
            .map_err(|e| CommandError::from_aggregate(id, e))?;
        Ok(std::mem::take(context.aggregate()))
    }
}

/// cqrs-es's upcaster hook, calling the domain's one list of event shape changes.
struct DomainUpcaster;

impl EventUpcaster for DomainUpcaster {
    fn can_upcast(&self, event_type: &str, event_version: &str) -> bool {
        domain::upcast::is_old(event_type, event_version)
    }

    fn upcast(&self, mut event: SerializedEvent) -> SerializedEvent {
        let (version, payload) =
            domain::upcast::upcast(&event.event_type, &event.event_version, event.payload);
        event.event_version = version;
        event.payload = payload;
        event
    }
}
