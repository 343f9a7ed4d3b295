//! Herald's workers: the outbox relay, the stream (Kafka or the in-process bus), and the consumers that hang
//! off it: read-model projections, the notification planner and Telegram delivery.
//!
//! Every consumer is idempotent and the stream is at-least-once: an event may arrive twice (a relay that died
//! between publishing and clearing its outbox rows, a consumer that died before committing its offset), and
//! nothing here may do anything twice because of it.

pub mod bot;
pub mod breaker;
mod bus;
mod consumer;
pub mod dead_letters;
pub mod delivery;
pub mod digest;
pub mod email;
mod kafka;
mod planner;
pub mod push;
pub mod rate_limit;
mod relay;
pub mod telegram;
pub mod vacuum;

pub use bus::InProcessBus;
pub use commands::template::MessageRenderer;
pub use consumer::{run_consumer, EventHandler, HandlerError, ProjectionHandler, Stream};
pub use delivery::{
    DeliveryEnqueuer, DeliveryOutcome, DeliverySettings, DeliveryWorker, Providers,
};
pub use kafka::{KafkaConfig, KafkaConsumer, KafkaPublisher, DEFAULT_FETCH_WAIT_MS};
pub use planner::Planner;
pub use relay::{PublishError, Publisher, Relay};
pub use telegram::{TelegramClient, TelegramConfig};
