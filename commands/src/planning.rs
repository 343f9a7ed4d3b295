//! The planner's decision for one subscription and one build event, shared by the live planner and by dry runs,
//! so a dry run answers exactly what the planner would do.
//!
//! Every "no" has a machine-readable reason, recorded on `NotificationSuppressed`, so "why was I not told"
//! always has an answer. The checks run in a fixed order (what the subscription asked for first, then the
//! state of its contact and owner, then pacing), and the first failing one is the reason.

use chrono::{DateTime, Duration, Utc};
use domain::{ContactAddress, Preferences, RunFacts, SubscriptionFilter};

/// What the planner decides for one subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Send,
    /// Machine-readable reason, as `NotificationSuppressed` records it.
    Suppress {
        reason: &'static str,
    },
    /// Not now: kept for the digest sent at `until` (`quiet_hours` or `digest_window`).
    Hold {
        reason: &'static str,
        until: DateTime<Utc>,
    },
}

pub const OUTCOME_NOT_SUBSCRIBED: &str = "outcome_not_subscribed";
pub const CONTACT_REMOVED: &str = "contact_removed";
pub const CONTACT_UNVERIFIED: &str = "contact_unverified";
pub const CONTACT_DISABLED: &str = "contact_disabled";
pub const MUTED: &str = "muted";
pub const MIN_INTERVAL: &str = "min_interval";
/// The contact's channel (email, FCM, Web Push) has no provider configured in this Herald.
pub const CHANNEL_UNAVAILABLE: &str = "channel_unavailable";
/// The same contact gets this news through another of its subscriptions (overlapping filters): once is enough.
pub const DUPLICATE: &str = "duplicate";
pub const QUIET_HOURS: &str = "quiet_hours";
pub const DIGEST_WINDOW: &str = "digest_window";

/// What the planner knows of the contact and the subscriber behind a subscription.
#[derive(Debug, Clone, Default)]
pub struct Recipient {
    /// `None` for a bare chat (no owner, no preferences).
    pub contact: Option<ContactFacts>,
    pub muted: bool,
    /// `None` with `muted`: until unmuted.
    pub muted_until: Option<DateTime<Utc>>,
    /// When this subscription last had a message planned.
    pub last_planned: Option<DateTime<Utc>>,
    /// The owner's quiet hours and digest mode (none for a bare chat).
    pub preferences: Option<Preferences>,
    /// When this subscription last had a message planned for the run's project (for digest mode).
    pub last_planned_for_project: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone)]
pub struct ContactFacts {
    /// `None` when the contact is unknown to the read model (removed before it was projected).
    pub address: Option<ContactAddress>,
    pub removed: bool,
    pub verified: bool,
    pub enabled: bool,
    /// This Herald has a provider for the contact's channel.
    pub channel_available: bool,
}

/// Send or not; the text is the same for every subscriber of an event, so callers render it once.
pub fn decide(
    filter: &SubscriptionFilter,
    run: &RunFacts<'_>,
    recipient: &Recipient,
    now: DateTime<Utc>,
) -> Decision {
    let suppress = |reason| Decision::Suppress { reason };
    if let Some(mismatch) = filter.mismatch(run) {
        return suppress(mismatch.reason());
    }
    if let Some(contact) = &recipient.contact {
        match &contact.address {
            None => return suppress(CONTACT_REMOVED),
            Some(_) if contact.removed => return suppress(CONTACT_REMOVED),
            Some(_) if !contact.verified => return suppress(CONTACT_UNVERIFIED),
            Some(_) if !contact.enabled => return suppress(CONTACT_DISABLED),
            Some(_) if !contact.channel_available => return suppress(CHANNEL_UNAVAILABLE),
            Some(_) => {}
        }
    }
    if recipient.muted && recipient.muted_until.is_none_or(|until| now < until) {
        return suppress(MUTED);
    }
    let interval = Duration::seconds(i64::from(filter.min_interval_secs));
    if filter.min_interval_secs > 0 && recipient.last_planned.is_some_and(|t| now - t < interval) {
        return suppress(MIN_INTERVAL);
    }
    let Some(preferences) = &recipient.preferences else {
        return Decision::Send;
    };
    if let Some(until) = preferences.quiet_until(now) {
        return Decision::Hold {
            reason: QUIET_HOURS,
            until,
        };
    }
    if let (Some(minutes), Some(last)) = (
        preferences.digest_minutes,
        recipient.last_planned_for_project,
    ) {
        let window_end = last + Duration::minutes(i64::from(minutes));
        if now < window_end {
            return Decision::Hold {
                reason: DIGEST_WINDOW,
                until: window_end,
            };
        }
    }
    Decision::Send
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::{ChatId, ChatKind, Outcome, OutcomeFilter, ProjectScope, Transition};
    use uuid::Uuid;

    fn filter() -> SubscriptionFilter {
        SubscriptionFilter {
            scope: ProjectScope::Projects(vec![Uuid::nil()]),
            branches: vec![],
            exclude_branches: vec![],
            outcomes: vec![OutcomeFilter::Failed],
            workflows: vec![],
            min_interval_secs: 600,
        }
    }

    fn run(outcome: Outcome) -> RunFacts<'static> {
        RunFacts {
            project_id: Uuid::nil(),
            repository: "acme/api",
            branch: Some("main"),
            workflow: "ci",
            verdict: Some((outcome, Transition::Broken)),
        }
    }

    fn contact(verified: bool, enabled: bool, email: bool) -> Recipient {
        let address = if email {
            ContactAddress::Email {
                address: "a@example.com".into(),
            }
        } else {
            ContactAddress::Telegram {
                chat_id: ChatId::parse(1).unwrap(),
                chat_type: ChatKind::Private,
                topic_id: None,
            }
        };
        Recipient {
            contact: Some(ContactFacts {
                address: Some(address),
                removed: false,
                verified,
                enabled,
                channel_available: !email,
            }),
            ..Recipient::default()
        }
    }

    #[test]
    fn every_no_has_its_reason() {
        let now = Utc::now();
        let reason = |r: &Recipient, outcome| match decide(&filter(), &run(outcome), r, now) {
            Decision::Send => "send",
            Decision::Suppress { reason } | Decision::Hold { reason, .. } => reason,
        };
        assert_eq!(reason(&Recipient::default(), Outcome::Failed), "send");
        assert_eq!(
            reason(&Recipient::default(), Outcome::Succeeded),
            OUTCOME_NOT_SUBSCRIBED
        );
        assert_eq!(
            reason(&contact(false, true, false), Outcome::Failed),
            CONTACT_UNVERIFIED
        );
        assert_eq!(
            reason(&contact(true, false, false), Outcome::Failed),
            CONTACT_DISABLED
        );
        let mut email = contact(true, true, true);
        assert_eq!(reason(&email, Outcome::Failed), CHANNEL_UNAVAILABLE);
        if let Some(facts) = email.contact.as_mut() {
            facts.channel_available = true;
        }
        assert_eq!(reason(&email, Outcome::Failed), "send");
        let mut muted = contact(true, true, false);
        muted.muted = true;
        assert_eq!(reason(&muted, Outcome::Failed), MUTED);
        muted.muted_until = Some(now - Duration::seconds(1));
        assert_eq!(reason(&muted, Outcome::Failed), "send");
        muted.last_planned = Some(now - Duration::seconds(599));
        assert_eq!(reason(&muted, Outcome::Failed), MIN_INTERVAL);
        muted.last_planned = Some(now - Duration::seconds(600));
        assert_eq!(reason(&muted, Outcome::Failed), "send");
    }

    #[test]
    fn quiet_hours_and_digest_windows_hold_until_they_end() {
        let now = DateTime::parse_from_rfc3339("2026-03-01T23:30:00Z")
            .unwrap()
            .to_utc();
        let mut recipient = contact(true, true, false);
        recipient.preferences = Some(Preferences {
            quiet_hours: Some(domain::QuietHours::parse("23:00", "06:30").unwrap()),
            digest_minutes: Some(30),
            ..Preferences::default()
        });
        let held = decide(&filter(), &run(Outcome::Failed), &recipient, now);
        let morning = DateTime::parse_from_rfc3339("2026-03-02T06:30:00Z")
            .unwrap()
            .to_utc();
        assert_eq!(
            held,
            Decision::Hold {
                reason: QUIET_HOURS,
                until: morning
            }
        );
        let noon = DateTime::parse_from_rfc3339("2026-03-02T12:00:00Z")
            .unwrap()
            .to_utc();
        recipient.last_planned_for_project = Some(noon - Duration::minutes(10));
        assert_eq!(
            decide(&filter(), &run(Outcome::Failed), &recipient, noon),
            Decision::Hold {
                reason: DIGEST_WINDOW,
                until: noon + Duration::minutes(20)
            }
        );
        recipient.last_planned_for_project = Some(noon - Duration::minutes(30));
        assert_eq!(
            decide(&filter(), &run(Outcome::Failed), &recipient, noon),
            Decision::Send
        );
    }
}
