//! Herald's write side: the cqrs-es framework over postgres-es, the command services that the HTTP edge and the
//! workers call, and the webhook normalizers that turn a provider's payload into a [`domain::BuildEvent`].
//!
//! Everything that changes state goes through here and ends as events in the log; this crate never writes a
//! read model.

pub mod bounces;
pub mod config;
pub mod deliveries;
pub mod dry_run;
mod error;
mod event_log;
mod executor;
mod history;
mod migrate;
pub mod outbox_signal;
pub mod planning;
pub mod providers;
pub(crate) mod secrets;
mod service;
pub mod subscribers;
pub mod telegram_inbox;
pub mod template;
pub mod templates;
pub mod trace;
pub mod unsubscribe;
mod webhook_target;

pub use error::CommandError;
pub use event_log::NulInText;
pub use executor::{BatchResult, Batched, Decided, Executor, Loaded};
pub use migrate::{migrate, MIGRATOR};
pub use service::{Commands, Metadata, RecordedBuild, DEFAULT_SECRET_OVERLAP};
pub use subscribers::{FilterInput, Linked, LINK_CODE_TTL, VERIFICATION_TTL};
pub use webhook_target::{PreparedRun, WebhookTarget};
