//! The planner's decision for one subscriber and one build verdict, shared by the live planner and by dry runs,
//! so a dry run answers exactly what the planner would do.

use domain::{OutcomeFilter, Verdict};

/// What the planner decides for one subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Send,
    /// Machine-readable reason, as `NotificationSuppressed` records it.
    Suppress {
        reason: &'static str,
    },
}

pub const OUTCOME_NOT_SUBSCRIBED: &str = "outcome_not_subscribed";

/// Send or not; the text is the same for every subscriber of a verdict, so callers render it once.
pub fn decide(filters: &[OutcomeFilter], verdict: &Verdict) -> Decision {
    if filters
        .iter()
        .any(|f| f.matches(verdict.outcome, verdict.transition))
    {
        Decision::Send
    } else {
        Decision::Suppress {
            reason: OUTCOME_NOT_SUBSCRIBED,
        }
    }
}
