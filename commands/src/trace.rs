//! Trace ids that follow one webhook through the whole system. The API opens a trace per request; every event
//! a command commits inside it carries the id in its metadata (`trace_id`); the relay sends it on as a W3C
//! `traceparent` Kafka header; consumers continue the trace while they handle the event, so the planner's
//! notification events and the delivery attempt log under the id of the webhook that caused them.
//!
//! The actor (who made the request) travels the same way and lands in the metadata as `actor`.
//!
//! The id travels in a task-local rather than through every function signature: it is context, not input.

use rand::RngCore;

tokio::task_local! {
    static TRACE_ID: String;
    static ACTOR: String;
}

/// Run `f` on behalf of `actor` (`key:hrld_…`, `jwt:<subject>`): the events it commits record who asked.
pub async fn as_actor<F: std::future::Future>(actor: String, f: F) -> F::Output {
    ACTOR.scope(actor, f).await
}

/// Who this task acts for, if anyone said.
pub fn actor() -> Option<String> {
    ACTOR.try_with(Clone::clone).ok()
}

/// Run `f` inside the trace `trace_id`.
pub async fn scope<F: std::future::Future>(trace_id: String, f: F) -> F::Output {
    TRACE_ID.scope(trace_id, f).await
}

/// The trace this task is in, if any.
pub fn current() -> Option<String> {
    TRACE_ID.try_with(Clone::clone).ok()
}

/// A new W3C trace id: 16 random bytes, lowercase hex.
pub fn new_trace_id() -> String {
    let mut bytes = [0_u8; 16];
    rand::thread_rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// A `traceparent` header value for `trace_id` with a fresh span id.
pub fn traceparent(trace_id: &str) -> String {
    let mut span = [0_u8; 8];
    rand::thread_rng().fill_bytes(&mut span);
    format!("00-{trace_id}-{}-01", hex::encode(span))
}

/// The trace id of a `traceparent` header, if it is well formed (version 00, non-zero 32-hex trace id).
pub fn parse_traceparent(value: &str) -> Option<String> {
    let mut parts = value.trim().split('-');
    let (version, trace, span, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit());
    let valid = version == "00"
        && parts.next().is_none()
        && hex(trace, 32)
        && hex(span, 16)
        && hex(flags, 2)
        && trace.bytes().any(|b| b != b'0');
    valid.then(|| trace.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_traceparent_round_trips() {
        let id = new_trace_id();
        assert_eq!(parse_traceparent(&traceparent(&id)), Some(id));
    }

    #[test]
    fn malformed_traceparents_are_ignored() {
        for bad in [
            "",
            "00-abc-def-01",
            "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
        ] {
            assert_eq!(parse_traceparent(bad), None, "{bad}");
        }
    }

    #[tokio::test]
    async fn the_trace_is_visible_inside_its_scope_only() {
        assert_eq!(current(), None);
        let inside = scope("t1".into(), async { current() }).await;
        assert_eq!(inside.as_deref(), Some("t1"));
    }
}
