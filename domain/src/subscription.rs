//! The `Subscription` aggregate: a Telegram chat that wants to hear about a project's finished builds.

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::filter::SubscriptionFilter;
use crate::values::{ChatId, InvalidValue};

/// Who a subscription notifies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SubscriptionTarget {
    /// One contact of a subscriber, whose preferences (mute, quiet hours, language) apply.
    Contact {
        subscriber_id: Uuid,
        contact_id: Uuid,
    },
    /// A bare Telegram chat an operator subscribed directly: no owner, no preferences. Every subscription
    /// written before subscribers existed (event version 1.0) reads as one of these.
    Chat { chat_id: ChatId },
}

impl SubscriptionTarget {
    /// The part of the subscription id that says where messages go.
    pub fn key(&self) -> String {
        match self {
            Self::Contact { contact_id, .. } => format!("contact:{contact_id}"),
            Self::Chat { chat_id } => format!("chat:{}", chat_id.get()),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum SubscriptionCommand {
    Subscribe {
        subscription_id: Uuid,
        target: SubscriptionTarget,
        filter: SubscriptionFilter,
        at: DateTime<Utc>,
    },
    Unsubscribe {
        at: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum SubscriptionEvent {
    /// Version 2.0; 1.0 (`project_id`, `chat_id`, `outcomes`) is upcast into it.
    Subscribed {
        subscription_id: Uuid,
        target: SubscriptionTarget,
        filter: SubscriptionFilter,
        subscribed_at: DateTime<Utc>,
    },
    Unsubscribed {
        unsubscribed_at: DateTime<Utc>,
    },
}

impl DomainEvent for SubscriptionEvent {
    fn event_type(&self) -> String {
        match self {
            Self::Subscribed { .. } => "Subscribed",
            Self::Unsubscribed { .. } => "Unsubscribed",
        }
        .to_owned()
    }
    fn event_version(&self) -> String {
        crate::upcast::current_version(&self.event_type()).to_owned()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubscriptionError {
    #[error("subscription not found")]
    NotFound,
    #[error("this contact already has a subscription with exactly these filters")]
    AlreadyExists,
    #[error("{0}")]
    Invalid(#[from] InvalidValue),
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Subscription {
    pub subscription_id: Option<Uuid>,
    pub active: bool,
}

impl Aggregate for Subscription {
    const TYPE: &'static str = "Subscription";
    type Command = SubscriptionCommand;
    type Event = SubscriptionEvent;
    type Error = SubscriptionError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let event = match command {
            SubscriptionCommand::Subscribe {
                subscription_id,
                target,
                filter,
                at,
            } => {
                // A removed subscription may be taken out again; a live one is a duplicate.
                if self.active {
                    return Err(SubscriptionError::AlreadyExists);
                }
                SubscriptionEvent::Subscribed {
                    subscription_id,
                    target,
                    filter: filter.canonical()?,
                    subscribed_at: at,
                }
            }
            SubscriptionCommand::Unsubscribe { at } => {
                if self.subscription_id.is_none() {
                    return Err(SubscriptionError::NotFound);
                }
                if !self.active {
                    return Ok(());
                }
                SubscriptionEvent::Unsubscribed {
                    unsubscribed_at: at,
                }
            }
        };
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            SubscriptionEvent::Subscribed {
                subscription_id, ..
            } => {
                self.subscription_id = Some(subscription_id);
                self.active = true;
            }
            SubscriptionEvent::Unsubscribed { .. } => self.active = false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::ProjectScope;
    use crate::values::OutcomeFilter;
    use cqrs_es::test::TestFramework;

    fn subscribe(outcomes: Vec<OutcomeFilter>) -> SubscriptionCommand {
        SubscriptionCommand::Subscribe {
            subscription_id: Uuid::nil(),
            target: SubscriptionTarget::Chat {
                chat_id: ChatId::parse(5).unwrap(),
            },
            filter: SubscriptionFilter {
                scope: ProjectScope::Projects(vec![Uuid::nil()]),
                branches: vec![],
                exclude_branches: vec![],
                outcomes,
                workflows: vec![],
                min_interval_secs: 0,
            },
            at: DateTime::from_timestamp(0, 0).unwrap(),
        }
    }

    #[test]
    fn outcome_filters_are_deduplicated_and_required() {
        let result = TestFramework::<Subscription>::with(())
            .given_no_previous_events()
            .when(subscribe(vec![
                OutcomeFilter::Failed,
                OutcomeFilter::Failed,
            ]))
            .inspect_result()
            .unwrap();
        assert!(
            matches!(&result[0], SubscriptionEvent::Subscribed { filter, .. } if filter.outcomes == [OutcomeFilter::Failed])
        );
        let refused = TestFramework::<Subscription>::with(())
            .given_no_previous_events()
            .when(subscribe(vec![]))
            .inspect_result();
        assert!(matches!(refused, Err(SubscriptionError::Invalid(e)) if e.field == "outcomes"));
    }

    #[test]
    fn a_live_subscription_is_a_duplicate_and_a_removed_one_comes_back() {
        let at = DateTime::from_timestamp(0, 0).unwrap();
        let subscribed = TestFramework::<Subscription>::with(())
            .given_no_previous_events()
            .when(subscribe(vec![OutcomeFilter::All]))
            .inspect_result()
            .unwrap();
        TestFramework::<Subscription>::with(())
            .given(subscribed.clone())
            .when(subscribe(vec![OutcomeFilter::All]))
            .then_expect_error(SubscriptionError::AlreadyExists);
        let removed = TestFramework::<Subscription>::with(())
            .given(subscribed.clone())
            .and(vec![SubscriptionEvent::Unsubscribed {
                unsubscribed_at: at,
            }]);
        removed
            .when(SubscriptionCommand::Unsubscribe { at })
            .then_expect_events(vec![]);
        TestFramework::<Subscription>::with(())
            .given(subscribed.clone())
            .and(vec![SubscriptionEvent::Unsubscribed {
                unsubscribed_at: at,
            }])
            .when(subscribe(vec![OutcomeFilter::All]))
            .then_expect_events(subscribed);
    }
}
