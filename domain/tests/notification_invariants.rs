//! Property: whatever a notification is told, in whatever order (workers that die and come back, providers
//! that fail, operators who redrive and discard), its invariants hold after every command:
//! - a refused command records nothing and changes nothing;
//! - the recorded events alone rebuild the state, and each survives its trip through JSON (the event log);
//! - it is delivered at most once, and nothing is attempted after that;
//! - one attempt at a time, numbered 1, 2, 3, ... and never more than the budget since the last redrive;
//! - a Telegram attempt whose outcome is unknown is never followed by another attempt unless an operator
//!   redrives it (Telegram cannot recognise a copy); an email's is resent, marked as a possible duplicate.

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use herald_domain::{
    Channel, ChatId, MessageDetails, Notification, NotificationCommand, NotificationEvent,
    SendFailure, Settled,
};
use proptest::prelude::*;
use uuid::Uuid;

const MAX_ATTEMPTS: u32 = 3;
const START: i64 = 1_700_000_000;

#[derive(Debug, Clone)]
enum Step {
    Plan,
    Suppress,
    Start,
    /// The answer to the attempt in flight (or to a stale attempt number, which must be refused).
    Delivered {
        stale: bool,
    },
    Failed {
        retryable: bool,
        retry_after: Option<u64>,
    },
    Interrupted,
    GiveUp,
    Redrive,
    Discard,
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    let step = prop_oneof![
        1 => Just(Step::Plan),
        1 => Just(Step::Suppress),
        6 => Just(Step::Start),
        3 => any::<bool>().prop_map(|stale| Step::Delivered { stale }),
        4 => (any::<bool>(), proptest::option::of(0_u64..120))
            .prop_map(|(retryable, retry_after)| Step::Failed { retryable, retry_after }),
        3 => Just(Step::Interrupted),
        1 => Just(Step::GiveUp),
        2 => Just(Step::Redrive),
        1 => Just(Step::Discard),
    ];
    proptest::collection::vec(step, 1..40)
}

fn channel(telegram: bool) -> Channel {
    if telegram {
        Channel::Telegram {
            chat_id: ChatId::parse(42).expect("a chat id"),
            topic_id: None,
        }
    } else {
        Channel::Email {
            address: "dev@example.com".into(),
        }
    }
}

fn command(
    step: &Step,
    state: &Notification,
    telegram: bool,
    at: DateTime<Utc>,
) -> NotificationCommand {
    let in_flight = state.in_flight.unwrap_or(state.attempts + 1);
    match step {
        Step::Plan => NotificationCommand::Plan {
            notification_id: Uuid::nil(),
            build_run_id: "b".into(),
            project_id: Uuid::nil(),
            subscription_id: Uuid::nil(),
            subscription_version: 1,
            template: "builtin/build_finished.telegram.en@1".into(),
            channel: channel(telegram),
            text: "the build failed".into(),
            buttons: vec![],
            details: MessageDetails::default(),
            at,
        },
        Step::Suppress => NotificationCommand::Suppress {
            notification_id: Uuid::nil(),
            build_run_id: "b".into(),
            project_id: Uuid::nil(),
            subscription_id: Uuid::nil(),
            subscription_version: 1,
            reason: "outcome_not_subscribed".into(),
            at,
        },
        Step::Start => NotificationCommand::StartAttempt { at },
        Step::Delivered { stale } => NotificationCommand::RecordDelivered {
            attempt: if *stale { in_flight + 1 } else { in_flight },
            provider_message_id: Some("7".into()),
            latency_ms: Some(40),
            at,
        },
        Step::Failed {
            retryable,
            retry_after,
        } => NotificationCommand::RecordFailure {
            attempt: in_flight,
            failure: SendFailure {
                code: Some(if *retryable { 429 } else { 403 }),
                description: "refused".into(),
                retryable: *retryable,
                retry_after_secs: *retry_after,
            },
            max_attempts: MAX_ATTEMPTS,
            latency_ms: Some(40),
            jitter: 0.5,
            at,
        },
        Step::Interrupted => NotificationCommand::RecordInterrupted {
            max_attempts: MAX_ATTEMPTS,
            at,
        },
        Step::GiveUp => NotificationCommand::GiveUp {
            reason: "operator".into(),
            at,
        },
        Step::Redrive => NotificationCommand::Redrive {
            by: "ops".into(),
            at,
        },
        Step::Discard => NotificationCommand::Discard {
            by: "ops".into(),
            reason: "stale".into(),
            at,
        },
    }
}

fn replay(events: &[NotificationEvent]) -> Notification {
    let mut notification = Notification::default();
    for event in events {
        notification.apply(event.clone());
    }
    notification
}

fn check(steps: &[Step], telegram: bool) -> Result<(), TestCaseError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let mut notification = Notification::default();
        let mut log: Vec<NotificationEvent> = Vec::new();
        let mut delivered = 0;
        // An interrupted Telegram attempt forbids another attempt until a redrive.
        let mut unknown_outcome = false;
        for (i, step) in steps.iter().enumerate() {
            let at = DateTime::from_timestamp(START + 60 * i as i64, 0).expect("a time");
            let before = notification.clone();
            let command = command(step, &notification, telegram, at);
            let sink = EventSink::default();
            let result = notification.handle(command, &(), &sink).await;
            let events = sink.collect().await;
            if result.is_err() {
                prop_assert!(
                    events.is_empty(),
                    "{step:?} was refused but recorded {events:?}"
                );
                prop_assert_eq!(
                    &notification,
                    &before,
                    "{:?} was refused but changed the state",
                    step
                );
                continue;
            }
            for event in &events {
                let json = serde_json::to_string(event).expect("an event serializes");
                let back: NotificationEvent = serde_json::from_str(&json).expect("and reads back");
                prop_assert_eq!(&back, event);
                match event {
                    NotificationEvent::AttemptStarted { attempt, .. } => {
                        prop_assert_eq!(delivered, 0, "an attempt after delivery");
                        prop_assert!(before.in_flight.is_none(), "two attempts in flight");
                        prop_assert_eq!(*attempt, before.attempts + 1, "attempts skip or repeat");
                        prop_assert!(
                            attempt - before.attempts_before_redrive <= MAX_ATTEMPTS,
                            "attempt {} exceeds the budget since the redrive (after {})",
                            attempt,
                            before.attempts_before_redrive
                        );
                        prop_assert!(
                            !unknown_outcome,
                            "a Telegram message resent after an unknown outcome"
                        );
                    }
                    NotificationEvent::Delivered {
                        possible_duplicate, ..
                    } => {
                        delivered += 1;
                        if telegram {
                            prop_assert!(!possible_duplicate || before.possible_duplicate);
                        }
                    }
                    NotificationEvent::AttemptInterrupted { retry_at, .. } if telegram => {
                        prop_assert!(
                            retry_at.is_none(),
                            "a Telegram retry after an unknown outcome"
                        );
                        unknown_outcome = true;
                    }
                    NotificationEvent::NotificationRedriven { .. } => unknown_outcome = false,
                    _ => {}
                }
            }
            prop_assert!(delivered <= 1, "delivered {} times", delivered);
            if delivered == 1 {
                prop_assert_eq!(notification.settled, Some(Settled::Delivered));
            }
            log.extend(events);
            prop_assert_eq!(&replay(&log), &notification, "the events rebuild the state");
        }
        Ok(())
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn a_telegram_notification_keeps_its_invariants(steps in steps()) {
        check(&steps, true)?;
    }

    #[test]
    fn an_email_notification_keeps_its_invariants(steps in steps()) {
        check(&steps, false)?;
    }
}
