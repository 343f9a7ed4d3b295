//! Herald's Telegram bot: people link a chat to themselves (`/start <code>`), subscribe, mute and ask for a
//! project's status from inside Telegram.
//!
//! `command` and `i18n` are pure (parsing and translated answers); `handler` carries a command out through the
//! same command services as the API; `runner` gets updates in (long polling or the webhook's inbox).

pub mod command;
pub mod handler;
pub mod i18n;
pub mod runner;

pub use handler::Bot;
pub use runner::{BotMode, BotRunner};
