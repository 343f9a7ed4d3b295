//! The `Subscriber` aggregate: a person or team, the places they can be reached (contacts) and how they want to
//! be told (preferences, mute).
//!
//! Contacts live inside the subscriber rather than as aggregates of their own because every rule about them is
//! a rule about their owner: a chat is linked with the owner's one-time code, an address is verified with a token
//! the owner was sent, and "why was I (not) told" is answered by one stream per person.
//!
//! Secrets (link codes, verification tokens) are never stored: events carry their SHA-256, and the caller hands
//! the plain secret to the person it is for.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::values::{ChatId, InvalidValue, Language};

/// What kind of Telegram chat a contact is; groups need an administrator to change subscriptions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChatKind {
    Private,
    Group,
    Supergroup,
    Channel,
}

impl ChatKind {
    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        Ok(match raw {
            "private" => Self::Private,
            "group" => Self::Group,
            "supergroup" => Self::Supergroup,
            "channel" => Self::Channel,
            other => {
                return Err(InvalidValue::new(
                    "chat_type",
                    format!(
                    "unknown chat type {other:?}; expected private, group, supergroup or channel"
                ),
                ))
            }
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Private => "private",
            Self::Group => "group",
            Self::Supergroup => "supergroup",
            Self::Channel => "channel",
        }
    }
}

/// Where a contact reaches its owner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ContactAddress {
    Telegram {
        chat_id: ChatId,
        chat_type: ChatKind,
        /// A forum topic of a supergroup (`message_thread_id`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        topic_id: Option<i64>,
    },
    Email {
        address: String,
    },
    /// A Firebase Cloud Messaging registration token.
    Fcm {
        token: String,
    },
    /// A Web Push subscription (RFC 8030 endpoint, RFC 8291 keys).
    WebPush {
        endpoint: String,
        p256dh: String,
        auth: String,
    },
}

impl ContactAddress {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Telegram { .. } => "telegram",
            Self::Email { .. } => "email",
            Self::Fcm { .. } => "fcm",
            Self::WebPush { .. } => "web_push",
        }
    }

    /// Only an email address must prove it reaches its owner before Herald writes to it: a chat is linked from
    /// inside the chat (or by an operator), and a push token comes from the owner's own device.
    pub fn needs_verification(&self) -> bool {
        matches!(self, Self::Email { .. })
    }

    /// Two contacts are the same when they reach the same place.
    pub fn same_place(&self, other: &Self) -> bool {
        match (self, other) {
            (
                Self::Telegram {
                    chat_id: a,
                    topic_id: ta,
                    ..
                },
                Self::Telegram {
                    chat_id: b,
                    topic_id: tb,
                    ..
                },
            ) => a == b && ta == tb,
            (Self::Email { address: a }, Self::Email { address: b }) => a.eq_ignore_ascii_case(b),
            (Self::Fcm { token: a }, Self::Fcm { token: b }) => a == b,
            (Self::WebPush { endpoint: a, .. }, Self::WebPush { endpoint: b, .. }) => a == b,
            _ => false,
        }
    }
}

/// Quiet hours, in the subscriber's time zone: `22:00`–`07:00` wraps midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuietHours {
    pub start: NaiveTime,
    pub end: NaiveTime,
}

impl QuietHours {
    pub fn parse(start: &str, end: &str) -> Result<Self, InvalidValue> {
        let time = |raw: &str| {
            NaiveTime::parse_from_str(raw.trim(), "%H:%M").map_err(|_| {
                InvalidValue::new("quiet_hours", format!("{raw:?} is not a time like 22:00"))
            })
        };
        let (start, end) = (time(start)?, time(end)?);
        if start == end {
            return Err(InvalidValue::new(
                "quiet_hours",
                "start and end must differ",
            ));
        }
        Ok(Self { start, end })
    }

    /// Is `local` (a wall-clock time in the subscriber's zone) inside the quiet hours?
    pub fn contains(&self, local: NaiveTime) -> bool {
        if self.start < self.end {
            self.start <= local && local < self.end
        } else {
            local >= self.start || local < self.end
        }
    }
}

/// An IANA time zone name (`Europe/Berlin`), checked against the tz database Herald ships.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TimeZone(String);

impl TimeZone {
    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        let tz: chrono_tz::Tz = raw.trim().parse().map_err(|_| {
            InvalidValue::new(
                "time_zone",
                format!("{raw:?} is not an IANA time zone such as Europe/Berlin or UTC"),
            )
        })?;
        Ok(Self(tz.name().to_owned()))
    }

    pub fn utc() -> Self {
        Self("UTC".to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn tz(&self) -> chrono_tz::Tz {
        self.0.parse().unwrap_or(chrono_tz::UTC)
    }
}

impl Default for TimeZone {
    fn default() -> Self {
        Self::utc()
    }
}

impl TryFrom<String> for TimeZone {
    type Error = InvalidValue;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<TimeZone> for String {
    fn from(value: TimeZone) -> Self {
        value.0
    }
}

/// How a subscriber wants to be told.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Preferences {
    pub time_zone: TimeZone,
    pub language: Language,
    #[serde(default)]
    pub quiet_hours: Option<QuietHours>,
    /// At most one message per this many minutes per project, the rest folded into it (none: every message).
    #[serde(default)]
    pub digest_minutes: Option<u32>,
    /// A run's verdict edits its "started" Telegram message in place instead of arriving as a second message.
    #[serde(default)]
    pub edit_in_place: bool,
}

impl Preferences {
    pub const MAX_DIGEST_MINUTES: u32 = 24 * 60;

    pub fn validate(self) -> Result<Self, InvalidValue> {
        if let Some(minutes) = self.digest_minutes {
            if minutes == 0 || minutes > Self::MAX_DIGEST_MINUTES {
                return Err(InvalidValue::new(
                    "digest_minutes",
                    format!("must be 1 to {}", Self::MAX_DIGEST_MINUTES),
                ));
            }
        }
        Ok(self)
    }

    /// Is `at` inside the quiet hours, in the subscriber's zone?
    pub fn is_quiet(&self, at: DateTime<Utc>) -> bool {
        self.quiet_hours
            .is_some_and(|q| q.contains(at.with_timezone(&self.time_zone.tz()).time()))
    }

    /// When the quiet hours `at` falls in end (in UTC); `None` when `at` is not quiet.
    pub fn quiet_until(&self, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        use chrono::TimeZone as _;
        let quiet = self.quiet_hours.filter(|_| self.is_quiet(at))?;
        let tz = self.time_zone.tz();
        let local = at.with_timezone(&tz);
        let mut day = local.date_naive();
        if quiet.end <= local.time() {
            day = day.succ_opt()?;
        }
        let end = day.and_time(quiet.end);
        // A wall-clock time skipped by a daylight-saving jump ends the quiet an hour later.
        tz.from_local_datetime(&end)
            .earliest()
            .or_else(|| {
                tz.from_local_datetime(&(end + chrono::Duration::hours(1)))
                    .earliest()
            })
            .map(|t| t.with_timezone(&Utc))
    }
}

/// A subscriber's display name: 1 to 100 characters.
pub fn subscriber_name(raw: &str) -> Result<String, InvalidValue> {
    let name = raw.trim();
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(InvalidValue::new(
            "name",
            "must be 1 to 100 characters without control characters",
        ));
    }
    Ok(name.to_owned())
}

/// The longest address SMTP carries (RFC 5321 path limit).
pub const MAX_EMAIL_LEN: usize = 254;

/// A plausible email address, trimmed, its domain lower-cased. Whether it reaches anyone is for the
/// verification email to find out.
pub fn email_address(raw: &str) -> Result<String, InvalidValue> {
    let raw = raw.trim();
    if raw.len() > MAX_EMAIL_LEN {
        return Err(InvalidValue::new(
            "address",
            format!("must be at most {MAX_EMAIL_LEN} characters"),
        ));
    }
    let invalid = || {
        InvalidValue::new(
            "address",
            format!("{raw:?} is not an email address like ann@example.com"),
        )
    };
    if raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid());
    }
    let (local, domain) = raw.split_once('@').ok_or_else(invalid)?;
    let domain_ok = domain.contains('.')
        && !domain.contains('@')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains("..");
    if local.is_empty() || !domain_ok {
        return Err(invalid());
    }
    Ok(format!("{local}@{}", domain.to_lowercase()))
}

/// A one-time secret's fingerprint and when it stops working.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretHash {
    /// Hex SHA-256 of the secret.
    pub sha256: String,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SubscriberCommand {
    Register {
        subscriber_id: Uuid,
        name: String,
        preferences: Preferences,
        at: DateTime<Utc>,
    },
    /// Add a contact; an email address comes with the hash of the token mailed to it.
    AddContact {
        contact_id: Uuid,
        address: ContactAddress,
        verification: Option<SecretHash>,
        at: DateTime<Utc>,
    },
    /// Mail a fresh verification token (the previous one stops working).
    RenewVerification {
        contact_id: Uuid,
        verification: SecretHash,
        at: DateTime<Utc>,
    },
    Verify {
        contact_id: Uuid,
        token_sha256: String,
        at: DateTime<Utc>,
    },
    /// A one-time code for `/start <code>` in Telegram (the previous one stops working).
    IssueLinkCode {
        code: SecretHash,
        at: DateTime<Utc>,
    },
    /// `/start <code>` from a chat: the code proves the chat belongs to this subscriber.
    LinkTelegram {
        contact_id: Uuid,
        code_sha256: String,
        chat_id: ChatId,
        chat_type: ChatKind,
        topic_id: Option<i64>,
        at: DateTime<Utc>,
    },
    /// The system stops using a contact: bot blocked, address bounced, token unregistered.
    Disable {
        contact_id: Uuid,
        reason: String,
        at: DateTime<Utc>,
    },
    /// The owner turns a contact back on.
    Enable {
        contact_id: Uuid,
        at: DateTime<Utc>,
    },
    RemoveContact {
        contact_id: Uuid,
        at: DateTime<Utc>,
    },
    ChangePreferences {
        preferences: Preferences,
        at: DateTime<Utc>,
    },
    /// Mute until a time, or until unmuted (`None`).
    Mute {
        until: Option<DateTime<Utc>>,
        at: DateTime<Utc>,
    },
    Unmute {
        at: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum SubscriberEvent {
    SubscriberRegistered {
        subscriber_id: Uuid,
        name: String,
        preferences: Preferences,
        registered_at: DateTime<Utc>,
    },
    ContactAdded {
        contact_id: Uuid,
        address: ContactAddress,
        /// False until the owner proves the address is theirs.
        verified: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        verification: Option<SecretHash>,
        added_at: DateTime<Utc>,
    },
    VerificationRenewed {
        contact_id: Uuid,
        verification: SecretHash,
        renewed_at: DateTime<Utc>,
    },
    ContactVerified {
        contact_id: Uuid,
        verified_at: DateTime<Utc>,
    },
    LinkCodeIssued {
        code: SecretHash,
        issued_at: DateTime<Utc>,
    },
    /// A chat proved itself with the link code, which is now used up.
    TelegramLinked {
        contact_id: Uuid,
        address: ContactAddress,
        linked_at: DateTime<Utc>,
    },
    ContactDisabled {
        contact_id: Uuid,
        reason: String,
        disabled_at: DateTime<Utc>,
    },
    ContactEnabled {
        contact_id: Uuid,
        enabled_at: DateTime<Utc>,
    },
    ContactRemoved {
        contact_id: Uuid,
        removed_at: DateTime<Utc>,
    },
    PreferencesChanged {
        preferences: Preferences,
        changed_at: DateTime<Utc>,
    },
    Muted {
        until: Option<DateTime<Utc>>,
        muted_at: DateTime<Utc>,
    },
    Unmuted {
        unmuted_at: DateTime<Utc>,
    },
}

impl DomainEvent for SubscriberEvent {
    fn event_type(&self) -> String {
        match self {
            Self::SubscriberRegistered { .. } => "SubscriberRegistered",
            Self::ContactAdded { .. } => "ContactAdded",
            Self::VerificationRenewed { .. } => "VerificationRenewed",
            Self::ContactVerified { .. } => "ContactVerified",
            Self::LinkCodeIssued { .. } => "LinkCodeIssued",
            Self::TelegramLinked { .. } => "TelegramLinked",
            Self::ContactDisabled { .. } => "ContactDisabled",
            Self::ContactEnabled { .. } => "ContactEnabled",
            Self::ContactRemoved { .. } => "ContactRemoved",
            Self::PreferencesChanged { .. } => "PreferencesChanged",
            Self::Muted { .. } => "Muted",
            Self::Unmuted { .. } => "Unmuted",
        }
        .to_owned()
    }
    fn event_version(&self) -> String {
        crate::upcast::current_version(&self.event_type()).to_owned()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubscriberError {
    #[error("subscriber not found")]
    NotFound,
    #[error("subscriber already exists")]
    AlreadyExists,
    #[error("contact not found")]
    ContactNotFound,
    #[error("this subscriber already has a contact for that {0}")]
    DuplicateContact(&'static str),
    #[error("an email address needs a verification token")]
    VerificationRequired,
    #[error("the verification token is wrong, used or expired")]
    BadToken,
    #[error("the link code is wrong, used or expired")]
    BadLinkCode,
    #[error("the contact is already verified")]
    AlreadyVerified,
    #[error("{0}")]
    Invalid(#[from] InvalidValue),
}

/// What the aggregate remembers of a contact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContactState {
    pub address: ContactAddress,
    pub verified: bool,
    pub enabled: bool,
    pub verification: Option<SecretHash>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Subscriber {
    pub subscriber_id: Option<Uuid>,
    pub name: String,
    pub preferences: Preferences,
    pub contacts: BTreeMap<Uuid, ContactState>,
    pub link_code: Option<SecretHash>,
    /// `Some(None)`: muted until unmuted; `Some(Some(t))`: until `t`.
    pub muted: Option<Option<DateTime<Utc>>>,
}

impl Subscriber {
    pub fn exists(&self) -> bool {
        self.subscriber_id.is_some()
    }

    /// Is the subscriber muted at `at`?
    pub fn is_muted(&self, at: DateTime<Utc>) -> bool {
        match self.muted {
            Some(None) => true,
            Some(Some(until)) => at < until,
            None => false,
        }
    }

    fn contact(&self, contact_id: Uuid) -> Result<&ContactState, SubscriberError> {
        self.contacts
            .get(&contact_id)
            .ok_or(SubscriberError::ContactNotFound)
    }

    /// Does a contact already reach where `address` does?
    pub fn reaches(&self, address: &ContactAddress) -> bool {
        self.contacts
            .values()
            .any(|c| c.address.same_place(address))
    }

    fn check_new_contact(
        &self,
        contact_id: Uuid,
        address: &ContactAddress,
    ) -> Result<(), SubscriberError> {
        if self.contacts.contains_key(&contact_id) || self.reaches(address) {
            return Err(SubscriberError::DuplicateContact(address.kind()));
        }
        Ok(())
    }
}

/// A secret matches when its hash is the recorded one and it has not expired.
fn secret_matches(recorded: Option<&SecretHash>, sha256: &str, at: DateTime<Utc>) -> bool {
    recorded.is_some_and(|s| {
        at < s.expires_at
            && s.sha256.len() == sha256.len()
            && s.sha256
                .bytes()
                .zip(sha256.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    })
}

impl Aggregate for Subscriber {
    const TYPE: &'static str = "Subscriber";
    type Command = SubscriberCommand;
    type Event = SubscriberEvent;
    type Error = SubscriberError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        if let SubscriberCommand::Register {
            subscriber_id,
            name,
            preferences,
            at,
        } = command
        {
            if self.exists() {
                return Err(SubscriberError::AlreadyExists);
            }
            let event = SubscriberEvent::SubscriberRegistered {
                subscriber_id,
                name: subscriber_name(&name)?,
                preferences: preferences.validate()?,
                registered_at: at,
            };
            sink.write(event, self).await;
            return Ok(());
        }
        if !self.exists() {
            return Err(SubscriberError::NotFound);
        }
        let event = match command {
            SubscriberCommand::Register { .. } => return Err(SubscriberError::AlreadyExists),
            SubscriberCommand::AddContact {
                contact_id,
                address,
                verification,
                at,
            } => {
                self.check_new_contact(contact_id, &address)?;
                if address.needs_verification() && verification.is_none() {
                    return Err(SubscriberError::VerificationRequired);
                }
                SubscriberEvent::ContactAdded {
                    contact_id,
                    verified: !address.needs_verification(),
                    verification: verification.filter(|_| address.needs_verification()),
                    address,
                    added_at: at,
                }
            }
            SubscriberCommand::RenewVerification {
                contact_id,
                verification,
                at,
            } => {
                if self.contact(contact_id)?.verified {
                    return Err(SubscriberError::AlreadyVerified);
                }
                SubscriberEvent::VerificationRenewed {
                    contact_id,
                    verification,
                    renewed_at: at,
                }
            }
            SubscriberCommand::Verify {
                contact_id,
                token_sha256,
                at,
            } => {
                let contact = self.contact(contact_id)?;
                if contact.verified {
                    // Following the same link twice is not an error (however late); another token still is.
                    let same = contact.verification.as_ref().map(|v| SecretHash {
                        sha256: v.sha256.clone(),
                        expires_at: DateTime::<Utc>::MAX_UTC,
                    });
                    if secret_matches(same.as_ref(), &token_sha256, at) {
                        return Ok(());
                    }
                    return Err(SubscriberError::BadToken);
                }
                if !secret_matches(contact.verification.as_ref(), &token_sha256, at) {
                    return Err(SubscriberError::BadToken);
                }
                SubscriberEvent::ContactVerified {
                    contact_id,
                    verified_at: at,
                }
            }
            SubscriberCommand::IssueLinkCode { code, at } => SubscriberEvent::LinkCodeIssued {
                code,
                issued_at: at,
            },
            SubscriberCommand::LinkTelegram {
                contact_id,
                code_sha256,
                chat_id,
                chat_type,
                topic_id,
                at,
            } => {
                if !secret_matches(self.link_code.as_ref(), &code_sha256, at) {
                    return Err(SubscriberError::BadLinkCode);
                }
                let address = ContactAddress::Telegram {
                    chat_id,
                    chat_type,
                    topic_id,
                };
                self.check_new_contact(contact_id, &address)?;
                SubscriberEvent::TelegramLinked {
                    contact_id,
                    address,
                    linked_at: at,
                }
            }
            SubscriberCommand::Disable {
                contact_id,
                reason,
                at,
            } => {
                if !self.contact(contact_id)?.enabled {
                    return Ok(());
                }
                SubscriberEvent::ContactDisabled {
                    contact_id,
                    reason,
                    disabled_at: at,
                }
            }
            SubscriberCommand::Enable { contact_id, at } => {
                if self.contact(contact_id)?.enabled {
                    return Ok(());
                }
                SubscriberEvent::ContactEnabled {
                    contact_id,
                    enabled_at: at,
                }
            }
            SubscriberCommand::RemoveContact { contact_id, at } => {
                self.contact(contact_id)?;
                SubscriberEvent::ContactRemoved {
                    contact_id,
                    removed_at: at,
                }
            }
            SubscriberCommand::ChangePreferences { preferences, at } => {
                let preferences = preferences.validate()?;
                if preferences == self.preferences {
                    return Ok(());
                }
                SubscriberEvent::PreferencesChanged {
                    preferences,
                    changed_at: at,
                }
            }
            SubscriberCommand::Mute { until, at } => {
                if until.is_some_and(|u| u <= at) {
                    return Err(InvalidValue::new("until", "must be in the future").into());
                }
                // The same mute again (a retried command) records nothing.
                if self.muted == Some(until) {
                    return Ok(());
                }
                SubscriberEvent::Muted {
                    until,
                    muted_at: at,
                }
            }
            SubscriberCommand::Unmute { at } => {
                if !self.is_muted(at) {
                    return Ok(());
                }
                SubscriberEvent::Unmuted { unmuted_at: at }
            }
        };
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            SubscriberEvent::SubscriberRegistered {
                subscriber_id,
                name,
                preferences,
                ..
            } => {
                self.subscriber_id = Some(subscriber_id);
                self.name = name;
                self.preferences = preferences;
            }
            SubscriberEvent::ContactAdded {
                contact_id,
                address,
                verified,
                verification,
                ..
            } => {
                self.contacts.insert(
                    contact_id,
                    ContactState {
                        address,
                        verified,
                        enabled: true,
                        verification,
                    },
                );
            }
            SubscriberEvent::VerificationRenewed {
                contact_id,
                verification,
                ..
            } => {
                if let Some(c) = self.contacts.get_mut(&contact_id) {
                    c.verification = Some(verification);
                }
            }
            SubscriberEvent::ContactVerified { contact_id, .. } => {
                // The token's hash stays, so the same link followed again can be told from a forged one.
                if let Some(c) = self.contacts.get_mut(&contact_id) {
                    c.verified = true;
                }
            }
            SubscriberEvent::LinkCodeIssued { code, .. } => self.link_code = Some(code),
            SubscriberEvent::TelegramLinked {
                contact_id,
                address,
                ..
            } => {
                self.link_code = None;
                self.contacts.insert(
                    contact_id,
                    ContactState {
                        address,
                        verified: true,
                        enabled: true,
                        verification: None,
                    },
                );
            }
            SubscriberEvent::ContactDisabled { contact_id, .. } => {
                if let Some(c) = self.contacts.get_mut(&contact_id) {
                    c.enabled = false;
                }
            }
            SubscriberEvent::ContactEnabled { contact_id, .. } => {
                if let Some(c) = self.contacts.get_mut(&contact_id) {
                    c.enabled = true;
                }
            }
            SubscriberEvent::ContactRemoved { contact_id, .. } => {
                self.contacts.remove(&contact_id);
            }
            SubscriberEvent::PreferencesChanged { preferences, .. } => {
                self.preferences = preferences
            }
            SubscriberEvent::Muted { until, .. } => self.muted = Some(until),
            SubscriberEvent::Unmuted { .. } => self.muted = None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::test::TestFramework;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(secs, 0).unwrap()
    }

    fn registered() -> SubscriberEvent {
        SubscriberEvent::SubscriberRegistered {
            subscriber_id: Uuid::nil(),
            name: "Ada".into(),
            preferences: Preferences::default(),
            registered_at: at(0),
        }
    }

    fn email_added(expires: i64) -> SubscriberEvent {
        SubscriberEvent::ContactAdded {
            contact_id: Uuid::from_u128(1),
            address: ContactAddress::Email {
                address: "ada@example.com".into(),
            },
            verified: false,
            verification: Some(SecretHash {
                sha256: "ab".repeat(32),
                expires_at: at(expires),
            }),
            added_at: at(0),
        }
    }

    fn chat(id: i64) -> ContactAddress {
        ContactAddress::Telegram {
            chat_id: ChatId::parse(id).unwrap(),
            chat_type: ChatKind::Private,
            topic_id: None,
        }
    }

    #[test]
    fn an_email_contact_is_unverified_until_its_token_comes_back() {
        TestFramework::<Subscriber>::with(())
            .given(vec![registered()])
            .when(SubscriberCommand::AddContact {
                contact_id: Uuid::from_u128(1),
                address: ContactAddress::Email {
                    address: "ada@example.com".into(),
                },
                verification: None,
                at: at(1),
            })
            .then_expect_error(SubscriberError::VerificationRequired);
        TestFramework::<Subscriber>::with(())
            .given(vec![registered(), email_added(100)])
            .when(SubscriberCommand::Verify {
                contact_id: Uuid::from_u128(1),
                token_sha256: "cd".repeat(32),
                at: at(1),
            })
            .then_expect_error(SubscriberError::BadToken);
        TestFramework::<Subscriber>::with(())
            .given(vec![registered(), email_added(100)])
            .when(SubscriberCommand::Verify {
                contact_id: Uuid::from_u128(1),
                token_sha256: "ab".repeat(32),
                at: at(100),
            })
            .then_expect_error(SubscriberError::BadToken);
        TestFramework::<Subscriber>::with(())
            .given(vec![registered(), email_added(100)])
            .when(SubscriberCommand::Verify {
                contact_id: Uuid::from_u128(1),
                token_sha256: "ab".repeat(32),
                at: at(99),
            })
            .then_expect_events(vec![SubscriberEvent::ContactVerified {
                contact_id: Uuid::from_u128(1),
                verified_at: at(99),
            }]);
    }

    #[test]
    fn a_link_code_works_once_and_a_chat_is_linked_once() {
        let code = SubscriberEvent::LinkCodeIssued {
            code: SecretHash {
                sha256: "01".repeat(32),
                expires_at: at(600),
            },
            issued_at: at(0),
        };
        let link = |contact: u128| SubscriberCommand::LinkTelegram {
            contact_id: Uuid::from_u128(contact),
            code_sha256: "01".repeat(32),
            chat_id: ChatId::parse(42).unwrap(),
            chat_type: ChatKind::Private,
            topic_id: None,
            at: at(5),
        };
        let linked = SubscriberEvent::TelegramLinked {
            contact_id: Uuid::from_u128(2),
            address: chat(42),
            linked_at: at(5),
        };
        TestFramework::<Subscriber>::with(())
            .given(vec![registered(), code.clone()])
            .when(link(2))
            .then_expect_events(vec![linked.clone()]);
        TestFramework::<Subscriber>::with(())
            .given(vec![registered(), code.clone(), linked.clone()])
            .when(link(3))
            .then_expect_error(SubscriberError::BadLinkCode);
        TestFramework::<Subscriber>::with(())
            .given(vec![registered(), code.clone(), linked, code])
            .when(link(3))
            .then_expect_error(SubscriberError::DuplicateContact("telegram"));
    }

    #[test]
    fn disabling_and_muting_twice_records_once() {
        let added = SubscriberEvent::ContactAdded {
            contact_id: Uuid::from_u128(1),
            address: chat(7),
            verified: true,
            verification: None,
            added_at: at(0),
        };
        let disabled = SubscriberEvent::ContactDisabled {
            contact_id: Uuid::from_u128(1),
            reason: "bot_blocked".into(),
            disabled_at: at(1),
        };
        TestFramework::<Subscriber>::with(())
            .given(vec![registered(), added.clone(), disabled.clone()])
            .when(SubscriberCommand::Disable {
                contact_id: Uuid::from_u128(1),
                reason: "bot_blocked".into(),
                at: at(2),
            })
            .then_expect_events(vec![]);
        TestFramework::<Subscriber>::with(())
            .given(vec![registered(), added, disabled])
            .when(SubscriberCommand::Enable {
                contact_id: Uuid::from_u128(1),
                at: at(2),
            })
            .then_expect_events(vec![SubscriberEvent::ContactEnabled {
                contact_id: Uuid::from_u128(1),
                enabled_at: at(2),
            }]);
        let muted = SubscriberEvent::Muted {
            until: Some(at(60)),
            muted_at: at(0),
        };
        TestFramework::<Subscriber>::with(())
            .given(vec![registered(), muted.clone()])
            .when(SubscriberCommand::Mute {
                until: Some(at(60)),
                at: at(1),
            })
            .then_expect_events(vec![]);
        TestFramework::<Subscriber>::with(())
            .given(vec![registered(), muted])
            .when(SubscriberCommand::Unmute { at: at(61) })
            .then_expect_events(vec![]);
        TestFramework::<Subscriber>::with(())
            .given(vec![registered()])
            .when(SubscriberCommand::Mute {
                until: Some(at(1)),
                at: at(1),
            })
            .then_expect_error(SubscriberError::Invalid(InvalidValue::new(
                "until",
                "must be in the future",
            )));
    }

    #[test]
    fn email_addresses_are_checked_and_their_domain_lower_cased() {
        assert_eq!(
            email_address("  Ann.Smith@Example.COM ").unwrap(),
            "Ann.Smith@example.com"
        );
        for bad in [
            "",
            "ann",
            "ann@",
            "@example.com",
            "ann@example",
            "ann@@example.com",
            "a@b@example.com",
            "ann smith@example.com",
            "ann@.example.com",
            "ann@example.com.",
            "ann@example..com",
            "ann\u{7}@example.com",
        ] {
            let e = email_address(bad).unwrap_err();
            assert_eq!(e.field, "address", "{bad:?}");
        }
        let long = format!("{}@example.com", "a".repeat(250));
        assert!(email_address(&long).is_err());
    }

    #[test]
    fn quiet_hours_wrap_midnight_in_the_subscribers_zone() {
        let quiet = QuietHours::parse("22:00", "07:00").unwrap();
        let time = |h, m| NaiveTime::from_hms_opt(h, m, 0).unwrap();
        assert!(quiet.contains(time(23, 0)));
        assert!(quiet.contains(time(6, 59)));
        assert!(!quiet.contains(time(7, 0)));
        assert!(QuietHours::parse("9:00", "9:00").is_err());
        assert!(QuietHours::parse("25:00", "9:00").is_err());
        let prefs = Preferences {
            time_zone: TimeZone::parse("Europe/Berlin").unwrap(),
            quiet_hours: Some(quiet),
            ..Preferences::default()
        };
        // 21:30 UTC is 22:30 in Berlin in winter.
        let winter = DateTime::parse_from_rfc3339("2026-01-10T21:30:00Z")
            .unwrap()
            .to_utc();
        assert!(prefs.is_quiet(winter));
        assert!(!prefs.is_quiet(winter - chrono::Duration::hours(1)));
        // 22:30 in Berlin: quiet until 07:00 the next morning, 06:00 UTC.
        assert_eq!(
            prefs.quiet_until(winter).unwrap().to_rfc3339(),
            "2026-01-11T06:00:00+00:00"
        );
        assert_eq!(prefs.quiet_until(winter - chrono::Duration::hours(1)), None);
        assert!(TimeZone::parse("Mars/Olympus").is_err());
        assert!(Preferences {
            digest_minutes: Some(0),
            ..Preferences::default()
        }
        .validate()
        .is_err());
    }
}
