//! Subscribers, their contacts and preferences, and their subscriptions: the commands behind
//! `/api/v1/subscribers`, `/api/v1/subscriptions` and the Telegram bot.

use chrono::{DateTime, Duration, Utc};
use domain::{
    ChatId, ChatKind, ContactAddress, Preferences, ProjectScope, SecretHash, Subscriber,
    SubscriberCommand, SubscriberError, SubscriptionCommand, SubscriptionFilter,
    SubscriptionTarget,
};
use uuid::Uuid;

use crate::{secrets, CommandError, Commands, Metadata};

/// How long a Telegram link code works: long enough to open Telegram, short enough to be useless when leaked.
pub const LINK_CODE_TTL: Duration = Duration::minutes(15);
/// How long an email verification link works.
pub const VERIFICATION_TTL: Duration = Duration::hours(24);

/// What linking a chat did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Linked {
    pub subscriber_id: Uuid,
    pub contact_id: Uuid,
    pub subscriber_name: String,
}

impl Commands {
    pub async fn register_subscriber(
        &self,
        name: &str,
        preferences: Preferences,
        metadata: &Metadata,
    ) -> Result<Uuid, CommandError> {
        let subscriber_id = Uuid::new_v4();
        let command = SubscriberCommand::Register {
            subscriber_id,
            name: name.to_owned(),
            preferences,
            at: Utc::now(),
        };
        self.subscribers
            .execute(&subscriber_id.to_string(), command, metadata)
            .await?;
        Ok(subscriber_id)
    }

    /// The subscriber as its events say it is now; `NotFound` when there is none.
    pub async fn subscriber(&self, subscriber_id: Uuid) -> Result<Subscriber, CommandError> {
        let subscriber = self.subscribers.load(&subscriber_id.to_string()).await?;
        if !subscriber.exists() {
            return Err(SubscriberError::NotFound.into());
        }
        Ok(subscriber)
    }

    async fn on_subscriber(
        &self,
        subscriber_id: Uuid,
        command: SubscriberCommand,
        metadata: &Metadata,
    ) -> Result<bool, CommandError> {
        let events = self
            .subscribers
            .execute(&subscriber_id.to_string(), command, metadata)
            .await?;
        Ok(!events.is_empty())
    }

    /// Check, without recording anything, that `address` could be added: callers that must send something
    /// first (the verification email) ask before they send.
    pub async fn check_new_contact(
        &self,
        subscriber_id: Uuid,
        address: &ContactAddress,
    ) -> Result<(), CommandError> {
        let subscriber = self.subscriber(subscriber_id).await?;
        if subscriber.reaches(address) {
            return Err(SubscriberError::DuplicateContact(address.kind()).into());
        }
        Ok(())
    }

    /// A fresh email verification token for a contact that does not exist yet: the plain token to mail, and
    /// what the log keeps.
    pub fn verification_token(subscriber_id: Uuid, contact_id: Uuid) -> (String, SecretHash) {
        secrets::one_time(&[subscriber_id, contact_id], VERIFICATION_TTL, Utc::now())
    }

    pub async fn add_contact(
        &self,
        subscriber_id: Uuid,
        contact_id: Uuid,
        address: ContactAddress,
        verification: Option<SecretHash>,
        metadata: &Metadata,
    ) -> Result<(), CommandError> {
        let command = SubscriberCommand::AddContact {
            contact_id,
            address,
            verification,
            at: Utc::now(),
        };
        self.on_subscriber(subscriber_id, command, metadata).await?;
        Ok(())
    }

    pub async fn renew_verification(
        &self,
        subscriber_id: Uuid,
        contact_id: Uuid,
        verification: SecretHash,
        metadata: &Metadata,
    ) -> Result<(), CommandError> {
        let command = SubscriberCommand::RenewVerification {
            contact_id,
            verification,
            at: Utc::now(),
        };
        self.on_subscriber(subscriber_id, command, metadata).await?;
        Ok(())
    }

    /// Verify an email contact with the token from its link; returns `(subscriber, contact)`.
    pub async fn verify_contact(
        &self,
        token: &str,
        metadata: &Metadata,
    ) -> Result<(Uuid, Uuid), CommandError> {
        let (ids, token_sha256) =
            secrets::read_one_time(token, 2).ok_or(SubscriberError::BadToken)?;
        let (subscriber_id, contact_id) = (ids[0], ids[1]);
        let command = SubscriberCommand::Verify {
            contact_id,
            token_sha256,
            at: Utc::now(),
        };
        match self.on_subscriber(subscriber_id, command, metadata).await {
            Err(CommandError::Subscriber(
                SubscriberError::NotFound | SubscriberError::ContactNotFound,
            )) => Err(SubscriberError::BadToken.into()),
            other => other.map(|_| (subscriber_id, contact_id)),
        }
    }

    /// A one-time code for `/start <code>`; returns the code and when it stops working.
    pub async fn issue_link_code(
        &self,
        subscriber_id: Uuid,
        metadata: &Metadata,
    ) -> Result<(String, DateTime<Utc>), CommandError> {
        let (code, hash) = secrets::one_time(&[subscriber_id], LINK_CODE_TTL, Utc::now());
        let expires_at = hash.expires_at;
        let command = SubscriberCommand::IssueLinkCode {
            code: hash,
            at: Utc::now(),
        };
        self.on_subscriber(subscriber_id, command, metadata).await?;
        Ok((code, expires_at))
    }

    /// The subscriber a link code names (whether or not the code is still good).
    pub fn link_code_subscriber(code: &str) -> Option<Uuid> {
        secrets::read_one_time(code, 1).map(|(ids, _)| ids[0])
    }

    /// `/start <code>` from a chat. `contact_id` is derived by the caller from the chat, so a retried link
    /// (the same Telegram update handled twice) names the same contact.
    pub async fn link_telegram(
        &self,
        code: &str,
        contact_id: Uuid,
        chat: (ChatId, ChatKind, Option<i64>),
        at: DateTime<Utc>,
        metadata: &Metadata,
    ) -> Result<Linked, CommandError> {
        let (ids, code_sha256) =
            secrets::read_one_time(code, 1).ok_or(SubscriberError::BadLinkCode)?;
        let subscriber_id = ids[0];
        let (chat_id, chat_type, topic_id) = chat;
        let command = SubscriberCommand::LinkTelegram {
            contact_id,
            code_sha256,
            chat_id,
            chat_type,
            topic_id,
            at,
        };
        match self.on_subscriber(subscriber_id, command, metadata).await {
            Err(CommandError::Subscriber(SubscriberError::NotFound)) => {
                Err(SubscriberError::BadLinkCode.into())
            }
            Err(e) => Err(e),
            Ok(_) => Ok(Linked {
                subscriber_id,
                contact_id,
                subscriber_name: self.subscriber(subscriber_id).await?.name,
            }),
        }
    }

    /// The system stops using a contact (bot blocked, address bounced, token unregistered); `false` when it
    /// was disabled already.
    pub async fn disable_contact(
        &self,
        subscriber_id: Uuid,
        contact_id: Uuid,
        reason: &str,
        metadata: &Metadata,
    ) -> Result<bool, CommandError> {
        let command = SubscriberCommand::Disable {
            contact_id,
            reason: reason.to_owned(),
            at: Utc::now(),
        };
        self.on_subscriber(subscriber_id, command, metadata).await
    }

    pub async fn enable_contact(
        &self,
        subscriber_id: Uuid,
        contact_id: Uuid,
        metadata: &Metadata,
    ) -> Result<bool, CommandError> {
        let command = SubscriberCommand::Enable {
            contact_id,
            at: Utc::now(),
        };
        self.on_subscriber(subscriber_id, command, metadata).await
    }

    pub async fn remove_contact(
        &self,
        subscriber_id: Uuid,
        contact_id: Uuid,
        metadata: &Metadata,
    ) -> Result<(), CommandError> {
        let command = SubscriberCommand::RemoveContact {
            contact_id,
            at: Utc::now(),
        };
        self.on_subscriber(subscriber_id, command, metadata).await?;
        Ok(())
    }

    pub async fn change_preferences(
        &self,
        subscriber_id: Uuid,
        preferences: Preferences,
        metadata: &Metadata,
    ) -> Result<(), CommandError> {
        let command = SubscriberCommand::ChangePreferences {
            preferences,
            at: Utc::now(),
        };
        self.on_subscriber(subscriber_id, command, metadata).await?;
        Ok(())
    }

    /// Mute until `until` (`None`: until unmuted). `at` is when the mute was asked for, so a retried request
    /// computes the same end and records nothing new.
    pub async fn mute(
        &self,
        subscriber_id: Uuid,
        until: Option<DateTime<Utc>>,
        at: DateTime<Utc>,
        metadata: &Metadata,
    ) -> Result<(), CommandError> {
        let command = SubscriberCommand::Mute { until, at };
        self.on_subscriber(subscriber_id, command, metadata).await?;
        Ok(())
    }

    pub async fn unmute(
        &self,
        subscriber_id: Uuid,
        metadata: &Metadata,
    ) -> Result<(), CommandError> {
        let command = SubscriberCommand::Unmute { at: Utc::now() };
        self.on_subscriber(subscriber_id, command, metadata).await?;
        Ok(())
    }

    /// Subscribe a target to builds matching `filter`. The subscription id is derived from the target and the
    /// canonical filter, so the same request twice is a conflict, not a second subscription.
    pub async fn subscribe(
        &self,
        target: SubscriptionTarget,
        filter: SubscriptionFilter,
        metadata: &Metadata,
    ) -> Result<Uuid, CommandError> {
        let filter = filter
            .canonical()
            .map_err(domain::SubscriptionError::from)?;
        let subscription_id = filter.subscription_id(&target.key());
        self.subscribe_with(subscription_id, target, filter, metadata)
            .await
    }

    /// Subscribe with a given subscription id (a configuration import).
    pub async fn subscribe_with(
        &self,
        subscription_id: Uuid,
        target: SubscriptionTarget,
        filter: SubscriptionFilter,
        metadata: &Metadata,
    ) -> Result<Uuid, CommandError> {
        if let ProjectScope::Projects(ids) = &filter.scope {
            for project_id in ids {
                self.active_project(*project_id).await?;
            }
        }
        if let SubscriptionTarget::Contact {
            subscriber_id,
            contact_id,
        } = &target
        {
            let subscriber = self.subscriber(*subscriber_id).await?;
            if !subscriber.contacts.contains_key(contact_id) {
                return Err(SubscriberError::ContactNotFound.into());
            }
        }
        let command = SubscriptionCommand::Subscribe {
            subscription_id,
            target,
            filter,
            at: Utc::now(),
        };
        self.subscriptions
            .execute(&subscription_id.to_string(), command, metadata)
            .await?;
        Ok(subscription_id)
    }

    pub async fn unsubscribe(
        &self,
        subscription_id: Uuid,
        metadata: &Metadata,
    ) -> Result<(), CommandError> {
        let command = SubscriptionCommand::Unsubscribe { at: Utc::now() };
        self.subscriptions
            .execute(&subscription_id.to_string(), command, metadata)
            .await?;
        Ok(())
    }
}

/// A subscription filter as people write it (API bodies, configuration documents): plain strings, checked into
/// a [`SubscriptionFilter`] with errors that name the field.
#[derive(
    Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(deny_unknown_fields)]
pub struct FilterInput {
    /// One project (shorthand for `projects: [id]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_id: Option<Uuid>,
    /// Several projects.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub projects: Vec<Uuid>,
    /// Every repository of this owner (`acme` covers `acme/api`), instead of listed projects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Branch globs to include (`main`, `release/*`); none: every branch.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub branches: Vec<String>,
    /// Branch globs to leave out, checked after `branches`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_branches: Vec<String>,
    /// `all`, `succeeded`, `failed`, `cancelled`, `broken`, `fixed`, `still_failing`, `started`; default `all`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcomes: Option<Vec<String>>,
    /// Workflow (or job) name globs; none: every workflow.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub workflows: Vec<String>,
    /// At most one message per this many seconds (0 or absent: no limit; at most 86400).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_interval_secs: Option<u32>,
}

impl FilterInput {
    pub fn parse(&self) -> Result<SubscriptionFilter, domain::InvalidValue> {
        use domain::{Glob, InvalidValue, OutcomeFilter};
        let mut projects = self.projects.clone();
        projects.extend(self.project_id);
        let scope = match (&self.owner, projects.is_empty()) {
            (Some(_), false) => {
                return Err(InvalidValue::new(
                    "owner",
                    "name projects or an owner, not both",
                ))
            }
            (Some(owner), true) => ProjectScope::owner(owner)?,
            (None, _) => ProjectScope::projects(projects)?,
        };
        let globs = |field: &'static str, raw: &[String]| {
            raw.iter()
                .map(|p| Glob::parse(field, p))
                .collect::<Result<Vec<_>, _>>()
        };
        let outcomes = match &self.outcomes {
            None => vec![OutcomeFilter::All],
            Some(raw) => raw
                .iter()
                .map(|o| o.parse::<OutcomeFilter>())
                .collect::<Result<Vec<_>, _>>()?,
        };
        SubscriptionFilter {
            scope,
            branches: globs("branches", &self.branches)?,
            exclude_branches: globs("exclude_branches", &self.exclude_branches)?,
            outcomes,
            workflows: globs("workflows", &self.workflows)?,
            min_interval_secs: self.min_interval_secs.unwrap_or(0),
        }
        .canonical()
    }

    /// The input that parses back into `filter`.
    pub fn from_filter(filter: &SubscriptionFilter) -> Self {
        let strings =
            |globs: &[domain::Glob]| globs.iter().map(|g| g.as_str().to_owned()).collect();
        let (projects, owner) = match &filter.scope {
            ProjectScope::Projects(ids) => (ids.clone(), None),
            ProjectScope::Owner(owner) => (Vec::new(), Some(owner.clone())),
        };
        Self {
            project_id: None,
            projects,
            owner,
            branches: strings(&filter.branches),
            exclude_branches: strings(&filter.exclude_branches),
            outcomes: Some(
                filter
                    .outcomes
                    .iter()
                    .map(|o| o.as_str().to_owned())
                    .collect(),
            ),
            workflows: strings(&filter.workflows),
            min_interval_secs: (filter.min_interval_secs > 0).then_some(filter.min_interval_secs),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_input_names_the_field_it_refuses() {
        let project = Uuid::from_u128(1);
        let ok = FilterInput {
            project_id: Some(project),
            branches: vec!["release/*".into()],
            outcomes: Some(vec!["failed".into(), "fixed".into()]),
            ..FilterInput::default()
        };
        let filter = ok.parse().unwrap();
        assert_eq!(FilterInput::from_filter(&filter).parse().unwrap(), filter);
        let field = |input: FilterInput| input.parse().unwrap_err().field;
        assert_eq!(field(FilterInput::default()), "projects");
        assert_eq!(
            field(FilterInput {
                owner: Some("acme".into()),
                ..ok.clone()
            }),
            "owner"
        );
        assert_eq!(
            field(FilterInput {
                branches: vec!["[".into()],
                ..ok.clone()
            }),
            "branches"
        );
        assert_eq!(
            field(FilterInput {
                outcomes: Some(vec!["sometimes".into()]),
                ..ok.clone()
            }),
            "outcomes"
        );
        assert_eq!(
            field(FilterInput {
                min_interval_secs: Some(100_000),
                ..ok
            }),
            "min_interval_secs"
        );
    }

    #[test]
    fn one_time_secrets_name_their_ids_and_fit_a_deep_link() {
        let id = Uuid::new_v4();
        let (plain, hash) = secrets::one_time(&[id], LINK_CODE_TTL, Utc::now());
        assert!(plain.len() <= 64);
        assert!(plain.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
        let (ids, sha) = secrets::read_one_time(&plain, 1).unwrap();
        assert_eq!((ids[0], sha), (id, hash.sha256));
        assert!(secrets::read_one_time(&plain, 2).is_none());
        assert!(secrets::read_one_time("nonsense", 1).is_none());
    }
}
