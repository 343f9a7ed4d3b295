//! Reading old events: every stored event passes through [`upcast`] before it is decoded, by the aggregates
//! (through cqrs-es's upcaster hook) and by every consumer (through [`crate::StoredEvent::decode`]), so the
//! code only ever sees the current shape of an event.
//!
//! History of shapes:
//! - `NotificationPlanned` / `NotificationSuppressed` 1.0 → 1.1: the decision records the subscription's
//!   version and the template it used. Events written before could not know them: 1.0 reads as version 0
//!   ("unrecorded") and no template.
//! - `NotificationPlanned` 1.1 → 1.2: a planned message may carry inline buttons; older ones had none.
//! - `NotificationPlanned` 1.2 → 1.3: email and push channels; a message may carry a subject, an HTML body, a
//!   link and the notification it edits in place. All optional: older events read without them.
//! - `Delivered` / `AttemptFailed` 1.0 → 1.1: the provider's latency, and (delivered) whether an interrupted
//!   attempt came before. Older events read with no latency and no duplicate risk.
//! - `Subscribed` 1.0 → 2.0: subscriptions gained a target (a subscriber's contact, or a bare chat) and a filter
//!   (projects or an owner, branch and workflow globs, outcomes, minimum interval). A 1.0 subscription was one
//!   project, one chat and a list of outcomes: it reads as a bare-chat target with a one-project filter.

use serde_json::Value;

/// The version Herald writes today for `event_type`.
pub fn current_version(event_type: &str) -> &'static str {
    match event_type {
        "NotificationPlanned" => "1.3",
        "Delivered" | "AttemptFailed" => "1.1",
        "NotificationSuppressed" => "1.1",
        "Subscribed" => "2.0",
        "TemplateVersionSaved" | "TemplateReset" => "1.0",
        _ => "1.0",
    }
}

/// Does `(event_type, version)` need upcasting?
pub fn is_old(event_type: &str, version: &str) -> bool {
    version != current_version(event_type)
}

/// Bring a stored payload (externally tagged, as postgres-es stores it) to the current shape.
pub fn upcast(event_type: &str, version: &str, mut payload: Value) -> (String, Value) {
    if let ("NotificationPlanned" | "NotificationSuppressed", "1.0" | "1.1" | "1.2") =
        (event_type, version)
    {
        if let Some(body) = payload.get_mut(event_type).and_then(Value::as_object_mut) {
            body.entry("subscription_version").or_insert(Value::from(0));
            if event_type == "NotificationPlanned" {
                body.entry("template").or_insert(Value::Null);
                body.entry("buttons").or_insert(Value::Array(Vec::new()));
            }
        }
        return (current_version(event_type).to_owned(), payload);
    }
    if let ("Delivered" | "AttemptFailed", "1.0") = (event_type, version) {
        // Additive: the new fields have serde defaults.
        return (current_version(event_type).to_owned(), payload);
    }
    if let ("Subscribed", "1.0") = (event_type, version) {
        if let Some(body) = payload.get_mut(event_type).and_then(Value::as_object_mut) {
            let project_id = body.remove("project_id").unwrap_or(Value::Null);
            let chat_id = body.remove("chat_id").unwrap_or(Value::Null);
            let outcomes = body.remove("outcomes").unwrap_or(Value::Array(Vec::new()));
            body.insert(
                "target".to_owned(),
                serde_json::json!({"kind": "chat", "chat_id": chat_id}),
            );
            body.insert(
                "filter".to_owned(),
                serde_json::json!({"scope": {"projects": [project_id]}, "outcomes": outcomes}),
            );
        }
        return ("2.0".to_owned(), payload);
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

    #[test]
    fn a_1_0_subscription_reads_as_a_bare_chat_with_a_one_project_filter() {
        let old = serde_json::json!({"Subscribed": {
            "subscription_id": "00000000-0000-0000-0000-000000000001",
            "project_id": "00000000-0000-0000-0000-000000000002",
            "chat_id": -100,
            "outcomes": ["failed", "fixed"],
            "subscribed_at": "2026-01-01T00:00:00Z"
        }});
        let (version, new) = upcast("Subscribed", "1.0", old);
        assert_eq!(version, "2.0");
        let event: crate::SubscriptionEvent = serde_json::from_value(new).unwrap();
        let crate::SubscriptionEvent::Subscribed { target, filter, .. } = event else {
            panic!("not a Subscribed event");
        };
        assert_eq!(
            target,
            crate::SubscriptionTarget::Chat {
                chat_id: crate::ChatId::parse(-100).unwrap()
            }
        );
        assert_eq!(
            filter.scope,
            crate::ProjectScope::Projects(vec![uuid::Uuid::from_u128(2)])
        );
        assert_eq!(filter.outcomes.len(), 2);
        assert!(filter.branches.is_empty());
    }
}
