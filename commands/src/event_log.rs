//! The event repository the command side writes through: postgres-es's for reading, one statement for
//! appending.
//!
//! postgres-es appends a command's events as `BEGIN`, one `INSERT` per event, `COMMIT`: two round trips plus one
//! per event. A build webhook appends two or three events, so its commit alone was five round trips, the largest
//! share of a webhook's dozen (measured with `herald bench ingest`, see docs/benchmarks.md). Here the events go
//! in as one `INSERT … SELECT FROM unnest(…)` outside an explicit transaction: a single statement is atomic by
//! itself, so the events of one command are still all written or none, and the primary key on
//! `(aggregate_type, aggregate_id, sequence)` still turns a concurrent writer into an optimistic-lock conflict.
//! Rows are inserted in array order (`WITH ORDINALITY … ORDER BY`), so `global_seq` follows `sequence` as it did.
//!
//! The same statement appends the events of many aggregates at once ([`EventLog::append`] takes any mix), which
//! is how a batch of commands (`Executor::execute_many`) commits in one round trip and one WAL flush: all of
//! them or, when any one conflicts, none. [`EventLog::load_many`] is its read side: the events of many
//! aggregates in one query.
//!
//! Reads, snapshots and streams stay postgres-es's own; Herald configures no snapshots.
//!
//! **No NUL characters.** JSON can carry U+0000 (`"\u0000"`) and the `json` column takes it, but Postgres `text`
//! and `jsonb` refuse it, and so do the triggers that index events and every read model. Such an append failed
//! as a database error: a 500 that a CI system retries for ever, for input that will never be stored. So an
//! append whose events hold the character anywhere (a commit message, a template) is refused whole, before the
//! statement, with [`NulInText`], which names the field; the API answers 422 and nothing is recorded.

use cqrs_es::persist::{
    PersistedEventRepository, PersistenceError, ReplayStream, SerializedEvent, SerializedSnapshot,
};
use cqrs_es::Aggregate;
use postgres_es::PostgresEventRepository;
use serde_json::Value;
use sqlx::PgPool;

const APPEND: &str = "
INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
SELECT $1, e.aggregate_id, e.sequence, e.event_type, e.event_version, e.payload, e.metadata
  FROM unnest($2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[]::json[], $7::text[]::json[])
       WITH ORDINALITY AS e(aggregate_id, sequence, event_type, event_version, payload, metadata, n)
 ORDER BY e.n";

/// The events of a set of aggregates, read with `persistent(false)`: planned for the ids given each time, never
/// from a plan cached on the connection.
///
/// sqlx prepares a statement once per connection, and after five executions Postgres may keep a generic plan,
/// made with the statistics of that moment. A Herald started on empty tables kept plans made for empty tables:
/// this load's index condition was `aggregate_type` alone, with `aggregate_id = ANY($2)` a filter over every
/// event of the type, and the same happened to the read models' loads by id and the checkpoints' lookup. Their
/// cost grew with the log and stayed until the connection closed: after a few thousand runs, `herald bench e2e`
/// ran the same rate five times slower (auto_explain: 464 of these loads over 4 ms in five seconds, 8.5 ms
/// each). Statements that read rows by an array of keys from a table that grows use `persistent(false)`; an
/// unnamed statement costs a Parse and a plan per execution (docs/benchmarks.md, "Plans made for empty
/// tables").
pub const LOAD_MANY: &str = "
SELECT aggregate_id, sequence, event_type, event_version, payload, metadata
  FROM events
 WHERE aggregate_type = $1 AND aggregate_id = ANY($2)
 ORDER BY aggregate_id, sequence";

/// postgres-es's repository with a one-statement append.
pub struct EventLog {
    pool: PgPool,
    read: PostgresEventRepository,
}

impl EventLog {
    pub fn new(pool: PgPool) -> Self {
        Self {
            read: PostgresEventRepository::new(pool.clone()),
            pool,
        }
    }

    /// Append `events` (of one aggregate type, any number of aggregates) in one statement: all or none.
    pub async fn append<A: Aggregate>(
        &self,
        events: &[SerializedEvent],
    ) -> Result<(), AppendError> {
        if events.is_empty() {
            return Ok(());
        }
        let mut columns = Columns::default();
        for event in events {
            if let Some(path) = nul_in(&event.payload) {
                return Err(NulInText { path }.into());
            }
            columns.aggregate_id.push(&event.aggregate_id);
            columns.sequence.push(event.sequence as i64);
            columns.event_type.push(&event.event_type);
            columns.event_version.push(&event.event_version);
            // As text: Postgres only validates `json`, where a `jsonb` parameter would be parsed and re-printed.
            columns.payload.push(event.payload.to_string());
            columns.metadata.push(event.metadata.to_string());
        }
        sqlx::query(APPEND)
            .bind(A::TYPE)
            .bind(columns.aggregate_id)
            .bind(columns.sequence)
            .bind(columns.event_type)
            .bind(columns.event_version)
            .bind(columns.payload)
            .bind(columns.metadata)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The events of every aggregate in `ids`, each aggregate's in sequence order (as stored: not upcast).
    pub async fn load_many<A: Aggregate>(
        &self,
        ids: &[&str],
    ) -> Result<Vec<SerializedEvent>, sqlx::Error> {
        let rows: Vec<(String, i64, String, String, Value, Value)> = sqlx::query_as(LOAD_MANY)
            .persistent(false)
            .bind(A::TYPE)
            .bind(ids)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .into_iter()
            .map(
                |(aggregate_id, sequence, event_type, event_version, payload, metadata)| {
                    SerializedEvent::new(
                        aggregate_id,
                        usize::try_from(sequence).unwrap_or_default(),
                        A::TYPE.to_owned(),
                        event_type,
                        event_version,
                        payload,
                        metadata,
                    )
                },
            )
            .collect())
    }
}

/// The events of one append, column by column, as `unnest` takes them.
#[derive(Default)]
struct Columns<'a> {
    aggregate_id: Vec<&'a str>,
    sequence: Vec<i64>,
    event_type: Vec<&'a str>,
    event_version: Vec<&'a str>,
    payload: Vec<String>,
    metadata: Vec<String>,
}

/// Why an append recorded nothing.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Nul(#[from] NulInText),
}

/// An event that would hold U+0000, which no read model can store (see the module's docs).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path} contains a NUL character (U+0000), which Herald does not store")]
pub struct NulInText {
    /// Where in the event, as dotted field names (`run.commit_message`, `jobs[2].name`).
    pub path: String,
}

/// Where in `value` a string (or an object's key) holds U+0000, if anywhere. The event's own name, the outer key
/// of a serialized event, is left out of the path.
pub(crate) fn nul_in(value: &Value) -> Option<String> {
    fn walk(value: &Value, path: &mut Vec<String>) -> bool {
        match value {
            Value::String(s) => s.contains('\0'),
            Value::Array(items) => items.iter().enumerate().any(|(i, item)| {
                path.push(format!("[{i}]"));
                let found = walk(item, path);
                if !found {
                    path.pop();
                }
                found
            }),
            Value::Object(fields) => fields.iter().any(|(key, item)| {
                // Shown escaped: the message must not carry the character it is about.
                path.push(key.replace('\0', "\\u0000"));
                let found = key.contains('\0') || walk(item, path);
                if !found {
                    path.pop();
                }
                found
            }),
            _ => false,
        }
    }
    let mut path = Vec::new();
    if !walk(value, &mut path) {
        return None;
    }
    let mut dotted = String::new();
    for part in path.iter().skip(1) {
        if !dotted.is_empty() && !part.starts_with('[') {
            dotted.push('.');
        }
        dotted.push_str(part);
    }
    Some(if dotted.is_empty() {
        path.concat()
    } else {
        dotted
    })
}

/// Where a normalized webhook holds U+0000 (as `run.branch`): checked before any of its fields becomes a query
/// parameter, because Postgres refuses the character there as a database error.
pub(crate) fn nul_in_webhook(event: &domain::BuildEvent) -> Option<String> {
    nul_in(&serde_json::json!({ "webhook": event }))
}

/// A unique violation on the events' key is another writer's commit of the same sequence number; a NUL character
/// is the caller's input, passed on whole so the command side can tell it from a database failure.
pub(crate) fn persistence_error(error: AppendError) -> PersistenceError {
    let error = match error {
        AppendError::Database(error) => error,
        AppendError::Nul(nul) => return PersistenceError::UnknownError(Box::new(nul)),
    };
    match &error {
        sqlx::Error::Database(e) if e.is_unique_violation() => {
            PersistenceError::OptimisticLockError
        }
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => {
            PersistenceError::ConnectionError(Box::new(error))
        }
        _ => PersistenceError::UnknownError(Box::new(error)),
    }
}

impl PersistedEventRepository for EventLog {
    async fn get_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        self.read.get_events::<A>(aggregate_id).await
    }

    async fn get_last_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
        last_sequence: usize,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        self.read
            .get_last_events::<A>(aggregate_id, last_sequence)
            .await
    }

    async fn get_snapshot<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Option<SerializedSnapshot>, PersistenceError> {
        self.read.get_snapshot::<A>(aggregate_id).await
    }

    async fn persist<A: Aggregate>(
        &self,
        events: &[SerializedEvent],
        snapshot_update: Option<(String, Value, usize)>,
    ) -> Result<(), PersistenceError> {
        match snapshot_update {
            None => self.append::<A>(events).await.map_err(persistence_error),
            // Not configured in Herald; kept correct should anyone turn snapshots on.
            Some(update) => self.read.persist::<A>(events, Some(update)).await,
        }
    }

    async fn stream_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<ReplayStream, PersistenceError> {
        self.read.stream_events::<A>(aggregate_id).await
    }

    async fn stream_all_events<A: Aggregate>(&self) -> Result<ReplayStream, PersistenceError> {
        self.read.stream_all_events::<A>().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_nul_anywhere_in_an_event_is_found_and_named() {
        let event = |run: Value| json!({ "BuildFailed": { "delivery_id": "d", "run": run } });
        assert_eq!(nul_in(&event(json!({ "commit_message": "fine\n" }))), None);
        assert_eq!(
            nul_in(&event(json!({ "commit_message": "a\u{0}b" }))).as_deref(),
            Some("run.commit_message")
        );
        assert_eq!(
            nul_in(&event(json!({ "jobs": ["ok", "bad\u{0}"] }))).as_deref(),
            Some("run.jobs[1]")
        );
        assert_eq!(
            nul_in(&event(json!({ "labels": { "k\u{0}": "v" } }))).as_deref(),
            Some("run.labels.k\\u0000")
        );
        // A backslash followed by "u0000" is text, not the character.
        assert_eq!(nul_in(&event(json!({ "commit_message": "\\u0000" }))), None);
        assert_eq!(
            nul_in(&json!({ "Bare": "x\u{0}" })).as_deref(),
            Some("Bare")
        );
    }
}
