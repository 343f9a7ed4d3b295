//! Runs commands against one aggregate type: load, decide, commit, and retry on an optimistic-concurrency
//! conflict.
//!
//! Herald uses cqrs-es's `PersistedEventStore` directly rather than `CqrsFramework::execute`, because the
//! framework's `execute` neither retries `AggregateConflict` nor returns the events it committed, and Herald needs
//! both: concurrent webhooks for one run are normal, and the caller must know whether anything new was recorded
//! (a redelivered webhook records nothing). Framework queries are not used at all (see DESIGN.md): read models are
//! built from the stream. The repository is postgres-es's with a one-statement append (see `event_log`).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use cqrs_es::event_sink::EventSink;
use cqrs_es::persist::{
    EventStoreAggregateContext, EventUpcaster, PersistedEventStore, PersistenceError,
    SerializedEvent,
};
use cqrs_es::{Aggregate, AggregateContext, AggregateError, EventEnvelope, EventStore};
use rand::Rng;
use sqlx::PgPool;

use crate::event_log::EventLog;
use crate::outbox_signal::{LocalRelay, OutboxSignal};
use crate::CommandError;

/// How often a command is re-run against fresh state when another writer got there first. Each round has one
/// winner, so n writers racing on one aggregate (the jobs of a matrix build reporting at once) need up to n
/// rounds; a short random pause between rounds spreads them out.
const MAX_CONFLICT_RETRIES: u32 = 32;

pub struct Executor<A: Aggregate> {
    store: PersistedEventStore<EventLog, A>,
    /// The same repository, for the batch paths the event store has no call for.
    log: EventLog,
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
            log: EventLog::new(pool.clone()),
            outbox: OutboxSignal::new(pool),
            store: PersistedEventStore::new_event_store(repo)
                .with_upcasters(vec![Box::new(DomainUpcaster)]),
            services,
        }
    }

    /// Wake `local` after commits, instead of sending a notice, while it leads.
    pub fn with_local_relay(mut self, local: Arc<LocalRelay>) -> Self {
        self.outbox = self.outbox.with_local(local);
        self
    }

    /// Execute `command` on the aggregate `id`; returns the events committed (none when the command changed
    /// nothing).
    pub async fn execute(
        &self,
        id: &str,
        command: A::Command,
        metadata: &HashMap<String, String>,
    ) -> Result<Vec<EventEnvelope<A>>, CommandError> {
        Ok(match self.decide(id, command, metadata, None).await? {
            Decided::Committed(events) => events,
            Decided::Unchanged(_) => Vec::new(),
        })
    }

    /// [`Executor::execute`], where the caller may already hold the aggregate's events (read in the same round
    /// trip as something else it needed) and services to decide with; both serve the first round only, a round
    /// after a conflict reads afresh. Says what the command did, and on which state it changed nothing.
    pub async fn decide(
        &self,
        id: &str,
        command: A::Command,
        metadata: &HashMap<String, String>,
        mut loaded: Option<Loaded<A>>,
    ) -> Result<Decided<A>, CommandError> {
        let metadata = with_scope(metadata.clone());
        for round in 0..MAX_CONFLICT_RETRIES {
            let (mut context, services) = match loaded.take() {
                Some(Loaded { events, services }) => {
                    let (aggregate, current_sequence) = fold::<A>(events)?;
                    let context = EventStoreAggregateContext {
                        aggregate_id: id.to_owned(),
                        aggregate,
                        current_sequence,
                        current_snapshot: None,
                    };
                    (context, services)
                }
                None => {
                    let context = self
                        .store
                        .load_aggregate(id)
                        .await
                        .map_err(|e| CommandError::from_aggregate(id, e))?;
                    (context, None)
                }
            };
            let sink = EventSink::default();
            context
                .aggregate()
                .handle(
                    command.clone(),
                    services.as_ref().unwrap_or(&self.services),
                    &sink,
                )
                .await
                .map_err(CommandError::from)?;
            let events = sink.collect().await;
            if events.is_empty() {
                return Ok(Decided::Unchanged(context.aggregate));
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
                    return Ok(Decided::Committed(committed));
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

/// One command of a batch: the aggregate it goes to, and the metadata its events carry (the scope's trace and
/// actor are added where it names none).
pub struct Batched<C> {
    pub id: String,
    pub command: C,
    pub metadata: HashMap<String, String>,
}

/// What one command of a batch recorded.
pub type BatchResult<A> = Result<Vec<EventEnvelope<A>>, CommandError>;

impl<A> Executor<A>
where
    A: Aggregate,
    A::Command: Clone,
    CommandError: From<A::Error>,
{
    /// Execute many commands, each on its own aggregate, with one read and one append: what costs a round trip
    /// and a commit per command one at a time costs two in all. Results come back in the order of `batch`.
    ///
    /// The append is one statement, so either every command's events are recorded or, when another writer got
    /// to any of the aggregates first, none; the batch then runs one command at a time, each with the
    /// conflict retries of [`Executor::execute`]. A command refused by its aggregate records nothing and does
    /// not stop the others. An aggregate named twice has its later commands run one by one after the batch,
    /// on the state the batch left.
    pub async fn execute_many(&self, batch: &[Batched<A::Command>]) -> Vec<BatchResult<A>> {
        let mut seen = HashSet::new();
        let (firsts, repeats): (Vec<usize>, Vec<usize>) =
            (0..batch.len()).partition(|&i| seen.insert(batch[i].id.as_str()));
        let mut results: Vec<BatchResult<A>> = batch.iter().map(|_| Ok(Vec::new())).collect();
        let sequential = match self.try_batch(batch, &firsts).await {
            Ok(outcomes) => {
                for (i, outcome) in firsts.iter().zip(outcomes) {
                    results[*i] = outcome;
                }
                repeats
            }
            Err(BatchFailure::Conflict) => {
                tracing::debug!(
                    aggregate = A::TYPE,
                    commands = batch.len(),
                    "conflict in a batch, running it one by one"
                );
                (0..batch.len()).collect()
            }
            Err(BatchFailure::Store(message)) => {
                for i in &firsts {
                    results[*i] = Err(CommandError::Store(message.clone()));
                }
                repeats
            }
        };
        for i in sequential {
            let Batched {
                id,
                command,
                metadata,
            } = &batch[i];
            results[i] = self.execute(id, command.clone(), metadata).await;
        }
        results
    }

    /// The commands at `indexes` (distinct aggregates) against state read in one query, appended in one
    /// statement.
    async fn try_batch(
        &self,
        batch: &[Batched<A::Command>],
        indexes: &[usize],
    ) -> Result<Vec<BatchResult<A>>, BatchFailure> {
        let ids: Vec<&str> = indexes.iter().map(|&i| batch[i].id.as_str()).collect();
        let mut states = self.states(&ids).await.map_err(BatchFailure::store)?;
        let mut outcomes = Vec::with_capacity(indexes.len());
        let mut serialized = Vec::new();
        for &i in indexes {
            let Batched {
                id,
                command,
                metadata,
            } = &batch[i];
            let (mut aggregate, sequence) = states.remove(id.as_str()).unwrap_or_default();
            let sink = EventSink::default();
            if let Err(e) = aggregate
                .handle(command.clone(), &self.services, &sink)
                .await
            {
                outcomes.push(Err(CommandError::from(e)));
                continue;
            }
            let metadata = with_scope(metadata.clone());
            let envelopes: Vec<EventEnvelope<A>> = sink
                .collect()
                .await
                .into_iter()
                .zip(sequence + 1..)
                .map(|(payload, sequence)| EventEnvelope {
                    aggregate_id: id.clone(),
                    sequence,
                    payload,
                    metadata: metadata.clone(),
                })
                .collect();
            for envelope in &envelopes {
                serialized.push(SerializedEvent::try_from(envelope).map_err(BatchFailure::store)?);
            }
            outcomes.push(Ok(envelopes));
        }
        match self.log.append::<A>(&serialized).await {
            Ok(()) if serialized.is_empty() => Ok(outcomes),
            Ok(()) => {
                self.outbox.raise();
                metrics::counter!("herald_events_appended_total", "aggregate" => A::TYPE)
                    .increment(serialized.len() as u64);
                Ok(outcomes)
            }
            Err(e) => match crate::event_log::persistence_error(e) {
                PersistenceError::OptimisticLockError => Err(BatchFailure::Conflict),
                other => Err(BatchFailure::store(other)),
            },
        }
    }

    /// The current state of every aggregate in `ids`, in that order, read in one query.
    pub async fn load_many(&self, ids: &[&str]) -> Result<Vec<A>, CommandError> {
        let mut states = self.states(ids).await?;
        Ok(ids
            .iter()
            .map(|id| states.remove(*id).unwrap_or_default().0)
            .collect())
    }

    /// Each aggregate's state and last sequence; an aggregate with no events is absent.
    async fn states(&self, ids: &[&str]) -> Result<HashMap<String, (A, usize)>, CommandError> {
        let stored = self.log.load_many::<A>(ids).await?;
        let mut states: HashMap<String, (A, usize)> = HashMap::with_capacity(ids.len());
        for event in stored {
            let envelope = envelope::<A>(event)?;
            let state = states.entry(envelope.aggregate_id).or_default();
            state.0.apply(envelope.payload);
            state.1 = envelope.sequence;
        }
        Ok(states)
    }
}

/// An aggregate's events, read by the caller, and the services to decide with (the executor's own when `None`).
pub struct Loaded<A: Aggregate> {
    /// Every stored event of the aggregate, in sequence order, as stored (not upcast).
    pub events: Vec<SerializedEvent>,
    pub services: Option<A::Services>,
}

/// What a command did.
pub enum Decided<A: Aggregate> {
    Committed(Vec<EventEnvelope<A>>),
    /// Nothing: the command's decision on this state was to record nothing.
    Unchanged(A),
}

/// One aggregate's state and last sequence from its stored events.
fn fold<A: Aggregate>(events: Vec<SerializedEvent>) -> Result<(A, usize), CommandError> {
    let mut state = (A::default(), 0);
    for event in events {
        let envelope = envelope::<A>(event)?;
        state.0.apply(envelope.payload);
        state.1 = envelope.sequence;
    }
    Ok(state)
}

/// A stored event in the current shape, as the event store reads it.
fn envelope<A: Aggregate>(event: SerializedEvent) -> Result<EventEnvelope<A>, CommandError> {
    let event = if DomainUpcaster.can_upcast(&event.event_type, &event.event_version) {
        DomainUpcaster.upcast(event)
    } else {
        event
    };
    EventEnvelope::<A>::try_from(event).map_err(|e| CommandError::Store(e.to_string()))
}

/// Why a batch was not appended whole.
enum BatchFailure {
    /// Another writer appended to one of its aggregates first.
    Conflict,
    Store(String),
}

impl BatchFailure {
    fn store(error: impl std::fmt::Display) -> Self {
        Self::Store(error.to_string())
    }
}

/// The trace and actor of the current scope, added to `metadata` where it names none.
fn with_scope(mut metadata: HashMap<String, String>) -> HashMap<String, String> {
    if let Some(trace_id) = crate::trace::current() {
        metadata.entry("trace_id".to_owned()).or_insert(trace_id);
    }
    if let Some(actor) = crate::trace::actor() {
        metadata.entry("actor".to_owned()).or_insert(actor);
    }
    metadata
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
