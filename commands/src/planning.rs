//! The planner's decision for one subscriber and one build verdict, shared by the live planner and by dry runs,
//! so a dry run answers exactly what the planner would do.

use domain::{OutcomeFilter, RunInfo, Verdict};

use crate::template::MessageRenderer;

/// What the planner decides for one subscriber.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Send {
        text: String,
    },
    /// Machine-readable reason, as `NotificationSuppressed` records it.
    Suppress {
        reason: &'static str,
    },
}

pub const OUTCOME_NOT_SUBSCRIBED: &str = "outcome_not_subscribed";

pub fn decide(
    filters: &[OutcomeFilter],
    run: &RunInfo,
    verdict: &Verdict,
    renderer: &MessageRenderer,
) -> Result<Decision, handlebars::RenderError> {
    let wanted = filters
        .iter()
        .any(|f| f.matches(verdict.outcome, verdict.transition));
    if !wanted {
        return Ok(Decision::Suppress {
            reason: OUTCOME_NOT_SUBSCRIBED,
        });
    }
    Ok(Decision::Send {
        text: renderer.telegram_build(run, verdict)?,
    })
}
