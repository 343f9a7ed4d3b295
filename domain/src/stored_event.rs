//! An event as it sits in the log and travels on the stream: the postgres-es row plus Herald's global order.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// One committed event, as the relay publishes it and every consumer receives it.
///
/// `global_seq` is Herald's total order over the log (postgres-es has none); `sequence` is the aggregate's own
/// order, which consumers use as their idempotency checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StoredEvent {
    pub global_seq: i64,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    pub payload: serde_json::Value,
    pub metadata: serde_json::Value,
    pub recorded_at: DateTime<Utc>,
}

impl StoredEvent {
    /// Decode the payload as the aggregate's event enum (postgres-es stores it externally tagged), upcast to
    /// the current shape first. An event already in the current shape is read in place: copying the payload
    /// for nothing was the largest single cost of a rebuild's own CPU (docs/benchmarks.md).
    pub fn decode<E: serde::de::DeserializeOwned>(&self) -> Result<E, serde_json::Error> {
        if !crate::upcast::is_old(&self.event_type, &self.event_version) {
            return E::deserialize(&self.payload);
        }
        let (_, payload) =
            crate::upcast::upcast(&self.event_type, &self.event_version, self.payload.clone());
        serde_json::from_value(payload)
    }
}
