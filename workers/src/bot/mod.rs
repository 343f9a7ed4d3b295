//! Herald's Telegram bot. The pure part lives here apart from any I/O, so every rule about what a message
//! means (`command`) and what the bot answers (`i18n`) can be tested without Telegram or a database.

pub mod command;
pub mod i18n;
