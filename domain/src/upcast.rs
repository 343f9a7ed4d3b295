//! Reading old events: every stored event passes through [`upcast`] before it is decoded, by the aggregates
//! (through cqrs-es's upcaster hook) and by every consumer (through [`crate::StoredEvent::decode`]), so the
//! code only ever sees the current shape of an event.
//!
//! History of shapes:
//! - `NotificationPlanned` / `NotificationSuppressed` 1.0 → 1.1: the decision records the subscription's
//!   version and the template it used. Events written before could not know them: 1.0 reads as version 0
//!   ("unrecorded") and no template.

use serde_json::Value;

/// The version Herald writes today for `event_type`.
pub fn current_version(event_type: &str) -> &'static str {
    match event_type {
        "NotificationPlanned" | "NotificationSuppressed" => "1.1",
        _ => "1.0",
    }
}

/// Does `(event_type, version)` need upcasting?
pub fn is_old(event_type: &str, version: &str) -> bool {
    version != current_version(event_type)
}

/// Bring a stored payload (externally tagged, as postgres-es stores it) to the current shape.
pub fn upcast(event_type: &str, version: &str, mut payload: Value) -> (String, Value) {
    if let ("NotificationPlanned" | "NotificationSuppressed", "1.0") = (event_type, version) {
        if let Some(body) = payload.get_mut(event_type).and_then(Value::as_object_mut) {
            body.entry("subscription_version").or_insert(Value::from(0));
            if event_type == "NotificationPlanned" {
                body.entry("template").or_insert(Value::Null);
            }
        }
        return ("1.1".to_owned(), payload);
    }
    (version.to_owned(), payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_1_0_decision_reads_as_1_1_with_unrecorded_versions() {
        let old =
            serde_json::json!({"NotificationSuppressed": {"reason": "outcome_not_subscribed"}});
        let (version, new) = upcast("NotificationSuppressed", "1.0", old);
        assert_eq!(version, "1.1");
        assert_eq!(new["NotificationSuppressed"]["subscription_version"], 0);
        assert!(is_old("NotificationPlanned", "1.0"));
        assert!(!is_old("BuildFailed", "1.0"));
        let (same, _) = upcast("BuildFailed", "1.0", Value::Null);
        assert_eq!(same, "1.0");
    }
}
