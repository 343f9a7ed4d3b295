//! Herald's domain: what a build, a project, a subscriber, a subscription and a notification *are*, and which facts
//! (events) each of them records.
//!
//! This crate is pure. It knows nothing of Postgres, Kafka, HTTP or Telegram, and it never spawns a task or
//! reads a clock on its own: time comes in on commands, and the one outside fact an aggregate needs (the previous
//! outcome of a workflow on a branch) comes through the [`BuildHistory`] service trait.
//!
//! Every event is serialized as JSON with an explicit `event_type` and `event_version` (see
//! [`cqrs_es::DomainEvent`]); the JSON shape of a published version never changes. A new shape is a new version
//! with an upcaster, so that the log written years ago stays readable.

mod build;
mod build_run;
mod filter;
mod notification;
mod project;
mod stored_event;
mod subscriber;
mod subscription;
mod template;
pub mod upcast;
mod values;

pub use build::{BuildEvent, BuildScope, JobReport, PullRequest, RunInfo};
pub use build_run::{
    BuildHistory, BuildRun, BuildRunCommand, BuildRunError, BuildRunEvent, NoHistory, PreviousRun,
    Verdict,
};
pub use filter::{Glob, Mismatch, ProjectScope, RunFacts, SubscriptionFilter};
pub use notification::{
    Button, Channel, ChannelKind, MessageDetails, Notification, NotificationCommand,
    NotificationError, NotificationEvent, SendFailure, Settled,
};
pub use project::{Project, ProjectCommand, ProjectError, ProjectEvent};
pub use stored_event::StoredEvent;
pub use subscriber::{
    email_address, subscriber_name, ChatKind, ContactAddress, ContactState, Preferences,
    QuietHours, SecretHash, Subscriber, SubscriberCommand, SubscriberError, SubscriberEvent,
    TimeZone,
};
pub use subscription::{
    Subscription, SubscriptionCommand, SubscriptionError, SubscriptionEvent, SubscriptionTarget,
};
pub use template::{
    check_parts, PartsError, Template, TemplateChannel, TemplateCommand, TemplateEvent, TemplateId,
    TemplateKind, TemplateVersionError, MAX_PART_CHARS,
};
pub use values::{
    BuildStatus, ChatId, InvalidValue, Language, Outcome, OutcomeFilter, ProjectName, Transition,
};
