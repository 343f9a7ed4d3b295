//! Property: whatever commands a subscriber receives, in whatever order, with right or wrong tokens and codes,
//! its invariants hold after every one of them:
//! - a refused command records nothing and changes nothing;
//! - the recorded events alone rebuild the state, and each survives its trip through JSON (the event log);
//! - no two contacts reach the same address;
//! - an email address counts as verified only after its own token was presented;
//! - a Telegram link code links one chat, once.

use std::collections::BTreeSet;

use chrono::{DateTime, Duration, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use herald_domain::{
    ChatId, ChatKind, ContactAddress, Language, Preferences, SecretHash, Subscriber,
    SubscriberCommand, SubscriberEvent,
};
use proptest::prelude::*;
use uuid::Uuid;

/// A command, drawn from small pools so that collisions (same contact, same address, same code) are common.
#[derive(Debug, Clone)]
enum Step {
    Register,
    AddTelegram { contact: u8, chat: u8 },
    AddEmail { contact: u8, mailbox: u8, token: u8 },
    Verify { contact: u8, token: u8 },
    IssueCode { code: u8 },
    Link { contact: u8, code: u8, chat: u8 },
    Disable { contact: u8 },
    Enable { contact: u8 },
    Remove { contact: u8 },
    Language { german: bool },
    Mute { minutes: Option<i64> },
    Unmute,
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    let small = || 0_u8..3;
    let step = prop_oneof![
        Just(Step::Register),
        (small(), small()).prop_map(|(contact, chat)| Step::AddTelegram { contact, chat }),
        (small(), small(), small()).prop_map(|(contact, mailbox, token)| Step::AddEmail {
            contact,
            mailbox,
            token
        }),
        (small(), small()).prop_map(|(contact, token)| Step::Verify { contact, token }),
        small().prop_map(|code| Step::IssueCode { code }),
        (small(), small(), small()).prop_map(|(contact, code, chat)| Step::Link {
            contact,
            code,
            chat
        }),
        small().prop_map(|contact| Step::Disable { contact }),
        small().prop_map(|contact| Step::Enable { contact }),
        small().prop_map(|contact| Step::Remove { contact }),
        any::<bool>().prop_map(|german| Step::Language { german }),
        proptest::option::of(-5_i64..120).prop_map(|minutes| Step::Mute { minutes }),
        Just(Step::Unmute),
    ];
    proptest::collection::vec(step, 1..40)
}

const START: i64 = 1_700_000_000;

fn contact_id(n: u8) -> Uuid {
    Uuid::from_u128(0xC0 + u128::from(n))
}

fn secret(kind: &str, n: u8) -> String {
    format!("{kind}-{n:02}-{}", "0".repeat(56))
}

fn hash(kind: &str, n: u8, at: DateTime<Utc>) -> SecretHash {
    SecretHash {
        sha256: secret(kind, n),
        expires_at: at + Duration::hours(1),
    }
}

fn telegram(chat: u8) -> ContactAddress {
    ContactAddress::Telegram {
        chat_id: ChatId::parse(1_000 + i64::from(chat)).expect("a valid chat"),
        chat_type: ChatKind::Private,
        topic_id: None,
    }
}

fn command(step: &Step, at: DateTime<Utc>) -> SubscriberCommand {
    match *step {
        Step::Register => SubscriberCommand::Register {
            subscriber_id: Uuid::from_u128(1),
            name: "Ada".into(),
            preferences: Preferences::default(),
            at,
        },
        Step::AddTelegram { contact, chat } => SubscriberCommand::AddContact {
            contact_id: contact_id(contact),
            address: telegram(chat),
            verification: None,
            at,
        },
        Step::AddEmail {
            contact,
            mailbox,
            token,
        } => SubscriberCommand::AddContact {
            contact_id: contact_id(contact),
            address: ContactAddress::Email {
                address: format!("person{mailbox}@example.com"),
            },
            verification: Some(hash("mail", token, at)),
            at,
        },
        Step::Verify { contact, token } => SubscriberCommand::Verify {
            contact_id: contact_id(contact),
            token_sha256: secret("mail", token),
            at,
        },
        Step::IssueCode { code } => SubscriberCommand::IssueLinkCode {
            code: hash("code", code, at),
            at,
        },
        Step::Link {
            contact,
            code,
            chat,
        } => SubscriberCommand::LinkTelegram {
            contact_id: contact_id(contact),
            code_sha256: secret("code", code),
            chat_id: ChatId::parse(1_000 + i64::from(chat)).expect("a valid chat"),
            chat_type: ChatKind::Private,
            topic_id: None,
            at,
        },
        Step::Disable { contact } => SubscriberCommand::Disable {
            contact_id: contact_id(contact),
            reason: "bounced".into(),
            at,
        },
        Step::Enable { contact } => SubscriberCommand::Enable {
            contact_id: contact_id(contact),
            at,
        },
        Step::Remove { contact } => SubscriberCommand::RemoveContact {
            contact_id: contact_id(contact),
            at,
        },
        Step::Language { german } => SubscriberCommand::ChangePreferences {
            preferences: Preferences {
                language: if german { Language::De } else { Language::En },
                ..Preferences::default()
            },
            at,
        },
        Step::Mute { minutes } => SubscriberCommand::Mute {
            until: minutes.map(|m| at + Duration::minutes(m)),
            at,
        },
        Step::Unmute => SubscriberCommand::Unmute { at },
    }
}

fn replay(events: &[SubscriberEvent]) -> Subscriber {
    let mut subscriber = Subscriber::default();
    for event in events {
        subscriber.apply(event.clone());
    }
    subscriber
}

fn check(steps: &[Step]) -> Result<(), TestCaseError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let mut subscriber = Subscriber::default();
        let mut log: Vec<SubscriberEvent> = Vec::new();
        // Email contacts whose own token was presented while they were unverified.
        let mut proven: BTreeSet<Uuid> = BTreeSet::new();
        // Whether a code was issued since the last link: a code links one chat, once.
        let mut code_live = false;
        for (i, step) in steps.iter().enumerate() {
            let at = DateTime::from_timestamp(START + 60 * i as i64, 0).expect("a time");
            let before = subscriber.clone();
            let command = command(step, at);
            let sink = EventSink::default();
            let result = subscriber.handle(command.clone(), &(), &sink).await;
            let events = sink.collect().await;
            if result.is_err() {
                prop_assert!(
                    events.is_empty(),
                    "{step:?} was refused but recorded {events:?}"
                );
                prop_assert_eq!(
                    &subscriber,
                    &before,
                    "{:?} was refused but changed the state",
                    step
                );
                continue;
            }
            for event in &events {
                let json = serde_json::to_string(event).expect("an event serializes");
                let back: SubscriberEvent = serde_json::from_str(&json).expect("and reads back");
                prop_assert_eq!(&back, event);
                match event {
                    SubscriberEvent::ContactVerified { contact_id, .. } => {
                        let SubscriberCommand::Verify { token_sha256, .. } = &command else {
                            return Err(TestCaseError::fail("verified without Verify"));
                        };
                        let recorded = before.contacts[contact_id].verification.as_ref();
                        prop_assert_eq!(recorded.map(|v| &v.sha256), Some(token_sha256));
                        proven.insert(*contact_id);
                    }
                    SubscriberEvent::LinkCodeIssued { .. } => code_live = true,
                    SubscriberEvent::TelegramLinked { .. } => {
                        let SubscriberCommand::LinkTelegram { code_sha256, .. } = &command else {
                            return Err(TestCaseError::fail("linked without LinkTelegram"));
                        };
                        prop_assert!(code_live, "a code linked a second chat");
                        let issued = before.link_code.as_ref().map(|c| &c.sha256);
                        prop_assert_eq!(issued, Some(code_sha256), "linked with another code");
                        prop_assert!(subscriber.link_code.is_none(), "the code is used up");
                        code_live = false;
                    }
                    SubscriberEvent::ContactRemoved { contact_id, .. } => {
                        proven.remove(contact_id);
                    }
                    _ => {}
                }
            }
            log.extend(events);
            prop_assert_eq!(&replay(&log), &subscriber, "the events rebuild the state");
            let addresses: BTreeSet<String> = subscriber
                .contacts
                .values()
                .map(|c| serde_json::to_string(&c.address).expect("an address serializes"))
                .collect();
            prop_assert_eq!(
                addresses.len(),
                subscriber.contacts.len(),
                "two contacts reach one address"
            );
            for (id, contact) in &subscriber.contacts {
                if matches!(contact.address, ContactAddress::Email { .. }) && contact.verified {
                    prop_assert!(proven.contains(id), "email {id} verified without its token");
                }
            }
        }
        Ok(())
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_command_sequence_keeps_the_subscriber_invariants(steps in steps()) {
        check(&steps)?;
    }
}
