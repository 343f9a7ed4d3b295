//! The `Subscription` aggregate: a Telegram chat that wants to hear about a project's finished builds.

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::values::{ChatId, OutcomeFilter};

#[derive(Debug, Clone, PartialEq)]
pub enum SubscriptionCommand {
    Subscribe {
        subscription_id: Uuid,
        project_id: Uuid,
        chat_id: ChatId,
        outcomes: Vec<OutcomeFilter>,
        at: DateTime<Utc>,
    },
    Unsubscribe {
        at: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum SubscriptionEvent {
    Subscribed {
        subscription_id: Uuid,
        project_id: Uuid,
        chat_id: ChatId,
        outcomes: Vec<OutcomeFilter>,
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
    #[error("subscription already exists")]
    AlreadyExists,
    #[error("outcomes: at least one outcome filter is required")]
    NoOutcomes,
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
                project_id,
                chat_id,
                mut outcomes,
                at,
            } => {
                if self.subscription_id.is_some() {
                    return Err(SubscriptionError::AlreadyExists);
                }
                outcomes.sort_by_key(|o| format!("{o:?}"));
                outcomes.dedup();
                if outcomes.is_empty() {
                    return Err(SubscriptionError::NoOutcomes);
                }
                SubscriptionEvent::Subscribed {
                    subscription_id,
                    project_id,
                    chat_id,
                    outcomes,
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
    use cqrs_es::test::TestFramework;

    fn subscribe(outcomes: Vec<OutcomeFilter>) -> SubscriptionCommand {
        SubscriptionCommand::Subscribe {
            subscription_id: Uuid::nil(),
            project_id: Uuid::nil(),
            chat_id: ChatId::parse(5).unwrap(),
            outcomes,
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
            matches!(&result[0], SubscriptionEvent::Subscribed { outcomes, .. } if outcomes == &[OutcomeFilter::Failed])
        );
        TestFramework::<Subscription>::with(())
            .given_no_previous_events()
            .when(subscribe(vec![]))
            .then_expect_error(SubscriptionError::NoOutcomes);
    }

    #[test]
    fn unsubscribing_twice_records_once() {
        let at = DateTime::from_timestamp(0, 0).unwrap();
        let subscribed = TestFramework::<Subscription>::with(())
            .given_no_previous_events()
            .when(subscribe(vec![OutcomeFilter::All]))
            .inspect_result()
            .unwrap();
        TestFramework::<Subscription>::with(())
            .given(subscribed)
            .and(vec![SubscriptionEvent::Unsubscribed {
                unsubscribed_at: at,
            }])
            .when(SubscriptionCommand::Unsubscribe { at })
            .then_expect_events(vec![]);
    }
}
